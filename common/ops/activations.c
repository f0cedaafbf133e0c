// activations.c: LeakyReLU and the hinge GAN losses (activations.h). Backward adds (see ops.h).
// The losses sum in double; the gradients are PyTorch's: relu'(0) = 0, leaky_relu'(0) = slope.
#include "activations.h"

#define PAR_N 32768  // below this many elements threads cost more than they save

void leaky_relu_forward(float *out, const float *inp, size_t n, float slope) {
#pragma omp parallel for schedule(static) if (n > PAR_N)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : slope * inp[i];
}

void leaky_relu_backward(float *dinp, const float *dout, const float *inp, size_t n, float slope) {
    // in the forward pass this was: y = x > 0 ? x : slope * x
#pragma omp parallel for schedule(static) if (n > PAR_N)
    for (size_t i = 0; i < n; i++) dinp[i] += inp[i] > 0.0f ? dout[i] : slope * dout[i];
}

float hinge_d_forward(const float *logits_real, const float *logits_fake, size_t n) {
    double sr = 0, sf = 0;
    for (size_t i = 0; i < n; i++) {
        float r = 1.0f - logits_real[i], f = 1.0f + logits_fake[i];
        sr += r > 0.0f ? r : 0.0f;
        sf += f > 0.0f ? f : 0.0f;
    }
    return (float)(0.5 * (sr / (double)n + sf / (double)n));
}

void hinge_d_backward(float *dreal, float *dfake, const float *logits_real, const float *logits_fake, size_t n,
                      float dloss) {
    // in the forward pass this was: d = 0.5 * mean(relu(1 - real)) + 0.5 * mean(relu(1 + fake))
    float g = 0.5f * dloss / (float)n;
    for (size_t i = 0; i < n; i++) {
        if (dreal && 1.0f - logits_real[i] > 0.0f) dreal[i] -= g;
        if (dfake && 1.0f + logits_fake[i] > 0.0f) dfake[i] += g;
    }
}

float hinge_g_forward(const float *logits_fake, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += logits_fake[i];
    return (float)(-s / (double)n);
}

void hinge_g_backward(float *dfake, size_t n, float dloss) {
    // in the forward pass this was: g = -sum(fake) / n
    float g = dloss / (float)n;
    for (size_t i = 0; i < n; i++) dfake[i] -= g;
}
