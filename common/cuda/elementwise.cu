// elementwise.cu: the CUDA twins of ops/elementwise.c, attention.c's transposes, embedding.c,
// timesteps.c, dropout.c and pool.c. Per-element math comes from ops/pointwise.h.
#include "cuda_common.cuh"
#include "ops/pointwise.h"

// ---- SiLU ----
__global__ void silu_fwd(float *out, const float *inp, size_t n) {
    GRID_STRIDE(i, n) out[i] = silu_one(inp[i]);
}
__global__ void silu_bwd(float *dinp, const float *dout, const float *inp, size_t n) {
    GRID_STRIDE(i, n) dinp[i] += dout[i] * silu_grad_one(inp[i]);
}
extern "C" void silu_forward_cuda(float *out, const float *inp, size_t n, cudaStream_t s) {
    silu_fwd<<<grid_for(n), THREADS, 0, s>>>(out, inp, n);
    CHECK_LAUNCH();
}
extern "C" void silu_backward_cuda(float *dinp, const float *dout, const float *inp, size_t n, cudaStream_t s) {
    silu_bwd<<<grid_for(n), THREADS, 0, s>>>(dinp, dout, inp, n);
    CHECK_LAUNCH();
}

// ---- nearest upsampling x2: one thread per output (forward) / input (backward) pixel ----
__global__ void up2_fwd(float *out, const float *inp, size_t n_out, int H, int W) {
    GRID_STRIDE(i, n_out) {
        size_t ow = i % (2 * W), oh = i / (2 * W) % (2 * H), p = i / ((size_t)4 * H * W);
        out[i] = inp[(p * H + oh / 2) * W + ow / 2];
    }
}
__global__ void up2_bwd(float *dinp, const float *dout, size_t n_in, int H, int W) {
    GRID_STRIDE(i, n_in) {
        size_t w = i % W, h = i / W % H, p = i / ((size_t)H * W);
        const float *r0 = dout + (p * 2 * H + 2 * h) * 2 * W + 2 * w, *r1 = r0 + 2 * W;
        dinp[i] += r0[0] + r0[1] + r1[0] + r1[1];
    }
}
extern "C" void upsample_nearest2x_forward_cuda(float *out, const float *inp, int N, int C, int H, int W, cudaStream_t s) {
    size_t n = (size_t)N * C * 4 * H * W;
    up2_fwd<<<grid_for(n), THREADS, 0, s>>>(out, inp, n, H, W);
    CHECK_LAUNCH();
}
extern "C" void upsample_nearest2x_backward_cuda(float *dinp, const float *dout, int N, int C, int H, int W,
                                                 cudaStream_t s) {
    size_t n = (size_t)N * C * H * W;
    up2_bwd<<<grid_for(n), THREADS, 0, s>>>(dinp, dout, n, H, W);
    CHECK_LAUNCH();
}

// ---- channel concat ----
__global__ void concat_fwd(float *out, const float *a, const float *b, size_t n, size_t sa, size_t sb) {
    GRID_STRIDE(i, n) {
        size_t k = i / (sa + sb), j = i % (sa + sb);
        out[i] = j < sa ? a[k * sa + j] : b[k * sb + j - sa];
    }
}
__global__ void concat_bwd(float *da, float *db, const float *dout, size_t n, size_t sa, size_t sb) {
    GRID_STRIDE(i, n) {
        size_t k = i / (sa + sb), j = i % (sa + sb);
        if (j < sa) {
            if (da) da[k * sa + j] += dout[i];
        } else if (db) {
            db[k * sb + j - sa] += dout[i];
        }
    }
}
extern "C" void concat_channels_forward_cuda(float *out, const float *a, const float *b, int N, int Ca, int Cb, int HW,
                                             cudaStream_t s) {
    size_t sa = (size_t)Ca * HW, sb = (size_t)Cb * HW, n = (size_t)N * (sa + sb);
    concat_fwd<<<grid_for(n), THREADS, 0, s>>>(out, a, b, n, sa, sb);
    CHECK_LAUNCH();
}
extern "C" void concat_channels_backward_cuda(float *da, float *db, const float *dout, int N, int Ca, int Cb, int HW,
                                              cudaStream_t s) {
    size_t sa = (size_t)Ca * HW, sb = (size_t)Cb * HW, n = (size_t)N * (sa + sb);
    concat_bwd<<<grid_for(n), THREADS, 0, s>>>(da, db, dout, n, sa, sb);
    CHECK_LAUNCH();
}

