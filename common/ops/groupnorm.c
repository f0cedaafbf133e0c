// groupnorm.c: torch.nn.GroupNorm (affine). Statistics per (sample, group) over C/G channels x HW,
// biased variance, accumulated in double. Backward adds (see ops.h).
#include <math.h>

#include "../check.h"
#include "ops.h"

void groupnorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int N, int C, int HW, int G, float eps) {
    CHECK(C % G == 0, "groupnorm: %d channels do not divide into %d groups", C, G);
    int CG = C / G;
    size_t gsize = (size_t)CG * HW;
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            const float *x = inp + ((size_t)n * C + (size_t)g * CG) * HW;  // (CG, HW)
            float *y = out + ((size_t)n * C + (size_t)g * CG) * HW;
            double s = 0, ss = 0;
            for (size_t i = 0; i < gsize; i++) s += x[i];
            double mu = s / (double)gsize;
            for (size_t i = 0; i < gsize; i++) ss += (x[i] - mu) * (x[i] - mu);
            float r = (float)(1.0 / sqrt(ss / (double)gsize + (double)eps));
            mean[n * G + g] = (float)mu;
            rstd[n * G + g] = r;
            for (int c = 0; c < CG; c++) {
                float w = weight[g * CG + c] * r, b = bias[g * CG + c] - (float)mu * w;
                for (int i = 0; i < HW; i++) y[(size_t)c * HW + i] = x[(size_t)c * HW + i] * w + b;
            }
        }
}

void groupnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean, const float *rstd,
                        int N, int C, int HW, int G) {
    int CG = C / G;
    size_t gsize = (size_t)CG * HW;
    // in the forward pass this was: y = (x - mean) * rstd * w + b, xhat = (x - mean) * rstd
    if (dweight || dbias) {
#pragma omp parallel for schedule(static)
        for (int c = 0; c < C; c++) {
            int g = c / CG;
            double sw = 0, sb = 0;
            for (int n = 0; n < N; n++) {
                const float *x = inp + ((size_t)n * C + c) * HW, *dy = dout + ((size_t)n * C + c) * HW;
                float mu = mean[n * G + g], r = rstd[n * G + g];
                for (int i = 0; i < HW; i++) {
                    sb += dy[i];
                    sw += dy[i] * (x[i] - mu) * r;
                }
            }
            if (dweight) dweight[c] += (float)sw;
            if (dbias) dbias[c] += (float)sb;
        }
    }
    if (!dinp) return;
    // dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dxhat = dy * w
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            size_t off = ((size_t)n * C + (size_t)g * CG) * HW;
            const float *x = inp + off, *dy = dout + off;
            float *dx = dinp + off;
            float mu = mean[n * G + g], r = rstd[n * G + g];
            double s1 = 0, s2 = 0;
            for (int c = 0; c < CG; c++) {
                float w = weight[g * CG + c];
                for (int i = 0; i < HW; i++) {
                    size_t j = (size_t)c * HW + i;
                    double dxh = (double)dy[j] * w;
                    s1 += dxh;
                    s2 += dxh * (x[j] - mu) * r;
                }
            }
            float m1 = (float)(s1 / (double)gsize), m2 = (float)(s2 / (double)gsize);
            for (int c = 0; c < CG; c++) {
                float w = weight[g * CG + c];
                for (int i = 0; i < HW; i++) {
                    size_t j = (size_t)c * HW + i;
                    float xh = (x[j] - mu) * r;
                    dx[j] += r * (dy[j] * w - m1 - xh * m2);
                }
            }
        }
}
