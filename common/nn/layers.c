// layers.c: Conv2d, Linear, GroupNorm and SiLU over Tensors, with PyTorch's default init
// (kaiming_uniform(a=sqrt(5)) => U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "nn.h"

void ctx_init(Ctx *ctx, ParamSet *ps, Arena *arena, Rng *rng) {
    memset(ctx, 0, sizeof(*ctx));
    ctx->ps = ps;
    ctx->arena = arena;
    ctx->rng = rng;
}

void ctx_free(Ctx *ctx) {
    free(ctx->scratch);
    ctx->scratch = NULL;
    ctx->scratch_cap = 0;
}

float *ctx_scratch(Ctx *ctx, size_t floats) {
    if (floats > ctx->scratch_cap) {
        free(ctx->scratch);
        ctx->scratch = xmalloc(floats * sizeof(float));
        ctx->scratch_cap = floats;
    }
    return ctx->scratch;
}

Tensor ctx_tensor(Ctx *ctx, int N, int C, int H, int W) {
    Tensor t = {NULL, N, C, H, W};
    t.d = arena_floats(ctx->arena, tensor_numel(t));
    return t;
}

Tensor ctx_zeros(Ctx *ctx, int N, int C, int H, int W) {
    Tensor t = {NULL, N, C, H, W};
    t.d = arena_zeros(ctx->arena, tensor_numel(t));
    return t;
}

#define P(id) param_ptr(ctx->ps, (id))
#define G(id) grad_ptr(ctx->ps, (id))

// ---- Conv2d ----
void conv2d_init(Conv2d *l, ParamSet *ps, const char *prefix, int cin, int cout, int k, int stride, int pad) {
    memset(l, 0, sizeof(*l));
    float bound = 1.0f / sqrtf((float)(cin * k * k));
    l->weight = params_declare(ps, INIT_UNIFORM, bound, (int64_t[]){cout, cin, k, k, 0}, "%s.weight", prefix);
    l->bias = params_declare(ps, INIT_UNIFORM, bound, (int64_t[]){cout, 0}, "%s.bias", prefix);
    l->cin = cin, l->cout = cout, l->k = k, l->stride = stride;
    l->pad_t = l->pad_b = l->pad_l = l->pad_r = pad;
}

void conv2d_init_nobias(Conv2d *l, ParamSet *ps, const char *prefix, int cin, int cout, int k, int stride, int pad) {
    memset(l, 0, sizeof(*l));
    float bound = 1.0f / sqrtf((float)(cin * k * k));
    l->weight = params_declare(ps, INIT_UNIFORM, bound, (int64_t[]){cout, cin, k, k, 0}, "%s.weight", prefix);
    l->bias = -1;
    l->cin = cin, l->cout = cout, l->k = k, l->stride = stride;
    l->pad_t = l->pad_b = l->pad_l = l->pad_r = pad;
}

static Conv2dDims conv_dims(const Conv2d *l, Tensor x) {
    return (Conv2dDims){x.N, x.C, x.H, x.W, l->cout, l->k, l->stride, l->pad_t, l->pad_b, l->pad_l, l->pad_r};
}

Tensor conv2d_layer_forward(Ctx *ctx, Conv2d *l, Tensor x) {
    CHECK(x.C == l->cin, "conv2d: input has %d channels, layer expects %d", x.C, l->cin);
    Conv2dDims d = conv_dims(l, x);
    l->in = x;
    Tensor y = ctx_tensor(ctx, x.N, l->cout, conv2d_oh(d), conv2d_ow(d));
    conv2d_forward(y.d, x.d, P(l->weight), l->bias >= 0 ? P(l->bias) : NULL,
                   ctx_scratch(ctx, conv2d_scratch_floats(d)), d);
    return y;
}

