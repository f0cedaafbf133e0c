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

// UNet2DModel.inference (diffusion_sample sets it on the CPU): the forward alone, blocks as
// segments: the same output bit for bit (eval mode, no dropout) for a smaller arena
static size_t forward_peak(UNet2DModel *m, int inference, const float *x, const float *t, const int32_t *lab, int N,
                           float *out, size_t n_out) {
    Rng rng;
    rng_seed(&rng, 3);
    Arena arena;
    arena_init(&arena, 0);
    Ctx ctx;
    ctx_init(&ctx, &m->ps, &arena, &rng);
    m->inference = inference;
    int S = m->cfg.sample_size;
    Tensor xs = ctx_tensor(&ctx, N, m->cfg.in_channels, S, S);  // [N, C, S, S]
    memcpy(xs.d, x, tensor_numel(xs) * sizeof(float));
    Tensor y = unet_forward(&ctx, m, xs, t, lab);
    CHECK(tensor_numel(y) == n_out, "output size");
    memcpy(out, y.d, n_out * sizeof(float));
    size_t peak = arena.peak;
    m->inference = 0;
    arena_free(&arena);
    return peak;
}

static void test_unet_inference_forward(void) {
    UNetConfig c;
    CHECK(preset_unet("small", 3, &c) == 0, "no small preset");
    UNet2DModel m;
    unet_build(&m, &c);
    Rng rng;
    rng_seed(&rng, 5);
    params_init(&m.ps, &rng);
    enum { N = 8 };
    int S = c.sample_size;
    size_t n = (size_t)N * c.in_channels * S * S, n_out = (size_t)N * c.out_channels * S * S;
    float *x = xmalloc(n * sizeof(float)), *a = xmalloc(n_out * sizeof(float)), *b = xmalloc(n_out * sizeof(float));
    float t[N];
    int32_t lab[N];
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(&rng);
    for (int i = 0; i < N; i++) t[i] = (float)(97 * i % 1000), lab[i] = i % (c.num_class_embeds);
    size_t plain = forward_peak(&m, 0, x, t, lab, N, a, n_out), seg = forward_peak(&m, 1, x, t, lab, N, b, n_out);
    size_t d = first_diff(a, b, n_out);
    EXPECT(d == n_out, "inference forward differs at %zu: %.9g vs %.9g", d, a[d < n_out ? d : 0], b[d < n_out ? d : 0]);
    double f = (double)plain / (double)seg;
    printf("small b%d forward: arena peak %.2f MB plain, %.2f MB inference (%.2fx less)\n", N, plain / 1048576.0,
           seg / 1048576.0, f);
    EXPECT(f > 2.0, "inference lowered the forward's arena peak only %.2fx (%zu -> %zu bytes)", f, plain, seg);
    free(x), free(a), free(b);
    unet_free(&m);
}

int main(void) {
    RUN(test_arena_rewind);
    RUN(test_unet_tiny_bit_identical);
    RUN(test_unet_small_peak);
    RUN(test_unet_inference_forward);
    return tl_finish();
}
