// loss_scale.h: dynamic loss scaling for fp16 training, as torch.cuda.amp.GradScaler with its
// defaults (init_scale 2^16, growth_factor 2, backoff_factor 0.5, growth_interval 2000).
//
// The trainer multiplies the loss (its backward's dloss) by scale(); after the backward:
//   finite gradients: unscale them (grads *= 1 / scale), clip, step; every growth_interval such
//                     steps in a row the scale doubles
//   inf / NaN:        skip the optimizer step and halve the scale (overflow in fp16 GEMMs, not a
//                     diverging model: it is not counted as a failed step)
// Disabled (fp32, tf32, bf16 GEMMs) the scale is 1 and every step is taken as it is.
#pragma once

typedef struct {
    int enabled;
    float scale;         // the current factor (1 when disabled)
    float growth, backoff;
    int interval;        // finite steps in a row before the scale grows
    int good;            // finite steps since the last change
    long skipped;        // steps skipped for inf / NaN so far
} LossScaler;

void loss_scaler_init(LossScaler *s, int enabled);
// after a backward with the loss multiplied by s->scale: 1 to take the step (unscale by
// 1 / the scale returned in *unscale first), 0 to skip it; updates the scale either way
int loss_scaler_update(LossScaler *s, int grads_finite, float *unscale);
