// serve.c: doppel-diffuser serve — a long-running generator answering requests on a ROUTER socket
// (docs/diffuser.md, "## serve"). Requests are checked the moment they arrive (an error reply
// at once, or "accepted") and queued (FIFO, at most SERVE_MAX_QUEUED); one request at a time is
// generated batch by batch with the per-sample seeds of `sample`, so `serve` and `sample` with
// the same settings give the same latents bit for bit. The ROUTER is read between sampler steps
// and while a send waits, so pings (clients' heartbeats) are answered while a long request runs.
//
// Messages on the ROUTER are [identity][payload] from a DEALER, [identity][empty][payload] from
// a REQ (or a DEALER that imitates one); replies carry the same envelope back. The payload is one
// protocol-v1 frame (docs/protocol.md).
#include <errno.h>
#include <getopt.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "check.h"
#include "cli/cli.h"
#include "net/zsock.h"
#include "diffuser.h"

#define SERVE_MAX_QUEUED 16     // generation requests waiting behind the current one; more: "busy"
#define SERVE_SERVICE_MAX 64    // messages handled per look at the ROUTER (the rest wait for the next)
#define SERVE_MAX_ID_BYTES 256  // a string request id
#define SERVE_PER_USER_DEFAULT 8

// ---- options ----
typedef struct {
    const char *unet, *bind, *out, *vae, *device;
    int batch, no_ema, threads, timeout_s;
    long max_samples;
} ServeOptions;

static const char *USAGE_SERVE =
    "usage: doppel-diffuser serve --unet DIR [options]\n"
    "\n"
    "examples:\n"
    "  doppel-diffuser serve --unet runs/unet &                       # requests on tcp://127.0.0.1:5560\n"
    "  python3 -c 'see docs/diffuser.md: a DEALER sends {\"id\": 1, \"users\": [\"ID_3\"], \"per_user\": 4}'\n"
    "  doppel-diffuser serve --unet runs/unet --bind @tcp://*:5560 --out @tcp://127.0.0.1:5556 &\n"
    "  doppel-decoder --vae runs/vae --in tcp://127.0.0.1:5556 --png runs/generated   # latents -> PNGs\n"
    "\n"
    "Answers 'request' frames on a ROUTER socket (clients connect a DEALER; a REQ for pings only):\n"
    "  {\"id\": 7, \"users\": \"all\"|[\"ID_1\", 2]|\"ID_1,ID_3\", \"per_user\": 4, \"seed\": 0, \"sampler\": \"dpmpp2m\",\n"
    "   \"steps\": 20, \"guidance\": 4, \"eta\": 0, \"karras\": false, \"deliver\": \"reply\"|\"out\"}   or   {\"id\": 8, \"ping\": true}\n"
    "Replies: status 'accepted' at once, the latents (kind 'reply', with 'id' in meta, or to --out's\n"
    "decoders with 'request_id'), then status 'done'; mistakes get an 'error' frame. Requests run one\n"
    "at a time in arrival order; pings are answered at once, even while a request runs.\n"
    "\n"
    "  --unet DIR           the UNet folder (doppel-diffuser train); its EMA weights unless --no-ema\n"
    "  --bind EP            the ROUTER for requests (@tcp://127.0.0.1:5560; bind * to serve other hosts)\n"
    "  --out EP             PUSH latents of 'deliver: out' requests to doppel-decoder(s) (bare: bind);\n"
    "                       with --out, 'out' is the default delivery, else 'reply'\n"
    "  --batch B            samples per UNet batch and per frame (32)\n"
    "  --max-samples N      refuse requests for more than N samples (100000)\n"
    "  --timeout S          give up a request when its client or no decoder takes a frame for S seconds (300)\n"
    "  --vae DIR            refuse to start unless this VAE fits the UNet (channels, size, users)\n"
    "  --device cpu|cuda|auto  where the UNet runs (auto: the GPU when there is one)\n"
    "  --no-ema  --threads N  --help\n";

