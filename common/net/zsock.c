// zsock.c: the one place doppel talks to libzmq (see zsock.h). Every zmq call's return is checked;
// errors name the endpoint, zmq's reason and what to do. Waits are zmq_poll loops in slices of at
// most POLL_SLICE_MS so that SIGINT/SIGTERM (which set a flag, see zsock_install_signals) and the
// caller's timeout are noticed promptly even when the signal lands on another thread.
#include "net/zsock.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "check.h"
#include "cli/cli.h"

#define POLL_SLICE_MS 100

// ---- signals ----

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig) {
    (void)sig;
    g_interrupted = 1;
}

void zsock_install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = 0;  // no SA_RESTART: blocking calls return EINTR, and the poll loops see the flag
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
        DIE("sigaction(SIGINT/SIGTERM) failed: %s", strerror(errno));
    struct sigaction ign;
    memset(&ign, 0, sizeof(ign));
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    if (sigaction(SIGPIPE, &ign, NULL) != 0) DIE("sigaction(SIGPIPE) failed: %s", strerror(errno));
}

int zsock_interrupted(void) { return g_interrupted != 0; }

// ---- context ----

static void *g_ctx;
static pthread_mutex_t g_ctx_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t g_maxmsgsize;  // 0: WIRE_MAX_FRAME_BYTES (zsock_set_maxmsgsize, for tests)

void *zsock_context(void) {
    pthread_mutex_lock(&g_ctx_lock);
    if (!g_ctx) {
        g_ctx = zmq_ctx_new();
        if (!g_ctx) {
            int e = errno;
            pthread_mutex_unlock(&g_ctx_lock);
            DIE("zmq_ctx_new failed: %s (out of file descriptors or memory? check `ulimit -n`)", zmq_strerror(e));
        }
    }
    void *ctx = g_ctx;
    pthread_mutex_unlock(&g_ctx_lock);
    return ctx;
}

void zsock_term(void) {
    pthread_mutex_lock(&g_ctx_lock);
    void *ctx = g_ctx;
    g_ctx = NULL;
    pthread_mutex_unlock(&g_ctx_lock);
    if (!ctx) return;
    // zmq_ctx_term blocks until every socket is closed (each then lingers up to WIRE_LINGER_MS);
    // a signal interrupts it with EINTR, after which it must be called again.
    while (zmq_ctx_term(ctx) != 0) {
        if (errno == EINTR) continue;
        fprintf(stderr, "doppel: zmq_ctx_term failed: %s\n", zmq_strerror(errno));
        return;
    }
}

void zsock_set_maxmsgsize(int64_t bytes) { g_maxmsgsize = bytes > 0 ? bytes : 0; }

// ---- opening ----

static const char *type_name(int type) {
    switch (type) {
    case ZMQ_PUSH: return "PUSH";
    case ZMQ_PULL: return "PULL";
    case ZMQ_PUB: return "PUB";
    case ZMQ_SUB: return "SUB";
    case ZMQ_REQ: return "REQ";
    case ZMQ_REP: return "REP";
    case ZMQ_DEALER: return "DEALER";
    case ZMQ_ROUTER: return "ROUTER";
    default: return "?";
    }
}

// what to do about a failed bind/connect, by errno
static const char *advice(int e, int bind) {
    switch (e) {
    case EADDRINUSE: return "address in use: is another stage bound to it? stop it or pick another port";
    case EADDRNOTAVAIL: return "this host has no such address: bind to 127.0.0.1, * or one of its own interfaces";
    case ENODEV: return "no such network interface on this host";
    case EPROTONOSUPPORT: return "unknown transport: use tcp://, ipc:// or inproc://";
    case ENOCOMPATPROTO: return "this transport does not work with this socket type";
    case EACCES: return "permission denied: ports below 1024 need privileges, ipc:// paths need a writable directory";
    case EINVAL:
        return bind ? "malformed endpoint: expected e.g. @tcp://127.0.0.1:5555 or @tcp://127.0.0.1:* (port, or * for any)"
                    : "malformed endpoint: expected e.g. >tcp://host:5555 (a host and a numeric port)";
    case EMFILE: return "out of file descriptors: raise `ulimit -n`";
    default: return "check the endpoint";
    }
}

static int set_int(void *s, int opt, int v, const char *name, const char *ep, char *err, size_t errlen) {
    if (zmq_setsockopt(s, opt, &v, sizeof(v)) != 0)
        return errf(err, errlen, "cannot set %s=%d on the socket for '%s': %s", name, v, ep, zmq_strerror(errno));
    return 0;
}

