// test_optim: AdamW, clip_grad_norm, EMA and lr schedules against torch 1.13 + diffusers 0.28
// (tests/reference/optim.py), plus the NaN guard, grads_scale and gradient accumulation.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/ema.h"
#include "optim/loss_scale.h"
#include "optim/lr_schedule.h"
#include "params.h"
#include "testlib.h"

#define N_FX_PARAMS 3

static const double ATOL = 1e-6, RTOL = 1e-5;  // params, moments, EMA weights

// p.0 (5,3), p.1 (7,) excluded from weight decay, p.2 (2,2,3): the fixture's parameters
static void fixture_params(ParamSet *ps) {
    memset(ps, 0, sizeof(*ps));
    params_declare(ps, INIT_ZEROS, 0, (int64_t[]){5, 3, 0}, "p.0");
    params_declare(ps, INIT_ZEROS, 0, (int64_t[]){7, 0}, "p.1");
    params_declare(ps, INIT_ZEROS, 0, (int64_t[]){2, 2, 3, 0}, "p.2");
    ps->info[1].no_decay = 1;
    params_allocate(ps);
}

// copies fixture tensor `name` into dst (n floats); 0 and a failure when absent or mis-sized
static int load_into(float *dst, size_t n, const SafeTensors *st, const char *name) {
    size_t got = 0;
    float *x = fx_f32(st, name, &got);
    if (!x) return 0;
    EXPECT(got == n, "%s: %zu floats in the fixture, %zu expected", name, got, n);
    if (got == n) memcpy(dst, x, n * sizeof(float));
    free(x);
    return got == n;
}

// buf (total) -> the fixture's tensors "<prefix><i>" compared view by view, packed without padding
static void expect_views(const char *what, const ParamSet *ps, const float *buf, const SafeTensors *st,
                         const char *prefix) {
    size_t n = params_count_floats(ps), k = 0;
    float *got = xmalloc(n * sizeof(float)), *want = xmalloc(n * sizeof(float));
    for (int i = 0; i < ps->count; i++) {
        char name[128];
        snprintf(name, sizeof(name), "%s%d", prefix, i);
        const ParamInfo *p = &ps->info[i];
        memcpy(got + k, buf + p->offset, p->numel * sizeof(float));
        if (!load_into(want + k, p->numel, st, name)) goto out;
        k += p->numel;
    }
    EXPECT_CLOSE(what, got, want, n, ATOL, RTOL);
out:
    free(got);
    free(want);
}

static double cfg_num(json_t *cfg, const char *key) {
    json_t *v = json_object_get(cfg, key);
    EXPECT(json_is_number(v), "fixture config has no number '%s'", key);
    return json_number_value(v);
}

static EmaConfig ema_config_from(json_t *j) {
    EmaConfig c = ema_config_default();
    c.decay = (float)cfg_num(j, "decay");
    if (json_object_get(j, "min_decay")) c.min_decay = (float)cfg_num(j, "min_decay");
    if (json_object_get(j, "update_after_step")) c.update_after_step = (int)cfg_num(j, "update_after_step");
    c.use_ema_warmup = json_is_true(json_object_get(j, "use_ema_warmup"));
    c.inv_gamma = (float)cfg_num(j, "inv_gamma");
    c.power = (float)cfg_num(j, "power");
    return c;
}

