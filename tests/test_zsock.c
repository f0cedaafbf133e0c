// test_zsock: common/net/zsock (endpoints, socket options, frames over PUSH/PULL, bad frames,
// size limits, timeouts, signals, the zguide fan-out/fan-in pipeline with a kill channel) and
// common/cli (progress lines, JSONL metrics, option parsing, --version). Every socket is on
// tcp://127.0.0.1 with ephemeral ports. Processes that must start without a ZeroMQ context (signal
// and exit-code tests) are this binary re-executed as `test_zsock --child MODE [ARG]`.
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "check.h"
#include "cli/cli.h"
#include "net/zsock.h"
#include "testlib.h"

#define ANY_PORT "@tcp://127.0.0.1:*"

// ---- helpers ----

// binds `type` on an ephemeral port; writes the resolved endpoint ("tcp://127.0.0.1:PORT") to ep
static void *bind_any(int type, char *ep, size_t eplen) {
    char err[512];
    void *s = zsock_open(type, ANY_PORT, 0, err, sizeof(err));
    EXPECT(s, "bind %s: %s", ANY_PORT, err);
    if (s) EXPECT(zsock_last_endpoint(s, ep, eplen) == 0 && strncmp(ep, "tcp://127.0.0.1:", 16) == 0,
                  "last endpoint '%s'", ep);
    return s;
}

// opens `type` connected to ep ("tcp://..."), with the explicit ">" prefix
static void *connect_to(int type, const char *ep) {
    char full[300], err[512];
    snprintf(full, sizeof(full), ">%s", ep);
    void *s = zsock_open(type, full, 1, err, sizeof(err));
    EXPECT(s, "connect %s: %s", full, err);
    return s;
}

static int ep_port(const char *ep) {
    const char *c = strrchr(ep, ':');
    return c ? atoi(c + 1) : -1;
}

static int contains(const char *hay, const char *needle) { return hay && strstr(hay, needle) != NULL; }

// ---- endpoints ----

static void test_endpoint_parsing(void) {
    char ep[256], ep2[256], err[512];
    // "@" binds, whatever the default
    void *a = bind_any(ZMQ_PULL, ep, sizeof(ep));
    // a bare endpoint takes the default: bind here...
    void *b = zsock_open(ZMQ_PULL, "tcp://127.0.0.1:*", 1, err, sizeof(err));
    EXPECT(b, "bare endpoint with default_bind=1: %s", err);
    if (b) EXPECT(zsock_last_endpoint(b, ep2, sizeof(ep2)) == 0 && ep_port(ep2) > 0, "bare bind resolved to '%s'", ep2);
    // ...and connect here (a bound port is never "*", so this would fail as a bind)
    void *c = zsock_open(ZMQ_PUSH, ep, 0, err, sizeof(err));
    EXPECT(c, "bare endpoint with default_bind=0 should connect to %s: %s", ep, err);
    // ">" connects even when the default is to bind
    void *d = connect_to(ZMQ_PUSH, ep2);
    // both connections carry frames
    if (a && b && c && d) {
        Frame f;
        Received r;
        frame_init(&f, FRAME_HELLO, "ep", 7);
        EXPECT(zsock_send_frame(c, &f, 2000, err, sizeof(err)) == 0, "send over bare connect: %s", err);
        EXPECT(zsock_send_frame(d, &f, 2000, err, sizeof(err)) == 0, "send over > connect: %s", err);
        EXPECT(zsock_recv_frame(a, &r, NULL, 2000, err, sizeof(err)) == 1 && r.frame.seq == 7, "recv on @ bind: %s", err);
        received_release(&r);
        EXPECT(zsock_recv_frame(b, &r, NULL, 2000, err, sizeof(err)) == 1 && r.frame.seq == 7, "recv on bare bind: %s", err);
        received_release(&r);
    }
    zsock_close(&a);
    EXPECT(a == NULL, "zsock_close sets the pointer to NULL");
    zsock_close(&b);
    zsock_close(&c);
    zsock_close(&d);
    zsock_close(&d);  // closing twice is harmless

    // malformed endpoints: NULL, a clear message naming the endpoint and what to do
    struct {
        const char *ep;
        const char *want;  // in the message
    } bad[] = {
        {"", "empty endpoint"},
        {"@", "no address"},
        {">", "no address"},
        {"@tcp://127.0.0.1", "malformed endpoint"},          // no port
        {"@tcp://127.0.0.1:notaport", "malformed endpoint"},
        {">tcp://127.0.0.1", "HOST:PORT"},
        {">tcp://127.0.0.1:99999", "HOST:PORT"},               // libzmq itself would accept these two
        {">tcp://:5555", "HOST:PORT"},                         // and retry them forever
        {"@bogus://127.0.0.1:5555", "unknown transport"},
        {"@@tcp://127.0.0.1:*", "unknown transport"},       // a prefix is one character
        {"@tcp://192.0.2.77:*", "no such address"},          // TEST-NET: not an interface of this host
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        void *s = zsock_open(ZMQ_PULL, bad[i].ep, 1, err, sizeof(err));
        EXPECT(!s, "'%s' was accepted", bad[i].ep);
        EXPECT(contains(err, bad[i].want), "'%s': message '%s' lacks '%s'", bad[i].ep, err, bad[i].want);
        printf("  %-28s -> %s\n", bad[i].ep, err);
        zsock_close(&s);
    }
    err[0] = '\0';
    EXPECT(!zsock_open(ZMQ_PULL, NULL, 1, err, sizeof(err)) && contains(err, "empty"), "NULL endpoint: '%s'", err);

    // binding twice to one port: says the address is in use and what to do
    void *e = bind_any(ZMQ_PULL, ep, sizeof(ep));
    char again[300];
    snprintf(again, sizeof(again), "@%s", ep);
    err[0] = '\0';
    void *f = zsock_open(ZMQ_PULL, again, 0, err, sizeof(err));
    EXPECT(!f, "second bind to %s succeeded", again);
    EXPECT(contains(err, "in use") && contains(err, "another stage") && contains(err, ep), "message: '%s'", err);
    printf("  %-28s -> %s\n", "(bound twice)", err);
    zsock_close(&f);
    zsock_close(&e);
}

