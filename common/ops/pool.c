// pool.c: global average pooling, inp (N, C, HW) -> out (N, C). Backward adds (+=) into dinp.
#include "ops/ops.h"

void avgpool_forward(float *out, const float *inp, int N, int C, int HW) {
#pragma omp parallel for schedule(static) if ((size_t)N * C * HW > 65536)
    for (int nc = 0; nc < N * C; nc++) {
        const float *x = inp + (size_t)nc * HW;
        double sum = 0.0;
        for (int i = 0; i < HW; i++) sum += x[i];
        out[nc] = (float)(sum / HW);
    }
}

// In the forward pass this was: out[n,c] = sum_i inp[n,c,i] / HW; so dinp[n,c,i] += dout[n,c] / HW.
void avgpool_backward(float *dinp, const float *dout, int N, int C, int HW) {
    if (!dinp) return;
    const float inv = 1.0f / (float)HW;
#pragma omp parallel for schedule(static) if ((size_t)N * C * HW > 65536)
    for (int nc = 0; nc < N * C; nc++) {
        float g = dout[nc] * inv;
        float *dx = dinp + (size_t)nc * HW;
        for (int i = 0; i < HW; i++) dx[i] += g;
    }
}

// ---- 2x2 average pooling, stride 2 (torch.nn.AvgPool2d(2): an odd last row/column is dropped) ----
void avgpool2x2_forward(float *out, const float *inp, int N, int C, int H, int W) {
    int OH = H / 2, OW = W / 2;
#pragma omp parallel for schedule(static)
    for (size_t nc = 0; nc < (size_t)N * C; nc++) {
        const float *x = inp + nc * H * W;
        float *y = out + nc * OH * OW;
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                const float *p = x + (size_t)(2 * i) * W + 2 * j;
                y[i * OW + j] = 0.25f * (p[0] + p[1] + p[W] + p[W + 1]);
            }
    }
}

void avgpool2x2_backward(float *dinp, const float *dout, int N, int C, int H, int W) {
    int OH = H / 2, OW = W / 2;
#pragma omp parallel for schedule(static)
    for (size_t nc = 0; nc < (size_t)N * C; nc++) {
        float *dx = dinp + nc * H * W;
        const float *dy = dout + nc * OH * OW;
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                float g = 0.25f * dy[i * OW + j];
                float *p = dx + (size_t)(2 * i) * W + 2 * j;
                p[0] += g, p[1] += g, p[W] += g, p[W + 1] += g;
            }
    }
}