static ServeOptions parse_serve(int argc, char **argv) {
    ServeOptions o = {.device = "auto", .bind = "@tcp://127.0.0.1:5560", .batch = 32, .timeout_s = 300, .max_samples = 100000};
    enum { O_UNET = 256, O_BIND, O_OUT, O_BATCH, O_NOEMA, O_VAE, O_MAX, O_THREADS, O_TIMEOUT, O_DEVICE, O_HELP };
    static const struct option opts[] = {
        {"unet", 1, 0, O_UNET}, {"bind", 1, 0, O_BIND}, {"out", 1, 0, O_OUT}, {"batch", 1, 0, O_BATCH},
        {"no-ema", 0, 0, O_NOEMA}, {"vae", 1, 0, O_VAE}, {"max-samples", 1, 0, O_MAX}, {"threads", 1, 0, O_THREADS},
        {"timeout", 1, 0, O_TIMEOUT}, {"device", 1, 0, O_DEVICE}, {"help", 0, 0, O_HELP}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_UNET: o.unet = optarg; break;
        case O_BIND: o.bind = optarg; break;
        case O_OUT: o.out = optarg; break;
        case O_BATCH: o.batch = (int)cli_parse_long(TOOL, "--batch", optarg, 1, 65536); break;
        case O_NOEMA: o.no_ema = 1; break;
        case O_VAE: o.vae = optarg; break;
        case O_MAX: o.max_samples = cli_parse_long(TOOL, "--max-samples", optarg, 1, 100000000); break;
        case O_THREADS: o.threads = (int)cli_parse_long(TOOL, "--threads", optarg, 1, 1024); break;
        case O_TIMEOUT: o.timeout_s = (int)cli_parse_long(TOOL, "--timeout", optarg, 1, 1000000); break;
        case O_DEVICE: o.device = cli_parse_device(TOOL, optarg); break;
        case O_HELP: fputs(USAGE_SERVE, stdout); exit(EXIT_OK);
        default: cli_usage_error(TOOL, "unknown option for 'serve'");
        }
    }
    if (optind < argc) cli_usage_error(TOOL, "unexpected argument '%s'", argv[optind]);
    if (!o.unet) cli_usage_error(TOOL, "--unet DIR is required");
    if (o.threads) omp_set_num_threads(o.threads);
    return o;
}

// ---- the server ----
typedef struct {
    unsigned char id[256];  // the ROUTER's routing id of the client (1..255 bytes)
    size_t len;
    int delim;              // the client sent an empty delimiter part (REQ): replies carry one too
} Peer;

typedef struct {
    Peer peer;
    json_t *id;            // the client's request id (string or integer), echoed in every reply
    int32_t *users;        // (n_users) labels, in request order
    int n_users, per_user;
    uint64_t seed;
    SampleConfig sc;
    int to_out;            // deliver to --out's decoders instead of replying
    int64_t N;             // n_users * per_user
} Request;

typedef struct {
    ServeOptions o;
    UNetFolder u;
    int used_ema, U;
    void *router, *out;
    Request *queue[SERVE_MAX_QUEUED];  // FIFO: queue[(head + i) % SERVE_MAX_QUEUED], i < queued
    int head, queued;
    const Request *current;            // being generated, NULL when idle
    uint64_t out_seq;                  // frames sent on --out (one stream for the server's life)
} Server;

static void peer_name(const Peer *p, char *buf, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < p->len && k + 3 < n; i++) k += (size_t)snprintf(buf + k, n - k, "%02x", p->id[i]);
    buf[k] = 0;
}

// the id for log lines: "7", "\"job-3\"" or "(none)"
static void id_text(const json_t *id, char *buf, size_t n) {
    if (json_is_integer(id)) snprintf(buf, n, "%lld", (long long)json_integer_value(id));
    else if (json_is_string(id)) snprintf(buf, n, "\"%.64s\"", json_string_value(id));
    else snprintf(buf, n, "(none)");
}

static void request_free(Request *r) {
    if (!r) return;
    json_decref(r->id);
    free(r->users);
    free(r);
}

