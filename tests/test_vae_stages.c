// test_vae_stages.c: the VAE stages as processes: doppel-encoder train on a loader stream writes a
// diffusers folder, a loss curve and metrics; stopping at step k and resuming gives the same
// weights as an uninterrupted run; loader -> encoder encode -> decoder over ZeroMQ equals the
// in-process encode/decode bit for bit; --cache holds every latent with its label and seed;
// --init-from --decoder-only with a perceptual judge changes the decoder alone (the encoder's
// tensors and the scaling factor stay byte for byte).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <zmq.h>

#include "check.h"
#include "data/dataset.h"
#include "io/safetensors.h"
#include "models/judge.h"
#include "models/vae_folder.h"
#include "net/zsock.h"
#include "proc.h"
#include "testlib.h"

static void ep(char *buf, size_t n, const char *prefix, int port) { snprintf(buf, n, "%stcp://127.0.0.1:%d", prefix, port); }

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && st.st_size > 0;
}

// loader (simulated, deterministic, endless) -> doppel-encoder train with extra arguments
static int run_train(const char *vae, const char *const *extra, char **log) {
    char bind[64], conn[64];
    int port = free_port();
    ep(bind, sizeof(bind), "@", port), ep(conn, sizeof(conn), ">", port);
    const char *argv[40] = {"doppel-encoder", "train", "--in", conn, "--vae", vae, "--preset", "tiny", "--lr", "1e-3",
                            "--warmup", "2", "--seed", "4"};
    int k = 14;
    for (int i = 0; extra[i]; i++) argv[k++] = extra[i];
    argv[k] = NULL;
    Proc loader, enc;
    proc_start(&loader, (const char *[]){"doppel-loader", "--synthetic", "--users", "3", "--per-user", "6", "--resolution",
                                         "32", "--batch", "4", "--shuffle", "--forever", "--seed", "9", "--out", bind, NULL});
    proc_start(&enc, argv);
    int rc = proc_wait(&enc, 180);
    kill(loader.pid, SIGTERM);
    proc_wait(&loader, 20);
    if (log) *log = proc_read(enc.err);
    return rc;
}

static int files_equal(const char *a, const char *b) {
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "cmp -s %s %s", a, b);
    return system(cmd) == 0;
}

static void test_train_and_resume(void) {
    EXPECT(system("rm -rf build/test-out/vae_a build/test-out/vae_b") == 0, "rm");
    char *log;
    int rc = run_train("build/test-out/vae_a", (const char *[]){"--steps", "6", "--save-every", "3", NULL}, &log);
    EXPECT(rc == 0, "uninterrupted run: rc %d\n%s", rc, log);
    EXPECT(strstr(log, "scaling_factor"), "no scaling factor measured:\n%s", log);
    free(log);
    EXPECT(file_exists("build/test-out/vae_a/config.json") && file_exists("build/test-out/vae_a/diffusion_pytorch_model.safetensors") &&
               file_exists("build/test-out/vae_a/training_state.safetensors") && file_exists("build/test-out/vae_a/metrics.jsonl") &&
               file_exists("build/test-out/vae_a/loss.png"),
           "checkpoint folder incomplete");
    rc = run_train("build/test-out/vae_b", (const char *[]){"--steps", "6", "--stop-at", "3", NULL}, &log);
    EXPECT(rc == 0, "first half: rc %d\n%s", rc, log);
    free(log);
    rc = run_train("build/test-out/vae_b", (const char *[]){"--steps", "6", "--resume", NULL}, &log);
    EXPECT(rc == 0 && strstr(log, "resuming") && strstr(log, "skipping the 3 batches"), "resume: rc %d\n%s", rc, log);
    free(log);
    EXPECT(files_equal("build/test-out/vae_a/diffusion_pytorch_model.safetensors", "build/test-out/vae_b/diffusion_pytorch_model.safetensors"),
           "weights after 3 + 3 resumed steps differ from 6 uninterrupted steps");
    EXPECT(files_equal("build/test-out/vae_a/training_state.safetensors", "build/test-out/vae_b/training_state.safetensors"),
           "optimizer state after resuming differs");
    VaeFolder v;
    char err[512];
    EXPECT(vae_folder_load(&v, "build/test-out/vae_a", err, sizeof(err)) == 0, "%s", err);
    if (!tl_current_failed()) {
        json_t *d = vae_folder_doppel(&v);
        EXPECT(d && json_integer_value(json_object_get(d, "channels")) == 1 && v.cmap == CMAP_JET,
               "doppel block: channels and the stream's colour map (jet, as spectrograms are shown)");
        EXPECT(v.model.cfg.scaling_factor != 1.0f && isfinite(v.model.cfg.scaling_factor), "scaling factor %g",
               v.model.cfg.scaling_factor);
        vae_folder_free(&v);
    }
}

