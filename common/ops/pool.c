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
