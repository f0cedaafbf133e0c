// nn.h: layers and diffusers blocks over the ops, with diffusers' parameter names.
//
// A layer/block struct holds parameter ids (views in the model's ParamSet), its configuration,
// and what its forward saved for its backward. Forward allocates outputs from the context's
// arena and returns them; backward takes the output gradient and returns the input gradient
// (fresh zeroed arena memory), adding into parameter gradients and into any extra gradient
// buffers it is given (temb, skip connections). One forward, then one backward, per step.
#pragma once
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "../arena.h"
#include "../cuda/cuda.h"
#include "../ops/ops.h"
#include "../params.h"
#include "../rng.h"

typedef struct {
    float *d;
    int N, C, H, W;  // a vector batch is (N, C, 1, 1)
} Tensor;

static inline size_t tensor_numel(Tensor t) { return (size_t)t.N * t.C * t.H * t.W; }
static inline Tensor tensor_like(Tensor t, float *d) { t.d = d; return t; }

typedef struct {
    ParamSet *ps;
    Arena *arena;     // activations and their gradients, reset every step
    Rng *rng;         // dropout
    int train;        // dropout active
    float *scratch;   // im2col / attention scratch, grows once to the largest need
    size_t scratch_cap;
    int cuda;             // 1: ps and arena are device memory and ops run on the GPU (ctx_init_cuda)
    cudaStream_t stream;  // the GPU's work queue (NULL: the default stream)
} Ctx;

void ctx_init(Ctx *ctx, ParamSet *ps, Arena *arena, Rng *rng);
// a context on the GPU: ps a device mirror (cuda_params_mirror), arena on cuda_arena_memory
void ctx_init_cuda(Ctx *ctx, ParamSet *ps, Arena *arena, Rng *rng);
void ctx_free(Ctx *ctx);
float *ctx_scratch(Ctx *ctx, size_t floats);
Tensor ctx_tensor(Ctx *ctx, int N, int C, int H, int W);  // uninitialised, from the arena
Tensor ctx_zeros(Ctx *ctx, int N, int C, int H, int W);   // zero-filled (gradients)
// Host data into the context's memory: a copy in the arena on the GPU, the host pointer itself on
// the CPU. ctx_put copies host data to ctx memory; ctx_get copies ctx memory to the host.
const void *ctx_input(Ctx *ctx, const void *host, size_t bytes);
void ctx_put(Ctx *ctx, void *dst, const void *host, size_t bytes);
void ctx_get(Ctx *ctx, void *host, const void *src, size_t bytes);

// A context with its own activation arena on the chosen device. On the GPU the parameters (and
// whatever AdamW / EMA state ps has) are mirrored to device memory and ctx.ps is the mirror;
// compute_params_to_host() brings them back (checkpoints). gpu: device_choose()'s answer.
typedef struct {
    Ctx ctx;
    Arena arena;
    ParamSet mirror;  // the device copy of ps (GPU only)
    ParamSet *host;
} Compute;
void compute_init(Compute *c, ParamSet *ps, Rng *rng, int gpu);
void compute_params_to_host(Compute *c);
void compute_zero_grad(Compute *c);
// zeroes ps's gradients where ctx computes: ps is host memory on the CPU, a device mirror on the GPU
// (a context's own ParamSet, or another network's that it borrows: a discriminator, a judge)
void ctx_zero_grad(const Ctx *ctx, ParamSet *ps);
// a stage's --precision (NULL: keep DOPPEL_PRECISION's or fp32); on the CPU anything but fp32 is
// reported as not applying
void compute_precision(Compute *c, const char *name, const char *who);
void compute_free(Compute *c);

// OP(ctx, name, args...): the op `name` of ops/ops.h on the CPU, or its twin name_cuda (same
// arguments plus the stream) when the context is on the GPU.
#define OP(ctx, name, ...) ((ctx)->cuda ? name##_cuda(__VA_ARGS__, (ctx)->stream) : name(__VA_ARGS__))

// ---- layers (torch.nn) ----
typedef struct {
    int weight, bias;  // bias -1 when absent
    int cin, cout, k, stride, pad_t, pad_b, pad_l, pad_r;
    Tensor in;
} Conv2d;
void conv2d_init(Conv2d *l, ParamSet *ps, const char *prefix, int cin, int cout, int k, int stride, int pad);
// nn.Conv2d(..., bias=False): declares only "<prefix>.weight"; bias stays -1
void conv2d_init_nobias(Conv2d *l, ParamSet *ps, const char *prefix, int cin, int cout, int k, int stride, int pad);
Tensor conv2d_layer_forward(Ctx *ctx, Conv2d *l, Tensor x);
Tensor conv2d_layer_backward(Ctx *ctx, Conv2d *l, Tensor dout);

