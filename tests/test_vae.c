// test_vae.c: VAE training and folders in-process: the tiny VAE overfits a fixed synthetic batch
// (reconstruction loss falls 10x), a folder written by diffusers' save_pretrained loads and
// encodes/decodes as diffusers did, and corrupt or mismatched folders are refused with a message.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "data/dataset.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/vae_folder.h"
#include "models/vae_train.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/lr_schedule.h"
#include "testlib.h"

static void test_tiny_overfits(void) {
    VaeConfig c;
    preset_vae("tiny", &c);
    AutoencoderKL m;
    vae_build(&m, &c);
    Rng rng;
    rng_seed(&rng, 3);
    params_init(&m.ps, &rng);
    Dataset ds;  // a fixed batch of 8 simulated 32x32 spectrograms
    dataset_synthetic(&ds, 4, 2, 11);
    Preprocess pp = {32, 1, CMAP_JET};
    float *x = xmalloc(8 * 32 * 32 * sizeof(float));
    char err[256];
    for (int i = 0; i < 8; i++) EXPECT(preprocess_sample(&ds, i, &pp, x + i * 1024, err, sizeof(err)) == 0, "%s", err);
    Arena arena;
    arena_init(&arena, 0);
    Ctx ctx;
    ctx_init(&ctx, &m.ps, &arena, &rng);
    AdamW opt;
    adamw_init(&opt, &m.ps, 2e-3f, 0.9f, 0.999f, 1e-8f, 0.0f);
    TrainLossConfig lc = {0, 1e-6f, 0, 0};
    float first = 0, last = 0;
    int steps = 300;
    for (int s = 0; s < steps; s++) {
        arena_reset(&arena);
        params_zero_grad(&m.ps);
        TrainLosses l;
        Tensor xt = ctx_tensor(&ctx, 8, 1, 32, 32);
        memcpy(xt.d, x, 8 * 1024 * sizeof(float));
        vae_train_step(&ctx, &m, xt, &lc, 1.0f, &l);
        clip_grad_norm(&m.ps, 1.0f);
        adamw_step(&opt, &m.ps, lr_at(LR_COSINE_WARMUP, 2e-3f, s, 10, steps));
        if (s == 0) first = l.rec;  // the untrained model
        if (s >= steps - 10) last += l.rec / 10;
        if (s % 50 == 0 || s == steps - 1) printf("  step %3d  L1 %.5f  KL %.1f\n", s + 1, l.rec, l.kl);
    }
    printf("  L1 reconstruction: untrained %.4f, last 10 steps %.4f (%.1fx lower)\n", first, last, first / last);
    EXPECT(last * 10 <= first, "reconstruction loss fell only %.1fx", first / last);
    free(x);
    dataset_free(&ds);
    ctx_free(&ctx);
    arena_free(&arena);
    vae_free(&m);
}

static void test_diffusers_folder_loads(void) {
    char err[512], dir[512];
    snprintf(dir, sizeof(dir), "%s/diffusers_vae_tiny", fx_dir());
    VaeFolder v;
    EXPECT(vae_folder_load(&v, dir, err, sizeof(err)) == 0, "%s", err);
    if (tl_current_failed()) return;
    EXPECT(v.model.cfg.scaling_factor == 0.5f && v.model.cfg.in_channels == 1, "config read");
    SafeTensors *st = fx_open("diffusers_vae_tiny_io");
    if (st) {
        Arena arena;
        arena_init(&arena, 0);
        Rng rng;
        rng_seed(&rng, 0);
        Ctx ctx;
        ctx_init(&ctx, &v.model.ps, &arena, &rng);
        size_t n;
        float *x = fx_f32(st, "x", &n), *mean = fx_f32(st, "mean", NULL), *logvar = fx_f32(st, "logvar", NULL),
              *rec = fx_f32(st, "rec", NULL);
        Tensor mom = vae_encode(&ctx, &v.model, (Tensor){x, 2, 1, 32, 32});
        size_t per = (size_t)4 * 16 * 16;
        for (int i = 0; i < 2; i++) {
            EXPECT_CLOSE("latent mean", mom.d + i * 2 * per, mean + i * per, per, 1e-4, 1e-4);
            EXPECT_CLOSE("latent logvar", mom.d + i * 2 * per + per, logvar + i * per, per, 1e-4, 1e-4);
        }
        Tensor z = ctx_tensor(&ctx, 2, 4, 16, 16);
        memcpy(z.d, mean, 2 * per * sizeof(float));
        Tensor y = vae_decode(&ctx, &v.model, z);
        EXPECT_CLOSE("reconstruction", y.d, rec, n, 1e-4, 1e-4);
        free(x), free(mean), free(logvar), free(rec);
        ctx_free(&ctx);
        arena_free(&arena);
        fx_close(st);
    }
    vae_folder_free(&v);
}

