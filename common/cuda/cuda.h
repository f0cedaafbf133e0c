// cuda.h: doppel's CUDA backend as C sees it.
//
// Every op of ops/ops.h has a twin here with the same name plus `_cuda`, the same arguments in
// the same order (pointers are device memory) and a stream last; layers pick one or the other
// through OP() in nn/nn.h. Semantics are the CPU's: backward adds (+=) into gradients, NULL
// gradients are skipped, losses return the mean (and synchronise to do so).
//
// Device memory has one allocation per role: parameters, gradients, AdamW moments and EMA
// weights are ParamSet buffers mirrored on the device (cuda_params_mirror), activations come from
// an Arena on device memory (cuda_arena_memory), which after its first step is one block, so the
// training and sampling loops make no cudaMalloc. Host <-> device copies happen at stage edges:
// the batch in, the loss or the generated latents out.
//
// Built only where nvcc is found (DOPPEL_CUDA). Without it the twins are weak symbols nobody
// calls: cuda_available() is 0, so no Ctx is ever put on the GPU.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../arena.h"
#include "../ops/activations.h"
#include "../ops/losses2.h"
#include "../ops/ops.h"
#include "../optim/adamw.h"
#include "../params.h"
#include "../rng.h"

typedef struct CUstream_st *cudaStream_t;  // as cuda_runtime.h declares it

#ifdef DOPPEL_CUDA
#define CUDA_FN
#else
#define CUDA_FN __attribute__((weak))
#endif

// ---- the device (backend.c: always built) ----
// 1 when this build has CUDA and a GPU answers; the first call probes (and prints nothing).
int cuda_available(void);
// "cpu", "cuda" or "auto" -> 1 for the GPU, 0 for the CPU; -1 for another word. "auto" and "cuda"
// on a machine without a GPU print one line that the CPU is used instead (`who` names the stage).
int device_choose(const char *name, const char *who);

CUDA_FN int cuda_probe(void);                 // cudaGetDeviceCount > 0, device 0 selected
CUDA_FN const char *cuda_device_name(void);   // "NVIDIA H100 80GB HBM3"
CUDA_FN void *cuda_malloc(size_t bytes);      // dies with a message when the GPU is full
CUDA_FN void cuda_free(void *p);
CUDA_FN void cuda_upload(void *dst, const void *src, size_t bytes);    // host -> device
CUDA_FN void cuda_download(void *dst, const void *src, size_t bytes);  // device -> host (waits)
CUDA_FN void cuda_zero(void *p, size_t bytes);
CUDA_FN void cuda_sync(void);                 // waits for the GPU; dies on a kernel error
// What the GEMMs (convolutions, linears, attention) compute in; everything else stays fp32, and
// so do the parameters, gradients and optimizer state (fp32 master weights):
//   fp32  cuBLAS single precision (the default; the reference the tests hold to 1e-4)
//   tf32  TF32 tensor cores on fp32 data (10-bit mantissa products, fp32 sums)
//   bf16  operands rounded to bfloat16, products summed in fp32 (as torch.autocast(bfloat16))
//   fp16  operands rounded to IEEE half (10-bit mantissa, range +-65504); training with it needs
//         dynamic loss scaling (optim/loss_scale.h) so small gradients do not flush to zero
typedef enum { PREC_FP32, PREC_TF32, PREC_BF16, PREC_FP16 } Precision;
CUDA_FN void cuda_set_precision(Precision p);
CUDA_FN Precision cuda_get_precision(void);
int precision_parse(const char *name, Precision *p);  // "fp32" | "tf32" | "bf16" | "fp16": 0, else -1 (backend.c)
extern CUDA_FN const ArenaMemory cuda_arena_memory;
// A stream of its own for a context (compute_init makes one). The current stream orders
// cuda_upload / cuda_download / cuda_zero and the arena's zero-fills; NULL is the default stream.
CUDA_FN cudaStream_t cuda_stream_create(void);
CUDA_FN void cuda_stream_destroy(cudaStream_t s);
CUDA_FN void cuda_set_current_stream(cudaStream_t s);
// CUDA graphs: record what is launched on s between begin and end (nothing runs), then replay it.
// Only stream-ordered work may be recorded: no uploads from host memory, no allocation.
CUDA_FN void cuda_graph_begin(cudaStream_t s);
CUDA_FN void *cuda_graph_end(cudaStream_t s);  // the instantiated graph
CUDA_FN void cuda_graph_launch(void *graph, cudaStream_t s);
CUDA_FN void cuda_graph_free(void *graph);
// dev gets ps's views (info shared, not copied) with data and grad on the device (data copied,
// grad zeroed), and m, v, ema where ps has them.
CUDA_FN void cuda_params_mirror(ParamSet *dev, const ParamSet *ps);
CUDA_FN void cuda_params_to_host(ParamSet *ps, const ParamSet *dev);  // data, grad, m, v, ema back
CUDA_FN void cuda_params_free(ParamSet *dev);                           // device buffers only