typedef struct {
    int weight, bias;
    int in, out;
    const float *x;  // (rows, in) saved input
    int rows;
} Linear;
void linear_init(Linear *l, ParamSet *ps, const char *prefix, int in, int out);
// y (rows, out) = x (rows, in) W^T + b; returns arena memory
float *linear_layer_forward(Ctx *ctx, Linear *l, const float *x, int rows);
float *linear_layer_backward(Ctx *ctx, Linear *l, const float *dout);  // returns dx (rows, in)

typedef struct {
    int weight, bias;
    int C, G;
    float eps;
    Tensor in;
    float *mean, *rstd;  // (N, G)
} GroupNorm;
void groupnorm_init(GroupNorm *l, ParamSet *ps, const char *prefix, int C, int G, float eps);
Tensor groupnorm_layer_forward(Ctx *ctx, GroupNorm *l, Tensor x);
Tensor groupnorm_layer_backward(Ctx *ctx, GroupNorm *l, Tensor dout);

typedef struct {  // torch.nn.BatchNorm2d (affine, running stats; momentum 0.1, eps 1e-5)
    int weight, bias, running_mean, running_var;  // the running stats are buffers: no gradient, no decay
    int C;
    float eps, momentum;
    Tensor in;
    float *mean, *rstd;  // (C) the statistics used (the batch's in training, the running ones in eval)
    int train;           // the mode of the last forward
} BatchNorm;
void batchnorm_init(BatchNorm *l, ParamSet *ps, const char *prefix, int C);
// training (ctx->train): batch statistics, running stats updated; eval: the running stats
Tensor batchnorm_layer_forward(Ctx *ctx, BatchNorm *l, Tensor x);
Tensor batchnorm_layer_backward(Ctx *ctx, BatchNorm *l, Tensor dout);

// SiLU on a whole tensor; the caller keeps x for the backward
Tensor silu_tensor_forward(Ctx *ctx, Tensor x);
Tensor silu_tensor_backward(Ctx *ctx, Tensor dout, Tensor x);

// ---- diffusers blocks ----
#define MAX_LAYERS 4
#define MAX_BLOCKS 4

typedef struct {  // diffusers.models.resnet.ResnetBlock2D, time_embedding_norm "default"
    GroupNorm norm1, norm2;
    Conv2d conv1, conv2, conv_shortcut;
    Linear time_emb_proj;
    int has_temb, has_shortcut, temb_channels;
    float output_scale_factor, dropout;
    Tensor x, n1, a1, h1, n2, a2, hd, sc;  // saved: input, norm1, silu, conv1 + temb, norm2, silu, dropout, shortcut
    float *temb, *temb_act;        // (N, temb_channels)
    float *drop_mask;
} ResnetBlock2D;
void resnet_init(ResnetBlock2D *b, ParamSet *ps, const char *prefix, int cin, int cout, int temb_channels,
                 int groups, float eps, float output_scale_factor, float dropout);
Tensor resnet_forward(Ctx *ctx, ResnetBlock2D *b, Tensor x, const float *temb);
Tensor resnet_backward(Ctx *ctx, ResnetBlock2D *b, Tensor dout, float *dtemb);

typedef struct {  // Downsample2D(use_conv=True, name="op"): padding 1, or (0,1,0,1) when padding 0
    Conv2d conv;
} Downsample2D;
void downsample_init(Downsample2D *b, ParamSet *ps, const char *prefix, int channels, int padding);
Tensor downsample_forward(Ctx *ctx, Downsample2D *b, Tensor x);
Tensor downsample_backward(Ctx *ctx, Downsample2D *b, Tensor dout);

typedef struct {  // Upsample2D(use_conv=True): nearest x2 then 3x3 conv
    Conv2d conv;
    Tensor x;
} Upsample2D;
void upsample_init(Upsample2D *b, ParamSet *ps, const char *prefix, int channels);
Tensor upsample_forward(Ctx *ctx, Upsample2D *b, Tensor x);
Tensor upsample_backward(Ctx *ctx, Upsample2D *b, Tensor dout);

