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

void ctx_init_cuda(Ctx *ctx, ParamSet *ps, Arena *arena, Rng *rng) {
    CHECK(cuda_available(), "ctx_init_cuda: no CUDA GPU (check cuda_available() first)");
    CHECK(arena->mem == &cuda_arena_memory, "ctx_init_cuda: the arena is not on the GPU (arena_init_on)");
    ctx_init(ctx, ps, arena, rng);
    ctx->cuda = 1;
}

void compute_init(Compute *c, ParamSet *ps, Rng *rng, int gpu) {
    memset(c, 0, sizeof(*c));
    c->host = ps;
    if (gpu) {
        cudaStream_t s = cuda_stream_create();  // a stream of its own: sampling can record CUDA graphs on it
        cuda_set_current_stream(s);
        Precision p = PREC_FP32;  // DOPPEL_PRECISION=tf32|bf16: GEMMs on tensor cores (cuda.h)
        const char *prec = getenv("DOPPEL_PRECISION");
        if (prec && precision_parse(prec, &p)) DIE("DOPPEL_PRECISION=%s: use fp32, tf32, bf16 or fp16", prec);
        cuda_set_precision(p);
        arena_init_on(&c->arena, 0, &cuda_arena_memory);
        cuda_params_mirror(&c->mirror, ps);
        ctx_init_cuda(&c->ctx, &c->mirror, &c->arena, rng);
        c->ctx.stream = s;
    } else {
        arena_init(&c->arena, 0);
        ctx_init(&c->ctx, ps, &c->arena, rng);
    }
}

void compute_params_to_host(Compute *c) {
    if (c->ctx.cuda) cuda_params_to_host(c->host, &c->mirror);
}

void compute_precision(Compute *c, const char *name, const char *who) {
    Precision p;
    if (!name) return;
    CHECK(precision_parse(name, &p) == 0, "compute_precision: '%s' is not fp32, tf32, bf16 or fp16", name);
    if (c->ctx.cuda) cuda_set_precision(p);
    else if (p != PREC_FP32) fprintf(stderr, "%s: --precision %s applies to the GPU; the CPU computes in fp32\n", who, name);
}

void ctx_zero_grad(const Ctx *ctx, ParamSet *ps) {
    if (ctx->cuda) cuda_zero(ps->grad, ps->total * sizeof(float));
    else params_zero_grad(ps);
}

void compute_zero_grad(Compute *c) { ctx_zero_grad(&c->ctx, c->ctx.ps); }

void compute_free(Compute *c) {
    int gpu = c->ctx.cuda;
    cudaStream_t s = c->ctx.stream;
    if (gpu) cuda_sync();
    ctx_free(&c->ctx);
    arena_free(&c->arena);
    if (!gpu) return;
    cuda_params_free(&c->mirror);
    cuda_stream_destroy(s);
    cuda_set_current_stream(NULL);
}

void ctx_free(Ctx *ctx) {
    if (ctx->cuda) cuda_free(ctx->scratch);
    else free(ctx->scratch);
    ctx->scratch = NULL;
    ctx->scratch_cap = 0;
}

float *ctx_scratch(Ctx *ctx, size_t floats) {
    if (floats > ctx->scratch_cap) {
        if (ctx->cuda) {
            cuda_free(ctx->scratch);
            ctx->scratch = cuda_malloc(floats * sizeof(float));
        } else {
            free(ctx->scratch);
            ctx->scratch = xmalloc(floats * sizeof(float));
        }
        ctx->scratch_cap = floats;
    }
    return ctx->scratch;
}

const void *ctx_input(Ctx *ctx, const void *host, size_t bytes) {
    if (!ctx->cuda || !host) return host;
    void *d = arena_alloc(ctx->arena, bytes ? bytes : 1);
    cuda_upload(d, host, bytes);
    return d;
}

void ctx_put(Ctx *ctx, void *dst, const void *host, size_t bytes) {
    if (ctx->cuda) cuda_upload(dst, host, bytes);
    else if (dst != host) memcpy(dst, host, bytes);
}

void ctx_get(Ctx *ctx, void *host, const void *src, size_t bytes) {
    if (ctx->cuda) cuda_download(host, src, bytes);
    else if (host != src) memcpy(host, src, bytes);
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
    float *scratch = ctx_scratch(ctx, ctx->cuda ? conv2d_scratch_floats_cuda(d) : conv2d_scratch_floats(d));
    OP(ctx, conv2d_forward, y.d, x.d, P(l->weight), l->bias >= 0 ? P(l->bias) : NULL, scratch, d);
    return y;
}