// 10 steps of: clip_grad_norm_(1.0), AdamW with a cosine-warmup lr, EMAModel.step
static void test_fixture_training(void) {
    SafeTensors *st = fx_open("optim");
    if (!st) return;
    json_t *cfg = fx_config(st);
    const int steps = (int)cfg_num(cfg, "steps");
    const float base_lr = (float)cfg_num(cfg, "lr"), max_norm = (float)cfg_num(cfg, "max_norm");
    const int64_t warmup = (int64_t)cfg_num(cfg, "warmup"), total = (int64_t)cfg_num(cfg, "total");
    json_t *betas = json_object_get(cfg, "betas");
    const EmaConfig ec = ema_config_from(json_object_get(cfg, "ema"));
    ParamSet ps;
    fixture_params(&ps);
    for (int i = 0; i < N_FX_PARAMS; i++) {
        char name[64];
        snprintf(name, sizeof(name), "init.%d", i);
        load_into(param_ptr(&ps, i), ps.info[i].numel, st, name);
    }
    AdamW opt;
    adamw_init(&opt, &ps, base_lr, (float)json_number_value(json_array_get(betas, 0)),
               (float)json_number_value(json_array_get(betas, 1)), (float)cfg_num(cfg, "eps"),
               (float)cfg_num(cfg, "weight_decay"));
    ema_init(&ps);

    float *norms = xcalloc((size_t)steps, sizeof(float)), *lrs = xcalloc((size_t)steps, sizeof(float));
    float *decays = xcalloc((size_t)steps, sizeof(float));
    for (int s = 0; s < steps && !tl_current_failed(); s++) {
        params_zero_grad(&ps);
        for (int i = 0; i < N_FX_PARAMS; i++) {
            char name[64];
            snprintf(name, sizeof(name), "grads.%d.%d", s, i);
            load_into(grad_ptr(&ps, i), ps.info[i].numel, st, name);
        }
        EXPECT(grads_finite(&ps), "step %d: finite gradients reported as non-finite", s);
        norms[s] = clip_grad_norm(&ps, max_norm);
        lrs[s] = lr_at(LR_COSINE_WARMUP, base_lr, opt.step, warmup, total);
        adamw_step(&opt, &ps, lrs[s]);
        decays[s] = ema_decay(&ec, opt.step);
        ema_update(&ps, decays[s]);
        char what[64], prefix[64];
        snprintf(what, sizeof(what), "params after step %d", s + 1);
        snprintf(prefix, sizeof(prefix), "params.%d.", s);
        expect_views(what, &ps, ps.data, st, prefix);
    }
    EXPECT(opt.step == steps, "optimizer step counter %lld after %d steps", (long long)opt.step, steps);
    float *want = fx_f32(st, "norms", NULL);
    if (want) EXPECT_CLOSE("pre-clip gradient norms", norms, want, (size_t)steps, 1e-6, 1e-6);
    free(want);
    // one float ulp: base_lr is the float 0.01f, torch multiplies the double 0.01
    if ((want = fx_f32(st, "lrs", NULL))) EXPECT_CLOSE("learning rates", lrs, want, (size_t)steps, 0, 2.5e-7);
    free(want);
    if ((want = fx_f32(st, "ema_decay", NULL))) EXPECT_CLOSE("EMA decays", decays, want, (size_t)steps, 1e-7, 1e-6);
    free(want);
    expect_views("AdamW exp_avg after the last step", &ps, ps.m, st, "exp_avg.");
    expect_views("AdamW exp_avg_sq after the last step", &ps, ps.v, st, "exp_avg_sq.");
    expect_views("EMA shadow params after the last step", &ps, ps.ema, st, "ema.");
    // padding between views stays zero in every buffer
    int dirty = 0;
    for (int i = 0; i < ps.count; i++) {
        size_t end = i + 1 < ps.count ? ps.info[i + 1].offset : ps.total;
        for (size_t j = ps.info[i].offset + ps.info[i].numel; j < end; j++)
            dirty += ps.data[j] != 0 || ps.m[j] != 0 || ps.v[j] != 0 || ps.ema[j] != 0;
    }
    EXPECT(dirty == 0, "%d padding floats became non-zero", dirty);
    free(norms);
    free(lrs);
    free(decays);
    params_free(&ps);
    json_decref(cfg);
    fx_close(st);
}

static void test_lr_tables(void) {
    SafeTensors *st = fx_open("optim");
    if (!st) return;
    json_t *cfg = fx_config(st), *t = json_object_get(cfg, "lr_table");
    const float base = (float)cfg_num(t, "base");
    const int64_t warmup = (int64_t)cfg_num(t, "warmup"), total = (int64_t)cfg_num(t, "total");
    const int n = (int)cfg_num(t, "steps");
    static const char *const names[] = {"constant", "constant_with_warmup", "cosine", "linear"};
    float *got = xmalloc((size_t)n * sizeof(float));
    for (int k = 0; k < 4; k++) {
        LrSchedule s;
        EXPECT(lr_schedule_parse(names[k], &s) == 0, "lr_schedule_parse(\"%s\") failed", names[k]);
        EXPECT(strcmp(lr_schedule_name(s), names[k]) == 0, "name of %s is %s", names[k], lr_schedule_name(s));
        for (int i = 0; i < n; i++) got[i] = lr_at(s, base, i, warmup, total);
        char key[64], what[64];
        snprintf(key, sizeof(key), "lr_table.%s", names[k]);
        snprintf(what, sizeof(what), "lr %s, steps 0..%d", names[k], n - 1);
        size_t m = 0;
        float *want = fx_f32(st, key, &m);
        if (want && m == (size_t)n) EXPECT_CLOSE(what, got, want, (size_t)n, 1e-7, 1e-6);
        free(want);
    }
    LrSchedule s;
    EXPECT(lr_schedule_parse("cosine_with_restarts", &s) == -1, "unknown schedule name accepted");
    EXPECT(lr_schedule_parse("", &s) == -1, "empty schedule name accepted");
    free(got);
    json_decref(cfg);
    fx_close(st);
}

