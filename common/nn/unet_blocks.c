// unet_blocks.c: diffusers' unet_2d_blocks used by UNet2DModel and AutoencoderKL:
// DownBlock2D, AttnDownBlock2D, DownEncoderBlock2D (DownBlock); UpBlock2D, AttnUpBlock2D,
// UpDecoderBlock2D (UpBlock); UNetMidBlock2D (MidBlock).
#include <string.h>

#include "../check.h"
#include "nn.h"

static Tensor clone_grad(Ctx *ctx, Tensor g) {
    Tensor c = ctx_zeros(ctx, g.N, g.C, g.H, g.W);
    OP(ctx, accumulate, c.d, g.d, tensor_numel(g));
    return c;
}

// ---- down ----
void down_block_init(DownBlock *b, ParamSet *ps, const char *prefix, const char *type, int cin, int cout,
                     int num_layers, int add_downsample, const BlockConfig *cfg) {
    char name[PARAM_NAME_MAX];
    memset(b, 0, sizeof(*b));
    int temb;
    if (!strcmp(type, "DownBlock2D")) temb = cfg->temb_channels, b->has_attn = 0;
    else if (!strcmp(type, "AttnDownBlock2D")) temb = cfg->temb_channels, b->has_attn = 1;
    else if (!strcmp(type, "DownEncoderBlock2D")) temb = 0, b->has_attn = 0;
    else DIE("%s: unsupported down block type '%s' (DownBlock2D, AttnDownBlock2D, DownEncoderBlock2D)", prefix, type);
    CHECK(num_layers >= 1 && num_layers <= MAX_LAYERS, "%s: %d layers (1..%d supported)", prefix, num_layers, MAX_LAYERS);
    b->n = num_layers;
    b->cout = cout;
    for (int i = 0; i < num_layers; i++) {
        snprintf(name, sizeof(name), "%s.resnets.%d", prefix, i);
        resnet_init(&b->resnets[i], ps, name, i == 0 ? cin : cout, cout, temb, cfg->groups, cfg->eps, 1.0f,
                    cfg->dropout);
        if (b->has_attn) {
            snprintf(name, sizeof(name), "%s.attentions.%d", prefix, i);
            attention_block_init(&b->attentions[i], ps, name, cout, cfg->attention_head_dim ? cfg->attention_head_dim : cout, cfg->groups, cfg->eps, 1.0f);
        }
    }
    b->has_down = add_downsample;
    if (add_downsample) {
        snprintf(name, sizeof(name), "%s.downsamplers.0", prefix);
        downsample_init(&b->down, ps, name, cout, cfg->downsample_padding);
    }
}

int down_block_n_out(const DownBlock *b) { return b->n + b->has_down; }

void down_block_out_shapes(const DownBlock *b, Tensor x, Tensor *res_out) {
    Tensor h = {NULL, x.N, b->cout, x.H, x.W};
    for (int i = 0; i < b->n; i++) res_out[i] = h;
    if (b->has_down) {
        const Conv2d *l = &b->down.conv;
        Conv2dDims d = {h.N, h.C, h.H, h.W, l->cout, l->k, l->stride, l->pad_t, l->pad_b, l->pad_l, l->pad_r};
        res_out[b->n] = (Tensor){NULL, h.N, l->cout, conv2d_oh(d), conv2d_ow(d)};
    }
}

Tensor down_block_forward(Ctx *ctx, DownBlock *b, Tensor x, const float *temb, Tensor *res_out) {
    Tensor h = x;
    for (int i = 0; i < b->n; i++) {
        h = resnet_forward(ctx, &b->resnets[i], h, temb);                 // [N, Cout, H, W]
        if (b->has_attn) h = attention_block_forward(ctx, &b->attentions[i], h);
        if (res_out) res_out[i] = h;
    }
    if (b->has_down) {
        h = downsample_forward(ctx, &b->down, h);                         // [N, Cout, H/2, W/2]
        if (res_out) res_out[b->n] = h;
    }
    return h;
}

Tensor down_block_backward(Ctx *ctx, DownBlock *b, Tensor dhidden, const Tensor *dres, float *dtemb) {
    Tensor g = clone_grad(ctx, dhidden);
    if (b->has_down) {
        if (dres && dres[b->n].d) OP(ctx, accumulate, g.d, dres[b->n].d, tensor_numel(g));
        g = downsample_backward(ctx, &b->down, g);
    }
    for (int i = b->n - 1; i >= 0; i--) {
        if (dres && dres[i].d) OP(ctx, accumulate, g.d, dres[i].d, tensor_numel(g));
        if (b->has_attn) g = attention_block_backward(ctx, &b->attentions[i], g);
        g = resnet_backward(ctx, &b->resnets[i], g, dtemb);
    }
    return g;
}

