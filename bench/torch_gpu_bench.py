"""PyTorch side of the GPU benchmark: diffusers' UNet2DModel with doppel's `small` and `seed` presets
(common/models/config.c, built as in bench/torch_bench.py) on one CUDA device, eager, in two precisions:
fp32 (TF32 off for cuBLAS and cuDNN) and bf16 (torch.autocast, fp32 master weights).

    python3 bench/torch_gpu_bench.py [REPS [small|seed|all]]     (defaults: 20 all)
    DRYRUN=1 python3 bench/torch_gpu_bench.py                      (CPU, batch 2, one run of each: a check, not a timing)
    CUDNN_BENCHMARK=1 ...                                          (torch.backends.cudnn.benchmark = True; off by default)

Prints `# torch <version> cuda <version> device <name>`, a `# settings ...` line, then one line per measurement:
`torch <model> <what> <median ms> <min ms> <reps>` with model unet-{small,seed}-{fp32,bf16} and what one of
train-step-b32 (zero_grad, forward, MSE loss, backward, AdamW step), forward-b64 (no_grad) and
sample-32-dpmpp20-g2 (32 samples, DPM-Solver++ 2M, 20 steps, classifier-free guidance 2 as one batch of 64).
Each measurement has 3 warm-ups, then REPS timed runs (sampling: max(3, REPS // 4)), timed with CUDA events.
A measurement that fails prints `# error <model> <what>: <message>` and the rest go on."""
import contextlib
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from diffusers import DPMSolverMultistepScheduler, UNet2DModel

DRY = os.environ.get("DRYRUN", "") not in ("", "0")
USAGE = "usage: torch_gpu_bench.py [REPS [small|seed|all]]"
try:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
except ValueError:
    sys.exit(USAGE)
which = sys.argv[2] if len(sys.argv) > 2 else "all"
if reps < 1 or which not in ("small", "seed", "all") or len(sys.argv) > 3:
    sys.exit(USAGE)

if DRY:
    dev = torch.device("cpu")
    reps, reps_sample, warmups = 1, 1, 0
    n_train, n_fwd, n_samples, n_steps = 2, 2, 1, 2