static int configure(void *s, int type, const char *ep, char *err, size_t errlen) {
    int64_t maxmsg = g_maxmsgsize ? g_maxmsgsize : (int64_t)WIRE_MAX_FRAME_BYTES;
    if (set_int(s, ZMQ_SNDHWM, WIRE_HWM, "ZMQ_SNDHWM", ep, err, errlen) ||
        set_int(s, ZMQ_RCVHWM, WIRE_HWM, "ZMQ_RCVHWM", ep, err, errlen) ||
        set_int(s, ZMQ_LINGER, WIRE_LINGER_MS, "ZMQ_LINGER", ep, err, errlen))
        return -1;
    if (zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) != 0)
        return errf(err, errlen, "cannot set ZMQ_MAXMSGSIZE=%lld on the socket for '%s': %s", (long long)maxmsg, ep,
                    zmq_strerror(errno));
    if (type == ZMQ_SUB && zmq_setsockopt(s, ZMQ_SUBSCRIBE, "", 0) != 0)
        return errf(err, errlen, "cannot subscribe the SUB socket for '%s': %s", ep, zmq_strerror(errno));
    return 0;
}

// libzmq resolves a tcp connect endpoint later and retries it forever, so a typo ("host:99999",
// "tcp://:5555") would fail silently; check the host and port here. Host names are not looked up.
static int check_tcp_connect(const char *endpoint, const char *addr, char *err, size_t errlen) {
    if (strncmp(addr, "tcp://", 6)) return 0;
    const char *hp = addr + 6, *semi = strrchr(hp, ';');  // "tcp://source;host:port"
    if (semi) hp = semi + 1;
    const char *colon = strrchr(hp, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || colon == hp || !colon[1] || *end || port < 1 || port > 65535)
        return errf(err, errlen, "cannot connect to '%s': expected tcp://HOST:PORT with a port in 1..65535 (e.g. >tcp://127.0.0.1:5555)",
                    endpoint);
    return 0;
}

static void *open_failed(void **s) {
    zsock_close(s);
    return NULL;
}

// Attaches a handshake monitor to sock (its inproc endpoint unique in the process) and connects w to it.
static int peerwatch_start(PeerWatch *w, void *sock, char *err, size_t errlen) {
    static int counter;
    char ep[64];
    snprintf(ep, sizeof(ep), "inproc://doppel-monitor-%d", __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
    if (zmq_socket_monitor(sock, ep, ZMQ_EVENT_HANDSHAKE_SUCCEEDED) != 0)
        return errf(err, errlen, "cannot monitor the socket: %s", zmq_strerror(errno));
    void *mon = zmq_socket(zsock_context(), ZMQ_PAIR);
    int linger = 0;
    if (!mon || zmq_setsockopt(mon, ZMQ_LINGER, &linger, sizeof(linger)) != 0 || zmq_connect(mon, ep) != 0) {
        int e = errno;
        if (mon) zmq_close(mon);
        zmq_socket_monitor(sock, NULL, 0);
        return errf(err, errlen, "cannot read the socket's monitor: %s", zmq_strerror(e));
    }
    w->sock = sock, w->mon = mon, w->peers = 0;
    return 0;
}

// Creates, configures and binds/connects a socket; with w, a handshake monitor is attached first.
static void *open_socket(int type, const char *endpoint, int default_bind, PeerWatch *w, char *err, size_t errlen) {
    if (!endpoint || !*endpoint) {
        errf(err, errlen, "empty endpoint: give one like @tcp://127.0.0.1:5555 (bind) or >tcp://host:5555 (connect)");
        return NULL;
    }
    int bind = default_bind;
    const char *addr = endpoint;
    if (*addr == '@' || *addr == '>') {
        bind = *addr == '@';
        addr++;
    }
    if (!*addr) {
        errf(err, errlen, "endpoint '%s' is a bare %s prefix with no address: e.g. %stcp://127.0.0.1:5555", endpoint,
             bind ? "bind (@)" : "connect (>)", bind ? "@" : ">");
        return NULL;
    }
    if (!bind && check_tcp_connect(endpoint, addr, err, errlen)) return NULL;
    void *s = zmq_socket(zsock_context(), type);
    if (!s) {
        errf(err, errlen, "cannot create a %s socket for '%s': %s", type_name(type), endpoint, zmq_strerror(errno));
        return NULL;
    }
    if (configure(s, type, endpoint, err, errlen) != 0) return open_failed(&s);
    if (w && peerwatch_start(w, s, err, errlen) != 0) return open_failed(&s);
    if ((bind ? zmq_bind(s, addr) : zmq_connect(s, addr)) != 0) {
        int e = errno;
        errf(err, errlen, "cannot %s %s socket to '%s': %s (%s)", bind ? "bind" : "connect", type_name(type), addr,
             zmq_strerror(e), advice(e, bind));
        if (w) peerwatch_stop(w);
        return open_failed(&s);
    }
    return s;
}

void *zsock_open(int type, const char *endpoint, int default_bind, char *err, size_t errlen) {
    return open_socket(type, endpoint, default_bind, NULL, err, errlen);
}

void *zsock_open_watched(int type, const char *endpoint, int default_bind, PeerWatch *w, char *err, size_t errlen) {
    memset(w, 0, sizeof(*w));
    return open_socket(type, endpoint, default_bind, w, err, errlen);
}

void zsock_close(void **sock) {
    if (!sock || !*sock) return;
    if (zmq_close(*sock) != 0) fprintf(stderr, "doppel: zmq_close failed: %s\n", zmq_strerror(errno));
    *sock = NULL;
}

int zsock_last_endpoint(void *sock, char *buf, size_t len) {
    if (!sock || !buf || !len) return -1;
    size_t n = len;
    if (zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, buf, &n) != 0) {
        snprintf(buf, len, "%s", zmq_strerror(errno));
        return -1;
    }
    buf[len - 1] = '\0';
    return 0;
}

