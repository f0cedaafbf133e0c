// scheduler.c: diffusers 0.28's noise schedules and samplers (see scheduler.h) in the arithmetic
// the reference does them in, so that results agree to the last bit or two:
//   - diffusers keeps a step's scalars (alphas_cumprod[t], sigmas[i], h, ...) as 0-d float32
//     tensors, so the coefficients are float math here, in diffusers' order of operations;
//     torch's `x ** 0.5` is sqrt, `x ** 2` is x * x, `1 / x` is reciprocal
//   - torch.cumprod on the CPU accumulates in double and rounds each output to float
//   - torch.linspace(float32) is torch 1.13's AVX2 kernel (torch_linspace_f32)
//   - betas_for_alpha_bar, np.linspace, the Karras sigmas and _sigma_to_t are float64 Python /
//     numpy 1.24 (whose value-based casting makes an array-scalar mix float32); np.round is
//     round-half-to-even, which is rint() here
// What is left is torch's own log/exp (Sleef) against libm's logf/expf: an ulp now and then in
// DPM-Solver++'s lambdas, ~1e-6 after 20 steps. (Build without FMA contraction, as x86-64-v2 is,
// or the fused float ops drift by an ulp too.)
#include "sched/scheduler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static const char *const beta_names[] = {
    [BETA_LINEAR] = "linear",
    [BETA_SCALED_LINEAR] = "scaled_linear",
    [BETA_SQUAREDCOS_CAP_V2] = "squaredcos_cap_v2",
};
static const char *const pred_names[] = {[PRED_EPSILON] = "epsilon", [PRED_V] = "v_prediction"};
static const char *const kind_names[] = {[SAMPLER_DDPM] = "ddpm", [SAMPLER_DDIM] = "ddim", [SAMPLER_DPMPP_2M] = "dpmpp2m"};
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static int find_name(const char *s, const char *const *names, int n) {
    for (int i = 0; s && i < n; i++)
        if (strcmp(s, names[i]) == 0) return i;
    return -1;
}

int beta_schedule_parse(const char *s, BetaSchedule *b) {
    int i = find_name(s, beta_names, COUNT(beta_names));
    if (i < 0) return -1;
    *b = (BetaSchedule)i;
    return 0;
}

int prediction_type_parse(const char *s, PredictionType *p) {
    int i = find_name(s, pred_names, COUNT(pred_names));
    if (i < 0) return -1;
    *p = (PredictionType)i;
    return 0;
}

int sampler_kind_parse(const char *s, SamplerKind *k) {
    int i = find_name(s, kind_names, COUNT(kind_names));
    if (i < 0 && s && (strcmp(s, "dpm++") == 0 || strcmp(s, "dpmsolver++") == 0)) i = SAMPLER_DPMPP_2M;
    if (i < 0) return -1;
    *k = (SamplerKind)i;
    return 0;
}

static const char *name_of(int i, const char *const *names, int n) { return i >= 0 && i < n ? names[i] : "unknown"; }
const char *beta_schedule_name(BetaSchedule b) { return name_of((int)b, beta_names, COUNT(beta_names)); }
const char *prediction_type_name(PredictionType p) { return name_of((int)p, pred_names, COUNT(pred_names)); }
const char *sampler_kind_name(SamplerKind k) { return name_of((int)k, kind_names, COUNT(kind_names)); }

// ---- NoiseSchedule ----

// torch.linspace(start, end, T, dtype=float32) as torch 1.13's AVX2 CPU kernel computes it:
// step = (end - start) / (T - 1) in float; 16-float chunks whose two 8-float halves start at the
// fused start + step*idx (idx < T/2) or end - step*(T-1-idx), then add k*step (k = 0..7); the tail
// after the last whole chunk is fused element by element.
static void torch_linspace_f32(float *out, float start, float end, int T) {  // out (T)
    if (T == 1) {
        out[0] = start;
        return;
    }
    const float step = (end - start) / (float)(T - 1);
    const int half = T / 2, chunked = T / 16 * 16;
    for (int idx = 0; idx < T; idx++) {
        int first = idx < chunked ? idx / 8 * 8 : idx;
        float base = first < half ? fmaf(step, (float)first, start) : fmaf(-step, (float)(T - 1 - first), end);
        out[idx] = idx < chunked ? base + (float)(idx - first) * step : base;
    }
}

