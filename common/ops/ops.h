// ops.h: the CPU reference ops, NCHW float32, as forward/backward pairs side by side.
//
// Conventions (every file in common/ops/):
// - Arguments: outputs, then inputs and weights, then saved statistics / scratch, then sizes.
// - `d` prefixes a gradient. Backward *adds* (+=) into every gradient it writes: input gradients
//   and parameter gradients alike, so residual branches, skip connections and gradient
//   accumulation need no extra code. Callers zero gradient buffers once (arena_zeros /
//   params_zero_grad). A NULL gradient pointer means "not needed" and is skipped.
// - Dimension letters: N batch, C channels, H, W, HW = H*W, G groups, L sequence length,
//   NH heads, HD head size, K classes, D feature size.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../rng.h"

// ---- conv2d: 1x1 / 3x3 / any square K, stride s, padding (top, bottom, left, right) ----
typedef struct {
    int N, C, H, W;      // input
    int OC, K, stride;
    int pad_t, pad_b, pad_l, pad_r;
} Conv2dDims;
static inline int conv2d_oh(Conv2dDims d) { return (d.H + d.pad_t + d.pad_b - d.K) / d.stride + 1; }
static inline int conv2d_ow(Conv2dDims d) { return (d.W + d.pad_l + d.pad_r - d.K) / d.stride + 1; }
size_t conv2d_scratch_floats(Conv2dDims d);  // im2col buffer; 0 for a plain 1x1 stride-1 conv
// images per im2col chunk so that col (C*K*K, nb*P) and the output staging (OC, nb*P) fit in cap floats
static inline int conv2d_chunk(Conv2dDims d, size_t cap) {
    size_t P = (size_t)conv2d_oh(d) * conv2d_ow(d), CKK = (size_t)d.C * d.K * d.K;
    size_t per_image = P * (CKK + d.OC);
    size_t nb = cap / (per_image ? per_image : 1);
    return (int)(nb < 1 ? 1 : nb > (size_t)d.N ? (size_t)d.N : nb);
}
// out (N,OC,OH,OW), inp (N,C,H,W), weight (OC,C,K,K), bias (OC) or NULL
void conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                    float *scratch, Conv2dDims d);
void conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, float *scratch, Conv2dDims d);

// ---- linear: out (N,OUT) = inp (N,IN) @ weight (OUT,IN)^T + bias (OUT) ----
void linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int IN, int OUT);
void linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int IN, int OUT);

// ---- group norm: inp (N,C,HW), weight/bias (C), mean/rstd (N,G) saved for backward ----
void groupnorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int N, int C, int HW, int G, float eps);
void groupnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean, const float *rstd,
                        int N, int C, int HW, int G);

// ---- batch norm (torch.nn.BatchNorm2d): inp (N,C,HW), weight/bias/running stats (C) ----
// train: statistics of this batch per channel over N x HW (biased variance for the output), the
// running stats updated as r = (1 - momentum) r + momentum * stat (unbiased variance; skipped when
// running_mean is NULL); eval: the running stats. mean/rstd (C) are saved for the backward, which
// treats them as functions of the input in training and as constants in eval.
void batchnorm_forward(float *out, float *mean, float *rstd, float *running_mean, float *running_var, const float *inp,
                       const float *weight, const float *bias, int N, int C, int HW, float eps, float momentum,
                       int train);
void batchnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C, int HW, int train);

// ---- SiLU: out = x * sigmoid(x) ----
void silu_forward(float *out, const float *inp, size_t n);
void silu_backward(float *dinp, const float *dout, const float *inp, size_t n);

// ---- nearest upsample x2: inp (N,C,H,W) -> out (N,C,2H,2W) ----
void upsample_nearest2x_forward(float *out, const float *inp, int N, int C, int H, int W);
void upsample_nearest2x_backward(float *dinp, const float *dout, int N, int C, int H, int W);

// ---- channel concat: a (N,Ca,HW), b (N,Cb,HW) -> out (N,Ca+Cb,HW) ----
void concat_channels_forward(float *out, const float *a, const float *b, int N, int Ca, int Cb, int HW);
void concat_channels_backward(float *da, float *db, const float *dout, int N, int Ca, int Cb, int HW);

