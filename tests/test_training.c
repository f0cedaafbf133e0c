// test_training.c: the training machinery on the tiny UNet: an interrupted run resumed from its
// checkpoint continues bit for bit (AdamW moments, EMA, RNG, schedule, dropout, accumulation),
// steady-state steps allocate nothing, the RNG is reproducible, and the loss falls.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "io/checkpoint.h"
#include "models/models.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/ema.h"
#include "optim/lr_schedule.h"
#include "testlib.h"

#define OUT_DIR "build/test-out/train"
#define BATCH 4
#define ACCUM 2
#define TOTAL 6

typedef struct {
    UNet2DModel m;
    AdamW opt;
    Rng rng;  // data, dropout: everything random in training
    Arena arena;
    Ctx ctx;
    EmaConfig ema;
    float *x0;  // fixed "clean" latents the model learns to denoise, (N, 4, 16, 16)
} Trainer;

static void trainer_new(Trainer *t, uint64_t seed) {
    memset(t, 0, sizeof(*t));
    UNetConfig c;
    preset_unet("tiny", 3, &c);
    c.dropout = 0.1f;  // exercises the RNG inside the model
    unet_build(&t->m, &c);
    rng_seed(&t->rng, seed);
    params_init(&t->m.ps, &t->rng);
    adamw_init(&t->opt, &t->m.ps, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f);
    ema_init(&t->m.ps);
    t->ema = ema_config_default();
    t->ema.decay = 0.99f;
    arena_init(&t->arena, 0);
    ctx_init(&t->ctx, &t->m.ps, &t->arena, &t->rng);
    t->ctx.train = 1;
    size_t n = (size_t)BATCH * 4 * 16 * 16;
    t->x0 = xmalloc(n * sizeof(float));
    Rng data;
    rng_seed(&data, 99);
    rng_fill_normal(&data, t->x0, (long)n, 0, 1);
}

static void trainer_free(Trainer *t) {
    free(t->x0);
    ctx_free(&t->ctx);
    arena_free(&t->arena);
    unet_free(&t->m);
}

// one optimizer step of ACCUM micro-batches: predict the noise added to x0 at random timesteps
static float train_step(Trainer *t) {
    size_t n = (size_t)BATCH * 4 * 16 * 16;
    float loss = 0;
    params_zero_grad(&t->m.ps);
    for (int a = 0; a < ACCUM; a++) {
        arena_reset(&t->arena);
        Tensor xt = ctx_tensor(&t->ctx, BATCH, 4, 16, 16);
        float *noise = arena_floats(&t->arena, n), ts[BATCH];
        int32_t labels[BATCH];
        rng_fill_normal(&t->rng, noise, (long)n, 0, 1);
        for (int i = 0; i < BATCH; i++) {
            ts[i] = (float)rng_below(&t->rng, 1000);
            labels[i] = (int32_t)rng_below(&t->rng, 4);
            float ab = cosf(ts[i] / 1000.0f * 1.5707963f);
            for (size_t j = 0; j < n / BATCH; j++)
                xt.d[i * (n / BATCH) + j] = ab * t->x0[i * (n / BATCH) + j] + sqrtf(1 - ab * ab) * noise[i * (n / BATCH) + j];
        }
        Tensor out = unet_forward(&t->ctx, &t->m, xt, ts, labels);
        loss += mse_forward(out.d, noise, n) / ACCUM;
        Tensor dout = ctx_zeros(&t->ctx, out.N, out.C, out.H, out.W);
        mse_backward(dout.d, out.d, noise, n, 1.0f / ACCUM);
        unet_backward(&t->ctx, &t->m, dout);
    }
    clip_grad_norm(&t->m.ps, 1.0f);
    adamw_step(&t->opt, &t->m.ps, lr_at(LR_COSINE_WARMUP, t->opt.lr, t->opt.step, 2, TOTAL));
    ema_update(&t->m.ps, ema_decay(&t->ema, t->opt.step));
    return loss;
}