static void test_socket_options(void) {
    char ep[256];
    int types[] = {ZMQ_PULL, ZMQ_PUSH, ZMQ_PUB, ZMQ_SUB, ZMQ_REQ, ZMQ_REP, ZMQ_DEALER, ZMQ_ROUTER};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        void *s = bind_any(types[i], ep, sizeof(ep));
        if (!s) continue;
        int v = -1;
        size_t n = sizeof(v);
        EXPECT(zmq_getsockopt(s, ZMQ_SNDHWM, &v, &n) == 0 && v == WIRE_HWM, "type %d SNDHWM %d", types[i], v);
        n = sizeof(v);
        EXPECT(zmq_getsockopt(s, ZMQ_RCVHWM, &v, &n) == 0 && v == WIRE_HWM, "type %d RCVHWM %d", types[i], v);
        n = sizeof(v);
        EXPECT(zmq_getsockopt(s, ZMQ_LINGER, &v, &n) == 0 && v == WIRE_LINGER_MS, "type %d LINGER %d", types[i], v);
        int64_t mm = -1;
        n = sizeof(mm);
        EXPECT(zmq_getsockopt(s, ZMQ_MAXMSGSIZE, &mm, &n) == 0 && mm == (int64_t)WIRE_MAX_FRAME_BYTES,
               "type %d MAXMSGSIZE %lld", types[i], (long long)mm);
        zsock_close(&s);
    }
}

// ---- frames ----

static void test_frame_round_trip(void) {
    char ep[256], err[512];
    void *pull = bind_any(ZMQ_PULL, ep, sizeof(ep));
    void *push = pull ? connect_to(ZMQ_PUSH, ep) : NULL;
    if (!push) {
        zsock_close(&pull);
        return;
    }
    float image[2 * 1 * 4 * 4];  // (N, C, H, W)
    fill_randn(image, 32, 11, 0.5f);
    int32_t label[2] = {3, 30};
    int64_t seed[2] = {-1, (int64_t)1 << 40};
    Frame f;
    frame_init(&f, FRAME_BATCH, "loader", 42);
    EXPECT(frame_add_tensor(&f, WIRE_IMAGE, WDT_F32, 4, (int64_t[]){2, 1, 4, 4}, image) == 0, "add image");
    EXPECT(frame_add_tensor(&f, WIRE_LABEL, WDT_I32, 1, (int64_t[]){2}, label) == 0, "add label");
    EXPECT(frame_add_tensor(&f, WIRE_SEED, WDT_I64, 1, (int64_t[]){2}, seed) == 0, "add seed");
    json_t *meta = json_pack("{s:[s,s],s:s}", "users", "ID_1", "ID_2", "stage", "test");
    frame_set_meta(&f, meta);
    json_decref(meta);  // the frame holds its own reference
    EXPECT(zsock_send_frame(push, &f, 2000, err, sizeof(err)) == 0, "send: %s", err);

    Received r;
    int rc = zsock_recv_frame(pull, &r, NULL, 2000, err, sizeof(err));
    EXPECT(rc == 1, "recv returned %d: %s", rc, err);
    if (rc == 1) {
        const Frame *g = &r.frame;
        EXPECT(g->kind == FRAME_BATCH && g->seq == 42 && !strcmp(g->stream, "loader") && g->n_tensors == 3,
               "envelope: kind %d seq %llu stream '%s' tensors %d", g->kind, (unsigned long long)g->seq, g->stream,
               g->n_tensors);
        EXPECT(g->meta && json_equal(g->meta, meta), "meta differs");
        const char *msg = zmq_msg_data(r.msg);
        size_t msglen = zmq_msg_size(r.msg);
        for (int i = 0; i < f.n_tensors; i++) {
            const WireTensor *want = &f.tensors[i], *got = frame_tensor(g, want->name);
            EXPECT(got, "tensor '%s' missing", want->name);
            if (!got) continue;
            EXPECT(got->dtype == want->dtype && got->ndim == want->ndim && got->nbytes == want->nbytes &&
                       !memcmp(got->shape, want->shape, sizeof(int64_t) * (size_t)want->ndim),
                   "tensor '%s' header", want->name);
            EXPECT(got->nbytes == want->nbytes && !memcmp(got->data, want->data, want->nbytes), "tensor '%s' data", want->name);
            // zero-copy: the tensor's bytes are inside the received message
            const char *d = got->data;
            EXPECT(d >= msg && d + got->nbytes <= msg + msglen, "tensor '%s' is not inside the message", want->name);
        }
        float back[32];
        const WireTensor *t = frame_tensor(g, WIRE_IMAGE);
        if (t) {
            wire_tensor_f32(back, t);
            EXPECT_CLOSE("image", back, image, 32, 0, 0);
        }
    }
    received_release(&r);
    EXPECT(r.msg == NULL, "received_release clears the message");
    received_release(&r);  // twice is harmless
    frame_release(&f);
    zsock_close(&push);
    zsock_close(&pull);
}

