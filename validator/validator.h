// validator.h: what the doppel-validator commands share: reading a finite or endless image stream,
// and tallying a judge's predictions per user into the accuracy report (Markdown + JSON).
#pragma once
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "models/judge.h"
#include "net/zsock.h"

#define TOOL "validator"
#define MSG "doppel-validator: "
#define END_GRACE_S 10.0  // after the end frame, how long to wait for batches still in flight

int validator_train_main(int argc, char **argv);
int validator_classify_main(int argc, char **argv);
int validator_score_main(int argc, char **argv);

// ---- an image stream (PULL), ended by docs/protocol.md's rule: the end frame and end.seq batches ----
typedef struct {
    void *sock;
    const char *endpoint;
    Received r;
    int have;           // r holds a frame
    json_t *users;      // the latest meta "users" table (owned), NULL until one arrives
    json_t *meta;       // the first batch's meta (owned)
    long long batches;  // batch frames received (bad ones included)
    long long images;   // images handed out
    long long bad;      // frames skipped
    long long end_seq;  // the end frame's seq (batches to expect), -1 until it arrives
    double end_at;      // when the end frame arrived
    int timeout_s;      // 0: wait forever for the next frame
    const char *why;    // why the stream stopped: "end", "interrupt", "timeout", "incomplete"
} ImageStream;

int istream_open(ImageStream *s, const char *endpoint, int timeout_s, char *err, size_t errlen);
// The next valid batch with an image tensor (label may be NULL). 0 when the stream is over
// (s->why says why). Bad frames are reported on stderr and skipped.
int istream_next(ImageStream *s, const WireTensor **img, const WireTensor **label);
void istream_close(ImageStream *s);

// ---- labels: the stream's label -> user name (meta "users") -> the judge's index ----
// truth (N) gets judge indices. -1 with err when the stream has no users table, a label is outside
// it, or it names a user the judge does not know (the message names the user).
int map_labels(const JudgeNet *net, const json_t *users, const WireTensor *label, int N, int *truth, char *err,
               size_t errlen);

// ---- per-user tally of a judge's predictions, users indexed as the judge's ----
typedef struct {
    int K;
    int64_t *count, *correct;  // (K) images and correct predictions per true user
    double *p_true;            // (K) sum of the softmax probability of the true user
    int64_t *confusion;        // (K, K) [true][predicted]
} Tally;

void tally_init(Tally *t, int K);
void tally_free(Tally *t);
// logits (N, K) of images whose true users (judge indices) are truth (N)
void tally_add(Tally *t, const float *logits, const int *truth, int N);
int64_t tally_total(const Tally *t);
double tally_accuracy(const Tally *t);
// {"judge", "source", "images", "accuracy", "mean_p_true", "per_user": [{"user", "images", "correct",
// "accuracy", "mean_p_true", "top_confusion": {"user", "images"} | null}], "confusion": {...}}
json_t *tally_json(const Tally *t, const JudgeNet *net, const char *judge_dir, const char *source);
// writes the report as JSON (indent 2), atomically
int report_write(const json_t *report, const char *path, char *err, size_t errlen);
// Classifies every image of the stream into t, in passes of at most `batch` images. Images must be
// (channels, R, R) with the judge's channels and R = resolution (0: the judge's). Returns 0, or -1
// with err for what makes the set unusable (images of another shape, no labels, a user the judge
// does not know). gpu: on the GPU (device_choose()'s answer).
// What the judge made of a set, kept for distribution figures (score): the pooled features, the
// embeddings, the softmax probabilities and the true users (judge indices) of every image, in
// arrival order.
typedef struct {
    int n, cap, F, K, D, C, H, W;
    float *feat;  // (n, F)
    float *emb;   // (n, D) L2-normalised embeddings; NULL (D 0) for a judge without the head
    float *prob;  // (n, K)
    int *truth;   // (n)
    float *img;   // (n, C, H, W) the images as the judge saw them
} JudgedSet;
void judged_free(JudgedSet *s);

// collect: NULL, or a JudgedSet that every image's features and probabilities are appended to
int classify_stream(JudgeNet *net, ImageStream *s, Tally *t, JudgedSet *collect, int resolution, int batch, int gpu,
                    char *err, size_t errlen);
// every image of DIR/ID_<n>/ (users matched to the judge's by name), preprocessed as doppel-loader
// does; the same tally and collection as classify_stream
int classify_folder(JudgeNet *net, const char *dir, Tally *t, JudgedSet *collect, int resolution, int batch, int gpu,
                    char *err, size_t errlen);
// ---- verification with the embedding head (verify.c); NULL for a judge without the head ----
// Each image of q against every user's real prototype (the normalised mean embedding of the user's
// images in real): {"users", "genuine_pairs", "impostor_pairs", "auc", "eer", "genuine_mean_cos",
// "impostor_mean_cos", "nearest_prototype_accuracy"}; images of users absent from real are skipped.
json_t *verification(const JudgedSet *real, const JudgedSet *q);

// ---- score --generator: samples asked of a running doppel-diffuser serve (remote.c) ----
typedef struct {
    const char *endpoint;  // the serve ROUTER (connects; e.g. tcp://host:5560)
    const char *vae;       // the VAE folder that decodes its latents
    int per_user, steps, timeout_s;
    int64_t seed;
    double guidance;
    const char *sampler;
} RemoteRequest;
// asks for per_user samples of every user the generator and the judge share, decodes them and
// judges them as they arrive (into t and collect). 0, or -1 with err: no answer to pings (retried
// on fresh sockets), a refused request, the server stopping mid-request, latents the VAE cannot
// decode.
int score_remote(JudgeNet *net, const RemoteRequest *rq, Tally *t, JudgedSet *collect, int batch, int gpu, char *err,
                 size_t errlen);

// logits (N, K) of x (N, C, H, W, host memory) in passes of at most `batch` images, added into t
// with truth (N) (and into collect when not NULL); ctx on either device
void classify_images(JudgeNet *net, Ctx *ctx, const float *x, const int *truth, int N, int H, int W, int batch, Tally *t,
                     JudgedSet *collect);
// the Markdown table (user, images, accuracy, mean P(true user), top confusion) and the overall line
void tally_print_md(FILE *f, const json_t *report);
