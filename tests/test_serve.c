// test_serve.c: doppel-diffuser serve as a process (docs/diffuser.md, "## serve") on a tiny UNet
// with random weights built here: pings answer with the model's users; a request is accepted,
// delivered in reply batches and closed with "done"; its latents equal `doppel-diffuser sample
// --cache` with the same settings bit for bit; bad requests, garbage frames and multipart
// messages get error replies and the server keeps serving; two DEALER clients each get only
// their own replies, and a ping is answered while another client's request runs; 'deliver: out'
// reaches a PULL socket (and times out with an error reply when no decoder is there); SIGTERM
// exits 0.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "check.h"
#include "cli/cli.h"
#include "io/safetensors.h"
#include "models/unet_folder.h"
#include "net/zsock.h"
#include "proc.h"
#include "testlib.h"

#define OUT "build/test-out/serve"
#define UNET OUT "/unet"
#define PER (4 * 16 * 16)  // floats per latent of the tiny preset
// how long a reply may take: the server answers between sampler steps, and on a loaded 2-core
// machine one step of another request can take seconds (5 s once was not enough)
#define REPLY_MS 20000

static Proc g_server;
static int g_started, g_port, g_out_port;

// ---- fixtures ----

// the tiny preset for users ID_1..ID_3 with PyTorch's default init: no training needed to check plumbing
static int make_unet(void) {
    UNetFolder u;
    UNetConfig c;
    char err[512];
    memset(&u, 0, sizeof(u));
    EXPECT(system("rm -rf " OUT " && mkdir -p " OUT) == 0, "mkdir " OUT);
    EXPECT(preset_unet("tiny", 3, &c) == 0, "no tiny preset");
    EXPECT(noise_schedule_init(&u.sched, 1000, BETA_LINEAR, 1e-4f, 0.02f, PRED_EPSILON, err, sizeof(err)) == 0, "%s", err);
    if (tl_current_failed()) return -1;
    unet_build(&u.model, &c);
    Rng rng;
    rng_seed(&rng, 11);
    params_init(&u.model.ps, &rng);
    u.config = json_object();
    unet_folder_set_schedule(&u, &u.sched);
    json_t *d = unet_folder_doppel(&u);
    json_object_set_new(d, "users", json_pack("[s, s, s]", "ID_1", "ID_2", "ID_3"));
    json_object_set_new(d, "preset", json_string("tiny"));
    json_object_set_new(d, "step", json_integer(0));
    u.users = json_object_get(d, "users");
    int rc = unet_folder_save(&u, UNET, 0, err, sizeof(err));
    EXPECT(rc == 0, "unet_folder_save: %s", err);
    unet_folder_free(&u);
    return rc;
}

// ---- a client ----

static void *dealer(void) {
    char ep[64], err[512];
    snprintf(ep, sizeof(ep), ">tcp://127.0.0.1:%d", g_port);
    void *s = zsock_open(ZMQ_DEALER, ep, 0, err, sizeof(err));
    EXPECT(s, "DEALER %s: %s", ep, err);
    return s;
}

// sends a request frame with meta (consumed)
static void send_request(void *sock, json_t *meta) {
    Frame f;
    char err[512];
    frame_init(&f, FRAME_REQUEST, "test", 0);
    frame_set_meta(&f, meta);
    EXPECT(zsock_send_frame(sock, &f, 5000, err, sizeof(err)) == 0, "send request: %s", err);
    frame_release(&f);
    json_decref(meta);
}

// next frame within timeout_ms: 1, or 0 (and a failure) when none came
static int next_frame(void *sock, Received *r, int timeout_ms, const char *waiting_for) {
    char err[512];
    int got = zsock_recv_frame(sock, r, NULL, timeout_ms, err, sizeof(err));
    EXPECT(got == 1, "waiting for %s: %s", waiting_for, got < 0 ? err : "nothing came");
    return got == 1;
}

static const char *meta_str(const Frame *f, const char *key) {
    return f->meta ? json_string_value(json_object_get(f->meta, key)) : NULL;
}

static const char *status(const Frame *f) { return meta_str(f, "status") ? meta_str(f, "status") : "(none)"; }

