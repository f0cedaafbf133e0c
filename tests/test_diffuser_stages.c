// test_diffuser_stages.c: doppel-diffuser as a process, on the tiny preset: train from a latent
// cache made by loader -> encoder encode; stopping at step k and resuming equals an uninterrupted
// run; the whole train -> sample -> decode pipeline over ZeroMQ writes one PNG per requested
// sample; a VAE that does not fit the UNet is refused naming both values; bad arguments.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "image/image.h"
#include "io/checkpoint.h"
#include "models/unet_folder.h"
#include "models/vae_folder.h"
#include "proc.h"
#include "testlib.h"

#define OUT "build/test-out/diffuser"

static void ep(char *buf, size_t n, const char *prefix, int port) { snprintf(buf, n, "%stcp://127.0.0.1:%d", prefix, port); }

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && st.st_size > 0;
}

static int files_equal(const char *a, const char *b) {
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "cmp -s %s %s", a, b);
    return system(cmd) == 0;
}

static int count_files(const char *dir, const char *suffix) {
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "find %s -name '*%s' 2>/dev/null | wc -l", dir, suffix);
    FILE *f = popen(cmd, "r");
    int n = -1;
    if (f && fscanf(f, "%d", &n) != 1) n = -1;
    if (f) pclose(f);
    return n;
}

// a tiny VAE (a few steps) and the latent cache of 3 simulated users x 8
static int make_vae_and_cache(void) {
    if (file_exists(OUT "/latents.safetensors") && file_exists(OUT "/vae/config.json")) return 0;
    EXPECT(system("rm -rf " OUT " && mkdir -p " OUT) == 0, "mkdir");
    int port = free_port();
    char b[64], c[64];
    ep(b, 64, "@", port), ep(c, 64, ">", port);
    Proc loader, enc;
    proc_start(&loader, (const char *[]){"doppel-loader", "--synthetic", "--users", "3", "--per-user", "8", "--resolution", "32",
                                         "--batch", "8", "--forever", "--shuffle", "--seed", "2", "--out", b, NULL});
    proc_start(&enc, (const char *[]){"doppel-encoder", "train", "--in", c, "--vae", OUT "/vae", "--preset", "tiny", "--steps",
                                      "4", "--lr", "1e-3", "--warmup", "1", NULL});
    int rc = proc_wait(&enc, 120);
    kill(loader.pid, SIGTERM);
    proc_wait(&loader, 20);
    EXPECT(rc == 0, "encoder train: rc %d\n%s", rc, proc_read(enc.err));
    if (rc) return -1;
    port = free_port();
    ep(b, 64, "@", port), ep(c, 64, ">", port);
    proc_start(&loader, (const char *[]){"doppel-loader", "--synthetic", "--users", "3", "--per-user", "8", "--resolution", "32",
                                         "--batch", "8", "--split", "all", "--out", b, NULL});
    proc_start(&enc, (const char *[]){"doppel-encoder", "encode", "--vae", OUT "/vae", "--in", c, "--cache",
                                      OUT "/latents.safetensors", NULL});
    rc = proc_wait(&enc, 60);
    proc_wait(&loader, 20);
    EXPECT(rc == 0 && file_exists(OUT "/latents.safetensors"), "encoder encode: rc %d\n%s", rc, proc_read(enc.err));
    return rc ? -1 : 0;
}

static int train(const char *unet, const char *const *extra, char **log) {
    const char *argv[48] = {"doppel-diffuser", "train", "--cache", OUT "/latents.safetensors", "--unet", unet, "--preset",
                            "tiny", "--batch", "6", "--lr", "1e-3", "--warmup", "2", "--seed", "3", "--augment"};
    int k = 17;
    for (int i = 0; extra[i]; i++) argv[k++] = extra[i];
    argv[k] = NULL;
    char *out;
    int rc = proc_run(argv, 300, &out, log);
    free(out);
    return rc;
}

