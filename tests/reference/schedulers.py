"""Reference for common/sched: diffusers' DDPM, DDIM and DPM-Solver++ (2M) schedulers.

Writes tests/fixtures/schedulers.safetensors (schedules "linear", "scaled_linear", "squaredcos_cap_v2"
with diffusers' defaults beta_start 0.0001, beta_end 0.02, and "sd" = scaled_linear 0.00085 / 0.012;
T = 1000 everywhere; see config["schedules"]):
  betas.<sched>, ac.<sched> (T,)          betas and alphas_cumprod of DDPMScheduler.__init__
  snr.t (I32), snr.<sched>                training_utils.compute_snr at a few timesteps
  timesteps.<kind>.<sched>.<steps> (I32)  set_timesteps(steps); kind ddpm, ddim, dpmpp, dpmpp_karras
  sigmas.<kind>.<sched>.<steps>           DPM-Solver++'s float32 sigmas (steps + 1, the last 0)
  add_noise.x0, add_noise.noise (N, P), add_noise.t (N,) I32
  add_noise.<sched>, velocity.<sched>     add_noise and get_velocity of those
  run.<name>.*                            sampler runs listed in config["runs"]:
    mode "chain":  x.init, then for each step i: mo.<i> (the model output given) and x.<i> (x after it)
    mode "single": for each step i in "indices": x.<i> (the input x), mo.<i>, mean.<i> (prev_sample
                   with the variance noise replaced by zeros) and std (K,) (the noise's scale, 0 where
                   diffusers draws none); the C test checks out = mean + std * its own noise.
The model outputs come from a fake model that is exact for a clean sample drifting with t,
x0(t) = x0_ref + 0.3 (t/1000) z, so x0 predictions change from step to step (the 2M term matters)
while the chain stays O(1).
"""
import safetensors.torch  # noqa: F401  (before diffusers in this environment)
import torch
import diffusers
import diffusers.schedulers.scheduling_ddim as ddim_mod
import diffusers.schedulers.scheduling_ddpm as ddpm_mod
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.training_utils import compute_snr

from common import save

T = 1000
N, P = 2, 64
SCHEDULES = {
    "linear": dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02),
    "scaled_linear": dict(beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02),
    "squaredcos_cap_v2": dict(beta_schedule="squaredcos_cap_v2", beta_start=0.0001, beta_end=0.02),
    "sd": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
}
TABLE_STEPS = [1, 7, 20, 50]
TABLE_SCHEDS = ["linear", "sd"]
SNR_T = [0, 1, 10, 250, 500, 999]
NOISE_T = [10, 873]
DPM = dict(algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", lower_order_final=True,
           euler_at_final=False, final_sigmas_type="zero", thresholding=False)
RUNS = [
    dict(name="ddpm_eps", sampler="ddpm", schedule="linear", prediction="epsilon", steps=20, mode="single",
         indices=[0, 1, 10, 18, 19]),
    dict(name="ddpm_v", sampler="ddpm", schedule="sd", prediction="v_prediction", steps=20, mode="single",
         indices=[0, 9, 19]),
    dict(name="ddim_eps", sampler="ddim", schedule="sd", prediction="epsilon", steps=10, eta=0.0, mode="chain"),
    dict(name="ddim_v", sampler="ddim", schedule="linear", prediction="v_prediction", steps=10, eta=0.0, mode="chain"),
    dict(name="ddim_eta_eps", sampler="ddim", schedule="sd", prediction="epsilon", steps=20, eta=0.5, mode="single",
         indices=[0, 10, 19]),
    dict(name="ddim_eta_v", sampler="ddim", schedule="linear", prediction="v_prediction", steps=20, eta=0.5,
         mode="single", indices=[0, 10, 19]),
    dict(name="dpmpp_eps", sampler="dpmpp2m", schedule="sd", prediction="epsilon", steps=20, mode="chain"),
    dict(name="dpmpp_v", sampler="dpmpp2m", schedule="sd", prediction="v_prediction", steps=20, mode="chain"),
    dict(name="dpmpp_karras_eps", sampler="dpmpp2m", schedule="sd", prediction="epsilon", steps=20, karras=True,
         mode="chain"),
    dict(name="dpmpp_karras_v_linear", sampler="dpmpp2m", schedule="linear", prediction="v_prediction", steps=8,
         karras=True, mode="chain"),
    dict(name="dpmpp_short_linear", sampler="dpmpp2m", schedule="linear", prediction="epsilon", steps=5,
         mode="chain"),
]


def make(kind, sched, prediction="epsilon", karras=False):
    common = dict(num_train_timesteps=T, prediction_type=prediction, **SCHEDULES[sched])
    if kind == "ddpm":
        return DDPMScheduler(variance_type="fixed_small", clip_sample=False, **common)
    if kind == "ddim":
        return DDIMScheduler(clip_sample=False, set_alpha_to_one=True, **common)
    return DPMSolverMultistepScheduler(use_karras_sigmas=karras, **DPM, **common)