// One attempt to send payload to a peer without blocking: 0, or the errno (EAGAIN: its queue is
// full; EHOSTUNREACH: it is gone). With ZMQ_ROUTER_MANDATORY the first part fails for either
// and nothing is sent, so the attempt can be repeated.
static int send_to_peer(void *router, const Peer *p, const void *buf, size_t len) {
    if (zmq_send(router, p->id, p->len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return errno;
    if (p->delim && zmq_send(router, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return errno;
    if (zmq_send(router, buf, len, ZMQ_DONTWAIT) < 0) return errno;
    return 0;
}

// Control replies (accepted, done, errors, pings) go out at once or not at all: a client whose
// queue is full is not reading, and a gone client cannot be told.
static void send_now(Server *s, const Peer *p, const Frame *f) {
    void *buf;
    size_t len;
    char err[256], who[520];
    if (frame_encode(f, &buf, &len, err, sizeof(err))) {
        fprintf(stderr, "doppel-diffuser: cannot encode a reply: %s\n", err);
        return;
    }
    int e = send_to_peer(s->router, p, buf, len);
    free(buf);
    if (e) {
        peer_name(p, who, sizeof(who));
        fprintf(stderr, "doppel-diffuser: a '%s' reply to client %s was dropped: %s\n", frame_kind_name(f->kind), who,
                e == EHOSTUNREACH ? "the client is gone" : e == EAGAIN ? "its queue is full (it is not reading)" : zmq_strerror(e));
    }
}

// kind "reply" with meta {id, status, ...extra} (extra is consumed)
static void reply_status(Server *s, const Peer *p, const json_t *id, const char *status, uint64_t seq, int64_t total,
                         json_t *extra) {
    json_t *meta = json_object();
    if (id) json_object_set(meta, "id", (json_t *)id);
    json_object_set_new(meta, "status", json_string(status));
    if (extra) json_object_update(meta, extra), json_decref(extra);
    Frame f;
    frame_init(&f, FRAME_REPLY, "diffuser", seq);
    if (total >= 0) f.has_total = 1, f.total = (uint64_t)total;
    frame_set_meta(&f, meta);
    send_now(s, p, &f);
    frame_release(&f);
    json_decref(meta);
}

// kind "error" with meta {id (if any), status: "error", message}; also logged
__attribute__((format(printf, 4, 5))) static void reply_error(Server *s, const Peer *p, const json_t *id, const char *fmt, ...) {
    char msg[1024], idt[80];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    id_text(id, idt, sizeof(idt));
    fprintf(stderr, "doppel-diffuser: request %s: %s\n", idt, msg);
    json_t *meta = json_object();
    if (id) json_object_set(meta, "id", (json_t *)id);
    json_object_set_new(meta, "status", json_string("error"));
    json_object_set_new(meta, "message", json_string(msg));
    Frame f;
    frame_init(&f, FRAME_ERROR, "diffuser", 0);
    frame_set_meta(&f, meta);
    send_now(s, p, &f);
    frame_release(&f);
    json_decref(meta);
}

// ---- requests ----
static const char *const REQUEST_KEYS[] = {"id", "ping", "users", "per_user", "seed", "sampler", "steps", "guidance",
                                           "eta", "karras", "deliver", NULL};

static int get_int(const json_t *meta, const char *key, long long dflt, long long lo, long long hi, long long *out,
                   char *err, size_t errlen) {
    const json_t *v = json_object_get(meta, key);
    *out = dflt;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v)) return errf(err, errlen, "\"%s\" must be an integer in %lld..%lld", key, lo, hi);
    long long x = json_integer_value(v);
    if (x < lo || x > hi) return errf(err, errlen, "\"%s\" is %lld, outside %lld..%lld", key, x, lo, hi);
    *out = x;
    return 0;
}

static int get_num(const json_t *meta, const char *key, double dflt, double lo, double hi, double *out, char *err,
                   size_t errlen) {
    const json_t *v = json_object_get(meta, key);
    *out = dflt;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return errf(err, errlen, "\"%s\" must be a number in %g..%g", key, lo, hi);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) return errf(err, errlen, "\"%s\" is %g, outside %g..%g", key, x, lo, hi);
    *out = x;
    return 0;
}

// "all", "ID_1,ID_3" (names or indices, as --users), or an array of names and indices
static int parse_users(const Server *s, const json_t *v, int32_t **out, char *err, size_t errlen) {
    char e[512];
    *out = NULL;
    if (!v || json_is_null(v) || json_is_string(v)) {
        int n = diffuser_parse_users(json_is_string(v) ? json_string_value(v) : "all", s->u.users, s->U, out, e, sizeof(e));
        return n < 0 ? errf(err, errlen, "\"users\": %s", e) : n;
    }
    if (!json_is_array(v) || !json_array_size(v))
        return errf(err, errlen, "\"users\" must be \"all\", a string like \"ID_1,ID_3\" or a non-empty array of names and indices");
    size_t n = json_array_size(v);
    if (n > 1000000) return errf(err, errlen, "\"users\" lists %zu users", n);
    int32_t *lab = xmalloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) {
        const json_t *x = json_array_get(v, i);
        int found = -1;
        if (json_is_integer(x) && json_integer_value(x) >= 0 && json_integer_value(x) < s->U) found = (int)json_integer_value(x);
        for (size_t k = 0; json_is_string(x) && k < json_array_size(s->u.users); k++)
            if (!strcmp(json_string_value(json_array_get(s->u.users, k)), json_string_value(x))) found = (int)k;
        if (found < 0) {
            free(lab);
            if (json_is_string(x))
                return errf(err, errlen, "\"users\"[%zu]: unknown user '%.100s' (ping for the %d users this UNet knows)", i,
                            json_string_value(x), s->U);
            if (json_is_integer(x))
                return errf(err, errlen, "\"users\"[%zu]: label %lld is outside 0..%d", i, (long long)json_integer_value(x), s->U - 1);
            return errf(err, errlen, "\"users\"[%zu] must be a user name or a label index", i);
        }
        lab[i] = found;
    }
    *out = lab;
    return (int)n;
}