static void test_train_resume(void) {
    if (make_vae_and_cache()) return;
    char *log;
    int rc = train(OUT "/unet_a", (const char *[]){"--steps", "8", "--save-every", "4", "--vae", OUT "/vae", "--sample-every",
                                                   "4", NULL}, &log);
    EXPECT(rc == 0, "train: rc %d\n%s", rc, log);
    EXPECT(file_exists(OUT "/unet_a/config.json") && file_exists(OUT "/unet_a/ema/diffusion_pytorch_model.safetensors") &&
               file_exists(OUT "/unet_a/training_state.safetensors") && file_exists(OUT "/unet_a/metrics.jsonl") &&
               file_exists(OUT "/unet_a/loss.png") && file_exists(OUT "/unet_a/scheduler_config.json") &&
               file_exists(OUT "/unet_a/samples/step_000004.png") && file_exists(OUT "/unet_a/samples/step_000008.png"),
           "the UNet folder lacks files (config, ema, state, metrics, loss.png, scheduler_config, sample grids)\n%s", log);
    free(log);
    rc = train(OUT "/unet_b", (const char *[]){"--steps", "8", "--stop-at", "5", NULL}, &log);
    EXPECT(rc == 0, "first part: rc %d\n%s", rc, log);
    free(log);
    rc = train(OUT "/unet_b", (const char *[]){"--steps", "8", "--resume", NULL}, &log);
    EXPECT(rc == 0 && strstr(log, "resuming"), "resume: rc %d\n%s", rc, log);
    free(log);
    EXPECT(files_equal(OUT "/unet_a/diffusion_pytorch_model.safetensors", OUT "/unet_b/diffusion_pytorch_model.safetensors"),
           "weights after 5 + 3 resumed steps differ from 8 uninterrupted steps");
    EXPECT(files_equal(OUT "/unet_a/training_state.safetensors", OUT "/unet_b/training_state.safetensors"),
           "optimizer/EMA state after resuming differs");
    UNetFolder u;
    char err[512];
    EXPECT(unet_folder_load(&u, OUT "/unet_a", 1, NULL, err, sizeof(err)) == 0, "%s", err);
    if (!tl_current_failed()) {
        EXPECT(u.model.cfg.num_class_embeds == 4 && json_array_size(u.users) == 3, "3 users + 'no user': %d rows, %zu names",
               u.model.cfg.num_class_embeds, json_array_size(u.users));
        unet_folder_free(&u);
    }
}

static void test_sample_decode_pipeline(void) {
    if (make_vae_and_cache()) return;
    if (!file_exists(OUT "/unet_a/config.json")) return tl_fail(__FILE__, __LINE__, "needs test_train_resume's UNet");
    EXPECT(system("rm -rf " OUT "/gen") == 0, "rm");
    int port = free_port();
    char b[64], c[64];
    ep(b, 64, "@", port), ep(c, 64, ">", port);
    Proc dec, dif;
    proc_start(&dec, (const char *[]){"doppel-decoder", "--vae", OUT "/vae", "--in", c, "--png", OUT "/gen", NULL});
    proc_start(&dif, (const char *[]){"doppel-diffuser", "sample", "--unet", OUT "/unet_a", "--vae", OUT "/vae", "--users",
                                      "ID_1,ID_3", "--per-user", "3", "--steps", "4", "--guidance", "2", "--batch", "4",
                                      "--seed", "100", "--out", b, "--cache", OUT "/gen.safetensors", NULL});
    int rs = proc_wait(&dif, 120), rd = proc_wait(&dec, 60);
    EXPECT(rs == 0 && rd == 0, "sample rc %d, decoder rc %d\n%s\n%s", rs, rd, proc_read(dif.err), proc_read(dec.err));
    EXPECT(count_files(OUT "/gen/ID_1", ".png") == 3 && count_files(OUT "/gen/ID_3", ".png") == 3 &&
               count_files(OUT "/gen", ".png") == 6,
           "expected 3 PNGs for ID_1 and ID_3 each");
    // user ID_3 is label 2: its first sample has seed 100 + 2 * 1000000
    EXPECT(file_exists(OUT "/gen/ID_3/2000100.png"), "no %s", OUT "/gen/ID_3/2000100.png");
    char *gen = image_read_png_text(OUT "/gen/ID_3/2000100.png", "generation");
    EXPECT(gen && strstr(gen, "dpmpp2m") && strstr(gen, "\"guidance\""), "generation iTXt: %s", gen ? gen : "(none)");
    free(gen);
}