Tensor conv2d_layer_backward(Ctx *ctx, Conv2d *l, Tensor dout) {
    Conv2dDims d = conv_dims(l, l->in);
    Tensor dx = ctx_zeros(ctx, l->in.N, l->in.C, l->in.H, l->in.W);
    conv2d_backward(dx.d, G(l->weight), l->bias >= 0 ? G(l->bias) : NULL, dout.d, l->in.d, P(l->weight),
                    ctx_scratch(ctx, conv2d_scratch_floats(d)), d);
    return dx;
}

// ---- Linear ----
void linear_init(Linear *l, ParamSet *ps, const char *prefix, int in, int out) {
    memset(l, 0, sizeof(*l));
    float bound = 1.0f / sqrtf((float)in);
    l->weight = params_declare(ps, INIT_UNIFORM, bound, (int64_t[]){out, in, 0}, "%s.weight", prefix);
    l->bias = params_declare(ps, INIT_UNIFORM, bound, (int64_t[]){out, 0}, "%s.bias", prefix);
    l->in = in, l->out = out;
}

float *linear_layer_forward(Ctx *ctx, Linear *l, const float *x, int rows) {
    l->x = x;
    l->rows = rows;
    float *y = arena_floats(ctx->arena, (size_t)rows * l->out);
    linear_forward(y, x, P(l->weight), P(l->bias), rows, l->in, l->out);
    return y;
}

float *linear_layer_backward(Ctx *ctx, Linear *l, const float *dout) {
    float *dx = arena_zeros(ctx->arena, (size_t)l->rows * l->in);
    linear_backward(dx, G(l->weight), G(l->bias), dout, l->x, P(l->weight), l->rows, l->in, l->out);
    return dx;
}

// ---- GroupNorm ----
void groupnorm_init(GroupNorm *l, ParamSet *ps, const char *prefix, int C, int G, float eps) {
    memset(l, 0, sizeof(*l));
    CHECK(G > 0 && C % G == 0, "%s: %d channels do not divide into %d groups", prefix, C, G);
    l->weight = params_declare(ps, INIT_ONES, 0, (int64_t[]){C, 0}, "%s.weight", prefix);
    l->bias = params_declare(ps, INIT_ZEROS, 0, (int64_t[]){C, 0}, "%s.bias", prefix);
    l->C = C, l->G = G, l->eps = eps;
}

Tensor groupnorm_layer_forward(Ctx *ctx, GroupNorm *l, Tensor x) {
    CHECK(x.C == l->C, "groupnorm: input has %d channels, layer expects %d", x.C, l->C);
    l->in = x;
    l->mean = arena_floats(ctx->arena, (size_t)x.N * l->G);
    l->rstd = arena_floats(ctx->arena, (size_t)x.N * l->G);
    Tensor y = ctx_tensor(ctx, x.N, x.C, x.H, x.W);
    groupnorm_forward(y.d, l->mean, l->rstd, x.d, P(l->weight), P(l->bias), x.N, x.C, x.H * x.W, l->G, l->eps);
    return y;
}

Tensor groupnorm_layer_backward(Ctx *ctx, GroupNorm *l, Tensor dout) {
    Tensor x = l->in, dx = ctx_zeros(ctx, x.N, x.C, x.H, x.W);
    groupnorm_backward(dx.d, G(l->weight), G(l->bias), dout.d, x.d, P(l->weight), l->mean, l->rstd, x.N, x.C,
                       x.H * x.W, l->G);
    return dx;
}

// ---- SiLU ----
Tensor silu_tensor_forward(Ctx *ctx, Tensor x) {
    Tensor y = ctx_tensor(ctx, x.N, x.C, x.H, x.W);
    silu_forward(y.d, x.d, tensor_numel(x));
    return y;
}

Tensor silu_tensor_backward(Ctx *ctx, Tensor dout, Tensor x) {
    Tensor dx = ctx_zeros(ctx, x.N, x.C, x.H, x.W);
    silu_backward(dx.d, dout.d, x.d, tensor_numel(x));
    return dx;
}
