// batchnorm.cu: the CUDA twins of batchnorm.c and avgpool2x2 (pool.c). Batch norm: one block per
// channel for the statistics, the running stats, the parameter gradients and the input gradient;
// sums in double as on the CPU.
#include "cuda_common.cuh"

#define BN_THREADS 256

// element j of channel c's N x HW values
__device__ static inline size_t bn_index(size_t j, int c, int C, int HW) {
    return ((j / HW) * C + c) * HW + j % HW;
}

__global__ void batchnorm_fwd(float *out, float *mean, float *rstd, float *running_mean, float *running_var,
                              const float *inp, const float *weight, const float *bias, int N, int C, int HW,
                              float eps, float momentum, int train) {
    int c = blockIdx.x;
    size_t M = (size_t)N * HW;
    double mu, var;
    if (train) {
        double s = 0;
        for (size_t j = threadIdx.x; j < M; j += blockDim.x) s += inp[bn_index(j, c, C, HW)];
        mu = block_sum(s) / (double)M;
        double ss = 0;
        for (size_t j = threadIdx.x; j < M; j += blockDim.x) {
            double d = inp[bn_index(j, c, C, HW)] - mu;
            ss += d * d;
        }
        var = block_sum(ss) / (double)M;
    } else {
        mu = running_mean[c], var = running_var[c];
    }
    float r = (float)(1.0 / sqrt(var + (double)eps));
    if (threadIdx.x == 0) {
        mean[c] = (float)mu, rstd[c] = r;
        if (train && running_mean) {
            running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu);
            running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * var * (double)M / (double)(M - 1));
        }
    }
    float w = weight[c] * r, b = bias[c] - (float)mu * w;
    for (size_t j = threadIdx.x; j < M; j += blockDim.x) {
        size_t k = bn_index(j, c, C, HW);
        out[k] = inp[k] * w + b;
    }
}

__global__ void batchnorm_bwd(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                              const float *weight, const float *mean, const float *rstd, int N, int C, int HW,
                              int train) {
    int c = blockIdx.x;
    size_t M = (size_t)N * HW;
    float mu = mean[c], r = rstd[c], w = weight[c];
    double sb = 0, sw = 0;
    for (size_t j = threadIdx.x; j < M; j += blockDim.x) {
        size_t k = bn_index(j, c, C, HW);
        sb += dout[k];
        sw += (double)dout[k] * (inp[k] - mu) * r;
    }
    sb = block_sum(sb);
    sw = block_sum(sw);
    if (threadIdx.x == 0) {
        if (dweight) dweight[c] += (float)sw;
        if (dbias) dbias[c] += (float)sb;
    }
    if (!dinp) return;
    float m1 = train ? (float)(sb / (double)M) : 0.0f, m2 = train ? (float)(sw / (double)M) : 0.0f;
    for (size_t j = threadIdx.x; j < M; j += blockDim.x) {
        size_t k = bn_index(j, c, C, HW);
        dinp[k] += r * w * (dout[k] - m1 - (inp[k] - mu) * r * m2);
    }
}

extern "C" void batchnorm_forward_cuda(float *out, float *mean, float *rstd, float *running_mean, float *running_var,
                                       const float *inp, const float *weight, const float *bias, int N, int C, int HW,
                                       float eps, float momentum, int train, cudaStream_t s) {
    CHECK(!train || (size_t)N * HW > 1, "batchnorm: training needs more than one value per channel (N %d x HW %d)", N, HW);
    batchnorm_fwd<<<C, BN_THREADS, 0, s>>>(out, mean, rstd, running_mean, running_var, inp, weight, bias, N, C, HW, eps,
                                           momentum, train);
    CHECK_LAUNCH();
}

extern "C" void batchnorm_backward_cuda(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                        const float *weight, const float *mean, const float *rstd, int N, int C, int HW,
                                        int train, cudaStream_t s) {
    batchnorm_bwd<<<C, BN_THREADS, 0, s>>>(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C, HW, train);
    CHECK_LAUNCH();
}

// ---- 2x2 average pool: one thread per output (forward) and per output again (backward: the four
// inputs of an output are its own, so no two threads write the same input) ----
__global__ void avgpool2x2_fwd(float *out, const float *inp, size_t n_out, int H, int W) {
    int OH = H / 2, OW = W / 2;
    GRID_STRIDE(o, n_out) {
        size_t nc = o / ((size_t)OH * OW);
        int i = (int)(o / OW % OH), j = (int)(o % OW);
        const float *p = inp + nc * H * W + (size_t)(2 * i) * W + 2 * j;
        out[o] = 0.25f * (p[0] + p[1] + p[W] + p[W + 1]);
    }
}

__global__ void avgpool2x2_bwd(float *dinp, const float *dout, size_t n_out, int H, int W) {
    int OH = H / 2, OW = W / 2;
    GRID_STRIDE(o, n_out) {
        size_t nc = o / ((size_t)OH * OW);
        int i = (int)(o / OW % OH), j = (int)(o % OW);
        float g = 0.25f * dout[o], *p = dinp + nc * H * W + (size_t)(2 * i) * W + 2 * j;
        p[0] += g, p[1] += g, p[W] += g, p[W + 1] += g;
    }
}

extern "C" void avgpool2x2_forward_cuda(float *out, const float *inp, int N, int C, int H, int W, cudaStream_t s) {
    size_t n = (size_t)N * C * (H / 2) * (W / 2);
    if (!n) return;
    avgpool2x2_fwd<<<grid_for(n), THREADS, 0, s>>>(out, inp, n, H, W);
    CHECK_LAUNCH();
}

extern "C" void avgpool2x2_backward_cuda(float *dinp, const float *dout, int N, int C, int H, int W, cudaStream_t s) {
    size_t n = (size_t)N * C * (H / 2) * (W / 2);
    if (!dinp || !n) return;
    avgpool2x2_bwd<<<grid_for(n), THREADS, 0, s>>>(dinp, dout, n, H, W);
    CHECK_LAUNCH();
}