// garbage and multipart messages are reported (-1 + message) and the next good frame still arrives
static void test_bad_frames_skipped(void) {
    char ep[256], err[512];
    void *pull = bind_any(ZMQ_PULL, ep, sizeof(ep));
    void *push = pull ? connect_to(ZMQ_PUSH, ep) : NULL;
    if (!push) {
        zsock_close(&pull);
        return;
    }
    EXPECT(zmq_send(push, "garbage!", 8, 0) == 8, "raw send: %s", zmq_strerror(errno));
    EXPECT(zmq_send(push, "part1", 5, ZMQ_SNDMORE) == 5 && zmq_send(push, "part2", 5, 0) == 5, "multipart send");
    Frame f;
    frame_init(&f, FRAME_BATCH, "s", 5);
    EXPECT(zsock_send_frame(push, &f, 2000, err, sizeof(err)) == 0, "send: %s", err);

    Received r;
    err[0] = '\0';
    int rc = zsock_recv_frame(pull, &r, NULL, 2000, err, sizeof(err));
    EXPECT(rc == -1 && contains(err, "bad frame") && r.msg == NULL, "garbage: rc %d, '%s'", rc, err);
    printf("  garbage   -> %s\n", err);
    received_release(&r);
    err[0] = '\0';
    rc = zsock_recv_frame(pull, &r, NULL, 2000, err, sizeof(err));
    EXPECT(rc == -1 && contains(err, "2-part"), "multipart: rc %d, '%s'", rc, err);
    printf("  multipart -> %s\n", err);
    received_release(&r);
    rc = zsock_recv_frame(pull, &r, NULL, 2000, err, sizeof(err));
    EXPECT(rc == 1 && r.frame.seq == 5, "the good frame after the bad ones: rc %d '%s'", rc, err);
    received_release(&r);
    // a frame larger than the caller's own limit is refused by the decoder, not allocated
    float big[1024] = {0};
    frame_add_tensor(&f, WIRE_IMAGE, WDT_F32, 4, (int64_t[]){1, 1, 32, 32}, big);
    EXPECT(zsock_send_frame(push, &f, 2000, err, sizeof(err)) == 0, "send: %s", err);
    FrameLimits lim = {.max_bytes = 1000};
    rc = zsock_recv_frame(pull, &r, &lim, 2000, err, sizeof(err));
    EXPECT(rc == -1, "a 4 KB frame passed a 1000-byte limit");
    printf("  limit     -> %s\n", err);
    received_release(&r);
    zsock_close(&push);
    zsock_close(&pull);
}

