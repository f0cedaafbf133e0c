// test_schedulers: common/sched against diffusers 0.28.2 + torch 1.13 (tests/reference/schedulers.py):
// betas / alphas_cumprod of the three beta schedules, compute_snr, set_timesteps and DPM-Solver++
// sigmas, add_noise / get_velocity, and sampler steps (DDPM, DDIM with eta 0 and 0.5, DPM-Solver++
// 2M with and without Karras sigmas; epsilon and v). Where diffusers draws variance noise the
// fixture holds the step's mean and the noise scale, and the test checks out = mean + std * noise
// with the noise regenerated from identically seeded Rngs. Then argument checks, determinism, and
// that a sample's result does not depend on the rest of its batch.
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "sched/scheduler.h"
#include "testlib.h"

static const double SCHED_RTOL = 1e-6;              // betas, alphas_cumprod, snr (relative)
static const double SIGMA_RTOL = 1e-5;              // DPM-Solver++ sigmas (relative)
static const double STEP_ATOL = 1e-5, STEP_RTOL = 1e-5;  // add_noise, velocity, sampler steps

// the fixture tensor named by the format, which must hold n values (malloc'd; NULL + failure)
__attribute__((format(printf, 3, 4))) static float *load(const SafeTensors *st, size_t n, const char *fmt, ...) {
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    size_t got = 0;
    float *x = fx_f32(st, name, &got);
    if (x && got != n) {
        tl_fail(__FILE__, __LINE__, "fixture tensor %s: %zu values, %zu expected", name, got, n);
        free(x);
        return NULL;
    }
    return x;
}

static double num(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    EXPECT(json_is_number(v), "fixture config has no number '%s'", key);
    return json_number_value(v);
}

static const char *str(json_t *obj, const char *key) {
    const char *s = json_string_value(json_object_get(obj, key));
    EXPECT(s, "fixture config has no string '%s'", key);
    return s ? s : "";
}

// NoiseSchedule for config["schedules"][name]
static int schedule_from(NoiseSchedule *s, json_t *cfg, const char *name, PredictionType p) {
    json_t *sc = json_object_get(json_object_get(cfg, "schedules"), name);
    BetaSchedule b;
    char err[256];
    if (!sc || beta_schedule_parse(str(sc, "beta_schedule"), &b) != 0) {
        tl_fail(__FILE__, __LINE__, "fixture schedule '%s' missing or unknown", name);
        return -1;
    }
    if (noise_schedule_init(s, (int)num(cfg, "T"), b, (float)num(sc, "beta_start"), (float)num(sc, "beta_end"), p, err,
                            sizeof(err)) != 0) {
        tl_fail(__FILE__, __LINE__, "schedule %s: %s", name, err);
        return -1;
    }
    return 0;
}

static void test_beta_schedules(void) {
    SafeTensors *st = fx_open("schedulers");
    if (!st) return;
    json_t *cfg = fx_config(st);
    const char *name;
    json_t *v;
    static NoiseSchedule s;
    json_object_foreach(json_object_get(cfg, "schedules"), name, v) {
        if (schedule_from(&s, cfg, name, PRED_EPSILON) != 0) break;
        float *betas = load(st, (size_t)s.T, "betas.%s", name), *ac = load(st, (size_t)s.T, "ac.%s", name);
        char what[64];
        snprintf(what, sizeof(what), "betas %s", name);
        if (betas) EXPECT_CLOSE(what, s.betas, betas, (size_t)s.T, 0.0, SCHED_RTOL);
        snprintf(what, sizeof(what), "alphas_cumprod %s", name);
        if (ac) EXPECT_CLOSE(what, s.alphas_cumprod, ac, (size_t)s.T, 0.0, SCHED_RTOL);
        free(betas);
        free(ac);
    }
    json_decref(cfg);
    fx_close(st);
}