// the reply to {"id": id, "ping": true} (caller releases r); 1 ok
static int ping(void *sock, const char *id, Received *r, int timeout_ms) {
    send_request(sock, json_pack("{s:s, s:b}", "id", id, "ping", 1));
    if (!next_frame(sock, r, timeout_ms, "a ping reply")) return 0;
    const Frame *f = &r->frame;
    EXPECT(f->kind == FRAME_REPLY && !strcmp(status(f), "ok") && meta_str(f, "id") && !strcmp(meta_str(f, "id"), id),
           "ping %s: a '%s' frame with status %s, id %s", id, frame_kind_name(f->kind), status(f),
           meta_str(f, "id") ? meta_str(f, "id") : "(none)");
    return !tl_current_failed();
}

// everything one request brings back to its client
typedef struct {
    int accepted, done, error, frames, foreign;
    int64_t total, n;           // announced (accepted); received in reply batches
    int64_t done_seq, done_total;  // the done reply's seq (batch frames sent) and total (samples sent)
    float lat[64 * PER];
    int32_t lab[64];
    int64_t seed[64];
    char message[512];
    json_t *batch_meta;  // the first batch's meta (owned)
} Result;

static void result_free(Result *res) { json_decref(res->batch_meta); }

// reads frames until the request `id` is done or failed (or timeout_s passes); frames for
// other ids are counted as foreign. accepted: the caller already read the 'accepted' reply.
static void collect(void *sock, json_t *id, Result *res, int accepted, double timeout_s) {
    memset(res, 0, sizeof(*res));
    res->accepted = accepted;
    double end = cli_now() + timeout_s;
    while (!res->done && !res->error && cli_now() < end) {
        Received r;
        char err[512];
        int got = zsock_recv_frame(sock, &r, NULL, 200, err, sizeof(err));
        EXPECT(got >= 0, "a bad frame from the server: %s", err);
        if (got != 1) continue;
        const Frame *f = &r.frame;
        json_t *fid = f->meta ? json_object_get(f->meta, "id") : NULL;
        if (!json_equal(fid, id)) {
            res->foreign++;
        } else if (f->kind == FRAME_ERROR) {
            res->error = 1;
            snprintf(res->message, sizeof(res->message), "%s", meta_str(f, "message") ? meta_str(f, "message") : "(none)");
        } else if (frame_tensor(f, WIRE_LATENT)) {
            const WireTensor *l = frame_tensor(f, WIRE_LATENT), *b = frame_tensor(f, WIRE_LABEL), *s = frame_tensor(f, WIRE_SEED);
            EXPECT(f->kind == FRAME_REPLY && f->seq == (uint64_t)res->frames && b && s && l->shape[0] == b->shape[0] &&
                       l->numel == (size_t)l->shape[0] * PER && res->n + l->shape[0] <= 64,
                   "batch %d: kind %s, seq %llu, bad tensors", res->frames, frame_kind_name(f->kind), (unsigned long long)f->seq);
            if (!tl_current_failed()) {
                memcpy(res->lat + res->n * PER, l->data, l->nbytes);
                memcpy(res->lab + res->n, b->data, b->nbytes);
                memcpy(res->seed + res->n, s->data, s->nbytes);
                res->n += l->shape[0];
            }
            if (!res->batch_meta) res->batch_meta = json_incref(f->meta);
            res->frames++;
        } else if (!strcmp(status(f), "accepted")) {
            res->accepted++;
            res->total = f->has_total ? (int64_t)f->total : -1;
        } else if (!strcmp(status(f), "done")) {
            res->done = 1;
            res->done_seq = (int64_t)f->seq, res->done_total = f->has_total ? (int64_t)f->total : -1;
            EXPECT(res->accepted == 1, "done before accepted");
        } else {
            EXPECT(0, "unexpected reply with status %s", status(f));
        }
        received_release(&r);
    }
    EXPECT(res->done || res->error, "no 'done' or error within %.0f s (%d batches so far)", timeout_s, res->frames);
}

// ---- tests ----

