// unet_2d.c: diffusers' UNet2DModel (positional time embedding, class_embedding for users).
// Skips are an explicit stack: conv_in's output, then every down block's output states; each up
// block pops as many as it has resnets.
//
// Activation recomputation (m->grad_checkpoint; `doppel-diffuser train --grad-checkpoint`): the
// forward runs each block (down blocks, mid, up blocks) as a segment: it copies the block's
// outputs (hidden state; a down block's skips) into arena memory taken before a mark, then rewinds
// the arena to the mark, freeing the block's activations. The backward, block by block in reverse,
// marks the arena, restores the RNG the block's forward began with (dropout replays its masks),
// runs the block's forward again from its kept input (refilling what the block structs save),
// then its backward, copies the input gradient into memory taken before the mark, and rewinds.
// Parameter, skip and embedding gradients add into buffers that outlive every segment, in the
// same order as without recomputation: the results are bit-identical, for one more forward of
// every block. What stays: the skips, each block's output, their gradients and one block's
// activations at a time.
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

// Block k in forward order: down blocks 0..B-1, the mid block B, up blocks B+1..2B. A down block
// pushes its output states at res; an up block reads its skips there.
static Tensor block_forward(Ctx *ctx, UNet2DModel *m, int k, Tensor x, Tensor *res) {
    int B = m->cfg.n_blocks;
    if (k < B) return down_block_forward(ctx, &m->down[k], x, m->emb, res);
    if (k == B) return mid_block_forward(ctx, &m->mid, x, m->emb);
    return up_block_forward(ctx, &m->up[k - B - 1], x, res, m->emb);
}

static Tensor block_backward(Ctx *ctx, UNet2DModel *m, int k, Tensor dout, Tensor *dres, float *demb) {
    int B = m->cfg.n_blocks;
    if (k < B) return down_block_backward(ctx, &m->down[k], dout, dres, demb);
    if (k == B) return mid_block_backward(ctx, &m->mid, dout, demb);
    return up_block_backward(ctx, &m->up[k - B - 1], dout, dres, demb);
}

static void copy_tensor(Ctx *ctx, Tensor dst, Tensor src) {
    CHECK(dst.N == src.N && dst.C == src.C && dst.H == src.H && dst.W == src.W,
          "UNet checkpointing: a block made (%d, %d, %d, %d) where (%d, %d, %d, %d) was expected (bug in a shape helper)",
          src.N, src.C, src.H, src.W, dst.N, dst.C, dst.H, dst.W);
    OP(ctx, copy_floats, dst.d, src.d, tensor_numel(src));
}

// The forward of block k; checkpointed, as a segment that keeps only the block's outputs.
static Tensor run_block(Ctx *ctx, UNet2DModel *m, int k, Tensor x) {
    int B = m->cfg.n_blocks;
    Tensor *res = &m->skips[m->block_skip[k]];
    m->block_in[k] = x;
    if (!m->checkpointed) return block_forward(ctx, m, k, x, res);
    int n = k < B ? down_block_n_out(&m->down[k]) : 1;
    Tensor kept[MAX_LAYERS + 1], made[MAX_LAYERS + 1];
    if (k < B) down_block_out_shapes(&m->down[k], x, kept);
    else kept[0] = k == B ? x : up_block_out_shape(&m->up[k - B - 1], x);  // the mid block keeps the shape
    for (int j = 0; j < n; j++) kept[j].d = arena_floats(ctx->arena, tensor_numel(kept[j]));  // outlive the segment
    m->block_rng[k] = *ctx->rng;
    ArenaMark mark = arena_mark(ctx->arena);
    made[n - 1] = block_forward(ctx, m, k, x, k < B ? made : res);
    for (int j = 0; j < n; j++) copy_tensor(ctx, kept[j], made[j]);
    arena_rewind(ctx->arena, mark);
    if (k < B) memcpy(res, kept, (size_t)n * sizeof(Tensor));
    return kept[n - 1];
}

// The backward of block k; checkpointed, its forward runs again first, in a segment that keeps
// only the input gradient.
static Tensor backprop_block(Ctx *ctx, UNet2DModel *m, int k, Tensor dout, Tensor *dskips, float *demb) {
    int B = m->cfg.n_blocks;
    Tensor *dres = k == B ? NULL : &dskips[m->block_skip[k]];
    if (!m->checkpointed) return block_backward(ctx, m, k, dout, dres, demb);
    Tensor x = m->block_in[k], dx = ctx_tensor(ctx, x.N, x.C, x.H, x.W);  // outlives the segment
    Tensor made[MAX_LAYERS + 1];
    *ctx->rng = m->block_rng[k];
    ArenaMark mark = arena_mark(ctx->arena);
    block_forward(ctx, m, k, x, k < B ? made : &m->skips[m->block_skip[k]]);  // refills the saved activations
    copy_tensor(ctx, dx, block_backward(ctx, m, k, dout, dres, demb));
    arena_rewind(ctx->arena, mark);
    return dx;
}

