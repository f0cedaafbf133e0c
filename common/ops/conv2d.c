// conv2d.c: 2-D convolution as im2col + one OpenBLAS sgemm per chunk of images.
// Backward adds into dinp, dweight and dbias (see ops.h).
//
// A chunk of nb images is unrolled into col (C*K*K, nb*P) with P = OH*OW. Small feature maps
// (P < DIRECT_P) use one GEMM for the whole chunk through a (OC, nb*P) staging buffer, so 4x4 maps
// at batch 32 are one 16x512 product instead of 32 skinny ones; large maps run one GEMM per image
// that reads and writes NCHW in place (no staging copies). nb keeps scratch under CONV_CAP.
// Large maps with at least one image per thread (the VAE's 64x64 and 32x32 maps in training) go
// further: each thread unrolls and multiplies tiles of output rows of its own images, one-thread
// GEMMs on a tile that stays in the core's cache (forward_tiled / backward_tiled).
#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "../check.h"
#include "ops.h"

#define CONV_CAP ((size_t)16 << 20)  // floats of scratch per call (64 MB)
#define DIRECT_P 1024                // from this many output pixels per image, GEMM straight into NCHW
#define TILE_FLOATS (128 * 1024)     // one thread's unrolled tile of output rows (512 KB, in its L2)

static int conv_chunk(Conv2dDims d) { return conv2d_chunk(d, CONV_CAP); }

size_t conv2d_scratch_floats(Conv2dDims d) {
    size_t P = (size_t)conv2d_oh(d) * conv2d_ow(d), CKK = (size_t)d.C * d.K * d.K;
    return (size_t)conv_chunk(d) * P * (CKK + d.OC);
}

// Valid output columns [lo, hi) for kernel column kw: those whose input column is inside the image.
static inline void valid_cols(int *lo, int *hi, int kw, Conv2dDims d, int OW) {
    int off = kw - d.pad_l;  // iw = ow * stride + off
    int a = off >= 0 ? 0 : (-off + d.stride - 1) / d.stride;
    int b = d.W - off <= 0 ? 0 : (d.W - off + d.stride - 1) / d.stride;
    *lo = a < OW ? a : OW;
    *hi = b < OW ? b : OW;
    if (*hi < *lo) *hi = *lo;
}

// Rows (kh, kw) of one channel's slice of col, output rows [oh0, oh1): col_c[(kh*K + kw)*ld +
// (oh - oh0)*OW + ow] <- xc (H, W) at the input pixel under (oh, ow), 0 in the padding.
static void im2col_channel(float *col_c, size_t ld, const float *xc, Conv2dDims d, int OW, int oh0, int oh1) {
    int K = d.K;
    for (int kh = 0; kh < K; kh++)
        for (int kw = 0; kw < K; kw++) {
            float *row = col_c + (size_t)(kh * K + kw) * ld;
            int lo, hi, off = kw - d.pad_l;
            valid_cols(&lo, &hi, kw, d, OW);
            for (int oh = oh0; oh < oh1; oh++) {
                int ih = oh * d.stride - d.pad_t + kh;
                float *dst = row + (size_t)(oh - oh0) * OW;
                if (ih < 0 || ih >= d.H) {
                    memset(dst, 0, (size_t)OW * sizeof(float));
                    continue;
                }
                const float *src = xc + (size_t)ih * d.W + off;
                for (int ow = 0; ow < lo; ow++) dst[ow] = 0.0f;
                if (d.stride == 1) memcpy(dst + lo, src + lo, (size_t)(hi - lo) * sizeof(float));
                else for (int ow = lo; ow < hi; ow++) dst[ow] = src[ow * d.stride];
                for (int ow = hi; ow < OW; ow++) dst[ow] = 0.0f;
            }
        }
}