// loader -> encode -> decoder --pub over ZeroMQ; the test subscribes and recomputes in-process
static void test_pipeline_bit_exact(void) {
    const char *vae = "build/test-out/vae_a";
    VaeFolder v;
    char err[512];
    if (vae_folder_load(&v, vae, err, sizeof(err))) {
        tl_fail(__FILE__, __LINE__, "needs the folder from test_train_and_resume: %s", err);
        return;
    }
    int p1 = free_port(), p2 = free_port(), p3 = free_port();
    char b1[64], c1[64], b2[64], c2[64], b3[64], c3[64];
    ep(b1, 64, "@", p1), ep(c1, 64, ">", p1), ep(b2, 64, "@", p2), ep(c2, 64, ">", p2), ep(b3, 64, "@", p3), ep(c3, 64, ">", p3);
    void *sub = zsock_open(ZMQ_SUB, c3, 0, err, sizeof(err));
    Proc dec, enc, loader;
    proc_start(&dec, (const char *[]){"doppel-decoder", "--vae", vae, "--in", c2, "--pub", b3, "--timeout", "60", NULL});
    proc_start(&enc, (const char *[]){"doppel-encoder", "encode", "--vae", vae, "--in", c1, "--out", b2, "--cache",
                                      "build/test-out/latents.safetensors", NULL});
    zmq_sleep(1);  // the subscriber must be connected before the decoder publishes
    proc_start(&loader, (const char *[]){"doppel-loader", "--synthetic", "--users", "3", "--per-user", "4", "--resolution",
                                         "32", "--batch", "4", "--split", "all", "--out", b1, NULL});
    // the same 12 samples in-process, in stream order, in the same batches of 4
    Dataset ds;
    dataset_synthetic(&ds, 3, 4, 0);
    Preprocess pp = {32, 1, CMAP_JET};
    Arena arena;
    arena_init(&arena, 0);
    Rng rng;
    rng_seed(&rng, 0);
    Ctx ctx;
    ctx_init(&ctx, &v.model.ps, &arena, &rng);
    float s = v.model.cfg.scaling_factor;
    int got = 0, exact = 1;
    for (int b = 0; b < 3; b++) {
        Received r;
        int rc = zsock_recv_frame(sub, &r, NULL, 60000, err, sizeof(err));
        EXPECT(rc == 1, "no decoded frame %d: %s", b, err);
        if (rc != 1) break;
        const WireTensor *img = frame_tensor(&r.frame, "image");
        if (!img || r.frame.kind != FRAME_BATCH) {
            received_release(&r);
            b--;
            continue;
        }
        arena_reset(&arena);
        Tensor x = ctx_tensor(&ctx, 4, 1, 32, 32);
        for (int i = 0; i < 4; i++) preprocess_sample(&ds, b * 4 + i, &pp, x.d + i * 1024, err, sizeof(err));
        Tensor mom = vae_encode(&ctx, &v.model, x);
        size_t per = (size_t)4 * mom.H * mom.W;
        Tensor z = ctx_tensor(&ctx, 4, 4, mom.H, mom.W);
        for (int i = 0; i < 4; i++)  // encode: mean * s; decoder: latent / s
            for (size_t j = 0; j < per; j++) z.d[i * per + j] = (mom.d[i * 2 * per + j] * s) / s;
        Tensor y = vae_decode(&ctx, &v.model, z);
        for (size_t j = 0; j < tensor_numel(y); j++) y.d[j] = y.d[j] < -1 ? -1 : y.d[j] > 1 ? 1 : y.d[j];
        float *pub = xmalloc(img->numel * sizeof(float));
        wire_tensor_f32(pub, img);
        EXPECT(img->numel == tensor_numel(y), "published %zu values, expected %zu", img->numel, tensor_numel(y));
        if (img->numel == tensor_numel(y) && memcmp(pub, y.d, img->numel * sizeof(float))) {
            exact = 0;
            EXPECT_CLOSE("published vs in-process", pub, y.d, img->numel, 0, 0);
        }
        free(pub);
        got += 4;
        received_release(&r);
    }
    EXPECT(got == 12 && exact, "%d samples compared, bit-exact %d", got, exact);
    int rl = proc_wait(&loader, 60), re = proc_wait(&enc, 60), rd = proc_wait(&dec, 90);
    EXPECT(rl == 0 && re == 0 && rd == 0, "loader %d encoder %d decoder %d", rl, re, rd);
    // the latent cache: 12 latents with labels and seeds, scaled like the stream
    SafeTensors st;
    EXPECT(st_load(&st, "build/test-out/latents.safetensors", err, sizeof(err)) == 0, "%s", err);
    if (!tl_current_failed()) {
        const StTensor *l = st_find(&st, "latent"), *lab = st_find(&st, "label"), *sd = st_find(&st, "seed");
        EXPECT(l && lab && sd && l->shape[0] == 12 && l->shape[1] == 4 && lab->numel == 12 && sd->numel == 12, "cache shapes");
        EXPECT(st_meta(&st, "users") && strstr(st_meta(&st, "users"), "ID_3") && st_meta(&st, "scaling_factor"), "cache meta");
        st_free(&st);
    }
    zsock_close(&sub);
    ctx_free(&ctx);
    arena_free(&arena);
    dataset_free(&ds);
    vae_folder_free(&v);
}