def fake_model(x, t, ac, prediction, x0_ref, z):
    """The exact epsilon / v for the clean sample x0(t) = x0_ref + 0.3 (t/1000) z, in float64."""
    a = ac[int(t)].double()
    x0 = x0_ref.double() + 0.3 * (int(t) / 1000.0) * z.double()
    eps = (x.double() - a.sqrt() * x0) / (1 - a).sqrt()
    out = eps if prediction == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0
    return out.float()


def zero_noise(shape, generator=None, device=None, dtype=None, layout=None):
    return torch.zeros(shape, dtype=dtype or torch.float32)


def run_chain(sc, r, t, x0_ref, z):
    pre = f"run.{r['name']}."
    x = torch.randn(N, P)
    t[pre + "x.init"] = x.clone()
    for i, ts in enumerate(sc.timesteps):
        mo = fake_model(x, ts, sc.alphas_cumprod, r["prediction"], x0_ref, z)
        kw = dict(eta=r["eta"]) if r["sampler"] == "ddim" else {}
        x = sc.step(mo, ts, x, **kw).prev_sample
        t[pre + f"mo.{i}"] = mo
        t[pre + f"x.{i}"] = x.clone()


def run_single(sc, r, t, x0_ref, z):
    pre = f"run.{r['name']}."
    stds = []
    ratio = T // r["steps"]
    for i in r["indices"]:
        ts = sc.timesteps[i]
        a = sc.alphas_cumprod[int(ts)]
        x = a.sqrt() * x0_ref + (1 - a).sqrt() * torch.randn(N, P)  # a plausible x_t
        mo = fake_model(x, ts, sc.alphas_cumprod, r["prediction"], x0_ref, z)
        if r["sampler"] == "ddpm":
            mean = sc.step(mo, ts, x).prev_sample
            std = sc._get_variance(ts) ** 0.5 if int(ts) > 0 else torch.tensor(0.0)
        else:
            mean = sc.step(mo, ts, x, eta=r["eta"]).prev_sample
            std = r["eta"] * sc._get_variance(ts, ts - ratio) ** 0.5
        t[pre + f"x.{i}"] = x
        t[pre + f"mo.{i}"] = mo
        t[pre + f"mean.{i}"] = mean
        stds.append(float(std))
    t[pre + "std"] = torch.tensor(stds, dtype=torch.float32)


def main():
    torch.manual_seed(0)
    t = {}
    for name in SCHEDULES:
        sc = make("ddpm", name)
        t[f"betas.{name}"] = sc.betas
        t[f"ac.{name}"] = sc.alphas_cumprod
    t["snr.t"] = torch.tensor(SNR_T, dtype=torch.int32)
    for name in TABLE_SCHEDS:
        t[f"snr.{name}"] = compute_snr(make("ddpm", name), torch.tensor(SNR_T))

    for sched in TABLE_SCHEDS:
        for steps in TABLE_STEPS:
            for kind in ["ddpm", "ddim", "dpmpp", "dpmpp_karras"]:
                sc = make("dpmpp" if kind.startswith("dpmpp") else kind, sched, karras=kind == "dpmpp_karras")
                sc.set_timesteps(steps)
                t[f"timesteps.{kind}.{sched}.{steps}"] = sc.timesteps
                if kind.startswith("dpmpp"):
                    t[f"sigmas.{kind}.{sched}.{steps}"] = sc.sigmas

    x0, noise = torch.randn(N, P), torch.randn(N, P)
    ts = torch.tensor(NOISE_T)
    t["add_noise.x0"], t["add_noise.noise"], t["add_noise.t"] = x0, noise, ts
    for name in TABLE_SCHEDS:
        sc = make("ddpm", name)
        t[f"add_noise.{name}"] = sc.add_noise(x0, noise, ts)
        t[f"velocity.{name}"] = sc.get_velocity(x0, noise, ts)

    # DDPM / DDIM draw their variance noise through randn_tensor: make it zeros to get the mean
    ddpm_mod.randn_tensor = zero_noise
    ddim_mod.randn_tensor = zero_noise
    x0_ref, z = 0.5 * torch.randn(N, P), torch.randn(N, P)
    for r in RUNS:
        r.setdefault("eta", 0.0)
        r.setdefault("karras", False)
        sc = make(r["sampler"] if r["sampler"] != "dpmpp2m" else "dpmpp", r["schedule"], r["prediction"], r["karras"])
        sc.set_timesteps(r["steps"])
        (run_chain if r["mode"] == "chain" else run_single)(sc, r, t, x0_ref, z)

    config = dict(T=T, N=N, per=P, schedules=SCHEDULES, table_steps=TABLE_STEPS, table_schedules=TABLE_SCHEDS,
                  noise_t=NOISE_T, dpmsolver=DPM, runs=RUNS, torch=torch.__version__, diffusers=diffusers.__version__)
    save("schedulers", t, config)


if __name__ == "__main__":
    main()
