// test_score.c: doppel-validator score end to end on simulated users: a judge trained from a loader
// stream; real, held-out and "generated" sets as ID_<n>/ folders and as streams; a set scored
// against itself has FID 0 and full precision/recall; the report is identical for identical input;
// a source that is neither a folder nor a stream is refused with a message.
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "proc.h"
#include "testlib.h"

#define OUT "build/test-out/score"
static const char *sim[] = {"--synthetic", "--users", "3", "--per-user", "40", "--resolution", "32", "--seed", "1", "--threads", "1"};
#define SIM sim[0], sim[1], sim[2], sim[3], sim[4], sim[5], sim[6], sim[7], sim[8], sim[9], sim[10]

static double tl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void ep(char *buf, size_t n, const char *prefix, int port) { snprintf(buf, n, "%stcp://127.0.0.1:%d", prefix, port); }

static int make_judge_and_sets(void) {
    EXPECT(system("rm -rf " OUT " && mkdir -p " OUT) == 0, "mkdir");
    char b[64], c[64], *out, *err;
    int p = free_port();
    ep(b, 64, "@", p), ep(c, 64, ">", p);
    Proc l;
    proc_start(&l, (const char *[]){"doppel-loader", SIM, "--batch", "16", "--shuffle", "--forever", "--out", b, NULL});
    int rc = proc_run((const char *[]){"doppel-validator", "train", "--in", c, "--judge", OUT "/judge", "--steps", "60",
                                       "--block-out-channels", "8,16,32", "--lr", "3e-3", "--seed", "2", "--timeout", "60",
                                       "--threads", "1", NULL},
                      120, &out, &err);
    kill(l.pid, SIGTERM);
    proc_wait(&l, 20);
    EXPECT(rc == 0, "judge train rc %d:\n%s", rc, err);
    free(out), free(err);
    for (int s = 0; s < 2 && !rc; s++) {
        rc = proc_run((const char *[]){"doppel-loader", SIM, "--split", s ? "val" : "train", "--write", s ? OUT "/val" : OUT "/train",
                                       NULL},
                      60, &out, &err);
        EXPECT(rc == 0, "loader --write rc %d: %s", rc, err);
        free(out), free(err);
    }
    return rc;
}

static json_t *score(const char *const *args, const char *report, int want_rc, char **err_out) {
    const char *argv[32] = {"doppel-validator", "score", "--judge", OUT "/judge", "--threads", "1"};
    int k = 6;
    for (int i = 0; args[i]; i++) argv[k++] = args[i];
    if (report) argv[k++] = "--report", argv[k++] = report;
    argv[k] = NULL;
    char *out, *err;
    int rc = proc_run(argv, 120, &out, &err);
    EXPECT(rc == want_rc, "score rc %d (want %d):\n%s\n%s", rc, want_rc, out, err);
    if (rc == 0) printf("%s", out);
    free(out);
    if (err_out) *err_out = err;
    else free(err);
    if (!report || rc) return NULL;
    char path[512];
    snprintf(path, sizeof(path), "%s/score.json", report);
    return json_load_file(path, 0, NULL);
}

static double get(const json_t *rep, const char *section, const char *key) {
    return json_number_value(json_object_get(json_object_get(rep, section), key));
}

