// bench_cuda.c: the UNet presets on the GPU, the measurements of bench/torch_gpu_bench.py:
//   train-step-b32         zero grads, forward, MSE to a fixed target, backward, AdamW step
//   forward-b64            inference forward
//   sample-32-dpmpp20-g2   `doppel-diffuser sample`'s work for 32 samples (DPM-Solver++ 2M, 20
//                          steps, classifier-free guidance 2 as one batch of 64)
// and diffusion-step-b32, the trainer's whole micro-step (noise, timesteps and condition dropout
// drawn on the host as on the CPU, min-SNR MSE, backward) + AdamW, which has no PyTorch twin here.
// Precisions: fp32 (cuBLAS fp32 GEMMs) and tf32 (TF32 tensor-core GEMMs). One line each:
//   doppel <model> <what> <median ms> <min ms> <reps>
// Usage: bench_cuda [reps] [small|seed|all]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "cuda/cuda.h"
#include "models/diffusion.h"
#include "models/models.h"
#include "bench_report.h"
#include "optim/adamw.h"


typedef struct {
    UNet2DModel m;
    AdamW opt;
    Rng rng;
    Compute cp;  // what the stages use: a stream of its own, so sampling records CUDA graphs
} Bench;

static void bench_init(Bench *b, const char *preset) {
    UNetConfig c;
    CHECK(preset_unet(preset, 31, &c) == 0, "no preset %s", preset);
    unet_build(&b->m, &c);
    rng_seed(&b->rng, 0);
    params_init(&b->m.ps, &b->rng);
    adamw_init(&b->opt, &b->m.ps, 1e-4f, 0.9f, 0.999f, 1e-8f, 0.01f);
    compute_init(&b->cp, &b->m.ps, &b->rng, 1);
}

static void bench_free(Bench *b) {
    compute_free(&b->cp);
    unet_free(&b->m);
}