// a trained VAE's decoder fine-tuned with a judge's perceptual term: the encoder is untouched
static void test_decoder_only_perceptual(void) {
    const char *from = "build/test-out/vae_a", *vae = "build/test-out/vae_dec", *jdir = "build/test-out/perc_judge";
    VaeFolder a, b;
    char err[512], *log;
    if (vae_folder_load(&a, from, err, sizeof(err))) {
        tl_fail(__FILE__, __LINE__, "needs the folder from test_train_and_resume: %s", err);
        return;
    }
    // a random conv_bn judge for the tiny preset's 1x32x32 images (its features are a fixed random
    // CNN's: enough to check the plumbing)
    JudgeConfig jc;
    judge_config_default(&jc, 1, 32, 3, (char *[]){"ID_1", "ID_2", "ID_3"});
    jc.n_blocks = 2, jc.block_out_channels[0] = 8, jc.block_out_channels[1] = 16;
    jc.norm_num_groups = judge_default_groups(jc.block_out_channels, 2);
    JudgeNet j;
    judge_build(&j, &jc);
    Rng rng;
    rng_seed(&rng, 3);
    judge_init(&j, &rng);
    EXPECT(judge_folder_save(&j, jdir, err, sizeof(err)) == 0, "%s", err);
    judge_free(&j);
    EXPECT(system("rm -rf build/test-out/vae_dec") == 0, "rm");
    int rc = run_train(vae, (const char *[]){"--steps", "3", "--init-from", from, "--decoder-only", "--perceptual-judge", jdir,
                                             "--perceptual-weight", "0.5", NULL},
                       &log);
    EXPECT(rc == 0 && strstr(log, "encoder tensors frozen") && strstr(log, "perceptual term"), "rc %d\n%s", rc, log);
    free(log);
    if (!tl_current_failed() && vae_folder_load(&b, vae, err, sizeof(err)) == 0) {
        const ParamSet *pa = &a.model.ps, *pb = &b.model.ps;
        int enc_same = 1, dec_changed = 0;
        for (int i = 0; i < pa->count; i++) {
            const ParamInfo *in = &pa->info[i];
            int same = !memcmp(pa->data + in->offset, pb->data + pb->info[i].offset, in->numel * sizeof(float));
            if (!strncmp(in->name, "encoder.", 8) || !strncmp(in->name, "quant_conv.", 11)) enc_same &= same;
            else dec_changed |= !same;
        }
        EXPECT(enc_same, "an encoder tensor changed in decoder-only training");
        EXPECT(dec_changed, "no decoder tensor changed");
        EXPECT(a.model.cfg.scaling_factor == b.model.cfg.scaling_factor, "scaling factor %g -> %g",
               (double)a.model.cfg.scaling_factor, (double)b.model.cfg.scaling_factor);
        size_t mlen = 0;
        char *m = (char *)tl_read_file("build/test-out/vae_dec/metrics.jsonl", &mlen);
        EXPECT(m && strstr(m, "\"perceptual\":") && !strstr(m, "\"perceptual\":0,"), "perceptual term logged:\n%s",
               m ? m : "(none)");
        free(m);
        vae_folder_free(&b);
    }
    vae_folder_free(&a);
    // refused: decoder-only from nothing; a judge for other images
    char *out;
    rc = proc_run((const char *[]){"doppel-encoder", "train", "--in", ">tcp://127.0.0.1:1", "--vae", vae, "--decoder-only", NULL},
                  10, &out, &log);
    EXPECT(rc == 2 && strstr(log, "--init-from"), "decoder-only without a VAE: rc %d: %s", rc, log);
    free(out), free(log);
}

static void test_encoder_cli(void) {
    char *out, *err;
    int rc = proc_run((const char *[]){"doppel-encoder", "--help", NULL}, 10, &out, &err);
    EXPECT(rc == 0 && strstr(out, "examples:") && strstr(out, "train") && strstr(out, "encode"), "help rc %d", rc);
    free(out), free(err);
    rc = proc_run((const char *[]){"doppel-encoder", "fly", NULL}, 10, &out, &err);
    EXPECT(rc == 2 && strstr(err, "unknown command"), "rc %d: %s", rc, err);
    free(out), free(err);
    rc = proc_run((const char *[]){"doppel-encoder", "encode", "--vae", "build/test-out/nope", "--in", ">tcp://127.0.0.1:1",
                                   "--out", "@tcp://127.0.0.1:0", NULL},
                  20, &out, &err);
    EXPECT(rc == 1 && strstr(err, "build/test-out/nope"), "missing VAE: rc %d: %s", rc, err);
    free(out), free(err);
}

int main(void) {
    RUN(test_encoder_cli);
    RUN(test_train_and_resume);
    RUN(test_pipeline_bit_exact);
    RUN(test_decoder_only_perceptual);
    return tl_finish();
}
