// diffusion.h: user-conditioned latent diffusion on UNet2DModel: one training micro-step
// (noise, condition dropout to the learned "no user" class, MSE with optional min-SNR-gamma
// weighting) and guided sampling with any sampler of sched/scheduler.h.
//
// Conditioning: class_embedding has users + 1 rows; row `users` (the last) is the "no user"
// class. Training replaces each sample's label by it with probability cond_dropout, so the model
// learns the unconditional score it is guided away from: eps = eps(x, null) + g (eps(x, u) - eps(x, null)).
// The conditional and unconditional halves run as one batch of 2N.
#pragma once
#include <stdint.h>

#include "../sched/scheduler.h"
#include "latent_classifier.h"
#include "models.h"

typedef struct {
    float cond_dropout;  // per-sample probability of the "no user" label (0.1)
    float snr_gamma;     // min-SNR-gamma loss weighting; <= 0: plain MSE
} DiffusionLossConfig;

typedef struct {
    float loss;      // the (weighted) MSE the gradients belong to
    float mse;       // unweighted MSE
    int dropped;     // samples trained as "no user"
} DiffusionLosses;

static inline int unet_null_class(const UNet2DModel *m) { return m->cfg.num_class_embeds - 1; }

// One micro-step on clean latents x0 (N, C, h, w) in ctx memory with user labels (N) on the host: t ~ U{0..T-1},
// noise ~ N(0, 1) and dropout from ctx->rng; backpropagates loss * scale into ctx->ps's grads.
void diffusion_train_step(Ctx *ctx, UNet2DModel *m, const NoiseSchedule *s, Tensor x0, const int32_t *labels,
                          const DiffusionLossConfig *lc, float scale, DiffusionLosses *out);

// The default classifier-free guidance scale of sample, serve and score --generator. On gait10
// (docs/diffuser.md) generated spectrograms were recognised 60% / 79% / 90.5% at G 1 / 2 / 4.
#define SAMPLE_GUIDANCE_DEFAULT 4.0

typedef struct {
    Sampler sampler;
    float guidance;   // classifier-free guidance scale; 1: conditional only
    int always_cfg;   // evaluate the unconditional half even at guidance 1 (tests)
    // optional classifier guidance (NULL: none; then sampling is exactly as without these fields)
    LatentClassifier *classifier;  // trained under the UNet's schedule on its users (latent_classifier_fits_unet)
    float classifier_scale;        // s in eps - sqrt(1 - ac[t]) s grad log p(y | x_t)
} SampleConfig;

typedef void (*SampleProgress)(void *user, int step, int steps);

// Generates N latents (N, C, h, w) into out for users labels (N) (the null class for
// unconditional samples), each from its own seed: the initial noise and every variance noise of
// sample n come from rng_seed(seeds[n]) alone, so a sample can be regenerated in any batch.
// Uses ctx->arena (reset by the caller between calls; this function resets it between steps
// after saving its state outside the arena).
//
// Classifier guidance (Dhariwal & Nichol 2021, eq. 14), when sc->classifier is set: at every step
// the classifier sees the current x_t at the step's timestep t, and the (CFG-combined) output is
//   epsilon:       eps_hat = eps - sqrt(1 - ac[t]) s grad_x log p(y | x_t)
//   v_prediction:  v converted to eps = sqrt(ac) v + sqrt(1 - ac) x_t, guided as above, converted
//                  back; v is linear in eps at fixed x_t, so this is v_hat = v - sqrt((1 - ac) / ac) s grad
// (ac = alphas_cumprod[t]). Samples of the "no user" class get no classifier term. The classifier
// shares ctx->arena; its parameter gradients are left holding the sum of the guidance backwards.
void diffusion_sample(Ctx *ctx, UNet2DModel *m, const NoiseSchedule *s, const SampleConfig *sc, const int32_t *labels,
                      const int64_t *seeds, int N, float *out, SampleProgress progress, void *progress_user);