// ---- residual, broadcast and plain adds ----
__global__ void residual_fwd(float *out, const float *a, const float *b, float scale, size_t n) {
    GRID_STRIDE(i, n) out[i] = (a[i] + b[i]) * scale;
}
__global__ void residual_bwd(float *da, float *db, const float *dout, float scale, size_t n) {
    GRID_STRIDE(i, n) {
        float g = dout[i] * scale;
        if (da) da[i] += g;
        if (db) db[i] += g;
    }
}
extern "C" void residual_forward_cuda(float *out, const float *a, const float *b, float scale, size_t n, cudaStream_t s) {
    residual_fwd<<<grid_for(n), THREADS, 0, s>>>(out, a, b, scale, n);
    CHECK_LAUNCH();
}
extern "C" void residual_backward_cuda(float *da, float *db, const float *dout, float scale, size_t n, cudaStream_t s) {
    residual_bwd<<<grid_for(n), THREADS, 0, s>>>(da, db, dout, scale, n);
    CHECK_LAUNCH();
}

__global__ void add_channel_fwd(float *out, const float *inp, const float *vec, size_t n, int HW) {
    GRID_STRIDE(i, n) out[i] = inp[i] + vec[i / HW];
}
// one block per (n, c) plane: dvec is the plane's sum (in double, as the CPU)
__global__ void add_channel_bwd(float *dinp, float *dvec, const float *dout, int HW) {
    size_t off = (size_t)blockIdx.x * HW;
    double s = 0;
    for (int i = threadIdx.x; i < HW; i += blockDim.x) {
        s += dout[off + i];
        if (dinp) dinp[off + i] += dout[off + i];
    }
    s = block_sum(s);
    if (dvec && threadIdx.x == 0) dvec[blockIdx.x] += (float)s;
}
extern "C" void add_channel_forward_cuda(float *out, const float *inp, const float *vec, int N, int C, int HW,
                                         cudaStream_t s) {
    size_t n = (size_t)N * C * HW;
    add_channel_fwd<<<grid_for(n), THREADS, 0, s>>>(out, inp, vec, n, HW);
    CHECK_LAUNCH();
}
extern "C" void add_channel_backward_cuda(float *dinp, float *dvec, const float *dout, int N, int C, int HW,
                                          cudaStream_t s) {
    add_channel_bwd<<<N * C, HW >= 256 ? 256 : 64, 0, s>>>(dinp, dvec, dout, HW);
    CHECK_LAUNCH();
}

__global__ void accumulate_kernel(float *dst, const float *src, size_t n) {
    GRID_STRIDE(i, n) dst[i] += src[i];
}
extern "C" void accumulate_cuda(float *dst, const float *src, size_t n, cudaStream_t s) {
    accumulate_kernel<<<grid_for(n), THREADS, 0, s>>>(dst, src, n);
    CHECK_LAUNCH();
}
extern "C" void copy_floats_cuda(float *dst, const float *src, size_t n, cudaStream_t s) {
    if (n) CHECK_CUDA(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, s));
}

__global__ void axpby_rows_kernel(float *out, const float *x, const float *a, const float *y, const float *b, size_t n,
                                  size_t per) {
    GRID_STRIDE(i, n) {
        size_t r = i / per;
        out[i] = a[r] * x[i] + b[r] * y[i];
    }
}
extern "C" void axpby_rows_cuda(float *out, const float *x, const float *a, const float *y, const float *b, int N,
                                size_t per, cudaStream_t s) {
    size_t n = (size_t)N * per;
    axpby_rows_kernel<<<grid_for(n), THREADS, 0, s>>>(out, x, a, y, b, n, per);
    CHECK_LAUNCH();
}

