// activations.cu: the CUDA twins of activations.c (LeakyReLU, the hinge GAN losses) and l2_norm.
#include "cuda_common.cuh"

__global__ void leaky_fwd(float *out, const float *inp, size_t n, float slope) {
    GRID_STRIDE(i, n) out[i] = inp[i] > 0.0f ? inp[i] : slope * inp[i];
}
__global__ void leaky_bwd(float *dinp, const float *dout, const float *inp, size_t n, float slope) {
    GRID_STRIDE(i, n) dinp[i] += inp[i] > 0.0f ? dout[i] : slope * dout[i];
}
extern "C" void leaky_relu_forward_cuda(float *out, const float *inp, size_t n, float slope, cudaStream_t s) {
    leaky_fwd<<<grid_for(n), THREADS, 0, s>>>(out, inp, n, slope);
    CHECK_LAUNCH();
}
extern "C" void leaky_relu_backward_cuda(float *dinp, const float *dout, const float *inp, size_t n, float slope,
                                         cudaStream_t s) {
    leaky_bwd<<<grid_for(n), THREADS, 0, s>>>(dinp, dout, inp, n, slope);
    CHECK_LAUNCH();
}

// acc[0] += sum relu(1 - real), acc[1] += sum relu(1 + fake), acc[2] += sum fake, acc[3] += sum x^2 (in double)
__global__ void hinge_sums(double *acc, const float *real, const float *fake, const float *sq, size_t n) {
    double a = 0, b = 0, c = 0, d = 0;
    GRID_STRIDE(i, n) {
        if (real) a += fmaxf(1.0f - real[i], 0.0f);
        if (fake) b += fmaxf(1.0f + fake[i], 0.0f), c += fake[i];
        if (sq) d += (double)sq[i] * sq[i];
    }
    a = block_sum(a), b = block_sum(b), c = block_sum(c), d = block_sum(d);
    if (threadIdx.x == 0) atomicAdd(&acc[0], a), atomicAdd(&acc[1], b), atomicAdd(&acc[2], c), atomicAdd(&acc[3], d);
}
static void sums(double out[4], const float *real, const float *fake, const float *sq, size_t n, cudaStream_t s) {
    double *acc = cuda_reduce_buffer(4);
    CHECK_CUDA(cudaMemsetAsync(acc, 0, 4 * sizeof(double), s));
    unsigned g = grid_for(n);
    hinge_sums<<<g > 1024 ? 1024 : g, THREADS, 0, s>>>(acc, real, fake, sq, n);
    CHECK_LAUNCH();
    CHECK_CUDA(cudaMemcpyAsync(out, acc, 4 * sizeof(double), cudaMemcpyDeviceToHost, s));
    CHECK_CUDA(cudaStreamSynchronize(s));
}

extern "C" float hinge_d_forward_cuda(const float *logits_real, const float *logits_fake, size_t n, cudaStream_t s) {
    double t[4];
    sums(t, logits_real, logits_fake, NULL, n, s);
    return (float)(0.5 * (t[0] / (double)n + t[1] / (double)n));
}
__global__ void hinge_d_bwd(float *dreal, float *dfake, const float *real, const float *fake, size_t n, float g) {
    GRID_STRIDE(i, n) {
        if (dreal && 1.0f - real[i] > 0.0f) dreal[i] -= g;
        if (dfake && 1.0f + fake[i] > 0.0f) dfake[i] += g;
    }
}
extern "C" void hinge_d_backward_cuda(float *dreal, float *dfake, const float *logits_real, const float *logits_fake,
                                      size_t n, float dloss, cudaStream_t s) {
    hinge_d_bwd<<<grid_for(n), THREADS, 0, s>>>(dreal, dfake, logits_real, logits_fake, n, 0.5f * dloss / (float)n);
    CHECK_LAUNCH();
}
extern "C" float hinge_g_forward_cuda(const float *logits_fake, size_t n, cudaStream_t s) {
    double t[4];
    sums(t, NULL, logits_fake, NULL, n, s);
    return (float)(-t[2] / (double)n);
}
__global__ void sub_const(float *x, size_t n, float g) {
    GRID_STRIDE(i, n) x[i] -= g;
}
extern "C" void hinge_g_backward_cuda(float *dfake, size_t n, float dloss, cudaStream_t s) {
    sub_const<<<grid_for(n), THREADS, 0, s>>>(dfake, n, dloss / (float)n);
    CHECK_LAUNCH();
}
extern "C" float l2_norm_cuda(const float *x, size_t n, cudaStream_t s) {
    double t[4];
    sums(t, NULL, NULL, x, n, s);
    return (float)sqrt(t[3]);
}