static void test_score(void) {
    if (make_judge_and_sets()) return;
    // held-out users' spectrograms as the "generated" set, with the same set as the calibration
    json_t *a = score((const char *[]){"--real", OUT "/train", "--generated", OUT "/val", "--real-val", OUT "/val", NULL},
                      OUT "/r1", 0, NULL);
    EXPECT(a, "no score.json");
    if (!a) return;
    double fid = get(a, "realism", "fid"), acc = get(a, "identity", "accuracy");
    EXPECT(fid > 0 && fid == get(a, "realism_real_val", "fid") && acc == get(a, "identity_real_val", "accuracy"),
           "the generated set is the calibration set: the same figures (FID %g / %g)", fid, get(a, "realism_real_val", "fid"));
    EXPECT(json_integer_value(json_object_get(json_object_get(a, "identity"), "images")) == 24 &&
               json_array_size(json_object_get(json_object_get(a, "identity"), "per_user")) == 3,
           "24 held-out images of 3 users");
    EXPECT(json_array_size(json_object_get(a, "checks")) == 5 && json_is_boolean(json_object_get(a, "pass")),
           "five checks and a verdict");
    // verification in the embedding space: held-out images of the judge's people score higher
    // against their own user's prototype than against the others'
    double auc = get(a, "verification", "auc"), eer = get(a, "verification", "eer");
    printf("  verification of held-out real: AUC %.4f, EER %.4f, nearest prototype %.3f\n", auc, eer,
           get(a, "verification", "nearest_prototype_accuracy"));
    EXPECT(auc > 0.8 && auc <= 1 && auc == get(a, "verification_real_val", "auc") && eer >= 0 && eer < 0.3 &&
               get(a, "verification", "genuine_mean_cos") > get(a, "verification", "impostor_mean_cos") &&
               json_integer_value(json_object_get(json_object_get(a, "verification"), "genuine_pairs")) == 24 &&
               json_integer_value(json_object_get(json_object_get(a, "verification"), "impostor_pairs")) == 48,
           "verification AUC %g EER %g", auc, eer);
    EXPECT(get(a, "diversity", "embedding_spread_real") > 0 && get(a, "diversity", "embedding_spread_ratio") > 0,
           "embedding spread");
    const char *keys[] = {"kid", "precision", "recall", "inception_score"};
    for (int i = 0; i < 4; i++) EXPECT(json_is_real(json_object_get(json_object_get(a, "realism"), keys[i])), "realism.%s", keys[i]);
    // radar statistics and diversity: the same set as the calibration gives the same figures; a
    // held-out set of the same people is close to the real one
    double tv = get(a, "spectrogram", "doppler_profile_tv"), ks = get(a, "spectrogram", "power_ks");
    EXPECT(tv == get(a, "spectrogram_real_val", "doppler_profile_tv") && tv > 0 && tv < 0.1 && ks > 0 && ks < 0.2,
           "Doppler profile TV %g, power KS %g", tv, ks);
    EXPECT(json_array_size(json_object_get(json_object_get(a, "spectrogram"), "per_user")) == 3, "spectrogram per user");
    EXPECT(get(a, "diversity", "spread_ratio") > 0 && json_is_real(json_object_get(json_object_get(a, "diversity"), "closer_than_real_val_p5")),
           "diversity figures");
    // the pictures next to the figures
    const char *pics[] = {"grid.png", "confusion.png", "doppler_profile.png", "power_histogram.png"};
    for (int i = 0; i < 4; i++) {
        char path[256];
        snprintf(path, sizeof(path), OUT "/r1/%s", pics[i]);
        size_t len = 0;
        unsigned char *png = tl_read_file(path, &len);
        EXPECT(png && len > 100 && !memcmp(png, "\x89PNG", 4), "%s missing or not a PNG", path);
        free(png);
    }
    // train on generated (here: held-out real), test on real
    json_t *t = score((const char *[]){"--real", OUT "/train", "--generated", OUT "/val", "--real-val", OUT "/val",
                                       "--tstr-steps", "30", NULL},
                      OUT "/r5", 0, NULL);
    if (t) {
        double g = get(t, "tstr", "train_generated_test_real"), r = get(t, "tstr", "train_real_test_real");
        EXPECT(g >= 0 && g <= 1 && r > 1.0 / 3 && r <= 1, "TSTR %g, TRTR %g", g, r);
        json_decref(t);
    }
    // identical input, identical report
    json_t *b = score((const char *[]){"--real", OUT "/train", "--generated", OUT "/val", "--real-val", OUT "/val", NULL},
                      OUT "/r2", 0, NULL);
    EXPECT(b && json_equal(a, b), "a second run with the same input gave another report");
    json_decref(a), json_decref(b);
    // a set against itself: FID 0, every sample inside the other set's manifold
    a = score((const char *[]){"--real", OUT "/train", "--generated", OUT "/train", NULL}, OUT "/r3", 0, NULL);
    if (a) {
        EXPECT(fabs(get(a, "realism", "fid")) < 1e-6 && get(a, "realism", "precision") == 1.0 &&
                   get(a, "realism", "recall") == 1.0,
               "self-score: FID %g precision %g recall %g", get(a, "realism", "fid"), get(a, "realism", "precision"),
               get(a, "realism", "recall"));
        json_decref(a);
    }
    // the same images with their users rotated (ID_1's filed as ID_2, ...): verification fails
    EXPECT(system("rm -rf " OUT "/rot && mkdir -p " OUT "/rot && cp -r " OUT "/val/ID_1 " OUT "/rot/ID_2 && cp -r " OUT
                  "/val/ID_2 " OUT "/rot/ID_3 && cp -r " OUT "/val/ID_3 " OUT "/rot/ID_1") == 0, "rotate users");
    a = score((const char *[]){"--real", OUT "/train", "--generated", OUT "/rot", NULL}, OUT "/r6", 0, NULL);
    if (a) {
        double rauc = get(a, "verification", "auc");
        printf("  verification with users rotated: AUC %.4f\n", rauc);
        EXPECT(rauc < 0.5 && rauc < auc, "rotated users still verify: AUC %g", rauc);
        json_decref(a);
    }
    // the generated set as a stream (doppel-loader here; doppel-decoder --pub in a pipeline)
    int p = free_port();
    char bind[64], conn[64];
    ep(bind, 64, "@", p), ep(conn, 64, ">", p);
    Proc l;
    proc_start(&l, (const char *[]){"doppel-loader", SIM, "--batch", "10", "--split", "val", "--out", bind, NULL});
    a = score((const char *[]){"--real", OUT "/train", "--generated", conn, "--timeout", "60", NULL}, OUT "/r4", 0, NULL);
    proc_wait(&l, 20);
    EXPECT(a && json_integer_value(json_object_get(json_object_get(a, "identity"), "images")) == 24, "24 streamed images");
    json_decref(a);
    // neither a folder nor a stream
    char *err = NULL;
    score((const char *[]){"--real", OUT "/train", "--generated", OUT "/nope", NULL}, NULL, 1, &err);
    EXPECT(err && strstr(err, OUT "/nope"), "the message names the source:\n%s", err ? err : "");
    free(err);
    score((const char *[]){"--real", OUT "/train", "--generated", OUT "/val", "--tstr-steps", "5", NULL}, NULL, 2, NULL);
}

