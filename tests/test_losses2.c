// test_losses2.c: the SSIM and spectral losses (common/ops/losses2.h): against PyTorch fixtures
// (tests/reference/ops.py, float64 references), against direct double-precision definitions on
// odd shapes, by finite differences, and for the backward conventions (+= accumulation, NULL
// gradient skipped, cache-less forward).
#include <complex.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ops/losses2.h"
#include "testlib.h"

#define ATOL 1e-5
#define RTOL 1e-4
#define FD_TOL 1e-2

static float *zeros(size_t n) { return xcalloc(n, sizeof(float)); }
static float *randn(size_t n, unsigned long long seed, float std) {
    float *x = xmalloc(n * sizeof(float));
    fill_randn(x, n, seed, std);
    return x;
}
static float *uniform(size_t n, unsigned long long seed) {  // in (-1, 1): tanh of a normal
    float *x = randn(n, seed, 1.0f);
    for (size_t i = 0; i < n; i++) x[i] = tanhf(x[i]);
    return x;
}

// ======================================= SSIM =======================================

// direct definition: 2-D 11x11 window (outer product of the 1-D Gaussian), all in double
static double ssim_loss_direct(const float *p, const float *t, int N, int C, int H, int W, double range) {
    double g[SSIM_WIN], s = 0;
    for (int k = 0; k < SSIM_WIN; k++) s += g[k] = exp(-(k - 5.0) * (k - 5.0) / (2 * SSIM_SIGMA * SSIM_SIGMA));
    for (int k = 0; k < SSIM_WIN; k++) g[k] /= s;
    const double C1 = pow(SSIM_K1 * range, 2), C2 = pow(SSIM_K2 * range, 2);
    const int OH = H - 10, OW = W - 10;
    double total = 0;
    for (int nc = 0; nc < N * C; nc++)
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                double mp = 0, mt = 0, pp = 0, tt = 0, pt = 0;
                for (int a = 0; a < SSIM_WIN; a++)
                    for (int b = 0; b < SSIM_WIN; b++) {
                        size_t q = (size_t)nc * H * W + (size_t)(oy + a) * W + ox + b;
                        double w = g[a] * g[b], x = p[q], y = t[q];
                        mp += w * x, mt += w * y, pp += w * x * x, tt += w * y * y, pt += w * x * y;
                    }
                double s11 = pp - mp * mp, s22 = tt - mt * mt, s12 = pt - mp * mt;
                total += (2 * mp * mt + C1) * (2 * s12 + C2) / ((mp * mp + mt * mt + C1) * (s11 + s22 + C2));
            }
    return 1.0 - total / ((double)N * C * OH * OW);
}

static void test_ssim_fixture(void) {
    SafeTensors *st = fx_open("op_ssim_loss");
    if (!st) return;
    json_t *cfg = fx_config(st);
    float range = (float)json_number_value(json_object_get(cfg, "data_range"));
    EXPECT(json_integer_value(json_object_get(cfg, "win_size")) == SSIM_WIN, "fixture window size differs");
    json_decref(cfg);
    const StTensor *tp = st_find(st, "pred");
    int N = (int)tp->shape[0], C = (int)tp->shape[1], H = (int)tp->shape[2], W = (int)tp->shape[3];
    size_t n = (size_t)N * C * H * W;
    float *pred = fx_f32(st, "pred", NULL), *target = fx_f32(st, "target", NULL);
    float *want = fx_f32(st, "out", NULL), *want_g = fx_f32(st, "grad.pred", NULL);
    float *cache = zeros(ssim_cache_floats(N, C, H, W)), *dp = zeros(n);
    float loss = ssim_loss_forward(cache, pred, target, N, C, H, W, range);
    printf("  ssim loss %.8f (want %.8f), data_range %g, %dx%dx%dx%d\n", loss, want[0], range, N, C, H, W);
    EXPECT_CLOSE("ssim loss", &loss, want, 1, ATOL, RTOL);
    ssim_loss_backward(dp, cache, pred, target, N, C, H, W, range, 1.0f);
    EXPECT_CLOSE("ssim grad.pred", dp, want_g, n, ATOL, RTOL);
    free(pred), free(target), free(want), free(want_g), free(cache), free(dp);
    fx_close(st);
}

static void test_ssim_direct(void) {  // non-square, several planes, data_range 1
    const int N = 2, C = 3, H = 13, W = 17;
    size_t n = (size_t)N * C * H * W;
    float *p = uniform(n, 1), *t = uniform(n, 2);
    for (size_t i = 0; i < n; i++) t[i] = 0.5f * (0.5f * p[i] + 0.5f * t[i]) + 0.5f;  // in [0, 1]
    for (size_t i = 0; i < n; i++) p[i] = 0.5f * p[i] + 0.5f;
    float got = ssim_loss_forward(NULL, p, t, N, C, H, W, 1.0f), want = (float)ssim_loss_direct(p, t, N, C, H, W, 1.0);
    EXPECT_CLOSE("ssim loss vs 2-D window", &got, &want, 1, 1e-6, 1e-5);
    float same = ssim_loss_forward(NULL, p, p, N, C, H, W, 1.0f), zero = 0.0f;
    EXPECT_CLOSE("ssim loss of identical images", &same, &zero, 1, 1e-6, 0);
    float *cache = zeros(ssim_cache_floats(N, C, H, W)), *dp = zeros(n), *z = zeros(n);
    ssim_loss_forward(cache, p, p, N, C, H, W, 1.0f);
    ssim_loss_backward(dp, cache, p, p, N, C, H, W, 1.0f, 1.0f);
    EXPECT_CLOSE("ssim grad at identical images (a minimum)", dp, z, n, 1e-6, 0);
    free(p), free(t), free(cache), free(dp), free(z);
}