static void test_start_and_ping(void) {
    if (make_unet()) return;
    g_port = free_port(), g_out_port = free_port();
    char bind[64], out[64];
    snprintf(bind, sizeof(bind), "@tcp://127.0.0.1:%d", g_port);
    snprintf(out, sizeof(out), "@tcp://127.0.0.1:%d", g_out_port);
    EXPECT(proc_start(&g_server, (const char *[]){"doppel-diffuser", "serve", "--unet", UNET, "--bind", bind, "--out", out,
                                                  "--batch", "4", "--max-samples", "50", "--timeout", "2", NULL}) == 0,
           "cannot start doppel-diffuser serve");
    if (tl_current_failed()) return;
    g_started = 1;
    void *c = dealer();
    Received r;
    if (c && ping(c, "hello", &r, 30000)) {  // the DEALER queues the ping until the server is up
        const Frame *f = &r.frame;
        json_t *users = json_object_get(f->meta, "users"), *lat = json_object_get(f->meta, "latent");
        EXPECT(json_array_size(users) == 3 && !strcmp(json_string_value(json_array_get(users, 2)), "ID_3"), "ping: users");
        EXPECT(json_integer_value(json_array_get(lat, 0)) == 4 && json_integer_value(json_array_get(lat, 1)) == 16,
               "ping: latent shape");
        json_t *dflt = json_object_get(f->meta, "defaults");
        EXPECT(dflt && !strcmp(json_string_value(json_object_get(dflt, "sampler")), "dpmpp2m") &&
                   !strcmp(json_string_value(json_object_get(dflt, "deliver")), "out"),
               "ping: defaults (dpmpp2m; deliver out with --out)");
        EXPECT(json_is_null(json_object_get(f->meta, "busy")), "an idle server says busy: null");
        received_release(&r);
    }
    zsock_close(&c);
}

// 2 users x 3 samples in batches of 4 come back in 2 reply frames; `sample --cache` gives the same bits
static void test_request_matches_sample(void) {
    if (!g_started) return tl_fail(__FILE__, __LINE__, "needs test_start_and_ping's server");
    void *c = dealer();
    json_t *id = json_integer(7);
    send_request(c, json_pack("{s:O, s:[s, s], s:i, s:i, s:i, s:s}", "id", id, "users", "ID_1", "ID_3", "per_user", 3,
                              "seed", 5, "steps", 3, "deliver", "reply"));
    Result *res = malloc(sizeof(Result));
    collect(c, id, res, 0, 60);
    EXPECT(res->done && res->accepted == 1 && res->total == 6 && res->n == 6 && res->frames == 2 && !res->foreign &&
               res->done_seq == 2 && res->done_total == 6,
           "accepted %d (total %lld), %lld samples in %d frames, done %d (seq %lld, total %lld), error '%s'", res->accepted,
           (long long)res->total, (long long)res->n, res->frames, res->done, (long long)res->done_seq,
           (long long)res->done_total, res->message);
    json_t *m = res->batch_meta;
    EXPECT(m && !strcmp(json_string_value(json_object_get(m, "sampler")), "dpmpp2m") &&
               json_integer_value(json_object_get(m, "steps")) == 3 && json_array_size(json_object_get(m, "users")) == 3 &&
               json_equal(json_object_get(m, "id"), id),
           "batch meta lacks sample's keys or the id");
    char *out, *log;
    int rc = proc_run((const char *[]){"doppel-diffuser", "sample", "--unet", UNET, "--users", "ID_1,ID_3", "--per-user", "3",
                                       "--seed", "5", "--steps", "3", "--batch", "4", "--cache", OUT "/sample.safetensors", NULL},
                      60, &out, &log);
    EXPECT(rc == 0, "sample: rc %d\n%s", rc, log);
    free(out), free(log);
    SafeTensors st;
    char err[512];
    if (!tl_current_failed() && res->n == 6) {
        EXPECT(st_load(&st, OUT "/sample.safetensors", err, sizeof(err)) == 0, "%s", err);
        const StTensor *l = tl_current_failed() ? NULL : st_find(&st, "latent"), *b = l ? st_find(&st, "label") : NULL,
                       *s = b ? st_find(&st, "seed") : NULL;
        EXPECT(s && l->nbytes == 6 * PER * sizeof(float), "the cache lacks latent/label/seed (6 samples)");
        if (s) {
            EXPECT(memcmp(l->data, res->lat, l->nbytes) == 0, "serve's latents differ from sample's");
            EXPECT_CLOSE("latents (serve vs sample)", res->lat, (const float *)l->data, 6 * PER, 0, 0);
            EXPECT(memcmp(b->data, res->lab, 6 * 4) == 0 && memcmp(s->data, res->seed, 6 * 8) == 0, "labels or seeds differ");
            EXPECT(res->lab[0] == 0 && res->lab[5] == 2 && res->seed[3] == 2000005, "labels %d..%d, seed[3] %lld", res->lab[0],
                   res->lab[5], (long long)res->seed[3]);
        }
        st_free(&st);
    }
    result_free(res), free(res);
    json_decref(id);
    zsock_close(&c);
}

