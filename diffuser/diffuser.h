// diffuser.h: what doppel-diffuser's subcommands share (train.c, train_classifier.c, sample.c, serve.c,
// latents.c).
#pragma once
#include <jansson.h>
#include <stdint.h>

#include "models/diffusion.h"
#include "models/unet_folder.h"
#include "models/vae_folder.h"
#include "net/zsock.h"
#include "wire/frame.h"

#define TOOL "diffuser"

int diffuser_train_main(int argc, char **argv);
int diffuser_sample_main(int argc, char **argv);
int diffuser_serve_main(int argc, char **argv);
int diffuser_train_classifier_main(int argc, char **argv);  // train_classifier.c

// ---- latents.c: where training latents come from ----
// A latent cache (doppel-encoder encode --cache) is read whole; batch b of B samples takes
// positions b*B .. b*B+B-1 of an endless sequence of per-epoch permutations (epoch e shuffled
// by a generator seeded from (seed, e)), so any batch can be produced again without history
// (exact --resume). A stream (`latent` frames) is taken as it comes.
typedef struct {
    // cache
    float *lat;        // (n, C, h, w)
    int32_t *lab;      // (n)
    int64_t n;
    int32_t *perm;     // (n) permutation of epoch `epoch`
    int64_t epoch;
    // stream
    void *sock;
    Received r;
    int have, ended, pending;  // pending: the held frame is not consumed yet
    // both
    int C, h, w;
    json_t *users;     // user names (owned) or NULL
    float scaling_factor;  // the VAE's, from the cache or the frames' meta (0 if unknown)
    char vae[1024];        // the VAE folder the latents came from, if known
    uint64_t seed;
    int augment;           // random circular shift along time (W) per sample
    int n_users;           // > 0: stream frames with labels outside 0..n_users-1 are skipped
    float *bx;             // (B, C, h, w) the batch being assembled, on the host
    int32_t *by;           // (B) its labels: what latents_batch hands out
    size_t bcap;           // samples bx and by hold
} LatentSource;

// opens a cache file or a stream endpoint (exactly one non-NULL); for a stream it waits for the
// first frame to learn the shape. 0, or -1 + err.
int latents_open(LatentSource *s, const char *cache, const char *endpoint, uint64_t seed, int augment, char *err,
                 size_t errlen);
// Batch number b (B samples for a cache; a stream's next frame, whatever its size) into x
// (allocated from ctx's arena: on the GPU for a GPU context) and labels (host memory of s, valid
// until the next call). 1 ok, 0 end of stream / interrupted.
int latents_batch(LatentSource *s, Ctx *ctx, int64_t b, int B, Tensor *x, int32_t **labels);
void latents_close(LatentSource *s);

// ---- sample grids (sample.c) ----
// Samples `per_user` latents for every user of the UNet (rows) with DDIM 20 steps at guidance g,
// decodes them with the VAE and writes the grid PNG (one row per user). 0 or -1 + err.
int diffuser_sample_grid(UNet2DModel *m, const NoiseSchedule *s, VaeFolder *vae, int per_user, float guidance,
                         uint64_t seed, const char *path, char *err, size_t errlen);
// seed of user u's k-th sample in a run with base seed S: S + 1000000 u + k
static inline int64_t sample_seed(uint64_t base, int user, int k) { return (int64_t)(base + 1000000ULL * (uint64_t)user + (uint64_t)k); }

// ---- sample.c, shared with serve.c ----
// "all" or a comma-separated list of user names / label indices (0-based) -> labels (malloc'd);
// returns the count, or -1 + err
int diffuser_parse_users(const char *spec, const json_t *names, int U, int32_t **out, char *err, size_t errlen);
// the meta of every generated batch: stage, users, scaling_factor, unet, sampler settings (owned)
json_t *diffuser_sample_meta(const UNetFolder *u, const char *unet, const SampleConfig *sc, int used_ema);
