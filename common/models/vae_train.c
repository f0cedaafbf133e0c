#include "vae_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "../ops/activations.h"
#include "../ops/losses2.h"
#include "../plot/plot.h"

// ||d(loss)/d(l.weight)|| for the output gradient dout of conv layer l (its saved input, the
// forward's), accumulated in double
static float conv_weight_grad_norm(Ctx *ctx, const ParamSet *ps, const Conv2d *l, Tensor dout) {
    Tensor x = l->in;
    Conv2dDims d = {x.N, x.C, x.H, x.W, l->cout, l->k, l->stride, l->pad_t, l->pad_b, l->pad_l, l->pad_r};
    size_t nw = (size_t)l->cout * l->cin * l->k * l->k;
    float *dw = arena_zeros(ctx->arena, nw);
    float *scratch = ctx_scratch(ctx, ctx->cuda ? conv2d_scratch_floats_cuda(d) : conv2d_scratch_floats(d));
    OP(ctx, conv2d_backward, NULL, dw, NULL, dout.d, x.d, param_ptr(ps, l->weight), scratch, d);
    return OP(ctx, l2_norm, dw, nw);
}

// taming's calculate_adaptive_weight at the decoder's last layer: dy_rec and dy_g are the image
// gradients of the image-space terms and of g, both times `scale` (> 0):
// ||scale grad rec|| / (||scale grad g|| + scale 1e-4) = ||grad rec|| / (||grad g|| + 1e-4)
static float adaptive_weight(Ctx *ctx, AutoencoderKL *m, Tensor dy_rec, Tensor dy_g, float scale) {
    const Conv2d *last = &m->decoder.conv_out;
    float rec = conv_weight_grad_norm(ctx, ctx->ps, last, dy_rec);
    float g = conv_weight_grad_norm(ctx, ctx->ps, last, dy_g);
    float w = rec / (g + 1e-4f * scale);
    return w < 0.0f ? 0.0f : w > 1e4f ? 1e4f : w;
}

// The generator term g = -mean(D(y)) into dy (which holds the image-space terms' gradients), then
// one discriminator step on x vs y
static void adversarial_terms(Ctx *ctx, AutoencoderKL *m, Tensor x, Tensor y, Tensor dy, const DiscLossConfig *dc,
                              float scale, TrainLosses *out) {
    PatchDiscriminator *D = dc->disc;
    CHECK(dc->disc_opt, "vae_train_step: a discriminator without an optimizer (disc_opt)");
    Tensor logits = patch_disc_forward(ctx, D, y);                      // [N, 1, h, w]
    size_t nl = tensor_numel(logits), n = tensor_numel(y);
    out->g_loss = OP(ctx, hinge_g_forward, logits.d, nl);
    Tensor dlogits = ctx_zeros(ctx, logits.N, logits.C, logits.H, logits.W);
    OP(ctx, hinge_g_backward, dlogits.d, nl, scale);
    Tensor dy_g = patch_disc_backward(ctx, D, dlogits);                 // [N, C, H, W] scale * dg/dy
    patch_disc_zero_grad(ctx, D);                                       // D does not learn from g
    float w = dc->disc_weight;
    if (dc->disc_adaptive) w *= adaptive_weight(ctx, m, dy, dy_g, scale);
    out->g_weight = w;
    out->total += w * out->g_loss;
    float wv[2] = {1.0f, w};                                            // dy = 1 dy + w dy_g, in place
    const float *coef = ctx_input(ctx, wv, sizeof(wv));
    OP(ctx, axpby_rows, dy.d, dy.d, coef, dy_g.d, coef + 1, 1, n);
    out->d_loss = patch_disc_train_step(ctx, D, dc->disc_opt, dc->disc_lr, dc->disc_max_norm, x, y);
}

