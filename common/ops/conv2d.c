// conv2d.c: 2-D convolution as im2col + one OpenBLAS sgemm per chunk of images.
// Backward adds into dinp, dweight and dbias (see ops.h).
//
// A chunk of nb images is unrolled into col (C*K*K, nb*P) with P = OH*OW, so a single GEMM
// covers the chunk even when the spatial size is tiny (4x4 feature maps at batch 32 are one
// 16x512 matrix instead of 32 skinny products). nb is chosen so scratch stays under CONV_CAP.
#include <cblas.h>
#include <string.h>

#include "../check.h"
#include "ops.h"

#define CONV_CAP ((size_t)16 << 20)  // floats of scratch per call (64 MB)

static int conv_chunk(Conv2dDims d) {
    size_t P = (size_t)conv2d_oh(d) * conv2d_ow(d), CKK = (size_t)d.C * d.K * d.K;
    size_t per_image = P * (CKK + d.OC);
    size_t nb = CONV_CAP / (per_image ? per_image : 1);
    if (nb < 1) nb = 1;
    if (nb > (size_t)d.N) nb = (size_t)d.N;
    return (int)nb;
}

size_t conv2d_scratch_floats(Conv2dDims d) {
    size_t P = (size_t)conv2d_oh(d) * conv2d_ow(d), CKK = (size_t)d.C * d.K * d.K;
    return (size_t)conv_chunk(d) * P * (CKK + d.OC);
}

// col (C*K*K, ld) columns [i*P, (i+1)*P) <- image x (C,H,W)
static void im2col(float *col, size_t ld, const float *x, Conv2dDims d, int OH, int OW) {
    int K = d.K;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < d.C; c++) {
        const float *xc = x + (size_t)c * d.H * d.W;
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                float *row = col + ((size_t)(c * K + kh) * K + kw) * ld;
                for (int oh = 0; oh < OH; oh++) {
                    int ih = oh * d.stride - d.pad_t + kh;
                    float *dst = row + (size_t)oh * OW;
                    if (ih < 0 || ih >= d.H) {
                        memset(dst, 0, (size_t)OW * sizeof(float));
                        continue;
                    }
                    const float *src = xc + (size_t)ih * d.W;
                    for (int ow = 0; ow < OW; ow++) {
                        int iw = ow * d.stride - d.pad_l + kw;
                        dst[ow] = (iw >= 0 && iw < d.W) ? src[iw] : 0.0f;
                    }
                }
            }
    }
}

// image dx (C,H,W) += scatter of col columns (the transpose of im2col)
static void col2im_add(float *dx, const float *col, size_t ld, Conv2dDims d, int OH, int OW) {
    int K = d.K;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < d.C; c++) {
        float *dxc = dx + (size_t)c * d.H * d.W;
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                const float *row = col + ((size_t)(c * K + kh) * K + kw) * ld;
                for (int oh = 0; oh < OH; oh++) {
                    int ih = oh * d.stride - d.pad_t + kh;
                    if (ih < 0 || ih >= d.H) continue;
                    float *dst = dxc + (size_t)ih * d.W;
                    const float *src = row + (size_t)oh * OW;
                    for (int ow = 0; ow < OW; ow++) {
                        int iw = ow * d.stride - d.pad_l + kw;
                        if (iw >= 0 && iw < d.W) dst[iw] += src[ow];
                    }
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
        for (int i = 0; i < m; i++) im2col(col + i * P, ld, inp + (size_t)(n0 + i) * in_sz, d, OH, OW);
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
    for (int n0 = 0; n0 < d.N; n0 += nb) {
        int m = d.N - n0 < nb ? d.N - n0 : nb;
        size_t ld = (size_t)m * P;
        float *col = scratch;             // (CKK, m*P)
        float *dtmp = scratch + CKK * ld; // (OC, m*P)
#pragma omp parallel for collapse(2) schedule(static)
        for (int i = 0; i < m; i++)
            for (int oc = 0; oc < d.OC; oc++)
                memcpy(dtmp + (size_t)oc * ld + (size_t)i * P, dout + ((size_t)(n0 + i) * d.OC + oc) * P,
                       P * sizeof(float));
        if (dbias) {
#pragma omp parallel for schedule(static)
            for (int oc = 0; oc < d.OC; oc++) {
                double s = 0;
                const float *t = dtmp + (size_t)oc * ld;
                for (size_t p = 0; p < ld; p++) s += t[p];
                dbias[oc] += (float)s;
            }
        }
        if (dweight) {
            for (int i = 0; i < m; i++) im2col(col + i * P, ld, inp + (size_t)(n0 + i) * in_sz, d, OH, OW);
            // in the forward pass this was: tmp = weight @ col; so dweight += dtmp @ col^T
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d.OC, (int)CKK, (int)ld, 1.0f, dtmp, (int)ld,
                        col, (int)ld, 1.0f, dweight, (int)CKK);
        }
        if (dinp) {
            // dcol (CKK, m*P) = weight^T @ dtmp, reusing col's space
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)CKK, (int)ld, d.OC, 1.0f, weight,
                        (int)CKK, dtmp, (int)ld, 0.0f, col, (int)ld);
            for (int i = 0; i < m; i++) col2im_add(dinp + (size_t)(n0 + i) * in_sz, col + i * P, ld, d, OH, OW);
        }
    }
}