Tensor conv2d_layer_backward(Ctx *ctx, Conv2d *l, Tensor dout) {
    Conv2dDims d = conv_dims(l, l->in);
    Tensor dx = ctx_zeros(ctx, l->in.N, l->in.C, l->in.H, l->in.W);
    float *scratch = ctx_scratch(ctx, ctx->cuda ? conv2d_scratch_floats_cuda(d) : conv2d_scratch_floats(d));
    OP(ctx, conv2d_backward, dx.d, G(l->weight), l->bias >= 0 ? G(l->bias) : NULL, dout.d, l->in.d, P(l->weight),
       scratch, d);
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
    OP(ctx, linear_forward, y, x, P(l->weight), P(l->bias), rows, l->in, l->out);
    return y;
}

float *linear_layer_backward(Ctx *ctx, Linear *l, const float *dout) {
    float *dx = arena_zeros(ctx->arena, (size_t)l->rows * l->in);
    OP(ctx, linear_backward, dx, G(l->weight), G(l->bias), dout, l->x, P(l->weight), l->rows, l->in, l->out);
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
    OP(ctx, groupnorm_forward, y.d, l->mean, l->rstd, x.d, P(l->weight), P(l->bias), x.N, x.C, x.H * x.W, l->G, l->eps);
    return y;
}

Tensor groupnorm_layer_backward(Ctx *ctx, GroupNorm *l, Tensor dout) {
    Tensor x = l->in, dx = ctx_zeros(ctx, x.N, x.C, x.H, x.W);
    OP(ctx, groupnorm_backward, dx.d, G(l->weight), G(l->bias), dout.d, x.d, P(l->weight), l->mean, l->rstd, x.N, x.C,
                       x.H * x.W, l->G);
    return dx;
}

// ---- BatchNorm2d ----
#define BATCHNORM_EPS 1e-5f
#define BATCHNORM_MOMENTUM 0.1f

void batchnorm_init(BatchNorm *l, ParamSet *ps, const char *prefix, int C) {
    memset(l, 0, sizeof(*l));
    l->weight = params_declare(ps, INIT_ONES, 0, (int64_t[]){C, 0}, "%s.weight", prefix);
    l->bias = params_declare(ps, INIT_ZEROS, 0, (int64_t[]){C, 0}, "%s.bias", prefix);
    l->running_mean = params_declare(ps, INIT_ZEROS, 0, (int64_t[]){C, 0}, "%s.running_mean", prefix);
    l->running_var = params_declare(ps, INIT_ONES, 0, (int64_t[]){C, 0}, "%s.running_var", prefix);
    // buffers: their gradient stays 0, so AdamW leaves them alone once decay is off too
    ps->info[l->running_mean].no_decay = ps->info[l->running_var].no_decay = 1;
    l->C = C, l->eps = BATCHNORM_EPS, l->momentum = BATCHNORM_MOMENTUM;
}

Tensor batchnorm_layer_forward(Ctx *ctx, BatchNorm *l, Tensor x) {
    CHECK(x.C == l->C, "batchnorm: input has %d channels, layer expects %d", x.C, l->C);
    l->in = x, l->train = ctx->train;
    l->mean = arena_floats(ctx->arena, (size_t)x.C);
    l->rstd = arena_floats(ctx->arena, (size_t)x.C);
    Tensor y = ctx_tensor(ctx, x.N, x.C, x.H, x.W);
    OP(ctx, batchnorm_forward, y.d, l->mean, l->rstd, P(l->running_mean), P(l->running_var), x.d, P(l->weight),
       P(l->bias), x.N, x.C, x.H * x.W, l->eps, l->momentum, l->train);
    return y;
}

Tensor batchnorm_layer_backward(Ctx *ctx, BatchNorm *l, Tensor dout) {
    Tensor x = l->in, dx = ctx_zeros(ctx, x.N, x.C, x.H, x.W);
    OP(ctx, batchnorm_backward, dx.d, G(l->weight), G(l->bias), dout.d, x.d, P(l->weight), l->mean, l->rstd, x.N, x.C,
       x.H * x.W, l->train);
    return dx;
}

// ---- SiLU ----
Tensor silu_tensor_forward(Ctx *ctx, Tensor x) {
    Tensor y = ctx_tensor(ctx, x.N, x.C, x.H, x.W);
    OP(ctx, silu_forward, y.d, x.d, tensor_numel(x));
    return y;
}

Tensor silu_tensor_backward(Ctx *ctx, Tensor dout, Tensor x) {
    Tensor dx = ctx_zeros(ctx, x.N, x.C, x.H, x.W);
    OP(ctx, silu_backward, dx.d, dout.d, x.d, tensor_numel(x));
    return dx;
}