// each bad request gets an error naming the problem (with its id when it had one); serving goes on
static void test_bad_requests(void) {
    if (!g_started) return tl_fail(__FILE__, __LINE__, "needs test_start_and_ping's server");
    void *c = dealer();
    struct { json_t *meta; const char *want; } cases[] = {
        {json_pack("{s:s, s:[s]}", "id", "u", "users", "ID_9"), "ID_9"},
        {json_pack("{s:s, s:s}", "id", "u2", "users", "ID_1,7"), "'7'"},
        {json_pack("{s:s, s:i}", "id", "s", "steps", 0), "steps"},
        {json_pack("{s:i}", "per_user", 2), "\"id\""},
        {json_pack("{s:s, s:s}", "id", "k", "sampler", "euler"), "sampler"},
        {json_pack("{s:s, s:i}", "id", "t", "per-user", 2), "per-user"},
        {json_pack("{s:s, s:s, s:i}", "id", "m", "users", "all", "per_user", 20), "max-samples"},
        {json_pack("{s:s, s:s}", "id", "d", "deliver", "email"), "deliver"},
        {json_pack("{s:s, s:s}", "id", "p", "per_user", "three"), "per_user"},
        {json_pack("{s:s, s:s, s:b}", "id", "ka", "sampler", "ddim", "karras", 1), "karras"},
        {json_pack("{s:s, s:i}", "id", "pi", "ping", 1), "ping"},
        {json_pack("{s:f, s:b}", "id", 1.5, "ping", 1), "\"id\""},
    };
    int n = (int)(sizeof(cases) / sizeof(cases[0]));
    for (int i = 0; i < n; i++) {
        json_t *id = json_incref(json_object_get(cases[i].meta, "id"));
        send_request(c, cases[i].meta);
        Received r;
        if (!next_frame(c, &r, REPLY_MS, cases[i].want)) {
            json_decref(id);
            break;
        }
        const Frame *f = &r.frame;
        const char *msg = meta_str(f, "message");
        EXPECT(f->kind == FRAME_ERROR && !strcmp(status(f), "error") && msg && strstr(msg, cases[i].want),
               "case %d: a '%s' frame, message '%s' (wanted one naming %s)", i, frame_kind_name(f->kind), msg ? msg : "(none)",
               cases[i].want);
        int usable = json_is_integer(id) || json_is_string(id);  // other ids are not echoed
        EXPECT(usable ? json_equal(json_object_get(f->meta, "id"), id) : !json_object_get(f->meta, "id"),
               "case %d: the id is echoed if and only if it is a string or an integer", i);
        received_release(&r);
        json_decref(id);
    }
    Received r;
    if (ping(c, "after-errors", &r, REPLY_MS)) received_release(&r);
    zsock_close(&c);
}

// bytes that are no frame, and a 2-part message: an error each, then pings still work
static void test_garbage_frame_skipped(void) {
    if (!g_started) return tl_fail(__FILE__, __LINE__, "needs test_start_and_ping's server");
    void *c = dealer();
    EXPECT(zmq_send(c, "garbage!", 8, 0) == 8, "zmq_send");
    Received r;
    if (next_frame(c, &r, REPLY_MS, "an error for a garbage frame")) {
        const char *msg = meta_str(&r.frame, "message");
        EXPECT(r.frame.kind == FRAME_ERROR && msg && strstr(msg, "bad frame"), "garbage: '%s'", msg ? msg : "(none)");
        received_release(&r);
    }
    EXPECT(zmq_send(c, "a", 1, ZMQ_SNDMORE) == 1 && zmq_send(c, "b", 1, 0) == 1, "zmq_send multipart");
    if (next_frame(c, &r, REPLY_MS, "an error for a 2-part message")) {
        const char *msg = meta_str(&r.frame, "message");
        EXPECT(r.frame.kind == FRAME_ERROR && msg && strstr(msg, "2 parts"), "2 parts: '%s'", msg ? msg : "(none)");
        received_release(&r);
    }
    if (ping(c, "after-garbage", &r, REPLY_MS)) received_release(&r);
    char *log = proc_read(g_server.err);
    EXPECT(strstr(log, "skipped a bad frame"), "the server did not report the bad frame on stderr:\n%s", log);
    free(log);
    zsock_close(&c);
}

