// diffusion.c: the diffusion training step and guided sampling (see diffusion.h).
#include "diffusion.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"

// min-SNR-gamma weight of one sample (Hang et al. 2023, diffusers' train_text_to_image.py):
// epsilon: min(snr, gamma) / snr; v_prediction: min(snr, gamma) / (snr + 1)
static float snr_weight(const NoiseSchedule *s, int t, float gamma) {
    if (gamma <= 0) return 1.0f;
    float snr = schedule_snr(s, t), m = snr < gamma ? snr : gamma;
    return s->prediction == PRED_V ? m / (snr + 1.0f) : m / snr;
}

void diffusion_train_step(Ctx *ctx, UNet2DModel *m, const NoiseSchedule *s, Tensor x0, const int32_t *labels,
                          const DiffusionLossConfig *lc, float scale, DiffusionLosses *out) {
    int N = x0.N, null = unet_null_class(m);
    size_t per = (size_t)x0.C * x0.H * x0.W, n_all = (size_t)N * per;
    // host side: timesteps, labels after dropout, noise and the per-sample coefficients, drawn from
    // ctx->rng in one order whatever the device, so the GPU trains on the CPU's numbers
    int32_t *t = xmalloc((size_t)N * sizeof(int32_t));      // [N]
    int32_t *lab = xmalloc((size_t)N * sizeof(int32_t));    // [N]
    float *tf = xmalloc((size_t)N * sizeof(float));         // [N]
    float *coef = xmalloc((size_t)6 * N * sizeof(float));   // [6, N]: x_t's a, b; target's a, b; mse, dpred factor
    float *a_xt = coef, *b_xt = coef + N, *a_tg = coef + 2 * N, *b_tg = coef + 3 * N, *mse = coef + 4 * N,
          *k = coef + 5 * N;
    float *noise_h = xmalloc(n_all * sizeof(float));         // [N, C, h, w]
    memset(out, 0, sizeof(*out));
    for (int n = 0; n < N; n++) {
        t[n] = (int32_t)rng_below(ctx->rng, (uint32_t)s->T);
        tf[n] = (float)t[n];
        CHECK(labels[n] >= 0 && labels[n] < null, "diffusion: label %d outside 0..%d", labels[n], null - 1);
        lab[n] = labels[n];
        if (lc->cond_dropout > 0 && rng_uniform(ctx->rng) < lc->cond_dropout) lab[n] = null, out->dropped++;
    }
    rng_fill_normal(ctx->rng, noise_h, (long)n_all, 0, 1);
    for (int n = 0; n < N; n++) {
        float ac = s->alphas_cumprod[t[n]], a = sqrtf(ac), b = sqrtf(1.0f - ac);
        a_xt[n] = a, b_xt[n] = b;                                         // x_t = sqrt(ac) x0 + sqrt(1-ac) eps
        if (s->prediction == PRED_EPSILON) a_tg[n] = 0.0f, b_tg[n] = 1.0f;  // target eps
        else a_tg[n] = -b, b_tg[n] = a;                                   // v = sqrt(ac) eps - sqrt(1-ac) x0
    }
    const float *noise = ctx_input(ctx, noise_h, n_all * sizeof(float));
    const float *cd = ctx_input(ctx, coef, (size_t)4 * N * sizeof(float));
    Tensor xt = ctx_tensor(ctx, x0.N, x0.C, x0.H, x0.W), target = ctx_tensor(ctx, x0.N, x0.C, x0.H, x0.W);
    OP(ctx, axpby_rows, xt.d, x0.d, cd, noise, cd + N, N, per);
    OP(ctx, axpby_rows, target.d, x0.d, cd + 2 * N, noise, cd + 3 * N, N, per);
    Tensor pred = unet_forward(ctx, m, xt, tf, lab);                      // [N, C, h, w]
    // loss = mean_n w_n * mse_n; dpred_n = scale * w_n * 2 (pred_n - target_n) / (N per)
    float *mse_d = ctx->cuda ? arena_floats(ctx->arena, (size_t)N) : mse;
    OP(ctx, mse_rows_forward, mse_d, pred.d, target.d, N, per);
    ctx_get(ctx, mse, mse_d, (size_t)N * sizeof(float));
    double loss = 0, mse_sum = 0;
    for (int n = 0; n < N; n++) {
        float w = snr_weight(s, t[n], lc->snr_gamma);
        k[n] = scale * w * 2.0f / (float)((size_t)N * per);
        mse_sum += mse[n], loss += (double)w * mse[n];
    }
    out->mse = (float)(mse_sum / N), out->loss = (float)(loss / N);
    Tensor dpred = ctx_zeros(ctx, x0.N, x0.C, x0.H, x0.W);
    OP(ctx, mse_rows_backward, dpred.d, pred.d, target.d, ctx_input(ctx, k, (size_t)N * sizeof(float)), N, per);
    unet_backward(ctx, m, dpred);
    free(t), free(lab), free(tf), free(coef), free(noise_h);
}

