// resnet.c: diffusers' ResnetBlock2D (time_embedding_norm "default", pre-norm, SiLU).
#include <string.h>

#include "../check.h"
#include "nn.h"

void resnet_init(ResnetBlock2D *b, ParamSet *ps, const char *prefix, int cin, int cout, int temb_channels,
                 int groups, float eps, float output_scale_factor, float dropout) {
    char name[PARAM_NAME_MAX];
    memset(b, 0, sizeof(*b));
#define SUB(s) (snprintf(name, sizeof(name), "%s." s, prefix), name)
    groupnorm_init(&b->norm1, ps, SUB("norm1"), cin, groups, eps);
    conv2d_init(&b->conv1, ps, SUB("conv1"), cin, cout, 3, 1, 1);
    b->has_temb = temb_channels > 0;
    b->temb_channels = temb_channels;
    if (b->has_temb) linear_init(&b->time_emb_proj, ps, SUB("time_emb_proj"), temb_channels, cout);
    groupnorm_init(&b->norm2, ps, SUB("norm2"), cout, groups, eps);
    conv2d_init(&b->conv2, ps, SUB("conv2"), cout, cout, 3, 1, 1);
    b->has_shortcut = cin != cout;
    if (b->has_shortcut) conv2d_init(&b->conv_shortcut, ps, SUB("conv_shortcut"), cin, cout, 1, 1, 0);
#undef SUB
    b->output_scale_factor = output_scale_factor;
    b->dropout = dropout;
}

Tensor resnet_forward(Ctx *ctx, ResnetBlock2D *b, Tensor x, const float *temb) {
    CHECK(!b->has_temb || temb, "ResnetBlock2D with time_emb_proj needs a time embedding");
    b->x = x;
    b->n1 = groupnorm_layer_forward(ctx, &b->norm1, x);  // [N, Cin, H, W]
    b->a1 = silu_tensor_forward(ctx, b->n1);
    Tensor h = conv2d_layer_forward(ctx, &b->conv1, b->a1);  // [N, Cout, H, W]
    if (b->has_temb) {
        size_t nt = (size_t)x.N * b->temb_channels;
        b->temb = (float *)temb;
        b->temb_act = arena_floats(ctx->arena, nt);
        OP(ctx, silu_forward, b->temb_act, temb, nt);
        float *t = linear_layer_forward(ctx, &b->time_emb_proj, b->temb_act, x.N);  // [N, Cout]
        OP(ctx, add_channel_forward, h.d, h.d, t, h.N, h.C, h.H * h.W);
    }
    b->h1 = h;
    b->n2 = groupnorm_layer_forward(ctx, &b->norm2, h);
    b->a2 = silu_tensor_forward(ctx, b->n2);
    h = b->n2;
    b->hd = b->a2;
    b->drop_mask = NULL;
    if (ctx->train && b->dropout > 0) {
        b->hd = ctx_tensor(ctx, h.N, h.C, h.H, h.W);
        b->drop_mask = arena_floats(ctx->arena, tensor_numel(h));
        OP(ctx, dropout_forward, b->hd.d, b->drop_mask, b->a2.d, tensor_numel(h), b->dropout, ctx->rng);
    }
    h = conv2d_layer_forward(ctx, &b->conv2, b->hd);         // [N, Cout, H, W]
    b->sc = b->has_shortcut ? conv2d_layer_forward(ctx, &b->conv_shortcut, x) : x;
    Tensor out = ctx_tensor(ctx, h.N, h.C, h.H, h.W);
    OP(ctx, residual_forward, out.d, b->sc.d, h.d, 1.0f / b->output_scale_factor, tensor_numel(out));
    return out;
}

Tensor resnet_backward(Ctx *ctx, ResnetBlock2D *b, Tensor dout, float *dtemb) {
    // in the forward pass this was: out = (shortcut(x) + conv2(dropout(silu(norm2(h1))))) * (1/s);
    // both branches receive dh = dout / s
    Tensor dh = ctx_zeros(ctx, dout.N, dout.C, dout.H, dout.W);
    OP(ctx, residual_backward, NULL, dh.d, dout.d, 1.0f / b->output_scale_factor, tensor_numel(dout));
    Tensor g = conv2d_layer_backward(ctx, &b->conv2, dh);
    if (b->drop_mask) {
        Tensor g2 = ctx_zeros(ctx, g.N, g.C, g.H, g.W);
        OP(ctx, dropout_backward, g2.d, g.d, b->drop_mask, tensor_numel(g), b->dropout);
        g = g2;
    }
    g = silu_tensor_backward(ctx, g, b->n2);
    g = groupnorm_layer_backward(ctx, &b->norm2, g);  // gradient of h1 = conv1(...) + temb
    if (b->has_temb) {
        float *dt = arena_zeros(ctx->arena, (size_t)g.N * g.C);
        OP(ctx, add_channel_backward, NULL, dt, g.d, g.N, g.C, g.H * g.W);
        float *dact = linear_layer_backward(ctx, &b->time_emb_proj, dt);
        if (dtemb) OP(ctx, silu_backward, dtemb, dact, b->temb, (size_t)g.N * b->temb_channels);
    }
    g = conv2d_layer_backward(ctx, &b->conv1, g);
    g = silu_tensor_backward(ctx, g, b->n1);
    Tensor dx = groupnorm_layer_backward(ctx, &b->norm1, g);
    if (b->has_shortcut) {
        Tensor dsc = conv2d_layer_backward(ctx, &b->conv_shortcut, dh);
        OP(ctx, accumulate, dx.d, dsc.d, tensor_numel(dx));
    } else {
        OP(ctx, accumulate, dx.d, dh.d, tensor_numel(dx));
    }
    return dx;
}