// ---- waiting ----

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// what is left of timeout_ms at `deadline` (-1: forever)
static int ms_left(double deadline, int timeout_ms) {
    if (timeout_ms < 0) return -1;
    double left = deadline - now_ms();
    return left > 0 ? (int)left : 0;
}

// Polls `items` for up to timeout_ms (-1 forever) in slices; returns >0 when one is ready,
// 0 on timeout, -1 on interruption, -2 on a zmq error (errno kept).
static int poll_wait(zmq_pollitem_t *items, int n, int timeout_ms) {
    double deadline = timeout_ms >= 0 ? now_ms() + timeout_ms : 0;
    for (;;) {
        if (zsock_interrupted()) return -1;
        long slice = POLL_SLICE_MS;
        if (timeout_ms >= 0) {
            double left = deadline - now_ms();
            if (left < 0) left = 0;
            if (left < slice) slice = (long)left;
        }
        int rc = zmq_poll(items, n, slice);
        if (rc > 0) return rc;
        if (rc < 0) {
            if (errno == EINTR) continue;  // the flag, if it was ours, is checked at the top
            return -2;
        }
        if (timeout_ms >= 0 && now_ms() >= deadline) return 0;
    }
}

int zsock_poll_in(void **socks, int n, int timeout_ms) {
    if (n <= 0 || n > 64) return -1;
    zmq_pollitem_t items[64];
    for (int i = 0; i < n; i++) items[i] = (zmq_pollitem_t){.socket = socks[i], .events = ZMQ_POLLIN};
    if (poll_wait(items, n, timeout_ms) <= 0) return -1;
    for (int i = 0; i < n; i++)
        if (items[i].revents & ZMQ_POLLIN) return i;
    return -1;
}

// ---- frames ----

static void free_buffer(void *data, void *hint) {
    (void)hint;
    free(data);
}

int zsock_send_frame(void *sock, const Frame *f, int timeout_ms, char *err, size_t errlen) {
    void *buf = NULL;
    size_t len = 0;
    if (frame_encode(f, &buf, &len, err, errlen) != 0) return -1;
    zmq_msg_t msg;
    if (zmq_msg_init_data(&msg, buf, len, free_buffer, NULL) != 0) {
        int e = errno;
        free(buf);
        return errf(err, errlen, "zmq_msg_init_data (%zu bytes) failed: %s", len, zmq_strerror(e));
    }
    // the message owns buf from here: zmq frees it after sending, zmq_msg_close frees it otherwise
    zmq_pollitem_t item = {.socket = sock, .events = ZMQ_POLLOUT};
    double deadline = timeout_ms >= 0 ? now_ms() + timeout_ms : 0;
    for (;;) {
        int rc = poll_wait(&item, 1, ms_left(deadline, timeout_ms));
        if (rc == 0 || rc == -1 || rc == -2) {
            int e = errno;
            zmq_msg_close(&msg);
            if (rc == 0)
                return errf(err, errlen, "send of a %zu-byte '%s' frame timed out after %d ms: no peer took it (is the receiving stage running and connected?)",
                            len, frame_kind_name(f->kind), timeout_ms);
            if (rc == -1) return errf(err, errlen, "send interrupted by a signal");
            return errf(err, errlen, "zmq_poll for sending failed: %s", zmq_strerror(e));
        }
        if (zmq_msg_send(&msg, sock, ZMQ_DONTWAIT) >= 0) return 0;  // zmq owns the message now
        int e = errno;
        if (e == EAGAIN || e == EINTR) continue;  // lost a race for the pipe: wait again
        zmq_msg_close(&msg);
        if (e == EFSM) return errf(err, errlen, "cannot send now: the socket expects to receive first (REQ/REP order)");
        return errf(err, errlen, "zmq_msg_send failed: %s", zmq_strerror(e));
    }
}