// A generation request from its meta (id already checked); 0, or -1 + err for the client.
static int parse_request(const Server *s, const json_t *meta, Request *r, char *err, size_t errlen) {
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)meta, key, v) {
        int known = 0;
        for (int i = 0; REQUEST_KEYS[i]; i++) known |= !strcmp(key, REQUEST_KEYS[i]);
        if (!known)
            return errf(err, errlen, "unknown key \"%.64s\" (a request takes id, users, per_user, seed, sampler, steps, "
                        "guidance, eta, karras, deliver; or id and ping)", key);
    }
    long long per_user, seed, steps;
    double guidance, eta;
    if (get_int(meta, "per_user", SERVE_PER_USER_DEFAULT, 1, s->o.max_samples, &per_user, err, errlen) ||
        get_int(meta, "seed", 0, 0, (long long)(~0ULL >> 1), &seed, err, errlen) ||
        get_int(meta, "steps", 20, 1, SCHED_MAX_STEPS, &steps, err, errlen) ||
        get_num(meta, "guidance", SAMPLE_GUIDANCE_DEFAULT, 0, 1e3, &guidance, err, errlen) || get_num(meta, "eta", 0, 0, 1e3, &eta, err, errlen))
        return -1;
    const json_t *k = json_object_get(meta, "karras");
    if (k && !json_is_boolean(k) && !json_is_null(k)) return errf(err, errlen, "\"karras\" must be true or false");
    SamplerKind kind = SAMPLER_DPMPP_2M;
    const json_t *sm = json_object_get(meta, "sampler");
    if (sm && !json_is_null(sm) && (!json_is_string(sm) || sampler_kind_parse(json_string_value(sm), &kind)))
        return errf(err, errlen, "\"sampler\" must be \"ddpm\", \"ddim\" or \"dpmpp2m\"");
    const json_t *d = json_object_get(meta, "deliver");
    r->to_out = s->out != NULL;
    if (d && !json_is_null(d)) {
        if (!json_is_string(d) || (strcmp(json_string_value(d), "reply") && strcmp(json_string_value(d), "out")))
            return errf(err, errlen, "\"deliver\" must be \"reply\" or \"out\"");
        r->to_out = !strcmp(json_string_value(d), "out");
        if (r->to_out && !s->out)
            return errf(err, errlen, "\"deliver\": \"out\" but this server has no --out (no decoders); ask for \"reply\"");
    }
    r->sc = (SampleConfig){.guidance = (float)guidance};
    if (sampler_init(&r->sc.sampler, &s->u.sched, kind, (int)steps, (float)eta, json_is_true(k), err, errlen)) return -1;
    int n = parse_users(s, json_object_get(meta, "users"), &r->users, err, errlen);
    if (n < 0) return -1;
    r->n_users = n, r->per_user = (int)per_user, r->seed = (uint64_t)seed;
    r->N = (int64_t)n * per_user;
    if (r->N > s->o.max_samples)
        return errf(err, errlen, "%d users x %lld = %lld samples is more than this server's --max-samples %ld; split the request",
                    n, per_user, (long long)r->N, s->o.max_samples);
    return 0;
}

