// dropout.c: inverted dropout. Forward draws mask (n) = 0 with probability p, else 1/(1-p), from
// the caller's Rng (one stream, so a run is reproducible whatever the thread count);
// out = inp * mask. p == 0 copies (mask may be NULL then). Backward adds (+=) into dinp.
#include <string.h>

#include "check.h"
#include "ops/ops.h"

void dropout_forward(float *out, float *mask, const float *inp, size_t n, float p, Rng *rng) {
    CHECK(p >= 0.0f && p < 1.0f, "dropout_forward: p = %g must be in [0, 1)", (double)p);
    if (p == 0.0f) {
        if (out != inp) memcpy(out, inp, n * sizeof(float));
        if (mask)
            for (size_t i = 0; i < n; i++) mask[i] = 1.0f;
        return;
    }
    CHECK(mask && rng, "dropout_forward: p = %g needs a mask buffer and an Rng", (double)p);
    const float keep_scale = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++) mask[i] = rng_uniform(rng) < p ? 0.0f : keep_scale;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] * mask[i];
}

// In the forward pass this was: out = inp * mask; so dinp += dout * mask.
void dropout_backward(float *dinp, const float *dout, const float *mask, size_t n, float p) {
    if (!dinp) return;
    if (p == 0.0f) {
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t i = 0; i < n; i++) dinp[i] += dout[i];
        return;
    }
    CHECK(mask, "dropout_backward: p = %g needs the forward's mask", (double)p);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) dinp[i] += dout[i] * mask[i];
}