// A message over ZMQ_MAXMSGSIZE is dropped by libzmq itself (it drops the connection): the
// receiver sees a timeout, not a crash and not a huge allocation; after the sender reconnects,
// later frames arrive again.
static void test_maxmsgsize_drops(void) {
    char ep[256], err[512];
    zsock_set_maxmsgsize(4096);
    void *pull = bind_any(ZMQ_PULL, ep, sizeof(ep));
    zsock_set_maxmsgsize(0);
    void *push = pull ? connect_to(ZMQ_PUSH, ep) : NULL;
    if (!push) {
        zsock_close(&pull);
        return;
    }
    int64_t mm = 0;
    size_t n = sizeof(mm);
    EXPECT(zmq_getsockopt(pull, ZMQ_MAXMSGSIZE, &mm, &n) == 0 && mm == 4096, "override: MAXMSGSIZE %lld", (long long)mm);
    n = sizeof(mm);
    EXPECT(zmq_getsockopt(push, ZMQ_MAXMSGSIZE, &mm, &n) == 0 && mm == (int64_t)WIRE_MAX_FRAME_BYTES,
           "override reset: MAXMSGSIZE %lld", (long long)mm);

    static float big[4096];  // 16 KB of tensor
    Frame f;
    frame_init(&f, FRAME_BATCH, "big", 1);
    frame_add_tensor(&f, WIRE_IMAGE, WDT_F32, 4, (int64_t[]){1, 1, 64, 64}, big);
    double t0 = cli_now();
    EXPECT(zsock_send_frame(push, &f, 2000, err, sizeof(err)) == 0, "send big: %s", err);
    Received r;
    int rc = zsock_recv_frame(pull, &r, NULL, 500, err, sizeof(err));
    EXPECT(rc == 0, "the oversized frame was not dropped: rc %d", rc);
    received_release(&r);

    Frame small;
    frame_init(&small, FRAME_BATCH, "small", 2);
    EXPECT(zsock_send_frame(push, &small, 2000, err, sizeof(err)) == 0, "send small: %s", err);
    rc = zsock_recv_frame(pull, &r, NULL, 3000, err, sizeof(err));
    EXPECT(rc == 1 && r.frame.seq == 2, "the next small frame after the drop: rc %d '%s'", rc, err);
    printf("  16 KB frame over a 4096-byte MAXMSGSIZE: dropped; the next frame arrived %.0f ms after it (reconnected)\n",
           (cli_now() - t0) * 1e3);
    received_release(&r);
    zsock_close(&push);
    zsock_close(&pull);
}

static void test_timeouts(void) {
    char ep[256], err[512];
    void *pull = bind_any(ZMQ_PULL, ep, sizeof(ep));
    if (!pull) return;
    Received r;
    double t0 = cli_now();
    int rc = zsock_recv_frame(pull, &r, NULL, 150, err, sizeof(err));
    double dt = cli_now() - t0;
    EXPECT(rc == 0 && r.msg == NULL, "recv on an idle socket: rc %d", rc);
    EXPECT(dt >= 0.14 && dt < 2.0, "a 150 ms recv timeout took %.3f s", dt);
    t0 = cli_now();
    rc = zsock_recv_frame(pull, &r, NULL, 0, err, sizeof(err));
    EXPECT(rc == 0 && cli_now() - t0 < 1.0, "timeout 0 polls once: rc %d", rc);
    void *socks[1] = {pull};
    EXPECT(zsock_poll_in(socks, 1, 50) == -1, "zsock_poll_in on an idle socket");
    printf("  recv timeout 150 ms returned 0 after %.0f ms\n", dt * 1e3);

    // a PUSH with no peer cannot hand a frame over: the send times out with a message
    void *push = bind_any(ZMQ_PUSH, ep, sizeof(ep));
    if (push) {
        Frame f;
        frame_init(&f, FRAME_BATCH, "nobody", 0);
        err[0] = '\0';
        t0 = cli_now();
        rc = zsock_send_frame(push, &f, 150, err, sizeof(err));
        dt = cli_now() - t0;
        EXPECT(rc == -1 && contains(err, "timed out"), "send with no peer: rc %d '%s'", rc, err);
        EXPECT(dt >= 0.14 && dt < 2.0, "a 150 ms send timeout took %.3f s", dt);
        printf("  send with no peer -> %s\n", err);
    }
    zsock_close(&push);
    zsock_close(&pull);
}

// ---- signals: a fresh process (this binary re-executed) blocked forever, then signalled ----

// child: installs the handlers, tells the parent it is ready on fd, blocks; exits 0 only if the
// blocking call returned because of the signal
static int child_blocked(const char *mode, int fd) {
    zsock_install_signals();
    char ep[256], err[512];
    int ok = 0;
    void *s = zsock_open(!strcmp(mode, "recv") ? ZMQ_PULL : ZMQ_PUSH, ANY_PORT, 1, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "child: %s\n", err);
        return 3;
    }
    zsock_last_endpoint(s, ep, sizeof(ep));
    if (write(fd, "R", 1) != 1) return 3;
    close(fd);
    if (!strcmp(mode, "recv")) {
        Received r;
        int rc = zsock_recv_frame(s, &r, NULL, -1, err, sizeof(err));
        ok = rc == 0 && zsock_interrupted();
        received_release(&r);
    } else {  // a PUSH with no peer: send blocks until the signal
        Frame f;
        frame_init(&f, FRAME_BATCH, "x", 0);
        int rc = zsock_send_frame(s, &f, -1, err, sizeof(err));
        ok = rc == -1 && zsock_interrupted() && contains(err, "interrupted");
    }
    fprintf(stderr, "child %s: %s (%s)\n", mode, ok ? "interrupted cleanly" : "NOT interrupted", err);
    zsock_close(&s);
    zsock_term();
    return ok ? 0 : 4;
}

