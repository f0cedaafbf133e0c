// losses2.cu: the CUDA twins of ops/ssim_loss.c and ops/spectral_loss.c (see ops/losses2.h): same
// math, same cache layout, same semantics (a forward returns the mean loss, synchronising to do
// so, and fills the cache unless it is NULL; a backward adds dloss * d(loss)/d(pred), skipping a
// NULL dpred). Filtering and the loss sums are in double as on the CPU; the spectral loss runs
// over cuFFT (fp32, as FFTW's single precision on the CPU). Scratch memory is stream-ordered
// (cudaMallocAsync / cudaFreeAsync on the op's stream).
#include <cufft.h>
#include <pthread.h>

#include "cuda_common.cuh"

#define CHECK_CUFFT(x)                                                                     \
    do {                                                                                   \
        cufftResult r_ = (x);                                                              \
        if (r_ != CUFFT_SUCCESS) DIE("cuFFT: %s: status %d", #x, (int)r_);                 \
    } while (0)

#define SSIM_R (SSIM_WIN / 2)
#define RED_BLOCKS 1024  // grid cap of the kernels that reduce (one atomicAdd per block)

static inline unsigned grid_red(size_t n) {
    unsigned g = grid_for(n);
    return g > RED_BLOCKS ? RED_BLOCKS : g;
}

// stream-ordered scratch
static void *scratch_alloc(size_t bytes, cudaStream_t s) {
    void *p = NULL;
    CHECK_CUDA(cudaMallocAsync(&p, bytes ? bytes : 1, s));
    return p;
}

// ===================================== SSIM =====================================

struct SsimWin {
    double w[SSIM_WIN];
};

// as ssim_loss.c's gauss_window()
static SsimWin gauss_window(void) {
    SsimWin g;
    double sum = 0.0;
    for (int k = 0; k < SSIM_WIN; k++) {
        double c = k - SSIM_R;
        g.w[k] = exp(-c * c / (2.0 * SSIM_SIGMA * SSIM_SIGMA));
        sum += g.w[k];
    }
    for (int k = 0; k < SSIM_WIN; k++) g.w[k] /= sum;
    return g;
}

static void ssim_check_dims(const char *fn, int N, int C, int H, int W, float data_range) {
    CHECK(N > 0 && C > 0, "%s: empty batch (N %d, C %d)", fn, N, C);
    CHECK(H >= SSIM_WIN && W >= SSIM_WIN,
          "%s: image %dx%d is smaller than the %dx%d SSIM window; use a smaller window or larger images", fn, H, W,
          SSIM_WIN, SSIM_WIN);
    CHECK(data_range > 0.0f, "%s: data_range %g must be positive (2 for images in [-1, 1])", fn, (double)data_range);
}

// horizontal pass: one thread per (nc, i, ox); h (NC, 5, H, OW): the filtered p, t, pp, tt, pt
__global__ void ssim_hpass(double *h, const float *p, const float *t, SsimWin g, int NC, int H, int W, int OW) {
    const size_t HO = (size_t)H * OW, n = (size_t)NC * HO;
    GRID_STRIDE(idx, n) {
        size_t nc = idx / HO, rem = idx % HO;  // rem = i * OW + ox
        size_t i = rem / OW, ox = rem % OW;
        const float *pr = p + nc * H * W + i * W + ox, *tr = t + nc * H * W + i * W + ox;
        double sp = 0, st = 0, spp = 0, stt = 0, spt = 0;
        for (int k = 0; k < SSIM_WIN; k++) {
            double a = pr[k], b = tr[k], wk = g.w[k];
            sp += wk * a, st += wk * b, spp += wk * a * a, stt += wk * b * b, spt += wk * a * b;
        }
        double *hn = h + nc * 5 * HO + rem;
        hn[0] = sp, hn[HO] = st, hn[2 * HO] = spp, hn[3 * HO] = stt, hn[4 * HO] = spt;
    }
}

// vertical pass and the SSIM map: one thread per (nc, oy, ox); acc[0] += sum S; cache (NC, 3, OH, OW)
// gets scale * dS/d{mu_p, m_pp, m_pt} when not NULL (as ssim_plane())
__global__ void ssim_vpass(double *acc, float *cache, const double *h, SsimWin g, int NC, int H, int OH, int OW,
                           double C1, double C2, double scale) {
    const size_t HO = (size_t)H * OW, P = (size_t)OH * OW, n = (size_t)NC * P;
    double total = 0.0;
    GRID_STRIDE(idx, n) {
        size_t nc = idx / P, o = idx % P;  // o = oy * OW + ox
        size_t oy = o / OW, ox = o % OW;
        const double *hp = h + nc * 5 * HO, *ht = hp + HO, *hpp = hp + 2 * HO, *htt = hp + 3 * HO, *hpt = hp + 4 * HO;
        double mp = 0, mt = 0, mpp = 0, mtt = 0, mpt = 0;
        for (int k = 0; k < SSIM_WIN; k++) {
            size_t q = (oy + k) * OW + ox;
            double wk = g.w[k];
            mp += wk * hp[q], mt += wk * ht[q], mpp += wk * hpp[q], mtt += wk * htt[q], mpt += wk * hpt[q];
        }
        double A1 = 2.0 * mp * mt + C1, B1 = mp * mp + mt * mt + C1;
        double A2 = 2.0 * (mpt - mp * mt) + C2, B2 = (mpp - mp * mp) + (mtt - mt * mt) + C2;
        double inv = 1.0 / (B1 * B2), S = A1 * A2 * inv;
        total += S;
        if (cache) {
            float *gc = cache + nc * 3 * P + o;
            gc[0] = (float)(scale * (2.0 * mt * (A2 - A1) * inv - 2.0 * mp * S * (1.0 / B1 - 1.0 / B2)));
            gc[P] = (float)(scale * (-S / B2));
            gc[2 * P] = (float)(scale * (2.0 * A1 * inv));
        }
    }
    total = block_sum(total);
    if (threadIdx.x == 0) atomicAdd(acc, total);
}

extern "C" float ssim_loss_forward_cuda(float *cache, const float *pred, const float *target, int N, int C, int H,
                                        int W, float data_range, cudaStream_t s) {
    ssim_check_dims("ssim_loss_forward_cuda", N, C, H, W, data_range);
    const SsimWin g = gauss_window();
    const int OH = H - 2 * SSIM_R, OW = W - 2 * SSIM_R, NC = N * C;
    const size_t P = (size_t)OH * OW;
    const double C1 = (SSIM_K1 * data_range) * (SSIM_K1 * data_range);
    const double C2 = (SSIM_K2 * data_range) * (SSIM_K2 * data_range);
    const double scale = -1.0 / ((double)NC * (double)P);  // d(1 - mean S)/dS
    double *acc = cuda_reduce_buffer(1);
    CHECK_CUDA(cudaMemsetAsync(acc, 0, sizeof(double), s));
    const size_t nh = (size_t)NC * H * OW, nv = (size_t)NC * P;
    double *h = (double *)scratch_alloc(5 * nh * sizeof(double), s);  // (NC, 5, H, OW)
    ssim_hpass<<<grid_for(nh), THREADS, 0, s>>>(h, pred, target, g, NC, H, W, OW);
    CHECK_LAUNCH();
    ssim_vpass<<<grid_red(nv), THREADS, 0, s>>>(acc, cache, h, g, NC, H, OH, OW, C1, C2, scale);
    CHECK_LAUNCH();
    CHECK_CUDA(cudaFreeAsync(h, s));
    double total;
    CHECK_CUDA(cudaMemcpyAsync(&total, acc, sizeof(double), cudaMemcpyDeviceToHost, s));
    CHECK_CUDA(cudaStreamSynchronize(s));
    return (float)(1.0 - total / ((double)NC * (double)P));
}

// G^T's horizontal half: one thread per (nc, m, oy, j); r (NC, 3, OH, W),
// r[nc][m][oy][j] = sum_ox w[j - ox] g[nc][m][oy][ox] over 0 <= ox < OW, 0 <= j - ox < SSIM_WIN
__global__ void ssim_bwd_hpass(double *r, const float *cache, SsimWin g, int NC, int OH, int OW, int W) {
    const size_t OHW = (size_t)OH * W, P = (size_t)OH * OW, n = (size_t)NC * 3 * OHW;
    GRID_STRIDE(idx, n) {
        size_t plane = idx / OHW, rem = idx % OHW;  // plane = nc * 3 + m, rem = oy * W + j
        int oy = (int)(rem / W), j = (int)(rem % W);
        const float *gr = cache + plane * P + (size_t)oy * OW;  // cache + nc*3*P + m*P + oy*OW
        int lo = j - 2 * SSIM_R > 0 ? j - 2 * SSIM_R : 0, hi = j < OW - 1 ? j : OW - 1;
        double acc = 0.0;
        for (int ox = lo; ox <= hi; ox++) acc += g.w[j - ox] * gr[ox];
        r[idx] = acc;  // r + plane * OHW + rem
    }
}

// G^T's vertical half and the combination: one thread per (nc, i, j);
// dp += dloss * (s0 + 2 p s1 + t s2), s_m = sum_oy w[i - oy] r[nc][m][oy][j]
__global__ void ssim_bwd_vpass(float *dpred, const double *r, const float *p, const float *t, SsimWin g, int NC, int H,
                               int W, int OH, float dloss) {
    const size_t HW = (size_t)H * W, OHW = (size_t)OH * W, n = (size_t)NC * HW;
    GRID_STRIDE(idx, n) {
        size_t nc = idx / HW, rem = idx % HW;  // rem = i * W + j
        int i = (int)(rem / W), j = (int)(rem % W);
        const double *rn = r + nc * 3 * OHW;
        int lo = i - 2 * SSIM_R > 0 ? i - 2 * SSIM_R : 0, hi = i < OH - 1 ? i : OH - 1;
        double s0 = 0, s1 = 0, s2 = 0;
        for (int oy = lo; oy <= hi; oy++) {
            size_t o = (size_t)oy * W + j;
            double wk = g.w[i - oy];
            s0 += wk * rn[o], s1 += wk * rn[OHW + o], s2 += wk * rn[2 * OHW + o];
        }
        dpred[idx] += dloss * (float)(s0 + 2.0 * p[idx] * s1 + t[idx] * s2);
    }
}

extern "C" void ssim_loss_backward_cuda(float *dpred, const float *cache, const float *pred, const float *target,
                                        int N, int C, int H, int W, float data_range, float dloss, cudaStream_t s) {
    if (!dpred) return;
    ssim_check_dims("ssim_loss_backward_cuda", N, C, H, W, data_range);
    const SsimWin g = gauss_window();
    const int OH = H - 2 * SSIM_R, OW = W - 2 * SSIM_R, NC = N * C;
    const size_t nr = (size_t)NC * 3 * OH * W, np = (size_t)NC * H * W;
    double *r = (double *)scratch_alloc(nr * sizeof(double), s);  // (NC, 3, OH, W)
    ssim_bwd_hpass<<<grid_for(nr), THREADS, 0, s>>>(r, cache, g, NC, OH, OW, W);
    CHECK_LAUNCH();
    ssim_bwd_vpass<<<grid_for(np), THREADS, 0, s>>>(dpred, r, pred, target, g, NC, H, W, OH, dloss);
    CHECK_LAUNCH();
    CHECK_CUDA(cudaFreeAsync(r, s));
}

// =================================== spectral ===================================

// Plans per (H, W, NC), made once: r2c over 2*NC planes (pred's then target's, one exec) and c2r
// over NC planes, basic (packed) layouts: real (B, H, W) <-> complex (B, H, W/2+1).
#define MAX_PLANS 32
static pthread_mutex_t plan_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    int H, W, NC;
    cufftHandle r2c, c2r;
} plans[MAX_PLANS];

