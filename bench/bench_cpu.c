// bench_cpu.c: forward and forward+backward of the small UNet (batch 32; also with activation
// recomputation, train --grad-checkpoint) and small VAE (batch 16) on the CPU, and `sample`'s work
// for 32 samples (DPM-Solver++ 2M, 20 steps, guidance 2: 20 UNet passes on a batch of 64 + the
// scheduler steps); one line per measurement for bench/run.sh:
//   doppel <model> <what> <median ms> <min ms> <reps>
// Usage: bench_cpu [reps] [unet|vae|sample]   (threads from OMP_NUM_THREADS / OPENBLAS_NUM_THREADS)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "models/diffusion.h"
#include "models/models.h"
#include "bench_report.h"
#include "blas.h"
#include "ops/ops.h"


// one training step (forward, MSE, backward) in ms
static double train_step_ms(Ctx *ctx, UNet2DModel *m, Tensor x, const float *t, const int32_t *labels,
                            const float *target) {
    size_t n = tensor_numel(x);
    arena_reset(ctx->arena);
    params_zero_grad(&m->ps);
    double t0 = now_ms();
    Tensor out = unet_forward(ctx, m, x, t, labels);
    Tensor dout = ctx_zeros(ctx, out.N, out.C, out.H, out.W);
    mse_forward(out.d, target, n);
    mse_backward(dout.d, out.d, target, n, 1.0f);
    unet_backward(ctx, m, dout);
    return now_ms() - t0;
}

// the small preset's UNet (31 users), PyTorch-default initialised from seed 0 (torch_bench.py's model)
static void small_unet(UNet2DModel *m, Rng *rng) {
    UNetConfig c;
    preset_unet("small", 31, &c);
    unet_build(m, &c);
    rng_seed(rng, 0);
    params_init(&m->ps, rng);
}

static void bench_unet(int reps) {
    UNet2DModel m;
    Rng rng;
    small_unet(&m, &rng);
    const UNetConfig c = m.cfg;
    Arena arena;
    arena_init(&arena, 0);
    Ctx ctx;
    ctx_init(&ctx, &m.ps, &arena, &rng);
    int N = 32, S = c.sample_size;
    size_t n = (size_t)N * c.in_channels * S * S;
    float *x = malloc(n * sizeof(float)), *target = malloc(n * sizeof(float)), t[32];
    int32_t labels[32];
    rng_fill_normal(&rng, x, (long)n, 0, 1);
    rng_fill_normal(&rng, target, (long)n, 0, 1);
    for (int i = 0; i < N; i++) t[i] = (float)(i * 31 % 1000), labels[i] = i % 32;
    double *tf = malloc((size_t)reps * sizeof(double)), *tb = malloc((size_t)reps * sizeof(double));
    double *tc = malloc((size_t)reps * sizeof(double));
    Tensor xs = {x, N, c.in_channels, S, S};
    for (int r = -1; r < reps; r++) {  // r = -1 warms up (and sizes the arena)
        arena_reset(&arena);
        double t0 = now_ms();
        unet_forward(&ctx, &m, xs, t, labels);
        if (r >= 0) tf[r] = now_ms() - t0;
    }
    // forward+backward, then the same with activation recomputation (train --grad-checkpoint) on an
    // arena of its own; alternated, so that a load on the machine weighs on both alike
    Arena arena_ck;
    arena_init(&arena_ck, 0);
    for (int r = -1; r < reps; r++) {
        for (int ck = 0; ck < 2; ck++) {
            m.grad_checkpoint = ck;
            ctx.arena = ck ? &arena_ck : &arena;
            double ms = train_step_ms(&ctx, &m, xs, t, labels, target);
            if (r >= 0) (ck ? tc : tb)[r] = ms;
        }
    }
    report("unet-small-b32", "forward", tf, reps);
    report("unet-small-b32", "forward+backward", tb, reps);
    report("unet-small-b32", "forward+backward-checkpointed", tc, reps);
    printf("# unet-small-b32 arena peak %.0f MB\n", arena.peak / 1048576.0);
    printf("# unet-small-b32 checkpointed arena peak %.0f MB (%.2fx less) for %.2fx the time (median; best %.2fx)\n",
           arena_ck.peak / 1048576.0, (double)arena.peak / (double)arena_ck.peak, tc[reps / 2] / tb[reps / 2],
           tc[0] / tb[0]);
    free(x), free(target), free(tf), free(tb), free(tc);
    ctx_free(&ctx);
    arena_free(&arena);
    arena_free(&arena_ck);
    unet_free(&m);
}