// what a ping answers: the model, the defaults, the load
static json_t *ping_info(const Server *s) {
    const UNetConfig *c = &s->u.model.cfg;
    json_t *m = json_object();
    json_object_set_new(m, "stage", json_string("diffuser"));
    json_object_set(m, "users", s->u.users ? s->u.users : json_null());
    json_object_set_new(m, "n_users", json_integer(s->U));
    json_object_set_new(m, "unet", json_string(s->o.unet));
    json_t *d = json_object_get(s->u.config, "doppel");
    json_t *step = d ? json_object_get(d, "step") : NULL, *vae = d ? json_object_get(d, "vae") : NULL;
    json_t *sf = vae ? json_object_get(vae, "scaling_factor") : NULL;
    json_object_set(m, "unet_step", step ? step : json_null());
    if (json_is_number(sf)) json_object_set(m, "scaling_factor", sf);
    json_object_set_new(m, "ema", json_boolean(s->used_ema));
    json_object_set_new(m, "latent", json_pack("[i, i, i]", c->in_channels, c->sample_size, c->sample_size));
    json_object_set_new(m, "defaults", json_pack("{s:s, s:i, s:f, s:f, s:b, s:i, s:i, s:s}", "sampler", "dpmpp2m", "steps", 20,
                                                 "guidance", SAMPLE_GUIDANCE_DEFAULT, "eta", 0.0, "karras", 0, "per_user", SERVE_PER_USER_DEFAULT,
                                                 "seed", 0, "deliver", s->out ? "out" : "reply"));
    json_object_set_new(m, "batch", json_integer(s->o.batch));
    json_object_set_new(m, "max_samples", json_integer(s->o.max_samples));
    json_object_set_new(m, "out", json_boolean(s->out != NULL));
    json_object_set(m, "busy", s->current ? s->current->id : json_null());
    json_object_set_new(m, "queued", json_integer(s->queued));
    return m;
}

// One message's payload from peer p: a ping is answered, a good request queued and accepted,
// anything else gets an error reply.
static void handle_payload(Server *s, const Peer *p, const void *buf, size_t len) {
    Frame f;
    char err[512], who[520];
    if (frame_decode(&f, buf, len, NULL, err, sizeof(err))) {
        peer_name(p, who, sizeof(who));
        fprintf(stderr, "doppel-diffuser: skipped a bad frame (%zu bytes) from client %s: %s\n", len, who, err);
        char msg[640];
        snprintf(msg, sizeof(msg), "bad frame (%zu bytes), skipped: %s", len, err);
        json_t *meta = json_pack("{s:s, s:s}", "status", "error", "message", msg);
        Frame e;
        frame_init(&e, FRAME_ERROR, "diffuser", 0);
        frame_set_meta(&e, meta);
        send_now(s, p, &e);
        frame_release(&e);
        json_decref(meta);
        return;
    }
    const json_t *meta = f.meta, *id = meta ? json_object_get(meta, "id") : NULL;
    int id_ok = json_is_integer(id) || (json_is_string(id) && json_string_length(id) >= 1 &&
                                        json_string_length(id) <= SERVE_MAX_ID_BYTES);
    if (f.kind != FRAME_REQUEST)
        reply_error(s, p, id_ok ? id : NULL, "serve takes 'request' frames, not '%s'", frame_kind_name(f.kind));
    else if (!id_ok)
        reply_error(s, p, NULL, "%s", id ? "\"id\" must be an integer or a string of 1..256 bytes"
                                         : "a request needs an \"id\" (a string or an integer) in meta; every reply echoes it");
    else if (json_object_get(meta, "ping") && !json_is_boolean(json_object_get(meta, "ping")))
        reply_error(s, p, id, "\"ping\" must be true or false");
    else if (json_is_true(json_object_get(meta, "ping")))
        reply_status(s, p, id, "ok", 0, -1, ping_info(s));
    else if (s->queued == SERVE_MAX_QUEUED)
        reply_error(s, p, id, "busy: %d requests are queued; retry later", s->queued);
    else {
        Request *r = xcalloc(1, sizeof(Request));
        if (parse_request(s, meta, r, err, sizeof(err))) {
            reply_error(s, p, id, "%s", err);
            request_free(r);
        } else {
            r->peer = *p;
            r->id = json_deep_copy(id);
            s->queue[(s->head + s->queued++) % SERVE_MAX_QUEUED] = r;
            int ahead = s->queued - 1 + (s->current != NULL);
            reply_status(s, p, id, "accepted", 0, r->N, json_pack("{s:I, s:i}", "total", (json_int_t)r->N, "ahead", ahead));
        }
    }
    frame_release(&f);
}

