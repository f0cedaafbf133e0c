// timestep_embedding.c: diffusers' TimestepEmbedding (linear_1, SiLU, linear_2).
#include <string.h>

#include "nn.h"

void timestep_embedding_init(TimestepEmbedding *b, ParamSet *ps, const char *prefix, int in, int dim) {
    char name[PARAM_NAME_MAX];
    memset(b, 0, sizeof(*b));
    snprintf(name, sizeof(name), "%s.linear_1", prefix);
    linear_init(&b->linear_1, ps, name, in, dim);
    snprintf(name, sizeof(name), "%s.linear_2", prefix);
    linear_init(&b->linear_2, ps, name, dim, dim);
}

float *timestep_embedding_block_forward(Ctx *ctx, TimestepEmbedding *b, const float *x, int N) {
    int D = b->linear_1.out;
    b->N = N;
    b->h = linear_layer_forward(ctx, &b->linear_1, x, N);  // [N, D]
    float *a = arena_floats(ctx->arena, (size_t)N * D);
    OP(ctx, silu_forward, a, b->h, (size_t)N * D);
    return linear_layer_forward(ctx, &b->linear_2, a, N);  // [N, D]
}

float *timestep_embedding_block_backward(Ctx *ctx, TimestepEmbedding *b, const float *dout) {
    int D = b->linear_1.out;
    float *da = linear_layer_backward(ctx, &b->linear_2, dout);
    float *dh = arena_zeros(ctx->arena, (size_t)b->N * D);
    OP(ctx, silu_backward, dh, da, b->h, (size_t)b->N * D);
    return linear_layer_backward(ctx, &b->linear_1, dh);
}