// ---- (N, R, Cc) -> (N, Cc, R) transposes through 32x32 shared tiles ----
__global__ void transpose_kernel(float *out, const float *inp, int R, int Cc) {
    __shared__ float tile[32][33];
    const float *src = inp + (size_t)blockIdx.z * R * Cc;
    float *dst = out + (size_t)blockIdx.z * R * Cc;
    int c = blockIdx.x * 32 + threadIdx.x;
    for (int k = threadIdx.y; k < 32; k += blockDim.y) {
        int r = blockIdx.y * 32 + k;
        if (r < R && c < Cc) tile[k][threadIdx.x] = src[(size_t)r * Cc + c];
    }
    __syncthreads();
    int r = blockIdx.y * 32 + threadIdx.x;
    for (int k = threadIdx.y; k < 32; k += blockDim.y) {
        int cc = blockIdx.x * 32 + k;
        if (cc < Cc && r < R) dst[(size_t)cc * R + r] = tile[threadIdx.x][k];
    }
}
static void transpose_batched(float *out, const float *inp, int N, int R, int Cc, cudaStream_t s) {
    dim3 grid((Cc + 31) / 32, (R + 31) / 32, N), block(32, 8);
    transpose_kernel<<<grid, block, 0, s>>>(out, inp, R, Cc);
    CHECK_LAUNCH();
}
extern "C" void nchw_to_nlc_cuda(float *out, const float *inp, int N, int C, int HW, cudaStream_t s) {
    transpose_batched(out, inp, N, C, HW, s);
}
extern "C" void nlc_to_nchw_cuda(float *out, const float *inp, int N, int C, int HW, cudaStream_t s) {
    transpose_batched(out, inp, N, HW, C, s);
}

// ---- embedding: backward runs one thread per column over the rows in order (no atomics) ----
__global__ void embedding_fwd(float *out, const int32_t *ids, const float *table, int D, size_t n) {
    GRID_STRIDE(i, n) out[i] = table[(size_t)ids[i / D] * D + i % D];
}
__global__ void embedding_bwd(float *dtable, const float *dout, const int32_t *ids, int N, int D) {
    for (int d = blockIdx.x * blockDim.x + threadIdx.x; d < D; d += gridDim.x * blockDim.x)
        for (int n = 0; n < N; n++) dtable[(size_t)ids[n] * D + d] += dout[(size_t)n * D + d];
}
extern "C" void embedding_forward_cuda(float *out, const int32_t *ids, const float *table, int N, int D, cudaStream_t s) {
    size_t n = (size_t)N * D;
    embedding_fwd<<<grid_for(n), THREADS, 0, s>>>(out, ids, table, D, n);
    CHECK_LAUNCH();
}
extern "C" void embedding_backward_cuda(float *dtable, const float *dout, const int32_t *ids, int N, int D,
                                        cudaStream_t s) {
    if (!dtable) return;
    embedding_bwd<<<grid_for(D, 128), 128, 0, s>>>(dtable, dout, ids, N, D);
    CHECK_LAUNCH();
}

// ---- sinusoidal timestep embedding ----
__global__ void tsemb_fwd(float *out, const float *t, int N, int dim, int s0, int c0, float shift, float scale,
                          float max_period) {
    int half = dim / 2;
    GRID_STRIDE(j, (size_t)N * half) {
        int n = (int)(j / half), i = (int)(j % half);
        float arg = scale * (t[n] * timestep_freq(i, half, shift, max_period));
        out[(size_t)n * dim + s0 + i] = sinf(arg);
        out[(size_t)n * dim + c0 + i] = cosf(arg);
        if (i == 0 && dim % 2) out[(size_t)n * dim + dim - 1] = 0.0f;
    }
}
__global__ void tsemb_bwd(float *dt, const float *dout, const float *t, int dim, int s0, int c0, float shift, float scale,
                          float max_period) {
    int n = blockIdx.x, half = dim / 2;
    const float *g = dout + (size_t)n * dim;
    double acc = 0.0;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float freq = timestep_freq(i, half, shift, max_period);
        float arg = scale * (t[n] * freq);
        acc += (double)scale * freq * ((double)g[s0 + i] * cosf(arg) - (double)g[c0 + i] * sinf(arg));
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) dt[n] += (float)acc;
}
extern "C" void timestep_embedding_forward_cuda(float *out, const float *t, int N, int dim, int flip_sin_to_cos,
                                                float downscale_freq_shift, float scale, float max_period,
                                                cudaStream_t s) {
    int half = dim / 2, s0 = flip_sin_to_cos ? half : 0, c0 = flip_sin_to_cos ? 0 : half;
    tsemb_fwd<<<grid_for((size_t)N * (half ? half : 1)), THREADS, 0, s>>>(out, t, N, dim, s0, c0, downscale_freq_shift,
                                                                       scale, max_period);
    CHECK_LAUNCH();
}
extern "C" void timestep_embedding_backward_cuda(float *dt, const float *dout, const float *t, int N, int dim,
                                                 int flip_sin_to_cos, float downscale_freq_shift, float scale,
                                                 float max_period, cudaStream_t s) {
    if (!dt) return;
    int half = dim / 2, s0 = flip_sin_to_cos ? half : 0, c0 = flip_sin_to_cos ? 0 : half;
    tsemb_bwd<<<N, 128, 0, s>>>(dt, dout, t, dim, s0, c0, downscale_freq_shift, scale, max_period);
    CHECK_LAUNCH();
}

