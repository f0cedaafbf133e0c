// unet_2d.c: diffusers' UNet2DModel (positional time embedding, class_embedding for users).
// Skips are an explicit stack: conv_in's output, then every down block's output states; each up
// block pops as many as it has resnets.
#include <string.h>

#include "../check.h"
#include "models.h"

void unet_build(UNet2DModel *m, const UNetConfig *c) {
    char name[PARAM_NAME_MAX];
    memset(m, 0, sizeof(*m));
    CHECK(c->n_blocks >= 1 && c->n_blocks <= MAX_BLOCKS, "UNet: %d blocks (1..%d supported)", c->n_blocks, MAX_BLOCKS);
    m->cfg = *c;
    ParamSet *ps = &m->ps;
    int C0 = c->block_out_channels[0], top = c->block_out_channels[c->n_blocks - 1];
    m->time_embed_dim = 4 * C0;
    timestep_embedding_init(&m->time_embedding, ps, "time_embedding", C0, m->time_embed_dim);
    m->class_embedding = -1;
    if (c->num_class_embeds > 0)
        m->class_embedding = params_declare(ps, INIT_NORMAL, 1.0f, (int64_t[]){c->num_class_embeds, m->time_embed_dim, 0},
                                            "class_embedding.weight");
    conv2d_init(&m->conv_in, ps, "conv_in", c->in_channels, C0, 3, 1, 1);
    BlockConfig bc = {.temb_channels = m->time_embed_dim, .groups = c->norm_num_groups, .eps = c->norm_eps,
                      .attention_head_dim = c->attention_head_dim, .downsample_padding = 1, .dropout = c->dropout};
    int out = C0;
    for (int i = 0; i < c->n_blocks; i++) {
        int in = out;
        out = c->block_out_channels[i];
        snprintf(name, sizeof(name), "down_blocks.%d", i);
        down_block_init(&m->down[i], ps, name, c->attn[i] ? "AttnDownBlock2D" : "DownBlock2D", in, out,
                        c->layers_per_block, i != c->n_blocks - 1, &bc);
    }
    mid_block_init(&m->mid, ps, "mid_block", top, c->add_attention, c->mid_block_scale_factor, &bc);
    out = top;
    for (int i = 0; i < c->n_blocks; i++) {
        int prev = out, r = c->n_blocks - 1 - i;
        out = c->block_out_channels[r];
        int in = c->block_out_channels[r > 0 ? r - 1 : 0];
        snprintf(name, sizeof(name), "up_blocks.%d", i);
        up_block_init(&m->up[i], ps, name, c->attn[r] ? "AttnUpBlock2D" : "UpBlock2D", in, prev, out,
                      c->layers_per_block + 1, i != c->n_blocks - 1, &bc);
    }
    groupnorm_init(&m->conv_norm_out, ps, "conv_norm_out", C0, c->norm_num_groups, c->norm_eps);
    conv2d_init(&m->conv_out, ps, "conv_out", C0, c->out_channels, 3, 1, 1);
    params_allocate(ps);
}

void unet_free(UNet2DModel *m) { params_free(&m->ps); }

Tensor unet_forward(Ctx *ctx, UNet2DModel *m, Tensor sample, const float *timesteps, const int32_t *class_labels) {
    const UNetConfig *c = &m->cfg;
    int N = sample.N, C0 = c->block_out_channels[0], D = m->time_embed_dim;
    CHECK(sample.C == c->in_channels, "UNet: sample has %d channels, model expects %d", sample.C, c->in_channels);
    CHECK(m->class_embedding < 0 || class_labels, "UNet: class_labels are needed (model has num_class_embeds=%d)",
          c->num_class_embeds);
    // 1. time + class embedding
    float *t_emb = arena_floats(ctx->arena, (size_t)N * C0);  // [N, C0]
    timestep_embedding_forward(t_emb, timesteps, N, C0, c->flip_sin_to_cos, c->freq_shift, 1.0f, 10000.0f);
    m->emb = timestep_embedding_block_forward(ctx, &m->time_embedding, t_emb, N);  // [N, D]
    m->labels = class_labels;
    if (m->class_embedding >= 0) {
        for (int n = 0; n < N; n++)
            CHECK(class_labels[n] >= 0 && class_labels[n] < c->num_class_embeds, "UNet: class label %d outside [0, %d)",
                  class_labels[n], c->num_class_embeds);
        float *ce = arena_floats(ctx->arena, (size_t)N * D);
        embedding_forward(ce, class_labels, param_ptr(ctx->ps, m->class_embedding), N, D);
        accumulate(m->emb, ce, (size_t)N * D);
    }
    // 2. conv_in, 3. down
    Tensor h = conv2d_layer_forward(ctx, &m->conv_in, sample);  // [N, C0, H, W]
    m->n_skips = 0;
    m->skips[m->n_skips++] = h;
    for (int i = 0; i < c->n_blocks; i++) {
        h = down_block_forward(ctx, &m->down[i], h, m->emb, &m->skips[m->n_skips]);
        m->n_skips += down_block_n_out(&m->down[i]);
    }
    // 4. mid
    h = mid_block_forward(ctx, &m->mid, h, m->emb);  // [N, Ctop, H/f, W/f]
    // 5. up: each block consumes the top len(resnets) skips
    int top = m->n_skips;
    for (int i = 0; i < c->n_blocks; i++) {
        top -= m->up[i].n;
        h = up_block_forward(ctx, &m->up[i], h, &m->skips[top], m->emb);
    }
    CHECK(top == 0, "UNet: %d skip connections left unused (bug in block wiring)", top);
    // 6. post-process
    m->n_out = groupnorm_layer_forward(ctx, &m->conv_norm_out, h);
    return conv2d_layer_forward(ctx, &m->conv_out, silu_tensor_forward(ctx, m->n_out));  // [N, out, H, W]
}

Tensor unet_backward(Ctx *ctx, UNet2DModel *m, Tensor dout) {
    const UNetConfig *c = &m->cfg;
    int N = dout.N, D = m->time_embed_dim;
    float *demb = arena_zeros(ctx->arena, (size_t)N * D);
    Tensor dskips[MAX_BLOCKS * (MAX_LAYERS + 1) + 1];
    for (int i = 0; i < m->n_skips; i++) {
        Tensor s = m->skips[i];
        dskips[i] = ctx_zeros(ctx, s.N, s.C, s.H, s.W);
    }
    Tensor g = conv2d_layer_backward(ctx, &m->conv_out, dout);
    g = silu_tensor_backward(ctx, g, m->n_out);
    g = groupnorm_layer_backward(ctx, &m->conv_norm_out, g);
    int top = 0;
    for (int i = c->n_blocks - 1; i >= 0; i--) {
        g = up_block_backward(ctx, &m->up[i], g, &dskips[top], demb);
        top += m->up[i].n;
    }
    g = mid_block_backward(ctx, &m->mid, g, demb);
    int k = m->n_skips;
    for (int i = c->n_blocks - 1; i >= 0; i--) {
        k -= down_block_n_out(&m->down[i]);
        g = down_block_backward(ctx, &m->down[i], g, &dskips[k], demb);
    }
    accumulate(g.d, dskips[0].d, tensor_numel(g));  // conv_in's output was skip 0
    Tensor dsample = conv2d_layer_backward(ctx, &m->conv_in, g);
    if (m->class_embedding >= 0) embedding_backward(grad_ptr(ctx->ps, m->class_embedding), demb, m->labels, N, D);
    timestep_embedding_block_backward(ctx, &m->time_embedding, demb);  // timesteps take no gradient
    return dsample;
}
