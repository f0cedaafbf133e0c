// latents.c: training latents from a cache file or a live stream (see diffuser.h).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "check.h"
#include "io/safetensors.h"
#include "net/zsock.h"
#include "diffuser.h"

static int load_cache(LatentSource *s, const char *path, char *err, size_t errlen) {
    SafeTensors st;
    char e[512];
    if (st_load(&st, path, e, sizeof(e))) return errf(err, errlen, "latent cache: %s", e);
    const StTensor *L = st_find(&st, "latent"), *Y = st_find(&st, "label");
    int rc = 0;
    if (!L || L->ndim != 4 || L->dtype != ST_F32 || L->shape[0] < 1)
        rc = errf(err, errlen, "latent cache %s: needs a 'latent' F32 tensor (N, C, h, w) (doppel-encoder encode --cache)", path);
    else if (!Y || Y->ndim != 1 || Y->dtype != ST_I32 || Y->shape[0] != L->shape[0])
        rc = errf(err, errlen, "latent cache %s: needs a 'label' I32 tensor (N) with one user per latent", path);
    if (rc) return st_free(&st), rc;
    s->n = L->shape[0], s->C = (int)L->shape[1], s->h = (int)L->shape[2], s->w = (int)L->shape[3];
    s->lat = xmalloc(L->numel * sizeof(float));
    st_to_f32(s->lat, L);
    s->lab = xmalloc((size_t)s->n * sizeof(int32_t));
    memcpy(s->lab, Y->data, (size_t)s->n * sizeof(int32_t));
    for (int64_t i = 0; i < s->n; i++)
        if (s->lab[i] < 0) {
            rc = errf(err, errlen, "latent cache %s: latent %lld has no user (label %d); encode a labelled stream", path,
                      (long long)i, s->lab[i]);
            break;
        }
    const char *u = st_meta(&st, "users"), *sf = st_meta(&st, "scaling_factor"), *vae = st_meta(&st, "vae");
    if (u) {
        json_t *j = json_loads(u, 0, NULL);
        if (json_is_array(j)) s->users = j;
        else json_decref(j);
    }
    if (sf) s->scaling_factor = strtof(sf, NULL);
    if (vae) snprintf(s->vae, sizeof(s->vae), "%s", vae);
    st_free(&st);
    return rc;
}

// the next `latent` batch frame of a stream; 0 at the end or on interruption
static int next_frame(LatentSource *s, const WireTensor **lat, const WireTensor **lab) {
    char err[512];
    for (;;) {
        if (s->have) received_release(&s->r), s->have = 0;
        if (zsock_interrupted() || s->ended) return 0;
        int rc = zsock_recv_frame(s->sock, &s->r, NULL, 500, err, sizeof(err));
        if (rc < 0) {
            fprintf(stderr, "doppel-diffuser: bad frame skipped: %s\n", err);
            continue;
        }
        if (rc == 0) continue;
        s->have = 1;
        Frame *f = &s->r.frame;
        if (f->kind == FRAME_END) return s->ended = 1, 0;
        if (f->kind != FRAME_BATCH) continue;
        *lat = frame_tensor(f, WIRE_LATENT), *lab = frame_tensor(f, WIRE_LABEL);
        if (frame_check_batch(f, err, sizeof(err)) || !*lat || !*lab) {
            fprintf(stderr, "doppel-diffuser: frame %llu skipped: %s\n", (unsigned long long)f->seq,
                    *err ? err : "it needs 'latent' and 'label' tensors");
            continue;
        }
        if (s->C && ((*lat)->shape[1] != s->C || (*lat)->shape[2] != s->h || (*lat)->shape[3] != s->w)) {
            fprintf(stderr, "doppel-diffuser: frame %llu skipped: latents (%lld, %lld, %lld), the stream began with (%d, %d, %d)\n",
                    (unsigned long long)f->seq, (long long)(*lat)->shape[1], (long long)(*lat)->shape[2],
                    (long long)(*lat)->shape[3], s->C, s->h, s->w);
            continue;
        }
        int found = 0;
        int32_t bad = 0;
        for (int64_t i = 0; s->n_users > 0 && i < (*lab)->shape[0] && !found; i++) {
            memcpy(&bad, (const char *)(*lab)->data + 4 * i, 4);
            found = bad < 0 || bad >= s->n_users;
        }
        if (found) {
            fprintf(stderr, "doppel-diffuser: frame %llu skipped: label %d outside the %d users\n", (unsigned long long)f->seq,
                    bad, s->n_users);
            continue;
        }
        json_t *m = f->meta;
        json_t *u = m ? json_object_get(m, "users") : NULL, *sf = m ? json_object_get(m, "scaling_factor") : NULL;
        json_t *vae = m ? json_object_get(m, "vae") : NULL;
        if (json_is_array(u)) json_decref(s->users), s->users = json_deep_copy(u);
        if (json_is_number(sf)) s->scaling_factor = (float)json_number_value(sf);
        if (json_is_string(vae)) snprintf(s->vae, sizeof(s->vae), "%s", json_string_value(vae));
        return 1;
    }
}