static void run_preset(const char *preset, const char *prec, int reps) {
    Bench b;
    bench_init(&b, preset);
    const UNetConfig *c = &b.m.cfg;
    char model[64];
    snprintf(model, sizeof(model), "unet-%s-%s", preset, prec);
    int S = c->sample_size, N = 32, NF = 64;
    size_t per = (size_t)c->in_channels * S * S;
    float *x = malloc(NF * per * sizeof(float)), t[64];
    int32_t labels[64];
    rng_fill_normal(&b.rng, x, (long)(NF * per), 0, 1);
    for (int i = 0; i < NF; i++) t[i] = (float)(i * 31 % 1000), labels[i] = i % 31;  // 31 users; 31 is "no user"
    double *tm = malloc((size_t)reps * sizeof(double));
    Ctx *ctx = &b.cp.ctx;
    ParamSet *dev = ctx->ps;
    Arena *arena = ctx->arena;
    cudaStream_t st = ctx->stream;

    // train-step-b32: fixed inputs and target, as torch_gpu_bench.py
    arena_reset(arena);
    for (int r = -2; r < reps; r++) {
        arena_reset(arena);
        cuda_sync();
        double t0 = now_ms();
        cuda_zero(dev->grad, dev->total * sizeof(float));
        Tensor xs = ctx_tensor(ctx, N, c->in_channels, S, S), tg = ctx_tensor(ctx, N, c->in_channels, S, S);
        ctx_put(ctx, xs.d, x, N * per * sizeof(float));
        ctx_put(ctx, tg.d, x + N * per, N * per * sizeof(float));
        Tensor out = unet_forward(ctx, &b.m, xs, t, labels);
        Tensor dout = ctx_zeros(ctx, out.N, out.C, out.H, out.W);
        mse_forward_cuda(out.d, tg.d, N * per, st);  // the loss value comes back, as .item() would
        mse_backward_cuda(dout.d, out.d, tg.d, N * per, 1.0f, st);
        unet_backward(ctx, &b.m, dout);
        adamw_step_cuda(&b.opt, dev, 1e-4f, st);
        cuda_sync();
        if (r >= 0) tm[r] = now_ms() - t0;
    }
    report(model, "train-step-b32", tm, reps);
    printf("# %s training arena peak %.0f MB, parameters %.2f M\n", model, arena->peak / 1048576.0,
           params_count_floats(&b.m.ps) / 1e6);

    // diffusion-step-b32: the trainer's micro-step
    NoiseSchedule s;
    char err[256];
    CHECK(noise_schedule_init(&s, 1000, BETA_LINEAR, 1e-4f, 0.02f, PRED_EPSILON, err, sizeof(err)) == 0, "%s", err);
    DiffusionLossConfig lc = {0.1f, 5.0f};
    ctx->train = 1;
    for (int r = -2; r < reps; r++) {
        arena_reset(arena);
        cuda_sync();
        double t0 = now_ms();
        cuda_zero(dev->grad, dev->total * sizeof(float));
        Tensor x0 = ctx_tensor(ctx, N, c->in_channels, S, S);
        ctx_put(ctx, x0.d, x, N * per * sizeof(float));
        DiffusionLosses l;
        diffusion_train_step(ctx, &b.m, &s, x0, labels, &lc, 1.0f, &l);
        adamw_step_cuda(&b.opt, dev, 1e-4f, st);
        cuda_sync();
        if (r >= 0) tm[r] = now_ms() - t0;
    }
    ctx->train = 0;
    report(model, "diffusion-step-b32", tm, reps);

    // forward-b64
    for (int r = -2; r < reps; r++) {
        arena_reset(arena);
        cuda_sync();
        double t0 = now_ms();
        Tensor xs = ctx_tensor(ctx, NF, c->in_channels, S, S);
        ctx_put(ctx, xs.d, x, NF * per * sizeof(float));
        unet_forward(ctx, &b.m, xs, t, labels);
        cuda_sync();
        if (r >= 0) tm[r] = now_ms() - t0;
    }
    report(model, "forward-b64", tm, reps);

    // sample-32-dpmpp20-g2
    SampleConfig sc = {.guidance = 2.0f};
    CHECK(sampler_init(&sc.sampler, &s, SAMPLER_DPMPP_2M, 20, 0.0f, 0, err, sizeof(err)) == 0, "%s", err);
    int64_t seeds[32];
    for (int i = 0; i < N; i++) labels[i] = i % 31, seeds[i] = i;
    float *out = malloc(N * per * sizeof(float));
    int rs = reps / 4 > 3 ? reps / 4 : 3;
    for (int g = 0; g < 2; g++) {  // without, then with CUDA graphs
        setenv("DOPPEL_CUDA_GRAPHS", g ? "1" : "0", 1);
        for (int r = -1; r < rs; r++) {
            cuda_sync();
            double t0 = now_ms();
            diffusion_sample(ctx, &b.m, &s, &sc, labels, seeds, N, out, NULL, NULL);
            cuda_sync();
            if (r >= 0) tm[r] = now_ms() - t0;
        }
        report(model, g ? "sample-32-dpmpp20-g2" : "sample-32-dpmpp20-g2-nograph", tm, rs);
        printf("# %s sampling%s: %.1f samples/s\n", model, g ? "" : " without CUDA graphs", N / (tm[rs / 2] / 1e3));
    }
    unsetenv("DOPPEL_CUDA_GRAPHS");
    free(out), free(x), free(tm);
    bench_free(&b);
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 20;
    const char *which = argc > 2 ? argv[2] : "all";
    if (reps < 1) reps = 1;
    if (!cuda_available()) {
        printf("# no CUDA GPU: nothing to measure\n");
        return 0;
    }
    printf("# doppel on %s, median of %d runs\n", cuda_device_name(), reps);
    const char *presets[2] = {"small", "seed"};
    for (int p = 0; p < 2; p++) {
        if (strcmp(which, "all") && strcmp(which, presets[p])) continue;
        const char *names[3] = {"fp32", "tf32", "bf16"};
        for (int k = 0; k < 3; k++) {
            setenv("DOPPEL_PRECISION", names[k], 1);  // compute_init reads it
            run_preset(presets[p], names[k], reps);
        }
    }
    return 0;
}
