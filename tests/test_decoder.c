// test_decoder.c: doppel-decoder as users run it. A tiny VAE is built and saved here; the test
// pushes latent batches to bin/doppel-decoder and checks the PNGs it writes (layout, size, colour
// map, bits, the "generation" chunk), the image frames it publishes (bit for bit equal to an
// in-process vae_decode of latent / scaling_factor), skipped bad frames, end-of-stream and
// --timeout handling with two decoders on one stream, usage errors and a corrupt VAE folder.
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "check.h"
#include "cli/cli.h"
#include "image/image.h"
#include "models/vae_folder.h"
#include "net/zsock.h"
#include "proc.h"
#include "testlib.h"
#include "wire/frame.h"

#define VAE_DIR "build/test-out/dec_vae"
#define SCALING 0.8f  // not 1, so a decoder that forgets to divide by it fails
#define LAT 16        // tiny: 32x32 images, f = 2

static VaeFolder g_vae;
static int g_vae_state;  // 0 not built, 1 ready, -1 failed

static void ep(char *buf, size_t n, const char *prefix, int port) { snprintf(buf, n, "%stcp://127.0.0.1:%d", prefix, port); }

// the tiny VAE with random weights, saved as a folder with doppel settings (jet, two users)
static int make_vae(void) {
    if (g_vae_state) return g_vae_state > 0;
    g_vae_state = -1;
    VaeConfig c;
    EXPECT(preset_vae("tiny", &c) == 0, "preset tiny");
    c.scaling_factor = SCALING;
    vae_build(&g_vae.model, &c);
    Rng r;
    rng_seed(&r, 1234);
    params_init(&g_vae.model.ps, &r);
    g_vae.config = vae_config_to_json(&c);  // owned by g_vae from here (vae_folder_free drops it)
    json_object_set_new(g_vae.config, "doppel",
                        json_pack("{s:s, s:[s,s], s:s, s:i, s:i}", "colormap", "jet", "users", "ID_1", "ID_2", "preset",
                                  "tiny", "step", 123, "channels", 1));
    g_vae.users = json_object_get(json_object_get(g_vae.config, "doppel"), "users");
    char err[512];
    EXPECT(system("rm -rf " VAE_DIR " && mkdir -p build/test-out") == 0, "rm");
    int rc = vae_folder_save(&g_vae, VAE_DIR, 0, err, sizeof(err));
    EXPECT(rc == 0, "vae_folder_save: %s", err);
    if (rc == 0) g_vae_state = 1;
    return rc == 0;
}

// image = clamp(vae_decode(latent / scaling_factor), -1, 1) in this process, one thread as the decoder runs
static float *reference_decode(const float *lat, int N) {
    omp_set_num_threads(1);
    Arena a;
    Rng r;
    Ctx ctx;
    arena_init(&a, 0);
    rng_seed(&r, 0);
    ctx_init(&ctx, &g_vae.model.ps, &a, &r);
    Tensor z = ctx_tensor(&ctx, N, 4, LAT, LAT);
    for (size_t i = 0; i < tensor_numel(z); i++) z.d[i] = lat[i] / g_vae.model.cfg.scaling_factor;
    Tensor x = vae_decode(&ctx, &g_vae.model, z);  // [N, 1, 32, 32]
    float *out = xmalloc(tensor_numel(x) * sizeof(float));
    for (size_t i = 0; i < tensor_numel(x); i++) out[i] = x.d[i] < -1 ? -1 : x.d[i] > 1 ? 1 : x.d[i];
    ctx_free(&ctx);
    arena_free(&a);
    return out;
}

static int send_batch(void *push, uint64_t seq, const int64_t *shape, const char *name, const float *data, int N,
                      const int32_t *label, const int64_t *seed, json_t *meta) {
    char err[512];
    Frame f;
    frame_init(&f, FRAME_BATCH, "test", seq);
    frame_add_tensor(&f, name, WDT_F32, 4, shape, data);
    if (label) frame_add_tensor(&f, WIRE_LABEL, WDT_I32, 1, (int64_t[]){N}, label);
    if (seed) frame_add_tensor(&f, WIRE_SEED, WDT_I64, 1, (int64_t[]){N}, seed);
    if (meta) frame_set_meta(&f, meta);
    int rc = zsock_send_frame(push, &f, 10000, err, sizeof(err));
    EXPECT(rc == 0, "send: %s", err);
    frame_release(&f);
    return rc;
}

