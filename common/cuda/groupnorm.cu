// groupnorm.cu: the CUDA twin of groupnorm.c. One block per (sample, group) for the statistics
// and the input gradient, one per channel for the parameter gradients; sums in double as on the CPU.
#include "cuda_common.cuh"

#define GN_THREADS 256

__global__ void groupnorm_fwd(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                              const float *bias, int C, int HW, int G, float eps) {
    int n = blockIdx.x / G, g = blockIdx.x % G, CG = C / G;
    size_t gsize = (size_t)CG * HW, off = ((size_t)n * C + (size_t)g * CG) * HW;
    const float *x = inp + off;
    float *y = out + off;
    double s = 0;
    for (size_t i = threadIdx.x; i < gsize; i += blockDim.x) s += x[i];
    double mu = block_sum(s) / (double)gsize;
    double ss = 0;
    for (size_t i = threadIdx.x; i < gsize; i += blockDim.x) ss += (x[i] - mu) * (x[i] - mu);
    ss = block_sum(ss);
    float r = (float)(1.0 / sqrt(ss / (double)gsize + (double)eps));
    if (threadIdx.x == 0) mean[blockIdx.x] = (float)mu, rstd[blockIdx.x] = r;
    for (size_t i = threadIdx.x; i < gsize; i += blockDim.x) {
        int c = g * CG + (int)(i / HW);
        float w = weight[c] * r, b = bias[c] - (float)mu * w;
        y[i] = x[i] * w + b;
    }
}

// dweight[c] += sum dy (x - mu) r, dbias[c] += sum dy over samples and pixels
__global__ void groupnorm_bwd_params(float *dweight, float *dbias, const float *dout, const float *inp,
                                     const float *mean, const float *rstd, int N, int C, int HW, int G) {
    int c = blockIdx.x, g = c / (C / G);
    double sw = 0, sb = 0;
    for (size_t j = threadIdx.x; j < (size_t)N * HW; j += blockDim.x) {
        int n = (int)(j / HW);
        size_t k = ((size_t)n * C + c) * HW + j % HW;
        float mu = mean[n * G + g], r = rstd[n * G + g];
        sb += dout[k];
        sw += dout[k] * (inp[k] - mu) * r;
    }
    sw = block_sum(sw);
    sb = block_sum(sb);
    if (threadIdx.x == 0) {
        if (dweight) dweight[c] += (float)sw;
        if (dbias) dbias[c] += (float)sb;
    }
}

// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dxhat = dy * w
__global__ void groupnorm_bwd_input(float *dinp, const float *dout, const float *inp, const float *weight,
                                    const float *mean, const float *rstd, int C, int HW, int G) {
    int n = blockIdx.x / G, g = blockIdx.x % G, CG = C / G;
    size_t gsize = (size_t)CG * HW, off = ((size_t)n * C + (size_t)g * CG) * HW;
    const float *x = inp + off, *dy = dout + off;
    float *dx = dinp + off;
    float mu = mean[blockIdx.x], r = rstd[blockIdx.x];
    double s1 = 0, s2 = 0;
    for (size_t i = threadIdx.x; i < gsize; i += blockDim.x) {
        double dxh = (double)dy[i] * weight[g * CG + (int)(i / HW)];
        s1 += dxh;
        s2 += dxh * (x[i] - mu) * r;
    }
    s1 = block_sum(s1);
    s2 = block_sum(s2);
    float m1 = (float)(s1 / (double)gsize), m2 = (float)(s2 / (double)gsize);
    for (size_t i = threadIdx.x; i < gsize; i += blockDim.x) {
        float w = weight[g * CG + (int)(i / HW)], xh = (x[i] - mu) * r;
        dx[i] += r * (dy[i] * w - m1 - xh * m2);
    }
}

extern "C" void groupnorm_forward_cuda(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                                       const float *bias, int N, int C, int HW, int G, float eps, cudaStream_t s) {
    CHECK(C % G == 0, "groupnorm: %d channels do not divide into %d groups", C, G);
    groupnorm_fwd<<<N * G, GN_THREADS, 0, s>>>(out, mean, rstd, inp, weight, bias, C, HW, G, eps);
    CHECK_LAUNCH();
}

extern "C" void groupnorm_backward_cuda(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                        const float *weight, const float *mean, const float *rstd, int N, int C, int HW,
                                        int G, cudaStream_t s) {
    if (dweight || dbias) {
        groupnorm_bwd_params<<<C, GN_THREADS, 0, s>>>(dweight, dbias, dout, inp, mean, rstd, N, C, HW, G);
        CHECK_LAUNCH();
    }
    if (dinp) {
        groupnorm_bwd_input<<<N * G, GN_THREADS, 0, s>>>(dinp, dout, inp, weight, mean, rstd, C, HW, G);
        CHECK_LAUNCH();
    }
}
