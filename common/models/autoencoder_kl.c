// autoencoder_kl.c: diffusers' AutoencoderKL (Encoder, Decoder, quant_conv, post_quant_conv).
// Parameter names are diffusers' keys: "encoder.down_blocks.0.resnets.0.conv1.weight", ...
#include <string.h>

#include "../check.h"
#include "models.h"

#define VAE_EPS 1e-6f  // Encoder/Decoder build every norm with eps 1e-6

int vae_downscale(const VaeConfig *cfg) { return 1 << (cfg->n_blocks - 1); }

static void encoder_init(VaeCoder *e, ParamSet *ps, const VaeConfig *c) {
    char name[PARAM_NAME_MAX];
    BlockConfig bc = {.temb_channels = 0, .groups = c->norm_num_groups, .eps = VAE_EPS, .downsample_padding = 0};
    conv2d_init(&e->conv_in, ps, "encoder.conv_in", c->in_channels, c->block_out_channels[0], 3, 1, 1);
    int out = c->block_out_channels[0];
    for (int i = 0; i < c->n_blocks; i++) {
        int in = out;
        out = c->block_out_channels[i];
        snprintf(name, sizeof(name), "encoder.down_blocks.%d", i);
        down_block_init(&e->down[i], ps, name, "DownEncoderBlock2D", in, out, c->layers_per_block,
                        i != c->n_blocks - 1, &bc);
    }
    int top = c->block_out_channels[c->n_blocks - 1];
    bc.attention_head_dim = top;  // one head over all channels
    mid_block_init(&e->mid, ps, "encoder.mid_block", top, c->mid_block_add_attention, 1.0f, &bc);
    groupnorm_init(&e->conv_norm_out, ps, "encoder.conv_norm_out", top, c->norm_num_groups, VAE_EPS);
    conv2d_init(&e->conv_out, ps, "encoder.conv_out", top, 2 * c->latent_channels, 3, 1, 1);  // double_z
}

static void decoder_init(VaeCoder *d, ParamSet *ps, const VaeConfig *c) {
    char name[PARAM_NAME_MAX];
    int top = c->block_out_channels[c->n_blocks - 1];
    BlockConfig bc = {.temb_channels = 0, .groups = c->norm_num_groups, .eps = VAE_EPS, .attention_head_dim = top};
    conv2d_init(&d->conv_in, ps, "decoder.conv_in", c->latent_channels, top, 3, 1, 1);
    mid_block_init(&d->mid, ps, "decoder.mid_block", top, c->mid_block_add_attention, 1.0f, &bc);
    int out = top;
    for (int i = 0; i < c->n_blocks; i++) {
        int prev = out;
        out = c->block_out_channels[c->n_blocks - 1 - i];
        snprintf(name, sizeof(name), "decoder.up_blocks.%d", i);
        up_block_init(&d->up[i], ps, name, "UpDecoderBlock2D", prev, 0, out, c->layers_per_block + 1,
                      i != c->n_blocks - 1, &bc);
    }
    groupnorm_init(&d->conv_norm_out, ps, "decoder.conv_norm_out", c->block_out_channels[0], c->norm_num_groups, VAE_EPS);
    conv2d_init(&d->conv_out, ps, "decoder.conv_out", c->block_out_channels[0], c->out_channels, 3, 1, 1);
}

void vae_build(AutoencoderKL *m, const VaeConfig *cfg) {
    memset(m, 0, sizeof(*m));
    CHECK(cfg->n_blocks >= 1 && cfg->n_blocks <= MAX_BLOCKS, "VAE: %d blocks (1..%d supported)", cfg->n_blocks, MAX_BLOCKS);
    m->cfg = *cfg;
    encoder_init(&m->encoder, &m->ps, cfg);
    decoder_init(&m->decoder, &m->ps, cfg);
    int L2 = 2 * cfg->latent_channels;
    conv2d_init(&m->quant_conv, &m->ps, "quant_conv", L2, L2, 1, 1, 0);
    conv2d_init(&m->post_quant_conv, &m->ps, "post_quant_conv", cfg->latent_channels, cfg->latent_channels, 1, 1, 0);
    params_allocate(&m->ps);
}

void vae_free(AutoencoderKL *m) { params_free(&m->ps); }

// conv_norm_out -> SiLU -> conv_out, shared by encoder and decoder
static Tensor coder_out_forward(Ctx *ctx, VaeCoder *e, Tensor h) {
    e->n_out = groupnorm_layer_forward(ctx, &e->conv_norm_out, h);
    return conv2d_layer_forward(ctx, &e->conv_out, silu_tensor_forward(ctx, e->n_out));
}

static Tensor coder_out_backward(Ctx *ctx, VaeCoder *e, Tensor dout) {
    Tensor g = conv2d_layer_backward(ctx, &e->conv_out, dout);
    g = silu_tensor_backward(ctx, g, e->n_out);
    return groupnorm_layer_backward(ctx, &e->conv_norm_out, g);
}

Tensor vae_encode(Ctx *ctx, AutoencoderKL *m, Tensor x) {
    VaeCoder *e = &m->encoder;
    Tensor h = conv2d_layer_forward(ctx, &e->conv_in, x);              // [N, C0, H, W]
    for (int i = 0; i < m->cfg.n_blocks; i++) h = down_block_forward(ctx, &e->down[i], h, NULL, NULL);
    h = mid_block_forward(ctx, &e->mid, h, NULL);                      // [N, Ctop, H/f, W/f]
    h = coder_out_forward(ctx, e, h);                                  // [N, 2*latent, H/f, W/f]
    return conv2d_layer_forward(ctx, &m->quant_conv, h);               // moments
}

Tensor vae_encode_backward(Ctx *ctx, AutoencoderKL *m, Tensor dmoments) {
    VaeCoder *e = &m->encoder;
    Tensor g = conv2d_layer_backward(ctx, &m->quant_conv, dmoments);
    g = coder_out_backward(ctx, e, g);
    g = mid_block_backward(ctx, &e->mid, g, NULL);
    for (int i = m->cfg.n_blocks - 1; i >= 0; i--) g = down_block_backward(ctx, &e->down[i], g, NULL, NULL);
    return conv2d_layer_backward(ctx, &e->conv_in, g);
}

Tensor vae_decode(Ctx *ctx, AutoencoderKL *m, Tensor z) {
    VaeCoder *d = &m->decoder;
    Tensor h = conv2d_layer_forward(ctx, &m->post_quant_conv, z);      // [N, latent, h, w]
    h = conv2d_layer_forward(ctx, &d->conv_in, h);                     // [N, Ctop, h, w]
    h = mid_block_forward(ctx, &d->mid, h, NULL);
    for (int i = 0; i < m->cfg.n_blocks; i++) h = up_block_forward(ctx, &d->up[i], h, NULL, NULL);
    return coder_out_forward(ctx, d, h);                               // [N, out, h*f, w*f]
}

Tensor vae_decode_backward(Ctx *ctx, AutoencoderKL *m, Tensor dout) {
    VaeCoder *d = &m->decoder;
    Tensor g = coder_out_backward(ctx, d, dout);
    for (int i = m->cfg.n_blocks - 1; i >= 0; i--) g = up_block_backward(ctx, &d->up[i], g, NULL, NULL);
    g = mid_block_backward(ctx, &d->mid, g, NULL);
    g = conv2d_layer_backward(ctx, &d->conv_in, g);
    return conv2d_layer_backward(ctx, &m->post_quant_conv, g);
}
