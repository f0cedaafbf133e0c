// adamw.h: torch.optim.AdamW (amsgrad off, maximize off) over a whole ParamSet in one loop.
//
// One step, per float, in torch's own order and rounding (torch/optim/adamw.py, single-tensor path):
//   p  *= 1 - lr * weight_decay              decoupled decay first (skipped for ParamInfo.no_decay)
//   m   = m * beta1 + (1 - beta1) * g
//   v   = v * beta2 + (1 - beta2) * g * g
//   denom = sqrt(v) / sqrt(1 - beta2^t) + eps
//   p  += -(lr / (1 - beta1^t)) * m / denom
// ps->m and ps->v have ps->data's layout; padding between views stays zero.
//
// Gradient accumulation needs no code here: backward passes add (+=) into ps->grad, so the trainer
// zeroes grads once, runs `accum` micro-batches with the loss scaled by 1/accum, then clips and
// steps once. Clipping (clip.h) and the NaN/Inf guard act on ps->grad before adamw_step.
#pragma once
#include <math.h>
#include <stdint.h>

#include "ops/pointwise.h"
#include "params.h"

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;  // lr: the base rate; adamw_step takes the scheduled one
    int64_t step;                               // optimizer steps taken (torch's state["step"])
} AdamW;

// Allocates ps->m and ps->v (zeroed) if they are NULL; sets step to 0. A resumed run loads m, v
// and step after this.
void adamw_init(AdamW *opt, ParamSet *ps, float lr, float beta1, float beta2, float eps,
                float weight_decay);
// One step with learning rate `lr` (from lr_at()); uses ps->grad as is and increments opt->step.
void adamw_step(AdamW *opt, ParamSet *ps, float lr);

// Per-step scalars, as torch rounds them to float32 when it hands Python numbers to its kernels.
typedef struct {
    float decay_mul;                  // 1 - lr * weight_decay (1 for no_decay views)
    float beta1, one_minus_beta1, beta2, one_minus_beta2;
    float bc2_sqrt;                   // sqrt(1 - beta2^t)
    float neg_step_size;              // -lr / (1 - beta1^t)
    float eps;
} AdamWCoefs;
AdamWCoefs adamw_coefs(const AdamW *opt, float lr, int64_t step);

// The per-float update, shared by every backend.
static inline DOPPEL_HD void adamw_update(float *p, float *m, float *v, float g, float decay_mul,
                                const AdamWCoefs *c) {
    float pp = *p * decay_mul;
    float mm = *m * c->beta1;
    mm = mm + c->one_minus_beta1 * g;
    float vv = *v * c->beta2;
    vv = vv + c->one_minus_beta2 * g * g;
    float denom = sqrtf(vv) / c->bc2_sqrt + c->eps;
    *p = pp + c->neg_step_size * mm / denom;
    *m = mm;
    *v = vv;
}
