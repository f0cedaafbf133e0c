#include "optim/ema.h"

#include <math.h>
#include <string.h>

#include "check.h"

EmaConfig ema_config_default(void) {
    return (EmaConfig){.decay = 0.9999f, .min_decay = 0.0f, .update_after_step = 0,
                       .use_ema_warmup = 1, .inv_gamma = 1.0f, .power = 2.0f / 3.0f};
}

void ema_init(ParamSet *ps) {
    CHECK(ps->data, "ema_init before params_allocate");
    if (!ps->ema) ps->ema = xmalloc(ps->total * sizeof(float));
    memcpy(ps->ema, ps->data, ps->total * sizeof(float));
}

float ema_decay(const EmaConfig *c, int64_t optimization_step) {
    int64_t step = optimization_step - c->update_after_step - 1;
    if (step <= 0) return 0.0f;
    double d = c->use_ema_warmup ? 1.0 - pow(1.0 + (double)step / c->inv_gamma, -(double)c->power)
                                 : (1.0 + (double)step) / (10.0 + (double)step);
    d = fmin(d, c->decay);
    d = fmax(d, c->min_decay);
    return (float)d;
}

void ema_update(ParamSet *ps, float decay) {
    CHECK(ps->ema, "ema_update before ema_init");
    float *e = ps->ema;
    const float *p = ps->data;
    const float omd = (float)(1.0 - (double)decay);
    const size_t n = ps->total;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) e[i] = ema_update_one(e[i], p[i], omd);
}
