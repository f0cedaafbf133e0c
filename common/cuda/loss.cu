// loss.cu: the CUDA twins of loss.c. Reductions sum in double into cuda_reduce_buffer(); a loss
// forward copies its value back to the host (and so waits for the GPU).
#include "cuda_common.cuh"
#include "ops/pointwise.h"

// acc[blockIdx.y] += sum over the row of f(i); rows of `per` elements, grid-stride within a row
template <typename F>
__global__ void row_sums(double *acc, size_t per, F f) {
    size_t row = blockIdx.y;
    double s = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < per; i += (size_t)gridDim.x * blockDim.x)
        s += f(row * per + i);
    s = block_sum(s);
    if (threadIdx.x == 0) atomicAdd(&acc[row], s);
}

// sums of f over `rows` rows of `per` elements each, into host doubles out[rows]
template <typename F>
static void sum_rows(double *out, int rows, size_t per, F f, cudaStream_t s) {
    double *acc = cuda_reduce_buffer(rows);
    CHECK_CUDA(cudaMemsetAsync(acc, 0, rows * sizeof(double), s));
    unsigned gx = grid_for(per);
    if (gx > 256) gx = 256;
    row_sums<<<dim3(gx, rows), THREADS, 0, s>>>(acc, per, f);
    CHECK_LAUNCH();
    CHECK_CUDA(cudaMemcpyAsync(out, acc, rows * sizeof(double), cudaMemcpyDeviceToHost, s));
    CHECK_CUDA(cudaStreamSynchronize(s));
}

struct SqDiff {
    const float *p, *t;
    __device__ double operator()(size_t i) const {
        double d = (double)p[i] - t[i];
        return d * d;
    }
};
struct SqDiffF {  // as mse_rows_forward: the difference in float, squared in double
    const float *p, *t;
    __device__ double operator()(size_t i) const {
        float d = p[i] - t[i];
        return (double)d * d;
    }
};
struct AbsDiff {
    const float *p, *t;
    __device__ double operator()(size_t i) const { return fabs((double)p[i] - t[i]); }
};
struct KlTerm {  // row n of moments (N, 2, CHW): mean^2 + exp(lv) - 1 - lv
    const float *m;
    size_t CHW;
    __device__ double operator()(size_t j) const {
        size_t n = j / CHW, i = j % CHW;
        const float *mean = m + n * 2 * CHW, *logvar = mean + CHW;
        float lv = clamp_logvar(logvar[i]);
        return (double)mean[i] * mean[i] + exp((double)lv) - 1.0 - lv;
    }
};

extern "C" float mse_forward_cuda(const float *pred, const float *target, size_t n, cudaStream_t s) {
    double sum;
    sum_rows(&sum, 1, n, SqDiff{pred, target}, s);
    return (float)(sum / (double)n);
}
__global__ void mse_bwd(float *dpred, const float *pred, const float *target, size_t n, float g) {
    GRID_STRIDE(i, n) dpred[i] += g * (pred[i] - target[i]);
}
extern "C" void mse_backward_cuda(float *dpred, const float *pred, const float *target, size_t n, float dloss,
                                  cudaStream_t s) {
    if (!dpred) return;
    mse_bwd<<<grid_for(n), THREADS, 0, s>>>(dpred, pred, target, n, 2.0f * dloss / (float)n);
    CHECK_LAUNCH();
}

__global__ void to_float_scaled(float *out, const double *in, int n, double scale) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = (float)(in[i] * scale);
}
extern "C" void mse_rows_forward_cuda(float *mse, const float *pred, const float *target, int N, size_t per,
                                      cudaStream_t s) {
    double *acc = cuda_reduce_buffer(N);
    CHECK_CUDA(cudaMemsetAsync(acc, 0, N * sizeof(double), s));
    unsigned gx = grid_for(per);
    if (gx > 256) gx = 256;
    row_sums<<<dim3(gx, N), THREADS, 0, s>>>(acc, per, SqDiffF{pred, target});
    CHECK_LAUNCH();
    to_float_scaled<<<grid_for(N), THREADS, 0, s>>>(mse, acc, N, 1.0 / (double)per);
    CHECK_LAUNCH();
}
__global__ void mse_rows_bwd(float *dpred, const float *pred, const float *target, const float *k, size_t n, size_t per) {
    GRID_STRIDE(i, n) dpred[i] += k[i / per] * (pred[i] - target[i]);
}
extern "C" void mse_rows_backward_cuda(float *dpred, const float *pred, const float *target, const float *k, int N,
                                       size_t per, cudaStream_t s) {
    if (!dpred) return;
    size_t n = (size_t)N * per;
    mse_rows_bwd<<<grid_for(n), THREADS, 0, s>>>(dpred, pred, target, k, n, per);
    CHECK_LAUNCH();
}

extern "C" float l1_forward_cuda(const float *pred, const float *target, size_t n, cudaStream_t s) {
    double sum;
    sum_rows(&sum, 1, n, AbsDiff{pred, target}, s);
    return (float)(sum / (double)n);
}
__global__ void l1_bwd(float *dpred, const float *pred, const float *target, size_t n, float g) {
    GRID_STRIDE(i, n) {
        float d = pred[i] - target[i];
        dpred[i] += d > 0.0f ? g : d < 0.0f ? -g : 0.0f;
    }
}
extern "C" void l1_backward_cuda(float *dpred, const float *pred, const float *target, size_t n, float dloss,
                                 cudaStream_t s) {
    if (!dpred) return;
    l1_bwd<<<grid_for(n), THREADS, 0, s>>>(dpred, pred, target, n, dloss / (float)n);
    CHECK_LAUNCH();
}