static void test_ema_decay_tables(void) {
    SafeTensors *st = fx_open("optim");
    if (!st) return;
    json_t *cfg = fx_config(st), *tables = json_object_get(cfg, "ema_tables");
    EXPECT(json_array_size(tables) > 0, "fixture config has no ema_tables");
    for (size_t k = 0; k < json_array_size(tables); k++) {
        EmaConfig c = ema_config_from(json_array_get(tables, k));
        char key[64], what[64];
        size_t n = 0, n2 = 0;
        snprintf(key, sizeof(key), "ema_table.%zu.steps", k);
        float *steps = fx_f32(st, key, &n);
        snprintf(key, sizeof(key), "ema_table.%zu.decay", k);
        float *want = fx_f32(st, key, &n2);
        if (steps && want && n == n2) {
            float *got = xmalloc(n * sizeof(float));
            for (size_t i = 0; i < n; i++) got[i] = ema_decay(&c, (int64_t)steps[i]);
            snprintf(what, sizeof(what), "EMA decay table %zu", k);
            EXPECT_CLOSE(what, got, want, n, 1e-7, 1e-6);
            free(got);
        }
        free(steps);
        free(want);
    }
    EmaConfig d = ema_config_default();
    EXPECT(d.decay == 0.9999f && d.min_decay == 0 && d.update_after_step == 0 && d.use_ema_warmup == 1 &&
           d.inv_gamma == 1.0f && fabsf(d.power - 2.0f / 3.0f) < 1e-7f, "unexpected default EmaConfig");
    json_decref(cfg);
    fx_close(st);
}

static void small_params(ParamSet *ps) {
    memset(ps, 0, sizeof(*ps));
    params_declare(ps, INIT_NORMAL, 1.0f, (int64_t[]){3, 5, 0}, "w");
    params_declare(ps, INIT_NORMAL, 1.0f, (int64_t[]){5, 0}, "b");
    params_declare(ps, INIT_NORMAL, 1.0f, (int64_t[]){1000, 0}, "big");  // spans several threads' chunks
    params_allocate(ps);
    Rng r;
    rng_seed(&r, 7);
    params_init(ps, &r);
}

static void test_grads_finite(void) {
    ParamSet ps;
    small_params(&ps);
    const float bad[] = {NAN, INFINITY, -INFINITY};
    const int where[] = {0, (int)ps.info[1].offset + 4, (int)ps.info[2].offset + 999};
    for (int i = 0; i < ps.count; i++) fill_randn(grad_ptr(&ps, i), ps.info[i].numel, 11 + (unsigned)i, 1e3f);
    EXPECT(grads_finite(&ps) == 1, "finite gradients reported as non-finite");
    for (int b = 0; b < 3; b++)
        for (int w = 0; w < 3; w++) {
            float keep = ps.grad[where[w]];
            ps.grad[where[w]] = bad[b];
            EXPECT(grads_finite(&ps) == 0, "%g at float %d not detected", bad[b], where[w]);
            EXPECT(!isfinite(grad_global_norm(&ps)), "norm finite with %g at float %d", bad[b], where[w]);
            ps.grad[where[w]] = keep;
        }
    ps.grad[3] = 3e38f;  // finite but huge: squares overflow float, not the double accumulator
    EXPECT(grads_finite(&ps) == 1 && isfinite(grad_global_norm(&ps)), "3e38 treated as non-finite");
    params_free(&ps);
}

static void test_norm_scale_clip(void) {
    ParamSet ps;
    small_params(&ps);
    for (int i = 0; i < ps.count; i++) fill_randn(grad_ptr(&ps, i), ps.info[i].numel, 21 + (unsigned)i, 0.1f);
    double ss = 0;
    for (int i = 0; i < ps.count; i++) ss += dot_f64(grad_ptr(&ps, i), grad_ptr(&ps, i), ps.info[i].numel);
    float want_norm = (float)sqrt(ss), norm = grad_global_norm(&ps);
    EXPECT_CLOSE("grad_global_norm", &norm, &want_norm, 1, 0, 1e-6);

    float *before = xmalloc(ps.total * sizeof(float)), *want = xmalloc(ps.total * sizeof(float));
    memcpy(before, ps.grad, ps.total * sizeof(float));
    grads_scale(&ps, -2.5f);
    for (size_t j = 0; j < ps.total; j++) want[j] = before[j] * -2.5f;
    EXPECT_CLOSE("grads_scale(-2.5)", ps.grad, want, ps.total, 0, 0);

    // below max_norm: untouched, and the norm is returned
    memcpy(ps.grad, before, ps.total * sizeof(float));
    float r = clip_grad_norm(&ps, 2 * want_norm);
    EXPECT(r == norm, "clip_grad_norm returned %g, norm is %g", r, norm);
    EXPECT_CLOSE("clip_grad_norm under max_norm leaves grads", ps.grad, before, ps.total, 0, 0);
    // above: the new norm is max_norm (up to the 1e-6 in torch's denominator)
    r = clip_grad_norm(&ps, 0.25f * want_norm);
    float after = grad_global_norm(&ps), want_after = 0.25f * want_norm;
    EXPECT(r == norm, "clip_grad_norm returned %g, norm is %g", r, norm);
    EXPECT_CLOSE("norm after clipping to a quarter", &after, &want_after, 1, 1e-6, 1e-6);
    free(before);
    free(want);
    params_free(&ps);
}

