// test_cuda_losses2.c: the CUDA SSIM and spectral losses (common/cuda/losses2.cu) against the CPU
// (common/ops/ssim_loss.c, spectral_loss.c): the loss, the whole cache, and the backward (into a
// random dpred, so += is tested) on three shapes (one with odd W), and cache-less forwards.
// Tolerance |gpu - cpu| <= 1e-4 + 1e-4 |cpu| for losses and gradients; caches see the comments
// at cache_close(). Without a GPU (or a CUDA build) every test says so and skips.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cuda/cuda.h"
#include "ops/losses2.h"
#include "testlib.h"

#define ATOL 1e-4
#define RTOL 1e-4
#define DATA_RANGE 2.0f

static unsigned long long seed = 101;

typedef struct {
    int N, C, H, W;
} Shape;
static const Shape shapes[] = {{2, 1, 32, 32}, {3, 2, 24, 17}, {2, 1, 64, 64}};
#define NSHAPES (int)(sizeof(shapes) / sizeof(shapes[0]))

static int need_gpu(void) {
    if (cuda_available()) return 1;
    tl_skip("no CUDA GPU here (or a build without nvcc): the CPU reference is all there is");
    return 0;
}

static float *rnd(size_t n, float std) {
    float *x = xmalloc((n ? n : 1) * sizeof(float));
    fill_randn(x, n, seed++, std);
    return x;
}
static float *up(const float *h, size_t n) {
    float *d = cuda_malloc((n ? n : 1) * sizeof(float));
    cuda_upload(d, h, n * sizeof(float));
    return d;
}
static void same(const char *what, const float *dev, const float *cpu, size_t n, double atol, double rtol) {
    float *h = xmalloc((n ? n : 1) * sizeof(float));
    cuda_download(h, dev, n * sizeof(float));
    EXPECT_CLOSE(what, h, cpu, n, atol, rtol);
    free(h);
}
static void same_loss(const char *what, float gpu, float cpu) { EXPECT_CLOSE(what, &gpu, &cpu, 1, ATOL, RTOL); }
static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

// Caches hold d(loss)/d(...) scaled by 1/(N C positions), values of 1e-4 and below, where a plain
// atol of 1e-4 would accept anything: they are compared at 1e-4 relative to their own scale,
// |gpu - cpu| <= 1e-4 max|cpu| + 1e-4 |cpu|.
// SSIM: both sides compute in double and round once to float, so they agree to an ulp or two.
// Spectral: cuFFT and FFTW are single precision, each bin off by ~ eps log2(HW) rms|F|
// (~1e-5 here, rms|F| ~ 20-40), so an entry g F_p/|F_p| is off by ~1e-5/|F_p| relative: under
// 1e-4 unless |F_p| < ~0.1, a bin whose entry (|g| = mult/M/(1+|F_p|), near the largest) the
// 1e-4 max|cpu| term covers. (A bin with log1p|F_p| within ~1e-6 of log1p|F_t| could flip the
// sign of its entry; with these seeds and |F_p - F_t| ~ 0.1 sqrt(HW) that is a ~1e-2 chance in all.)
static void cache_close(const char *what, const float *dev, const float *cpu, size_t n) {
    same(what, dev, cpu, n, 1e-4 * max_abs(cpu, n), RTOL);
}

// pred = tanh(randn) in (-1, 1), target = pred + 0.1 randn: non-trivial, correlated
static void make_inputs(Shape sh, float **pred, float **target) {
    size_t n = (size_t)sh.N * sh.C * sh.H * sh.W;
    float *p = rnd(n, 1.0f), *t = rnd(n, 0.1f);
    for (size_t i = 0; i < n; i++) p[i] = tanhf(p[i]), t[i] += p[i];
    *pred = p, *target = t;
}

// dloss such that the largest |dloss * d(loss)/d(pred)| is 1 (the raw gradients are ~1/(N C H W),
// below the tolerance's atol); grad: the CPU backward into zeros with dloss = 1
static float unit_dloss(const float *grad, size_t n) {
    double m = max_abs(grad, n);
    return m > 0 ? (float)(1.0 / m) : 1.0f;
}

static void ssim_case(Shape sh) {
    const int N = sh.N, C = sh.C, H = sh.H, W = sh.W;
    size_t n = (size_t)N * C * H * W, nc = ssim_cache_floats(N, C, H, W);
    float *p, *t;
    make_inputs(sh, &p, &t);
    float *cache = xmalloc(nc * sizeof(float)), *g0 = xcalloc(n, sizeof(float)), *dp = rnd(n, 0.5f);
    float *p_d = up(p, n), *t_d = up(t, n), *dp_d = up(dp, n), *cache_d = cuda_malloc(nc * sizeof(float));
    char what[128];

    float loss = ssim_loss_forward(cache, p, t, N, C, H, W, DATA_RANGE);
    float loss_d = ssim_loss_forward_cuda(cache_d, p_d, t_d, N, C, H, W, DATA_RANGE, NULL);
    snprintf(what, sizeof(what), "ssim loss %dx%dx%dx%d", N, C, H, W);
    same_loss(what, loss_d, loss);
    EXPECT(loss > 0.01f && loss < 1.5f, "ssim loss %g: the inputs should make it non-trivial", (double)loss);
    snprintf(what, sizeof(what), "ssim cache %dx%dx%dx%d", N, C, H, W);
    cache_close(what, cache_d, cache, nc);

    ssim_loss_backward(g0, cache, p, t, N, C, H, W, DATA_RANGE, 1.0f);
    float dloss = unit_dloss(g0, n);
    ssim_loss_backward(dp, cache, p, t, N, C, H, W, DATA_RANGE, dloss);
    ssim_loss_backward_cuda(dp_d, cache_d, p_d, t_d, N, C, H, W, DATA_RANGE, dloss, NULL);
    snprintf(what, sizeof(what), "ssim dpred %dx%dx%dx%d (+= into random)", N, C, H, W);
    same(what, dp_d, dp, n, ATOL, RTOL);

    free(p), free(t), free(cache), free(g0), free(dp);
    cuda_free(p_d), cuda_free(t_d), cuda_free(dp_d), cuda_free(cache_d);
}

