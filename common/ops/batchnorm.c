// batchnorm.c: torch.nn.BatchNorm2d (affine, track_running_stats). Statistics per channel over
// the batch and the pixels (N x HW), accumulated in double. Backward adds (see ops.h).
#include <math.h>

#include "../check.h"
#include "ops.h"

void batchnorm_forward(float *out, float *mean, float *rstd, float *running_mean, float *running_var, const float *inp,
                       const float *weight, const float *bias, int N, int C, int HW, float eps, float momentum,
                       int train) {
    size_t M = (size_t)N * HW;
    CHECK(!train || M > 1, "batchnorm: training needs more than one value per channel (N %d x HW %d)", N, HW);
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double mu, var;
        if (train) {
            double s = 0, ss = 0;
            for (int n = 0; n < N; n++)
                for (int i = 0; i < HW; i++) s += inp[((size_t)n * C + c) * HW + i];
            mu = s / (double)M;
            for (int n = 0; n < N; n++)
                for (int i = 0; i < HW; i++) {
                    double d = inp[((size_t)n * C + c) * HW + i] - mu;
                    ss += d * d;
                }
            var = ss / (double)M;
            if (running_mean) {  // torch: the running variance is the unbiased one
                running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu);
                running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * var * (double)M / (double)(M - 1));
            }
        } else {
            mu = running_mean[c], var = running_var[c];
        }
        float r = (float)(1.0 / sqrt(var + (double)eps));
        mean[c] = (float)mu, rstd[c] = r;
        float w = weight[c] * r, b = bias[c] - (float)mu * w;
        for (int n = 0; n < N; n++) {
            const float *x = inp + ((size_t)n * C + c) * HW;
            float *y = out + ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) y[i] = x[i] * w + b;
        }
    }
}

void batchnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C, int HW, int train) {
    size_t M = (size_t)N * HW;
    // in the forward pass this was: y = (x - mean) * rstd * w + b, xhat = (x - mean) * rstd
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        float mu = mean[c], r = rstd[c], w = weight[c];
        double sb = 0, sw = 0;  // sum dy, sum dy * xhat
        for (int n = 0; n < N; n++) {
            const float *x = inp + ((size_t)n * C + c) * HW, *dy = dout + ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) sb += dy[i], sw += (double)dy[i] * (x[i] - mu) * r;
        }
        if (dweight) dweight[c] += (float)sw;
        if (dbias) dbias[c] += (float)sb;
        if (!dinp) continue;
        // train: dx = r * w * (dy - mean(dy) - xhat * mean(dy * xhat)); eval: the statistics are constants
        float m1 = train ? (float)(sb / (double)M) : 0.0f, m2 = train ? (float)(sw / (double)M) : 0.0f;
        for (int n = 0; n < N; n++) {
            const float *x = inp + ((size_t)n * C + c) * HW, *dy = dout + ((size_t)n * C + c) * HW;
            float *dx = dinp + ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) dx[i] += r * w * (dy[i] - m1 - (x[i] - mu) * r * m2);
        }
    }
}