static void test_snr(void) {
    SafeTensors *st = fx_open("schedulers");
    if (!st) return;
    json_t *cfg = fx_config(st), *scheds = json_object_get(cfg, "table_schedules");
    size_t nt = 0, k;
    float *ts = fx_f32(st, "snr.t", &nt);
    json_t *v;
    static NoiseSchedule s;
    json_array_foreach(scheds, k, v) {
        const char *name = json_string_value(v);
        float *want = load(st, nt, "snr.%s", name), got[64];
        if (!ts || !want || nt > 64 || schedule_from(&s, cfg, name, PRED_EPSILON) != 0) {
            free(want);
            break;
        }
        for (size_t i = 0; i < nt; i++) got[i] = schedule_snr(&s, (int)ts[i]);
        char what[64];
        snprintf(what, sizeof(what), "snr %s", name);
        EXPECT_CLOSE(what, got, want, nt, 0.0, SCHED_RTOL);
        free(want);
    }
    free(ts);
    json_decref(cfg);
    fx_close(st);
}

// timesteps exactly, DPM-Solver++ sigmas to SIGMA_RTOL, for every kind x schedule x step count
static void test_timesteps_and_sigmas(void) {
    static const struct { const char *name; SamplerKind kind; int karras; } kinds[] = {
        {"ddpm", SAMPLER_DDPM, 0}, {"ddim", SAMPLER_DDIM, 0},
        {"dpmpp", SAMPLER_DPMPP_2M, 0}, {"dpmpp_karras", SAMPLER_DPMPP_2M, 1}};
    SafeTensors *st = fx_open("schedulers");
    if (!st) return;
    json_t *cfg = fx_config(st), *sv, *nv;
    size_t a, b;
    static NoiseSchedule s;
    static Sampler sp;
    float got[SCHED_MAX_STEPS + 1];
    json_array_foreach(json_object_get(cfg, "table_schedules"), a, sv) {
        const char *sched = json_string_value(sv);
        if (schedule_from(&s, cfg, sched, PRED_EPSILON) != 0) break;
        json_array_foreach(json_object_get(cfg, "table_steps"), b, nv) {
            int steps = (int)json_integer_value(nv);
            for (int k = 0; k < 4 && !tl_current_failed(); k++) {
                char err[256], what[96];
                if (sampler_init(&sp, &s, kinds[k].kind, steps, 0.0f, kinds[k].karras, err, sizeof(err)) != 0) {
                    tl_fail(__FILE__, __LINE__, "%s %s %d: %s", kinds[k].name, sched, steps, err);
                    continue;
                }
                float *ts = load(st, (size_t)steps, "timesteps.%s.%s.%d", kinds[k].name, sched, steps);
                for (int i = 0; i < steps; i++) got[i] = (float)sp.timesteps[i];
                snprintf(what, sizeof(what), "timesteps %s %s %d", kinds[k].name, sched, steps);
                if (ts) EXPECT_CLOSE(what, got, ts, (size_t)steps, 0.0, 0.0);
                free(ts);
                if (kinds[k].kind != SAMPLER_DPMPP_2M) continue;
                float *sig = load(st, (size_t)steps + 1, "sigmas.%s.%s.%d", kinds[k].name, sched, steps);
                snprintf(what, sizeof(what), "sigmas %s %s %d", kinds[k].name, sched, steps);
                if (sig) EXPECT_CLOSE(what, sp.sigmas, sig, (size_t)steps + 1, 0.0, SIGMA_RTOL);
                free(sig);
            }
        }
    }
    json_decref(cfg);
    fx_close(st);
}