// ---- dropout: the mask comes from the host Rng, as on the CPU ----
__global__ void mul_kernel(float *out, const float *a, const float *b, size_t n) {
    GRID_STRIDE(i, n) out[i] = a[i] * b[i];
}
__global__ void muladd_kernel(float *out, const float *a, const float *b, size_t n) {
    GRID_STRIDE(i, n) out[i] += a[i] * b[i];
}
__global__ void fill_value(float *x, float v, size_t n) {
    GRID_STRIDE(i, n) x[i] = v;
}
extern "C" void dropout_forward_cuda(float *out, float *mask, const float *inp, size_t n, float p, Rng *rng,
                                     cudaStream_t s) {
    CHECK(p >= 0.0f && p < 1.0f, "dropout_forward: p = %g must be in [0, 1)", (double)p);
    if (p == 0.0f) {
        if (out != inp) copy_floats_cuda(out, inp, n, s);
        if (mask) fill_value<<<grid_for(n), THREADS, 0, s>>>(mask, 1.0f, n);
        CHECK_LAUNCH();
        return;
    }
    CHECK(mask && rng, "dropout_forward: p = %g needs a mask buffer and an Rng", (double)p);
    float *h = (float *)xmalloc(n * sizeof(float));
    const float keep_scale = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++) h[i] = rng_uniform(rng) < p ? 0.0f : keep_scale;
    CHECK_CUDA(cudaMemcpyAsync(mask, h, n * sizeof(float), cudaMemcpyHostToDevice, s));
    CHECK_CUDA(cudaStreamSynchronize(s));  // h is pageable and freed next
    free(h);
    mul_kernel<<<grid_for(n), THREADS, 0, s>>>(out, inp, mask, n);
    CHECK_LAUNCH();
}
extern "C" void dropout_backward_cuda(float *dinp, const float *dout, const float *mask, size_t n, float p,
                                      cudaStream_t s) {
    if (!dinp) return;
    if (p == 0.0f) accumulate_cuda(dinp, dout, n, s);
    else muladd_kernel<<<grid_for(n), THREADS, 0, s>>>(dinp, dout, mask, n);
    CHECK_LAUNCH();
}

// ---- global average pool: one block per (n, c) plane ----
__global__ void avgpool_fwd(float *out, const float *inp, int HW) {
    const float *x = inp + (size_t)blockIdx.x * HW;
    double s = 0;
    for (int i = threadIdx.x; i < HW; i += blockDim.x) s += x[i];
    s = block_sum(s);
    if (threadIdx.x == 0) out[blockIdx.x] = (float)(s / HW);
}
__global__ void avgpool_bwd(float *dinp, const float *dout, size_t n, int HW, float inv) {
    GRID_STRIDE(i, n) dinp[i] += dout[i / HW] * inv;
}
extern "C" void avgpool_forward_cuda(float *out, const float *inp, int N, int C, int HW, cudaStream_t s) {
    avgpool_fwd<<<N * C, 128, 0, s>>>(out, inp, HW);
    CHECK_LAUNCH();
}
extern "C" void avgpool_backward_cuda(float *dinp, const float *dout, int N, int C, int HW, cudaStream_t s) {
    if (!dinp) return;
    size_t n = (size_t)N * C * HW;
    avgpool_bwd<<<grid_for(n), THREADS, 0, s>>>(dinp, dout, n, HW, 1.0f / (float)HW);
    CHECK_LAUNCH();
}