// classifier guidance on the combined output `guided` (N, per) at timestep t (see diffusion.h);
// x (N, per) is x_t, grad (N, per) scratch
static void classifier_guide(Ctx *cctx, const SampleConfig *sc, const NoiseSchedule *s, int t, const float *x,
                             const int32_t *labels, int N, int C, int H, int W, float *grad, float *guided) {
    size_t n = (size_t)N * C * H * W;
    Tensor xc = ctx_tensor(cctx, N, C, H, W);                   // [N, C, H, W]
    float *tc = arena_floats(cctx->arena, (size_t)N);            // (N)
    memcpy(xc.d, x, n * sizeof(float));
    for (int i = 0; i < N; i++) tc[i] = (float)t;
    latent_classifier_log_prob_grad(cctx, sc->classifier, xc, tc, labels, grad, NULL);
    float ac = s->alphas_cumprod[t];
    // epsilon: eps - sqrt(1 - ac) s g; v (linear in eps at fixed x_t): v - sqrt((1 - ac) / ac) s g
    float k = sc->classifier_scale * (s->prediction == PRED_EPSILON ? sqrtf(1.0f - ac) : sqrtf((1.0f - ac) / ac));
    for (size_t j = 0; j < n; j++) guided[j] -= k * grad[j];
}

// The UNet's forward for one sampler step, and where its input and output live.
typedef struct {
    Tensor xin, out;     // [B, C, H, W] in ctx memory
    float *t;            // (B) timesteps, ctx memory
    const int32_t *lab;  // (B) labels, ctx memory
    void *graph;         // the recorded forward (GPU), NULL until step 1
} StepForward;

// CUDA graphs for the sampling loop, unless DOPPEL_CUDA_GRAPHS=0
static int graphs_wanted(const Ctx *ctx) {
    const char *e = getenv("DOPPEL_CUDA_GRAPHS");
    return ctx->cuda && ctx->stream && !(e && !strcmp(e, "0"));
}

// eps (B, per) on the host = UNet(x (N, per) twice when B = 2N, t, lab) for sampler step `step`.
// Eager on the CPU. On a GPU context with a stream of its own, step 0 runs eagerly (it sizes the
// arena), step 1 records the forward into a CUDA graph on a fresh one-block arena, and every later
// step replays it on new inputs copied into the same buffers: one launch instead of hundreds.
static void step_forward(Ctx *ctx, UNet2DModel *m, StepForward *f, int step, const float *x, int N, int B, size_t per,
                         float t, const int32_t *lab, float *eps) {
    const UNetConfig *c = &m->cfg;
    int graphs = graphs_wanted(ctx), record = graphs && step == 1;
    if (!graphs || step < 2) {
        arena_reset(ctx->arena);
        f->xin = ctx_tensor(ctx, B, c->in_channels, c->sample_size, c->sample_size);  // [B, C, H, W]
        f->t = arena_floats(ctx->arena, (size_t)B);
        f->lab = ctx_input(ctx, lab, (size_t)B * sizeof(int32_t));
    }
    float *tb = xmalloc((size_t)B * sizeof(float));
    for (int b = 0; b < B; b++) tb[b] = t;
    ctx_put(ctx, f->xin.d, x, (size_t)N * per * sizeof(float));
    if (B > N) ctx_put(ctx, f->xin.d + (size_t)N * per, x, (size_t)N * per * sizeof(float));
    ctx_put(ctx, f->t, tb, (size_t)B * sizeof(float));
    free(tb);
    if (record) cuda_graph_begin(ctx->stream);
    if (!graphs || step < 2) f->out = unet_forward_ctx(ctx, m, f->xin, f->t, f->lab);
    if (record) f->graph = cuda_graph_end(ctx->stream);
    if (graphs && step >= 1) cuda_graph_launch(f->graph, ctx->stream);
    ctx_get(ctx, eps, f->out.d, (size_t)B * per * sizeof(float));
}