// The double a Python config holds for this float: its shortest round-tripping decimal
// (0.00085f -> 0.00085), so that beta_start**0.5 is taken of the value diffusers sees.
static double config_double(float f) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f) return strtod(buf, NULL);
    }
    return (double)f;
}

// betas_for_alpha_bar(T, max_beta=0.999, "cosine"), in Python floats, then torch.tensor(float32)
static void squaredcos_betas(float *betas, int T) {  // betas (T)
    for (int i = 0; i < T; i++) {
        double t1 = (double)i / T, t2 = (double)(i + 1) / T;
        double c1 = cos((t1 + 0.008) / 1.008 * M_PI / 2), c2 = cos((t2 + 0.008) / 1.008 * M_PI / 2);
        betas[i] = (float)fmin(1.0 - (c2 * c2) / (c1 * c1), 0.999);
    }
}

int noise_schedule_init(NoiseSchedule *s, int T, BetaSchedule b, float beta_start, float beta_end, PredictionType p,
                        char *err, size_t errlen) {
    if (T < 1 || T > SCHED_MAX_T)
        return errf(err, errlen, "num_train_timesteps %d is outside 1..%d", T, SCHED_MAX_T);
    if ((unsigned)b >= (unsigned)COUNT(beta_names))
        return errf(err, errlen, "unknown beta schedule %d (linear, scaled_linear, squaredcos_cap_v2)", (int)b);
    if ((unsigned)p >= (unsigned)COUNT(pred_names))
        return errf(err, errlen, "unknown prediction type %d (epsilon, v_prediction)", (int)p);
    if (b != BETA_SQUAREDCOS_CAP_V2 && !(beta_start > 0 && beta_start < beta_end && beta_end < 1))
        return errf(err, errlen, "beta_start %g, beta_end %g: %s needs 0 < beta_start < beta_end < 1 (diffusers: 0.0001, 0.02)",
                    (double)beta_start, (double)beta_end, beta_names[b]);
    memset(s, 0, sizeof(*s));
    s->T = T;
    s->beta_schedule = b;
    s->beta_start = beta_start;
    s->beta_end = beta_end;
    s->prediction = p;
    switch (b) {
    case BETA_LINEAR: torch_linspace_f32(s->betas, beta_start, beta_end, T); break;
    case BETA_SCALED_LINEAR:
        torch_linspace_f32(s->betas, (float)sqrt(config_double(beta_start)), (float)sqrt(config_double(beta_end)), T);
        for (int i = 0; i < T; i++) s->betas[i] *= s->betas[i];
        break;
    case BETA_SQUAREDCOS_CAP_V2: squaredcos_betas(s->betas, T); break;
    }
    double cum = 1.0;  // torch.cumprod(1 - betas): a double accumulator, float outputs
    for (int i = 0; i < T; i++) {
        cum *= (double)(1.0f - s->betas[i]);
        s->alphas_cumprod[i] = (float)cum;
    }
    return 0;
}

static float ac_at(const NoiseSchedule *s, int t) {
    CHECK(t >= 0 && t < s->T, "timestep %d outside 0..%d", t, s->T - 1);
    return s->alphas_cumprod[t];
}

void schedule_add_noise(const NoiseSchedule *s, float *xt, const float *x0, const float *noise, const int32_t *t, int N,
                        size_t per) {
    for (int n = 0; n < N; n++) {
        float ac = ac_at(s, t[n]), a = sqrtf(ac), b = sqrtf(1.0f - ac);
        const float *x = x0 + n * per, *e = noise + n * per;
        float *y = xt + n * per;  // (per) of (N, per)
        for (size_t j = 0; j < per; j++) y[j] = a * x[j] + b * e[j];
    }
}

void schedule_target(const NoiseSchedule *s, float *target, const float *x0, const float *noise, const int32_t *t, int N,
                     size_t per) {
    if (s->prediction == PRED_EPSILON) {
        memcpy(target, noise, (size_t)N * per * sizeof(float));
        return;
    }
    for (int n = 0; n < N; n++) {
        float ac = ac_at(s, t[n]), a = sqrtf(ac), b = sqrtf(1.0f - ac);
        const float *x = x0 + n * per, *e = noise + n * per;
        float *v = target + n * per;
        for (size_t j = 0; j < per; j++) v[j] = a * e[j] - b * x[j];
    }
}