static pid_t spawn_child(const char *mode, const char *arg, int out_fd) {
    pid_t pid = fork();
    if (pid == 0) {
        if (out_fd >= 0) {
            dup2(out_fd, 1);
            dup2(out_fd, 2);
        }
        execl("/proc/self/exe", "test_zsock", "--child", mode, arg, (char *)NULL);
        _exit(127);
    }
    return pid;
}

// waits up to timeout_s for pid; returns the wait status, or -1 (and kills it) on timeout
static int wait_child(pid_t pid, double timeout_s, double *took) {
    double t0 = cli_now();
    int status = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) break;
        if (w < 0 || cli_now() - t0 > timeout_s) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            *took = cli_now() - t0;
            return -1;
        }
        usleep(5000);
    }
    *took = cli_now() - t0;
    return status;
}

static void signal_case(const char *mode, int sig) {
    int fds[2];
    if (pipe(fds) != 0) {
        tl_fail(__FILE__, __LINE__, "pipe: %s", strerror(errno));
        return;
    }
    char fdarg[16];
    snprintf(fdarg, sizeof(fdarg), "%d", fds[1]);
    pid_t pid = spawn_child(mode, fdarg, -1);
    close(fds[1]);
    EXPECT(pid > 0, "fork: %s", strerror(errno));
    if (pid <= 0) {
        close(fds[0]);
        return;
    }
    struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
    char c = 0;
    int ready = poll(&pfd, 1, 10000) == 1 && read(fds[0], &c, 1) == 1 && c == 'R';
    close(fds[0]);
    EXPECT(ready, "the %s child never became ready", mode);
    usleep(200 * 1000);  // let it settle into its wait (a signal before the wait works too: the flag stays set)
    kill(pid, sig);
    double took = 0;
    int status = wait_child(pid, 1.0, &took);
    EXPECT(status != -1, "%s child still running %.2f s after %s", mode, took, strsignal(sig));
    EXPECT(status == -1 || (WIFEXITED(status) && WEXITSTATUS(status) == 0), "%s child after %s: status 0x%x", mode,
           strsignal(sig), status);
    printf("  %-4s + %-10s: exited %d after %.0f ms\n", mode, strsignal(sig),
           status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1, took * 1e3);
}

static void test_signal_interrupts_waits(void) {
    signal_case("recv", SIGINT);
    signal_case("recv", SIGTERM);
    signal_case("send", SIGINT);
}

// ---- the zguide pipeline: ventilator -> 3 workers -> sink, sink kills the workers over PUB/SUB ----

#define PIPE_K 300
#define PIPE_WORKERS 3

typedef struct {
    char in_ep[256], out_ep[256], ctl_ep[256];
    int forwarded, killed, failed;
    char err[512];
} Worker;

static void *worker_main(void *arg) {
    Worker *w = arg;
    char err[400];
    // workers connect: bare endpoints with default_bind = 0
    void *in = zsock_open(ZMQ_PULL, w->in_ep, 0, err, sizeof(err));
    void *out = in ? zsock_open(ZMQ_PUSH, w->out_ep, 0, err, sizeof(err)) : NULL;
    void *ctl = out ? zsock_open(ZMQ_SUB, w->ctl_ep, 0, err, sizeof(err)) : NULL;
    if (!ctl) {
        w->failed = 1;
        snprintf(w->err, sizeof(w->err), "open: %s", err);
    }
    void *socks[2] = {in, ctl};
    while (ctl && !w->killed && !w->failed) {
        int i = zsock_poll_in(socks, 2, 10000);
        if (i < 0) {
            w->failed = 1;
            snprintf(w->err, sizeof(w->err), "nothing to read for 10 s");
            break;
        }
        Received r;
        int rc = zsock_recv_frame(socks[i], &r, NULL, 0, err, sizeof(err));
        if (rc < 0) {
            w->failed = 1;
            snprintf(w->err, sizeof(w->err), "recv: %s", err);
        } else if (rc == 1 && i == 1) {
            w->killed = r.frame.kind == FRAME_END;
        } else if (rc == 1) {  // forward as received: re-encodes the decoded frame
            if (zsock_send_frame(out, &r.frame, 10000, err, sizeof(err)) == 0) w->forwarded++;
            else {
                w->failed = 1;
                snprintf(w->err, sizeof(w->err), "forward: %s", err);
            }
        }
        received_release(&r);
    }
    zsock_close(&ctl);
    zsock_close(&out);
    zsock_close(&in);
    return NULL;
}

