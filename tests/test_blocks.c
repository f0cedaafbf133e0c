// test_blocks.c: every diffusers block against PyTorch fixtures (tests/reference/blocks.py):
// exact key set and shapes, forward output, input gradients and every parameter gradient.
#include "blockenv.h"

#define ATOL 1e-4  // the tolerance for blocks; the printed max |diff| is what is reached
#define RTOL 1e-4
static const char *const IO[] = {"x", "temb", "out", "dout", NULL};

static void run_resnet(const char *fixture, int cin, int cout, int temb, float eps, float scale) {
    ParamSet ps = {0};
    ResnetBlock2D b;
    resnet_init(&b, &ps, "blk", cin, cout, temb, 4, eps, scale, 0.0f);
    params_allocate(&ps);
    Env e;
    if (env_open(&e, &ps, fixture, "blk.", IO)) {
        Tensor x = env_tensor(&e, "x"), t = temb ? env_tensor(&e, "temb") : (Tensor){0};
        Tensor out = resnet_forward(&e.ctx, &b, x, t.d);
        env_expect(&e, "out", out.d, ATOL, RTOL);
        float *dtemb = temb ? arena_zeros(&e.arena, (size_t)x.N * temb) : NULL;
        Tensor dx = resnet_backward(&e.ctx, &b, env_tensor(&e, "dout"), dtemb);
        env_expect(&e, "grad.x", dx.d, ATOL, RTOL);
        if (temb) env_expect(&e, "grad.temb", dtemb, ATOL, RTOL);
        env_expect_param_grads(&e, ATOL, RTOL);
    }
    env_close(&e);
    params_free(&ps);
}
static void test_resnet_temb(void) { run_resnet("block_resnet_temb", 8, 16, 12, 1e-5f, 1.0f); }
static void test_resnet_notemb(void) { run_resnet("block_resnet_notemb", 8, 8, 0, 1e-6f, 1.0f); }
static void test_resnet_scale(void) { run_resnet("block_resnet_scale", 8, 8, 12, 1e-5f, 2.0f); }

static void run_sampler(const char *fixture, int down, int padding) {
    ParamSet ps = {0};
    Downsample2D d;
    Upsample2D u;
    if (down) downsample_init(&d, &ps, "blk", 8, padding);
    else upsample_init(&u, &ps, "blk", 8);
    params_allocate(&ps);
    Env e;
    if (env_open(&e, &ps, fixture, "blk.", IO)) {
        Tensor x = env_tensor(&e, "x");
        Tensor out = down ? downsample_forward(&e.ctx, &d, x) : upsample_forward(&e.ctx, &u, x);
        env_expect(&e, "out", out.d, ATOL, RTOL);
        Tensor dout = env_tensor(&e, "dout");
        Tensor dx = down ? downsample_backward(&e.ctx, &d, dout) : upsample_backward(&e.ctx, &u, dout);
        env_expect(&e, "grad.x", dx.d, ATOL, RTOL);
        env_expect_param_grads(&e, ATOL, RTOL);
    }
    env_close(&e);
    params_free(&ps);
}
static void test_downsample_conv(void) { run_sampler("block_downsample_conv", 1, 1); }
static void test_downsample_pad0(void) { run_sampler("block_downsample_pad0", 1, 0); }
static void test_upsample(void) { run_sampler("block_upsample", 0, 0); }

static void run_attention(const char *fixture, int head_dim, float rescale) {
    ParamSet ps = {0};
    AttentionBlock b;
    attention_block_init(&b, &ps, "blk", 16, head_dim, 4, 1e-6f, rescale);
    params_allocate(&ps);
    Env e;
    if (env_open(&e, &ps, fixture, "blk.", IO)) {
        Tensor out = attention_block_forward(&e.ctx, &b, env_tensor(&e, "x"));
        env_expect(&e, "out", out.d, ATOL, RTOL);
        Tensor dx = attention_block_backward(&e.ctx, &b, env_tensor(&e, "dout"));
        env_expect(&e, "grad.x", dx.d, ATOL, RTOL);
        env_expect_param_grads(&e, ATOL, RTOL);
    }
    env_close(&e);
    params_free(&ps);
}
static void test_attention(void) { run_attention("block_attention", 8, 1.0f); }
static void test_attention_rescale(void) { run_attention("block_attention_rescale", 16, 2.0f); }