int latents_open(LatentSource *s, const char *cache, const char *endpoint, uint64_t seed, int augment, char *err,
                 size_t errlen) {
    memset(s, 0, sizeof(*s));
    s->seed = seed, s->augment = augment, s->epoch = -1;
    if (cache) return load_cache(s, cache, err, errlen);
    s->sock = zsock_open(ZMQ_PULL, endpoint, 0, err, errlen);
    if (!s->sock) return -1;
    fprintf(stderr, "doppel-diffuser: waiting for latents on %s\n", endpoint);
    const WireTensor *lat, *lab;
    if (!next_frame(s, &lat, &lab)) return errf(err, errlen, "the stream %s ended before any latent arrived", endpoint);
    s->C = (int)lat->shape[1], s->h = (int)lat->shape[2], s->w = (int)lat->shape[3];
    s->pending = 1;  // the first batch is this frame
    return 0;
}

// circular shift of one (C, h, w) latent along w by k columns
static void shift_time(float *x, int C, int h, int w, int k) {
    float tmp[4096];
    CHECK(w <= 4096, "latent width %d", w);
    for (int r = 0; r < C * h; r++) {
        float *row = x + (size_t)r * w;
        for (int j = 0; j < w; j++) tmp[(j + k) % w] = row[j];
        memcpy(row, tmp, (size_t)w * sizeof(float));
    }
}

static void epoch_perm(LatentSource *s, int64_t e) {
    if (s->epoch == e) return;
    if (!s->perm) s->perm = xmalloc((size_t)s->n * sizeof(int32_t));
    for (int64_t i = 0; i < s->n; i++) s->perm[i] = (int32_t)i;
    Rng r;
    rng_seed(&r, s->seed * 0x9E3779B97F4A7C15ULL + (uint64_t)e + 1);
    for (int64_t i = s->n - 1; i > 0; i--) {  // Fisher-Yates
        int64_t j = rng_below(&r, (uint32_t)(i + 1));
        int32_t t = s->perm[i];
        s->perm[i] = s->perm[j], s->perm[j] = t;
    }
    s->epoch = e;
}

// room for n samples in the host staging buffers
static void batch_room(LatentSource *s, size_t n, size_t per) {
    if (n <= s->bcap) return;
    s->bx = xrealloc(s->bx, n * per * sizeof(float));
    s->by = xrealloc(s->by, n * sizeof(int32_t));
    s->bcap = n;
}

int latents_batch(LatentSource *s, Ctx *ctx, int64_t b, int B, Tensor *x, int32_t **labels) {
    size_t per = (size_t)s->C * s->h * s->w;
    int N;
    if (s->lat) {
        N = B;
        batch_room(s, (size_t)N, per);
        for (int j = 0; j < B; j++) {
            int64_t p = b * B + j;
            epoch_perm(s, p / s->n);
            int64_t i = s->perm[p % s->n];
            memcpy(s->bx + j * per, s->lat + i * per, per * sizeof(float));
            s->by[j] = s->lab[i];
        }
    } else {
        const WireTensor *lat, *lab;
        if (s->pending) {
            lat = frame_tensor(&s->r.frame, WIRE_LATENT), lab = frame_tensor(&s->r.frame, WIRE_LABEL);
            s->pending = 0;
        } else if (!next_frame(s, &lat, &lab)) {
            return 0;
        }
        N = (int)lat->shape[0];
        batch_room(s, (size_t)N, per);
        wire_tensor_f32(s->bx, lat);
        memcpy(s->by, lab->data, (size_t)N * sizeof(int32_t));
    }
    if (s->augment) {
        Rng r;  // from (seed, b): the same batch gets the same shifts after a resume
        rng_seed(&r, s->seed ^ (0xa5a5a5a5ULL + (uint64_t)b * 0x2545F4914F6CDD1DULL));
        for (int j = 0; j < N; j++) shift_time(s->bx + j * per, s->C, s->h, s->w, (int)rng_below(&r, (uint32_t)s->w));
    }
    *x = ctx_tensor(ctx, N, s->C, s->h, s->w);  // the context's memory: the GPU's when it trains there
    ctx_put(ctx, x->d, s->bx, (size_t)N * per * sizeof(float));
    *labels = s->by;
    return 1;
}

void latents_close(LatentSource *s) {
    free(s->lat), free(s->lab), free(s->perm), free(s->bx), free(s->by);
    if (s->have) received_release(&s->r);
    zsock_close(&s->sock);
    json_decref(s->users);
    memset(s, 0, sizeof(*s));
}
