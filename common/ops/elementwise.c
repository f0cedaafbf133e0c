// elementwise.c: SiLU, nearest upsampling, channel concat, residual and broadcast adds.
// Backward adds (see ops.h).
#include <math.h>
#include <string.h>

#include "ops.h"
#include "pointwise.h"

#define PAR_N 32768  // below this many elements threads cost more than they save

void silu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static) if (n > PAR_N)
    for (size_t i = 0; i < n; i++) out[i] = silu_one(inp[i]);
}

void silu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    // in the forward pass this was: y = x * sigmoid(x) (silu_grad_one in pointwise.h)
#pragma omp parallel for schedule(static) if (n > PAR_N)
    for (size_t i = 0; i < n; i++) dinp[i] += dout[i] * silu_grad_one(inp[i]);
}

void upsample_nearest2x_forward(float *out, const float *inp, int N, int C, int H, int W) {
    long planes = (long)N * C;
#pragma omp parallel for schedule(static) if (planes * H * W > PAR_N)
    for (long p = 0; p < planes; p++) {
        const float *x = inp + (size_t)p * H * W;
        float *y = out + (size_t)p * 4 * H * W;
        for (int h = 0; h < H; h++) {
            float *r0 = y + (size_t)(2 * h) * 2 * W, *r1 = r0 + 2 * W;
            for (int w = 0; w < W; w++) r0[2 * w] = r0[2 * w + 1] = x[(size_t)h * W + w];
            memcpy(r1, r0, (size_t)2 * W * sizeof(float));
        }
    }
}

void upsample_nearest2x_backward(float *dinp, const float *dout, int N, int C, int H, int W) {
    long planes = (long)N * C;
#pragma omp parallel for schedule(static) if (planes * H * W > PAR_N)
    for (long p = 0; p < planes; p++) {
        float *dx = dinp + (size_t)p * H * W;
        const float *dy = dout + (size_t)p * 4 * H * W;
        for (int h = 0; h < H; h++) {
            const float *r0 = dy + (size_t)(2 * h) * 2 * W, *r1 = r0 + 2 * W;
            for (int w = 0; w < W; w++) dx[(size_t)h * W + w] += r0[2 * w] + r0[2 * w + 1] + r1[2 * w] + r1[2 * w + 1];
        }
    }
}

void concat_channels_forward(float *out, const float *a, const float *b, int N, int Ca, int Cb, int HW) {
    size_t sa = (size_t)Ca * HW, sb = (size_t)Cb * HW;
    for (int n = 0; n < N; n++) {
        memcpy(out + n * (sa + sb), a + n * sa, sa * sizeof(float));
        memcpy(out + n * (sa + sb) + sa, b + n * sb, sb * sizeof(float));
    }
}

void concat_channels_backward(float *da, float *db, const float *dout, int N, int Ca, int Cb, int HW) {
    size_t sa = (size_t)Ca * HW, sb = (size_t)Cb * HW;
    for (int n = 0; n < N; n++) {
        if (da) accumulate(da + n * sa, dout + n * (sa + sb), sa);
        if (db) accumulate(db + n * sb, dout + n * (sa + sb) + sa, sb);
    }
}

void residual_forward(float *out, const float *a, const float *b, float scale, size_t n) {
#pragma omp parallel for schedule(static) if (n > PAR_N)
    for (size_t i = 0; i < n; i++) out[i] = (a[i] + b[i]) * scale;
}

void residual_backward(float *da, float *db, const float *dout, float scale, size_t n) {
#pragma omp parallel for schedule(static) if (n > PAR_N)
    for (size_t i = 0; i < n; i++) {
        float g = dout[i] * scale;
        if (da) da[i] += g;
        if (db) db[i] += g;
    }
}

void add_channel_forward(float *out, const float *inp, const float *vec, int N, int C, int HW) {
#pragma omp parallel for collapse(2) schedule(static) if ((long)N * C * HW > PAR_N)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            size_t off = ((size_t)n * C + c) * HW;
            float v = vec[n * C + c];
            for (int i = 0; i < HW; i++) out[off + i] = inp[off + i] + v;
        }
}

void add_channel_backward(float *dinp, float *dvec, const float *dout, int N, int C, int HW) {
#pragma omp parallel for collapse(2) schedule(static) if ((long)N * C * HW > PAR_N)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            size_t off = ((size_t)n * C + c) * HW;
            double s = 0;
            for (int i = 0; i < HW; i++) {
                s += dout[off + i];
                if (dinp) dinp[off + i] += dout[off + i];
            }
            if (dvec) dvec[n * C + c] += (float)s;
        }
}

void accumulate(float *dst, const float *src, size_t n) {
#pragma omp parallel for schedule(static) if (n > PAR_N)
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

void copy_floats(float *dst, const float *src, size_t n) { memcpy(dst, src, n * sizeof(float)); }

float l2_norm(const float *x, size_t n) {
    double ss = 0;
#pragma omp parallel for schedule(static) reduction(+ : ss) if (n > PAR_N)
    for (size_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    return (float)sqrt(ss);
}

void axpby_rows(float *out, const float *x, const float *a, const float *y, const float *b, int N, size_t per) {
#pragma omp parallel for schedule(static) if ((size_t)N * per > PAR_N)
    for (int n = 0; n < N; n++) {
        const float an = a[n], bn = b[n];
        for (size_t j = 0; j < per; j++) out[n * per + j] = an * x[n * per + j] + bn * y[n * per + j];
    }
}