// Reads one message from the ROUTER without waiting: 1 handled, 0 none.
static int service_one(Server *s) {
    zmq_msg_t parts[4], extra;  // [identity][empty]?[payload]; parts beyond 4 are counted and dropped
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t *m = n < 4 ? &parts[n] : &extra;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, s->router, ZMQ_DONTWAIT) < 0) {  // EAGAIN before the first part: nothing there
            zmq_msg_close(m);
            break;
        }
        more = zmq_msg_more(m);
        if (n >= 4) zmq_msg_close(m);
        n++;
    }
    if (!n) return 0;
    Peer p = {.len = zmq_msg_size(&parts[0])};
    memcpy(p.id, zmq_msg_data(&parts[0]), p.len < sizeof(p.id) ? p.len : sizeof(p.id));
    if (n == 3 && zmq_msg_size(&parts[1]) == 0) p.delim = 1;
    if (n == 2 || (n == 3 && p.delim)) {
        handle_payload(s, &p, zmq_msg_data(&parts[n - 1]), zmq_msg_size(&parts[n - 1]));
    } else {
        char who[520];
        peer_name(&p, who, sizeof(who));
        fprintf(stderr, "doppel-diffuser: skipped a %d-part message from client %s: send one frame per message\n", n - 1, who);
        if (n > 1) reply_error(s, &p, NULL, "bad message: %d parts; send one frame (one msgpack map) per ZeroMQ message", n - 1);
    }
    for (int i = 0; i < n && i < 4; i++) zmq_msg_close(&parts[i]);
    return 1;
}

// Waits up to timeout_ms for the ROUTER, then handles what is there (at most SERVE_SERVICE_MAX).
static void service(Server *s, int timeout_ms) {
    zmq_pollitem_t it = {.socket = s->router, .events = ZMQ_POLLIN};
    if (zmq_poll(&it, 1, timeout_ms) <= 0) return;
    for (int i = 0; i < SERVE_SERVICE_MAX && service_one(s); i++) {}
}

static void on_step(void *user, int step, int steps) {
    (void)step, (void)steps;
    service(user, 0);
}

// Sends an encoded frame to --out (to_out) or to the peer, waiting up to --timeout while it
// answers the ROUTER. 0, or -1 + err; *gone is set when the peer has disconnected.
static int deliver(Server *s, int to_out, const Peer *p, const void *buf, size_t len, int *gone, char *err, size_t errlen) {
    double deadline = cli_now() + s->o.timeout_s;
    *gone = 0;
    for (;;) {
        int e = to_out ? (zmq_send(s->out, buf, len, ZMQ_DONTWAIT) < 0 ? errno : 0) : send_to_peer(s->router, p, buf, len);
        if (!e) return 0;
        if (e == EHOSTUNREACH) return *gone = 1, errf(err, errlen, "the client has disconnected");
        if (e != EAGAIN && e != EINTR) return errf(err, errlen, "zmq_send failed: %s", zmq_strerror(e));
        if (zsock_interrupted()) return errf(err, errlen, "interrupted");
        if (cli_now() > deadline)
            return errf(err, errlen, to_out ? "no decoder took a frame within %d s (is doppel-decoder running and connected to %s?)"
                                            : "the client took no frame within %d s (it is not reading its replies)%s",
                        s->o.timeout_s, to_out ? s->o.out : "");
        // a PUSH tells when it can send; a ROUTER's peers do not, so retry it every 10 ms
        zmq_pollitem_t it[2] = {{.socket = s->router, .events = ZMQ_POLLIN}, {.socket = s->out, .events = ZMQ_POLLOUT}};
        if (zmq_poll(it, to_out ? 2 : 1, to_out ? 100 : 10) > 0 && (it[0].revents & ZMQ_POLLIN))
            for (int i = 0; i < SERVE_SERVICE_MAX && service_one(s); i++) {}
    }
}

