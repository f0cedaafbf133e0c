"""A VAE folder written by diffusers itself (save_pretrained), for doppel to load, plus the
latents diffusers computes for a fixed input: tests/fixtures/diffusers_vae_tiny/ and
tests/fixtures/diffusers_vae_tiny_io.safetensors."""
import os

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from common import FIXTURES, randomize

torch.manual_seed(1234)
vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=["DownEncoderBlock2D"] * 2,
                    up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[16, 32], layers_per_block=1,
                    latent_channels=4, norm_num_groups=8, sample_size=32, scaling_factor=0.5)
randomize(vae)
vae.eval()
folder = os.path.join(FIXTURES, "diffusers_vae_tiny")
vae.save_pretrained(folder, safe_serialization=True)
x = torch.rand(2, 1, 32, 32) * 2 - 1
with torch.no_grad():
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.mean).sample
save_file({"x": x.contiguous(), "mean": post.mean.contiguous(), "logvar": post.logvar.contiguous(),
           "rec": rec.contiguous()}, os.path.join(FIXTURES, "diffusers_vae_tiny_io.safetensors"))
print("wrote", folder)