else:
    if not torch.cuda.is_available():
        sys.exit("torch_gpu_bench.py: no CUDA device (DRYRUN=1 runs a CPU check)")
    dev = torch.device("cuda")
    reps_sample, warmups = max(3, reps // 4), 3
    n_train, n_fwd, n_samples, n_steps = 32, 64, 32, 20

# fp32 means IEEE fp32: no TF32 in matmuls or convolutions (cuDNN allows it by default)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.backends.cudnn.benchmark = os.environ.get("CUDNN_BENCHMARK", "") not in ("", "0")

# the presets (common/models/config.c; num_class_embeds = 31 users + the learned "no user" class)
PRESETS = {
    "small": dict(sample_size=16, in_channels=4, out_channels=4,
                  down_block_types=["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
                  up_block_types=["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"], block_out_channels=[64, 128, 256],
                  layers_per_block=2, attention_head_dim=32, norm_num_groups=32, num_class_embeds=32),
    "seed": dict(sample_size=32, in_channels=4, out_channels=4,
                 down_block_types=["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
                 up_block_types=["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
                 block_out_channels=[128, 256, 512, 512], layers_per_block=2, attention_head_dim=32, norm_num_groups=32,
                 num_class_embeds=32),
}


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, n):
    for _ in range(warmups):
        fn()
    sync()
    ts = []
    for _ in range(n):
        if dev.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            ts.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts), min(ts)


def report(model, what, fn, n):
    try:
        med, lo = timed(fn, n)
    except Exception as e:  # an OOM or an API change should not cost the other measurements
        msg = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        print(f"# error {model} {what}: {msg}", flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        return
    print(f"torch {model} {what} {med:.2f} {lo:.2f} {n}", flush=True)


def bench_preset(name):
    cfg = PRESETS[name]
    s = cfg["sample_size"]
    torch.manual_seed(0)
    unet = UNet2DModel(**cfg).to(dev)

    # training batch: random latents, targets, timesteps and labels, made once on the device
    x_tr = torch.randn(n_train, 4, s, s, device=dev)
    target = torch.randn_like(x_tr)
    t_tr = torch.randint(0, 1000, (n_train,), device=dev)
    y_tr = torch.randint(0, 32, (n_train,), device=dev)
    # inference batch
    x_fw = torch.randn(n_fwd, 4, s, s, device=dev)
    t_fw = torch.randint(0, 1000, (n_fwd,), device=dev)
    y_fw = torch.randint(0, 32, (n_fwd,), device=dev)
    # sampling: `doppel-diffuser sample`'s work (as in bench/torch_bench.py), the conditional and
    # unconditional halves as one batch
    sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear", algorithm_type="dpmsolver++",
                                        solver_order=2)
    cond = torch.arange(n_samples, device=dev) % 31
    null = torch.full((n_samples,), 31, device=dev)

    for prec in ("fp32", "bf16"):
        model = f"unet-{name}-{prec}"

        def amp():
            if prec == "bf16":
                return torch.autocast(dev.type, dtype=torch.bfloat16)
            return contextlib.nullcontext()

        opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)

        def train_step():
            opt.zero_grad(set_to_none=True)
            with amp():
                out = unet(x_tr, t_tr, class_labels=y_tr).sample
            F.mse_loss(out.float(), target).backward()
            opt.step()

        def forward():
            with torch.no_grad(), amp():
                return unet(x_fw, t_fw, class_labels=y_fw).sample

        def sample():
            gen = torch.Generator(device=dev).manual_seed(0)
            lat = torch.randn(n_samples, 4, s, s, generator=gen, device=dev)
            sched.set_timesteps(n_steps, device=dev)
            with torch.no_grad():
                for ts in sched.timesteps:
                    with amp():
                        eps = unet(torch.cat([lat, lat]), ts, class_labels=torch.cat([cond, null])).sample
                    ec, eu = eps.float().chunk(2)  # the scheduler casts its result to eps's dtype: keep latents fp32
                    lat = sched.step(eu + 2.0 * (ec - eu), ts, lat).prev_sample
            return lat

        unet.train()
        report(model, f"train-step-b{n_train}" if DRY else "train-step-b32", train_step, reps)
        del opt
        unet.eval()
        report(model, f"forward-b{n_fwd}" if DRY else "forward-b64", forward, reps)
        report(model, f"sample-{n_samples}-dpmpp{n_steps}-g2" if DRY else "sample-32-dpmpp20-g2", sample, reps_sample)
        try:
            lat, out = sample(), forward()
            if not (torch.isfinite(lat).all() and torch.isfinite(out).all()):
                print(f"# warning {model}: non-finite outputs", flush=True)
            elif DRY:
                print(f"# ok {model}: forward {tuple(out.shape)} {out.dtype}, sample {tuple(lat.shape)} {lat.dtype}",
                      flush=True)
        except Exception as e:
            print(f"# error {model} check: {' '.join(str(e).split())[:300]}", flush=True)
    del unet
    if dev.type == "cuda":
        torch.cuda.empty_cache()


if dev.type == "cuda":
    devname = torch.cuda.get_device_name(0)
else:
    devname = "cpu (DRYRUN, not a timing)"
print(f"# torch {torch.__version__} cuda {torch.version.cuda} device {devname}", flush=True)
import diffusers  # noqa: E402  (only for its version)

print(f"# settings diffusers {diffusers.__version__} tf32 off cudnn.benchmark {torch.backends.cudnn.benchmark} "
      f"reps {reps} sample-reps {reps_sample} warmups {warmups} presets {which}", flush=True)
t_start = time.perf_counter()
for name in (["small", "seed"] if which == "all" else [which]):
    bench_preset(name)
print(f"# done in {time.perf_counter() - t_start:.1f} s", flush=True)
