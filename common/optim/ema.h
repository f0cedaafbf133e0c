// ema.h: diffusers.training_utils.EMAModel over a whole ParamSet. ps->ema has ps->data's layout.
// After each optimizer step the trainer calls ema_update(ps, ema_decay(&cfg, step)) with `step`
// counting optimizer steps from 1 (EMAModel.optimization_step, incremented before get_decay).
#pragma once
#include <stdint.h>

#include "ops/pointwise.h"
#include "params.h"

typedef struct {
    float decay, min_decay;  // the decay is clamped to [min_decay, decay]
    int update_after_step;   // the decay is 0 (ema = params) until this many steps have passed
    int use_ema_warmup;      // 1: 1 - (1 + step/inv_gamma)^-power; 0: (1 + step) / (10 + step)
    float inv_gamma, power;
} EmaConfig;

// decay 0.9999, min_decay 0, update_after_step 0, warmup on with inv_gamma 1 and power 2/3
// (EMAModel's arguments, with the warmup diffusers' train_unconditional.py turns on).
EmaConfig ema_config_default(void);
// Allocates ps->ema if NULL and copies ps->data into it (EMAModel.__init__ clones the params).
void ema_init(ParamSet *ps);
// EMAModel.get_decay(optimization_step)
float ema_decay(const EmaConfig *c, int64_t optimization_step);
// ema -= (1 - decay) * (ema - params)
void ema_update(ParamSet *ps, float decay);

// The per-float update, shared by every backend.
static inline DOPPEL_HD float ema_update_one(float e, float p, float one_minus_decay) {
    return e - one_minus_decay * (e - p);
}
