"""Op-level reference fixtures: tests/fixtures/op_*.safetensors.

Usage: ops.py [NAME ...]   with names, writes only those fixtures (e.g. ops.py op_ssim_loss).
"""
import math
import sys
import zlib

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.models.embeddings import get_timestep_embedding

from common import dot_loss, grads, randn, save


def seed(name):
    torch.manual_seed(zlib.crc32(name.encode()))


ONLY = set(sys.argv[1:])  # fixture names to write; empty: all


def case(name, inputs, fn, cfg, extra=None, scalar=False):
    """Run fn(**inputs) -> out (or (out, extras)); backward of sum(out*dout) (or of out if scalar)."""
    if ONLY and name not in ONLY:
        return
    res = fn(**inputs)
    aux = {}
    if isinstance(res, tuple):
        out, aux = res
    else:
        out = res
    t = dict(inputs)
    t.update(extra or {})
    if scalar:
        out = out.reshape(1)
        loss = out.sum()
    else:
        dout = torch.randn_like(out)
        t["dout"] = dout
        loss = dot_loss([(out, dout)])
    t["out"] = out
    t.update(aux)
    t.update(grads(loss, {k: v for k, v in inputs.items() if v.requires_grad}))
    save(name, t, cfg)


def conv_case(name, xs, ws, stride, pad):
    seed(name)
    x, w, b = randn(*xs, grad=True), randn(*ws, grad=True), randn(ws[0], grad=True)
    top, bottom, left, right = pad

    def fn(x, weight, bias):
        return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias, stride=stride, padding=0)

    case(name, {"x": x, "weight": w, "bias": b}, fn, {"stride": stride, "pad": list(pad)})