typedef struct {
    void *push;
    int failed;
    char err[512];
} Producer;

// batch k carries 1 + k % 3 samples, each with seed k; the end frame says how many of each were sent:
// seq = batch frames, total = samples (the loader's convention)
static void *producer_main(void *arg) {
    Producer *p = arg;
    uint64_t samples = 0;
    for (int64_t k = 0; k < PIPE_K && !p->failed; k++) {
        int64_t seeds[3] = {k, k, k}, n = 1 + k % 3;
        Frame f;
        frame_init(&f, FRAME_BATCH, "pipe", (uint64_t)k);
        frame_add_tensor(&f, WIRE_SEED, WDT_I64, 1, (int64_t[]){n}, seeds);
        if (zsock_send_frame(p->push, &f, 10000, p->err, sizeof(p->err)) != 0) p->failed = 1;
        samples += (uint64_t)n;
    }
    Frame end;
    frame_init(&end, FRAME_END, "pipe", PIPE_K);
    end.has_total = 1;
    end.total = samples;
    if (!p->failed && zsock_send_frame(p->push, &end, 10000, p->err, sizeof(p->err)) != 0) p->failed = 1;
    zsock_close(&p->push);  // lingers until the workers have the last frames
    return NULL;
}

static void test_pipeline_fan_out_fan_in(void) {
    char vent_ep[256], sink_ep[256], ctl_ep[256], err[512];
    Producer prod = {0};
    prod.push = bind_any(ZMQ_PUSH, vent_ep, sizeof(vent_ep));
    void *sink = bind_any(ZMQ_PULL, sink_ep, sizeof(sink_ep));
    void *ctl = bind_any(ZMQ_PUB, ctl_ep, sizeof(ctl_ep));
    if (!prod.push || !sink || !ctl) {
        zsock_close(&prod.push);
        zsock_close(&sink);
        zsock_close(&ctl);
        return;
    }
    Worker w[PIPE_WORKERS];
    pthread_t wt[PIPE_WORKERS], pt;
    int joined[PIPE_WORKERS] = {0};
    memset(w, 0, sizeof(w));
    for (int i = 0; i < PIPE_WORKERS; i++) {
        snprintf(w[i].in_ep, sizeof(w[i].in_ep), "%s", vent_ep);
        snprintf(w[i].out_ep, sizeof(w[i].out_ep), "%s", sink_ep);
        snprintf(w[i].ctl_ep, sizeof(w[i].ctl_ep), "%s", ctl_ep);
        if (pthread_create(&wt[i], NULL, worker_main, &w[i]) != 0) DIE("pthread_create failed");
    }
    if (pthread_create(&pt, NULL, producer_main, &prod) != 0) DIE("pthread_create failed");

    // the sink counts: done when it has the end frame and as many batches as the end frame says
    static int seen[PIPE_K];
    memset(seen, 0, sizeof(seen));
    int batches = 0, dups = 0, wrong = 0, end_seen = 0;
    uint64_t end_frames = 0, end_total = 0, samples = 0;
    while (!(end_seen && (uint64_t)batches >= end_frames)) {
        Received r;
        int rc = zsock_recv_frame(sink, &r, NULL, 10000, err, sizeof(err));
        if (rc != 1) {
            tl_fail(__FILE__, __LINE__, "sink: rc %d after %d batches: %s", rc, batches, err);
            received_release(&r);
            break;
        }
        const WireTensor *t = frame_tensor(&r.frame, WIRE_SEED);
        if (r.frame.kind == FRAME_END) {
            end_seen = r.frame.has_total;
            end_frames = r.frame.seq;
            end_total = r.frame.total;
        } else if (r.frame.kind == FRAME_BATCH && t && t->dtype == WDT_I64 && t->numel >= 1) {
            int64_t k;
            memcpy(&k, t->data, sizeof(k));
            if (k < 0 || k >= PIPE_K || (uint64_t)k != r.frame.seq || t->numel != (size_t)(1 + k % 3)) wrong++;
            else if (seen[k]++) dups++;
            batches++;
            samples += t->numel;
        } else {
            wrong++;
        }
        received_release(&r);
    }
    EXPECT(end_seen && end_frames == PIPE_K && end_total == samples, "end frame: seen %d, %llu frames, %llu samples (%llu arrived)",
           end_seen, (unsigned long long)end_frames, (unsigned long long)end_total, (unsigned long long)samples);
    EXPECT(batches == PIPE_K && dups == 0 && wrong == 0, "sink: %d batches, %d duplicates, %d malformed", batches, dups, wrong);
    for (int k = 0; k < PIPE_K; k++)
        if (!seen[k]) {
            tl_fail(__FILE__, __LINE__, "seq %d never arrived", k);
            break;
        }
    pthread_join(pt, NULL);
    EXPECT(!prod.failed, "producer: %s", prod.err);

    // kill signal: repeated until every worker has gone (a SUB that joined late misses a PUB message)
    int kills = 0, n_joined = 0;
    double t0 = cli_now();
    while (n_joined < PIPE_WORKERS && cli_now() - t0 < 10.0) {
        Frame kill_frame;
        frame_init(&kill_frame, FRAME_END, "control", 0);
        if (zsock_send_frame(ctl, &kill_frame, 1000, err, sizeof(err)) == 0) kills++;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        for (int i = 0; i < PIPE_WORKERS; i++)
            if (!joined[i] && pthread_timedjoin_np(wt[i], NULL, &ts) == 0) joined[i] = 1, n_joined++;
    }
    EXPECT(n_joined == PIPE_WORKERS, "only %d of %d workers exited", n_joined, PIPE_WORKERS);
    int forwarded = 0;
    for (int i = 0; i < PIPE_WORKERS; i++) {
        EXPECT(!w[i].failed, "worker %d: %s", i, w[i].err);
        EXPECT(!joined[i] || w[i].killed, "worker %d exited without the kill frame", i);
        forwarded += w[i].forwarded;
    }
    EXPECT(forwarded == PIPE_K + 1, "workers forwarded %d frames, want %d", forwarded, PIPE_K + 1);
    printf("  %d frames + end through %d workers (%d/%d/%d), %d kill frame(s) published\n", PIPE_K, PIPE_WORKERS,
           w[0].forwarded, w[1].forwarded, w[2].forwarded, kills);
    if (n_joined < PIPE_WORKERS) DIE("workers still running; cannot close the context safely");
    zsock_close(&ctl);
    zsock_close(&sink);
}

