// test_grad_checkpoint.c: activation recomputation (UNet2DModel.grad_checkpoint, unet_2d.c) gives
// the plain backward's output, parameter gradients, input gradient and RNG state bit for bit, with
// dropout on, over consecutive steps, for a lower arena peak; arena_mark/arena_rewind keep the
// arena's one-block merge.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "models/models.h"
#include "testlib.h"

#define STEPS 2

typedef struct {
    float *out[STEPS], *dsample[STEPS], *grad[STEPS];  // copies after each step
    Rng rng[STEPS];                                     // after each step
    size_t peak, total, n_out, n_in;
    int dropout_ran;
} Run;

static float *dup_floats(const float *x, size_t n) {
    float *c = xmalloc(n * sizeof(float));
    memcpy(c, x, n * sizeof(float));
    return c;
}

// STEPS training steps of the preset on random data (MSE to a random target, then an SGD update),
// all randomness from one RNG, as the trainer does
static void run_steps(const char *preset, int N, int checkpoint, Run *r) {
    UNetConfig c;
    CHECK(preset_unet(preset, 3, &c) == 0, "no preset %s", preset);
    c.dropout = 0.1f;
    UNet2DModel m;
    unet_build(&m, &c);
    m.grad_checkpoint = checkpoint;
    Rng rng;
    rng_seed(&rng, 42);
    params_init(&m.ps, &rng);
    Arena arena;
    arena_init(&arena, 0);
    Ctx ctx;
    ctx_init(&ctx, &m.ps, &arena, &rng);
    ctx.train = 1;
    int S = c.sample_size;
    memset(r, 0, sizeof(*r));
    r->total = m.ps.total;
    for (int s = 0; s < STEPS; s++) {
        arena_reset(&arena);
        params_zero_grad(&m.ps);
        Tensor x = ctx_tensor(&ctx, N, c.in_channels, S, S);
        float t[64];
        int32_t labels[64];
        rng_fill_normal(&rng, x.d, (long)tensor_numel(x), 0, 1);
        for (int n = 0; n < N; n++) t[n] = (float)rng_below(&rng, 1000), labels[n] = (int32_t)rng_below(&rng, 4);
        Tensor out = unet_forward(&ctx, &m, x, t, labels);  // [N, 4, S, S]
        r->dropout_ran = m.down[0].resnets[0].drop_mask != NULL;
        float *target = arena_floats(&arena, tensor_numel(out));
        rng_fill_normal(&rng, target, (long)tensor_numel(out), 0, 1);  // the RNG must be where the plain forward left it
        Tensor dout = ctx_zeros(&ctx, out.N, out.C, out.H, out.W);
        mse_backward(dout.d, out.d, target, tensor_numel(out), 1.0f);
        Tensor dx = unet_backward(&ctx, &m, dout);
        r->n_out = tensor_numel(out), r->n_in = tensor_numel(dx);
        r->out[s] = dup_floats(out.d, r->n_out);
        r->dsample[s] = dup_floats(dx.d, r->n_in);
        r->grad[s] = dup_floats(m.ps.grad, m.ps.total);
        r->rng[s] = rng;
        for (size_t i = 0; i < m.ps.total; i++) m.ps.data[i] -= 0.01f * m.ps.grad[i];
    }
    r->peak = arena.peak;
    ctx_free(&ctx);
    arena_free(&arena);
    unet_free(&m);
}

static void run_free(Run *r) {
    for (int s = 0; s < STEPS; s++) free(r->out[s]), free(r->dsample[s]), free(r->grad[s]);
}

static size_t first_diff(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float))) return i;
    return n;
}