def main():
    conv_case("op_conv2d_3x3_s1", (2, 3, 6, 5), (4, 3, 3, 3), 1, (1, 1, 1, 1))
    conv_case("op_conv2d_3x3_s2", (2, 3, 7, 6), (4, 3, 3, 3), 2, (1, 1, 1, 1))
    conv_case("op_conv2d_1x1", (2, 5, 4, 4), (3, 5, 1, 1), 1, (0, 0, 0, 0))
    conv_case("op_conv2d_pad0101", (2, 3, 6, 6), (4, 3, 3, 3), 2, (0, 1, 0, 1))

    n = "op_linear"
    seed(n)
    case(n, {"x": randn(3, 5, grad=True), "weight": randn(4, 5, grad=True), "bias": randn(4, grad=True)},
         lambda x, weight, bias: F.linear(x, weight, bias), {})

    n = "op_groupnorm"
    seed(n)
    case(n, {"x": randn(2, 6, 3, 4, grad=True), "weight": randn(6, grad=True), "bias": randn(6, grad=True)},
         lambda x, weight, bias: F.group_norm(x, 3, weight, bias, eps=1e-5), {"groups": 3, "eps": 1e-5})

    n = "op_silu"
    seed(n)
    case(n, {"x": randn(2, 3, 4, 4, grad=True)}, lambda x: F.silu(x), {})

    n = "op_upsample"
    seed(n)
    case(n, {"x": randn(2, 3, 3, 4, grad=True)},
         lambda x: F.interpolate(x, scale_factor=2.0, mode="nearest"), {"scale_factor": 2.0, "mode": "nearest"})

    n = "op_concat"
    seed(n)
    case(n, {"a": randn(2, 3, 4, 4, grad=True), "b": randn(2, 2, 4, 4, grad=True)},
         lambda a, b: torch.cat([a, b], 1), {"dim": 1})

    n = "op_residual"
    seed(n)
    case(n, {"a": randn(2, 3, 4, 4, grad=True), "b": randn(2, 3, 4, 4, grad=True)},
         lambda a, b: (a + b) / 2.0, {"output_scale_factor": 2.0})

    n = "op_attention"
    seed(n)
    NH, HD = 2, 4

    def attn(q, k, v):
        N, L, _ = q.shape
        sp = lambda t: t.reshape(N, L, NH, HD).transpose(1, 2)
        qh, kh, vh = sp(q), sp(k), sp(v)
        att = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(HD), dim=-1)
        o = (att @ vh).transpose(1, 2).reshape(N, L, NH * HD)
        return o, {"att": att}

    case(n, {"q": randn(2, 6, 8, grad=True), "k": randn(2, 6, 8, grad=True), "v": randn(2, 6, 8, grad=True)},
         attn, {"heads": NH, "head_dim": HD})

    n = "op_embedding"
    seed(n)
    ids = torch.tensor([4, 0, 4], dtype=torch.int32)
    case(n, {"weight": randn(5, 8, grad=True)}, lambda weight: F.embedding(ids.long(), weight),
         {"num_embeddings": 5, "dim": 8}, extra={"ids": ids})

    for n, tv, dim, flip, shift in (("op_timesteps", [0.0, 1.0, 250.5, 999.0], 16, True, 0),
                                    ("op_timesteps_noflip", [0.5, 3.0, 700.0], 12, False, 1)):
        seed(n)
        t = torch.tensor(tv, dtype=torch.float32, requires_grad=True)
        cfg = {"dim": dim, "flip_sin_to_cos": flip, "downscale_freq_shift": shift, "scale": 1, "max_period": 10000}
        case(n, {"t": t},
             lambda t: get_timestep_embedding(t, dim, flip_sin_to_cos=flip, downscale_freq_shift=shift,
                                              scale=1, max_period=10000), cfg)

    n = "op_avgpool"
    seed(n)
    case(n, {"x": randn(2, 3, 4, 5, grad=True)}, lambda x: x.mean((2, 3)), {})

    for n, train in (("op_batchnorm_train", True), ("op_batchnorm_eval", False)):
        seed(n)
        rm, rv = randn(5), randn(5).abs() + 0.5
        rm0, rv0 = rm.clone(), rv.clone()

        def bn(x, weight, bias, rm=rm, rv=rv, train=train):
            y = F.batch_norm(x, rm, rv, weight, bias, training=train, momentum=0.1, eps=1e-5)
            return y, {"running_mean_after": rm, "running_var_after": rv}
        case(n, {"x": (randn(3, 5, 4, 3) * 2 + 1).requires_grad_(), "weight": randn(5, grad=True),
                 "bias": randn(5, grad=True)}, bn, {"eps": 1e-5, "momentum": 0.1, "train": train},
             extra={"running_mean": rm0, "running_var": rv0})

    n = "op_avgpool2x2"
    seed(n)
    case(n, {"x": randn(2, 3, 5, 7, grad=True)}, lambda x: F.avg_pool2d(x, 2), {})

    n = "op_mse"
    seed(n)
    pred = randn(2, 3, 4, 4, grad=True)
    target = randn(2, 3, 4, 4)
    case(n, {"pred": pred}, lambda pred: F.mse_loss(pred, target), {"reduction": "mean"},
         extra={"target": target}, scalar=True)

    n = "op_l1"
    seed(n)
    pred = randn(2, 3, 4, 4, grad=True)
    target = randn(2, 3, 4, 4)
    case(n, {"pred": pred}, lambda pred: F.l1_loss(pred, target), {"reduction": "mean"},
         extra={"target": target}, scalar=True)

    n = "op_kl"
    seed(n)
    m = torch.randn(2, 8, 4, 4)
    m[0, 4, 0, 0] = 25.0
    m[1, 5, 1, 1] = -35.0
    m.requires_grad_(True)

    def kl(moments):
        k = DiagonalGaussianDistribution(moments).kl()
        return k.mean(), {"kl": k}

    case(n, {"moments": m}, kl, {"latent_channels": 4, "logvar_clamp": [-30.0, 20.0]}, scalar=True)

    n = "op_gaussian_sample"
    seed(n)
    m = randn(2, 8, 4, 4, grad=True)
    eps = randn(2, 4, 4, 4)

    def sample(moments):
        mean, logvar = torch.chunk(moments, 2, dim=1)
        logvar = torch.clamp(logvar, -30.0, 20.0)
        return mean + torch.exp(0.5 * logvar) * eps

    case(n, {"moments": m}, sample, {"latent_channels": 4, "logvar_clamp": [-30.0, 20.0]}, extra={"eps": eps})

    n = "op_cross_entropy"
    seed(n)
    labels = torch.tensor([0, 3, 3, 1], dtype=torch.int32)
    case(n, {"logits": randn(4, 5, grad=True)}, lambda logits: F.cross_entropy(logits, labels.long()),
         {"classes": 5, "reduction": "mean"}, extra={"labels": labels}, scalar=True)


    losses2_cases()
    disc_cases()
    triplet_cases()


def triplet_cosine(z, labels, margin):
    """Batch-hard triplet loss on cosine distances of normalised embeddings (common/ops/triplet.h)."""
    e = F.normalize(z, dim=1)
    d = 1 - e @ e.t()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    pos, neg = same & ~eye, ~same
    losses = []
    for i in range(len(labels)):
        if pos[i].any() and neg[i].any():
            hp = d[i][pos[i]].max()
            hn = d[i][neg[i]].min()
            losses.append(F.relu(margin + hp - hn))
    return torch.stack(losses).mean()