static void bench_vae(int reps) {
    VaeConfig c;
    preset_vae("small", &c);
    AutoencoderKL m;
    vae_build(&m, &c);
    Rng rng;
    rng_seed(&rng, 0);
    params_init(&m.ps, &rng);
    Arena arena;
    arena_init(&arena, 0);
    Ctx ctx;
    ctx_init(&ctx, &m.ps, &arena, &rng);
    int N = 16, S = c.sample_size, f = vae_downscale(&c), L = c.latent_channels;
    size_t n = (size_t)N * c.in_channels * S * S, nz = (size_t)N * L * (S / f) * (S / f);
    float *x = malloc(n * sizeof(float)), *eps = malloc(nz * sizeof(float));
    rng_fill_uniform(&rng, x, (long)n, -1, 1);
    rng_fill_normal(&rng, eps, (long)nz, 0, 1);
    double *tf = malloc((size_t)reps * sizeof(double)), *tb = malloc((size_t)reps * sizeof(double));
    for (int pass = 0; pass < 2; pass++) {
        for (int r = -1; r < reps; r++) {
            arena_reset(&arena);
            params_zero_grad(&m.ps);
            double t0 = now_ms();
            Tensor mom = vae_encode(&ctx, &m, (Tensor){x, N, c.in_channels, S, S});
            Tensor z = ctx_tensor(&ctx, N, L, mom.H, mom.W);
            gaussian_sample_forward(z.d, mom.d, eps, N, L, mom.H * mom.W);
            Tensor out = vae_decode(&ctx, &m, z);
            if (pass == 1) {  // L1 reconstruction + KL, as VAE training does
                Tensor dout = ctx_zeros(&ctx, out.N, out.C, out.H, out.W);
                l1_forward(out.d, x, n);
                l1_backward(dout.d, out.d, x, n, 1.0f);
                Tensor dz = vae_decode_backward(&ctx, &m, dout);
                Tensor dmom = ctx_zeros(&ctx, mom.N, mom.C, mom.H, mom.W);
                kl_forward(NULL, mom.d, N, L, mom.H * mom.W);
                kl_backward(dmom.d, mom.d, N, L, mom.H * mom.W, 1e-6f);
                gaussian_sample_backward(dmom.d, dz.d, mom.d, eps, N, L, mom.H * mom.W);
                vae_encode_backward(&ctx, &m, dmom);
            }
            if (r >= 0) (pass ? tb : tf)[r] = now_ms() - t0;
        }
    }
    report("vae-small-b16", "forward", tf, reps);
    report("vae-small-b16", "forward+backward", tb, reps);
    printf("# vae-small-b16 arena peak %.0f MB\n", arena.peak / 1048576.0);
    free(x), free(eps), free(tf), free(tb);
    ctx_free(&ctx);
    arena_free(&arena);
    vae_free(&m);
}

static void bench_sample(int reps) {
    UNet2DModel m;
    Rng rng;
    small_unet(&m, &rng);
    const UNetConfig c = m.cfg;
    NoiseSchedule s;
    char err[256];
    if (noise_schedule_init(&s, 1000, BETA_LINEAR, 0.0001f, 0.02f, PRED_EPSILON, err, sizeof(err))) return;
    SampleConfig sc = {.guidance = 2.0f};
    if (sampler_init(&sc.sampler, &s, SAMPLER_DPMPP_2M, 20, 0.0f, 0, err, sizeof(err))) return;
    Arena arena;
    arena_init(&arena, 0);
    Ctx ctx;
    ctx_init(&ctx, &m.ps, &arena, &rng);
    int N = 32;
    int32_t labels[32];
    int64_t seeds[32];
    for (int i = 0; i < N; i++) labels[i] = i % 31, seeds[i] = i;
    float *out = malloc((size_t)N * c.in_channels * c.sample_size * c.sample_size * sizeof(float));
    double *t = malloc((size_t)reps * sizeof(double));
    int r0 = reps > 3 ? reps - 2 : reps;  // 20 UNet passes each: fewer repetitions
    for (int r = -1; r < r0; r++) {
        double t0 = now_ms();
        diffusion_sample(&ctx, &m, &s, &sc, labels, seeds, N, out, NULL, NULL);
        if (r >= 0) t[r] = now_ms() - t0;
    }
    report("sample-32-dpmpp20-g2", "unet-small", t, r0);
    printf("# sample: %.2f samples/s\n", N / (t[r0 / 2] / 1e3));
    free(out), free(t);
    ctx_free(&ctx);
    arena_free(&arena);
    unet_free(&m);
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    printf("# OpenBLAS kernels: %s\n", blas_core_name());
    if (reps < 1) reps = 1;
    const char *only = argc > 2 ? argv[2] : "";  // "unet", "vae" or "sample" to run one
    if (!*only || !strcmp(only, "unet")) bench_unet(reps);
    if (!*only || !strcmp(only, "vae")) bench_vae(reps);
    if (!*only || !strcmp(only, "sample")) bench_sample(reps);
    return 0;
}