// score --generator: a doppel-diffuser serve on another port (another host in real use); then the
// same server killed mid-request, and no server at all: clear errors, no hang
static void test_remote_generator(void) {
    unsigned char *cfg = tl_read_file(OUT "/judge/config.json", &(size_t){0});
    if (!cfg) return tl_fail(__FILE__, __LINE__, "needs test_score's judge");
    free(cfg);
    const char *bin = getenv("DOPPEL_BIN");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "BIN=$PWD/%s pipelines/train.sh --synthetic --users 3 --per-user 8 --preset tiny --resolution 32 "
             "--vae-steps 3 --unet-steps 3 --out " OUT "/gen-run > " OUT "/gen-run.log 2>&1", bin && *bin ? bin : "bin");
    EXPECT(system(cmd) == 0, "train.sh for the generator failed (see " OUT "/gen-run.log)");
    int p = free_port();
    char bind[64], conn[64];
    ep(bind, 64, "@", p), ep(conn, 64, "", p);
    Proc srv;
    proc_start(&srv, (const char *[]){"doppel-diffuser", "serve", "--unet", OUT "/gen-run/unet", "--bind", bind, "--batch", "4",
                                      "--threads", "1", NULL});
    json_t *a = score((const char *[]){"--real", OUT "/train", "--generator", conn, "--vae", OUT "/gen-run/vae", "--per-user",
                                       "4", "--steps", "3", NULL},
                      OUT "/r6", 0, NULL);
    EXPECT(a && json_integer_value(json_object_get(json_object_get(a, "identity"), "images")) == 12,
           "12 samples (3 users x 4) from the remote generator");
    json_decref(a);
    // killed mid-request: a long request, the server stopped a moment later
    char *err = NULL;
    Proc sc;
    proc_start(&sc, (const char *[]){"doppel-validator", "score", "--judge", OUT "/judge", "--real", OUT "/train",
                                     "--generator", conn, "--vae", OUT "/gen-run/vae", "--per-user", "400", "--steps", "50",
                                     "--threads", "1", NULL});
    sleep(4);
    kill(srv.pid, SIGKILL);
    proc_wait(&srv, 10);
    double t0 = tl_now();
    int rc = proc_wait(&sc, 60);
    err = proc_read(sc.err);
    EXPECT(rc == 1 && strstr(err, "stopped answering") && tl_now() - t0 < 30,
           "killed generator: rc %d after %.1f s:\n%s", rc, tl_now() - t0, err);
    free(err);
    // nobody there
    t0 = tl_now();
    score((const char *[]){"--real", OUT "/train", "--generator", conn, "--vae", OUT "/gen-run/vae", NULL}, NULL, 1, &err);
    EXPECT(err && strstr(err, "did not answer") && tl_now() - t0 < 40, "no generator: %.1f s:\n%s", tl_now() - t0,
           err ? err : "");
    free(err);
}

int main(void) {
    RUN(test_score);
    RUN(test_remote_generator);
    return tl_finish();
}