// the judge-feature term into dy: sum_i mean((phi_i(y) - phi_i(x))^2), the judge in eval mode
static void perceptual_term(Ctx *ctx, const VaeTrainExtras *ex, Tensor x, Tensor y, Tensor dy, float scale,
                            TrainLosses *out) {
    JudgeNet *j = ex->judge;
    CHECK(x.C == j->cfg.channels && x.H == j->cfg.resolution && x.W == j->cfg.resolution,
          "perceptual term: images are %dx%dx%d, the judge takes %dx%dx%d", x.C, x.H, x.W, j->cfg.channels,
          j->cfg.resolution, j->cfg.resolution);
    ParamSet *caller = ctx->ps;
    int train = ctx->train;
    ctx->ps = ex->judge_ps, ctx->train = 0;
    Tensor fx[MAX_BLOCKS], fy[MAX_BLOCKS], dfy[MAX_BLOCKS];
    int L = judge_block_outputs(ctx, j, x, fx);
    judge_block_outputs(ctx, j, y, fy);                    // the judge keeps this pass for the backward
    out->perceptual = 0;
    for (int i = 0; i < L; i++) {
        size_t n = tensor_numel(fy[i]);
        out->perceptual += OP(ctx, mse_forward, fy[i].d, fx[i].d, n);
        dfy[i] = ctx_zeros(ctx, fy[i].N, fy[i].C, fy[i].H, fy[i].W);
        OP(ctx, mse_backward, dfy[i].d, fy[i].d, fx[i].d, n, scale * ex->perceptual_weight);
    }
    Tensor dimg = judge_block_outputs_backward(ctx, j, dfy);  // [N, C, H, W]
    OP(ctx, accumulate, dy.d, dimg.d, tensor_numel(dy));
    ctx_zero_grad(ctx, ex->judge_ps);  // the judge does not learn
    ctx->ps = caller, ctx->train = train;
    out->total += ex->perceptual_weight * out->perceptual;
}

Tensor vae_train_step(Ctx *ctx, AutoencoderKL *m, Tensor x, const TrainLossConfig *lc, float scale, TrainLosses *out) {
    return vae_train_step_extras(ctx, m, x, lc, NULL, NULL, 0, scale, out);
}

Tensor vae_train_step_disc(Ctx *ctx, AutoencoderKL *m, Tensor x, const TrainLossConfig *lc, const DiscLossConfig *dc,
                           int64_t step, float scale, TrainLosses *out) {
    return vae_train_step_extras(ctx, m, x, lc, dc, NULL, step, scale, out);
}

Tensor vae_train_step_extras(Ctx *ctx, AutoencoderKL *m, Tensor x, const TrainLossConfig *lc, const DiscLossConfig *dc,
                             const VaeTrainExtras *ex, int64_t step, float scale, TrainLosses *out) {
    int L = m->cfg.latent_channels;
    Tensor mom = vae_encode(ctx, m, x);                   // [N, 2L, h, w]
    int N = mom.N, HW = mom.H * mom.W;
    Tensor eps = ctx_tensor(ctx, N, L, mom.H, mom.W), z = ctx_tensor(ctx, N, L, mom.H, mom.W);
    float *eps_h = xmalloc(tensor_numel(eps) * sizeof(float));  // drawn on the host on every device
    rng_fill_normal(ctx->rng, eps_h, (long)tensor_numel(eps), 0, 1);
    ctx_put(ctx, eps.d, eps_h, tensor_numel(eps) * sizeof(float));
    free(eps_h);
    OP(ctx, gaussian_sample_forward, z.d, mom.d, eps.d, N, L, HW);
    Tensor y = vae_decode(ctx, m, z);                     // [N, C, H, W]
    size_t n = tensor_numel(y);
    memset(out, 0, sizeof(*out));
    Tensor dy = ctx_zeros(ctx, y.N, y.C, y.H, y.W);
    if (lc->mse) {
        out->rec = OP(ctx, mse_forward, y.d, x.d, n);
        OP(ctx, mse_backward, dy.d, y.d, x.d, n, scale);
    } else {
        out->rec = OP(ctx, l1_forward, y.d, x.d, n);
        OP(ctx, l1_backward, dy.d, y.d, x.d, n, scale);
    }
    out->total = out->rec;
    if (lc->ssim_weight > 0) {
        float *cache = arena_floats(ctx->arena, ssim_cache_floats(y.N, y.C, y.H, y.W));
        out->ssim = OP(ctx, ssim_loss_forward, cache, y.d, x.d, y.N, y.C, y.H, y.W, 2.0f);
        OP(ctx, ssim_loss_backward, dy.d, cache, y.d, x.d, y.N, y.C, y.H, y.W, 2.0f, scale * lc->ssim_weight);
        out->total += lc->ssim_weight * out->ssim;
    }
    if (lc->spectral_weight > 0) {
        float *cache = arena_floats(ctx->arena, spectral_cache_floats(y.N, y.C, y.H, y.W));
        out->spectral = OP(ctx, spectral_loss_forward, cache, y.d, x.d, y.N, y.C, y.H, y.W);
        OP(ctx, spectral_loss_backward, dy.d, cache, y.d, x.d, y.N, y.C, y.H, y.W, scale * lc->spectral_weight);
        out->total += lc->spectral_weight * out->spectral;
    }
    if (ex && ex->judge && ex->perceptual_weight > 0) perceptual_term(ctx, ex, x, y, dy, scale, out);
    if (dc && dc->disc && step >= dc->disc_start) adversarial_terms(ctx, m, x, y, dy, dc, scale, out);
    Tensor dz = vae_decode_backward(ctx, m, dy);
    out->kl = OP(ctx, kl_forward, NULL, mom.d, N, L, HW);
    if (ex && ex->decoder_only) return mom;  // the encoder is frozen: no gradient reaches it
    Tensor dmom = ctx_zeros(ctx, mom.N, mom.C, mom.H, mom.W);
    OP(ctx, gaussian_sample_backward, dmom.d, dz.d, mom.d, eps.d, N, L, HW);
    if (lc->kl_weight > 0) OP(ctx, kl_backward, dmom.d, mom.d, N, L, HW, scale * lc->kl_weight);
    out->total += lc->kl_weight * out->kl;
    vae_encode_backward(ctx, m, dmom);
    return mom;
}

