// spectral_loss.c: L1 between log(1 + |FFT2|) of pred and target per (n, c) plane (see losses2.h),
// from FFTW's single-precision r2c half spectrum. Its backward adds (+=) dloss * d(loss)/d(pred).
//
// With F = r2c(x) (H, Wh = W/2+1), m(v) = 1 for v = 0 and v = W/2 (W even), 2 otherwise, and
// M = N*C*H*W:  loss = (1/M) sum_planes sum_{u, v < Wh} m(v) |log1p|F_p| - log1p|F_t||.
// Gradient: with Gr + i Gi = d(loss)/d(Re F) + i d(loss)/d(Im F)
//   = m(v)/M * sign(d) / (1 + |F_p|) * F_p / |F_p|,
// dx[i,j] = Re sum_{u, v < Wh} G(u,v) exp(+2 pi i (u i/H + v j/W)), the adjoint of r2c. FFTW's c2r
// computes sum over the Hermitian-extended full spectrum, i.e. 2 Re(X e^{..}) for each interior
// column and Re(...) for the self-conjugate columns v = 0, W/2, so the forward caches X = G/2 in
// the interior columns and the Hermitian part (G(u) + conj G(-u))/2 in the self-conjugate ones
// (the same real part, and a well-defined c2r input), and the backward is one c2r.
//
// FFTW: one r2c and one c2r plan per (H, W), made once under a lock with FFTW_ESTIMATE and run with
// the new-array execute functions (the FFTW calls documented as thread-safe) on per-thread
// fftwf_malloc'd buffers, so the planning alignment always holds.
#include <complex.h>
#include <fftw3.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "check.h"
#include "ops/losses2.h"

// ---- plans ----
#define MAX_SHAPES 32  // training uses one or two; the tests a dozen
static pthread_mutex_t plan_lock = PTHREAD_MUTEX_INITIALIZER;
static struct { int H, W; fftwf_plan r2c, c2r; } plans[MAX_SHAPES];

static void plans_for(int H, int W, fftwf_plan *r2c, fftwf_plan *c2r) {
    pthread_mutex_lock(&plan_lock);
    int i = 0;
    while (i < MAX_SHAPES && plans[i].H && !(plans[i].H == H && plans[i].W == W)) i++;
    CHECK(i < MAX_SHAPES, "spectral loss: more than %d image shapes in one process", MAX_SHAPES);
    if (!plans[i].H) {
        size_t Wh = (size_t)W / 2 + 1;
        float *r = fftwf_malloc(sizeof(float) * (size_t)H * W);
        fftwf_complex *c = fftwf_malloc(sizeof(fftwf_complex) * (size_t)H * Wh);
        CHECK(r && c, "spectral loss: out of memory for an FFTW plan of %dx%d", H, W);
        plans[i].r2c = fftwf_plan_dft_r2c_2d(H, W, r, c, FFTW_ESTIMATE);
        plans[i].c2r = fftwf_plan_dft_c2r_2d(H, W, c, r, FFTW_ESTIMATE);
        CHECK(plans[i].r2c && plans[i].c2r, "spectral loss: FFTW could not plan a %dx%d real DFT", H, W);
        fftwf_free(r);
        fftwf_free(c);
        plans[i].W = W;
        plans[i].H = H;
    }
    *r2c = plans[i].r2c;
    *c2r = plans[i].c2r;
    pthread_mutex_unlock(&plan_lock);
}

static void *fft_buffer(size_t bytes) {
    void *p = fftwf_malloc(bytes);
    CHECK(p, "spectral loss: out of memory for a %zu-byte FFT buffer", bytes);
    return p;
}

static void check_dims(const char *fn, int N, int C, int H, int W) {
    CHECK(N > 0 && C > 0 && H > 0 && W > 0, "%s: empty tensor (N %d, C %d, H %d, W %d)", fn, N, C, H, W);
}

size_t spectral_cache_floats(int N, int C, int H, int W) { return 2 * (size_t)N * C * H * ((size_t)W / 2 + 1); }

static inline int self_conjugate(int v, int W) { return v == 0 || (W % 2 == 0 && v == W / 2); }

// column v of x (H, Wh) <- its Hermitian part (x(u) + conj x(-u)) / 2, which has the same
// Re sum_u x(u) e^{+2 pi i u i/H} and is what c2r expects in a self-conjugate column
static void hermitian_column(fftwf_complex *x, int v, int H, int Wh) {
    for (int u = 0; u <= H / 2; u++) {
        size_t a = (size_t)u * Wh + v, b = (size_t)((H - u) % H) * Wh + v;
        float complex h = 0.5f * (x[a] + conjf(x[b]));
        x[a] = h;
        x[b] = conjf(h);
    }
}

