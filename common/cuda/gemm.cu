// gemm.cu: the CUDA twins of linear.c, conv2d.c and attention.c, over cuBLAS.
//
// Convolution is conv2d.c's algorithm: a chunk of m images is unrolled into col (C*K*K, m*P)
// (P = OH*OW), one GEMM makes (OC, m*P), a kernel scatters it into NCHW adding the bias.
// Backward gathers dout into (OC, m*P) once; dbias is a GEMV against ones, dweight one GEMM over
// all m*P columns, and dcol = W^T dout is folded back into dinp by a gather (no atomics).
#include "cuda_common.cuh"

// ---- linear: out (N, OUT) = inp (N, IN) @ weight (OUT, IN)^T + bias ----
__global__ void add_bias_rows(float *out, const float *bias, size_t n, int OUT) {
    GRID_STRIDE(i, n) out[i] += bias[i % OUT];
}

extern "C" void linear_forward_cuda(float *out, const float *inp, const float *weight, const float *bias, int N, int IN,
                                    int OUT, cudaStream_t s) {
    gemm_rm(s, false, true, N, OUT, IN, 1.0f, inp, IN, weight, IN, 0.0f, out, OUT);
    if (bias) {
        size_t n = (size_t)N * OUT;
        add_bias_rows<<<grid_for(n), THREADS, 0, s>>>(out, bias, n, OUT);
        CHECK_LAUNCH();
    }
}

extern "C" void linear_backward_cuda(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                     const float *weight, int N, int IN, int OUT, cudaStream_t s) {
    // in the forward pass this was: out = inp @ weight^T + bias
    if (dinp) gemm_rm(s, false, false, N, IN, OUT, 1.0f, dout, OUT, weight, IN, 1.0f, dinp, IN);
    if (dweight) gemm_rm(s, true, false, OUT, IN, N, 1.0f, dout, OUT, inp, IN, 1.0f, dweight, IN);
    if (dbias) gemv_rm_t(s, N, OUT, 1.0f, dout, OUT, cuda_ones(N), 1.0f, dbias);  // dbias (OUT) += dout^T @ ones (N)
}

// ---- conv2d ----
// 16-bit scratch (bf16 or fp16): col (CKK, m*P), then dtmp (OC, m*P), then fp32 (tmp or dcol); offsets in floats
static size_t half_floats(size_t n) { return (n + 31) / 32 * 16; }  // n 16-bit values, rounded to 64 bytes
#define CONV_CAP_CUDA ((size_t)64 << 20)  // floats of scratch per call (256 MB)

static int conv_chunk_cuda(Conv2dDims d) { return conv2d_chunk(d, CONV_CAP_CUDA); }

// fp32: col (CKK, ld) + tmp (OC, ld) floats; bf16/fp16: col and dtmp in 16 bits + dcol (CKK, ld) fp32 (at most
// 1.5x), whichever precision runs
extern "C" size_t conv2d_scratch_floats_cuda(Conv2dDims d) {
    size_t P = (size_t)conv2d_oh(d) * conv2d_ow(d), CKK = (size_t)d.C * d.K * d.K;
    size_t ld = (size_t)conv_chunk_cuda(d) * P;
    return half_floats(CKK * ld) + half_floats(d.OC * ld) + (CKK > (size_t)d.OC ? CKK : d.OC) * ld + 64;
}

// col (CKK, m*P): element (row r = (c, kh, kw), column i*P + oh*OW + ow)
template <typename T>
__global__ void im2col_kernel(T *col, const float *x, int m, Conv2dDims d, int OH, int OW) {
    size_t P = (size_t)OH * OW, ld = (size_t)m * P, n = (size_t)d.C * d.K * d.K * ld;
    GRID_STRIDE(j, n) {
        size_t r = j / ld, q = j % ld;
        int i = (int)(q / P), p = (int)(q % P), oh = p / OW, ow = p % OW;
        int kw = (int)(r % d.K), kh = (int)(r / d.K % d.K), c = (int)(r / ((size_t)d.K * d.K));
        int ih = oh * d.stride - d.pad_t + kh, iw = ow * d.stride - d.pad_l + kw;
        put(&col[j], ih >= 0 && ih < d.H && iw >= 0 && iw < d.W ? x[(((size_t)i * d.C + c) * d.H + ih) * d.W + iw] : 0.0f);
    }
}

