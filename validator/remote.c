// remote.c: the generated set of `score --generator EP`: samples asked of a running
// `doppel-diffuser serve` (docs/diffuser.md "serve"), decoded here with the VAE and judged as they
// arrive. The client is zguide's Lazy Pirate: a DEALER with a receive timeout; when nothing comes,
// a ping asks whether the server is alive (it answers between sampler steps even while it
// generates); a server that does not answer is retried on a fresh socket a few times, then given
// up with a message. Replies carry the request's id; anything else (late replies to an attempt
// given up, pings answered late) is dropped.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "check.h"
#include "cli/cli.h"
#include "models/vae_folder.h"
#include "validator.h"

#define PING_MS 5000  // how long a ping may take to come back
#define RETRIES 3     // fresh sockets tried after a ping went unanswered
#define SILENCE_MS 10000  // a generating server sends something at least this often, or is pinged

static int send_request(void *sock, json_t *meta, char *err, size_t errlen) {
    Frame f;
    frame_init(&f, FRAME_REQUEST, "validator", 0);
    frame_set_meta(&f, meta);
    int rc = zsock_send_frame(sock, &f, PING_MS, err, errlen);
    frame_release(&f);
    json_decref(meta);
    return rc;
}

static const char *meta_str(const Frame *f, const char *key) {
    return f->meta ? json_string_value(json_object_get(f->meta, key)) : NULL;
}

// the frame's id is `id` (ids are strings here)
static int is_for(const Frame *f, const char *id) {
    const char *got = meta_str(f, "id");
    return got && !strcmp(got, id);
}

// ping with a fresh id; 1 answered (the answer's meta kept in *info when info != NULL), 0 not
static int ping(void *sock, int n, json_t **info, char *err, size_t errlen) {
    char id[32];
    snprintf(id, sizeof(id), "ping-%d", n);
    if (send_request(sock, json_pack("{s:s, s:b}", "id", id, "ping", 1), err, errlen)) return 0;
    for (;;) {
        Received r;
        int got = zsock_recv_frame(sock, &r, NULL, PING_MS, err, errlen);
        if (got == 0) return errf(err, errlen, "no answer to a ping within %d ms", PING_MS), 0;
        if (got < 0) continue;  // a bad frame: reported by the caller's message if it persists
        int mine = is_for(&r.frame, id) && !strcmp(meta_str(&r.frame, "status") ? meta_str(&r.frame, "status") : "", "ok");
        if (mine && info) *info = json_incref(r.frame.meta);
        received_release(&r);
        if (mine) return 1;
    }
}