static void test_timestep_embedding(void) {
    ParamSet ps = {0};
    TimestepEmbedding b;
    timestep_embedding_init(&b, &ps, "blk", 16, 32);
    params_allocate(&ps);
    Env e;
    if (env_open(&e, &ps, "block_timestep_embedding", "blk.", IO)) {
        Tensor x = env_tensor(&e, "x");
        float *out = timestep_embedding_block_forward(&e.ctx, &b, x.d, x.N);
        env_expect(&e, "out", out, ATOL, RTOL);
        float *dx = timestep_embedding_block_backward(&e.ctx, &b, env_tensor(&e, "dout").d);
        env_expect(&e, "grad.x", dx, ATOL, RTOL);
        env_expect_param_grads(&e, ATOL, RTOL);
    }
    env_close(&e);
    params_free(&ps);
}

static void run_down(const char *fixture, const char *type, int temb, float eps, int padding, int check_res) {
    ParamSet ps = {0};
    DownBlock b;
    BlockConfig bc = {.temb_channels = temb, .groups = 4, .eps = eps, .attention_head_dim = 8, .downsample_padding = padding};
    down_block_init(&b, &ps, "blk", type, 8, 16, 2, 1, &bc);
    params_allocate(&ps);
    Env e;
    if (env_open(&e, &ps, fixture, "blk.", IO)) {
        Tensor x = env_tensor(&e, "x"), t = temb ? env_tensor(&e, "temb") : (Tensor){0};
        Tensor res[MAX_LAYERS + 1], dres[MAX_LAYERS + 1];
        Tensor out = down_block_forward(&e.ctx, &b, x, t.d, res);
        env_expect(&e, "out", out.d, ATOL, RTOL);
        int n = down_block_n_out(&b);
        char k[32];
        for (int i = 0; check_res && i < n; i++) {
            snprintf(k, sizeof(k), "res.%d", i);
            env_expect(&e, k, res[i].d, ATOL, RTOL);
            snprintf(k, sizeof(k), "dres.%d", i);
            dres[i] = env_tensor(&e, k);
        }
        float *dtemb = temb ? arena_zeros(&e.arena, (size_t)x.N * temb) : NULL;
        Tensor dx = down_block_backward(&e.ctx, &b, env_tensor(&e, "dout"), check_res ? dres : NULL, dtemb);
        env_expect(&e, "grad.x", dx.d, ATOL, RTOL);
        if (temb) env_expect(&e, "grad.temb", dtemb, ATOL, RTOL);
        env_expect_param_grads(&e, ATOL, RTOL);
    }
    env_close(&e);
    params_free(&ps);
}
static void test_down_encoder(void) { run_down("block_down_encoder", "DownEncoderBlock2D", 0, 1e-6f, 0, 0); }
static void test_down(void) { run_down("block_down", "DownBlock2D", 12, 1e-5f, 1, 1); }
static void test_attn_down(void) { run_down("block_attn_down", "AttnDownBlock2D", 12, 1e-5f, 1, 1); }