// ---- ops (ops/ops.h), device pointers, one stream ----
CUDA_FN size_t conv2d_scratch_floats_cuda(Conv2dDims d);
CUDA_FN void conv2d_forward_cuda(float *out, const float *inp, const float *weight, const float *bias, float *scratch,
                                 Conv2dDims d, cudaStream_t s);
CUDA_FN void conv2d_backward_cuda(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                  const float *weight, float *scratch, Conv2dDims d, cudaStream_t s);
CUDA_FN void linear_forward_cuda(float *out, const float *inp, const float *weight, const float *bias, int N, int IN,
                                 int OUT, cudaStream_t s);
CUDA_FN void linear_backward_cuda(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                  const float *weight, int N, int IN, int OUT, cudaStream_t s);
CUDA_FN void groupnorm_forward_cuda(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                                    const float *bias, int N, int C, int HW, int G, float eps, cudaStream_t s);
CUDA_FN void groupnorm_backward_cuda(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                     const float *weight, const float *mean, const float *rstd, int N, int C, int HW,
                                     int G, cudaStream_t s);
CUDA_FN void silu_forward_cuda(float *out, const float *inp, size_t n, cudaStream_t s);
CUDA_FN void silu_backward_cuda(float *dinp, const float *dout, const float *inp, size_t n, cudaStream_t s);
CUDA_FN void upsample_nearest2x_forward_cuda(float *out, const float *inp, int N, int C, int H, int W, cudaStream_t s);
CUDA_FN void upsample_nearest2x_backward_cuda(float *dinp, const float *dout, int N, int C, int H, int W,
                                              cudaStream_t s);
CUDA_FN void concat_channels_forward_cuda(float *out, const float *a, const float *b, int N, int Ca, int Cb, int HW,
                                          cudaStream_t s);
CUDA_FN void concat_channels_backward_cuda(float *da, float *db, const float *dout, int N, int Ca, int Cb, int HW,
                                           cudaStream_t s);
CUDA_FN void residual_forward_cuda(float *out, const float *a, const float *b, float scale, size_t n, cudaStream_t s);
CUDA_FN void residual_backward_cuda(float *da, float *db, const float *dout, float scale, size_t n, cudaStream_t s);
CUDA_FN void add_channel_forward_cuda(float *out, const float *inp, const float *vec, int N, int C, int HW,
                                      cudaStream_t s);
CUDA_FN void add_channel_backward_cuda(float *dinp, float *dvec, const float *dout, int N, int C, int HW,
                                       cudaStream_t s);
CUDA_FN void accumulate_cuda(float *dst, const float *src, size_t n, cudaStream_t s);
CUDA_FN void copy_floats_cuda(float *dst, const float *src, size_t n, cudaStream_t s);
CUDA_FN void axpby_rows_cuda(float *out, const float *x, const float *a, const float *y, const float *b, int N,
                             size_t per, cudaStream_t s);
CUDA_FN size_t attention_scratch_floats_cuda(int N, int L);
CUDA_FN void attention_forward_cuda(float *out, float *att, const float *q, const float *k, const float *v, int N,
                                    int L, int NH, int HD, cudaStream_t s);
CUDA_FN void attention_backward_cuda(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                     const float *k, const float *v, const float *att, float *scratch, int N, int L,
                                     int NH, int HD, cudaStream_t s);
CUDA_FN void nchw_to_nlc_cuda(float *out, const float *inp, int N, int C, int HW, cudaStream_t s);
CUDA_FN void nlc_to_nchw_cuda(float *out, const float *inp, int N, int C, int HW, cudaStream_t s);
CUDA_FN void embedding_forward_cuda(float *out, const int32_t *ids, const float *table, int N, int D, cudaStream_t s);
CUDA_FN void embedding_backward_cuda(float *dtable, const float *dout, const int32_t *ids, int N, int D,
                                     cudaStream_t s);
CUDA_FN void timestep_embedding_forward_cuda(float *out, const float *t, int N, int dim, int flip_sin_to_cos,
                                             float downscale_freq_shift, float scale, float max_period,
                                             cudaStream_t s);
CUDA_FN void timestep_embedding_backward_cuda(float *dt, const float *dout, const float *t, int N, int dim,
                                              int flip_sin_to_cos, float downscale_freq_shift, float scale,
                                              float max_period, cudaStream_t s);
// the mask is drawn on the host from rng (the CPU's stream of numbers) and copied up
CUDA_FN void dropout_forward_cuda(float *out, float *mask, const float *inp, size_t n, float p, Rng *rng,
                                  cudaStream_t s);
CUDA_FN void dropout_backward_cuda(float *dinp, const float *dout, const float *mask, size_t n, float p,
                                   cudaStream_t s);
CUDA_FN void avgpool_forward_cuda(float *out, const float *inp, int N, int C, int HW, cudaStream_t s);
CUDA_FN void avgpool_backward_cuda(float *dinp, const float *dout, int N, int C, int HW, cudaStream_t s);
CUDA_FN void avgpool2x2_forward_cuda(float *out, const float *inp, int N, int C, int H, int W, cudaStream_t s);
CUDA_FN void avgpool2x2_backward_cuda(float *dinp, const float *dout, int N, int C, int H, int W, cudaStream_t s);
CUDA_FN void batchnorm_forward_cuda(float *out, float *mean, float *rstd, float *running_mean, float *running_var,
                                    const float *inp, const float *weight, const float *bias, int N, int C, int HW,
                                    float eps, float momentum, int train, cudaStream_t s);