void diffusion_sample(Ctx *ctx, UNet2DModel *m, const NoiseSchedule *s, const SampleConfig *sc, const int32_t *labels,
                      const int64_t *seeds, int N, float *out, SampleProgress progress, void *progress_user) {
    const UNetConfig *c = &m->cfg;
    const Sampler *sp = &sc->sampler;
    int C = c->in_channels, H = c->sample_size, W = c->sample_size, null = unet_null_class(m);
    size_t per = (size_t)C * H * W;
    int cfg = sc->guidance != 1.0f || sc->always_cfg, B = cfg ? 2 * N : N;
    float *x = xmalloc((size_t)N * per * sizeof(float));          // (N, C, H, W) x_t
    float *state = xmalloc((size_t)N * per * sizeof(float));      // (N, C, H, W) DPM-Solver++'s last x0
    float *guided = xmalloc((size_t)N * per * sizeof(float));     // (N, C, H, W) model output after guidance
    float *eps = xmalloc((size_t)B * per * sizeof(float));        // (B, C, H, W) the UNet's output, on the host
    int32_t *lab = xmalloc((size_t)B * sizeof(int32_t));          // (B) [labels; null...]
    Rng *rngs = xmalloc((size_t)N * sizeof(Rng));
    for (int n = 0; n < N; n++) {
        CHECK(labels[n] >= 0 && labels[n] <= null, "diffusion: label %d outside 0..%d", labels[n], null);
        rng_seed(&rngs[n], (uint64_t)seeds[n]);
        for (size_t i = 0; i < per; i++) x[n * per + i] = rng_normal(&rngs[n]);  // init_noise_sigma 1
        lab[n] = labels[n];
        if (cfg) lab[N + n] = null;
    }
    CHECK(!sc->classifier || !ctx->cuda, "diffusion: classifier guidance runs on the CPU only (for now); use --device cpu");
    Ctx cctx = {0};  // the classifier's: its own parameters, the same arena
    float *grad = NULL;                                           // (N, C, H, W) grad log p(y | x_t)
    if (sc->classifier) {
        ctx_init(&cctx, &sc->classifier->ps, ctx->arena, ctx->rng);
        grad = xmalloc((size_t)N * per * sizeof(float));
    }
    int train = ctx->train;
    ctx->train = 0;
    StepForward f = {0};
    for (int i = 0; i < sp->steps; i++) {
        step_forward(ctx, m, &f, i, x, N, B, per, (float)sp->timesteps[i], lab, eps);  // [B, C, H, W]
        if (cfg) {  // eps = eps_u + g (eps_c - eps_u)
            const float *ec = eps, *eu = eps + (size_t)N * per;
            for (size_t j = 0; j < (size_t)N * per; j++) guided[j] = eu[j] + sc->guidance * (ec[j] - eu[j]);
        } else {
            memcpy(guided, eps, (size_t)N * per * sizeof(float));
        }
        if (sc->classifier) classifier_guide(&cctx, sc, s, sp->timesteps[i], x, lab, N, C, H, W, grad, guided);
        sampler_step(sp, s, i, guided, x, state, rngs, N, per);
        if (progress) progress(progress_user, i + 1, sp->steps);
    }
    ctx->train = train;
    if (f.graph) cuda_graph_free(f.graph);
    memcpy(out, x, (size_t)N * per * sizeof(float));
    if (sc->classifier) ctx_free(&cctx);
    free(x), free(state), free(guided), free(eps), free(lab), free(rngs), free(grad);
}