typedef struct {
    int N, C, H, W;
    float range, dloss;
    float *pred, *target;
} LossCtx;

static double ssim_ctx_loss(void *p) {
    LossCtx *c = p;
    return (double)c->dloss * ssim_loss_forward(NULL, c->pred, c->target, c->N, c->C, c->H, c->W, c->range);
}

// dloss = the element count makes the per-pixel gradient O(1), where fd_check's tolerance bites
static void ssim_fd_case(int N, int C, int H, int W, unsigned long long seed) {
    size_t n = (size_t)N * C * H * W;
    LossCtx c = {N, C, H, W, 2.0f, (float)n, uniform(n, seed), uniform(n, seed + 1)};
    for (size_t i = 0; i < n; i++) c.target[i] = 0.6f * c.pred[i] + 0.4f * c.target[i];
    float *cache = zeros(ssim_cache_floats(N, C, H, W)), *dp = zeros(n);
    ssim_loss_forward(cache, c.pred, c.target, N, C, H, W, c.range);
    ssim_loss_backward(dp, cache, c.pred, c.target, N, C, H, W, c.range, c.dloss);
    char name[96];
    snprintf(name, sizeof(name), "ssim dpred %dx%dx%dx%d", N, C, H, W);
    fd_check(name, c.pred, dp, n, ssim_ctx_loss, &c, 80, 1e-2f, FD_TOL);
    free(c.pred), free(c.target), free(cache), free(dp);
}

static void test_ssim_fd(void) {
    ssim_fd_case(1, 2, 13, 14, 10);
    ssim_fd_case(2, 1, 16, 12, 20);
    ssim_fd_case(1, 1, 11, 11, 30);  // one window position
}

// ===================================== spectral =====================================

// direct definition: the full 2-D DFT in double, mean over all N*C*H*W bins
static double spectral_loss_direct(const float *p, const float *t, int N, int C, int H, int W) {
    double total = 0;
    for (int nc = 0; nc < N * C; nc++)
        for (int u = 0; u < H; u++)
            for (int v = 0; v < W; v++) {
                double complex fp = 0, ft = 0;
                for (int i = 0; i < H; i++)
                    for (int j = 0; j < W; j++) {
                        double complex e = cexp(-2.0 * M_PI * I * ((double)u * i / H + (double)v * j / W));
                        size_t q = (size_t)nc * H * W + (size_t)i * W + j;
                        fp += p[q] * e, ft += t[q] * e;
                    }
                total += fabs(log1p(cabs(fp)) - log1p(cabs(ft)));
            }
    return total / ((double)N * C * H * W);
}

static void test_spectral_fixture(void) {
    SafeTensors *st = fx_open("op_spectral_loss");
    if (!st) return;
    const StTensor *tp = st_find(st, "pred");
    int N = (int)tp->shape[0], C = (int)tp->shape[1], H = (int)tp->shape[2], W = (int)tp->shape[3];
    size_t n = (size_t)N * C * H * W;
    float *pred = fx_f32(st, "pred", NULL), *target = fx_f32(st, "target", NULL);
    float *want = fx_f32(st, "out", NULL), *want_g = fx_f32(st, "grad.pred", NULL);
    float *cache = zeros(spectral_cache_floats(N, C, H, W)), *dp = zeros(n);
    float loss = spectral_loss_forward(cache, pred, target, N, C, H, W);
    printf("  spectral loss %.8f (want %.8f), %dx%dx%dx%d\n", loss, want[0], N, C, H, W);
    EXPECT_CLOSE("spectral loss", &loss, want, 1, ATOL, RTOL);
    spectral_loss_backward(dp, cache, pred, target, N, C, H, W, 1.0f);
    EXPECT_CLOSE("spectral grad.pred", dp, want_g, n, ATOL, RTOL);
    free(pred), free(target), free(want), free(want_g), free(cache), free(dp);
    fx_close(st);
}

static void test_spectral_direct(void) {  // odd and even H and W: the half-spectrum multiplicities
    const int shapes[][4] = {{2, 1, 5, 7}, {1, 2, 6, 8}, {1, 1, 7, 6}, {1, 1, 4, 1}, {2, 2, 3, 2}};
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        int N = shapes[s][0], C = shapes[s][1], H = shapes[s][2], W = shapes[s][3];
        size_t n = (size_t)N * C * H * W;
        float *p = randn(n, 40 + s, 1.0f), *t = randn(n, 50 + s, 1.0f);
        float got = spectral_loss_forward(NULL, p, t, N, C, H, W), want = (float)spectral_loss_direct(p, t, N, C, H, W);
        char name[96];
        snprintf(name, sizeof(name), "spectral loss vs full DFT %dx%dx%dx%d", N, C, H, W);
        EXPECT_CLOSE(name, &got, &want, 1, 1e-6, 1e-5);
        free(p), free(t);
    }
}

