// loss_scale.c: GradScaler's update rule (see loss_scale.h).
#include "optim/loss_scale.h"

#include <string.h>

void loss_scaler_init(LossScaler *s, int enabled) {
    memset(s, 0, sizeof(*s));
    s->enabled = enabled;
    s->scale = enabled ? 65536.0f : 1.0f;
    s->growth = 2.0f, s->backoff = 0.5f, s->interval = 2000;
}

int loss_scaler_update(LossScaler *s, int grads_finite, float *unscale) {
    *unscale = 1.0f / s->scale;
    if (!s->enabled) return grads_finite;
    if (!grads_finite) {
        s->scale *= s->backoff;
        s->good = 0;
        s->skipped++;
        return 0;
    }
    if (++s->good >= s->interval) s->scale *= s->growth, s->good = 0;
    return 1;
}
