// pointwise.h: the per-element math every backend shares. Each function is `static inline` and
// marked DOPPEL_HD, so gcc builds it into the CPU ops and nvcc into the CUDA kernels from this one
// body: the GPU computes the same formula in the same order (within float rounding of expf, sinf
// and fused multiply-adds).
#pragma once
#include <math.h>

#ifdef __CUDACC__
#define DOPPEL_HD __host__ __device__
#else
#define DOPPEL_HD
#endif

// SiLU: y = x * sigmoid(x); dy/dx = s * (1 + x * (1 - s))
static inline DOPPEL_HD float silu_one(float x) { return x / (1.0f + expf(-x)); }
static inline DOPPEL_HD float silu_grad_one(float x) {
    float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
}

// diffusers' get_timestep_embedding frequency i of `half`, in PyTorch's float32 steps
static inline DOPPEL_HD float timestep_freq(int i, int half, float downscale_freq_shift, float max_period) {
    float e = (float)(-log((double)max_period)) * (float)i;
    e = e / (float)((double)half - (double)downscale_freq_shift);
    return expf(e);
}

// the VAE posterior's log-variance clamp (DiagonalGaussianDistribution); torch.clamp passes the
// gradient only where min <= x <= max
#define LOGVAR_MIN -30.0f
#define LOGVAR_MAX 20.0f
static inline DOPPEL_HD float clamp_logvar(float lv) { return lv < LOGVAR_MIN ? LOGVAR_MIN : lv > LOGVAR_MAX ? LOGVAR_MAX : lv; }
static inline DOPPEL_HD int logvar_in_range(float lv) { return lv >= LOGVAR_MIN && lv <= LOGVAR_MAX; }