// dxc (H, W) += the scatter of one channel's slice of col (the transpose of im2col_channel)
static void col2im_channel_add(float *dxc, const float *col_c, size_t ld, Conv2dDims d, int OW, int oh0, int oh1) {
    int K = d.K;
    for (int kh = 0; kh < K; kh++)
        for (int kw = 0; kw < K; kw++) {
            const float *row = col_c + (size_t)(kh * K + kw) * ld;
            int lo, hi, off = kw - d.pad_l;
            valid_cols(&lo, &hi, kw, d, OW);
            for (int oh = oh0; oh < oh1; oh++) {
                int ih = oh * d.stride - d.pad_t + kh;
                if (ih < 0 || ih >= d.H) continue;
                float *dst = dxc + (size_t)ih * d.W + off;
                const float *src = row + (size_t)(oh - oh0) * OW;
                if (d.stride == 1) for (int ow = lo; ow < hi; ow++) dst[ow] += src[ow];  // vectorised
                else for (int ow = lo; ow < hi; ow++) dst[ow * d.stride] += src[ow];
            }
        }
}

// col (C*K*K, ld) columns [i*P, (i+1)*P) <- image i of x (m images of (C,H,W)), for every i < m
static void im2col(float *col, size_t ld, const float *x, int m, Conv2dDims d, int OH, int OW) {
    size_t P = (size_t)OH * OW, in_sz = (size_t)d.C * d.H * d.W, KK = (size_t)d.K * d.K;
#pragma omp parallel for collapse(2) schedule(static)
    for (int i = 0; i < m; i++)
        for (int c = 0; c < d.C; c++)
            im2col_channel(col + c * KK * ld + i * P, ld, x + i * in_sz + (size_t)c * d.H * d.W, d, OW, 0, OH);
}

// dx (m images) += scatter of col columns (the transpose of im2col)
static void col2im_add(float *dx, const float *col, size_t ld, int m, Conv2dDims d, int OH, int OW) {
    size_t P = (size_t)OH * OW, in_sz = (size_t)d.C * d.H * d.W, KK = (size_t)d.K * d.K;
#pragma omp parallel for collapse(2) schedule(static)
    for (int i = 0; i < m; i++)
        for (int c = 0; c < d.C; c++)
            col2im_channel_add(dx + i * in_sz + (size_t)c * d.H * d.W, col + c * KK * ld + i * P, ld, d, OW, 0, OH);
}

// ---- large maps, at least one image per thread: tiles of output rows ----
// Each thread takes whole images and walks each in tiles of R output rows: it unrolls one tile
// (C*K*K, R*OW) into its own slice of scratch and multiplies it there with a one-thread GEMM, so
// the unrolled columns stay in the core's cache instead of going through memory for a whole chunk.

static int tile_rows(Conv2dDims d, int OH, int OW) {
    size_t CKK = (size_t)d.C * d.K * d.K;
    size_t r = TILE_FLOATS / (CKK * OW);
    return r < 1 ? 1 : r > (size_t)OH ? OH : (int)r;
}

// floats of scratch per thread: the tile, then (OC, C*K*K) for the thread's share of dweight
static size_t tile_floats(Conv2dDims d, int R, int OW) {
    size_t CKK = (size_t)d.C * d.K * d.K;
    return CKK * R * OW + (size_t)d.OC * CKK;
}

static int use_tiles(Conv2dDims d) {
    int OH = conv2d_oh(d), OW = conv2d_ow(d), threads = omp_get_max_threads();
    return (size_t)OH * OW >= DIRECT_P && d.N >= threads &&
           threads * tile_floats(d, tile_rows(d, OH, OW), OW) <= conv2d_scratch_floats(d);
}

static void forward_tiled(float *out, const float *inp, const float *weight, const float *bias, float *scratch,
                          Conv2dDims d, int OH, int OW) {
    int R = tile_rows(d, OH, OW);
    size_t P = (size_t)OH * OW, CKK = (size_t)d.C * d.K * d.K, KK = (size_t)d.K * d.K, hw = (size_t)d.H * d.W;
#pragma omp parallel
    {
        float *tile = scratch + (size_t)omp_get_thread_num() * tile_floats(d, R, OW);
#pragma omp for schedule(static)
        for (int i = 0; i < d.N; i++)
            for (int oh0 = 0; oh0 < OH; oh0 += R) {
                int oh1 = oh0 + R < OH ? oh0 + R : OH;
                size_t T = (size_t)(oh1 - oh0) * OW;
                for (int c = 0; c < d.C; c++)
                    im2col_channel(tile + c * KK * T, T, inp + ((size_t)i * d.C + c) * hw, d, OW, oh0, oh1);
                float *o = out + (size_t)i * d.OC * P + (size_t)oh0 * OW;  // (OC, T), rows P apart
                if (bias)
                    for (int oc = 0; oc < d.OC; oc++)
                        for (size_t p = 0; p < T; p++) o[(size_t)oc * P + p] = bias[oc];
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d.OC, (int)T, (int)CKK, 1.0f, weight, (int)CKK,
                            tile, (int)T, bias ? 1.0f : 0.0f, o, (int)P);
            }
    }
}

