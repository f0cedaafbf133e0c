"""Reference for common/optim: clip_grad_norm_ + AdamW + diffusers' cosine schedule + EMAModel.

Writes tests/fixtures/optim.safetensors:
  init.<i>                 parameter i before training, shapes (5,3), (7,), (2,2,3)
  grads.<s>.<i>            the gradient given at optimizer step s (0-based), before clipping
  params.<s>.<i>           parameter i after step s
  norms (10,), lrs (10,)   clip_grad_norm_'s return and the lr AdamW used, per step
  exp_avg.<i>, exp_avg_sq.<i>  AdamW state after the last step
  ema_decay (10,), ema.<i> EMAModel.cur_decay_value per step and its shadow params after the last
  lr_table.<name> (25,)    lr of each diffusers schedule at scheduler steps 0..24 (base 1, warmup 5, total 20)
  ema_table.<k>.steps / .decay   EMAModel.get_decay at the given optimization steps for config k
Parameter 1 (the 1-D one) sits in a param group with weight_decay 0 (the C side's no_decay).
"""
import torch
from diffusers.optimization import (get_constant_schedule, get_constant_schedule_with_warmup,
                                    get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup)
from diffusers.training_utils import EMAModel

from common import save

SHAPES = [(5, 3), (7,), (2, 2, 3)]
NO_DECAY = [1]
STEPS = 10
LR, WARMUP, TOTAL = 1e-2, 3, 10
BETAS, EPS, WD, MAX_NORM = (0.9, 0.999), 1e-8, 0.01, 1.0
EMA = dict(decay=0.99, use_ema_warmup=True, inv_gamma=1.0, power=2 / 3)
# per-step gradient scales: the norm of 34 N(0,1) values is ~5.8, so steps 1, 3, 5, 7, 9 clip
GRAD_SCALE = [0.05, 0.5, 0.1, 0.3, 0.02, 0.4, 0.08, 0.25, 0.12, 0.6]
TABLE = dict(base=1.0, warmup=5, total=20, steps=25)
EMA_TABLES = [
    dict(decay=0.9999, min_decay=0.0, update_after_step=0, use_ema_warmup=True, inv_gamma=1.0, power=2 / 3),
    dict(decay=0.999, min_decay=0.5, update_after_step=3, use_ema_warmup=False, inv_gamma=1.0, power=2 / 3),
    dict(decay=0.9995, min_decay=0.0, update_after_step=2, use_ema_warmup=True, inv_gamma=7.0, power=0.75),
]
EMA_TABLE_STEPS = [0, 1, 2, 3, 4, 5, 6, 7, 10, 31, 100, 1000, 10000, 31623, 100000, 1000000]


def main():
    torch.manual_seed(0)
    t = {}
    params = [torch.nn.Parameter(0.5 * torch.randn(s)) for s in SHAPES]
    for i, p in enumerate(params):
        t[f"init.{i}"] = p.detach().clone()
    groups = [{"params": [p for i, p in enumerate(params) if i not in NO_DECAY]},
              {"params": [p for i, p in enumerate(params) if i in NO_DECAY], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=WARMUP, num_training_steps=TOTAL)
    ema = EMAModel(params, **EMA)
    norms, lrs, decays = [], [], []
    for s in range(STEPS):
        for i, p in enumerate(params):
            g = GRAD_SCALE[s] * torch.randn(p.shape)
            t[f"grads.{s}.{i}"] = g.clone()
            p.grad = g
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, MAX_NORM)))
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        ema.step(params)
        decays.append(ema.cur_decay_value)
        for i, p in enumerate(params):
            t[f"params.{s}.{i}"] = p.detach().clone()
    for i, p in enumerate(params):
        t[f"exp_avg.{i}"] = opt.state[p]["exp_avg"].clone()
        t[f"exp_avg_sq.{i}"] = opt.state[p]["exp_avg_sq"].clone()
        t[f"ema.{i}"] = ema.shadow_params[i].clone()
    t["norms"] = torch.tensor(norms)
    t["lrs"] = torch.tensor(lrs)
    t["ema_decay"] = torch.tensor(decays)

    makers = {
        "constant": lambda o: get_constant_schedule(o),
        "constant_with_warmup": lambda o: get_constant_schedule_with_warmup(o, TABLE["warmup"]),
        "cosine": lambda o: get_cosine_schedule_with_warmup(o, TABLE["warmup"], TABLE["total"]),
        "linear": lambda o: get_linear_schedule_with_warmup(o, TABLE["warmup"], TABLE["total"]),
    }
    for name, make in makers.items():
        o = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=TABLE["base"])
        sc = make(o)
        vals = []
        for _ in range(TABLE["steps"]):
            vals.append(o.param_groups[0]["lr"])
            o.step()
            sc.step()
        t[f"lr_table.{name}"] = torch.tensor(vals, dtype=torch.float32)

    for k, cfg in enumerate(EMA_TABLES):
        e = EMAModel([torch.nn.Parameter(torch.zeros(1))], **cfg)
        t[f"ema_table.{k}.steps"] = torch.tensor(EMA_TABLE_STEPS, dtype=torch.int32)
        t[f"ema_table.{k}.decay"] = torch.tensor([e.get_decay(s) for s in EMA_TABLE_STEPS], dtype=torch.float32)

    config = dict(shapes=SHAPES, no_decay=NO_DECAY, steps=STEPS, lr=LR, warmup=WARMUP, total=TOTAL,
                  schedule="cosine", betas=BETAS, eps=EPS, weight_decay=WD, max_norm=MAX_NORM,
                  ema=EMA, grad_scale=GRAD_SCALE, lr_table=TABLE, ema_tables=EMA_TABLES,
                  torch=torch.__version__, diffusers=__import__("diffusers").__version__)
    save("optim", t, config)
    print(f"  pre-clip norms {[round(n, 3) for n in norms]} (max_norm {MAX_NORM})")


if __name__ == "__main__":
    main()
