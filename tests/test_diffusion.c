// test_diffusion.c: the diffusion training step and guided sampling on the tiny UNet, in process:
// overfitting one batch lowers the loss 10x, min-SNR weights, condition dropout rate, sampling is
// deterministic for a seed and independent of the batch, guidance 1 equals conditional sampling,
// and the "no user" class is the last class-embedding row.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "models/diffusion.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "testlib.h"

typedef struct {
    UNet2DModel m;
    NoiseSchedule s;
    Arena arena;
    Rng rng;
    Ctx ctx;
} Setup;

static void setup(Setup *e, int users, PredictionType pred, uint64_t seed) {
    UNetConfig c;
    CHECK(preset_unet("tiny", users, &c) == 0, "tiny preset");
    unet_build(&e->m, &c);
    rng_seed(&e->rng, seed);
    params_init(&e->m.ps, &e->rng);
    char err[256];
    CHECK(noise_schedule_init(&e->s, 1000, BETA_LINEAR, 0.0001f, 0.02f, pred, err, sizeof(err)) == 0, "%s", err);
    arena_init(&e->arena, 0);
    ctx_init(&e->ctx, &e->m.ps, &e->arena, &e->rng);
}

static void teardown(Setup *e) {
    ctx_free(&e->ctx);
    arena_free(&e->arena);
    unet_free(&e->m);
}

// mean loss over fixed draws of (t, noise), so before/after compare the same thing
static float eval_loss(Setup *e, Tensor x0, const int32_t *lab, int draws) {
    Rng saved = e->rng;
    DiffusionLossConfig lc = {0, 0};
    double sum = 0;
    for (int d = 0; d < draws; d++) {
        rng_seed(&e->rng, 1000 + d);
        arena_reset(&e->arena);
        params_zero_grad(&e->m.ps);
        Tensor x = ctx_tensor(&e->ctx, x0.N, x0.C, x0.H, x0.W);
        memcpy(x.d, x0.d, tensor_numel(x0) * sizeof(float));
        DiffusionLosses l;
        diffusion_train_step(&e->ctx, &e->m, &e->s, x, lab, &lc, 1.0f, &l);
        sum += l.loss;
    }
    params_zero_grad(&e->m.ps);
    e->rng = saved;
    return (float)(sum / draws);
}

// two users, two fixed latents each: smooth patterns the tiny UNet can memorise
static float *fixed_batch(int N, size_t per) {
    float *x = xmalloc((size_t)N * per * sizeof(float));
    for (int n = 0; n < N; n++)
        for (size_t i = 0; i < per; i++) {
            int c = (int)(i / 256), h = (int)(i % 256) / 16, w = (int)(i % 16);
            x[n * per + i] = 0.8f * sinf(0.4f * (h + 1) * (n % 2 + 1) + 0.3f * w * (n / 2 + 1) + c);
        }
    return x;
}

static void test_overfit_one_batch(void) {
    Setup e;
    setup(&e, 2, PRED_EPSILON, 7);
    int N = 4;
    size_t per = 4 * 16 * 16;
    float *xd = fixed_batch(N, per);
    int32_t lab[4] = {0, 0, 1, 1};
    Tensor x0 = {xd, N, 4, 16, 16};
    float before = eval_loss(&e, x0, lab, 8);
    AdamW opt;
    adamw_init(&opt, &e.m.ps, 2e-3f, 0.9f, 0.999f, 1e-8f, 0.0f);
    DiffusionLossConfig lc = {0.0f, 0.0f};
    e.ctx.train = 1;
    for (int step = 0; step < 200; step++) {
        arena_reset(&e.arena);
        params_zero_grad(&e.m.ps);
        Tensor x = ctx_tensor(&e.ctx, N, 4, 16, 16);
        memcpy(x.d, xd, (size_t)N * per * sizeof(float));
        DiffusionLosses l;
        diffusion_train_step(&e.ctx, &e.m, &e.s, x, lab, &lc, 1.0f, &l);
        clip_grad_norm(&e.m.ps, 1.0f);
        adamw_step(&opt, &e.m.ps, 2e-3f);
    }
    e.ctx.train = 0;
    float after = eval_loss(&e, x0, lab, 8);
    printf("    overfit: loss %.4f -> %.4f (%.1fx)\n", before, after, before / after);
    EXPECT(after * 10 <= before, "loss %.4f -> %.4f: less than 10x lower", before, after);
    free(xd);
    teardown(&e);
}

static void test_min_snr_weight_and_dropout(void) {
    Setup e;
    setup(&e, 3, PRED_EPSILON, 3);
    int N = 64;
    size_t per = 4 * 16 * 16;
    float *xd = fixed_batch(N, per);
    int32_t lab[64];
    for (int i = 0; i < N; i++) lab[i] = i % 3;
    Tensor x0 = {xd, N, 4, 16, 16};
    // min-SNR weighting only lowers weights (min(snr, g)/snr <= 1): loss <= mse, equal with g = inf
    DiffusionLossConfig lc = {0.5f, 5.0f};
    DiffusionLosses l;
    arena_reset(&e.arena);
    diffusion_train_step(&e.ctx, &e.m, &e.s, x0, lab, &lc, 1.0f, &l);
    EXPECT(l.loss < l.mse && l.loss > 0, "min-SNR-5 loss %g vs mse %g", l.loss, l.mse);
    EXPECT(l.dropped > 16 && l.dropped < 48, "dropout 0.5 of 64 samples dropped %d", l.dropped);
    lc = (DiffusionLossConfig){0.0f, 1e30f};
    arena_reset(&e.arena);
    diffusion_train_step(&e.ctx, &e.m, &e.s, x0, lab, &lc, 1.0f, &l);
    EXPECT(fabsf(l.loss - l.mse) <= 1e-6f * l.mse && l.dropped == 0, "gamma = inf: loss %g mse %g dropped %d", l.loss, l.mse,
           l.dropped);
    EXPECT(unet_null_class(&e.m) == 3 && e.m.cfg.num_class_embeds == 4, "3 users + 'no user' = 4 rows, null is the last");
    free(xd);
    teardown(&e);
}

