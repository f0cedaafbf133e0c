// vae_train.h: one VAE training micro-step and the loss history of a run.
// loss = rec (L1 or MSE) + kl_weight * KL + ssim_weight * (1 - SSIM) + spectral_weight * spectral
//        [+ g_weight * g, g = -mean(D(recon)), with a patch discriminator D from step disc_start]
//
// The adversarial part (DiscLossConfig, vae_train_step_disc) follows Stable Diffusion's
// autoencoder training (taming-transformers' LPIPSWithDiscriminator, disc_loss "hinge",
// disc_factor 1): once step >= disc_start, each micro-step adds the generator term g (its
// gradient reaches the VAE through D; D's own gradients from that pass are discarded), then trains
// D one step on D(x) vs D(recon.detach()) with the hinge loss, D's gradient clipping and D's own
// AdamW. g_weight = disc_weight, times taming's adaptive weight when disc_adaptive:
// ||grad rec|| / (||grad g|| + 1e-4) clamped to [0, 1e4], both gradients taken at
// decoder.conv_out.weight, "rec" being every image-space term (reconstruction, SSIM, spectral; not
// KL, which does not reach the decoder). With gradient accumulation D steps once per micro-batch
// (accum times per VAE step), on that micro-batch alone.
#pragma once
#include <stdint.h>

#include "../optim/adamw.h"
#include "models.h"
#include "judge.h"
#include "patch_disc.h"

typedef struct {
    int mse;  // reconstruction: 0 L1, 1 MSE
    float kl_weight, ssim_weight, spectral_weight;
} TrainLossConfig;

// The adversarial term's settings. A struct of its own, not more TrainLossConfig fields: callers
// fill TrainLossConfig positionally and -Wextra's missing-field-initializers would reject them.
typedef struct {
    PatchDiscriminator *disc;  // NULL: no adversarial term
    AdamW *disc_opt;           // D's optimizer (adamw_init on &disc->ps)
    float disc_weight;         // weight of g (times the adaptive weight when disc_adaptive)
    int disc_adaptive;         // 1: taming's adaptive weight (see above); 0: disc_weight alone
    float disc_lr;             // D's learning rate for this step (the trainer schedules it)
    float disc_max_norm;       // D's gradient-norm clip (torch clip_grad_norm_); <= 0: none
    int64_t disc_start;        // first optimizer step with the adversarial term and D training
} DiscLossConfig;

// What the trainer adds beyond the losses above: a perceptual term in a judge's feature space
// (models/judge.h, a conv_bn judge trained on real spectrograms of the same people, run in eval
// mode): perceptual = sum over the judge's blocks of mean((phi_i(recon) - phi_i(x))^2), a feature
// reconstruction loss as Johnson et al. 2016 with the judge in VGG's place; and decoder-only
// training (the encoder and quant_conv get no gradient: Stable Diffusion's fine-tuned decoders,
// which keep the latent space, and so a diffusion model trained on it, unchanged).
typedef struct {
    JudgeNet *judge;         // NULL: no perceptual term
    ParamSet *judge_ps;      // the judge's parameters as the context computes with them (&judge->ps or a device mirror)
    float perceptual_weight;
    int decoder_only;
} VaeTrainExtras;

typedef struct {
    float total, rec, kl, ssim, spectral;  // unweighted terms (ssim: 1 - SSIM); total is weighted
    float perceptual;                      // unweighted; 0 when off
    float g_loss, d_loss;                  // generator -mean(D(recon)); D's hinge loss (not in total)
    float g_weight;                        // the weight g entered total with (0 while D is off)
} TrainLosses;

// Encodes x, samples z = mean + std * eps (eps from ctx->rng), decodes, computes the losses and
// backpropagates loss * scale into the model's gradients (ctx->ps is the VAE's ParamSet).
// Returns the moments (arena memory).
Tensor vae_train_step(Ctx *ctx, AutoencoderKL *m, Tensor x, const TrainLossConfig *lc, float scale, TrainLosses *out);
// The same with the adversarial term: with dc->disc set and step >= dc->disc_start, adds g and
// takes one step of D (see above); otherwise exactly vae_train_step. step: the optimizer step this
// micro-step belongs to (the VAE optimizer's opt.step before its update).
Tensor vae_train_step_disc(Ctx *ctx, AutoencoderKL *m, Tensor x, const TrainLossConfig *lc, const DiscLossConfig *dc,
                           int64_t step, float scale, TrainLosses *out);
// ... and with the extras (NULL: none)
Tensor vae_train_step_extras(Ctx *ctx, AutoencoderKL *m, Tensor x, const TrainLossConfig *lc, const DiscLossConfig *dc,
                             const VaeTrainExtras *ex, int64_t step, float scale, TrainLosses *out);
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