// Generates request r batch by batch and delivers it; answers "done" or an error.
static void run_request(Server *s, Ctx *ctx, float *z, const Request *r) {
    const UNetConfig *c = &s->u.model.cfg;
    char idt[80], err[512];
    id_text(r->id, idt, sizeof(idt));
    fprintf(stderr, "doppel-diffuser: request %s: %lld samples (%d users x %d) with %s, %d steps, guidance %g, to %s\n", idt,
            (long long)r->N, r->n_users, r->per_user, sampler_kind_name(r->sc.sampler.kind), r->sc.sampler.steps,
            (double)r->sc.guidance, r->to_out ? s->o.out : "the client");
    int32_t *lab = xmalloc((size_t)r->N * sizeof(int32_t));
    int64_t *seeds = xmalloc((size_t)r->N * sizeof(int64_t));
    for (int i = 0; i < r->n_users; i++)
        for (int k = 0; k < r->per_user; k++) {
            int64_t j = (int64_t)i * r->per_user + k;
            lab[j] = r->users[i], seeds[j] = sample_seed(r->seed, r->users[i], k);
        }
    json_t *meta = diffuser_sample_meta(&s->u, s->o.unet, &r->sc, s->used_ema);
    json_object_set(meta, r->to_out ? "request_id" : "id", r->id);
    if (r->to_out) json_object_set_new(meta, "request_total", json_integer(r->N));
    rng_seed(ctx->rng, r->seed);
    s->current = r;
    double t0 = cli_now();
    int64_t sent = 0, frames = 0;
    int failed = 0, gone = 0;
    for (int64_t n0 = 0; n0 < r->N && !zsock_interrupted(); n0 += s->o.batch) {
        int n = (int)(r->N - n0 < s->o.batch ? r->N - n0 : s->o.batch);
        arena_reset(ctx->arena);
        diffusion_sample(ctx, &s->u.model, &s->u.sched, &r->sc, lab + n0, seeds + n0, n, z, on_step, s);
        if (zsock_interrupted()) break;
        Frame f;
        frame_init(&f, r->to_out ? FRAME_BATCH : FRAME_REPLY, "diffuser", r->to_out ? s->out_seq : (uint64_t)frames);
        if (!r->to_out) f.has_total = 1, f.total = (uint64_t)r->N;  // the --out stream is endless: no total
        if (r->to_out) json_object_set_new(meta, "request_seq", json_integer(frames));
        frame_set_meta(&f, meta);
        frame_add_tensor(&f, WIRE_LATENT, WDT_F32, 4, (int64_t[]){n, c->in_channels, c->sample_size, c->sample_size}, z);
        frame_add_tensor(&f, WIRE_LABEL, WDT_I32, 1, (int64_t[]){n}, lab + n0);
        frame_add_tensor(&f, WIRE_SEED, WDT_I64, 1, (int64_t[]){n}, seeds + n0);
        void *buf = NULL;
        size_t len = 0;
        failed = frame_encode(&f, &buf, &len, err, sizeof(err)) || deliver(s, r->to_out, &r->peer, buf, len, &gone, err, sizeof(err));
        free(buf);
        frame_release(&f);
        if (failed) break;
        frames++, sent += n;
        if (r->to_out) s->out_seq++;
    }
    double secs = cli_now() - t0;
    if (zsock_interrupted())
        reply_error(s, &r->peer, r->id, "the server is shutting down; %lld of %lld samples were sent", (long long)sent, (long long)r->N);
    else if (gone)
        fprintf(stderr, "doppel-diffuser: request %s: abandoned after %lld of %lld samples: %s\n", idt, (long long)sent,
                (long long)r->N, err);
    else if (failed)
        reply_error(s, &r->peer, r->id, "abandoned after %lld of %lld samples: %s", (long long)sent, (long long)r->N, err);
    else {
        reply_status(s, &r->peer, r->id, "done", (uint64_t)frames, sent,
                     json_pack("{s:I, s:I, s:f}", "total", (json_int_t)sent, "frames", (json_int_t)frames, "seconds", secs));
        fprintf(stderr, "doppel-diffuser: request %s: done, %lld samples in %.2f s (%.2f samples/s)\n", idt, (long long)sent,
                secs, secs > 0 ? sent / secs : 0.0);
    }
    s->current = NULL;
    json_decref(meta);
    free(lab), free(seeds);
}