static void free_msg(Received *r) {
    if (!r->msg) return;
    zmq_msg_close(r->msg);
    free(r->msg);
    r->msg = NULL;
}

int zsock_recv_frame(void *sock, Received *r, const FrameLimits *lim, int timeout_ms, char *err, size_t errlen) {
    memset(r, 0, sizeof(*r));
    zmq_pollitem_t item = {.socket = sock, .events = ZMQ_POLLIN};
    double deadline = timeout_ms >= 0 ? now_ms() + timeout_ms : 0;
    zmq_msg_t *m = xmalloc(sizeof(zmq_msg_t));
    if (zmq_msg_init(m) != 0) DIE("zmq_msg_init failed: %s", zmq_strerror(errno));
    r->msg = m;
    for (;;) {
        int rc = poll_wait(&item, 1, ms_left(deadline, timeout_ms));
        if (rc == 0 || rc == -1) {
            free_msg(r);
            if (rc == 0) errf(err, errlen, "no frame within %d ms", timeout_ms);
            else errf(err, errlen, "interrupted by a signal");
            return 0;
        }
        if (rc == -2) {
            int e = errno;
            free_msg(r);
            return errf(err, errlen, "zmq_poll for receiving failed: %s", zmq_strerror(e));
        }
        if (zmq_msg_recv(m, sock, ZMQ_DONTWAIT) >= 0) break;
        int e = errno;
        if (e == EAGAIN || e == EINTR) continue;
        free_msg(r);
        return errf(err, errlen, "zmq_msg_recv failed: %s", zmq_strerror(e));
    }
    if (zmq_msg_more(m)) {  // one ZeroMQ message = one frame: drain and reject multipart messages
        int parts = 1;
        while (zmq_msg_more(m) && zmq_msg_recv(m, sock, ZMQ_DONTWAIT) >= 0) parts++;
        free_msg(r);
        return errf(err, errlen, "bad frame: a %d-part ZeroMQ message; doppel frames are single-part msgpack maps", parts);
    }
    FrameLimits def = {0};
    size_t len = zmq_msg_size(m);
    char why[384];
    if (frame_decode(&r->frame, zmq_msg_data(m), len, lim ? lim : &def, why, sizeof(why)) != 0) {
        free_msg(r);
        memset(&r->frame, 0, sizeof(r->frame));
        return errf(err, errlen, "bad frame (%zu bytes): %s", len, why);
    }
    return 1;
}

void received_release(Received *r) {
    if (!r) return;
    if (r->msg) frame_release(&r->frame);
    free_msg(r);
    memset(r, 0, sizeof(*r));
}

int peerwatch_wait(PeerWatch *w, int n, int timeout_ms) {
    if (!w->mon) return -1;
    double end = timeout_ms < 0 ? 0 : cli_now() + timeout_ms / 1000.0;
    while (w->peers < n && !zsock_interrupted() && (timeout_ms < 0 || cli_now() < end)) {
        zmq_pollitem_t it = {w->mon, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0) continue;
        zmq_msg_t m;  // event: frame 1 = (uint16 event, uint32 value), frame 2 = endpoint
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, w->mon, 0) >= 6) {
            uint16_t ev;
            memcpy(&ev, zmq_msg_data(&m), 2);
            if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) w->peers++;
        }
        while (zmq_msg_more(&m)) {
            zmq_msg_close(&m);
            zmq_msg_init(&m);
            zmq_msg_recv(&m, w->mon, 0);
        }
        zmq_msg_close(&m);
    }
    return w->peers >= n ? 0 : -1;
}

void peerwatch_stop(PeerWatch *w) {
    if (!w->mon) return;
    zmq_socket_monitor(w->sock, NULL, 0);
    zmq_close(w->mon);
    w->mon = NULL;
}