// ---- cli ----

static char *read_all(FILE *f) {
    fflush(f);
    long n = ftell(f);
    char *s = xcalloc((size_t)(n > 0 ? n : 0) + 1, 1);
    rewind(f);
    size_t got = fread(s, 1, (size_t)(n > 0 ? n : 0), f);
    s[got] = '\0';
    return s;
}

static void test_progress_lines(void) {
    Progress p;
    progress_start(&p, "encode", 100, "img");
    FILE *f = tmpfile();
    p.out = f;
    p.tty = 0;
    progress_update(&p, 10, NULL);  // within 10 s of the start: nothing
    p.t_last -= 11;                 // as if 11 s had passed
    progress_update(&p, 50, "loss 0.25");
    progress_update(&p, 60, NULL);  // again too soon
    progress_finish(&p, "ok");
    char *s = read_all(f);
    printf("%s", s);
    int lines = 0;
    for (char *c = s; *c; c++) lines += *c == '\n';
    EXPECT(lines == 2, "%d lines, want 2 (one periodic, one final)", lines);
    EXPECT(contains(s, "encode: 50/100 img") && contains(s, "loss 0.25") && contains(s, "ETA"), "periodic line: %s", s);
    EXPECT(contains(s, "done, 60/100 img") && contains(s, ", ok"), "final line: %s", s);
    EXPECT(!contains(s, "\r"), "carriage return outside a TTY");
    free(s);
    fclose(f);

    // TTY mode: one line redrawn with \r, a bar, counts, rate and ETA
    progress_start(&p, "train", 0, "step");
    f = tmpfile();
    p.out = f;
    p.tty = 1;
    p.total = 40;
    p.t_last = 0;  // the first update on a TTY draws at once
    progress_update(&p, 10, "lr 1e-4");
    progress_finish(&p, NULL);
    s = read_all(f);
    EXPECT(contains(s, "\rtrain [######..................] 10/40 step") && contains(s, "lr 1e-4") &&
               contains(s, "step/s") && s[strlen(s) - 1] == '\n',
           "tty bar: %s", s);
    free(s);
    fclose(f);
}