static void expect_same(const char *preset, const Run *a, const Run *b) {
    EXPECT(a->dropout_ran && b->dropout_ran, "%s: dropout did not run (the test would not cover the RNG replay)", preset);
    for (int s = 0; s < STEPS; s++) {
        size_t i;
        i = first_diff(a->out[s], b->out[s], a->n_out);
        EXPECT(i == a->n_out, "%s step %d: output differs at %zu: %.9g vs %.9g", preset, s, i, a->out[s][i], b->out[s][i]);
        i = first_diff(a->grad[s], b->grad[s], a->total);
        EXPECT(i == a->total, "%s step %d: parameter gradient differs at %zu: %.9g vs %.9g", preset, s, i,
               a->grad[s][i], b->grad[s][i]);
        i = first_diff(a->dsample[s], b->dsample[s], a->n_in);
        EXPECT(i == a->n_in, "%s step %d: input gradient differs at %zu: %.9g vs %.9g", preset, s, i,
               a->dsample[s][i], b->dsample[s][i]);
        const Rng *x = &a->rng[s], *y = &b->rng[s];
        EXPECT(!memcmp(x->s, y->s, sizeof(x->s)) && x->has_spare == y->has_spare &&
                   (!x->has_spare || x->spare == y->spare),
               "%s step %d: the RNG is not where the plain backward leaves it", preset, s);
    }
}

static void test_unet_tiny_bit_identical(void) {
    Run plain, ckpt;
    run_steps("tiny", 4, 0, &plain);
    run_steps("tiny", 4, 1, &ckpt);
    expect_same("tiny", &plain, &ckpt);
    printf("tiny b4: arena peak %.2f MB plain, %.2f MB checkpointed (%.2fx less)\n", plain.peak / 1048576.0,
           ckpt.peak / 1048576.0, (double)plain.peak / (double)ckpt.peak);
    EXPECT(ckpt.peak < plain.peak, "tiny: checkpointing did not lower the arena peak (%zu vs %zu bytes)", ckpt.peak,
           plain.peak);
    run_free(&plain), run_free(&ckpt);
}

static void test_unet_small_peak(void) {
    Run plain, ckpt;
    run_steps("small", 4, 0, &plain);
    run_steps("small", 4, 1, &ckpt);
    expect_same("small", &plain, &ckpt);
    double f = (double)plain.peak / (double)ckpt.peak;
    printf("small b4: arena peak %.2f MB plain, %.2f MB checkpointed (%.2fx less)\n", plain.peak / 1048576.0,
           ckpt.peak / 1048576.0, f);
    EXPECT(f > 2.0, "small: checkpointing lowered the arena peak only %.2fx (%zu -> %zu bytes)", f, plain.peak, ckpt.peak);
    run_free(&plain), run_free(&ckpt);
}

// a rewind frees the chunks added after its mark; the next reset still merges into one block that
// holds the peak, so marks and rewinds then run without allocating
static void test_arena_rewind(void) {
    Arena a;
    arena_init(&a, 4096);
    float *keep = arena_floats(&a, 256);  // 1 KB
    ArenaMark mk = arena_mark(&a);
    arena_floats(&a, 512);
    arena_floats(&a, 1024);  // 4 KB more: a second chunk
    EXPECT(a.head->next != NULL, "expected the arena to grow a chunk");
    arena_rewind(&a, mk);
    EXPECT(a.head->next == NULL && a.used == 1024 && a.head->used == 1024, "rewind: used %zu, chunk used %zu",
           a.used, a.head->used);
    EXPECT(arena_floats(&a, 16) == keep + 256, "the first allocation after a rewind reuses the freed memory");
    EXPECT(a.peak == 1024 + 2048 + 4096, "peak %zu, want %d", a.peak, 1024 + 2048 + 4096);
    arena_reset(&a);
    ArenaChunk *one = a.head;
    EXPECT(one->next == NULL && one->cap >= a.peak, "reset after a rewind: cap %zu for peak %zu", one->cap, a.peak);
    arena_floats(&a, 256);
    mk = arena_mark(&a);
    arena_floats(&a, 1536);
    arena_rewind(&a, mk);
    EXPECT(a.head == one && one->next == NULL && a.used == 1024, "after the merge no chunk is added or freed");
    arena_free(&a);
}

int main(void) {
    RUN(test_arena_rewind);
    RUN(test_unet_tiny_bit_identical);
    RUN(test_unet_small_peak);
    return tl_finish();
}