static void sample(Setup *e, SamplerKind k, int steps, float g, int always_cfg, const int32_t *lab, const int64_t *seeds,
                   int N, float *out) {
    SampleConfig sc = {.guidance = g, .always_cfg = always_cfg};
    char err[256];
    CHECK(sampler_init(&sc.sampler, &e->s, k, steps, k == SAMPLER_DDIM ? 0.5f : 0.0f, 0, err, sizeof(err)) == 0, "%s", err);
    arena_reset(&e->arena);
    diffusion_sample(&e->ctx, &e->m, &e->s, &sc, lab, seeds, N, out, NULL, NULL);
}

static void test_sampling_deterministic(void) {
    Setup e;
    setup(&e, 2, PRED_EPSILON, 5);
    size_t per = 4 * 16 * 16;
    int32_t lab[3] = {0, 1, 2};  // 2 is "no user"
    int64_t seeds[3] = {11, 12, 13};
    float *a = xmalloc(3 * per * sizeof(float)), *b = xmalloc(3 * per * sizeof(float)), *one = xmalloc(per * sizeof(float));
    SamplerKind kinds[] = {SAMPLER_DDPM, SAMPLER_DDIM, SAMPLER_DPMPP_2M};
    for (int k = 0; k < 3; k++) {
        sample(&e, kinds[k], 6, 3.0f, 0, lab, seeds, 3, a);
        sample(&e, kinds[k], 6, 3.0f, 0, lab, seeds, 3, b);
        EXPECT(!memcmp(a, b, 3 * per * sizeof(float)), "%s: two runs with the same seeds differ", sampler_kind_name(kinds[k]));
        int finite = 1;
        for (size_t i = 0; i < 3 * per; i++) finite &= isfinite(a[i]);
        EXPECT(finite, "%s: non-finite samples", sampler_kind_name(kinds[k]));
        // sample 1 alone equals sample 1 in the batch (its noise comes from its seed only)
        sample(&e, kinds[k], 6, 3.0f, 0, lab + 1, seeds + 1, 1, one);
        char what[64];
        snprintf(what, sizeof(what), "%s: sample alone vs in a batch", sampler_kind_name(kinds[k]));
        EXPECT_CLOSE(what, one, a + per, per, 1e-4, 1e-4);
    }
    // a different seed gives a different sample, and only that one
    int64_t other[3] = {11, 99, 13};
    sample(&e, SAMPLER_DPMPP_2M, 6, 3.0f, 0, lab, seeds, 3, a);
    sample(&e, SAMPLER_DPMPP_2M, 6, 3.0f, 0, lab, other, 3, b);
    EXPECT(memcmp(a + per, b + per, per * sizeof(float)) != 0, "seed 12 and seed 99 gave the same sample");
    EXPECT(!memcmp(a, b, per * sizeof(float)), "changing sample 1's seed changed sample 0");
    free(a), free(b), free(one);
    teardown(&e);
}

static void test_guidance_one_is_conditional(void) {
    Setup e;
    setup(&e, 2, PRED_V, 9);
    size_t per = 4 * 16 * 16;
    int32_t lab[2] = {0, 1};
    int64_t seeds[2] = {1, 2};
    float *plain = xmalloc(2 * per * sizeof(float)), *cfg = xmalloc(2 * per * sizeof(float)), *g3 = xmalloc(2 * per * sizeof(float));
    sample(&e, SAMPLER_DPMPP_2M, 8, 1.0f, 0, lab, seeds, 2, plain);  // conditional only
    sample(&e, SAMPLER_DPMPP_2M, 8, 1.0f, 1, lab, seeds, 2, cfg);    // cond + uncond batch, g = 1
    EXPECT_CLOSE("guidance 1 with the unconditional half vs conditional sampling", cfg, plain, 2 * per, 1e-4, 1e-4);
    sample(&e, SAMPLER_DPMPP_2M, 8, 3.0f, 0, lab, seeds, 2, g3);
    double diff = 0;
    for (size_t i = 0; i < 2 * per; i++) diff = fmax(diff, fabs(g3[i] - plain[i]));
    EXPECT(diff > 1e-3, "guidance 3 changed the samples by only %g (the unconditional half is not used?)", diff);
    free(plain), free(cfg), free(g3);
    teardown(&e);
}

int main(void) {
    RUN(test_overfit_one_batch);
    RUN(test_min_snr_weight_and_dropout);
    RUN(test_sampling_deterministic);
    RUN(test_guidance_one_is_conditional);
    return tl_finish();
}