def triplet_cases():
    for n, N, D, margin, labels in (("op_triplet_cosine", 12, 16, 0.3, [0, 1, 2, 0, 1, 2, 0, 3, 3, 1, 4, 2]),
                                    ("op_triplet_cosine_wide", 9, 8, 1.5, [5, 5, 1, 1, 1, 7, 2, 2, 5])):
        seed(n)
        lab = torch.tensor(labels, dtype=torch.int32)
        case(n, {"z": randn(N, D, grad=True)}, lambda z: triplet_cosine(z, lab.long(), margin),
             {"margin": margin}, extra={"labels": lab}, scalar=True)


def gaussian_window(size, sigma):
    """pytorch_msssim's _fspecial_gauss_1d, in float64."""
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def gaussian_filter_valid(x, g):
    """pytorch_msssim's gaussian_filter: separable depthwise conv, no padding ('valid')."""
    C = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, 1, -1).repeat(C, 1, 1, 1), groups=C)
    return F.conv2d(x, g.view(1, 1, -1, 1).repeat(C, 1, 1, 1), groups=C)


def ssim_loss(pred, target, data_range, win_size=11, win_sigma=1.5, K=(0.01, 0.03)):
    """1 - pytorch_msssim.ssim(pred, target, data_range, size_average=True, win_size, win_sigma, K),
    written out (pytorch_msssim is not needed), in float64."""
    X, Y = pred.double(), target.double()
    g = gaussian_window(win_size, win_sigma)
    C1, C2 = (K[0] * data_range) ** 2, (K[1] * data_range) ** 2
    mu1, mu2 = gaussian_filter_valid(X, g), gaussian_filter_valid(Y, g)
    s11 = gaussian_filter_valid(X * X, g) - mu1 ** 2
    s22 = gaussian_filter_valid(Y * Y, g) - mu2 ** 2
    s12 = gaussian_filter_valid(X * Y, g) - mu1 * mu2
    cs_map = (2 * s12 + C2) / (s11 + s22 + C2)
    ssim_map = ((2 * mu1 * mu2 + C1) / (mu1 ** 2 + mu2 ** 2 + C1)) * cs_map
    return 1.0 - torch.flatten(ssim_map, 2).mean(-1).mean()


def spectral_loss(pred, target):
    """mean |log1p|fft2(pred)| - log1p|fft2(target)||, in float64."""
    a = torch.log1p(torch.fft.fft2(pred.double()).abs())
    b = torch.log1p(torch.fft.fft2(target.double()).abs())
    return (a - b).abs().mean()


def losses2_cases():
    n = "op_ssim_loss"
    seed(n)
    pred = (torch.rand(2, 2, 16, 16) * 2 - 1).requires_grad_(True)
    target = (0.6 * pred.detach() + 0.4 * (torch.rand(2, 2, 16, 16) * 2 - 1)).clamp(-1, 1)
    case(n, {"pred": pred}, lambda pred: ssim_loss(pred, target, 2.0),
         {"data_range": 2.0, "win_size": 11, "win_sigma": 1.5, "K": [0.01, 0.03]},
         extra={"target": target}, scalar=True)

    n = "op_spectral_loss"
    seed(n)
    pred = randn(2, 1, 16, 16, grad=True)
    target = randn(2, 1, 16, 16)
    case(n, {"pred": pred}, lambda pred: spectral_loss(pred, target),
         {"fft": "fft2", "norm": "backward", "reduction": "mean"}, extra={"target": target}, scalar=True)


def disc_cases():
    """LeakyReLU and the hinge GAN losses of taming's patch discriminator (common/ops/activations.h)."""
    n = "op_leaky_relu"
    seed(n)
    x = torch.randn(2, 3, 4, 5)
    x[0, 0, 0, :2] = 0.0  # PyTorch's gradient at 0 is the slope
    case(n, {"x": x.requires_grad_(True)}, lambda x: F.leaky_relu(x, 0.2), {"negative_slope": 0.2})

    n = "op_hinge_d"
    seed(n)
    real, fake = 1.5 * torch.randn(2, 1, 3, 3), 1.5 * torch.randn(2, 1, 3, 3)
    real[0, 0, 0, 0], fake[0, 0, 0, 0] = 1.0, -1.0  # on the kinks: relu'(0) = 0

    def hinge_d(logits_real, logits_fake):  # taming.modules.losses.vqperceptual.hinge_d_loss
        return 0.5 * (torch.mean(F.relu(1.0 - logits_real)) + torch.mean(F.relu(1.0 + logits_fake)))

    case(n, {"logits_real": real.requires_grad_(True), "logits_fake": fake.requires_grad_(True)}, hinge_d,
         {"loss": "hinge_d_loss"}, scalar=True)

    n = "op_hinge_g"
    seed(n)
    case(n, {"logits_fake": randn(2, 1, 3, 3, grad=True)}, lambda logits_fake: -torch.mean(logits_fake),
         {"loss": "g_loss = -mean(logits_fake)"}, scalar=True)


if __name__ == "__main__":
    main()