// dx (m images) += the columns of col that read each input pixel
__global__ void col2im_add_kernel(float *dx, const float *col, int m, Conv2dDims d, int OH, int OW) {
    size_t P = (size_t)OH * OW, ld = (size_t)m * P, n = (size_t)m * d.C * d.H * d.W;
    GRID_STRIDE(j, n) {
        int iw = (int)(j % d.W), ih = (int)(j / d.W % d.H), c = (int)(j / ((size_t)d.W * d.H) % d.C);
        int i = (int)(j / ((size_t)d.W * d.H * d.C));
        float acc = 0.0f;
        for (int kh = 0; kh < d.K; kh++) {
            int t = ih + d.pad_t - kh;  // = oh * stride
            if (t < 0 || t % d.stride) continue;
            int oh = t / d.stride;
            if (oh >= OH) continue;
            for (int kw = 0; kw < d.K; kw++) {
                int u = iw + d.pad_l - kw;
                if (u < 0 || u % d.stride) continue;
                int ow = u / d.stride;
                if (ow >= OW) continue;
                size_t r = ((size_t)c * d.K + kh) * d.K + kw;
                acc += col[r * ld + (size_t)i * P + (size_t)oh * OW + ow];
            }
        }
        dx[j] += acc;
    }
}

// out (m, OC, P) = tmp (OC, m*P) rearranged, + bias
__global__ void scatter_out_kernel(float *out, const float *tmp, const float *bias, int m, int OC, size_t P) {
    size_t n = (size_t)m * OC * P, ld = (size_t)m * P;
    GRID_STRIDE(j, n) {
        size_t p = j % P, oc = j / P % OC, i = j / (P * OC);
        out[j] = tmp[oc * ld + i * P + p] + (bias ? bias[oc] : 0.0f);
    }
}
// im2col into a 16-bit col of the precision's type (n = CKK * m*P elements)
static void im2col_half(void *col, const float *x, int m, Conv2dDims d, int OH, int OW, size_t n, cudaStream_t s) {
    if (cuda_get_precision() == PREC_FP16) im2col_kernel<<<grid_for(n), THREADS, 0, s>>>((__half *)col, x, m, d, OH, OW);
    else im2col_kernel<<<grid_for(n), THREADS, 0, s>>>((__nv_bfloat16 *)col, x, m, d, OH, OW);
    CHECK_LAUNCH();
}

// dtmp (OC, m*P) = dout (m, OC, P) rearranged
template <typename T>
__global__ void gather_dout_kernel(T *dtmp, const float *dout, int m, int OC, size_t P) {
    size_t n = (size_t)m * OC * P, ld = (size_t)m * P;
    GRID_STRIDE(j, n) {
        size_t p = j % P, oc = j / P % OC, i = j / (P * OC);
        put(&dtmp[oc * ld + i * P + p], dout[j]);
    }
}

// dbias[oc] += sum over the m images and P pixels of dout (one block per channel, in double)
__global__ void conv_dbias_kernel(float *dbias, const float *dout, int m, int OC, size_t P) {
    int oc = blockIdx.x;
    double acc = 0;
    for (size_t j = threadIdx.x; j < (size_t)m * P; j += blockDim.x) acc += dout[((j / P) * OC + oc) * P + j % P];
    acc = block_sum(acc);
    if (threadIdx.x == 0) dbias[oc] += (float)acc;
}


extern "C" void conv2d_forward_cuda(float *out, const float *inp, const float *weight, const float *bias, float *scratch,
                                    Conv2dDims d, cudaStream_t s) {
    int OH = conv2d_oh(d), OW = conv2d_ow(d), nb = conv_chunk_cuda(d);
    size_t P = (size_t)OH * OW, CKK = (size_t)d.C * d.K * d.K, in_sz = (size_t)d.C * d.H * d.W;
    CHECK(OH > 0 && OW > 0, "conv2d: input %dx%d too small for kernel %d", d.H, d.W, d.K);
    for (int n0 = 0; n0 < d.N; n0 += nb) {
        int m = d.N - n0 < nb ? d.N - n0 : nb;
        size_t ld = (size_t)m * P;
        if (half_gemms()) {  // col straight in 16 bits: half the bytes, no cast pass
            void *col = scratch;
            float *tmp = scratch + half_floats(CKK * ld) + half_floats(d.OC * ld);
            im2col_half(col, inp + n0 * in_sz, m, d, OH, OW, CKK * ld, s);
            const void *w = cuda_to_half(0, weight, (size_t)d.OC * CKK, s);
            gemm_rm_half(s, false, false, d.OC, (int)ld, (int)CKK, 1.0f, w, (int)CKK, col, (int)ld, 0.0f, tmp, (int)ld);
            scatter_out_kernel<<<grid_for(d.OC * ld), THREADS, 0, s>>>(out + (size_t)n0 * d.OC * P, tmp, bias, m, d.OC, P);
            CHECK_LAUNCH();
            continue;
        }
        float *col = scratch, *tmp = scratch + CKK * ld;  // (CKK, m*P), (OC, m*P)
        im2col_kernel<<<grid_for(CKK * ld), THREADS, 0, s>>>(col, inp + n0 * in_sz, m, d, OH, OW);
        CHECK_LAUNCH();
        // tmp (OC, m*P) = weight (OC, CKK) @ col (CKK, m*P)
        gemm_rm(s, false, false, d.OC, (int)ld, (int)CKK, 1.0f, weight, (int)CKK, col, (int)ld, 0.0f, tmp, (int)ld);
        scatter_out_kernel<<<grid_for(d.OC * ld), THREADS, 0, s>>>(out + (size_t)n0 * d.OC * P, tmp, bias, m, d.OC, P);
        CHECK_LAUNCH();
    }
}