int score_remote(JudgeNet *net, const RemoteRequest *rq, Tally *t, JudgedSet *collect, int batch, int gpu, char *err,
                 size_t errlen) {
    VaeFolder vae;
    char e[1024];
    if (vae_folder_load(&vae, rq->vae, e, sizeof(e))) return errf(err, errlen, "%s", e);
    const VaeConfig *vc = &vae.model.cfg;
    int C = vc->out_channels, f = vae_downscale(vc), rc = 0, pings = 0;
    if (C != net->cfg.channels)
        return vae_folder_free(&vae), errf(err, errlen, "the VAE %s makes %d-channel images but the judge takes %d", rq->vae,
                                          C, net->cfg.channels);
    void *sock = NULL;
    json_t *info = NULL;
    for (int attempt = 0; attempt <= RETRIES && !info; attempt++) {  // Lazy Pirate: a fresh socket per try
        zsock_close(&sock);
        if (!(sock = zsock_open(ZMQ_DEALER, rq->endpoint, 0, e, sizeof(e)))) return vae_folder_free(&vae), errf(err, errlen, "%s", e);
        if (!ping(sock, pings++, &info, e, sizeof(e)))
            fprintf(stderr, MSG "generator %s: %s (try %d of %d)\n", rq->endpoint, e, attempt + 1, RETRIES + 1);
        if (zsock_interrupted()) break;
    }
    if (!info) {
        zsock_close(&sock), vae_folder_free(&vae);
        return errf(err, errlen, "the generator %s did not answer %d pings (%d s each): is doppel-diffuser serve running "
                    "there?", rq->endpoint, RETRIES + 1, PING_MS / 1000);
    }
    json_t *users = json_object_get(info, "users");  // the UNet's label -> name
    fprintf(stderr, MSG "generator %s: %zu users, UNet %s (step %lld)\n", rq->endpoint, json_array_size(users),
            json_string_value(json_object_get(info, "unet")) ? json_string_value(json_object_get(info, "unet")) : "?",
            (long long)json_integer_value(json_object_get(info, "unet_step")));
    // every user both know, by name
    json_t *ask = json_array();
    for (size_t i = 0; i < json_array_size(users); i++) {
        const char *name = json_string_value(json_array_get(users, i));
        if (name && judge_user_index(net, name) >= 0) json_array_append_new(ask, json_string(name));
    }
    if (!json_array_size(ask)) {
        json_decref(ask), json_decref(info), zsock_close(&sock), vae_folder_free(&vae);
        return errf(err, errlen, "the generator's users and the judge's have no name in common");
    }
    const char *id = "score-1";
    json_t *req = json_pack("{s:s, s:o, s:i, s:I, s:i, s:f, s:s, s:s}", "id", id, "users", ask, "per_user", rq->per_user,
                            "seed", (json_int_t)rq->seed, "steps", rq->steps, "guidance", rq->guidance, "sampler",
                            rq->sampler, "deliver", "reply");
    if (send_request(sock, req, e, sizeof(e))) {
        json_decref(info), zsock_close(&sock), vae_folder_free(&vae);
        return errf(err, errlen, "sending the request to %s: %s", rq->endpoint, e);
    }
    Rng rng;
    rng_seed(&rng, 0);
    // the judge on the chosen device; the VAE decoder on the CPU (one GPU context at a time: the
    // backend orders its copies on the current context's stream)
    Compute vc_cpu, jc;
    compute_init(&vc_cpu, &vae.model.ps, &rng, 0);
    compute_init(&jc, &net->ps, &rng, gpu);
    jc.ctx.train = 0;
    Ctx *vctx = &vc_cpu.ctx;
    int64_t total = -1, got = 0;
    float *img = NULL, *z = NULL;
    int *truth = NULL;
    size_t cap = 0;
    Progress p;
    progress_start(&p, "remote", 0, "img");
    while (!zsock_interrupted()) {
        Received r;
        int k = zsock_recv_frame(sock, &r, NULL, SILENCE_MS, e, sizeof(e));
        if (k < 0) {
            fprintf(stderr, MSG "generator %s: bad frame skipped: %s\n", rq->endpoint, e);
            continue;
        }
        if (k == 0) {  // silence: alive (busy with a long batch) or gone?
            if (zsock_interrupted()) break;
            if (!ping(sock, pings++, NULL, e, sizeof(e))) {
                rc = errf(err, errlen, "the generator %s stopped answering (%s) after %lld of %lld samples", rq->endpoint, e,
                          (long long)got, (long long)total);
                break;
            }
            continue;
        }
        const Frame *fr = &r.frame;
        const char *st = meta_str(fr, "status");
        if (!is_for(fr, id)) {  // a late ping answer, or anything else
            received_release(&r);
            continue;
        }
        if (fr->kind == FRAME_ERROR) {
            rc = errf(err, errlen, "the generator %s refused or failed the request: %s", rq->endpoint,
                      meta_str(fr, "message") ? meta_str(fr, "message") : "(no message)");
            received_release(&r);
            break;
        }
        if (st && !strcmp(st, "accepted")) {
            total = json_integer_value(json_object_get(fr->meta, "total"));
            p.total = total;
        } else if (st && !strcmp(st, "done")) {
            received_release(&r);
            break;
        } else {
            const WireTensor *lat = frame_tensor(fr, WIRE_LATENT), *lab = frame_tensor(fr, WIRE_LABEL);
            if (!lat || !lab || lat->ndim != 4 || lat->shape[1] != vc->latent_channels) {
                received_release(&r);
                rc = errf(err, errlen, "the generator %s sent latents the VAE %s cannot decode", rq->endpoint, rq->vae);
                break;
            }
            int n = (int)lat->shape[0], h = (int)lat->shape[2], w = (int)lat->shape[3];
            size_t per_in = (size_t)vc->latent_channels * h * w, per = (size_t)C * h * f * w * f;
            if ((size_t)n > cap) {
                cap = (size_t)n;
                img = xrealloc(img, cap * per * sizeof(float)), z = xrealloc(z, cap * per_in * sizeof(float));
                truth = xrealloc(truth, cap * sizeof(int));
            }
            wire_tensor_f32(z, lat);
            for (size_t i = 0; i < (size_t)n * per_in; i++) z[i] /= vc->scaling_factor;
            for (int i = 0; i < n; i++) {
                int32_t l;
                memcpy(&l, (const char *)lab->data + 4 * i, 4);
                truth[i] = judge_user_index(net, json_string_value(json_array_get(users, (size_t)l)));
            }
            arena_reset(&vc_cpu.arena);
            Tensor zt = ctx_tensor(vctx, n, vc->latent_channels, h, w);
            ctx_put(vctx, zt.d, z, (size_t)n * per_in * sizeof(float));
            Tensor y = vae_decode(vctx, &vae.model, zt);  // [n, C, H, W]
            ctx_get(vctx, img, y.d, (size_t)n * per * sizeof(float));
            for (size_t i = 0; i < (size_t)n * per; i++) img[i] = img[i] < -1 ? -1 : img[i] > 1 ? 1 : img[i];
            received_release(&r);
            if (y.H != net->cfg.resolution || y.W != net->cfg.resolution) {
                rc = errf(err, errlen, "the VAE makes %dx%d images but the judge takes %dx%d", y.H, y.W, net->cfg.resolution,
                          net->cfg.resolution);
                break;
            }
            classify_images(net, &jc.ctx, img, truth, n, y.H, y.W, batch, t, collect);
            got += n;
            progress_update(&p, got, NULL);
            continue;
        }
        received_release(&r);
    }
    progress_finish(&p, NULL);
    if (!rc && zsock_interrupted()) rc = errf(err, errlen, "interrupted after %lld samples", (long long)got);
    if (!rc && got == 0) rc = errf(err, errlen, "the generator %s sent no samples", rq->endpoint);
    free(img), free(z), free(truth);
    compute_free(&jc);
    compute_free(&vc_cpu);
    json_decref(info);
    zsock_close(&sock);
    vae_folder_free(&vae);
    return rc;
}
