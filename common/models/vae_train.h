// vae_train.h: one VAE training micro-step and the loss history of a run.
// loss = rec (L1 or MSE) + kl_weight * KL + ssim_weight * (1 - SSIM) + spectral_weight * spectral
#pragma once
#include <stdint.h>

#include "models.h"

typedef struct {
    int mse;  // reconstruction: 0 L1, 1 MSE
    float kl_weight, ssim_weight, spectral_weight;
} TrainLossConfig;

typedef struct {
    float total, rec, kl, ssim, spectral;  // unweighted terms (ssim: 1 - SSIM); total is weighted
} TrainLosses;

// Encodes x, samples z = mean + std * eps (eps from ctx->rng), decodes, computes the losses and
// backpropagates loss * scale into the model's gradients. Returns the moments (arena memory).
Tensor vae_train_step(Ctx *ctx, AutoencoderKL *m, Tensor x, const TrainLossConfig *lc, float scale, TrainLosses *out);
void train_losses_add(TrainLosses *sum, const TrainLosses *l, float w);
// running sums of the posterior means (the latents encode sends), for the scaling factor
void latent_stats_add(Tensor moments, int latent_channels, double *sum, double *sumsq, double *n);

typedef struct {
    float *step, *total, *rec, *kl, *ssim, *spectral;
    int n, cap;
} LossHistory;
void loss_history_add(LossHistory *h, int64_t step, const TrainLosses *l);
void loss_history_plot(const LossHistory *h, const char *dir);  // DIR/loss.png; warns on failure
void loss_history_free(LossHistory *h);
