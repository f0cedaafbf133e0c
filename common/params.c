#include "params.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

int params_declare(ParamSet *ps, ParamInit init, float init_scale, const int64_t *shape, const char *fmt, ...) {
    CHECK(!ps->data, "params_declare after params_allocate");
    if (ps->count == ps->cap) {
        ps->cap = ps->cap ? 2 * ps->cap : 64;
        ps->info = xrealloc(ps->info, (size_t)ps->cap * sizeof(ParamInfo));
    }
    ParamInfo *p = &ps->info[ps->count];
    memset(p, 0, sizeof(*p));
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(p->name, sizeof(p->name), fmt, ap);
    va_end(ap);
    CHECK(n > 0 && n < PARAM_NAME_MAX, "parameter name too long: %s", p->name);
    p->numel = 1;
    for (p->ndim = 0; shape[p->ndim] > 0; p->ndim++) {
        CHECK(p->ndim < PARAM_MAX_DIMS, "parameter %s has more than %d dims", p->name, PARAM_MAX_DIMS);
        p->shape[p->ndim] = shape[p->ndim];
        p->numel *= (size_t)shape[p->ndim];
    }
    CHECK(params_find(ps, p->name) < 0, "parameter %s declared twice", p->name);
    // keep every view 16-float aligned so vector loads and memcpy never straddle views
    p->offset = ps->total;
    ps->total += (p->numel + 15) & ~(size_t)15;
    p->init = init;
    p->init_scale = init_scale;
    return ps->count++;
}

void params_allocate(ParamSet *ps) {
    ps->data = xcalloc(ps->total, sizeof(float));
    ps->grad = xcalloc(ps->total, sizeof(float));
}

void params_init(ParamSet *ps, Rng *rng) {
    for (int i = 0; i < ps->count; i++) {
        ParamInfo *p = &ps->info[i];
        float *x = ps->data + p->offset;
        switch (p->init) {
        case INIT_ZEROS: memset(x, 0, p->numel * sizeof(float)); break;
        case INIT_ONES: for (size_t j = 0; j < p->numel; j++) x[j] = 1.0f; break;
        case INIT_UNIFORM: rng_fill_uniform(rng, x, (long)p->numel, -p->init_scale, p->init_scale); break;
        case INIT_NORMAL: rng_fill_normal(rng, x, (long)p->numel, 0.0f, p->init_scale); break;
        }
    }
}

void params_free(ParamSet *ps) {
    free(ps->info);
    free(ps->data);
    free(ps->grad);
    free(ps->m);
    free(ps->v);
    free(ps->ema);
    memset(ps, 0, sizeof(*ps));
}

void params_zero_grad(ParamSet *ps) { memset(ps->grad, 0, ps->total * sizeof(float)); }

int params_find(const ParamSet *ps, const char *name) {
    for (int i = 0; i < ps->count; i++)
        if (strcmp(ps->info[i].name, name) == 0) return i;
    return -1;
}

size_t params_count_floats(const ParamSet *ps) {
    size_t n = 0;
    for (int i = 0; i < ps->count; i++) n += ps->info[i].numel;
    return n;
}
