// patch_disc.c: taming's NLayerDiscriminator with GroupNorm, and its hinge-loss step (patch_disc.h).
#include "patch_disc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "../ops/activations.h"
#include "../optim/clip.h"

static int groups_for(int C) {
    for (int g = PATCH_DISC_GROUPS_MAX; g > 1; g--)
        if (C % g == 0) return g;
    return 1;
}

static void normal_init(ParamSet *ps, int id) {
    ps->info[id].init = INIT_NORMAL;
    ps->info[id].init_scale = PATCH_DISC_INIT_STD;
}

void patch_disc_build(PatchDiscriminator *d, int C, int ndf, int n_layers) {
    memset(d, 0, sizeof(*d));
    CHECK(n_layers >= 1 && n_layers <= PATCH_DISC_MAX_LAYERS, "patch discriminator: n_layers %d (1..%d supported)",
          n_layers, PATCH_DISC_MAX_LAYERS);
    CHECK(C >= 1 && ndf >= 1, "patch discriminator: %d input channels, ndf %d", C, ndf);
    d->C = C, d->ndf = ndf, d->n_layers = n_layers;
    ParamSet *ps = &d->ps;
    const int K = PATCH_DISC_KERNEL;
    char name[PARAM_NAME_MAX];
    conv2d_init(&d->conv[0], ps, "main.0", C, ndf, K, 2, 1);
    normal_init(ps, d->conv[0].weight);
    int prev = ndf;
    for (int i = 1; i <= n_layers; i++) {
        int mult = 1 << (i < 3 ? i : 3), ch = ndf * mult;  // ndf * min(2^i, 8)
        snprintf(name, sizeof(name), "main.%d", 3 * i - 1);
        conv2d_init_nobias(&d->conv[i], ps, name, prev, ch, K, i < n_layers ? 2 : 1, 1);
        normal_init(ps, d->conv[i].weight);
        snprintf(name, sizeof(name), "main.%d", 3 * i);
        groupnorm_init(&d->norm[i], ps, name, ch, groups_for(ch), PATCH_DISC_EPS);
        prev = ch;
    }
    snprintf(name, sizeof(name), "main.%d", 3 * n_layers + 2);
    conv2d_init(&d->conv[n_layers + 1], ps, name, prev, 1, K, 1, 1);
    normal_init(ps, d->conv[n_layers + 1].weight);
    params_allocate(ps);
}

void patch_disc_init(PatchDiscriminator *d, Rng *rng) {
    params_init(&d->ps, rng);
    for (int i = 1; i <= d->n_layers; i++)  // norm weights were declared ones: 1 + N(0, 0.02)
        for (int c = 0; c < d->norm[i].C; c++) param_ptr(&d->ps, d->norm[i].weight)[c] += PATCH_DISC_INIT_STD * rng_normal(rng);
}

static ParamSet *active(PatchDiscriminator *d) { return d->active ? d->active : &d->ps; }

void patch_disc_to_gpu(PatchDiscriminator *d) {
    d->active = xmalloc(sizeof(ParamSet));
    cuda_params_mirror(d->active, &d->ps);
}

void patch_disc_to_host(PatchDiscriminator *d) {
    if (d->active) cuda_params_to_host(&d->ps, d->active);
}

void patch_disc_free(PatchDiscriminator *d) {
    if (d->active) cuda_params_free(d->active), free(d->active), d->active = NULL;
    params_free(&d->ps);
}

Tensor patch_disc_forward(Ctx *ctx, PatchDiscriminator *d, Tensor x) {
    CHECK(x.C == d->C, "patch discriminator: input has %d channels, expects %d", x.C, d->C);
    ParamSet *caller = ctx->ps;
    ctx->ps = active(d);
    Tensor h = x;
    for (int i = 0; i <= d->n_layers; i++) {
        h = conv2d_layer_forward(ctx, &d->conv[i], h);                   // [N, ch_i, h_i, w_i]
        if (i > 0) h = groupnorm_layer_forward(ctx, &d->norm[i], h);
        d->pre[i] = h;
        Tensor a = ctx_tensor(ctx, h.N, h.C, h.H, h.W);
        OP(ctx, leaky_relu_forward, a.d, h.d, tensor_numel(h), PATCH_DISC_SLOPE);
        h = a;
    }
    Tensor logits = conv2d_layer_forward(ctx, &d->conv[d->n_layers + 1], h);  // [N, 1, h, w]
    ctx->ps = caller;
    return logits;
}

Tensor patch_disc_backward(Ctx *ctx, PatchDiscriminator *d, Tensor dlogits) {
    ParamSet *caller = ctx->ps;
    ctx->ps = active(d);
    Tensor g = conv2d_layer_backward(ctx, &d->conv[d->n_layers + 1], dlogits);
    for (int i = d->n_layers; i >= 0; i--) {
        Tensor pre = d->pre[i], dpre = ctx_zeros(ctx, pre.N, pre.C, pre.H, pre.W);
        OP(ctx, leaky_relu_backward, dpre.d, g.d, pre.d, tensor_numel(pre), PATCH_DISC_SLOPE);
        if (i > 0) dpre = groupnorm_layer_backward(ctx, &d->norm[i], dpre);
        g = conv2d_layer_backward(ctx, &d->conv[i], dpre);
    }
    ctx->ps = caller;
    return g;
}

void patch_disc_zero_grad(Ctx *ctx, PatchDiscriminator *d) { ctx_zero_grad(ctx, active(d)); }

float patch_disc_train_step(Ctx *ctx, PatchDiscriminator *d, AdamW *opt, float lr, float max_norm, Tensor real,
                            Tensor fake) {
    CHECK(real.N == fake.N && real.C == fake.C && real.H == fake.H && real.W == fake.W,
          "patch discriminator: real (%d,%d,%d,%d) and fake (%d,%d,%d,%d) differ", real.N, real.C, real.H, real.W,
          fake.N, fake.C, fake.H, fake.W);
    size_t n = tensor_numel(real);
    ParamSet *ps = active(d);
    Tensor both = ctx_tensor(ctx, 2 * real.N, real.C, real.H, real.W);  // [real; fake]
    OP(ctx, copy_floats, both.d, real.d, n);
    OP(ctx, copy_floats, both.d + n, fake.d, n);
    patch_disc_zero_grad(ctx, d);
    Tensor logits = patch_disc_forward(ctx, d, both);                   // [2N, 1, h, w]
    size_t half = tensor_numel(logits) / 2;
    float loss = OP(ctx, hinge_d_forward, logits.d, logits.d + half, half);
    Tensor dlogits = ctx_zeros(ctx, logits.N, logits.C, logits.H, logits.W);
    OP(ctx, hinge_d_backward, dlogits.d, dlogits.d + half, logits.d, logits.d + half, half, 1.0f);
    patch_disc_backward(ctx, d, dlogits);
    if (!OP(ctx, grads_finite, ps)) return loss;
    if (max_norm > 0) OP(ctx, clip_grad_norm, ps, max_norm);
    OP(ctx, adamw_step, opt, ps, lr);
    return loss;
}