static void copy_folder(const char *from, const char *to) {
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "rm -rf %s && mkdir -p %s && cp %s/* %s/", to, to, from, to);
    EXPECT(system(cmd) == 0, "%s", cmd);
}

static void test_bad_folders_refused(void) {
    char err[512], src[512], cmd[1024];
    snprintf(src, sizeof(src), "%s/diffusers_vae_tiny", fx_dir());
    VaeFolder v;
    const char *d = "build/test-out/badvae";
    // truncated weights
    copy_folder(src, d);
    EXPECT(system("truncate -s 100000 build/test-out/badvae/diffusion_pytorch_model.safetensors") == 0, "truncate");
    EXPECT(vae_folder_load(&v, d, err, sizeof(err)) == -1 && strstr(err, "badvae"), "truncated: %s", err);
    printf("  truncated: %s\n", err);
    // wrong channels: config says 3 input channels, weights have 1
    copy_folder(src, d);
    snprintf(cmd, sizeof(cmd), "sed -i 's/\"in_channels\": 1/\"in_channels\": 3/' %s/config.json", d);
    EXPECT(system(cmd) == 0, "sed");
    EXPECT(vae_folder_load(&v, d, err, sizeof(err)) == -1 && strstr(err, "encoder.conv_in.weight"), "channels: %s", err);
    printf("  wrong channels: %s\n", err);
    // a missing tensor
    copy_folder(src, d);
    SafeTensors st;
    char path[600];
    snprintf(path, sizeof(path), "%s/diffusion_pytorch_model.safetensors", src);
    EXPECT(st_load(&st, path, err, sizeof(err)) == 0, "%s", err);
    StEntry *e = xcalloc((size_t)st.count, sizeof(StEntry));
    int k = 0;
    for (int i = 0; i < st.count; i++) {
        if (!strcmp(st.tensors[i].name, "decoder.conv_out.bias")) continue;
        e[k] = (StEntry){st.tensors[i].name, st.tensors[i].dtype, st.tensors[i].ndim, {0}, st.tensors[i].data};
        memcpy(e[k].shape, st.tensors[i].shape, sizeof(e[k].shape));
        k++;
    }
    snprintf(path, sizeof(path), "%s/diffusion_pytorch_model.safetensors", d);
    EXPECT(st_save(path, e, k, NULL, 0, err, sizeof(err)) == 0, "%s", err);
    free(e);
    st_free(&st);
    EXPECT(vae_folder_load(&v, d, err, sizeof(err)) == -1 && strstr(err, "decoder.conv_out.bias"), "missing: %s", err);
    printf("  missing tensor: %s\n", err);
    // not a VAE at all
    copy_folder(src, d);
    snprintf(cmd, sizeof(cmd), "sed -i 's/AutoencoderKL/UNet2DModel/' %s/config.json", d);
    EXPECT(system(cmd) == 0, "sed");
    EXPECT(vae_folder_load(&v, d, err, sizeof(err)) == -1 && strstr(err, "AutoencoderKL"), "class: %s", err);
    // no folder
    EXPECT(vae_folder_load(&v, "build/test-out/no-such-vae", err, sizeof(err)) == -1 && strstr(err, "no-such-vae"), "%s", err);
}

int main(void) {
    RUN(test_tiny_overfits);
    RUN(test_diffusers_folder_loads);
    RUN(test_bad_folders_refused);
    return tl_finish();
}