// the plans for (H, W, NC), bound to stream s; the caller holds plan_lock until its exec is queued
// (a plan has one stream)
static void plans_for(int H, int W, int NC, cudaStream_t s, cufftHandle *r2c, cufftHandle *c2r) {
    int i = 0;
    while (i < MAX_PLANS && plans[i].H && !(plans[i].H == H && plans[i].W == W && plans[i].NC == NC)) i++;
    CHECK(i < MAX_PLANS, "spectral loss (CUDA): more than %d (H, W, N*C) shapes in one process", MAX_PLANS);
    if (!plans[i].H) {
        int n[2] = {H, W};
        CHECK_CUFFT(cufftPlanMany(&plans[i].r2c, 2, n, NULL, 1, 0, NULL, 1, 0, CUFFT_R2C, 2 * NC));
        CHECK_CUFFT(cufftPlanMany(&plans[i].c2r, 2, n, NULL, 1, 0, NULL, 1, 0, CUFFT_C2R, NC));
        plans[i].W = W, plans[i].NC = NC;
        plans[i].H = H;
    }
    CHECK_CUFFT(cufftSetStream(plans[i].r2c, s));
    CHECK_CUFFT(cufftSetStream(plans[i].c2r, s));
    *r2c = plans[i].r2c;
    *c2r = plans[i].c2r;
}

