"""Whole-model reference fixtures: tests/fixtures/model_*.safetensors."""
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DModel
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from common import dot_loss, grads, module_config, params, randomize, save

VAE_KW = dict(in_channels=1, out_channels=1, down_block_types=["DownEncoderBlock2D"] * 2,
              up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[16, 32], layers_per_block=1,
              latent_channels=4, norm_num_groups=8, sample_size=32)

UNET_KW = dict(sample_size=16, in_channels=4, out_channels=4, down_block_types=["DownBlock2D", "AttnDownBlock2D"],
               up_block_types=["AttnUpBlock2D", "UpBlock2D"], block_out_channels=[32, 64], layers_per_block=1,
               attention_head_dim=8, norm_num_groups=8, num_class_embeds=4)


def vae_tiny():
    torch.manual_seed(1001)
    model = randomize(AutoencoderKL(**VAE_KW)).eval()
    x = (torch.rand(2, 1, 32, 32) * 2.0 - 1.0).requires_grad_(True)
    h = model.encoder(x)
    moments = model.quant_conv(h)
    eps = torch.randn(2, 4, 16, 16)
    posterior = DiagonalGaussianDistribution(moments)
    z = posterior.mean + posterior.std * eps
    out = model.decode(z).sample
    kl = posterior.kl()
    dout = torch.randn_like(out)
    t = params(model)
    t.update({"x": x, "moments": moments, "eps": eps, "z": z, "out": out, "kl": kl, "dout": dout})
    t.update(grads(dot_loss([(out, dout)]), {"x": x}, model))
    save("model_vae_tiny", t, module_config(model))


def unet_tiny():
    torch.manual_seed(2002)
    model = randomize(UNet2DModel(**UNET_KW)).eval()
    sample = torch.randn(2, 4, 16, 16, requires_grad=True)
    timesteps = torch.tensor([10.0, 500.0], dtype=torch.float32)
    labels = torch.tensor([1, 3], dtype=torch.int32)
    out = model(sample, timesteps, class_labels=labels.long()).sample
    dout = torch.randn_like(out)
    t = params(model)
    t.update({"sample": sample, "timesteps": timesteps, "class_labels": labels, "out": out, "dout": dout})
    t.update(grads(dot_loss([(out, dout)]), {"sample": sample}, model))
    save("model_unet_tiny", t, module_config(model))


def unet_tiny_adamw():
    torch.manual_seed(3003)
    model = randomize(UNet2DModel(**UNET_KW)).train()
    t = params(model)
    sample = torch.randn(4, 4, 16, 16)
    timesteps = torch.tensor([3.0, 250.0, 600.0, 999.0], dtype=torch.float32)
    labels = torch.tensor([0, 1, 2, 3], dtype=torch.int32)
    target = torch.randn(4, 4, 16, 16)
    hp = {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01, "clip": 1.0, "steps": 10}
    ps = list(model.parameters())
    opt = torch.optim.AdamW(ps, lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"],
                            weight_decay=hp["weight_decay"])
    losses, norms = [], []
    for _ in range(hp["steps"]):
        opt.zero_grad()
        loss = F.mse_loss(model(sample, timesteps, class_labels=labels.long()).sample, target)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(ps, hp["clip"])
        opt.step()
        losses.append(loss.item())
        norms.append(float(norm))
    t.update({"sample": sample, "timesteps": timesteps, "class_labels": labels, "target": target,
              "losses": torch.tensor(losses, dtype=torch.float32),
              "grad_norms": torch.tensor(norms, dtype=torch.float32)})
    t.update({"final." + k: v for k, v in params(model).items()})
    cfg = module_config(model)
    cfg.update(hp)
    save("model_unet_tiny_adamw", t, cfg)
    print("  losses", ["%.5f" % v for v in losses])
    print("  grad norms", ["%.4f" % v for v in norms])


def main():
    vae_tiny()
    unet_tiny()
    unet_tiny_adamw()


if __name__ == "__main__":
    main()