// dweight: each thread sums into its own (OC, C*K*K), added to dweight in thread order at the end
// (the same sums in the same order for the same thread count). dinp: a thread owns its images, so
// the overlapping rows of neighbouring tiles are added one tile after the other.
static void backward_tiled(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                           float *scratch, Conv2dDims d, int OH, int OW) {
    int R = tile_rows(d, OH, OW);
    size_t P = (size_t)OH * OW, CKK = (size_t)d.C * d.K * d.K, KK = (size_t)d.K * d.K, hw = (size_t)d.H * d.W;
    size_t per = tile_floats(d, R, OW), nw = (size_t)d.OC * CKK, dw_at = CKK * R * OW;  // dw after the tile
#pragma omp parallel
    {
        float *tile = scratch + (size_t)omp_get_thread_num() * per, *dw = tile + dw_at;
        if (dweight) memset(dw, 0, nw * sizeof(float));
#pragma omp for schedule(static)
        for (int i = 0; i < d.N; i++)
            for (int oh0 = 0; oh0 < OH; oh0 += R) {
                int oh1 = oh0 + R < OH ? oh0 + R : OH;
                size_t T = (size_t)(oh1 - oh0) * OW;
                const float *g = dout + (size_t)i * d.OC * P + (size_t)oh0 * OW;  // (OC, T), rows P apart
                if (dweight) {  // dw += g @ tile^T
                    for (int c = 0; c < d.C; c++)
                        im2col_channel(tile + c * KK * T, T, inp + ((size_t)i * d.C + c) * hw, d, OW, oh0, oh1);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d.OC, (int)CKK, (int)T, 1.0f, g, (int)P, tile,
                                (int)T, 1.0f, dw, (int)CKK);
                }
                if (dinp) {  // dtile (CKK, T) = weight^T @ g, scattered into image i
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)CKK, (int)T, d.OC, 1.0f, weight, (int)CKK,
                                g, (int)P, 0.0f, tile, (int)T);
                    for (int c = 0; c < d.C; c++)
                        col2im_channel_add(dinp + ((size_t)i * d.C + c) * hw, tile + c * KK * T, T, d, OW, oh0, oh1);
                }
            }
        if (dweight) {
            int threads = omp_get_num_threads();
#pragma omp for schedule(static)
            for (size_t j = 0; j < nw; j++) {
                float s = 0.0f;
                for (int t = 0; t < threads; t++) s += scratch[(size_t)t * per + dw_at + j];
                dweight[j] += s;
            }
        }
    }
}

void conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                    float *scratch, Conv2dDims d) {
    int OH = conv2d_oh(d), OW = conv2d_ow(d), nb = conv_chunk(d);
    size_t P = (size_t)OH * OW, CKK = (size_t)d.C * d.K * d.K, in_sz = (size_t)d.C * d.H * d.W;
    CHECK(OH > 0 && OW > 0, "conv2d: input %dx%d too small for kernel %d", d.H, d.W, d.K);
    if (use_tiles(d)) {
        forward_tiled(out, inp, weight, bias, scratch, d, OH, OW);
        return;
    }
    for (int n0 = 0; n0 < d.N; n0 += nb) {
        int m = d.N - n0 < nb ? d.N - n0 : nb;
        size_t ld = (size_t)m * P;
        float *col = scratch;            // (CKK, m*P)
        float *tmp = scratch + CKK * ld; // (OC, m*P)
        im2col(col, ld, inp + (size_t)n0 * in_sz, m, d, OH, OW);
        if (P >= DIRECT_P) {
            for (int i = 0; i < m; i++) {  // out[n] (OC, P) = weight (OC, CKK) @ col[:, i*P:(i+1)*P]
                float *o = out + (size_t)(n0 + i) * d.OC * P;
                if (bias) {
#pragma omp parallel for schedule(static)
                    for (int oc = 0; oc < d.OC; oc++)
                        for (size_t p = 0; p < P; p++) o[(size_t)oc * P + p] = bias[oc];
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d.OC, (int)P, (int)CKK, 1.0f, weight,
                            (int)CKK, col + i * P, (int)ld, bias ? 1.0f : 0.0f, o, (int)P);
            }
            continue;
        }
        // tmp (OC, m*P) = weight (OC, CKK) @ col (CKK, m*P)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d.OC, (int)ld, (int)CKK, 1.0f, weight,
                    (int)CKK, col, (int)ld, 0.0f, tmp, (int)ld);
#pragma omp parallel for collapse(2) schedule(static)
        for (int i = 0; i < m; i++)
            for (int oc = 0; oc < d.OC; oc++) {
                float *o = out + ((size_t)(n0 + i) * d.OC + oc) * P;
                const float *t = tmp + (size_t)oc * ld + (size_t)i * P;
                float b = bias ? bias[oc] : 0.0f;
                for (size_t p = 0; p < P; p++) o[p] = t[p] + b;
            }
    }
}

void conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, float *scratch, Conv2dDims d) {
    int OH = conv2d_oh(d), OW = conv2d_ow(d), nb = conv_chunk(d);
    size_t P = (size_t)OH * OW, CKK = (size_t)d.C * d.K * d.K, in_sz = (size_t)d.C * d.H * d.W;
    size_t out_sz = (size_t)d.OC * P;
    int direct = P >= DIRECT_P;
    if (dbias) {
#pragma omp parallel for schedule(static)
        for (int oc = 0; oc < d.OC; oc++) {
            double s = 0;
            for (int n = 0; n < d.N; n++) {
                const float *g = dout + (size_t)n * out_sz + (size_t)oc * P;
                for (size_t p = 0; p < P; p++) s += g[p];
            }
            dbias[oc] += (float)s;
        }
    }
    if (use_tiles(d)) {
        backward_tiled(dinp, dweight, dout, inp, weight, scratch, d, OH, OW);
        return;
    }
    for (int n0 = 0; n0 < d.N; n0 += nb) {
        int m = d.N - n0 < nb ? d.N - n0 : nb;
        size_t ld = (size_t)m * P;
        float *col = scratch;             // (CKK, m*P)
        float *dtmp = scratch + CKK * ld; // (OC, m*P), staging for small maps only
        if (!direct) {
#pragma omp parallel for collapse(2) schedule(static)
            for (int i = 0; i < m; i++)
                for (int oc = 0; oc < d.OC; oc++)
                    memcpy(dtmp + (size_t)oc * ld + (size_t)i * P, dout + (size_t)(n0 + i) * out_sz + (size_t)oc * P,
                           P * sizeof(float));
        }
        if (dweight) {
            im2col(col, ld, inp + (size_t)n0 * in_sz, m, d, OH, OW);
            // in the forward pass this was: out = weight @ col; so dweight += dout @ col^T
            if (direct) {
                for (int i = 0; i < m; i++)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d.OC, (int)CKK, (int)P, 1.0f,
                                dout + (size_t)(n0 + i) * out_sz, (int)P, col + i * P, (int)ld, 1.0f, dweight, (int)CKK);
            } else {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d.OC, (int)CKK, (int)ld, 1.0f, dtmp, (int)ld,
                            col, (int)ld, 1.0f, dweight, (int)CKK);
            }
        }
        if (dinp) {
            // dcol (CKK, m*P) = weight^T @ dout, reusing col's space; then scatter back
            if (direct) {
                for (int i = 0; i < m; i++)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)CKK, (int)P, d.OC, 1.0f, weight, (int)CKK,
                                dout + (size_t)(n0 + i) * out_sz, (int)P, 0.0f, col + i * P, (int)ld);
            } else {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)CKK, (int)ld, d.OC, 1.0f, weight,
                            (int)CKK, dtmp, (int)ld, 0.0f, col, (int)ld);
            }
            col2im_add(dinp + (size_t)n0 * in_sz, col, ld, m, d, OH, OW);
        }
    }
}
