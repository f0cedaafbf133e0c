// sampling.c: diffusers' Downsample2D and Upsample2D (use_conv=True).
#include <string.h>

#include "nn.h"

void downsample_init(Downsample2D *b, ParamSet *ps, const char *prefix, int channels, int padding) {
    char name[PARAM_NAME_MAX];
    snprintf(name, sizeof(name), "%s.conv", prefix);
    conv2d_init(&b->conv, ps, name, channels, channels, 3, 2, padding);
    if (padding == 0) b->conv.pad_b = b->conv.pad_r = 1;  // F.pad(x, (0, 1, 0, 1)) as in the VAE
}

Tensor downsample_forward(Ctx *ctx, Downsample2D *b, Tensor x) { return conv2d_layer_forward(ctx, &b->conv, x); }

Tensor downsample_backward(Ctx *ctx, Downsample2D *b, Tensor dout) { return conv2d_layer_backward(ctx, &b->conv, dout); }

void upsample_init(Upsample2D *b, ParamSet *ps, const char *prefix, int channels) {
    char name[PARAM_NAME_MAX];
    snprintf(name, sizeof(name), "%s.conv", prefix);
    conv2d_init(&b->conv, ps, name, channels, channels, 3, 1, 1);
}

Tensor upsample_forward(Ctx *ctx, Upsample2D *b, Tensor x) {
    b->x = x;
    Tensor u = ctx_tensor(ctx, x.N, x.C, 2 * x.H, 2 * x.W);  // [N, C, 2H, 2W]
    OP(ctx, upsample_nearest2x_forward, u.d, x.d, x.N, x.C, x.H, x.W);
    return conv2d_layer_forward(ctx, &b->conv, u);
}

Tensor upsample_backward(Ctx *ctx, Upsample2D *b, Tensor dout) {
    Tensor du = conv2d_layer_backward(ctx, &b->conv, dout);
    Tensor dx = ctx_zeros(ctx, b->x.N, b->x.C, b->x.H, b->x.W);
    OP(ctx, upsample_nearest2x_backward, dx.d, du.d, dx.N, dx.C, dx.H, dx.W);
    return dx;
}