extern "C" void conv2d_backward_cuda(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                     const float *weight, float *scratch, Conv2dDims d, cudaStream_t s) {
    int OH = conv2d_oh(d), OW = conv2d_ow(d), nb = conv_chunk_cuda(d);
    size_t P = (size_t)OH * OW, CKK = (size_t)d.C * d.K * d.K, in_sz = (size_t)d.C * d.H * d.W;
    size_t out_sz = (size_t)d.OC * P;
    for (int n0 = 0; n0 < d.N; n0 += nb) {
        int m = d.N - n0 < nb ? d.N - n0 : nb;
        size_t ld = (size_t)m * P;
        // in the forward pass this was: out = weight @ col + bias
        if (dbias) {
            conv_dbias_kernel<<<d.OC, THREADS, 0, s>>>(dbias, dout + n0 * out_sz, m, d.OC, P);
            CHECK_LAUNCH();
        }
        if (half_gemms()) {
            void *col = scratch, *dtmp = scratch + half_floats(CKK * ld);
            float *dcol = scratch + half_floats(CKK * ld) + half_floats(d.OC * ld);
            if (cuda_get_precision() == PREC_FP16)
                gather_dout_kernel<<<grid_for(d.OC * ld), THREADS, 0, s>>>((__half *)dtmp, dout + n0 * out_sz, m, d.OC, P);
            else
                gather_dout_kernel<<<grid_for(d.OC * ld), THREADS, 0, s>>>((__nv_bfloat16 *)dtmp, dout + n0 * out_sz, m,
                                                                           d.OC, P);
            CHECK_LAUNCH();
            if (dweight) {
                im2col_half(col, inp + n0 * in_sz, m, d, OH, OW, CKK * ld, s);
                gemm_rm_half(s, false, true, d.OC, (int)CKK, (int)ld, 1.0f, dtmp, (int)ld, col, (int)ld, 1.0f, dweight,
                             (int)CKK);
            }
            if (dinp) {
                const void *w = cuda_to_half(0, weight, (size_t)d.OC * CKK, s);
                gemm_rm_half(s, true, false, (int)CKK, (int)ld, d.OC, 1.0f, w, (int)CKK, dtmp, (int)ld, 0.0f, dcol, (int)ld);
                col2im_add_kernel<<<grid_for((size_t)m * in_sz), THREADS, 0, s>>>(dinp + n0 * in_sz, dcol, m, d, OH, OW);
                CHECK_LAUNCH();
            }
            continue;
        }
        float *col = scratch, *dtmp = scratch + CKK * ld;  // (CKK, m*P), (OC, m*P)
        gather_dout_kernel<<<grid_for(d.OC * ld), THREADS, 0, s>>>(dtmp, dout + n0 * out_sz, m, d.OC, P);
        CHECK_LAUNCH();
        if (dweight) {
            im2col_kernel<<<grid_for(CKK * ld), THREADS, 0, s>>>(col, inp + n0 * in_sz, m, d, OH, OW);
            CHECK_LAUNCH();
            // dweight (OC, CKK) += dtmp (OC, m*P) @ col^T
            gemm_rm(s, false, true, d.OC, (int)CKK, (int)ld, 1.0f, dtmp, (int)ld, col, (int)ld, 1.0f, dweight, (int)CKK);
        }
        if (dinp) {
            // dcol (CKK, m*P) = weight^T @ dtmp, in col's space; then gathered into dinp
            gemm_rm(s, true, false, (int)CKK, (int)ld, d.OC, 1.0f, weight, (int)CKK, dtmp, (int)ld, 0.0f, col, (int)ld);
            col2im_add_kernel<<<grid_for((size_t)m * in_sz), THREADS, 0, s>>>(dinp + n0 * in_sz, col, m, d, OH, OW);
            CHECK_LAUNCH();
        }
    }
}