static void test_add_noise_and_target(void) {
    SafeTensors *st = fx_open("schedulers");
    if (!st) return;
    json_t *cfg = fx_config(st), *v;
    const int N = (int)num(cfg, "N");
    const size_t per = (size_t)num(cfg, "per"), n = (size_t)N * per;
    float *x0 = load(st, n, "add_noise.x0"), *noise = load(st, n, "add_noise.noise"), *tf = load(st, (size_t)N, "add_noise.t");
    float *got = xmalloc(n * sizeof(float));
    int32_t t[16];
    size_t k;
    static NoiseSchedule s;
    if (!x0 || !noise || !tf || N > 16) goto out;
    for (int i = 0; i < N; i++) t[i] = (int32_t)tf[i];
    json_array_foreach(json_object_get(cfg, "table_schedules"), k, v) {
        const char *name = json_string_value(v);
        char what[64];
        if (schedule_from(&s, cfg, name, PRED_V) != 0) break;
        float *want = load(st, n, "add_noise.%s", name), *vel = load(st, n, "velocity.%s", name);
        schedule_add_noise(&s, got, x0, noise, t, N, per);
        snprintf(what, sizeof(what), "add_noise %s", name);
        if (want) EXPECT_CLOSE(what, got, want, n, STEP_ATOL, STEP_RTOL);
        schedule_target(&s, got, x0, noise, t, N, per);
        snprintf(what, sizeof(what), "v target (get_velocity) %s", name);
        if (vel) EXPECT_CLOSE(what, got, vel, n, STEP_ATOL, STEP_RTOL);
        s.prediction = PRED_EPSILON;
        schedule_target(&s, got, x0, noise, t, N, per);
        EXPECT(memcmp(got, noise, n * sizeof(float)) == 0, "epsilon target is not the noise itself");
        free(want);
        free(vel);
    }
out:
    free(x0);
    free(noise);
    free(tf);
    free(got);
    json_decref(cfg);
    fx_close(st);
}

static int sampler_from(Sampler *sp, NoiseSchedule *s, json_t *cfg, json_t *run) {
    PredictionType p;
    SamplerKind kind;
    char err[256];
    if (prediction_type_parse(str(run, "prediction"), &p) != 0 || sampler_kind_parse(str(run, "sampler"), &kind) != 0) {
        tl_fail(__FILE__, __LINE__, "run %s: unknown prediction or sampler", str(run, "name"));
        return -1;
    }
    if (schedule_from(s, cfg, str(run, "schedule"), p) != 0) return -1;
    if (sampler_init(sp, s, kind, (int)num(run, "steps"), (float)num(run, "eta"), json_is_true(json_object_get(run, "karras")),
                     err, sizeof(err)) != 0) {
        tl_fail(__FILE__, __LINE__, "run %s: %s", str(run, "name"), err);
        return -1;
    }
    return 0;
}

// every step of a deterministic sampler from x.init, fed the fixture's model outputs
static void check_chain(const SafeTensors *st, json_t *run, const Sampler *sp, const NoiseSchedule *s, int N, size_t per) {
    const char *name = str(run, "name");
    const size_t n = (size_t)N * per;
    float *x = load(st, n, "run.%s.x.init", name), *state = xcalloc(n, sizeof(float));
    for (int i = 0; x && i < sp->steps && !tl_current_failed(); i++) {
        float *mo = load(st, n, "run.%s.mo.%d", name, i), *want = load(st, n, "run.%s.x.%d", name, i);
        if (mo && want) {
            char what[96];
            snprintf(what, sizeof(what), "%s step %d (t=%d)", name, i, sp->timesteps[i]);
            sampler_step(sp, s, i, mo, x, state, NULL, N, per);
            EXPECT_CLOSE(what, x, want, n, STEP_ATOL, STEP_RTOL);
        }
        free(mo);
        free(want);
    }
    free(x);
    free(state);
}

static void seed_all(Rng *r, int N, uint64_t base) {
    for (int k = 0; k < N; k++) rng_seed(&r[k], base + 7919u * (uint64_t)k);
}