static void spectral_check_dims(const char *fn, int N, int C, int H, int W) {
    CHECK(N > 0 && C > 0 && H > 0 && W > 0, "%s: empty tensor (N %d, C %d, H %d, W %d)", fn, N, C, H, W);
}

static __device__ inline bool self_conjugate(int v, int W) { return v == 0 || (W % 2 == 0 && v == W / 2); }

// one thread per half-spectrum bin (nc, u, v), as spectral_plane(): acc[0] += m(v) |d|; cache (NC, H, Wh)
// complex, interleaved floats (indexed as floats: the caller's pointer need not be 8-byte aligned),
// gets the c2r input of the gradient, before the Hermitian fix
__global__ void spectral_terms(double *acc, float *cache, const float2 *fp, const float2 *ft, int W, size_t n,
                               int Wh, double inv_M) {
    double total = 0.0;
    GRID_STRIDE(idx, n) {  // idx = (nc * H + u) * Wh + v: the same index in fp, ft and cache
        int v = (int)(idx % Wh);
        bool sc = self_conjugate(v, W);
        double mult = sc ? 1.0 : 2.0;
        float2 a = fp[idx], b = ft[idx];
        double ap = hypot((double)a.x, (double)a.y), at = hypot((double)b.x, (double)b.y);
        double d = log1p(ap) - log1p(at);
        total += mult * fabs(d);
        if (cache) {
            double g = (d > 0 ? inv_M : d < 0 ? -inv_M : 0.0) * mult / (1.0 + ap);
            g = ap > 0.0 ? g / ap : 0.0;
            if (!sc) g *= 0.5;  // c2r doubles the interior columns
            cache[2 * idx] = (float)(g * (double)a.x), cache[2 * idx + 1] = (float)(g * (double)a.y);
        }
    }
    total = block_sum(total);
    if (threadIdx.x == 0) atomicAdd(acc, total);
}