static void run_up(const char *fixture, const char *type, int cin, int prev, int cout, int layers, int temb, float eps) {
    ParamSet ps = {0};
    UpBlock b;
    BlockConfig bc = {.temb_channels = temb, .groups = 4, .eps = eps, .attention_head_dim = 8};
    up_block_init(&b, &ps, "blk", type, cin, prev, cout, layers, 1, &bc);
    params_allocate(&ps);
    Env e;
    if (env_open(&e, &ps, fixture, "blk.", IO)) {
        Tensor x = env_tensor(&e, "x"), t = temb ? env_tensor(&e, "temb") : (Tensor){0};
        Tensor res[MAX_LAYERS], dres[MAX_LAYERS];
        char k[32];
        for (int i = 0; b.has_skips && i < layers; i++) {
            snprintf(k, sizeof(k), "res.%d", i);
            res[i] = env_tensor(&e, k);
            dres[i] = ctx_zeros(&e.ctx, res[i].N, res[i].C, res[i].H, res[i].W);
        }
        Tensor out = up_block_forward(&e.ctx, &b, x, res, t.d);
        env_expect(&e, "out", out.d, ATOL, RTOL);
        float *dtemb = temb ? arena_zeros(&e.arena, (size_t)x.N * temb) : NULL;
        Tensor dx = up_block_backward(&e.ctx, &b, env_tensor(&e, "dout"), dres, dtemb);
        env_expect(&e, "grad.x", dx.d, ATOL, RTOL);
        for (int i = 0; b.has_skips && i < layers; i++) {
            snprintf(k, sizeof(k), "grad.res.%d", i);
            env_expect(&e, k, dres[i].d, ATOL, RTOL);
        }
        if (temb) env_expect(&e, "grad.temb", dtemb, ATOL, RTOL);
        env_expect_param_grads(&e, ATOL, RTOL);
    }
    env_close(&e);
    params_free(&ps);
}
static void test_up_decoder(void) { run_up("block_up_decoder", "UpDecoderBlock2D", 16, 0, 8, 2, 0, 1e-6f); }
static void test_up(void) { run_up("block_up", "UpBlock2D", 8, 16, 16, 3, 12, 1e-5f); }
static void test_attn_up(void) { run_up("block_attn_up", "AttnUpBlock2D", 8, 16, 16, 3, 12, 1e-5f); }

static void run_mid(const char *fixture, int temb, float eps, int head_dim) {
    ParamSet ps = {0};
    MidBlock b;
    BlockConfig bc = {.temb_channels = temb, .groups = 4, .eps = eps, .attention_head_dim = head_dim};
    mid_block_init(&b, &ps, "blk", 16, 1, 1.0f, &bc);
    params_allocate(&ps);
    Env e;
    if (env_open(&e, &ps, fixture, "blk.", IO)) {
        Tensor x = env_tensor(&e, "x"), t = temb ? env_tensor(&e, "temb") : (Tensor){0};
        Tensor out = mid_block_forward(&e.ctx, &b, x, t.d);
        env_expect(&e, "out", out.d, ATOL, RTOL);
        float *dtemb = temb ? arena_zeros(&e.arena, (size_t)x.N * temb) : NULL;
        Tensor dx = mid_block_backward(&e.ctx, &b, env_tensor(&e, "dout"), dtemb);
        env_expect(&e, "grad.x", dx.d, ATOL, RTOL);
        if (temb) env_expect(&e, "grad.temb", dtemb, ATOL, RTOL);
        env_expect_param_grads(&e, ATOL, RTOL);
    }
    env_close(&e);
    params_free(&ps);
}
static void test_mid(void) { run_mid("block_mid", 12, 1e-5f, 8); }
static void test_mid_notemb(void) { run_mid("block_mid_notemb", 0, 1e-6f, 0); }

int main(void) {
    RUN(test_resnet_temb);
    RUN(test_resnet_notemb);
    RUN(test_resnet_scale);
    RUN(test_downsample_conv);
    RUN(test_downsample_pad0);
    RUN(test_upsample);
    RUN(test_attention);
    RUN(test_attention_rescale);
    RUN(test_timestep_embedding);
    RUN(test_down_encoder);
    RUN(test_down);
    RUN(test_attn_down);
    RUN(test_up_decoder);
    RUN(test_up);
    RUN(test_attn_up);
    RUN(test_mid);
    RUN(test_mid_notemb);
    return tl_finish();
}