// ---- residual add: out = (a + b) * scale  (diffusers' (x + h) / output_scale_factor) ----
void residual_forward(float *out, const float *a, const float *b, float scale, size_t n);
void residual_backward(float *da, float *db, const float *dout, float scale, size_t n);
// ---- broadcast add of a per-(sample, channel) vector: out (N,C,HW) = inp + vec (N,C) ----
void add_channel_forward(float *out, const float *inp, const float *vec, int N, int C, int HW);
void add_channel_backward(float *dinp, float *dvec, const float *dout, int N, int C, int HW);
// dst += src (gradient plumbing)
void accumulate(float *dst, const float *src, size_t n);
// dst = src
void copy_floats(float *dst, const float *src, size_t n);
// sqrt(sum x^2), summed in double
float l2_norm(const float *x, size_t n);
// per-row linear combination: out (N, per) = a[n] * x + b[n] * y, a and b (N)
void axpby_rows(float *out, const float *x, const float *a, const float *y, const float *b, int N, size_t per);

// ---- scaled dot-product self-attention, heads packed in the feature axis ----
// q, k, v, out (N, L, NH*HD); att (N, NH, L, L) softmax(q k^T / sqrt(HD)) saved for backward.
void attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                       int N, int L, int NH, int HD);
// scratch: (L*L) floats per thread, attention_scratch_floats() in all
size_t attention_scratch_floats(int L);
void attention_backward(float *dq, float *dk, float *dv, const float *dout,
                        const float *q, const float *k, const float *v, const float *att,
                        float *scratch, int N, int L, int NH, int HD);
// (N,C,HW) <-> (N,HW,C) transposes, used around token-wise linears
void nchw_to_nlc(float *out, const float *inp, int N, int C, int HW);
void nlc_to_nchw(float *out, const float *inp, int N, int C, int HW);

// ---- embedding lookup: out (N,D) = table[ids[n]] ----
void embedding_forward(float *out, const int32_t *ids, const float *table, int N, int D);
void embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int D);

// ---- diffusers' get_timestep_embedding: t (N) -> out (N, dim) ----
void timestep_embedding_forward(float *out, const float *t, int N, int dim, int flip_sin_to_cos,
                                float downscale_freq_shift, float scale, float max_period);
void timestep_embedding_backward(float *dt, const float *dout, const float *t, int N, int dim,
                                 int flip_sin_to_cos, float downscale_freq_shift, float scale,
                                 float max_period);

// ---- inverted dropout: mask holds 0 or 1/(1-p); p == 0 copies ----
void dropout_forward(float *out, float *mask, const float *inp, size_t n, float p, Rng *rng);
void dropout_backward(float *dinp, const float *dout, const float *mask, size_t n, float p);

// ---- global average pool: inp (N,C,HW) -> out (N,C) ----
void avgpool_forward(float *out, const float *inp, int N, int C, int HW);
void avgpool_backward(float *dinp, const float *dout, int N, int C, int HW);

// ---- 2x2 average pool, stride 2: inp (N,C,H,W) -> out (N,C,H/2,W/2) (floor, as nn.AvgPool2d(2)) ----
void avgpool2x2_forward(float *out, const float *inp, int N, int C, int H, int W);
void avgpool2x2_backward(float *dinp, const float *dout, int N, int C, int H, int W);

// ---- losses: forward returns the mean loss; backward adds dloss * d(loss)/d(input) ----
float mse_forward(const float *pred, const float *target, size_t n);
void mse_backward(float *dpred, const float *pred, const float *target, size_t n, float dloss);
// per-row MSE: mse (N) = mean over per of (pred - target)^2 (summed in double), and its
// backward with a factor per row: dpred[n] += k[n] * (pred - target) (k = dloss * w_n * 2 / (N per))
void mse_rows_forward(float *mse, const float *pred, const float *target, int N, size_t per);
void mse_rows_backward(float *dpred, const float *pred, const float *target, const float *k, int N, size_t per);
float l1_forward(const float *pred, const float *target, size_t n);
void l1_backward(float *dpred, const float *pred, const float *target, size_t n, float dloss);
// KL(N(mean, exp(logvar)) || N(0, 1)) as diffusers' DiagonalGaussianDistribution.kl():
// moments (N, 2C, HW) = [mean; logvar], logvar clamped to [-30, 20]; returns the batch mean of
// the per-sample sums; kl (N) optional per-sample values.
float kl_forward(float *kl, const float *moments, int N, int C, int HW);
void kl_backward(float *dmoments, const float *moments, int N, int C, int HW, float dloss);
// z = mean + exp(0.5 * logvar) * eps, the posterior sample (reparameterised)
void gaussian_sample_forward(float *z, const float *moments, const float *eps, int N, int C, int HW);
void gaussian_sample_backward(float *dmoments, const float *dz, const float *moments, const float *eps,
                              int N, int C, int HW);
// softmax cross-entropy: logits (N,K), labels (N); probs (N,K) saved for backward
float cross_entropy_forward(float *probs, const float *logits, const int32_t *labels, int N, int K);
void cross_entropy_backward(float *dlogits, const float *probs, const int32_t *labels, int N, int K,
                            float dloss);