static void spectral_case(Shape sh) {
    const int N = sh.N, C = sh.C, H = sh.H, W = sh.W;
    size_t n = (size_t)N * C * H * W, nc = spectral_cache_floats(N, C, H, W);
    float *p, *t;
    make_inputs(sh, &p, &t);
    float *cache = xmalloc(nc * sizeof(float)), *g0 = xcalloc(n, sizeof(float)), *dp = rnd(n, 0.5f);
    float *p_d = up(p, n), *t_d = up(t, n), *dp_d = up(dp, n), *cache_d = cuda_malloc(nc * sizeof(float));
    char what[128];

    float loss = spectral_loss_forward(cache, p, t, N, C, H, W);
    float loss_d = spectral_loss_forward_cuda(cache_d, p_d, t_d, N, C, H, W, NULL);
    snprintf(what, sizeof(what), "spectral loss %dx%dx%dx%d", N, C, H, W);
    same_loss(what, loss_d, loss);
    EXPECT(loss > 0.01f, "spectral loss %g: the inputs should make it non-trivial", (double)loss);
    snprintf(what, sizeof(what), "spectral cache %dx%dx%dx%d", N, C, H, W);
    cache_close(what, cache_d, cache, nc);

    spectral_loss_backward(g0, cache, p, t, N, C, H, W, 1.0f);
    float dloss = unit_dloss(g0, n);
    spectral_loss_backward(dp, cache, p, t, N, C, H, W, dloss);
    spectral_loss_backward_cuda(dp_d, cache_d, p_d, t_d, N, C, H, W, dloss, NULL);
    snprintf(what, sizeof(what), "spectral dpred %dx%dx%dx%d (+= into random)", N, C, H, W);
    same(what, dp_d, dp, n, ATOL, RTOL);

    free(p), free(t), free(cache), free(g0), free(dp);
    cuda_free(p_d), cuda_free(t_d), cuda_free(dp_d), cuda_free(cache_d);
}

static void test_ssim(void) {
    if (!need_gpu()) return;
    for (int i = 0; i < NSHAPES; i++) ssim_case(shapes[i]);
}

static void test_spectral(void) {
    if (!need_gpu()) return;
    for (int i = 0; i < NSHAPES; i++) spectral_case(shapes[i]);
}

// forwards without a cache (evaluation) give the same losses, twice in a row (the reduction is
// reset), and backwards with dpred = NULL do nothing
static void test_no_cache(void) {
    if (!need_gpu()) return;
    for (int i = 0; i < NSHAPES; i++) {
        Shape sh = shapes[i];
        const int N = sh.N, C = sh.C, H = sh.H, W = sh.W;
        size_t n = (size_t)N * C * H * W;
        float *p, *t;
        make_inputs(sh, &p, &t);
        float *p_d = up(p, n), *t_d = up(t, n);
        char what[128];
        float ls = ssim_loss_forward(NULL, p, t, N, C, H, W, DATA_RANGE);
        float lf = spectral_loss_forward(NULL, p, t, N, C, H, W);
        for (int rep = 0; rep < 2; rep++) {
            snprintf(what, sizeof(what), "ssim loss, no cache, %dx%dx%dx%d (call %d)", N, C, H, W, rep + 1);
            same_loss(what, ssim_loss_forward_cuda(NULL, p_d, t_d, N, C, H, W, DATA_RANGE, NULL), ls);
            snprintf(what, sizeof(what), "spectral loss, no cache, %dx%dx%dx%d (call %d)", N, C, H, W, rep + 1);
            same_loss(what, spectral_loss_forward_cuda(NULL, p_d, t_d, N, C, H, W, NULL), lf);
        }
        ssim_loss_backward_cuda(NULL, NULL, p_d, t_d, N, C, H, W, DATA_RANGE, 1.0f, NULL);
        spectral_loss_backward_cuda(NULL, NULL, p_d, t_d, N, C, H, W, 1.0f, NULL);
        cuda_sync();
        free(p), free(t);
        cuda_free(p_d), cuda_free(t_d);
    }
}

int main(void) {
    RUN(test_ssim);
    RUN(test_spectral);
    RUN(test_no_cache);
    return tl_finish();
}
