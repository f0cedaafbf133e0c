// attention_block.c: diffusers' Attention as the UNet/VAE blocks use it on feature maps:
// residual = x; tokens = group_norm(x) as (N, HW, C); softmax(q k^T / sqrt(d)) v per head;
// to_out.0; back to (N, C, H, W); (out + residual) / rescale_output_factor.
#include <string.h>

#include "../check.h"
#include "nn.h"

void attention_block_init(AttentionBlock *b, ParamSet *ps, const char *prefix, int C, int head_dim, int groups,
                          float eps, float rescale_output_factor) {
    char name[PARAM_NAME_MAX];
    memset(b, 0, sizeof(*b));
    CHECK(head_dim > 0 && C % head_dim == 0, "%s: %d channels are not a multiple of attention_head_dim %d", prefix,
          C, head_dim);
#define SUB(s) (snprintf(name, sizeof(name), "%s." s, prefix), name)
    groupnorm_init(&b->group_norm, ps, SUB("group_norm"), C, groups, eps);
    linear_init(&b->to_q, ps, SUB("to_q"), C, C);
    linear_init(&b->to_k, ps, SUB("to_k"), C, C);
    linear_init(&b->to_v, ps, SUB("to_v"), C, C);
    linear_init(&b->to_out, ps, SUB("to_out.0"), C, C);
#undef SUB
    b->heads = C / head_dim;
    b->head_dim = head_dim;
    b->rescale_output_factor = rescale_output_factor;
}

Tensor attention_block_forward(Ctx *ctx, AttentionBlock *b, Tensor x) {
    int N = x.N, C = x.C, L = x.H * x.W;
    size_t n = tensor_numel(x);
    b->x = x;
    Tensor h = groupnorm_layer_forward(ctx, &b->group_norm, x);  // [N, C, HW]
    b->t = arena_floats(ctx->arena, n);
    OP(ctx, nchw_to_nlc, b->t, h.d, N, C, L);                               // [N, L, C]
    b->q = linear_layer_forward(ctx, &b->to_q, b->t, N * L);       // [N, L, C]
    b->k = linear_layer_forward(ctx, &b->to_k, b->t, N * L);
    b->v = linear_layer_forward(ctx, &b->to_v, b->t, N * L);
    b->att = arena_floats(ctx->arena, (size_t)N * b->heads * L * L);  // [N, heads, L, L]
    b->o = arena_floats(ctx->arena, n);
    OP(ctx, attention_forward, b->o, b->att, b->q, b->k, b->v, N, L, b->heads, b->head_dim);
    float *p = linear_layer_forward(ctx, &b->to_out, b->o, N * L);  // [N, L, C]
    Tensor y = ctx_tensor(ctx, N, C, x.H, x.W);
    OP(ctx, nlc_to_nchw, y.d, p, N, C, L);
    OP(ctx, residual_forward, y.d, y.d, x.d, 1.0f / b->rescale_output_factor, n);
    return y;
}

Tensor attention_block_backward(Ctx *ctx, AttentionBlock *b, Tensor dout) {
    Tensor x = b->x;
    int N = x.N, C = x.C, L = x.H * x.W;
    size_t n = tensor_numel(x);
    // in the forward pass this was: y = (nlc_to_nchw(p) + x) / s
    Tensor dx = ctx_zeros(ctx, N, C, x.H, x.W);
    float *dy = arena_zeros(ctx->arena, n);
    OP(ctx, residual_backward, dx.d, dy, dout.d, 1.0f / b->rescale_output_factor, n);
    float *dp = arena_floats(ctx->arena, n);
    OP(ctx, nchw_to_nlc, dp, dy, N, C, L);
    float *dO = linear_layer_backward(ctx, &b->to_out, dp);
    float *dq = arena_zeros(ctx->arena, n), *dk = arena_zeros(ctx->arena, n), *dv = arena_zeros(ctx->arena, n);
    float *scratch = ctx_scratch(ctx, ctx->cuda ? attention_scratch_floats_cuda(N, L) : attention_scratch_floats(L));
    OP(ctx, attention_backward, dq, dk, dv, dO, b->q, b->k, b->v, b->att, scratch, N, L, b->heads, b->head_dim);
    float *dt = linear_layer_backward(ctx, &b->to_q, dq);
    OP(ctx, accumulate, dt, linear_layer_backward(ctx, &b->to_k, dk), n);
    OP(ctx, accumulate, dt, linear_layer_backward(ctx, &b->to_v, dv), n);
    Tensor dh = ctx_tensor(ctx, N, C, x.H, x.W);
    OP(ctx, nlc_to_nchw, dh.d, dt, N, C, L);
    Tensor dgn = groupnorm_layer_backward(ctx, &b->group_norm, dh);
    OP(ctx, accumulate, dx.d, dgn.d, n);
    return dx;
}