float schedule_snr(const NoiseSchedule *s, int t) {
    float ac = ac_at(s, t), r = sqrtf(ac) / sqrtf(1.0f - ac);
    return r * r;
}

// ---- Sampler: set_timesteps ----

// np.linspace(start, stop, num)[i]: i * ((stop - start) / (num - 1)) + start, the last one stop
static double np_linspace_at(double start, double stop, int num, int i) {
    if (num == 1) return start;
    if (i == num - 1) return stop;
    return (double)i * ((stop - start) / (num - 1)) + start;
}

// sqrt((1 - ac) / ac) as DPMSolverMultistepScheduler's float32 self.sigmas
static float dpm_sigma(const NoiseSchedule *s, int t) {
    float ac = s->alphas_cumprod[t];
    return sqrtf((1.0f - ac) / ac);
}

// DPMSolverMultistepScheduler._sigma_to_t(sigma, log_sigmas): the fractional timestep whose
// log-sigma interpolates log(sigma), float32 where numpy 1.24's casting makes it so
static double sigma_to_t(double sigma, const float *log_sigmas, int T) {  // log_sigmas (T)
    float ls = (float)log(fmax(sigma, 1e-10));
    int low = 0, cum = 0, best = -1;  // argmax of cumsum(ls - log_sigmas >= 0): the first maximum
    for (int t = 0; t < T; t++) {
        cum += ls - log_sigmas[t] >= 0.0f;
        if (cum > best) best = cum, low = t;
    }
    if (low > T - 2) low = T - 2;
    float lo = log_sigmas[low], hi = log_sigmas[low + 1];
    float w = (lo - ls) / (lo - hi);
    w = fminf(fmaxf(w, 0.0f), 1.0f);
    return (double)(1.0f - w) * low + (double)w * (low + 1);
}

// _convert_to_karras (rho 7) over the schedule's sigma range, timesteps from _sigma_to_t, rounded
static void karras_timesteps(Sampler *sp, const NoiseSchedule *s) {
    float log_sigmas[SCHED_MAX_T];
    const int T = s->T;
    for (int t = 0; t < T; t++) log_sigmas[t] = logf(dpm_sigma(s, t));
    const double rho = 7.0, min_inv_rho = pow((double)dpm_sigma(s, 0), 1 / rho),
                 max_inv_rho = pow((double)dpm_sigma(s, T - 1), 1 / rho);
    for (int i = 0; i < sp->steps; i++) {
        double ramp = np_linspace_at(0.0, 1.0, sp->steps, i);
        double sigma = pow(max_inv_rho + ramp * (min_inv_rho - max_inv_rho), rho);
        sp->sigmas[i] = (float)sigma;
        sp->timesteps[i] = (int)rint(sigma_to_t(sigma, log_sigmas, T));
    }
}

int sampler_init(Sampler *sp, const NoiseSchedule *s, SamplerKind kind, int steps, float eta, int karras, char *err,
                 size_t errlen) {
    const int max_steps = s->T < SCHED_MAX_STEPS ? s->T : SCHED_MAX_STEPS;
    if ((unsigned)kind >= (unsigned)COUNT(kind_names))
        return errf(err, errlen, "unknown sampler %d (ddpm, ddim, dpmpp2m)", (int)kind);
    if (steps < 1 || steps > max_steps)
        return errf(err, errlen, "%d inference steps for %s: give 1..%d (num_train_timesteps %d)", steps,
                    kind_names[kind], max_steps, s->T);
    if (!(eta >= 0) || !isfinite(eta))
        return errf(err, errlen, "eta %g: DDIM's eta must be finite and >= 0 (0 is deterministic DDIM)", (double)eta);
    if (karras && kind != SAMPLER_DPMPP_2M)
        return errf(err, errlen, "Karras sigmas are a DPM-Solver++ option; %s has none (drop karras or use dpmpp2m)",
                    kind_names[kind]);
    memset(sp, 0, sizeof(*sp));
    sp->kind = kind;
    sp->steps = steps;
    sp->eta = eta;
    sp->karras = karras != 0;
    if (kind != SAMPLER_DPMPP_2M) {  // timestep_spacing "leading", steps_offset 0
        const int ratio = s->T / steps;
        for (int i = 0; i < steps; i++) sp->timesteps[i] = (steps - 1 - i) * ratio;
        return 0;
    }
    if (sp->karras) {
        karras_timesteps(sp, s);
    } else {  // "linspace": np.linspace(0, T - 1, steps + 1).round()[::-1][:-1]
        for (int i = 0; i < steps; i++) {
            sp->timesteps[i] = (int)rint(np_linspace_at(0.0, s->T - 1, steps + 1, steps - i));
            sp->sigmas[i] = dpm_sigma(s, sp->timesteps[i]);
        }
    }
    sp->sigmas[steps] = 0.0f;  // final_sigmas_type "zero"
    return 0;
}