CUDA_FN void batchnorm_backward_cuda(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                     const float *weight, const float *mean, const float *rstd, int N, int C, int HW,
                                     int train, cudaStream_t s);
CUDA_FN float mse_forward_cuda(const float *pred, const float *target, size_t n, cudaStream_t s);
CUDA_FN void mse_backward_cuda(float *dpred, const float *pred, const float *target, size_t n, float dloss,
                               cudaStream_t s);
CUDA_FN void mse_rows_forward_cuda(float *mse, const float *pred, const float *target, int N, size_t per,
                                   cudaStream_t s);
CUDA_FN void mse_rows_backward_cuda(float *dpred, const float *pred, const float *target, const float *k, int N,
                                    size_t per, cudaStream_t s);
CUDA_FN float l1_forward_cuda(const float *pred, const float *target, size_t n, cudaStream_t s);
CUDA_FN void l1_backward_cuda(float *dpred, const float *pred, const float *target, size_t n, float dloss,
                              cudaStream_t s);
CUDA_FN float kl_forward_cuda(float *kl, const float *moments, int N, int C, int HW, cudaStream_t s);
CUDA_FN void kl_backward_cuda(float *dmoments, const float *moments, int N, int C, int HW, float dloss,
                              cudaStream_t s);
CUDA_FN void gaussian_sample_forward_cuda(float *z, const float *moments, const float *eps, int N, int C, int HW,
                                          cudaStream_t s);
CUDA_FN void gaussian_sample_backward_cuda(float *dmoments, const float *dz, const float *moments, const float *eps,
                                           int N, int C, int HW, cudaStream_t s);
// labels on the device, checked by the caller on the host
CUDA_FN float cross_entropy_forward_cuda(float *probs, const float *logits, const int32_t *labels, int N, int K,
                                         cudaStream_t s);
CUDA_FN void cross_entropy_backward_cuda(float *dlogits, const float *probs, const int32_t *labels, int N, int K,
                                         float dloss, cudaStream_t s);

// ---- activations.h: LeakyReLU and the hinge GAN losses ----
CUDA_FN void leaky_relu_forward_cuda(float *out, const float *inp, size_t n, float slope, cudaStream_t s);
CUDA_FN void leaky_relu_backward_cuda(float *dinp, const float *dout, const float *inp, size_t n, float slope,
                                      cudaStream_t s);
CUDA_FN float hinge_d_forward_cuda(const float *logits_real, const float *logits_fake, size_t n, cudaStream_t s);
CUDA_FN void hinge_d_backward_cuda(float *dreal, float *dfake, const float *logits_real, const float *logits_fake,
                                   size_t n, float dloss, cudaStream_t s);
CUDA_FN float hinge_g_forward_cuda(const float *logits_fake, size_t n, cudaStream_t s);
CUDA_FN void hinge_g_backward_cuda(float *dfake, size_t n, float dloss, cudaStream_t s);
// sqrt(sum x^2) in double (ops.h l2_norm)
CUDA_FN float l2_norm_cuda(const float *x, size_t n, cudaStream_t s);

// ---- losses2.h: SSIM and spectral losses (common/cuda/losses2.cu; the spectral one over cuFFT) ----
// cache sizes as the CPU's (ssim_cache_floats, spectral_cache_floats), device memory
CUDA_FN float ssim_loss_forward_cuda(float *cache, const float *pred, const float *target, int N, int C, int H, int W,
                                     float data_range, cudaStream_t s);
CUDA_FN void ssim_loss_backward_cuda(float *dpred, const float *cache, const float *pred, const float *target, int N,
                                     int C, int H, int W, float data_range, float dloss, cudaStream_t s);
CUDA_FN float spectral_loss_forward_cuda(float *cache, const float *pred, const float *target, int N, int C, int H,
                                         int W, cudaStream_t s);
CUDA_FN void spectral_loss_backward_cuda(float *dpred, const float *cache, const float *pred, const float *target,
                                         int N, int C, int H, int W, float dloss, cudaStream_t s);

// ---- optimizer, EMA, clipping (optim/*.h) on a device ParamSet ----
CUDA_FN void adamw_step_cuda(AdamW *opt, ParamSet *dev, float lr, cudaStream_t s);
CUDA_FN void ema_update_cuda(ParamSet *dev, float decay, cudaStream_t s);
CUDA_FN float grad_global_norm_cuda(const ParamSet *dev, cudaStream_t s);
CUDA_FN float clip_grad_norm_cuda(ParamSet *dev, float max_norm, cudaStream_t s);
CUDA_FN int grads_finite_cuda(const ParamSet *dev, cudaStream_t s);
CUDA_FN void grads_scale_cuda(ParamSet *dev, float scale, cudaStream_t s);