void train_losses_add(TrainLosses *s, const TrainLosses *l, float w) {
    s->total += w * l->total, s->rec += w * l->rec, s->kl += w * l->kl;
    s->ssim += w * l->ssim, s->spectral += w * l->spectral, s->perceptual += w * l->perceptual;
    s->g_loss += w * l->g_loss, s->d_loss += w * l->d_loss, s->g_weight += w * l->g_weight;
}

void latent_stats_add(Tensor mom, int L, double *sum, double *sumsq, double *n) {
    size_t per = (size_t)L * mom.H * mom.W;
    for (int i = 0; i < mom.N; i++) {
        const float *mean = mom.d + (size_t)i * 2 * per;
        for (size_t j = 0; j < per; j++) *sum += mean[j], *sumsq += (double)mean[j] * mean[j];
        *n += (double)per;
    }
}

void loss_history_add(LossHistory *h, int64_t step, const TrainLosses *l) {
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 1024;
        float **cols[] = {&h->step, &h->total, &h->rec, &h->kl, &h->ssim, &h->spectral};
        for (int c = 0; c < 6; c++) *cols[c] = xrealloc(*cols[c], (size_t)h->cap * sizeof(float));
    }
    h->step[h->n] = (float)step, h->total[h->n] = l->total, h->rec[h->n] = l->rec;
    h->kl[h->n] = l->kl, h->ssim[h->n] = l->ssim, h->spectral[h->n] = l->spectral;
    h->n++;
}

void loss_history_plot(const LossHistory *h, const char *dir) {
    if (h->n < 2) return;
    char path[4096], err[256];
    snprintf(path, sizeof(path), "%s/loss.png", dir);
    const char *names[] = {"total", "reconstruction", "KL (unweighted)"};
    const float *xs[] = {h->step, h->step, h->step}, *ys[] = {h->total, h->rec, h->kl};
    int counts[] = {h->n, h->n, h->n};
    if (plot_lines(path, "VAE training", "optimizer step", "loss", 1, 3, names, xs, ys, counts, err, sizeof(err)))
        fprintf(stderr, "doppel-encoder: no loss curve: %s\n", err);
}

void loss_history_free(LossHistory *h) {
    free(h->step), free(h->total), free(h->rec), free(h->kl), free(h->ssim), free(h->spectral);
    memset(h, 0, sizeof(*h));
}