typedef struct {  // attention_processor.Attention on (N,C,H,W): group_norm, to_q/k/v, to_out.0, residual
    GroupNorm group_norm;
    Linear to_q, to_k, to_v, to_out;
    int heads, head_dim;
    float rescale_output_factor;
    Tensor x;
    float *t, *q, *k, *v, *att, *o;  // t (N,L,C) tokens, q/k/v/o (N,L,C), att (N,heads,L,L)
} AttentionBlock;
void attention_block_init(AttentionBlock *b, ParamSet *ps, const char *prefix, int C, int head_dim, int groups,
                          float eps, float rescale_output_factor);
Tensor attention_block_forward(Ctx *ctx, AttentionBlock *b, Tensor x);
Tensor attention_block_backward(Ctx *ctx, AttentionBlock *b, Tensor dout);

typedef struct {  // embeddings.TimestepEmbedding: linear_1, SiLU, linear_2
    Linear linear_1, linear_2;
    float *h;  // (N, D) linear_1 output
    int N;
} TimestepEmbedding;
void timestep_embedding_init(TimestepEmbedding *b, ParamSet *ps, const char *prefix, int in, int dim);
float *timestep_embedding_block_forward(Ctx *ctx, TimestepEmbedding *b, const float *x, int N);
float *timestep_embedding_block_backward(Ctx *ctx, TimestepEmbedding *b, const float *dout);

// DownBlock2D / AttnDownBlock2D / DownEncoderBlock2D share one struct: resnets, optional
// attentions after each resnet, optional downsampler. Outputs ("output_states") are each resnet's
// (or attention's) output and the downsampler's; the last one is also the returned hidden state.
typedef struct {
    int n, has_attn, has_down, cout;
    ResnetBlock2D resnets[MAX_LAYERS];
    AttentionBlock attentions[MAX_LAYERS];
    Downsample2D down;
} DownBlock;
typedef struct {
    int temb_channels, groups, downsample_padding;
    int attention_head_dim;  // 0: one head over all channels (diffusers' None)
    float eps, dropout;
} BlockConfig;
void down_block_init(DownBlock *b, ParamSet *ps, const char *prefix, const char *type, int cin, int cout,
                     int num_layers, int add_downsample, const BlockConfig *cfg);
int down_block_n_out(const DownBlock *b);
// the shapes (d NULL) of down_block_forward's output states for input x, without running it
void down_block_out_shapes(const DownBlock *b, Tensor x, Tensor *res_out);
Tensor down_block_forward(Ctx *ctx, DownBlock *b, Tensor x, const float *temb, Tensor *res_out);
// dres: gradients of the output states (entries with d == NULL are zero); returns dx
Tensor down_block_backward(Ctx *ctx, DownBlock *b, Tensor dhidden, const Tensor *dres, float *dtemb);

// UpBlock2D / AttnUpBlock2D / UpDecoderBlock2D. With skips, resnet i takes cat(h, res[n-1-i]).
typedef struct {
    int n, has_attn, has_up, has_skips, cout;
    ResnetBlock2D resnets[MAX_LAYERS];
    AttentionBlock attentions[MAX_LAYERS];
    Upsample2D up;
    int hidden_ch[MAX_LAYERS];  // channels of h entering resnet i (before the concat)
} UpBlock;
void up_block_init(UpBlock *b, ParamSet *ps, const char *prefix, const char *type, int cin, int prev_out,
                   int cout, int num_layers, int add_upsample, const BlockConfig *cfg);
Tensor up_block_forward(Ctx *ctx, UpBlock *b, Tensor x, const Tensor *res, const float *temb);
Tensor up_block_out_shape(const UpBlock *b, Tensor x);  // d NULL
// dres: gradient buffers matching res (zeroed by the caller), added into
Tensor up_block_backward(Ctx *ctx, UpBlock *b, Tensor dout, Tensor *dres, float *dtemb);

typedef struct {  // UNetMidBlock2D: resnet, (attention, resnet) x num_layers
    int n, has_attn;
    ResnetBlock2D resnets[MAX_LAYERS + 1];
    AttentionBlock attentions[MAX_LAYERS];
} MidBlock;
void mid_block_init(MidBlock *b, ParamSet *ps, const char *prefix, int C, int add_attention,
                    float output_scale_factor, const BlockConfig *cfg);
Tensor mid_block_forward(Ctx *ctx, MidBlock *b, Tensor x, const float *temb);
Tensor mid_block_backward(Ctx *ctx, MidBlock *b, Tensor dout, float *dtemb);