// ---- Sampler: step ----

// DDPMScheduler.step (fixed_small variance, no clipping); noise where t > 0
static void ddpm_step(const Sampler *sp, const NoiseSchedule *s, int i, const float *model_out, float *x, Rng *rngs,
                      int N, size_t per) {
    const int t = sp->timesteps[i], prev_t = t - s->T / sp->steps;
    const float ac = ac_at(s, t), ac_prev = prev_t >= 0 ? ac_at(s, prev_t) : 1.0f;
    const float beta_prod = 1.0f - ac, beta_prod_prev = 1.0f - ac_prev;
    const float cur_alpha = ac / ac_prev, cur_beta = 1.0f - cur_alpha;
    const float sqrt_ac = sqrtf(ac), sqrt_beta_prod = sqrtf(beta_prod);
    const float c_x0 = sqrtf(ac_prev) * cur_beta / beta_prod;           // pred_original_sample_coeff
    const float c_x = sqrtf(cur_alpha) * beta_prod_prev / beta_prod;    // current_sample_coeff
    const float std = sqrtf(fmaxf(beta_prod_prev / beta_prod * cur_beta, 1e-20f));  // _get_variance ** 0.5
    CHECK(t == 0 || rngs, "DDPM step %d (t=%d) draws noise: rngs must not be NULL", i, t);
    for (int n = 0; n < N; n++) {
        const float *e = model_out + n * per;
        float *xn = x + n * per;  // (per) of (N, per)
        for (size_t j = 0; j < per; j++) {
            float x0 = s->prediction == PRED_EPSILON ? (xn[j] - sqrt_beta_prod * e[j]) / sqrt_ac
                                                     : sqrt_ac * xn[j] - sqrt_beta_prod * e[j];
            xn[j] = c_x0 * x0 + c_x * xn[j];
            if (t > 0) xn[j] = xn[j] + std * rng_normal(&rngs[n]);
        }
    }
}

// DDIMScheduler.step (set_alpha_to_one, no clipping, use_clipped_model_output False)
static void ddim_step(const Sampler *sp, const NoiseSchedule *s, int i, const float *model_out, float *x, Rng *rngs,
                      int N, size_t per) {
    const int t = sp->timesteps[i], prev_t = t - s->T / sp->steps;
    const float ac = ac_at(s, t), ac_prev = prev_t >= 0 ? ac_at(s, prev_t) : 1.0f;
    const float beta_prod = 1.0f - ac, beta_prod_prev = 1.0f - ac_prev;
    const float sqrt_ac = sqrtf(ac), sqrt_beta_prod = sqrtf(beta_prod), sqrt_ac_prev = sqrtf(ac_prev);
    const float variance = beta_prod_prev / beta_prod * (1.0f - ac / ac_prev);
    const float std = sp->eta * sqrtf(variance);  // std_dev_t
    const float c_dir = sqrtf(1.0f - ac_prev - std * std);
    CHECK(!(sp->eta > 0) || rngs, "DDIM with eta %g draws noise: rngs must not be NULL", (double)sp->eta);
    for (int n = 0; n < N; n++) {
        const float *m = model_out + n * per;
        float *xn = x + n * per;  // (per) of (N, per)
        for (size_t j = 0; j < per; j++) {
            float x0, eps;
            if (s->prediction == PRED_EPSILON) {
                x0 = (xn[j] - sqrt_beta_prod * m[j]) / sqrt_ac;
                eps = m[j];
            } else {
                x0 = sqrt_ac * xn[j] - sqrt_beta_prod * m[j];
                eps = sqrt_ac * m[j] + sqrt_beta_prod * xn[j];
            }
            xn[j] = sqrt_ac_prev * x0 + c_dir * eps;
            if (sp->eta > 0) xn[j] = xn[j] + std * rng_normal(&rngs[n]);
        }
    }
}

