// conv2d.c: 2-D convolution as im2col + one OpenBLAS sgemm per chunk of images.
// Backward adds into dinp, dweight and dbias (see ops.h).
//
// A chunk of nb images is unrolled into col (C*K*K, nb*P) with P = OH*OW. Small feature maps
// (P < DIRECT_P) use one GEMM for the whole chunk through a (OC, nb*P) staging buffer, so 4x4 maps
// at batch 32 are one 16x512 product instead of 32 skinny ones; large maps run one GEMM per image
// that reads and writes NCHW in place (no staging copies). nb keeps scratch under CONV_CAP.
#include <cblas.h>
#include <string.h>

#include "../check.h"
#include "ops.h"

#define CONV_CAP ((size_t)16 << 20)  // floats of scratch per call (64 MB)
#define DIRECT_P 1024                // from this many output pixels per image, GEMM straight into NCHW

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

// col (C*K*K, ld) columns [i*P, (i+1)*P) <- image i of x (m images of (C,H,W)), for every i < m
static void im2col(float *col, size_t ld, const float *x, int m, Conv2dDims d, int OH, int OW) {
    int K = d.K;
    size_t P = (size_t)OH * OW, in_sz = (size_t)d.C * d.H * d.W;
#pragma omp parallel for collapse(2) schedule(static)
    for (int i = 0; i < m; i++)
        for (int c = 0; c < d.C; c++) {
            const float *xc = x + i * in_sz + (size_t)c * d.H * d.W;
            for (int kh = 0; kh < K; kh++)
                for (int kw = 0; kw < K; kw++) {
                    float *row = col + ((size_t)(c * K + kh) * K + kw) * ld + i * P;
                    int lo, hi, off = kw - d.pad_l;
                    valid_cols(&lo, &hi, kw, d, OW);
                    for (int oh = 0; oh < OH; oh++) {
                        int ih = oh * d.stride - d.pad_t + kh;
                        float *dst = row + (size_t)oh * OW;
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
}

// dx (m images) += scatter of col columns (the transpose of im2col)
static void col2im_add(float *dx, const float *col, size_t ld, int m, Conv2dDims d, int OH, int OW) {
    int K = d.K;
    size_t P = (size_t)OH * OW, in_sz = (size_t)d.C * d.H * d.W;
#pragma omp parallel for collapse(2) schedule(static)
    for (int i = 0; i < m; i++)
        for (int c = 0; c < d.C; c++) {
            float *dxc = dx + i * in_sz + (size_t)c * d.H * d.W;
            for (int kh = 0; kh < K; kh++)
                for (int kw = 0; kw < K; kw++) {
                    const float *row = col + ((size_t)(c * K + kh) * K + kw) * ld + i * P;
                    int lo, hi, off = kw - d.pad_l;
                    valid_cols(&lo, &hi, kw, d, OW);
                    for (int oh = 0; oh < OH; oh++) {
                        int ih = oh * d.stride - d.pad_t + kh;
                        if (ih < 0 || ih >= d.H) continue;
                        float *dst = dxc + (size_t)ih * d.W + off;
                        const float *src = row + (size_t)oh * OW;
                        for (int ow = lo; ow < hi; ow++) dst[ow * d.stride] += src[ow];
                    }
                }
        }
}

void conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                    float *scratch, Conv2dDims d) {
    int OH = conv2d_oh(d), OW = conv2d_ow(d), nb = conv_chunk(d);
    size_t P = (size_t)OH * OW, CKK = (size_t)d.C * d.K * d.K, in_sz = (size_t)d.C * d.H * d.W;
    CHECK(OH > 0 && OW > 0, "conv2d: input %dx%d too small for kernel %d", d.H, d.W, d.K);
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