static void test_resume_is_exact(void) {
    char err[512];
    Trainer a, b;
    trainer_new(&a, 7);
    for (int s = 0; s < TOTAL; s++) train_step(&a);

    trainer_new(&b, 7);
    for (int s = 0; s < TOTAL / 2; s++) train_step(&b);
    json_t *cfg = unet_config_to_json(&b.m.cfg);
    TrainMeta meta = {b.opt.step, b.rng};
    EXPECT(checkpoint_save_model(OUT_DIR, &b.m.ps, b.m.ps.data, cfg, err, sizeof(err)) == 0, "%s", err);
    EXPECT(checkpoint_save_state(OUT_DIR, &b.m.ps, &meta, err, sizeof(err)) == 0, "%s", err);
    json_decref(cfg);
    trainer_free(&b);

    // a fresh process would do exactly this: build from config.json, load weights and state
    Trainer r;
    trainer_new(&r, 12345);  // a different seed: everything must come from the checkpoint
    EXPECT(checkpoint_load_model(OUT_DIR, &r.m.ps, err, sizeof(err)) == 0, "%s", err);
    TrainMeta back;
    EXPECT(checkpoint_load_state(OUT_DIR, &r.m.ps, &back, err, sizeof(err)) == 0, "%s", err);
    r.opt.step = back.step;
    r.rng = back.rng;
    for (int s = TOTAL / 2; s < TOTAL; s++) train_step(&r);
    size_t bytes = a.m.ps.total * sizeof(float);
    EXPECT(r.opt.step == a.opt.step, "step %lld vs %lld", (long long)r.opt.step, (long long)a.opt.step);
    EXPECT(!memcmp(r.m.ps.data, a.m.ps.data, bytes), "weights differ after resume");
    EXPECT(!memcmp(r.m.ps.m, a.m.ps.m, bytes) && !memcmp(r.m.ps.v, a.m.ps.v, bytes), "AdamW moments differ after resume");
    EXPECT(!memcmp(r.m.ps.ema, a.m.ps.ema, bytes), "EMA weights differ after resume");
    EXPECT(memcmp(a.m.ps.ema, a.m.ps.data, bytes), "EMA weights are just the weights");
    trainer_free(&a);
    trainer_free(&r);
}

// after the first step the arena holds one block and never grows; scratch never grows either
static void test_steady_state_allocates_nothing(void) {
    Trainer t;
    trainer_new(&t, 3);
    train_step(&t);
    train_step(&t);  // the reset inside merges the first step's chunks
    size_t peak = t.arena.peak, scratch = t.ctx.scratch_cap;
    ArenaChunk *head = t.arena.head;
    for (int s = 0; s < 3; s++) train_step(&t);
    EXPECT(t.arena.head == head && head->next == NULL, "arena allocated new chunks in steady state");
    EXPECT(t.arena.peak == peak, "arena peak grew from %zu to %zu", peak, t.arena.peak);
    EXPECT(t.ctx.scratch_cap == scratch, "scratch grew in steady state");
    printf("  tiny UNet, batch %d: arena %.1f MB per micro-batch, scratch %.1f MB\n", BATCH, peak / 1048576.0,
           scratch * 4 / 1048576.0);
    trainer_free(&t);
}

static void test_loss_falls(void) {
    Trainer t;
    trainer_new(&t, 5);
    t.ctx.train = 0;  // no dropout: a cleaner signal over few steps
    float first = 0, last = 0;
    for (int s = 0; s < 30; s++) {
        float l = train_step(&t);
        if (s < 3) first += l / 3;
        if (s >= 27) last += l / 3;
    }
    printf("  denoising loss: first 3 steps %.4f, last 3 steps %.4f\n", first, last);
    EXPECT(isfinite(last) && last < 0.8f * first, "loss did not fall: %.4f -> %.4f", first, last);
    trainer_free(&t);
}

static void test_rng(void) {
    Rng a, b;
    rng_seed(&a, 42);
    rng_seed(&b, 42);
    double s = 0, ss = 0;
    int same = 1, n = 200000;
    for (int i = 0; i < n; i++) {
        float x = rng_normal(&a), y = rng_normal(&b);
        same &= x == y;
        s += x, ss += (double)x * x;
    }
    double mean = s / n, sd = sqrt(ss / n - mean * mean);
    EXPECT(same, "same seed, different sequence");
    EXPECT(fabs(mean) < 0.01 && fabs(sd - 1) < 0.01, "N(0,1) sample has mean %.4f sd %.4f", mean, sd);
    rng_seed(&b, 43);
    EXPECT(rng_u64(&a) != rng_u64(&b), "different seeds agree");
    int counts[5] = {0};
    for (int i = 0; i < 50000; i++) counts[rng_below(&a, 5)]++;
    for (int k = 0; k < 5; k++) EXPECT(abs(counts[k] - 10000) < 500, "rng_below(5) bucket %d has %d", k, counts[k]);
}

int main(void) {
    RUN(test_resume_is_exact);
    RUN(test_steady_state_allocates_nothing);
    RUN(test_loss_falls);
    RUN(test_rng);
    return tl_finish();
}