// ---- attention: per head, GEMMs batched over the samples; one block per softmax row ----
__global__ void softmax_rows_kernel(float *a, int L) {
    float *x = a + (size_t)blockIdx.x * L;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < L; j += blockDim.x) mx = fmaxf(mx, x[j]);
    mx = block_max(mx);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
        float e = expf(x[j] - mx);
        x[j] = e;
        sum += e;
    }
    sum = block_sum(sum);
    float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < L; j += blockDim.x) x[j] *= inv;
}
// ds = att * (ds - sum_l ds_l att_l) * scale, row by row: block b is row i = b % L of sample
// n = b / L; ds holds head h's (N, L, L), att all heads' (N, NH, L, L)
__global__ void softmax_backward_rows_kernel(float *ds, const float *att, int L, int NH, int h, float scale) {
    size_t n = blockIdx.x / L, i = blockIdx.x % L;
    float *g = ds + (size_t)blockIdx.x * L;
    const float *a = att + ((n * NH + h) * L + i) * L;
    float dot = 0.0f;
    for (int j = threadIdx.x; j < L; j += blockDim.x) dot += g[j] * a[j];
    dot = block_sum(dot);
    for (int j = threadIdx.x; j < L; j += blockDim.x) g[j] = a[j] * (g[j] - dot) * scale;
}
// att of (n, h) pairs lives at att + (n*NH + h)*L*L; per head h the samples are NH*L*L apart
extern "C" size_t attention_scratch_floats_cuda(int N, int L) { return (size_t)N * L * L; }

static int row_threads(int L) { return L >= 512 ? 256 : L >= 128 ? 128 : 32; }

extern "C" void attention_forward_cuda(float *out, float *att, const float *q, const float *k, const float *v, int N,
                                       int L, int NH, int HD, cudaStream_t s) {
    const int E = NH * HD;
    const float scale = 1.0f / sqrtf((float)HD);
    const long long LL = (long long)L * L, LE = (long long)L * E;
    for (int h = 0; h < NH; h++) {
        float *a = att + h * LL;
        // a (L, L) = scale * q (L, HD) @ k (L, HD)^T, for every sample
        gemm_rm_batched(s, false, true, L, L, HD, scale, q + h * HD, E, LE, k + h * HD, E, LE, 0.0f, a, L, NH * LL, N);
    }
    softmax_rows_kernel<<<N * NH * L, row_threads(L), 0, s>>>(att, L);
    CHECK_LAUNCH();
    for (int h = 0; h < NH; h++)  // o (L, HD) = a (L, L) @ v (L, HD)
        gemm_rm_batched(s, false, false, L, HD, L, 1.0f, att + h * LL, L, NH * LL, v + h * HD, E, LE, 0.0f, out + h * HD,
                        E, LE, N);
}

extern "C" void attention_backward_cuda(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                        const float *k, const float *v, const float *att, float *scratch, int N, int L,
                                        int NH, int HD, cudaStream_t s) {
    const int E = NH * HD;
    const float scale = 1.0f / sqrtf((float)HD);
    const long long LL = (long long)L * L, LE = (long long)L * E;
    for (int h = 0; h < NH; h++) {
        const float *a = att + h * LL, *go = dout + h * HD;
        // out = att @ v  =>  dv += att^T @ dout, datt = dout @ v^T
        if (dv) gemm_rm_batched(s, true, false, L, HD, L, 1.0f, a, L, NH * LL, go, E, LE, 1.0f, dv + h * HD, E, LE, N);
        if (!dq && !dk) continue;
        gemm_rm_batched(s, false, true, L, L, HD, 1.0f, go, E, LE, v + h * HD, E, LE, 0.0f, scratch, L, LL, N);
        softmax_backward_rows_kernel<<<N * L, row_threads(L), 0, s>>>(scratch, att, L, NH, h, scale);
        CHECK_LAUNCH();
        // s = q @ k^T  =>  dq += ds @ k, dk += ds^T @ q
        if (dq) gemm_rm_batched(s, false, false, L, HD, L, 1.0f, scratch, L, LL, k + h * HD, E, LE, 1.0f, dq + h * HD, E, LE, N);
        if (dk) gemm_rm_batched(s, true, false, L, HD, L, 1.0f, scratch, L, LL, q + h * HD, E, LE, 1.0f, dk + h * HD, E, LE, N);
    }
}