static int open_sockets(Server *s, char *err, size_t errlen) {
    if (!(s->router = zsock_open(ZMQ_ROUTER, s->o.bind, 1, err, errlen))) return -1;
    int one = 1;
    if (zmq_setsockopt(s->router, ZMQ_ROUTER_MANDATORY, &one, sizeof(one)))
        return errf(err, errlen, "cannot set ZMQ_ROUTER_MANDATORY on %s: %s", s->o.bind, zmq_strerror(errno));
    if (s->o.out && !(s->out = zsock_open(ZMQ_PUSH, s->o.out, 1, err, errlen))) return -1;
    return 0;
}

static int load_model(Server *s, char *err, size_t errlen) {
    if (unet_folder_load(&s->u, s->o.unet, !s->o.no_ema, &s->used_ema, err, errlen)) return -1;
    s->U = s->u.model.cfg.num_class_embeds - 1;
    if (s->U < 1) return errf(err, errlen, "%s has no class embedding: not a user-conditioned UNet", s->o.unet);
    if (!s->o.vae) return 0;
    VaeFolder v;
    char e[512];
    if (vae_folder_load(&v, s->o.vae, err, errlen)) return -1;
    int bad = unet_vae_compatible(&s->u.model.cfg, s->u.users, &v.model.cfg, v.users, e, sizeof(e));
    vae_folder_free(&v);
    return bad ? errf(err, errlen, "%s and %s do not fit: %s", s->o.unet, s->o.vae, e) : 0;
}

int diffuser_serve_main(int argc, char **argv) {
    Server *s = xcalloc(1, sizeof(Server));
    s->o = parse_serve(argc, argv);
    char err[1024], bound[256] = "";
    int rc = EXIT_OK;
    if (load_model(s, err, sizeof(err)) || open_sockets(s, err, sizeof(err))) {
        fprintf(stderr, "doppel-diffuser: %s\n", err);
        rc = EXIT_RUNTIME;
        goto done;
    }
    zsock_last_endpoint(s->router, bound, sizeof(bound));
    const UNetConfig *c = &s->u.model.cfg;
    fprintf(stderr, "doppel-diffuser: serving %s (%d users, latents %dx%dx%d, %s weights) on %s%s%s\n", s->o.unet, s->U,
            c->in_channels, c->sample_size, c->sample_size, s->used_ema ? "EMA" : "raw", bound, s->out ? "; decoders at " : "",
            s->out ? s->o.out : "");
    int gpu = device_choose(s->o.device, "doppel-diffuser");
    if (gpu) fprintf(stderr, "doppel-diffuser: sampling on %s\n", cuda_device_name());
    Rng rng;
    rng_seed(&rng, 0);
    Compute cp;
    compute_init(&cp, &s->u.model.ps, &rng, gpu);
    float *z = xmalloc((size_t)s->o.batch * c->in_channels * c->sample_size * c->sample_size * sizeof(float));
    while (!zsock_interrupted()) {
        if (!s->queued) {
            service(s, 100);
            continue;
        }
        Request *r = s->queue[s->head];
        s->head = (s->head + 1) % SERVE_MAX_QUEUED, s->queued--;
        run_request(s, &cp.ctx, z, r);
        request_free(r);
    }
    for (; s->queued; s->head = (s->head + 1) % SERVE_MAX_QUEUED, s->queued--) {  // interrupted: tell who waits
        Request *r = s->queue[s->head];
        reply_error(s, &r->peer, r->id, "the server is shutting down; the request was not started");
        request_free(r);
    }
    fprintf(stderr, "doppel-diffuser: serve stopped (interrupted)\n");
    free(z);
    compute_free(&cp);
done:
    zsock_close(&s->out);
    zsock_close(&s->router);
    zsock_term();
    if (s->u.config) unet_folder_free(&s->u);
    free(s);
    return rc;
}
