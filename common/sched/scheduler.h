// scheduler.h: diffusers' noise schedules and samplers, as plain arrays and in-place steps.
//   NoiseSchedule   betas / alphas_cumprod of DDPMScheduler.__init__ (linear, scaled_linear,
//                   squaredcos_cap_v2), the forward process q(x_t | x_0) and the training target
//   Sampler         the inference timesteps and one reverse step of
//                   DDPMScheduler (variance_type "fixed_small", clip_sample False),
//                   DDIMScheduler (eta, set_alpha_to_one True, clip_sample False),
//                   DPMSolverMultistepScheduler (algorithm_type "dpmsolver++", solver_order 2,
//                   solver_type "midpoint", lower_order_final True, final_sigmas_type "zero",
//                   use_karras_sigmas optional)
// with diffusers 0.28's defaults for timestep_spacing ("leading" for DDPM/DDIM, "linspace" for
// DPM-Solver++) and steps_offset 0. tests/reference/schedulers.py makes the fixtures.
//
// Tensors are batches of N samples of `per` floats each, sample-major. Randomness (DDPM's and
// DDIM eta > 0's variance noise) comes from one Rng per sample, so a sample seeded alone
// reproduces the same sample drawn in any batch.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../rng.h"

#define SCHED_MAX_T 4096      // num_train_timesteps at most
#define SCHED_MAX_STEPS 1000  // inference steps at most

typedef enum { BETA_LINEAR, BETA_SCALED_LINEAR, BETA_SQUAREDCOS_CAP_V2 } BetaSchedule;
typedef enum { PRED_EPSILON, PRED_V } PredictionType;
typedef enum { SAMPLER_DDPM, SAMPLER_DDIM, SAMPLER_DPMPP_2M } SamplerKind;

typedef struct {
    int T;  // num_train_timesteps
    BetaSchedule beta_schedule;
    float beta_start, beta_end;  // linear / scaled_linear only (diffusers: 0.0001, 0.02)
    PredictionType prediction;
    // computed as diffusers does: float32 torch math (betas from torch.linspace in float32,
    // squaredcos in float64 then float32, alphas_cumprod = torch.cumprod(1 - betas) in float32)
    float betas[SCHED_MAX_T], alphas_cumprod[SCHED_MAX_T];
} NoiseSchedule;

// 0, or -1 + err (T outside 1..SCHED_MAX_T, beta range not 0 < start < end < 1)
int noise_schedule_init(NoiseSchedule *s, int T, BetaSchedule b, float beta_start, float beta_end, PredictionType p,
                        char *err, size_t errlen);
// "linear" | "scaled_linear" | "squaredcos_cap_v2"; "epsilon" | "v_prediction";
// "ddpm" | "ddim" | "dpmpp2m" (also "dpm++", "dpmsolver++"): 0 or -1
int beta_schedule_parse(const char *s, BetaSchedule *b);
int prediction_type_parse(const char *s, PredictionType *p);
int sampler_kind_parse(const char *s, SamplerKind *k);
const char *beta_schedule_name(BetaSchedule b);       // diffusers' names
const char *prediction_type_name(PredictionType p);
const char *sampler_kind_name(SamplerKind k);         // "ddpm", "ddim", "dpmpp2m"

// x_t = sqrt(ac[t]) x0 + sqrt(1 - ac[t]) noise   (DDPMScheduler.add_noise), t per sample
void schedule_add_noise(const NoiseSchedule *s, float *xt, const float *x0, const float *noise, const int32_t *t, int N,
                        size_t per);
// the training target: noise (epsilon) or v = sqrt(ac) noise - sqrt(1 - ac) x0 (get_velocity)
void schedule_target(const NoiseSchedule *s, float *target, const float *x0, const float *noise, const int32_t *t, int N,
                     size_t per);
// SNR(t) = ac[t] / (1 - ac[t]) (diffusers.training_utils.compute_snr)
float schedule_snr(const NoiseSchedule *s, int t);

typedef struct {
    SamplerKind kind;
    int steps;      // inference steps
    float eta;      // DDIM only
    int karras;     // DPM-Solver++ only: use_karras_sigmas
    int timesteps[SCHED_MAX_STEPS];   // model timesteps, descending, as diffusers' scheduler.timesteps
    // DPM-Solver++: sigmas[i] for step i (steps + 1 entries, the last 0 = final_sigmas_type "zero");
    // with karras the timesteps come from the Karras sigmas as in diffusers
    float sigmas[SCHED_MAX_STEPS + 1];
} Sampler;

// set_timesteps(steps): 0, or -1 + err (steps outside 1..min(T, SCHED_MAX_STEPS), eta < 0,
// karras with a sampler other than DPM-Solver++)
int sampler_init(Sampler *sp, const NoiseSchedule *s, SamplerKind kind, int steps, float eta, int karras, char *err,
                 size_t errlen);

// One reverse step i (0 .. steps-1) for every sample, in place: x (N, per) is x_t at
// sp->timesteps[i] on entry and x_{prev} on exit; model_out (N, per) is the UNet's output
// (epsilon or v as s->prediction). state (N, per) is DPM-Solver++'s previous x0 prediction
// (the caller keeps it between steps; untouched by DDPM/DDIM, may be NULL for them).
// rngs (N): per-sample generators for the variance noise (DDPM, DDIM with eta > 0; may be NULL
// otherwise). Noise is drawn only where diffusers draws it (not at the last DDPM step).
void sampler_step(const Sampler *sp, const NoiseSchedule *s, int i, const float *model_out, float *x, float *state,
                  Rng *rngs, int N, size_t per);
