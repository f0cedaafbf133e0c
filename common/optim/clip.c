#include "optim/clip.h"

#include <math.h>

float grad_global_norm(const ParamSet *ps) {
    const float *g = ps->grad;
    const size_t n = ps->total;
    double ss = 0;
    #pragma omp parallel for schedule(static) reduction(+ : ss)
    for (size_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
    return (float)sqrt(ss);
}

float clip_grad_norm(ParamSet *ps, float max_norm) {
    float total = grad_global_norm(ps);
    // torch 1.13 computes max_norm / (total + 1e-6) on float32 tensors, and a Python number
    // divided by a tensor is reciprocal(tensor) * number
    float coef = (1.0f / (total + 1e-6f)) * max_norm;
    if (coef < 1.0f) grads_scale(ps, coef);
    return total;
}

int grads_finite(const ParamSet *ps) {
    const float *g = ps->grad;
    const size_t n = ps->total;
    int bad = 0;
    #pragma omp parallel for schedule(static) reduction(| : bad)
    for (size_t i = 0; i < n; i++) bad |= !isfinite(g[i]);
    return !bad;
}

void grads_scale(ParamSet *ps, float s) {
    float *g = ps->grad;
    const size_t n = ps->total;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) g[i] *= s;
}