// hermitian_column() for column v = 0 and (W even) v = W/2: one thread per (nc, column, u),
// u in [0, H/2]; the pairs (u, (H-u)%H) are disjoint over that range (u = 0 and u = H/2 pair with
// themselves), so no two threads touch the same bin
__global__ void spectral_hermitian(float *x, int NC, int H, int W, int Wh, int ncols) {
    const int U = H / 2 + 1;
    const size_t n = (size_t)NC * ncols * U, HWh = (size_t)H * Wh;
    GRID_STRIDE(idx, n) {
        int u = (int)(idx % U), col = (int)(idx / U % ncols);
        size_t nc = idx / ((size_t)U * ncols);
        int v = col == 0 ? 0 : W / 2;
        float *xn = x + nc * 2 * HWh;
        size_t a = 2 * ((size_t)u * Wh + v), b = 2 * ((size_t)((H - u) % H) * Wh + v);  // float offsets
        float hr = 0.5f * (xn[a] + xn[b]), hi = 0.5f * (xn[a + 1] - xn[b + 1]);  // h = (x[a] + conj x[b]) / 2
        xn[a] = hr, xn[a + 1] = hi;
        xn[b] = hr, xn[b + 1] = -hi;  // conj h (when a == b this is the value left, as on the CPU)
    }
}

