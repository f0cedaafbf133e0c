"""Loads the diffusers folders that doppel wrote (build/test-out/*, made by build/tests/test_models)
with AutoencoderKL.from_pretrained / UNet2DModel.from_pretrained, fails on any missing or
unexpected key, and checks the outputs against the reference fixtures.

    .venv-ref/bin/python tests/reference/check_diffusers_load.py [build/test-out]
"""
import json
import os
import sys

import torch
from diffusers import AutoencoderKL, UNet2DModel
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "test-out")
FIX = os.path.join(ROOT, "tests", "fixtures")


def load(cls, folder):
    model, info = cls.from_pretrained(folder, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise SystemExit(f"{folder}: diffusers reports {bad}")
    print(f"{folder}: loaded by {cls.__name__}.from_pretrained, no missing/unexpected/mismatched keys")
    return model.eval()


def close(name, got, want, tol=1e-4):
    err = (got - want).abs().max().item()
    lim = (tol + tol * want.abs()).min().item()
    ok = torch.allclose(got, want, atol=tol, rtol=tol)
    print(f"  {name}: max |diff| {err:.3g} {'ok' if ok else 'MISMATCH'}")
    return ok


def main():
    ok = True
    fx = load_file(os.path.join(FIX, "model_vae_tiny.safetensors"))
    vae = load(AutoencoderKL, os.path.join(OUT, "vae_tiny"))
    with torch.no_grad():
        moments = vae.quant_conv(vae.encoder(fx["x"]))
        post = DiagonalGaussianDistribution(moments)
        z = post.mean + post.std * fx["eps"]
        ok &= close("vae moments", moments, fx["moments"])
        ok &= close("vae decode", vae.decode(z).sample, fx["out"])
    fx = load_file(os.path.join(FIX, "model_unet_tiny.safetensors"))
    unet = load(UNet2DModel, os.path.join(OUT, "unet_tiny"))
    with torch.no_grad():
        out = unet(fx["sample"], fx["timesteps"], class_labels=fx["class_labels"].long()).sample
        ok &= close("unet", out, fx["out"])
    print("diffusers loads doppel's folders: " + ("PASS" if ok else "FAIL"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
