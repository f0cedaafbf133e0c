// models.h: diffusers' AutoencoderKL and UNet2DModel (with class_embedding) over one ParamSet,
// configured from diffusers config.json dictionaries or from doppel's presets.
#pragma once
#include <jansson.h>

#include "../nn/nn.h"

// ---- AutoencoderKL ----
typedef struct {
    int in_channels, out_channels, latent_channels;
    int n_blocks, block_out_channels[MAX_BLOCKS];
    int layers_per_block, norm_num_groups, sample_size;
    int mid_block_add_attention;
    float scaling_factor;
} VaeConfig;

typedef struct {  // diffusers.models.autoencoders.vae.Encoder / Decoder
    Conv2d conv_in, conv_out;
    DownBlock down[MAX_BLOCKS];
    UpBlock up[MAX_BLOCKS];
    MidBlock mid;
    GroupNorm conv_norm_out;
    Tensor n_out;  // conv_norm_out output, saved for the SiLU backward
} VaeCoder;

typedef struct {
    VaeConfig cfg;
    ParamSet ps;
    VaeCoder encoder, decoder;
    Conv2d quant_conv, post_quant_conv;
} AutoencoderKL;

void vae_build(AutoencoderKL *m, const VaeConfig *cfg);  // declares + allocates params (zeros)
void vae_free(AutoencoderKL *m);
// x (N, in, H, W) -> moments (N, 2*latent, H/f, W/f) = quant_conv(encoder(x)): [mean; logvar]
Tensor vae_encode(Ctx *ctx, AutoencoderKL *m, Tensor x);
Tensor vae_encode_backward(Ctx *ctx, AutoencoderKL *m, Tensor dmoments);
// z (N, latent, h, w) -> image (N, out, h*f, w*f) = decoder(post_quant_conv(z))
Tensor vae_decode(Ctx *ctx, AutoencoderKL *m, Tensor z);
Tensor vae_decode_backward(Ctx *ctx, AutoencoderKL *m, Tensor dout);
int vae_downscale(const VaeConfig *cfg);  // 2^(n_blocks - 1)

// ---- UNet2DModel ----
typedef struct {
    int sample_size, in_channels, out_channels;
    int n_blocks, block_out_channels[MAX_BLOCKS], attn[MAX_BLOCKS];  // attn[i]: block i is Attn{Down,Up}Block2D
    int layers_per_block, norm_num_groups, attention_head_dim, num_class_embeds;
    float norm_eps, freq_shift, mid_block_scale_factor, dropout;
    int flip_sin_to_cos, add_attention;
} UNetConfig;

typedef struct {
    UNetConfig cfg;
    ParamSet ps;
    int time_embed_dim;
    TimestepEmbedding time_embedding;
    int class_embedding;  // param id, -1 if num_class_embeds == 0
    Conv2d conv_in, conv_out;
    DownBlock down[MAX_BLOCKS];
    UpBlock up[MAX_BLOCKS];
    MidBlock mid;
    GroupNorm conv_norm_out;
    int grad_checkpoint;  // training option: recompute each block's activations in backward (unet_2d.c)
    // saved for backward
    const int32_t *labels;
    float *emb;    // (N, time_embed_dim)
    Tensor n_out;
    Tensor skips[MAX_BLOCKS * (MAX_LAYERS + 1) + 1];
    int n_skips;
    // per block in forward order (down blocks, mid, up blocks): its input, where its skips start,
    // and with checkpointing the dropout RNG as it began
    int checkpointed;  // the last forward ran with grad_checkpoint on
    Tensor block_in[2 * MAX_BLOCKS + 1];
    int block_skip[2 * MAX_BLOCKS + 1];
    Rng block_rng[2 * MAX_BLOCKS + 1];
} UNet2DModel;

void unet_build(UNet2DModel *m, const UNetConfig *cfg);
void unet_free(UNet2DModel *m);
// sample (N, in, H, W) in ctx memory, timesteps (N) float and class_labels (N) or NULL on the host
// -> (N, out, H, W) in ctx memory
Tensor unet_forward(Ctx *ctx, UNet2DModel *m, Tensor sample, const float *timesteps, const int32_t *class_labels);
// the same with timesteps and (checked) class_labels already in ctx memory: no copies, so a GPU
// forward of this kind can be captured into a CUDA graph
Tensor unet_forward_ctx(Ctx *ctx, UNet2DModel *m, Tensor sample, const float *timesteps, const int32_t *class_labels);
Tensor unet_backward(Ctx *ctx, UNet2DModel *m, Tensor dout);  // returns dsample

// ---- configs: diffusers config.json <-> structs, presets ----
// Readers of config.json values shared by every model folder (errors "config.json: 'key' ...").
// An absent or null key gives def; config_need refuses an absent one.
int config_need(const json_t *j, const char *key, char *err, size_t errlen);
int config_int(const json_t *j, const char *key, int def, int *out, char *err, size_t errlen);  // within +-2^30
int config_num(const json_t *j, const char *key, float def, float *out, char *err, size_t errlen);
// a list of 1..MAX_BLOCKS integers in 1..65536 (block_out_channels) into out, its length into n
int config_int_list(const json_t *j, const char *key, int *out, int *n, char *err, size_t errlen);
// a float as the shortest decimal that reads back as the same float (1e-05, not 9.99999975e-06)
json_t *config_float(float f);
// n_blocks (1..MAX_BLOCKS) channel counts in 1..65536, layers_per_block in 1..MAX_LAYERS, and
// every count a multiple of norm_num_groups (> 0): 0, or -1 + err naming the value
int check_block_layout(int n_blocks, const int *block_out_channels, int layers_per_block, int norm_num_groups, char *err,
                       size_t errlen);
json_t *vae_config_to_json(const VaeConfig *c);
int vae_config_from_json(VaeConfig *c, const json_t *j, char *err, size_t errlen);
json_t *unet_config_to_json(const UNetConfig *c);
int unet_config_from_json(UNetConfig *c, const json_t *j, char *err, size_t errlen);
// "tiny", "small", "seed" (DESIGN.md); returns -1 for an unknown name
int preset_vae(const char *name, VaeConfig *c);
int preset_unet(const char *name, int num_users, UNetConfig *c);