static void send_end(void *push, uint64_t seq, uint64_t total) {
    char err[512];
    Frame f;
    frame_init(&f, FRAME_END, "test", seq);
    f.has_total = 1, f.total = total;
    EXPECT(zsock_send_frame(push, &f, 10000, err, sizeof(err)) == 0, "send end: %s", err);
    frame_release(&f);
}

// a subscriber connected (handshake done) to the decoder's publisher, once the decoder is up. The
// handshake monitor is attached before the SUB connects (zsock_open_watched), so a handshake that
// completes at once is seen too.
static void *subscribe(int port) {
    char addr[64], err[512];
    snprintf(addr, sizeof(addr), ">tcp://127.0.0.1:%d", port);
    PeerWatch w;
    void *sub = zsock_open_watched(ZMQ_SUB, addr, 0, &w, err, sizeof(err));
    EXPECT(sub, "SUB setup: %s", err);
    if (!sub) return NULL;
    int connected = peerwatch_wait(&w, 1, 20000) == 0;
    peerwatch_stop(&w);
    EXPECT(connected, "the SUB did not connect to the decoder's --pub");
    usleep(1000000);  // the subscription travels right after the handshake; give it time to land (ASan/loaded CI: 200 ms lost it once)
    return sub;
}

static void test_cli(void) {
    char *out, *err;
    int rc = proc_run((const char *[]){"doppel-decoder", "--help", NULL}, 10, &out, &err);
    EXPECT(rc == 0 && strstr(out, "usage:") && strstr(out, "examples:"), "--help: rc %d", rc);
    EXPECT(strstr(out, "examples:") < strstr(out, "  --"), "--help: examples come before the options");
    EXPECT(strstr(out, "--timeout") && strstr(out, "Several decoders"), "--help documents parallel decoders");
    free(out), free(err);
    rc = proc_run((const char *[]){"doppel-decoder", "--version", NULL}, 10, &out, &err);
    EXPECT(rc == 0 && strstr(out, "doppel-decoder 0."), "--version: rc %d '%s'", rc, out);
    free(out), free(err);
    struct { const char *argv[12]; const char *says; } bad[] = {
        {{"doppel-decoder", "--in", "tcp://127.0.0.1:1", "--png", "x", NULL}, "--vae"},
        {{"doppel-decoder", "--vae", VAE_DIR, "--png", "x", NULL}, "--in"},
        {{"doppel-decoder", "--vae", VAE_DIR, "--in", "tcp://127.0.0.1:1", NULL}, "--png"},
        {{"doppel-decoder", "--vae", VAE_DIR, "--in", "tcp://127.0.0.1:1", "--png", "x", "--colormap", "hot", NULL}, "--colormap"},
        {{"doppel-decoder", "--vae", VAE_DIR, "--in", "tcp://127.0.0.1:1", "--png", "x", "--bits", "12", NULL}, "--bits"},
        {{"doppel-decoder", "--vae", VAE_DIR, "--in", "tcp://127.0.0.1:1", "--png", "x", "--bits", "16", "--colormap", "jet", NULL}, "--bits 16"},
        {{"doppel-decoder", "--vae", VAE_DIR, "--in", "tcp://127.0.0.1:1", "--png", "x", "--no-such-option", NULL}, "--help"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rc = proc_run(bad[i].argv, 10, &out, &err);
        EXPECT(rc == 2 && strstr(err, bad[i].says) && strstr(err, "--help"), "usage case %zu: rc %d, stderr '%s'", i, rc, err);
        free(out), free(err);
    }
    if (!make_vae()) return;
    // 16-bit PNGs are gray only; this VAE's images are drawn with jet
    rc = proc_run((const char *[]){"doppel-decoder", "--vae", VAE_DIR, "--in", "tcp://127.0.0.1:1", "--png",
                                   "build/test-out/dec_never", "--bits", "16", NULL}, 30, &out, &err);
    EXPECT(rc == 2 && strstr(err, "jet") && strstr(err, "--colormap gray"), "--bits 16 with a jet VAE: rc %d, '%s'", rc, err);
    free(out), free(err);
    rc = proc_run((const char *[]){"doppel-decoder", "--vae", "/nonexistent/vae", "--in", "tcp://127.0.0.1:1", "--pub",
                                   "tcp://127.0.0.1:1", NULL}, 30, &out, &err);
    EXPECT(rc == 1 && strstr(err, "/nonexistent/vae"), "missing VAE folder: rc %d, '%s'", rc, err);
    free(out), free(err);
}

static void check_png(const char *path, const float *ref_img, const char *user, int label, long long seed) {
    Image im = {0};
    char err[512];
    int rc = image_read_png(path, &im, err, sizeof(err));
    EXPECT(rc == 0, "%s", err);
    if (rc) return;
    EXPECT(im.C == 3 && im.H == 32 && im.W == 32 && im.bits == 8, "%s: %dx%dx%d at %d bits, want 32x32 RGB (jet) at 8",
           path, im.C, im.H, im.W, im.bits);
    if (im.C == 3 && im.H == 32 && im.W == 32) {  // the pixels are the jet rendering of the decoded image
        Image g = {1, 32, 32, xmalloc(1024 * sizeof(float)), 8}, rgb = {0};
        for (int i = 0; i < 1024; i++) g.data[i] = 0.5f * (ref_img[i] + 1);
        colormap_render(CMAP_JET, &g, &rgb);
        EXPECT_CLOSE(path, im.data, rgb.data, 3 * 1024, 0.6 / 255, 0);
        image_free(&rgb);
        free(g.data);
    }
    image_free(&im);
    char *text = image_read_png_text(path, "generation");
    EXPECT(text, "%s has no iTXt 'generation' chunk", path);
    json_error_t je;
    json_t *j = text ? json_loads(text, 0, &je) : NULL;
    EXPECT(!text || j, "%s: generation is not JSON: %s", path, text);
    if (j) {
        json_t *m = json_object_get(j, "model");
        EXPECT(!strcmp(json_string_value(json_object_get(j, "user")) ? json_string_value(json_object_get(j, "user")) : "", user) &&
                   json_integer_value(json_object_get(j, "label")) == label &&
                   json_integer_value(json_object_get(j, "seed")) == seed,
               "%s: user/label/seed in %s", path, text);
        EXPECT(json_is_string(json_object_get(j, "sampler")) && !strcmp(json_string_value(json_object_get(j, "sampler")), "ddim") &&
                   json_integer_value(json_object_get(j, "steps")) == 20 &&
                   json_number_value(json_object_get(j, "guidance")) == 2.0 &&
                   json_is_string(json_object_get(j, "unet")),
               "%s: sampler settings in %s", path, text);
        EXPECT(json_is_string(json_object_get(m, "vae")) && !strcmp(json_string_value(json_object_get(m, "vae")), VAE_DIR) &&
                   json_is_string(json_object_get(m, "preset")) && !strcmp(json_string_value(json_object_get(m, "preset")), "tiny") &&
                   json_integer_value(json_object_get(m, "step")) == 123,
               "%s: model in %s", path, text);
        json_decref(j);
    }
    free(text);
}

// one batch of 3 (labels 0,1,1; seeds 7,8,9) -> PNGs in ID_1/, ID_2/ and a published image frame
static void test_decode_png_and_pub(void) {
    if (!make_vae()) return;
    EXPECT(system("rm -rf build/test-out/dec_png") == 0, "rm");
    char bind[64], in[64], pub[64], err[512];
    int pin = free_port(), ppub = free_port();
    ep(bind, sizeof(bind), "@", pin), ep(in, sizeof(in), "", pin), ep(pub, sizeof(pub), "", ppub);
    PeerWatch watch;  // attached before the bind, so no decoder handshake goes unseen
    void *push = zsock_open_watched(ZMQ_PUSH, bind, 1, &watch, err, sizeof(err));
    EXPECT(push, "%s", err);
    if (!push) return;
    Proc dec;
    proc_start(&dec, (const char *[]){"doppel-decoder", "--vae", VAE_DIR, "--in", in, "--png", "build/test-out/dec_png",
                                      "--pub", pub, "--threads", "1", "--batch-limit", "2", NULL});  // 3 = 2 + 1
    EXPECT(peerwatch_wait(&watch, 1, 30000) == 0, "the decoder did not connect to the latent stream");
    peerwatch_stop(&watch);
    void *sub = subscribe(ppub);
    enum { N = 3 };
    float *lat = xmalloc(N * 4 * LAT * LAT * sizeof(float));
    fill_randn(lat, N * 4 * LAT * LAT, 42, SCALING);  // as an encoder would send: already times scaling_factor
    int32_t label[N] = {0, 1, 1};
    int64_t seed[N] = {7, 8, 9};
    json_t *meta = json_pack("{s:[s,s], s:s, s:i, s:f, s:s, s:s}", "users", "ID_1", "ID_2", "sampler", "ddim", "steps", 20,
                             "guidance", 2.0, "unet", "models/unet", "stage", "diffuser");
    send_batch(push, 0, (int64_t[]){N, 4, LAT, LAT}, WIRE_LATENT, lat, N, label, seed, meta);
    send_end(push, 1, N);
    json_decref(meta);
    float *ref = reference_decode(lat, N);

    Received r = {0};
    int got = sub ? zsock_recv_frame(sub, &r, NULL, 60000, err, sizeof(err)) : 0;
    EXPECT(got == 1 && r.frame.kind == FRAME_BATCH, "no image frame published (%d: %s)", got, got < 0 ? err : "timeout");
    if (got == 1 && r.frame.kind == FRAME_BATCH) {
        const WireTensor *img = frame_tensor(&r.frame, WIRE_IMAGE), *lab = frame_tensor(&r.frame, WIRE_LABEL),
                         *sd = frame_tensor(&r.frame, WIRE_SEED);
        EXPECT(img && img->dtype == WDT_F32 && img->ndim == 4 && img->shape[0] == N && img->shape[1] == 1 && img->shape[2] == 32 &&
                   img->shape[3] == 32, "published image is not (3,1,32,32) <f4");
        if (img && img->numel == (size_t)N * 1024) {
            float *got_img = xmalloc(img->numel * sizeof(float));
            wire_tensor_f32(got_img, img);
            EXPECT(memcmp(got_img, ref, img->numel * sizeof(float)) == 0, "published image differs from vae_decode(latent / %g)",
                   (double)SCALING);
            EXPECT_CLOSE("published image", got_img, ref, img->numel, 0, 0);
            free(got_img);
        }
        EXPECT(lab && lab->numel == N && !memcmp(lab->data, label, sizeof(label)), "labels passed through");
        EXPECT(sd && sd->numel == N && !memcmp(sd->data, seed, sizeof(seed)), "seeds passed through");
        json_t *m = r.frame.meta;
        EXPECT(m && json_is_string(json_object_get(m, "stage")) && !strcmp(json_string_value(json_object_get(m, "stage")), "decoder") &&
                   json_is_string(json_object_get(m, "sampler")) && json_array_size(json_object_get(m, "users")) == 2,
               "meta copied with stage=decoder");
    }
    received_release(&r);
    got = sub ? zsock_recv_frame(sub, &r, NULL, 30000, err, sizeof(err)) : 0;
    EXPECT(got == 1 && r.frame.kind == FRAME_END && r.frame.has_total && r.frame.total == N, "no end frame with total 3 published");
    received_release(&r);

    int rc = proc_wait(&dec, 60);
    char *e = proc_read(dec.err);
    EXPECT(rc == 0, "decoder rc %d: %s", rc, e);
    free(e);
    const char *users[N] = {"ID_1", "ID_2", "ID_2"};
    for (int n = 0; n < N; n++) {
        char path[256];
        snprintf(path, sizeof(path), "build/test-out/dec_png/%s/%lld.png", users[n], (long long)seed[n]);
        EXPECT(access(path, F_OK) == 0, "%s was not written", path);
        if (access(path, F_OK) == 0) check_png(path, ref + (size_t)n * 1024, users[n], label[n], (long long)seed[n]);
    }
    free(ref), free(lat);
    zsock_close(&sub);
    zsock_close(&push);
}

// garbage, an image frame, wrong latent shapes: each reported and skipped; the good batch after
// them is decoded (gray 16-bit PNGs; users from the VAE folder when the frame has none)
static void test_bad_frames_skipped(void) {
    if (!make_vae()) return;
    EXPECT(system("rm -rf build/test-out/dec_png_gray") == 0, "rm");
    char bind[64], in[64], pub[64], err[512];
    int pin = free_port(), ppub = free_port();
    ep(bind, sizeof(bind), "@", pin), ep(in, sizeof(in), ">", pin), ep(pub, sizeof(pub), "@", ppub);
    PeerWatch watch;  // attached before the bind, so no decoder handshake goes unseen
    void *push = zsock_open_watched(ZMQ_PUSH, bind, 1, &watch, err, sizeof(err));
    EXPECT(push, "%s", err);
    if (!push) return;
    Proc dec;
    proc_start(&dec, (const char *[]){"doppel-decoder", "--vae", VAE_DIR, "--in", in, "--png", "build/test-out/dec_png_gray",
                                      "--colormap", "gray", "--pub", pub, "--threads", "1", NULL});
    EXPECT(peerwatch_wait(&watch, 1, 30000) == 0, "the decoder did not connect");
    peerwatch_stop(&watch);
    void *sub = subscribe(ppub);
    EXPECT(zmq_send(push, "not msgpack", 11, 0) == 11, "send garbage");
    float *buf = xcalloc(2 * 4 * LAT * LAT, sizeof(float));
    int32_t label[2] = {1, 0};
    int64_t seed[2] = {100, 101};
    send_batch(push, 0, (int64_t[]){1, 1, 32, 32}, WIRE_IMAGE, buf, 1, label, seed, NULL);  // an image frame
    send_batch(push, 1, (int64_t[]){2, 4, 8, 8}, WIRE_LATENT, buf, 2, label, seed, NULL);    // wrong h, w
    send_batch(push, 2, (int64_t[]){1, 3, LAT, LAT}, WIRE_LATENT, buf, 1, label, seed, NULL);  // wrong channels
    fill_randn(buf, 2 * 4 * LAT * LAT, 7, 1);
    send_batch(push, 3, (int64_t[]){2, 4, LAT, LAT}, WIRE_LATENT, buf, 2, label, seed, NULL);
    send_end(push, 4, 5);  // 2 + 1 + 2 latent samples were sent

    Received r = {0};
    int got = sub ? zsock_recv_frame(sub, &r, NULL, 60000, err, sizeof(err)) : 0;
    const WireTensor *sd = got == 1 ? frame_tensor(&r.frame, WIRE_SEED) : NULL;
    EXPECT(got == 1 && r.frame.kind == FRAME_BATCH && sd && sd->numel == 2 && !memcmp(sd->data, seed, sizeof(seed)),
           "the good batch after the bad ones was not published");
    received_release(&r);
    int rc = proc_wait(&dec, 60);
    char *e = proc_read(dec.err);
    EXPECT(rc == 0, "decoder rc %d: %s", rc, e);
    EXPECT(strstr(e, "skipped bad frame"), "garbage not reported: %s", e);
    EXPECT(strstr(e, "no 'latent' tensor (an image frame)"), "image frame not reported: %s", e);
    EXPECT(strstr(e, "latent is 8x8") && strstr(e, "16x16"), "wrong latent size not reported: %s", e);
    EXPECT(strstr(e, "latent has 3 channels"), "wrong latent channels not reported: %s", e);
    EXPECT(strstr(e, "decoded 2 samples") && strstr(e, "4 frames skipped"), "summary: %s", e);
    free(e);
    const char *paths[2] = {"build/test-out/dec_png_gray/ID_2/100.png", "build/test-out/dec_png_gray/ID_1/101.png"};
    for (int i = 0; i < 2; i++) {
        Image im = {0};
        rc = image_read_png(paths[i], &im, err, sizeof(err));
        EXPECT(rc == 0 && im.C == 1 && im.H == 32 && im.bits == 16, "%s: rc %d C %d bits %d (want gray 16-bit) %s", paths[i], rc,
               im.C, im.bits, rc ? err : "");
        image_free(&im);
    }
    free(buf);
    zsock_close(&sub);
    zsock_close(&push);
}

// two decoders PULL from one stream; the end frame reaches one of them, --timeout stops both
static void test_parallel_decoders(void) {
    if (!make_vae()) return;
    EXPECT(system("rm -rf build/test-out/dec_png_par") == 0, "rm");
    char bind[64], in[64], err[512];
    int pin = free_port();
    ep(bind, sizeof(bind), "@", pin), ep(in, sizeof(in), "", pin);
    PeerWatch watch;  // attached before the bind, so no decoder handshake goes unseen
    void *push = zsock_open_watched(ZMQ_PUSH, bind, 1, &watch, err, sizeof(err));
    EXPECT(push, "%s", err);
    if (!push) return;
    Proc dec[2];
    for (int i = 0; i < 2; i++)
        proc_start(&dec[i], (const char *[]){"doppel-decoder", "--vae", VAE_DIR, "--in", in, "--png", "build/test-out/dec_png_par",
                                             "--timeout", "2", "--threads", "1", NULL});
    EXPECT(peerwatch_wait(&watch, 2, 30000) == 0, "both decoders should connect");
    peerwatch_stop(&watch);
    float lat[4 * LAT * LAT];
    for (int k = 0; k < 4; k++) {
        fill_randn(lat, 4 * LAT * LAT, 100 + k, 1);
        int32_t label = k % 2;
        int64_t seed = k;
        send_batch(push, (uint64_t)k, (int64_t[]){1, 4, LAT, LAT}, WIRE_LATENT, lat, 1, &label, &seed, NULL);
    }
    send_end(push, 4, 4);
    for (int i = 0; i < 2; i++) {
        int rc = proc_wait(&dec[i], 60);
        char *e = proc_read(dec[i].err);
        EXPECT(rc == 0, "decoder %d rc %d: %s", i, rc, e);
        EXPECT(strstr(e, "decoded 2 samples"), "decoder %d should have taken half of the batches: %s", i, e);
        free(e);
    }
    FILE *f = popen("find build/test-out/dec_png_par -name '*.png' | wc -l", "r");
    int n = -1;
    if (f && fscanf(f, "%d", &n) != 1) n = -1;
    if (f) pclose(f);
    EXPECT(n == 4, "%d PNGs from two decoders, want 4", n);
    zsock_close(&push);
}

// Ctrl-C while waiting for frames: sockets closed, exit 0
static void test_sigint(void) {
    if (!make_vae()) return;
    char bind[64], in[64], err[512];
    int pin = free_port();
    ep(bind, sizeof(bind), "@", pin), ep(in, sizeof(in), "", pin);
    PeerWatch watch;  // attached before the bind, so no decoder handshake goes unseen
    void *push = zsock_open_watched(ZMQ_PUSH, bind, 1, &watch, err, sizeof(err));
    EXPECT(push, "%s", err);
    if (!push) return;
    Proc dec;
    proc_start(&dec, (const char *[]){"doppel-decoder", "--vae", VAE_DIR, "--in", in, "--pub", "tcp://127.0.0.1:*", NULL});
    EXPECT(peerwatch_wait(&watch, 1, 30000) == 0, "the decoder did not connect");
    peerwatch_stop(&watch);
    kill(dec.pid, SIGINT);
    int rc = proc_wait(&dec, 10);
    char *e = proc_read(dec.err);
    EXPECT(rc == 0 && strstr(e, "(interrupted)"), "SIGINT: rc %d, stderr %s", rc, e);
    free(e);
    zsock_close(&push);
}

static void test_corrupt_vae(void) {
    if (!make_vae()) return;
    EXPECT(system("rm -rf build/test-out/dec_vae_bad && cp -r " VAE_DIR " build/test-out/dec_vae_bad") == 0, "cp");
    const char *st = "build/test-out/dec_vae_bad/diffusion_pytorch_model.safetensors";
    FILE *f = fopen(st, "rb");
    long size = 0;
    if (f && !fseek(f, 0, SEEK_END)) size = ftell(f);
    if (f) fclose(f);
    EXPECT(size > 1000 && truncate(st, size / 2) == 0, "truncate %s (%ld bytes)", st, size);
    char *out, *err;
    int rc = proc_run((const char *[]){"doppel-decoder", "--vae", "build/test-out/dec_vae_bad", "--in", "tcp://127.0.0.1:1",
                                       "--pub", "tcp://127.0.0.1:1", NULL}, 30, &out, &err);
    EXPECT(rc == 1 && strstr(err, "build/test-out/dec_vae_bad"), "corrupt VAE: rc %d, stderr '%s'", rc, err);
    printf("  corrupt VAE: %s", err);
    free(out), free(err);
}

int main(void) {
    RUN(test_cli);
    RUN(test_decode_png_and_pub);
    RUN(test_bad_frames_skipped);
    RUN(test_parallel_decoders);
    RUN(test_sigint);
    RUN(test_corrupt_vae);
    if (g_vae_state > 0) vae_folder_free(&g_vae);
    zsock_term();
    return tl_finish();
}
