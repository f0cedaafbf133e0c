// linear.c: out = inp @ weight^T + bias, as PyTorch's nn.Linear. Backward adds (see ops.h).
#include <cblas.h>

#include "ops.h"

void linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int IN, int OUT) {
    // out (N, OUT) = inp (N, IN) @ weight (OUT, IN)^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OUT, IN, 1.0f, inp, IN, weight, IN, 0.0f, out, OUT);
    if (!bias) return;
#pragma omp parallel for schedule(static) if ((long)N * OUT > 16384)
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OUT; o++) out[(size_t)n * OUT + o] += bias[o];
}

void linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int IN, int OUT) {
    // in the forward pass this was: out = inp @ weight^T + bias
    if (dinp)  // dinp (N, IN) += dout (N, OUT) @ weight (OUT, IN)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IN, OUT, 1.0f, dout, OUT, weight, IN, 1.0f, dinp, IN);
    if (dweight)  // dweight (OUT, IN) += dout^T (OUT, N) @ inp (N, IN)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OUT, IN, N, 1.0f, dout, OUT, inp, IN, 1.0f, dweight, IN);
    if (dbias) {
#pragma omp parallel for schedule(static) if ((long)N * OUT > 16384)
        for (int o = 0; o < OUT; o++) {
            double s = 0;
            for (int n = 0; n < N; n++) s += dout[(size_t)n * OUT + o];
            dbias[o] += (float)s;
        }
    }
}
