#include "vae_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "../ops/losses2.h"
#include "../plot/plot.h"

Tensor vae_train_step(Ctx *ctx, AutoencoderKL *m, Tensor x, const TrainLossConfig *lc, float scale, TrainLosses *out) {
    int L = m->cfg.latent_channels;
    Tensor mom = vae_encode(ctx, m, x);                   // [N, 2L, h, w]
    int N = mom.N, HW = mom.H * mom.W;
    Tensor eps = ctx_tensor(ctx, N, L, mom.H, mom.W), z = ctx_tensor(ctx, N, L, mom.H, mom.W);
    rng_fill_normal(ctx->rng, eps.d, (long)tensor_numel(eps), 0, 1);
    gaussian_sample_forward(z.d, mom.d, eps.d, N, L, HW);
    Tensor y = vae_decode(ctx, m, z);                     // [N, C, H, W]
    size_t n = tensor_numel(y);
    memset(out, 0, sizeof(*out));
    Tensor dy = ctx_zeros(ctx, y.N, y.C, y.H, y.W);
    if (lc->mse) {
        out->rec = mse_forward(y.d, x.d, n);
        mse_backward(dy.d, y.d, x.d, n, scale);
    } else {
        out->rec = l1_forward(y.d, x.d, n);
        l1_backward(dy.d, y.d, x.d, n, scale);
    }
    out->total = out->rec;
    if (lc->ssim_weight > 0) {
        float *cache = arena_floats(ctx->arena, ssim_cache_floats(y.N, y.C, y.H, y.W));
        out->ssim = ssim_loss_forward(cache, y.d, x.d, y.N, y.C, y.H, y.W, 2.0f);
        ssim_loss_backward(dy.d, cache, y.d, x.d, y.N, y.C, y.H, y.W, 2.0f, scale * lc->ssim_weight);
        out->total += lc->ssim_weight * out->ssim;
    }
    if (lc->spectral_weight > 0) {
        float *cache = arena_floats(ctx->arena, spectral_cache_floats(y.N, y.C, y.H, y.W));
        out->spectral = spectral_loss_forward(cache, y.d, x.d, y.N, y.C, y.H, y.W);
        spectral_loss_backward(dy.d, cache, y.d, x.d, y.N, y.C, y.H, y.W, scale * lc->spectral_weight);
        out->total += lc->spectral_weight * out->spectral;
    }
    Tensor dz = vae_decode_backward(ctx, m, dy);
    Tensor dmom = ctx_zeros(ctx, mom.N, mom.C, mom.H, mom.W);
    gaussian_sample_backward(dmom.d, dz.d, mom.d, eps.d, N, L, HW);
    out->kl = kl_forward(NULL, mom.d, N, L, HW);
    if (lc->kl_weight > 0) kl_backward(dmom.d, mom.d, N, L, HW, scale * lc->kl_weight);
    out->total += lc->kl_weight * out->kl;
    vae_encode_backward(ctx, m, dmom);
    return mom;
}

void train_losses_add(TrainLosses *s, const TrainLosses *l, float w) {
    s->total += w * l->total, s->rec += w * l->rec, s->kl += w * l->kl;
    s->ssim += w * l->ssim, s->spectral += w * l->spectral;
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