// _sigma_to_alpha_sigma_t and lambda = log(alpha) - log(sigma), float32 as in diffusers
static void dpm_alpha_sigma(float sigma, float *alpha_t, float *sigma_t, float *lambda) {
    *alpha_t = 1.0f / sqrtf(sigma * sigma + 1.0f);
    *sigma_t = sigma * *alpha_t;
    *lambda = logf(*alpha_t) - logf(*sigma_t);  // +inf at the final sigma 0
}

// DPMSolverMultistepScheduler.step, dpmsolver++ / midpoint / order 2: first order at step 0 and
// at the last step (final_sigmas_type "zero" forces lower_order_final), second order between,
// with state = the previous step's x0 prediction (model_outputs[-2])
static void dpmpp_step(const Sampler *sp, const NoiseSchedule *s, int i, const float *model_out, float *x,
                       float *state, int N, size_t per) {
    CHECK(state, "DPM-Solver++ step %d: state (N, per) must not be NULL", i);
    const int second = i > 0 && i < sp->steps - 1;
    float alpha_t, sigma_t, lambda_t, alpha_s0, sigma_s0, lambda_s0, alpha_s1, sigma_s1, lambda_s1;
    dpm_alpha_sigma(sp->sigmas[i + 1], &alpha_t, &sigma_t, &lambda_t);
    dpm_alpha_sigma(sp->sigmas[i], &alpha_s0, &sigma_s0, &lambda_s0);
    const float h = lambda_t - lambda_s0;
    const float c_x = sigma_t / sigma_s0, c_d0 = alpha_t * (expf(-h) - 1.0f), c_d1 = 0.5f * c_d0;
    float inv_r0 = 0.0f;  // 1 / r0, r0 = h_0 / h
    if (second) {
        dpm_alpha_sigma(sp->sigmas[i - 1], &alpha_s1, &sigma_s1, &lambda_s1);
        const float h_0 = lambda_s0 - lambda_s1;
        inv_r0 = 1.0f / (h_0 / h);
    }
    for (int n = 0; n < N; n++) {
        const float *m = model_out + n * per;
        float *xn = x + n * per, *prev = state + n * per;  // (per) of (N, per)
        for (size_t j = 0; j < per; j++) {
            // convert_model_output: the x0 prediction
            float x0 = s->prediction == PRED_EPSILON ? (xn[j] - sigma_s0 * m[j]) / alpha_s0
                                                     : alpha_s0 * xn[j] - sigma_s0 * m[j];
            if (second) {
                float d1 = inv_r0 * (x0 - prev[j]);
                xn[j] = c_x * xn[j] - c_d0 * x0 - c_d1 * d1;
            } else {
                xn[j] = c_x * xn[j] - c_d0 * x0;
            }
            prev[j] = x0;
        }
    }
}

void sampler_step(const Sampler *sp, const NoiseSchedule *s, int i, const float *model_out, float *x, float *state,
                  Rng *rngs, int N, size_t per) {
    CHECK(i >= 0 && i < sp->steps, "sampler step %d outside 0..%d", i, sp->steps - 1);
    switch (sp->kind) {
    case SAMPLER_DDPM: ddpm_step(sp, s, i, model_out, x, rngs, N, per); break;
    case SAMPLER_DDIM: ddim_step(sp, s, i, model_out, x, rngs, N, per); break;
    case SAMPLER_DPMPP_2M: dpmpp_step(sp, s, i, model_out, x, state, N, per); break;
    default: DIE("unknown sampler kind %d", (int)sp->kind);
    }
}
