// cuda_common.cuh: what every .cu file of the backend shares: check macros, launch sizes, the
// cuBLAS handle, row-major GEMM wrappers and block reductions.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stddef.h>

extern "C" {
#include "check.h"
#include "cuda/cuda.h"
}

#define CHECK_CUDA(x)                                                                      \
    do {                                                                                   \
        cudaError_t err_ = (x);                                                            \
        if (err_ != cudaSuccess) DIE("CUDA: %s: %s", #x, cudaGetErrorString(err_));        \
    } while (0)
#define CHECK_CUBLAS(x)                                                                    \
    do {                                                                                   \
        cublasStatus_t st_ = (x);                                                          \
        if (st_ != CUBLAS_STATUS_SUCCESS) DIE("cuBLAS: %s: status %d", #x, (int)st_);      \
    } while (0)
// after every launch: a bad configuration shows here, a fault at the next synchronisation
#define CHECK_LAUNCH() CHECK_CUDA(cudaGetLastError())

#define THREADS 256
static inline unsigned grid_for(size_t n, int threads = THREADS) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : b > 1048576 ? 1048576 : b);  // grid-stride loops cover the rest
}
#define GRID_STRIDE(i, n) for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

cublasHandle_t cublas_on(cudaStream_t s);  // device.cu: the one handle, bound to stream s
double *cuda_reduce_buffer(size_t n);       // device.cu: n doubles of device scratch for reductions
const float *cuda_ones(size_t n);           // device.cu: n ones (bias gradients as GEMVs)
// stores in fp32, or rounded to the 16-bit type of the half-precision GEMMs
__device__ inline void put(float *p, float v) { *p = v; }
__device__ inline void put(__nv_bfloat16 *p, float v) { *p = __float2bfloat16(v); }
__device__ inline void put(__half *p, float v) { *p = __float2half(v); }
// bf16 or fp16: the GEMMs take 16-bit operands (cuda_set_precision)
static inline bool half_gemms(void) {
    Precision p = cuda_get_precision();
    return p == PREC_BF16 || p == PREC_FP16;
}
static inline cudaDataType half_type(void) { return cuda_get_precision() == PREC_FP16 ? CUDA_R_16F : CUDA_R_16BF; }
// device.cu: x (n floats) rounded to the precision's 16-bit type into scratch slot 0 or 1 (valid
// until that slot's next use)
const void *cuda_to_half(int slot, const float *x, size_t n, cudaStream_t s);

// floats a row-major operand spans: rows x cols with leading dimension ld (transposed: cols x rows)
static inline size_t span_rm(bool t, int rows, int cols, int ld) {
    return t ? (size_t)(cols - 1) * ld + rows : (size_t)(rows - 1) * ld + cols;
}

// C (M, N) = alpha op(A) op(B) + beta C with row-major matrices, as cblas_sgemm(CblasRowMajor, ...):
// row-major is column-major transposed, so this is C^T = op(B)^T op(A)^T with operands swapped.
// In bf16 / fp16 precision the operands are rounded to 16-bit copies (or come so: gemm_rm_half)
// and cuBLAS sums in fp32 into the fp32 C.
static inline void gemm_rm_half(cudaStream_t s, bool ta, bool tb, int M, int N, int K, float alpha, const void *A,
                                int lda, const void *B, int ldb, float beta, float *C, int ldc) {
    cudaDataType t = half_type();
    CHECK_CUBLAS(cublasGemmEx(cublas_on(s), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
                              &alpha, B, t, ldb, A, t, lda, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
}
static inline void gemm_rm(cudaStream_t s, bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                           const float *B, int ldb, float beta, float *C, int ldc) {
    if (half_gemms()) {
        const void *Ah = cuda_to_half(0, A, span_rm(ta, M, K, lda), s);
        const void *Bh = cuda_to_half(1, B, span_rm(tb, K, N, ldb), s);
        gemm_rm_half(s, ta, tb, M, N, K, alpha, Ah, lda, Bh, ldb, beta, C, ldc);
        return;
    }
    CHECK_CUBLAS(cublasSgemm(cublas_on(s), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
                             &alpha, B, ldb, A, lda, &beta, C, ldc));
}
static inline void gemm_rm_batched(cudaStream_t s, bool ta, bool tb, int M, int N, int K, float alpha, const float *A,
                                   int lda, long long sa, const float *B, int ldb, long long sb, float beta, float *C,
                                   int ldc, long long sc, int batch) {
    if (half_gemms()) {
        const void *Ah = cuda_to_half(0, A, (size_t)(batch - 1) * sa + span_rm(ta, M, K, lda), s);
        const void *Bh = cuda_to_half(1, B, (size_t)(batch - 1) * sb + span_rm(tb, K, N, ldb), s);
        cudaDataType t = half_type();
        CHECK_CUBLAS(cublasGemmStridedBatchedEx(cublas_on(s), tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                                ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, Bh, t, ldb, sb, Ah, t,
                                                lda, sa, &beta, C, CUDA_R_32F, ldc, sc, batch, CUBLAS_COMPUTE_32F,
                                                CUBLAS_GEMM_DEFAULT));
        return;
    }
    CHECK_CUBLAS(cublasSgemmStridedBatched(cublas_on(s), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                           N, M, K, &alpha, B, ldb, sb, A, lda, sa, &beta, C, ldc, sc, batch));
}
// y (M) = alpha A (M, N) x (N) + beta y, A row-major
static inline void gemv_rm(cudaStream_t s, int M, int N, float alpha, const float *A, int lda, const float *x, float beta,
                           float *y) {
    CHECK_CUBLAS(cublasSgemv(cublas_on(s), CUBLAS_OP_T, N, M, &alpha, A, lda, x, 1, &beta, y, 1));
}

// y (N) = alpha A^T x (M) + beta y for row-major A (M, N): column sums when x is ones
static inline void gemv_rm_t(cudaStream_t s, int M, int N, float alpha, const float *A, int lda, const float *x,
                             float beta, float *y) {
    CHECK_CUBLAS(cublasSgemv(cublas_on(s), CUBLAS_OP_N, N, M, &alpha, A, lda, x, 1, &beta, y, 1));
}

// Sum of v over the block (any blockDim.x that is a multiple of 32, up to 1024); every thread gets it.
template <typename T>
__device__ inline T block_sum(T v) {
    __shared__ T part[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    __syncthreads();  // part[] may still be read by a previous call
    if (lane == 0) part[warp] = v;
    __syncthreads();
    T t = 0;
    for (int w = 0; w < nw; w++) t += part[w];
    return t;
}
__device__ inline float block_max(float v) {
    __shared__ float part[32];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    float t = part[0];
    for (int w = 1; w < nw; w++) t = fmaxf(t, part[w]);
    return t;
}