static double spectral_ctx_loss(void *p) {
    LossCtx *c = p;
    return (double)c->dloss * spectral_loss_forward(NULL, c->pred, c->target, c->N, c->C, c->H, c->W);
}

// target_std 0: target = 0, the loss is smooth (log1p|F| >= 0); otherwise |.| has kinks where the
// two log-magnitudes meet, which a small eps rarely straddles
static void spectral_fd_case(int N, int C, int H, int W, float target_std, float eps, unsigned long long seed) {
    size_t n = (size_t)N * C * H * W;
    LossCtx c = {N, C, H, W, 0, (float)n, randn(n, seed, 1.0f), randn(n, seed + 1, target_std)};
    float *cache = zeros(spectral_cache_floats(N, C, H, W)), *dp = zeros(n);
    spectral_loss_forward(cache, c.pred, c.target, N, C, H, W);
    spectral_loss_backward(dp, cache, c.pred, c.target, N, C, H, W, c.dloss);
    char name[96];
    snprintf(name, sizeof(name), "spectral dpred %dx%dx%dx%d target std %g", N, C, H, W, (double)target_std);
    fd_check(name, c.pred, dp, n, spectral_ctx_loss, &c, 80, eps, FD_TOL);
    free(c.pred), free(c.target), free(cache), free(dp);
}

static void test_spectral_fd(void) {
    spectral_fd_case(1, 2, 6, 8, 0.0f, 1e-2f, 60);   // even W: DC and Nyquist columns
    spectral_fd_case(2, 1, 5, 7, 0.0f, 1e-2f, 70);   // odd H and W: DC column only
    spectral_fd_case(1, 1, 7, 6, 0.0f, 1e-2f, 80);
    spectral_fd_case(1, 1, 8, 8, 1.0f, 2e-3f, 90);   // both signs of the log-magnitude difference
    spectral_fd_case(1, 1, 5, 9, 1.0f, 2e-3f, 100);
}

// ===================================== conventions =====================================

// backward adds into dpred; NULL dpred is skipped; a cache-less forward gives the same loss
static void test_backward_accumulates(void) {
    const int N = 2, C = 2, H = 12, W = 14;
    size_t n = (size_t)N * C * H * W;
    float *p = uniform(n, 200), *t = uniform(n, 201), *base = randn(n, 202, 1.0f);
    float *sc = zeros(ssim_cache_floats(N, C, H, W)), *fc = zeros(spectral_cache_floats(N, C, H, W));
    float *g = zeros(n), *acc = xmalloc(n * sizeof(float)), *want = xmalloc(n * sizeof(float));
    for (int which = 0; which < 2; which++) {
        const char *what = which ? "spectral" : "ssim";
        float l1 = which ? spectral_loss_forward(fc, p, t, N, C, H, W) : ssim_loss_forward(sc, p, t, N, C, H, W, 2.0f);
        float l0 = which ? spectral_loss_forward(NULL, p, t, N, C, H, W) : ssim_loss_forward(NULL, p, t, N, C, H, W, 2.0f);
        EXPECT(l0 == l1, "%s: the loss with and without a cache differs: %.9g vs %.9g", what, l0, l1);
        memset(g, 0, n * sizeof(float));
        memcpy(acc, base, n * sizeof(float));
        if (which) {
            spectral_loss_backward(g, fc, p, t, N, C, H, W, 0.5f);
            spectral_loss_backward(acc, fc, p, t, N, C, H, W, 0.5f);
            spectral_loss_backward(NULL, fc, p, t, N, C, H, W, 0.5f);
        } else {
            ssim_loss_backward(g, sc, p, t, N, C, H, W, 2.0f, 0.5f);
            ssim_loss_backward(acc, sc, p, t, N, C, H, W, 2.0f, 0.5f);
            ssim_loss_backward(NULL, sc, p, t, N, C, H, W, 2.0f, 0.5f);
        }
        double gmax = 0;
        for (size_t i = 0; i < n; i++) want[i] = base[i] + g[i], gmax = fmax(gmax, fabs(g[i]));
        EXPECT(gmax > 0, "%s: the gradient is all zero", what);
        char name[64];
        snprintf(name, sizeof(name), "%s backward adds into dpred", what);
        EXPECT_CLOSE(name, acc, want, n, 0, 0);  // the same float additions
    }
    free(p), free(t), free(base), free(sc), free(fc), free(g), free(acc), free(want);
}

int main(void) {
    RUN(test_ssim_fixture);
    RUN(test_ssim_direct);
    RUN(test_ssim_fd);
    RUN(test_spectral_fixture);
    RUN(test_spectral_direct);
    RUN(test_spectral_fd);
    RUN(test_backward_accumulates);
    return tl_finish();
}