// a client that disconnects mid-request: ROUTER_MANDATORY makes the send fail, the request is
// abandoned and logged, and the next client is served
static void test_client_vanishes(void) {
    if (!g_started) return tl_fail(__FILE__, __LINE__, "needs test_start_and_ping's server");
    void *c = dealer();
    send_request(c, json_pack("{s:s, s:s, s:i, s:i, s:s}", "id", "gone", "users", "ID_1", "per_user", 8, "steps", 2,
                              "deliver", "reply"));
    Received r;
    if (next_frame(c, &r, REPLY_MS, "accepted")) received_release(&r);
    zsock_close(&c);
    c = dealer();
    if (ping(c, "after-gone", &r, 20000)) received_release(&r);
    double end = cli_now() + 20;
    char *log = NULL;
    do {
        free(log), log = proc_read(g_server.err);
    } while (!strstr(log, "\"gone\": abandoned") && cli_now() < end && !usleep(50000));
    EXPECT(strstr(log, "\"gone\": abandoned") && strstr(log, "disconnected"), "the vanished client's request:\n%s", log);
    free(log);
    zsock_close(&c);
}

// A asks for 12 samples, B pings while A's request runs, then asks for 2; each sees only its own ids
static void test_two_clients(void) {
    if (!g_started) return tl_fail(__FILE__, __LINE__, "needs test_start_and_ping's server");
    void *a = dealer(), *b = dealer();
    json_t *ida = json_string("a-1"), *idb = json_string("b-1");
    send_request(a, json_pack("{s:O, s:s, s:i, s:i, s:s, s:i, s:s}", "id", ida, "users", "all", "per_user", 4, "steps", 2,
                              "sampler", "ddim", "seed", 1, "deliver", "reply"));
    Received r;
    if (next_frame(a, &r, REPLY_MS, "A's accepted")) {
        EXPECT(!strcmp(status(&r.frame), "accepted") && json_equal(json_object_get(r.frame.meta, "id"), ida), "A: %s",
               status(&r.frame));
        received_release(&r);
    }
    if (ping(b, "b-ping", &r, REPLY_MS)) {  // answered between sampler steps of A's request
        EXPECT(json_equal(json_object_get(r.frame.meta, "busy"), ida), "a ping during A's request should say busy: \"a-1\"");
        received_release(&r);
    }
    send_request(b, json_pack("{s:O, s:[i], s:i, s:i, s:s}", "id", idb, "users", 1, "per_user", 2, "steps", 2, "deliver",
                              "reply"));
    Result *ra = malloc(sizeof(Result)), *rb = malloc(sizeof(Result));
    collect(b, idb, rb, 0, 60);  // B's request waits behind A's (A's frames queue on A's socket)
    collect(a, ida, ra, 1, 60);
    EXPECT(ra->done && ra->n == 12 && ra->frames == 3 && ra->done_seq == 3 && !ra->foreign, "A: %lld samples in %d frames, %d foreign, '%s'",
           (long long)ra->n, ra->frames, ra->foreign, ra->message);
    EXPECT(rb->done && rb->n == 2 && rb->lab[0] == 1 && rb->lab[1] == 1 && !rb->foreign,
           "B: %lld samples, labels %d %d, %d foreign, '%s'", (long long)rb->n, rb->lab[0], rb->lab[1], rb->foreign, rb->message);
    result_free(ra), result_free(rb), free(ra), free(rb);
    json_decref(ida), json_decref(idb);
    zsock_close(&a), zsock_close(&b);
}