extern "C" float kl_forward_cuda(float *kl, const float *moments, int N, int C, int HW, cudaStream_t s) {
    size_t CHW = (size_t)C * HW;
    double *h = (double *)xmalloc((size_t)N * sizeof(double)), total = 0;
    // row n of KlTerm's index space is [n*CHW, (n+1)*CHW)
    sum_rows(h, N, CHW, KlTerm{moments, CHW}, s);
    float *kh = (float *)xmalloc((size_t)N * sizeof(float));
    for (int n = 0; n < N; n++) kh[n] = (float)(0.5 * h[n]), total += 0.5 * h[n];
    if (kl) cuda_upload(kl, kh, (size_t)N * sizeof(float));
    free(h), free(kh);
    return (float)(total / N);
}
__global__ void kl_bwd(float *dmoments, const float *moments, size_t n, size_t CHW, float g) {
    GRID_STRIDE(j, n) {
        size_t s = j / CHW, i = j % CHW;
        const float *mean = moments + s * 2 * CHW, *logvar = mean + CHW;
        float *dmean = dmoments + s * 2 * CHW, *dlogvar = dmean + CHW;
        dmean[i] += g * mean[i];
        if (logvar_in_range(logvar[i])) dlogvar[i] += g * 0.5f * (expf(logvar[i]) - 1.0f);
    }
}
extern "C" void kl_backward_cuda(float *dmoments, const float *moments, int N, int C, int HW, float dloss,
                                 cudaStream_t s) {
    if (!dmoments) return;
    size_t CHW = (size_t)C * HW, n = (size_t)N * CHW;
    kl_bwd<<<grid_for(n), THREADS, 0, s>>>(dmoments, moments, n, CHW, dloss / (float)N);
    CHECK_LAUNCH();
}

__global__ void gsample_fwd(float *z, const float *moments, const float *eps, size_t n, size_t CHW) {
    GRID_STRIDE(j, n) {
        size_t s = j / CHW, i = j % CHW;
        const float *mean = moments + s * 2 * CHW, *logvar = mean + CHW;
        z[j] = mean[i] + expf(0.5f * clamp_logvar(logvar[i])) * eps[j];
    }
}
__global__ void gsample_bwd(float *dmoments, const float *dz, const float *moments, const float *eps, size_t n,
                            size_t CHW) {
    GRID_STRIDE(j, n) {
        size_t s = j / CHW, i = j % CHW;
        const float *logvar = moments + s * 2 * CHW + CHW;
        float *dmean = dmoments + s * 2 * CHW, *dlogvar = dmean + CHW;
        dmean[i] += dz[j];
        if (logvar_in_range(logvar[i])) dlogvar[i] += dz[j] * eps[j] * 0.5f * expf(0.5f * logvar[i]);
    }
}
extern "C" void gaussian_sample_forward_cuda(float *z, const float *moments, const float *eps, int N, int C, int HW,
                                             cudaStream_t s) {
    size_t CHW = (size_t)C * HW, n = (size_t)N * CHW;
    gsample_fwd<<<grid_for(n), THREADS, 0, s>>>(z, moments, eps, n, CHW);
    CHECK_LAUNCH();
}
extern "C" void gaussian_sample_backward_cuda(float *dmoments, const float *dz, const float *moments, const float *eps,
                                              int N, int C, int HW, cudaStream_t s) {
    if (!dmoments) return;
    size_t CHW = (size_t)C * HW, n = (size_t)N * CHW;
    gsample_bwd<<<grid_for(n), THREADS, 0, s>>>(dmoments, dz, moments, eps, n, CHW);
    CHECK_LAUNCH();
}

// one thread per sample: K is a class count (tens)
__global__ void ce_fwd(double *loss, float *probs, const float *logits, const int32_t *labels, int N, int K) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const float *x = logits + (size_t)n * K;
    float *p = probs + (size_t)n * K;
    float mx = -INFINITY;
    for (int k = 0; k < K; k++) mx = fmaxf(mx, x[k]);
    double sum = 0.0;
    for (int k = 0; k < K; k++) {
        p[k] = expf(x[k] - mx);
        sum += p[k];
    }
    float inv = (float)(1.0 / sum);
    for (int k = 0; k < K; k++) p[k] *= inv;
    loss[n] = (double)mx + log(sum) - x[labels[n]];
}
extern "C" float cross_entropy_forward_cuda(float *probs, const float *logits, const int32_t *labels, int N, int K,
                                            cudaStream_t s) {
    double *acc = cuda_reduce_buffer(N), total = 0;
    ce_fwd<<<grid_for(N, 64), 64, 0, s>>>(acc, probs, logits, labels, N, K);
    CHECK_LAUNCH();
    double *h = (double *)xmalloc((size_t)N * sizeof(double));
    CHECK_CUDA(cudaMemcpyAsync(h, acc, N * sizeof(double), cudaMemcpyDeviceToHost, s));
    CHECK_CUDA(cudaStreamSynchronize(s));
    for (int n = 0; n < N; n++) total += h[n];
    free(h);
    return (float)(total / N);
}
__global__ void ce_bwd(float *dlogits, const float *probs, const int32_t *labels, size_t n, int K, float g) {
    GRID_STRIDE(j, n) {
        size_t s = j / K;
        int k = (int)(j % K);
        dlogits[j] += g * probs[j] - (k == labels[s] ? g : 0.0f);
    }
}
extern "C" void cross_entropy_backward_cuda(float *dlogits, const float *probs, const int32_t *labels, int N, int K,
                                            float dloss, cudaStream_t s) {
    if (!dlogits) return;
    size_t n = (size_t)N * K;
    ce_bwd<<<grid_for(n), THREADS, 0, s>>>(dlogits, probs, labels, n, K, dloss / (float)N);
    CHECK_LAUNCH();
}
