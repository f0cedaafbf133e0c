"""The same measurements as bench_cpu.c with diffusers' UNet2DModel and AutoencoderKL in PyTorch
(eager, float32, CPU), printing `torch <model> <what> <median ms> <min ms> <reps>` lines."""
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DModel

reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
threads = int(sys.argv[2]) if len(sys.argv) > 2 else torch.get_num_threads()
torch.set_num_threads(threads)
torch.manual_seed(0)


def timed(fn):
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts), min(ts)


def report(model, what, fn):
    med, lo = timed(fn)
    print(f"torch {model} {what} {med:.2f} {lo:.2f} {reps}", flush=True)


# the `small` presets (common/models/config.c)
unet = UNet2DModel(sample_size=16, in_channels=4, out_channels=4, down_block_types=["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
                   up_block_types=["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"], block_out_channels=[64, 128, 256],
                   layers_per_block=2, attention_head_dim=32, norm_num_groups=32, num_class_embeds=32)
x = torch.randn(32, 4, 16, 16)
target = torch.randn_like(x)
t = torch.tensor([float(i * 31 % 1000) for i in range(32)])
labels = torch.arange(32) % 32


def unet_fwd():
    with torch.no_grad():
        unet(x, t, class_labels=labels)


def unet_fwd_bwd():
    unet.zero_grad(set_to_none=False)
    F.mse_loss(unet(x, t, class_labels=labels).sample, target).backward()


report("unet-small-b32", "forward", unet_fwd)
report("unet-small-b32", "forward+backward", unet_fwd_bwd)

vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
                    block_out_channels=[32, 64, 128], layers_per_block=1, latent_channels=4, norm_num_groups=32, sample_size=64)
img = torch.rand(16, 1, 64, 64) * 2 - 1


def vae_pass(backward):
    post = vae.encode(img).latent_dist
    rec = vae.decode(post.sample()).sample
    if backward:
        (F.l1_loss(rec, img) + 1e-6 * post.kl().mean()).backward()


def vae_fwd():
    with torch.no_grad():
        vae_pass(False)


def vae_fwd_bwd():
    vae.zero_grad(set_to_none=False)
    vae_pass(True)


report("vae-small-b16", "forward", vae_fwd)
report("vae-small-b16", "forward+backward", vae_fwd_bwd)


# `doppel-diffuser sample`'s work for 32 samples: DPM-Solver++ 2M, 20 steps, classifier-free
# guidance 2 with the conditional and unconditional halves as one batch of 64 (the diffusers way)
from diffusers import DPMSolverMultistepScheduler

sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear", algorithm_type="dpmsolver++",
                                    solver_order=2)
cond = torch.arange(32) % 31
null = torch.full((32,), 31)


def sample():
    gen = torch.Generator().manual_seed(0)
    lat = torch.randn(32, 4, 16, 16, generator=gen)
    sched.set_timesteps(20)
    with torch.no_grad():
        for ts in sched.timesteps:
            eps = unet(torch.cat([lat, lat]), ts, class_labels=torch.cat([cond, null])).sample
            ec, eu = eps.chunk(2)
            lat = sched.step(eu + 2.0 * (ec - eu), ts, lat).prev_sample
    return lat


reps_sample = reps - 2 if reps > 3 else reps
reps, reps_saved = reps_sample, reps
report("sample-32-dpmpp20-g2", "unet-small", sample)
reps = reps_saved