// a VAE whose latents are 8x8 against the UNet's 16x16, and one with other users
static void test_mismatched_pair_refused(void) {
    if (!file_exists(OUT "/unet_a/config.json")) return tl_fail(__FILE__, __LINE__, "needs test_train_resume's UNet");
    VaeFolder v;
    char err[512];
    EXPECT(vae_folder_load(&v, OUT "/vae", err, sizeof(err)) == 0, "%s", err);
    if (tl_current_failed()) return;
    v.model.cfg.sample_size = 16;  // 16 / 2 = 8x8 latents
    EXPECT(vae_folder_save(&v, OUT "/vae_small", 0, err, sizeof(err)) == 0, "%s", err);
    vae_folder_free(&v);
    char *out, *log;
    int rc = proc_run((const char *[]){"doppel-diffuser", "sample", "--unet", OUT "/unet_a", "--vae", OUT "/vae_small",
                                       "--cache", OUT "/x.safetensors", NULL}, 60, &out, &log);
    EXPECT(rc == 1 && strstr(log, "16x16") && strstr(log, "8x8"), "latent size mismatch: rc %d\n%s", rc, log);
    free(out), free(log);
    rc = proc_run((const char *[]){"doppel-diffuser", "sample", "--unet", OUT "/unet_a", "--users", "ID_9", "--cache",
                                   OUT "/x.safetensors", NULL}, 60, &out, &log);
    EXPECT(rc == 2 && strstr(log, "ID_9"), "unknown user: rc %d\n%s", rc, log);
    free(out), free(log);
}

static void test_cli(void) {
    char *out, *err;
    int rc = proc_run((const char *[]){"doppel-diffuser", "--help", NULL}, 10, &out, &err);
    EXPECT(rc == 0 && strstr(out, "examples"), "--help: rc %d", rc);
    free(out), free(err);
    rc = proc_run((const char *[]){"doppel-diffuser", "train", "--help", NULL}, 10, &out, &err);
    EXPECT(rc == 0 && strstr(out, "--cond-dropout"), "train --help: rc %d", rc);
    free(out), free(err);
    rc = proc_run((const char *[]){"doppel-diffuser", "train", "--unet", OUT "/u", NULL}, 10, &out, &err);
    EXPECT(rc == 2 && strstr(err, "--cache"), "train without data: rc %d\n%s", rc, err);
    free(out), free(err);
    rc = proc_run((const char *[]){"doppel-diffuser", "sample", "--unet", OUT "/nope", "--cache", OUT "/x.safetensors", NULL},
                  10, &out, &err);
    EXPECT(rc == 1 && strstr(err, OUT "/nope"), "missing UNet folder: rc %d\n%s", rc, err);
    free(out), free(err);
    rc = proc_run((const char *[]){"doppel-diffuser", "sample", "--unet", OUT "/unet_a", "--sampler", "euler", NULL}, 10, &out,
                  &err);
    EXPECT(rc == 2 && strstr(err, "--sampler"), "unknown sampler: rc %d\n%s", rc, err);
    free(out), free(err);
    rc = proc_run((const char *[]){"doppel-diffuser", "train", "--cache", "tests/fixtures/op_avgpool.safetensors", "--unet", OUT "/u",
                                   NULL}, 10, &out, &err);
    EXPECT(rc == 1 && strstr(err, "latent"), "a safetensors file that is not a latent cache: rc %d\n%s", rc, err);
    free(out), free(err);
}

int main(void) {
    RUN(test_train_resume);
    RUN(test_sample_decode_pipeline);
    RUN(test_mismatched_pair_refused);
    RUN(test_cli);
    return tl_finish();
}
