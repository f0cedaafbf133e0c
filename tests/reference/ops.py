"""Op-level reference fixtures: tests/fixtures/op_*.safetensors."""
import math
import zlib

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.models.embeddings import get_timestep_embedding

from common import dot_loss, grads, randn, save


def seed(name):
    torch.manual_seed(zlib.crc32(name.encode()))


def case(name, inputs, fn, cfg, extra=None, scalar=False):
    """Run fn(**inputs) -> out (or (out, extras)); backward of sum(out*dout) (or of out if scalar)."""
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


if __name__ == "__main__":
    main()