// One plane: returns sum_{u,v} m(v) |d(u,v)|; fills x (H, Wh) with the c2r input of the gradient
// (see the top of the file) when x != NULL. fp, ft: (H, Wh) spectra of pred and target.
static double spectral_plane(fftwf_complex *x, const fftwf_complex *fp, const fftwf_complex *ft, int H, int W,
                             double inv_M) {
    const int Wh = W / 2 + 1;
    double total = 0.0;
    for (int u = 0; u < H; u++)
        for (int v = 0; v < Wh; v++) {
            size_t o = (size_t)u * Wh + v;
            double mult = self_conjugate(v, W) ? 1.0 : 2.0;
            double ap = cabs((double complex)fp[o]), at = cabs((double complex)ft[o]);
            double d = log1p(ap) - log1p(at);
            total += mult * fabs(d);
            if (!x) continue;
            // loss term mult/M |log1p|F_p| - log1p|F_t||: G = mult/M sign(d) / (1 + |F_p|) * F_p / |F_p|
            double g = (d > 0 ? inv_M : d < 0 ? -inv_M : 0.0) * mult / (1.0 + ap);
            g = ap > 0.0 ? g / ap : 0.0;
            if (!self_conjugate(v, W)) g *= 0.5;  // c2r doubles the interior columns
            x[o] = (float complex)(g * (double complex)fp[o]);
        }
    if (x) {
        hermitian_column(x, 0, H, Wh);
        if (W % 2 == 0 && W > 1) hermitian_column(x, W / 2, H, Wh);
    }
    return total;
}

float spectral_loss_forward(float *cache, const float *pred, const float *target, int N, int C, int H, int W) {
    check_dims("spectral_loss_forward", N, C, H, W);
    fftwf_plan r2c, c2r;
    plans_for(H, W, &r2c, &c2r);
    const int NC = N * C;
    const size_t HW = (size_t)H * W, HWh = (size_t)H * (W / 2 + 1);
    const double inv_M = 1.0 / ((double)NC * (double)HW);
    double total = 0.0;
#pragma omp parallel reduction(+ : total) if (NC > 1)
    {
        float *in = fft_buffer(sizeof(float) * HW);                           // (H, W)
        fftwf_complex *fp = fft_buffer(sizeof(fftwf_complex) * HWh);          // (H, W/2+1)
        fftwf_complex *ft = fft_buffer(sizeof(fftwf_complex) * HWh);          // (H, W/2+1)
#pragma omp for schedule(static)
        for (int nc = 0; nc < NC; nc++) {
            memcpy(in, pred + (size_t)nc * HW, sizeof(float) * HW);
            fftwf_execute_dft_r2c(r2c, in, fp);
            memcpy(in, target + (size_t)nc * HW, sizeof(float) * HW);
            fftwf_execute_dft_r2c(r2c, in, ft);
            fftwf_complex *x = cache ? (fftwf_complex *)(cache + (size_t)nc * 2 * HWh) : NULL;
            total += spectral_plane(x, fp, ft, H, W, inv_M);
        }
        fftwf_free(in);
        fftwf_free(fp);
        fftwf_free(ft);
    }
    return (float)(total * inv_M);
}

// In the forward pass this was: F_p = r2c(pred), loss = (1/M) sum m(v) |log1p|F_p| - log1p|F_t||;
// so dpred += dloss * c2r(X), X the cached half-spectrum gradient prepared for c2r (the adjoint of r2c).
void spectral_loss_backward(float *dpred, const float *cache, const float *pred, const float *target, int N,
                            int C, int H, int W, float dloss) {
    if (!dpred) return;
    check_dims("spectral_loss_backward", N, C, H, W);
    fftwf_plan r2c, c2r;
    plans_for(H, W, &r2c, &c2r);
    const int NC = N * C;
    const size_t HW = (size_t)H * W, HWh = (size_t)H * (W / 2 + 1);
#pragma omp parallel if (NC > 1)
    {
        fftwf_complex *x = fft_buffer(sizeof(fftwf_complex) * HWh);  // (H, W/2+1), c2r destroys it
        float *out = fft_buffer(sizeof(float) * HW);                  // (H, W)
#pragma omp for schedule(static)
        for (int nc = 0; nc < NC; nc++) {
            memcpy(x, cache + (size_t)nc * 2 * HWh, sizeof(fftwf_complex) * HWh);
            fftwf_execute_dft_c2r(c2r, x, out);
            float *dp = dpred + (size_t)nc * HW;
            for (size_t i = 0; i < HW; i++) dp[i] += dloss * out[i];
        }
        fftwf_free(x);
        fftwf_free(out);
    }
}