// single steps of a noisy sampler: out = mean + std * noise, the noise from rngs seeded alike
static void check_single(const SafeTensors *st, json_t *run, const Sampler *sp, const NoiseSchedule *s, int N,
                         size_t per) {
    const char *name = str(run, "name");
    json_t *idx = json_object_get(run, "indices"), *v;
    const size_t n = (size_t)N * per, K = json_array_size(idx);
    float *std = load(st, K, "run.%s.std", name), *want = xmalloc(n * sizeof(float));
    Rng rngs[16], again[16];
    size_t k;
    if (N > 16) DIE("fixture N %d > 16", N);
    json_array_foreach(idx, k, v) {
        int i = (int)json_integer_value(v);
        float *x = load(st, n, "run.%s.x.%d", name, i), *mo = load(st, n, "run.%s.mo.%d", name, i);
        float *mean = load(st, n, "run.%s.mean.%d", name, i);
        if (x && mo && mean && std) {
            seed_all(rngs, N, 1000 + (uint64_t)i);
            seed_all(again, N, 1000 + (uint64_t)i);
            sampler_step(sp, s, i, mo, x, NULL, rngs, N, per);
            int draws = sp->kind == SAMPLER_DDIM || sp->timesteps[i] > 0;  // DDPM draws none at t = 0
            for (int b = 0; b < N; b++)
                for (size_t j = 0; j < per; j++) {
                    size_t e = (size_t)b * per + j;
                    want[e] = draws ? mean[e] + std[k] * rng_normal(&again[b]) : mean[e];
                }
            EXPECT(memcmp(rngs, again, (size_t)N * sizeof(Rng)) == 0,
                   "%s step %d: the sampler drew a different amount of noise than expected (draws %d)", name, i, draws);
            char what[96];
            snprintf(what, sizeof(what), "%s step %d (t=%d, std %.4g)", name, i, sp->timesteps[i], (double)std[k]);
            EXPECT_CLOSE(what, x, want, n, STEP_ATOL, STEP_RTOL);
        }
        free(x);
        free(mo);
        free(mean);
    }
    free(std);
    free(want);
}

static void test_sampler_runs(void) {
    SafeTensors *st = fx_open("schedulers");
    if (!st) return;
    json_t *cfg = fx_config(st), *run;
    const int N = (int)num(cfg, "N");
    const size_t per = (size_t)num(cfg, "per");
    size_t r;
    static NoiseSchedule s;
    static Sampler sp;
    json_array_foreach(json_object_get(cfg, "runs"), r, run) {
        if (sampler_from(&sp, &s, cfg, run) != 0) break;
        if (strcmp(str(run, "mode"), "chain") == 0) check_chain(st, run, &sp, &s, N, per);
        else check_single(st, run, &sp, &s, N, per);
    }
    json_decref(cfg);
    fx_close(st);
}

// ---- without the fixture ----

static void expect_refused(int rc, const char *err, const char *what) {
    EXPECT(rc == -1, "%s: accepted", what);
    EXPECT(err[0] != '\0', "%s: refused without a message", what);
    if (rc == -1) printf("  %s -> %s\n", what, err);
}