// L(w) = 1/B sum_b 0.5 |w - x_b|^2 over samples [b0, b1); adds scale * dL/dw into ps->grad.
// x: (B, ps->total), laid out like the parameters.
static void add_quadratic_grad(ParamSet *ps, const float *x, int b0, int b1, float scale) {
    const float inv_b = 1.0f / (float)(b1 - b0);
    for (int b = b0; b < b1; b++)
        for (size_t j = 0; j < ps->total; j++)
            ps->grad[j] += scale * inv_b * (ps->data[j] - x[(size_t)b * ps->total + j]);
}

// Two half-batches with the loss scaled by 1/2, added into the grads, step as one full batch.
static void test_grad_accumulation(void) {
    enum { B = 8, STEPS = 3 };
    ParamSet full, accum;
    small_params(&full);
    small_params(&accum);
    EXPECT(full.total == accum.total, "parameter sets differ");
    float *x = xmalloc((size_t)B * full.total * sizeof(float));
    AdamW o1, o2;
    adamw_init(&o1, &full, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f);
    adamw_init(&o2, &accum, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f);
    for (int s = 0; s < STEPS; s++) {
        fill_randn(x, (size_t)B * full.total, 100 + (unsigned)s, 1.0f);
        params_zero_grad(&full);
        add_quadratic_grad(&full, x, 0, B, 1.0f);
        params_zero_grad(&accum);
        add_quadratic_grad(&accum, x, 0, B / 2, 0.5f);
        add_quadratic_grad(&accum, x, B / 2, B, 0.5f);
        EXPECT_CLOSE("accumulated grads vs full batch", accum.grad, full.grad, full.total, 1e-6, 1e-5);
        clip_grad_norm(&full, 1.0f);
        clip_grad_norm(&accum, 1.0f);
        adamw_step(&o1, &full, 1e-2f);
        adamw_step(&o2, &accum, 1e-2f);
        EXPECT_CLOSE("params after accumulated step vs full batch", accum.data, full.data, full.total, 1e-6, 1e-5);
    }
    free(x);
    params_free(&full);
    params_free(&accum);
}

// GradScaler's rule: 2^16 to start, halve and skip on inf/NaN, double after 2000 finite steps in a row
static void test_loss_scaler(void) {
    LossScaler s;
    float un;
    loss_scaler_init(&s, 0);
    EXPECT(s.scale == 1.0f && loss_scaler_update(&s, 1, &un) == 1 && un == 1.0f, "disabled: scale 1, every step taken");
    EXPECT(loss_scaler_update(&s, 0, &un) == 0 && s.scale == 1.0f, "disabled: a non-finite step is still skipped");
    loss_scaler_init(&s, 1);
    EXPECT(s.scale == 65536.0f, "initial scale %g, want 65536", (double)s.scale);
    EXPECT(loss_scaler_update(&s, 0, &un) == 0 && s.scale == 32768.0f && s.skipped == 1,
           "inf: skip and halve (scale %g, skipped %ld)", (double)s.scale, s.skipped);
    int taken = 0;
    for (int i = 0; i < 1999; i++) taken += loss_scaler_update(&s, 1, &un);
    EXPECT(taken == 1999 && s.scale == 32768.0f && un == 1.0f / 32768.0f, "1999 finite steps: scale %g", (double)s.scale);
    EXPECT(loss_scaler_update(&s, 1, &un) == 1 && un == 1.0f / 32768.0f && s.scale == 65536.0f,
           "the 2000th finite step unscales by the old scale (%g) and doubles it (%g)", 1.0 / un, (double)s.scale);
    loss_scaler_update(&s, 1, &un);
    loss_scaler_update(&s, 0, &un);
    EXPECT(s.good == 0 && s.scale == 32768.0f, "an overflow restarts the count (good %d)", s.good);
}

int main(void) {
    RUN(test_fixture_training);
    RUN(test_lr_tables);
    RUN(test_ema_decay_tables);
    RUN(test_grads_finite);
    RUN(test_norm_scale_clip);
    RUN(test_grad_accumulation);
    RUN(test_loss_scaler);
    return tl_finish();
}