// ---- up ----
void up_block_init(UpBlock *b, ParamSet *ps, const char *prefix, const char *type, int cin, int prev_out,
                   int cout, int num_layers, int add_upsample, const BlockConfig *cfg) {
    char name[PARAM_NAME_MAX];
    memset(b, 0, sizeof(*b));
    int temb;
    if (!strcmp(type, "UpBlock2D")) temb = cfg->temb_channels, b->has_skips = 1;
    else if (!strcmp(type, "AttnUpBlock2D")) temb = cfg->temb_channels, b->has_skips = 1, b->has_attn = 1;
    else if (!strcmp(type, "UpDecoderBlock2D")) temb = 0, b->has_skips = 0;
    else DIE("%s: unsupported up block type '%s' (UpBlock2D, AttnUpBlock2D, UpDecoderBlock2D)", prefix, type);
    CHECK(num_layers >= 1 && num_layers <= MAX_LAYERS, "%s: %d layers (1..%d supported)", prefix, num_layers, MAX_LAYERS);
    b->n = num_layers;
    b->cout = cout;
    for (int i = 0; i < num_layers; i++) {
        int rin, skip = 0;
        if (b->has_skips) {
            skip = i == num_layers - 1 ? cin : cout;  // res_skip_channels
            rin = i == 0 ? prev_out : cout;
        } else {
            rin = i == 0 ? cin : cout;
        }
        b->hidden_ch[i] = rin;
        snprintf(name, sizeof(name), "%s.resnets.%d", prefix, i);
        resnet_init(&b->resnets[i], ps, name, rin + skip, cout, temb, cfg->groups, cfg->eps, 1.0f, cfg->dropout);
        if (b->has_attn) {
            snprintf(name, sizeof(name), "%s.attentions.%d", prefix, i);
            attention_block_init(&b->attentions[i], ps, name, cout, cfg->attention_head_dim ? cfg->attention_head_dim : cout, cfg->groups, cfg->eps, 1.0f);
        }
    }
    b->has_up = add_upsample;
    if (add_upsample) {
        snprintf(name, sizeof(name), "%s.upsamplers.0", prefix);
        upsample_init(&b->up, ps, name, cout);
    }
}

Tensor up_block_forward(Ctx *ctx, UpBlock *b, Tensor x, const Tensor *res, const float *temb) {
    Tensor h = x;
    for (int i = 0; i < b->n; i++) {
        if (b->has_skips) {
            Tensor r = res[b->n - 1 - i];
            CHECK(r.H == h.H && r.W == h.W && r.N == h.N, "up block: skip %dx%d does not match %dx%d", r.H, r.W, h.H, h.W);
            Tensor cat = ctx_tensor(ctx, h.N, h.C + r.C, h.H, h.W);       // [N, C + Cskip, H, W]
            OP(ctx, concat_channels_forward, cat.d, h.d, r.d, h.N, h.C, r.C, h.H * h.W);
            h = cat;
        }
        h = resnet_forward(ctx, &b->resnets[i], h, temb);                 // [N, Cout, H, W]
        if (b->has_attn) h = attention_block_forward(ctx, &b->attentions[i], h);
    }
    if (b->has_up) h = upsample_forward(ctx, &b->up, h);                  // [N, Cout, 2H, 2W]
    return h;
}

Tensor up_block_out_shape(const UpBlock *b, Tensor x) {
    int s = b->has_up ? 2 : 1;  // Upsample2D: nearest x2, then a 3x3 conv with padding 1
    return (Tensor){NULL, x.N, b->cout, s * x.H, s * x.W};
}

Tensor up_block_backward(Ctx *ctx, UpBlock *b, Tensor dout, Tensor *dres, float *dtemb) {
    Tensor g = dout;
    if (b->has_up) g = upsample_backward(ctx, &b->up, g);
    for (int i = b->n - 1; i >= 0; i--) {
        if (b->has_attn) g = attention_block_backward(ctx, &b->attentions[i], g);
        g = resnet_backward(ctx, &b->resnets[i], g, dtemb);
        if (b->has_skips) {
            // in the forward pass this was: cat = concat(h, res[n-1-i]) on channels
            Tensor dh = ctx_zeros(ctx, g.N, b->hidden_ch[i], g.H, g.W);
            Tensor *dr = &dres[b->n - 1 - i];
            OP(ctx, concat_channels_backward, dh.d, dr->d, g.d, g.N, b->hidden_ch[i], g.C - b->hidden_ch[i], g.H * g.W);
            g = dh;
        }
    }
    return g;
}

// ---- mid ----
void mid_block_init(MidBlock *b, ParamSet *ps, const char *prefix, int C, int add_attention,
                    float output_scale_factor, const BlockConfig *cfg) {
    char name[PARAM_NAME_MAX];
    memset(b, 0, sizeof(*b));
    b->n = 1;
    b->has_attn = add_attention;
    for (int i = 0; i <= b->n; i++) {
        snprintf(name, sizeof(name), "%s.resnets.%d", prefix, i);
        resnet_init(&b->resnets[i], ps, name, C, C, cfg->temb_channels, cfg->groups, cfg->eps, output_scale_factor,
                    cfg->dropout);
    }
    if (add_attention) {
        for (int i = 0; i < b->n; i++) {
            snprintf(name, sizeof(name), "%s.attentions.%d", prefix, i);
            attention_block_init(&b->attentions[i], ps, name, C, cfg->attention_head_dim ? cfg->attention_head_dim : C, cfg->groups, cfg->eps,
                                 output_scale_factor);
        }
    }
}

Tensor mid_block_forward(Ctx *ctx, MidBlock *b, Tensor x, const float *temb) {
    Tensor h = resnet_forward(ctx, &b->resnets[0], x, temb);
    for (int i = 0; i < b->n; i++) {
        if (b->has_attn) h = attention_block_forward(ctx, &b->attentions[i], h);
        h = resnet_forward(ctx, &b->resnets[i + 1], h, temb);
    }
    return h;
}

Tensor mid_block_backward(Ctx *ctx, MidBlock *b, Tensor dout, float *dtemb) {
    Tensor g = dout;
    for (int i = b->n - 1; i >= 0; i--) {
        g = resnet_backward(ctx, &b->resnets[i + 1], g, dtemb);
        if (b->has_attn) g = attention_block_backward(ctx, &b->attentions[i], g);
    }
    return resnet_backward(ctx, &b->resnets[0], g, dtemb);
}
