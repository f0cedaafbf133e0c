// timesteps.c: diffusers' get_timestep_embedding (sinusoidal), t (N) -> out (N, dim), and its
// derivative with respect to t. Backward adds (+=) into dt.
//
// Rounding follows PyTorch's float32 steps so large t (arg ~ 1e3) match bit for bit:
//   exponent_i = float(-ln(max_period)) * i / (half - shift)   (float32 ops)
//   freq_i = exp(exponent_i);  arg = scale * (t * freq_i)       (float32)
//   out = [sin(arg), cos(arg)], or [cos, sin] with flip_sin_to_cos; odd dim: last column 0.
#include <math.h>

#include "check.h"
#include "ops/ops.h"
#include "ops/pointwise.h"

void timestep_embedding_forward(float *out, const float *t, int N, int dim, int flip_sin_to_cos,
                                float downscale_freq_shift, float scale, float max_period) {
    const int half = dim / 2;
    // sin columns start at s0, cos columns at c0
    const int s0 = flip_sin_to_cos ? half : 0, c0 = flip_sin_to_cos ? 0 : half;
    for (int n = 0; n < N; n++) {
        float *o = out + (size_t)n * dim;
        for (int i = 0; i < half; i++) {
            float arg = scale * (t[n] * timestep_freq(i, half, downscale_freq_shift, max_period));
            o[s0 + i] = sinf(arg);
            o[c0 + i] = cosf(arg);
        }
        if (dim % 2) o[dim - 1] = 0.0f;
    }
}

// In the forward pass this was: o = sin(arg), o' = cos(arg), arg = scale * t * freq_i;
// so dt += sum_i scale * freq_i * (dout_sin_i * cos(arg) - dout_cos_i * sin(arg)).
void timestep_embedding_backward(float *dt, const float *dout, const float *t, int N, int dim,
                                 int flip_sin_to_cos, float downscale_freq_shift, float scale,
                                 float max_period) {
    if (!dt) return;
    const int half = dim / 2;
    const int s0 = flip_sin_to_cos ? half : 0, c0 = flip_sin_to_cos ? 0 : half;
    for (int n = 0; n < N; n++) {
        const float *g = dout + (size_t)n * dim;
        double acc = 0.0;
        for (int i = 0; i < half; i++) {
            float freq = timestep_freq(i, half, downscale_freq_shift, max_period);
            float arg = scale * (t[n] * freq);
            acc += (double)scale * freq * ((double)g[s0 + i] * cosf(arg) - (double)g[c0 + i] * sinf(arg));
        }
        dt[n] += (float)acc;
    }
}