extern "C" float spectral_loss_forward_cuda(float *cache, const float *pred, const float *target, int N, int C, int H,
                                            int W, cudaStream_t s) {
    spectral_check_dims("spectral_loss_forward_cuda", N, C, H, W);
    const int NC = N * C, Wh = W / 2 + 1;
    const size_t HW = (size_t)H * W, HWh = (size_t)H * Wh, nr = (size_t)NC * HW, nh = (size_t)NC * HWh;
    const double inv_M = 1.0 / ((double)NC * (double)HW);
    double *acc = cuda_reduce_buffer(1);
    CHECK_CUDA(cudaMemsetAsync(acc, 0, sizeof(double), s));
    // (2, NC, H, W): pred then target, the batched r2c's input (declared non-const, so a copy)
    float *in = (float *)scratch_alloc(2 * nr * sizeof(float), s);
    float2 *spec = (float2 *)scratch_alloc(2 * nh * sizeof(float2), s);  // (2, NC, H, Wh): F_pred, F_target
    CHECK_CUDA(cudaMemcpyAsync(in, pred, nr * sizeof(float), cudaMemcpyDeviceToDevice, s));
    CHECK_CUDA(cudaMemcpyAsync(in + nr, target, nr * sizeof(float), cudaMemcpyDeviceToDevice, s));
    cufftHandle r2c, c2r;
    pthread_mutex_lock(&plan_lock);
    plans_for(H, W, NC, s, &r2c, &c2r);
    CHECK_CUFFT(cufftExecR2C(r2c, (cufftReal *)in, (cufftComplex *)spec));
    pthread_mutex_unlock(&plan_lock);
    spectral_terms<<<grid_red(nh), THREADS, 0, s>>>(acc, cache, spec, spec + nh, W, nh, Wh, inv_M);
    CHECK_LAUNCH();
    if (cache) {
        const int ncols = W % 2 == 0 && W > 1 ? 2 : 1;
        const size_t n = (size_t)NC * ncols * (H / 2 + 1);
        spectral_hermitian<<<grid_for(n), THREADS, 0, s>>>(cache, NC, H, W, Wh, ncols);
        CHECK_LAUNCH();
    }
    CHECK_CUDA(cudaFreeAsync(in, s));
    CHECK_CUDA(cudaFreeAsync(spec, s));
    double total;
    CHECK_CUDA(cudaMemcpyAsync(&total, acc, sizeof(double), cudaMemcpyDeviceToHost, s));
    CHECK_CUDA(cudaStreamSynchronize(s));
    return (float)(total * inv_M);
}

__global__ void spectral_add_scaled(float *dp, const float *out, size_t n, float dloss) {
    GRID_STRIDE(i, n) dp[i] += dloss * out[i];
}

extern "C" void spectral_loss_backward_cuda(float *dpred, const float *cache, const float *pred, const float *target,
                                            int N, int C, int H, int W, float dloss, cudaStream_t s) {
    if (!dpred) return;
    spectral_check_dims("spectral_loss_backward_cuda", N, C, H, W);
    const int NC = N * C;
    const size_t nr = (size_t)NC * H * W, nh = (size_t)NC * H * (W / 2 + 1);
    float2 *x = (float2 *)scratch_alloc(nh * sizeof(float2), s);  // (NC, H, Wh): c2r destroys its input
    float *out = (float *)scratch_alloc(nr * sizeof(float), s);   // (NC, H, W)
    CHECK_CUDA(cudaMemcpyAsync(x, cache, nh * sizeof(float2), cudaMemcpyDeviceToDevice, s));
    cufftHandle r2c, c2r;
    pthread_mutex_lock(&plan_lock);
    plans_for(H, W, NC, s, &r2c, &c2r);
    CHECK_CUFFT(cufftExecC2R(c2r, (cufftComplex *)x, (cufftReal *)out));
    pthread_mutex_unlock(&plan_lock);
    spectral_add_scaled<<<grid_for(nr), THREADS, 0, s>>>(dpred, out, nr, dloss);
    CHECK_LAUNCH();
    CHECK_CUDA(cudaFreeAsync(x, s));
    CHECK_CUDA(cudaFreeAsync(out, s));
}