Tensor unet_forward(Ctx *ctx, UNet2DModel *m, Tensor sample, const float *timesteps, const int32_t *class_labels) {
    const UNetConfig *c = &m->cfg;
    int N = sample.N;
    CHECK(m->class_embedding < 0 || class_labels, "UNet: class_labels are needed (model has num_class_embeds=%d)",
          c->num_class_embeds);
    for (int n = 0; m->class_embedding >= 0 && n < N; n++)
        CHECK(class_labels[n] >= 0 && class_labels[n] < c->num_class_embeds, "UNet: class label %d outside [0, %d)",
              class_labels[n], c->num_class_embeds);
    const float *t_ctx = ctx_input(ctx, timesteps, (size_t)N * sizeof(float));  // host arrays in, on the GPU too
    const int32_t *l_ctx = m->class_embedding >= 0 ? ctx_input(ctx, class_labels, (size_t)N * sizeof(int32_t)) : NULL;
    return unet_forward_ctx(ctx, m, sample, t_ctx, l_ctx);
}

Tensor unet_forward_ctx(Ctx *ctx, UNet2DModel *m, Tensor sample, const float *timesteps, const int32_t *class_labels) {
    const UNetConfig *c = &m->cfg;
    int N = sample.N, C0 = c->block_out_channels[0], D = m->time_embed_dim, B = c->n_blocks;
    CHECK(sample.C == c->in_channels, "UNet: sample has %d channels, model expects %d", sample.C, c->in_channels);
    CHECK(m->class_embedding < 0 || class_labels, "UNet: class_labels are needed (model has num_class_embeds=%d)",
          c->num_class_embeds);
    m->checkpointed = m->grad_checkpoint;
    // 1. time + class embedding
    float *t_emb = arena_floats(ctx->arena, (size_t)N * C0);  // [N, C0]
    OP(ctx, timestep_embedding_forward, t_emb, timesteps, N, C0, c->flip_sin_to_cos, c->freq_shift, 1.0f, 10000.0f);
    m->emb = timestep_embedding_block_forward(ctx, &m->time_embedding, t_emb, N);  // [N, D]
    m->labels = NULL;
    if (m->class_embedding >= 0) {
        m->labels = class_labels;
        float *ce = arena_floats(ctx->arena, (size_t)N * D);
        OP(ctx, embedding_forward, ce, m->labels, param_ptr(ctx->ps, m->class_embedding), N, D);
        OP(ctx, accumulate, m->emb, ce, (size_t)N * D);
    }
    // 2. conv_in, 3. down: each block pushes its output states
    Tensor h = conv2d_layer_forward(ctx, &m->conv_in, sample);  // [N, C0, H, W]
    m->n_skips = 0;
    m->skips[m->n_skips++] = h;
    for (int i = 0; i < B; i++) {
        m->block_skip[i] = m->n_skips;
        h = run_block(ctx, m, i, h);                             // [N, C_i, H/2^(i+1), W/2^(i+1)], the last not halved
        m->n_skips += down_block_n_out(&m->down[i]);
    }
    // 4. mid
    m->block_skip[B] = m->n_skips;
    h = run_block(ctx, m, B, h);                                 // [N, Ctop, H/f, W/f]
    // 5. up: each block consumes the top len(resnets) skips
    int top = m->n_skips;
    for (int i = 0; i < B; i++) {
        top -= m->up[i].n;
        m->block_skip[B + 1 + i] = top;
        h = run_block(ctx, m, B + 1 + i, h);                     // [N, C_(B-1-i), 2h, 2w], the last not doubled
    }
    CHECK(top == 0, "UNet: %d skip connections left unused (bug in block wiring)", top);
    // 6. post-process
    m->n_out = groupnorm_layer_forward(ctx, &m->conv_norm_out, h);
    return conv2d_layer_forward(ctx, &m->conv_out, silu_tensor_forward(ctx, m->n_out));  // [N, out, H, W]
}

Tensor unet_backward(Ctx *ctx, UNet2DModel *m, Tensor dout) {
    const UNetConfig *c = &m->cfg;
    int N = dout.N, D = m->time_embed_dim;
    Rng rng = *ctx->rng;  // the state after the forward: recomputation replays the blocks' dropout
    float *demb = arena_zeros(ctx->arena, (size_t)N * D);
    Tensor dskips[MAX_BLOCKS * (MAX_LAYERS + 1) + 1];
    for (int i = 0; i < m->n_skips; i++) {
        Tensor s = m->skips[i];
        dskips[i] = ctx_zeros(ctx, s.N, s.C, s.H, s.W);
    }
    Tensor g = conv2d_layer_backward(ctx, &m->conv_out, dout);
    g = silu_tensor_backward(ctx, g, m->n_out);
    g = groupnorm_layer_backward(ctx, &m->conv_norm_out, g);
    for (int k = 2 * c->n_blocks; k >= 0; k--)  // up blocks, mid, down blocks
        g = backprop_block(ctx, m, k, g, dskips, demb);
    OP(ctx, accumulate, g.d, dskips[0].d, tensor_numel(g));  // conv_in's output was skip 0
    Tensor dsample = conv2d_layer_backward(ctx, &m->conv_in, g);
    if (m->class_embedding >= 0) OP(ctx, embedding_backward, grad_ptr(ctx->ps, m->class_embedding), demb, m->labels, N, D);
    timestep_embedding_block_backward(ctx, &m->time_embedding, demb);  // timesteps take no gradient
    *ctx->rng = rng;
    return dsample;
}