static void test_bad_arguments(void) {
    static NoiseSchedule s;
    static Sampler sp;
    char err[256];
#define REFUSED(call, what) do { err[0] = 0; expect_refused((call), err, what); } while (0)
    REFUSED(noise_schedule_init(&s, 0, BETA_LINEAR, 1e-4f, 0.02f, PRED_EPSILON, err, sizeof(err)), "T 0");
    REFUSED(noise_schedule_init(&s, SCHED_MAX_T + 1, BETA_LINEAR, 1e-4f, 0.02f, PRED_EPSILON, err, sizeof(err)), "T too big");
    REFUSED(noise_schedule_init(&s, 1000, BETA_LINEAR, 0.02f, 1e-4f, PRED_EPSILON, err, sizeof(err)), "beta_start > beta_end");
    REFUSED(noise_schedule_init(&s, 1000, BETA_SCALED_LINEAR, 0.0f, 0.02f, PRED_EPSILON, err, sizeof(err)), "beta_start 0");
    REFUSED(noise_schedule_init(&s, 1000, BETA_LINEAR, 1e-4f, 1.0f, PRED_EPSILON, err, sizeof(err)), "beta_end 1");
    REFUSED(noise_schedule_init(&s, 1000, (BetaSchedule)7, 1e-4f, 0.02f, PRED_EPSILON, err, sizeof(err)), "beta schedule 7");
    REFUSED(noise_schedule_init(&s, 1000, BETA_LINEAR, 1e-4f, 0.02f, (PredictionType)5, err, sizeof(err)), "prediction 5");
    EXPECT(noise_schedule_init(&s, 100, BETA_LINEAR, 1e-4f, 0.02f, PRED_EPSILON, err, sizeof(err)) == 0, "T 100: %s", err);
    REFUSED(sampler_init(&sp, &s, SAMPLER_DDPM, 0, 0.0f, 0, err, sizeof(err)), "steps 0");
    REFUSED(sampler_init(&sp, &s, SAMPLER_DDIM, 101, 0.0f, 0, err, sizeof(err)), "steps 101 > T 100");
    REFUSED(sampler_init(&sp, &s, SAMPLER_DPMPP_2M, -3, 0.0f, 0, err, sizeof(err)), "steps -3");
    REFUSED(sampler_init(&sp, &s, SAMPLER_DDIM, 10, 0.0f, 1, err, sizeof(err)), "karras with DDIM");
    REFUSED(sampler_init(&sp, &s, SAMPLER_DDPM, 10, 0.0f, 1, err, sizeof(err)), "karras with DDPM");
    REFUSED(sampler_init(&sp, &s, SAMPLER_DDIM, 10, -0.5f, 0, err, sizeof(err)), "eta -0.5");
    REFUSED(sampler_init(&sp, &s, SAMPLER_DDIM, 10, NAN, 0, err, sizeof(err)), "eta NaN");
    REFUSED(sampler_init(&sp, &s, (SamplerKind)9, 10, 0.0f, 0, err, sizeof(err)), "sampler 9");
    EXPECT(sampler_init(&sp, &s, SAMPLER_DPMPP_2M, 100, 0.0f, 1, err, sizeof(err)) == 0, "steps = T: %s", err);
#undef REFUSED

    BetaSchedule b = BETA_LINEAR;
    PredictionType p = PRED_EPSILON;
    SamplerKind k = SAMPLER_DDPM;
    EXPECT(beta_schedule_parse("cosine", &b) == -1 && b == BETA_LINEAR, "unknown beta schedule accepted");
    EXPECT(beta_schedule_parse(NULL, &b) == -1, "NULL beta schedule accepted");
    EXPECT(prediction_type_parse("sample", &p) == -1 && p == PRED_EPSILON, "prediction 'sample' accepted");
    EXPECT(prediction_type_parse("v", &p) == -1, "prediction 'v' accepted");
    EXPECT(sampler_kind_parse("euler", &k) == -1 && k == SAMPLER_DDPM, "unknown sampler accepted");
    EXPECT(sampler_kind_parse("DDIM", &k) == -1, "names are case-sensitive like diffusers' configs");
    for (int i = 0; i <= BETA_SQUAREDCOS_CAP_V2; i++)
        EXPECT(beta_schedule_parse(beta_schedule_name((BetaSchedule)i), &b) == 0 && b == (BetaSchedule)i, "beta %d", i);
    for (int i = 0; i <= PRED_V; i++)
        EXPECT(prediction_type_parse(prediction_type_name((PredictionType)i), &p) == 0 && p == (PredictionType)i, "pred %d", i);
    for (int i = 0; i <= SAMPLER_DPMPP_2M; i++)
        EXPECT(sampler_kind_parse(sampler_kind_name((SamplerKind)i), &k) == 0 && k == (SamplerKind)i, "sampler %d", i);
    EXPECT(sampler_kind_parse("dpm++", &k) == 0 && k == SAMPLER_DPMPP_2M, "alias dpm++");
    EXPECT(sampler_kind_parse("dpmsolver++", &k) == 0 && k == SAMPLER_DPMPP_2M, "alias dpmsolver++");
    EXPECT(strcmp(prediction_type_name(PRED_V), "v_prediction") == 0, "PRED_V is named %s", prediction_type_name(PRED_V));
    EXPECT(strcmp(sampler_kind_name((SamplerKind)42), "unknown") == 0, "out-of-range sampler name");
}