// deliver "out" (the default with --out): no decoder -> an error after --timeout; a PULL gets the batches
static void test_deliver_out(void) {
    if (!g_started) return tl_fail(__FILE__, __LINE__, "needs test_start_and_ping's server");
    void *c = dealer();
    json_t *id1 = json_string("o-1"), *id2 = json_string("o-2");
    send_request(c, json_pack("{s:O, s:s, s:i, s:i}", "id", id1, "users", "ID_2", "per_user", 1, "steps", 2));
    Result *res = malloc(sizeof(Result));
    collect(c, id1, res, 0, 20);
    EXPECT(res->error && strstr(res->message, "no decoder"), "no decoder: error %d '%s'", res->error, res->message);
    result_free(res);
    char ep[64], err[512];
    snprintf(ep, sizeof(ep), ">tcp://127.0.0.1:%d", g_out_port);
    void *pull = zsock_open(ZMQ_PULL, ep, 0, err, sizeof(err));
    EXPECT(pull, "PULL %s: %s", ep, err);
    send_request(c, json_pack("{s:O, s:s, s:i, s:i, s:i}", "id", id2, "users", "ID_2", "per_user", 5, "steps", 2, "seed", 3));
    collect(c, id2, res, 0, 60);
    EXPECT(res->done && res->frames == 0 && res->done_seq == 2 && res->done_total == 5,
           "o-2: done %d (seq %lld, total %lld), %d reply batches, '%s'", res->done, (long long)res->done_seq,
           (long long)res->done_total, res->frames, res->message);
    int64_t n = 0;
    for (int k = 0; k < 2 && pull; k++) {
        Received r;
        if (!next_frame(pull, &r, REPLY_MS, "a batch on --out")) break;
        const Frame *f = &r.frame;
        const WireTensor *l = frame_tensor(f, WIRE_LATENT), *s = frame_tensor(f, WIRE_SEED);
        EXPECT(f->kind == FRAME_BATCH && l && s && json_equal(json_object_get(f->meta, "request_id"), id2) &&
                   json_integer_value(json_object_get(f->meta, "request_seq")) == k && frame_check_batch(f, err, sizeof(err)) == 0,
               "--out batch %d: kind %s, request_id/request_seq/tensors", k, frame_kind_name(f->kind));
        if (l) n += l->shape[0];
        if (s && k == 0) {
            int64_t s0;
            memcpy(&s0, s->data, 8);
            EXPECT(s0 == 1000003, "first seed %lld, expected 3 + 1000000 * 1", (long long)s0);
        }
        received_release(&r);
    }
    EXPECT(n == 5, "--out carried %lld samples, expected 5", (long long)n);
    result_free(res), free(res);
    json_decref(id1), json_decref(id2);
    zsock_close(&pull), zsock_close(&c);
}

static void test_sigterm(void) {
    if (!g_started) return tl_fail(__FILE__, __LINE__, "needs test_start_and_ping's server");
    kill(g_server.pid, SIGTERM);
    int rc = proc_wait(&g_server, 15);
    g_started = 0;
    char *log = proc_read(g_server.err);
    EXPECT(rc == 0 && strstr(log, "stopped"), "SIGTERM: rc %d\n%s", rc, log);
    free(log);
}

static void test_cli(void) {
    char *out, *err;
    int rc = proc_run((const char *[]){"doppel-diffuser", "serve", "--help", NULL}, 10, &out, &err);
    EXPECT(rc == 0 && strstr(out, "examples") && strstr(out, "--bind"), "serve --help: rc %d", rc);
    free(out), free(err);
    rc = proc_run((const char *[]){"doppel-diffuser", "serve", NULL}, 10, &out, &err);
    EXPECT(rc == 2 && strstr(err, "--unet"), "serve without --unet: rc %d\n%s", rc, err);
    free(out), free(err);
    rc = proc_run((const char *[]){"doppel-diffuser", "serve", "--unet", OUT "/nope", NULL}, 10, &out, &err);
    EXPECT(rc == 1 && strstr(err, OUT "/nope"), "missing UNet folder: rc %d\n%s", rc, err);
    free(out), free(err);
}

int main(void) {
    RUN(test_start_and_ping);
    RUN(test_request_matches_sample);
    RUN(test_bad_requests);
    RUN(test_garbage_frame_skipped);
    RUN(test_client_vanishes);
    RUN(test_two_clients);
    RUN(test_deliver_out);
    RUN(test_sigterm);
    RUN(test_cli);
    if (g_started) kill(g_server.pid, SIGKILL), proc_wait(&g_server, 5);
    zsock_term();
    return tl_finish();
}
