// blockenv.h: shared by the block and model tests: a ParamSet + arena + context, fixture tensors
// loaded into parameter views by diffusers key, and every parameter gradient compared.
#pragma once
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "nn/nn.h"
#include "testlib.h"

typedef struct {
    ParamSet *ps;
    Arena arena;
    Rng rng;
    Ctx ctx;
    SafeTensors *st;
    const char *strip;  // prefix of our names that the fixture's keys lack ("blk."), or ""
} Env;

static inline int is_io_name(const char *k, const char *const *io) {
    if (!strncmp(k, "grad.", 5) || !strncmp(k, "res.", 4) || !strncmp(k, "dres.", 5)) return 1;
    for (int i = 0; io[i]; i++)
        if (!strcmp(k, io[i])) return 1;
    return 0;
}

// Opens the fixture, checks that its parameter keys are exactly ours with the same shapes, and
// loads them. io: NULL-terminated names of the fixture's non-parameter tensors.
static inline int env_open(Env *e, ParamSet *ps, const char *fixture, const char *strip, const char *const *io) {
    memset(e, 0, sizeof(*e));
    e->ps = ps;
    e->strip = strip;
    arena_init(&e->arena, 0);
    rng_seed(&e->rng, 1);
    ctx_init(&e->ctx, ps, &e->arena, &e->rng);
    e->st = fx_open(fixture);
    if (!e->st) return 0;
    int n_fixture_params = 0;
    for (int i = 0; i < e->st->count; i++)
        if (!is_io_name(e->st->tensors[i].name, io)) n_fixture_params++;
    EXPECT(n_fixture_params == ps->count, "%s: fixture has %d parameters, doppel declares %d", fixture,
           n_fixture_params, ps->count);
    size_t ls = strlen(strip);
    for (int i = 0; i < ps->count; i++) {
        const ParamInfo *p = &ps->info[i];
        const StTensor *t = st_find(e->st, p->name + ls);
        if (!t) {
            tl_fail(__FILE__, __LINE__, "%s: parameter '%s' missing from the fixture", fixture, p->name + ls);
            continue;
        }
        int same = t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
        EXPECT(same, "%s: '%s' has a different shape in the fixture", fixture, p->name + ls);
        if (same) st_to_f32(ps->data + p->offset, t);
    }
    return !tl_current_failed();
}

static inline Tensor env_tensor(Env *e, const char *name) {
    const StTensor *t = st_find(e->st, name);
    Tensor x = {0};
    if (!t) {
        tl_fail(__FILE__, __LINE__, "fixture has no '%s'", name);
        return x;
    }
    x.N = (int)t->shape[0];
    x.C = t->ndim > 1 ? (int)t->shape[1] : 1;
    x.H = t->ndim > 2 ? (int)t->shape[2] : 1;
    x.W = t->ndim > 3 ? (int)t->shape[3] : 1;
    x.d = arena_floats(&e->arena, t->numel);
    st_to_f32(x.d, t);
    return x;
}

static inline void env_expect(Env *e, const char *name, const float *got, double atol, double rtol) {
    const StTensor *t = st_find(e->st, name);
    if (!t) {
        tl_fail(__FILE__, __LINE__, "fixture has no '%s'", name);
        return;
    }
    float *want = xmalloc(t->numel * sizeof(float));
    st_to_f32(want, t);
    EXPECT_CLOSE(name, got, want, t->numel, atol, rtol);
    free(want);
}

// compares every parameter gradient; prints the worst one only (plus any failure)
static inline void env_expect_param_grads(Env *e, double atol, double rtol) {
    size_t ls = strlen(e->strip);
    char key[PARAM_NAME_MAX + 8];
    for (int i = 0; i < e->ps->count; i++) {
        const ParamInfo *p = &e->ps->info[i];
        snprintf(key, sizeof(key), "grad.%s", p->name + ls);
        env_expect(e, key, e->ps->grad + p->offset, atol, rtol);
    }
}

static inline void env_close(Env *e) {
    fx_close(e->st);
    ctx_free(&e->ctx);
    arena_free(&e->arena);
}