enum { BN = 3, PER = 40 };

// x (N, PER) after steps 0..i of `kind`; sample b has inputs number first + b and its rng seeded
// with seeds[b]
static void one_step(float *x, SamplerKind kind, float eta, int i, const uint64_t *seeds, int first, int N) {
    static NoiseSchedule s;
    static Sampler sp;
    char err[256];
    float mo[BN * PER], state[BN * PER] = {0};
    Rng rngs[BN];
    CHECK(noise_schedule_init(&s, 1000, BETA_LINEAR, 1e-4f, 0.02f, PRED_EPSILON, err, sizeof(err)) == 0, "%s", err);
    CHECK(sampler_init(&sp, &s, kind, 25, eta, 0, err, sizeof(err)) == 0, "%s", err);
    for (int b = 0; b < N; b++) {
        fill_randn(x + b * PER, PER, 17 + (unsigned long long)(first + b), 1.0f);
        fill_randn(mo + b * PER, PER, 99 + (unsigned long long)(first + b), 1.0f);
        rng_seed(&rngs[b], seeds[b]);
    }
    for (int k = 0; k <= i; k++) sampler_step(&sp, &s, k, mo, x, state, rngs, N, PER);
}

static void test_ddpm_deterministic(void) {
    float a[BN * PER], b[BN * PER], c[BN * PER];
    const uint64_t seeds[BN] = {5, 6, 7}, other[BN] = {5, 6, 8};
    one_step(a, SAMPLER_DDPM, 0.0f, 3, seeds, 0, BN);
    one_step(b, SAMPLER_DDPM, 0.0f, 3, seeds, 0, BN);
    one_step(c, SAMPLER_DDPM, 0.0f, 3, other, 0, BN);
    EXPECT(memcmp(a, b, sizeof(a)) == 0, "DDPM steps differ for the same seeds");
    EXPECT(memcmp(a, c, 2 * PER * sizeof(float)) == 0, "samples 0 and 1 changed with sample 2's seed");
    EXPECT(memcmp(a + 2 * PER, c + 2 * PER, PER * sizeof(float)) != 0, "sample 2 ignores its seed");
    float lo = INFINITY, hi = -INFINITY;
    for (int j = 0; j < BN * PER; j++) lo = fminf(lo, a[j]), hi = fmaxf(hi, a[j]);
    EXPECT(isfinite(lo) && isfinite(hi) && hi > lo, "DDPM output range [%g, %g]", (double)lo, (double)hi);
}

// sample b of a batch equals the same sample run alone with the same rng seed
static void test_batch_independence(void) {
    static const struct { SamplerKind kind; float eta; int step; } cases[] = {
        {SAMPLER_DDPM, 0.0f, 2}, {SAMPLER_DDIM, 0.7f, 2}, {SAMPLER_DDIM, 0.0f, 4}, {SAMPLER_DPMPP_2M, 0.0f, 4}};
    const uint64_t seeds[BN] = {31, 32, 33};
    for (int c = 0; c < 4; c++) {
        float batch[BN * PER], alone[BN * PER];
        one_step(batch, cases[c].kind, cases[c].eta, cases[c].step, seeds, 0, BN);
        for (int b = 0; b < BN; b++) {
            one_step(alone, cases[c].kind, cases[c].eta, cases[c].step, seeds + b, b, 1);
            EXPECT(memcmp(batch + b * PER, alone, PER * sizeof(float)) == 0, "%s eta %g: sample %d differs alone",
                   sampler_kind_name(cases[c].kind), (double)cases[c].eta, b);
        }
    }
}

int main(void) {
    RUN(test_beta_schedules);
    RUN(test_snr);
    RUN(test_timesteps_and_sigmas);
    RUN(test_add_noise_and_target);
    RUN(test_sampler_runs);
    RUN(test_bad_arguments);
    RUN(test_ddpm_deterministic);
    RUN(test_batch_independence);
    return tl_finish();
}
