#include "optim/adamw.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

// A float setting as the decimal the user wrote: 0.999f is 0.99900001287; torch works from the
// double 0.999, and at step 1 that makes 1 - beta2^t differ by 1.3e-5 relative. The shortest
// decimal that rounds back to the same float is what a config file or command line said.
static double as_written(float x) {
    char s[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(s, sizeof(s), "%.*g", prec, (double)x);
        double d = strtod(s, NULL);
        if ((float)d == x) return d;
    }
    return (double)x;
}

void adamw_init(AdamW *opt, ParamSet *ps, float lr, float beta1, float beta2, float eps,
                float weight_decay) {
    CHECK(ps->data, "adamw_init before params_allocate");
    CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1 && eps >= 0 && weight_decay >= 0,
          "adamw_init: bad settings beta1 %g beta2 %g eps %g weight_decay %g", beta1, beta2, eps,
          weight_decay);
    *opt = (AdamW){.lr = lr, .beta1 = beta1, .beta2 = beta2, .eps = eps, .weight_decay = weight_decay};
    if (!ps->m) ps->m = xcalloc(ps->total, sizeof(float));
    if (!ps->v) ps->v = xcalloc(ps->total, sizeof(float));
}

AdamWCoefs adamw_coefs(const AdamW *opt, float lr, int64_t step) {
    double b1 = as_written(opt->beta1), b2 = as_written(opt->beta2);
    double wd = as_written(opt->weight_decay), lr_d = lr;  // lr comes from lr_at(), not a config
    double bc1 = 1.0 - pow(b1, (double)step), bc2 = 1.0 - pow(b2, (double)step);
    return (AdamWCoefs){
        .decay_mul = (float)(1.0 - lr_d * wd),
        .beta1 = (float)b1,
        .one_minus_beta1 = (float)(1.0 - b1),
        .beta2 = (float)b2,
        .one_minus_beta2 = (float)(1.0 - b2),
        .bc2_sqrt = (float)sqrt(bc2),
        .neg_step_size = (float)(-(lr_d / bc1)),
        .eps = opt->eps,
    };
}

void adamw_step(AdamW *opt, ParamSet *ps, float lr) {
    CHECK(ps->m && ps->v, "adamw_step before adamw_init");
    opt->step++;
    const AdamWCoefs c = adamw_coefs(opt, lr, opt->step);
    float *p = ps->data, *g = ps->grad, *m = ps->m, *v = ps->v;
    // views are visited one by one only to pick the decay; padding (zero everywhere) is left alone
    #pragma omp parallel
    for (int i = 0; i < ps->count; i++) {
        const ParamInfo *info = &ps->info[i];
        const float decay_mul = info->no_decay ? 1.0f : c.decay_mul;
        const size_t lo = info->offset, hi = info->offset + info->numel;
        #pragma omp for schedule(static) nowait
        for (size_t j = lo; j < hi; j++) adamw_update(&p[j], &m[j], &v[j], g[j], decay_mul, &c);
    }
}