static void test_metrics_jsonl(void) {
    char path[] = "/tmp/doppel_metrics_XXXXXX";
    int fd = mkstemp(path);
    EXPECT(fd >= 0, "mkstemp");
    if (fd < 0) return;
    close(fd);
    char err[512];
    MetricsLog *m = metrics_open(path, err, sizeof(err));
    EXPECT(m, "metrics_open: %s", err);
    if (!m) return;
    metrics_write(m, "{\"step\":1,\"loss\":0.5}");
    metrics_write(m, "[1,2]");     // not an object: skipped with one warning
    metrics_write(m, "not json");  // skipped silently
    metrics_write(m, "{\"step\":2,\"loss\":0.25,\"stage\":\"vae\"}");
    metrics_close(&m);
    EXPECT(m == NULL, "metrics_close sets the pointer to NULL");
    m = metrics_open(path, err, sizeof(err));  // appends
    metrics_write(m, "{\"step\":3}");
    metrics_close(&m);

    FILE *f = fopen(path, "r");
    char line[1024];
    int n = 0;
    double t_prev = 0;
    while (f && fgets(line, sizeof(line), f)) {
        json_error_t e;
        json_t *j = json_loads(line, 0, &e);
        EXPECT(j && json_is_object(j), "line %d does not parse: %s", n + 1, line);
        json_t *t = json_object_get(j, "time");
        EXPECT(json_is_real(t) && json_real_value(t) > 1.6e9 && json_real_value(t) >= t_prev, "line %d time", n + 1);
        if (t) t_prev = json_real_value(t);
        EXPECT(json_integer_value(json_object_get(j, "step")) == n + 1, "line %d step", n + 1);
        json_decref(j);
        n++;
    }
    EXPECT(n == 3, "%d lines, want 3", n);
    if (f) fclose(f);
    unlink(path);
    EXPECT(!metrics_open("/nonexistent-dir/m.jsonl", err, sizeof(err)) && contains(err, "/nonexistent-dir"),
           "bad path: '%s'", err);
    metrics_write(NULL, "{}");  // a NULL log is a no-op
}

// runs `--child MODE ARG`, returns its exit status with stdout+stderr in out
static int run_child(const char *mode, const char *arg, char *out, size_t outlen) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t pid = spawn_child(mode, arg, fds[1]);
    close(fds[1]);
    size_t n = 0;
    ssize_t k;
    while (n + 1 < outlen && (k = read(fds[0], out + n, outlen - 1 - n)) > 0) n += (size_t)k;
    out[n] = '\0';
    close(fds[0]);
    double took;
    int status = wait_child(pid, 10.0, &took);
    return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int child_cli(const char *mode, const char *arg) {
    if (!strcmp(mode, "version")) cli_print_version("test");
    else if (!strcmp(mode, "long")) printf("%ld\n", cli_parse_long("test", "--steps", arg, 1, 1000));
    else if (!strcmp(mode, "double")) printf("%g\n", cli_parse_double("test", "--guidance", arg, 0, 20));
    else if (!strcmp(mode, "usage")) cli_usage_error("test", "unknown option '%s'", arg);
    return 0;
}

static void test_cli_parsing(void) {
    char out[2048];
    EXPECT(run_child("version", "", out, sizeof(out)) == 0 && contains(out, "doppel-test " DOPPEL_VERSION " (OpenBLAS ") &&
               contains(out, "CUDA: "),
           "--version: '%s'", out);
    printf("  version: %s", out);
    EXPECT(run_child("long", "250", out, sizeof(out)) == 0 && !strcmp(out, "250\n"), "250: '%s'", out);
    const char *bad_long[] = {"", "12x", "0", "1001", "99999999999999999999", " 5"};
    for (size_t i = 0; i < sizeof(bad_long) / sizeof(bad_long[0]); i++) {
        int rc = run_child("long", bad_long[i], out, sizeof(out));
        EXPECT(rc == EXIT_USAGE && contains(out, "--steps") && contains(out, "try 'doppel-test --help'"),
               "'%s': exit %d, '%s'", bad_long[i], rc, out);
    }
    printf("  bad --steps: %s", out);
    EXPECT(run_child("double", "7.5", out, sizeof(out)) == 0 && !strcmp(out, "7.5\n"), "7.5: '%s'", out);
    const char *bad_double[] = {"nan", "inf", "-1", "3,5", "1e400"};
    for (size_t i = 0; i < sizeof(bad_double) / sizeof(bad_double[0]); i++)
        EXPECT(run_child("double", bad_double[i], out, sizeof(out)) == EXIT_USAGE && contains(out, "--guidance"),
               "'%s': '%s'", bad_double[i], out);
    EXPECT(run_child("usage", "--frobnicate", out, sizeof(out)) == EXIT_USAGE && contains(out, "'--frobnicate'"),
           "usage error: '%s'", out);
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "--child")) {
        const char *arg = argc >= 4 ? argv[3] : "";
        if (!strcmp(argv[2], "recv") || !strcmp(argv[2], "send")) return child_blocked(argv[2], atoi(arg));
        return child_cli(argv[2], arg);
    }
    RUN(test_endpoint_parsing);
    RUN(test_socket_options);
    RUN(test_frame_round_trip);
    RUN(test_bad_frames_skipped);
    RUN(test_maxmsgsize_drops);
    RUN(test_timeouts);
    RUN(test_signal_interrupts_waits);
    RUN(test_pipeline_fan_out_fan_in);
    RUN(test_progress_lines);
    RUN(test_metrics_jsonl);
    RUN(test_cli_parsing);
    zsock_term();
    return tl_finish();
}
