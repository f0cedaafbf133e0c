// test_ops_b.c: attention, nchw<->nlc, embedding, timestep embedding, dropout, avgpool and the
// losses: against PyTorch fixtures (tests/reference/ops.py), by finite differences, and for the
// backward conventions (+= accumulation, NULL gradients skipped, caller bugs stop loudly).
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "ops/ops.h"
#include "ops/triplet.h"
#include "testlib.h"

#define ATOL 1e-5
#define RTOL 1e-5
#define FD_TOL 1e-2

static float *zeros(size_t n) { return xcalloc(n, sizeof(float)); }
static float *randn(size_t n, unsigned long long seed, float std) {
    float *x = xmalloc(n * sizeof(float));
    fill_randn(x, n, seed, std);
    return x;
}

// integer tensor of a fixture as int32 (ids, labels)
static int32_t *fx_i32(const SafeTensors *st, const char *name, size_t *numel) {
    size_t n = 0;
    float *f = fx_f32(st, name, &n);
    if (!f) return NULL;
    int32_t *out = xmalloc((n ? n : 1) * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) out[i] = (int32_t)lrintf(f[i]);
    free(f);
    if (numel) *numel = n;
    return out;
}

static int cfg_int(json_t *cfg, const char *key) { return (int)json_integer_value(json_object_get(cfg, key)); }
static double cfg_num(json_t *cfg, const char *key) { return json_number_value(json_object_get(cfg, key)); }

// Runs fn(arg) in a child process; passes when it exits with status 1 and its stderr contains `want`.
static void expect_dies(const char *what, void (*fn)(void *), void *arg, const char *want) {
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe failed");
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork failed");
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        fn(arg);
        _exit(0);
    }
    close(fds[1]);
    char buf[2048];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof(buf) - 1 && (r = read(fds[0], buf + len, sizeof(buf) - 1 - len)) > 0) len += (size_t)r;
    buf[len] = 0;
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    EXPECT(code == 1, "%s: expected exit status 1 from a CHECK, got %d", what, code);
    EXPECT(strstr(buf, want) != NULL, "%s: message \"%s\" lacks \"%s\"", what, buf, want);
    printf("  dies  %-40s %s", what, buf);
}

// ===================================== attention =====================================

typedef struct {
    int N, L, NH, HD;
    float *q, *k, *v, *out, *att, *dout;
} AttCtx;

static double att_loss(void *p) {
    AttCtx *c = p;
    attention_forward(c->out, c->att, c->q, c->k, c->v, c->N, c->L, c->NH, c->HD);
    return dot_f64(c->out, c->dout, (size_t)c->N * c->L * c->NH * c->HD);
}

static void test_attention_fixture(void) {
    SafeTensors *st = fx_open("op_attention");
    if (!st) return;
    json_t *cfg = fx_config(st);
    int NH = cfg_int(cfg, "heads"), HD = cfg_int(cfg, "head_dim");
    json_decref(cfg);
    const StTensor *tq = st_find(st, "q");
    int N = (int)tq->shape[0], L = (int)tq->shape[1];
    EXPECT(tq->shape[2] == NH * HD, "q's last axis %lld != heads*head_dim %d", (long long)tq->shape[2], NH * HD);
    size_t n = (size_t)N * L * NH * HD, na = (size_t)N * NH * L * L;
    float *q = fx_f32(st, "q", NULL), *k = fx_f32(st, "k", NULL), *v = fx_f32(st, "v", NULL);
    float *dout = fx_f32(st, "dout", NULL), *want_out = fx_f32(st, "out", NULL), *want_att = fx_f32(st, "att", NULL);
    float *gq = fx_f32(st, "grad.q", NULL), *gk = fx_f32(st, "grad.k", NULL), *gv = fx_f32(st, "grad.v", NULL);
    float *out = zeros(n), *att = zeros(na), *dq = zeros(n), *dk = zeros(n), *dv = zeros(n);
    float *scratch = zeros(attention_scratch_floats(L));
    attention_forward(out, att, q, k, v, N, L, NH, HD);
    EXPECT_CLOSE("attention out", out, want_out, n, ATOL, RTOL);
    EXPECT_CLOSE("attention att", att, want_att, na, ATOL, RTOL);
    attention_backward(dq, dk, dv, dout, q, k, v, att, scratch, N, L, NH, HD);
    EXPECT_CLOSE("attention grad.q", dq, gq, n, ATOL, RTOL);
    EXPECT_CLOSE("attention grad.k", dk, gk, n, ATOL, RTOL);
    EXPECT_CLOSE("attention grad.v", dv, gv, n, ATOL, RTOL);
    float *bufs[] = {q, k, v, dout, want_out, want_att, gq, gk, gv, out, att, dq, dk, dv, scratch};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) free(bufs[i]);
    fx_close(st);
}

static void attention_fd_case(int N, int L, int NH, int HD, unsigned long long seed) {
    size_t n = (size_t)N * L * NH * HD, na = (size_t)N * NH * L * L;
    AttCtx c = {N, L, NH, HD, randn(n, seed, 1.0f), randn(n, seed + 1, 1.0f), randn(n, seed + 2, 1.0f),
                zeros(n), zeros(na), randn(n, seed + 3, 1.0f)};
    float *dq = zeros(n), *dk = zeros(n), *dv = zeros(n), *scratch = zeros(attention_scratch_floats(L));
    att_loss(&c);
    attention_backward(dq, dk, dv, c.dout, c.q, c.k, c.v, c.att, scratch, N, L, NH, HD);
    char name[96];
    snprintf(name, sizeof(name), "attention dq N%d L%d NH%d HD%d", N, L, NH, HD);
    fd_check(name, c.q, dq, n, att_loss, &c, 60, 1e-2f, FD_TOL);
    snprintf(name, sizeof(name), "attention dk N%d L%d NH%d HD%d", N, L, NH, HD);
    fd_check(name, c.k, dk, n, att_loss, &c, 60, 1e-2f, FD_TOL);
    snprintf(name, sizeof(name), "attention dv N%d L%d NH%d HD%d", N, L, NH, HD);
    fd_check(name, c.v, dv, n, att_loss, &c, 60, 1e-2f, FD_TOL);
    float *bufs[] = {c.q, c.k, c.v, c.out, c.att, c.dout, dq, dk, dv, scratch};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) free(bufs[i]);
}

static void test_attention_fd(void) {
    attention_fd_case(2, 5, 2, 3, 100);   // multi-head, odd L
    attention_fd_case(1, 7, 1, 4, 200);   // one head (the VAE's mid-block attention)
    attention_fd_case(3, 4, 3, 2, 300);
}

// The two schedules (pairs across threads with single-threaded BLAS; pairs in turn with threaded
// BLAS and rows across threads) give the same numbers, and each matches finite differences.
static void test_attention_schedules_agree(void) {
    const int N = 2, L = 65, NH = 2, HD = 64;  // L*L*HD above the per-pair threading threshold
    size_t n = (size_t)N * L * NH * HD, na = (size_t)N * NH * L * L;
    float *q = randn(n, 11, 1.0f), *k = randn(n, 12, 1.0f), *v = randn(n, 13, 1.0f), *dout = randn(n, 14, 1.0f);
    float *res[2][5];  // out, att, dq, dk, dv per schedule
    int saved = omp_get_max_threads();
    int threads[2] = {2, 16};  // 2: 2*pairs >= threads, pairs in parallel; 16: pairs in turn
    for (int s = 0; s < 2; s++) {
        omp_set_num_threads(threads[s]);
        for (int i = 0; i < 5; i++) res[s][i] = zeros(i == 1 ? na : n);
        float *scratch = zeros(attention_scratch_floats(L));
        attention_forward(res[s][0], res[s][1], q, k, v, N, L, NH, HD);
        attention_backward(res[s][2], res[s][3], res[s][4], dout, q, k, v, res[s][1], scratch, N, L, NH, HD);
        free(scratch);
    }
    omp_set_num_threads(saved);
    const char *names[5] = {"schedules agree: out", "schedules agree: att", "schedules agree: dq",
                            "schedules agree: dk", "schedules agree: dv"};
    for (int i = 0; i < 5; i++) EXPECT_CLOSE(names[i], res[1][i], res[0][i], i == 1 ? na : n, 1e-6, 1e-5);
    AttCtx c = {N, L, NH, HD, q, k, v, zeros(n), zeros(na), dout};
    fd_check("attention dq L65 HD64", c.q, res[0][2], n, att_loss, &c, 40, 1e-2f, FD_TOL);
    fd_check("attention dk L65 HD64", c.k, res[0][3], n, att_loss, &c, 40, 1e-2f, FD_TOL);
    fd_check("attention dv L65 HD64", c.v, res[0][4], n, att_loss, &c, 40, 1e-2f, FD_TOL);
    free(c.out), free(c.att), free(q), free(k), free(v), free(dout);
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < 5; i++) free(res[s][i]);
}

// attention rows sum to 1; NULL gradients are skipped without changing the others
static void test_attention_null_grads(void) {
    const int N = 2, L = 5, NH = 2, HD = 3;
    size_t n = (size_t)N * L * NH * HD, na = (size_t)N * NH * L * L;
    float *q = randn(n, 21, 1.0f), *k = randn(n, 22, 1.0f), *v = randn(n, 23, 1.0f), *dout = randn(n, 24, 1.0f);
    float *out = zeros(n), *att = zeros(na), *scratch = zeros(attention_scratch_floats(L));
    float *dq = zeros(n), *dk = zeros(n), *dv = zeros(n), *dq1 = zeros(n), *dk1 = zeros(n), *dv1 = zeros(n);
    attention_forward(out, att, q, k, v, N, L, NH, HD);
    double worst = 0;
    for (size_t r = 0; r < (size_t)N * NH * L; r++) {
        double s = 0;
        for (int j = 0; j < L; j++) s += att[r * L + j];
        worst = fmax(worst, fabs(s - 1.0));
    }
    EXPECT(worst < 1e-6, "attention rows sum to 1 within %g", worst);
    attention_backward(dq, dk, dv, dout, q, k, v, att, scratch, N, L, NH, HD);
    attention_backward(dq1, NULL, NULL, dout, q, k, v, att, scratch, N, L, NH, HD);
    attention_backward(NULL, dk1, NULL, dout, q, k, v, att, scratch, N, L, NH, HD);
    attention_backward(NULL, NULL, dv1, dout, q, k, v, att, scratch, N, L, NH, HD);
    EXPECT_CLOSE("attention dq alone", dq1, dq, n, 0, 0);
    EXPECT_CLOSE("attention dk alone", dk1, dk, n, 0, 0);
    EXPECT_CLOSE("attention dv alone", dv1, dv, n, 0, 0);
    float *bufs[] = {q, k, v, dout, out, att, scratch, dq, dk, dv, dq1, dk1, dv1};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) free(bufs[i]);
}

static void test_nchw_nlc(void) {
    const int N = 2, C = 37, HW = 45;  // not multiples of the 32-wide tiles
    size_t n = (size_t)N * C * HW;
    float *x = randn(n, 31, 1.0f), *t = zeros(n), *back = zeros(n);
    nchw_to_nlc(t, x, N, C, HW);
    int bad = 0;
    for (int b = 0; b < N; b++)
        for (int c = 0; c < C; c++)
            for (int p = 0; p < HW; p++)
                bad += t[((size_t)b * HW + p) * C + c] != x[((size_t)b * C + c) * HW + p];
    EXPECT(bad == 0, "nchw_to_nlc: %d elements misplaced", bad);
    nlc_to_nchw(back, t, N, C, HW);
    EXPECT_CLOSE("nlc_to_nchw(nchw_to_nlc(x))", back, x, n, 0, 0);
    free(x), free(t), free(back);
}

// ===================================== embedding =====================================

static void test_embedding_fixture(void) {
    SafeTensors *st = fx_open("op_embedding");
    if (!st) return;
    size_t nw, nid, no;
    float *w = fx_f32(st, "weight", &nw), *want = fx_f32(st, "out", &no), *dout = fx_f32(st, "dout", NULL);
    float *gw = fx_f32(st, "grad.weight", NULL);
    int32_t *ids = fx_i32(st, "ids", &nid);
    int N = (int)nid, D = (int)(no / nid);
    float *out = zeros(no), *dw = zeros(nw);
    embedding_forward(out, ids, w, N, D);
    EXPECT_CLOSE("embedding out", out, want, no, ATOL, RTOL);
    embedding_backward(dw, dout, ids, N, D);  // ids repeat (4, 0, 4): rows accumulate
    EXPECT_CLOSE("embedding grad.weight", dw, gw, nw, ATOL, RTOL);
    free(w), free(want), free(dout), free(gw), free(ids), free(out), free(dw);
    fx_close(st);
}

typedef struct {
    int N, D;
    const int32_t *ids;
    float *table, *out, *dout;
} EmbCtx;

static double emb_loss(void *p) {
    EmbCtx *c = p;
    embedding_forward(c->out, c->ids, c->table, c->N, c->D);
    return dot_f64(c->out, c->dout, (size_t)c->N * c->D);
}

static void test_embedding_fd(void) {
    const int rows = 6, N = 5, D = 7;
    const int32_t ids[5] = {2, 5, 2, 0, 2};
    EmbCtx c = {N, D, ids, randn((size_t)rows * D, 41, 1.0f), zeros((size_t)N * D), randn((size_t)N * D, 42, 1.0f)};
    float *dt = zeros((size_t)rows * D);
    embedding_backward(dt, c.dout, ids, N, D);
    fd_check("embedding dtable", c.table, dt, (size_t)rows * D, emb_loss, &c, rows * D, 1e-2f, FD_TOL);
    free(c.table), free(c.out), free(c.dout), free(dt);
}

// ===================================== timesteps =====================================

typedef struct {
    int N, dim, flip;
    float shift, scale, max_period;
    float *t, *out, *dout;
} TsCtx;

static double ts_loss(void *p) {
    TsCtx *c = p;
    timestep_embedding_forward(c->out, c->t, c->N, c->dim, c->flip, c->shift, c->scale, c->max_period);
    return dot_f64(c->out, c->dout, (size_t)c->N * c->dim);
}

static void timesteps_fixture(const char *name) {
    SafeTensors *st = fx_open(name);
    if (!st) return;
    json_t *cfg = fx_config(st);
    size_t N;
    TsCtx c = {0};
    c.t = fx_f32(st, "t", &N);
    c.N = (int)N;
    c.dim = cfg_int(cfg, "dim");
    c.flip = json_is_true(json_object_get(cfg, "flip_sin_to_cos"));
    c.shift = (float)cfg_num(cfg, "downscale_freq_shift");
    c.scale = (float)cfg_num(cfg, "scale");
    c.max_period = (float)cfg_num(cfg, "max_period");
    json_decref(cfg);
    size_t n = N * (size_t)c.dim;
    float *want = fx_f32(st, "out", NULL), *gt = fx_f32(st, "grad.t", NULL), *dt = zeros(N);
    c.dout = fx_f32(st, "dout", NULL);
    c.out = zeros(n);
    char what[96];
    ts_loss(&c);
    snprintf(what, sizeof(what), "%s out", name);
    EXPECT_CLOSE(what, c.out, want, n, ATOL, RTOL);
    timestep_embedding_backward(dt, c.dout, c.t, c.N, c.dim, c.flip, c.shift, c.scale, c.max_period);
    snprintf(what, sizeof(what), "%s grad.t", name);
    EXPECT_CLOSE(what, dt, gt, N, ATOL, RTOL);
    free(c.t), free(c.out), free(c.dout), free(want), free(gt), free(dt);
    fx_close(st);
}

static void test_timesteps_fixture(void) { timesteps_fixture("op_timesteps"); }
static void test_timesteps_noflip_fixture(void) { timesteps_fixture("op_timesteps_noflip"); }

static void test_timesteps_fd(void) {
    // odd dim (zero-padded column), both orders, a shift, a scale
    const int dims[3] = {9, 16, 7}, flips[3] = {1, 0, 1};
    const float shifts[3] = {1.0f, 0.0f, 1.0f}, scales[3] = {1.0f, 1.0f, 2.5f};
    for (int s = 0; s < 3; s++) {
        const int N = 6;
        TsCtx c = {N, dims[s], flips[s], shifts[s], scales[s], 10000.0f, randn(N, 50 + s, 3.0f),
                   zeros((size_t)N * dims[s]), randn((size_t)N * dims[s], 60 + s, 1.0f)};
        c.t[0] += 40.0f;  // one larger timestep
        float *dt = zeros(N);
        ts_loss(&c);
        if (dims[s] % 2) {
            int nonzero = 0;
            for (int i = 0; i < N; i++) nonzero += c.out[(size_t)i * dims[s] + dims[s] - 1] != 0.0f;
            EXPECT(nonzero == 0, "odd dim %d: padding column not zero in %d rows", dims[s], nonzero);
        }
        timestep_embedding_backward(dt, c.dout, c.t, N, c.dim, c.flip, c.shift, c.scale, c.max_period);
        char what[64];
        snprintf(what, sizeof(what), "timesteps dt dim %d flip %d", dims[s], flips[s]);
        fd_check(what, c.t, dt, N, ts_loss, &c, N, 1e-3f, FD_TOL);
        free(c.t), free(c.out), free(c.dout), free(dt);
    }
}

// ===================================== dropout =====================================

static void test_dropout(void) {
    const size_t n = 100000;
    const float p = 0.3f, keep = 1.0f / (1.0f - p);
    float *x = randn(n, 71, 1.0f), *out = zeros(n), *mask = zeros(n), *dout = randn(n, 72, 1.0f), *dx = zeros(n);
    Rng r;
    rng_seed(&r, 7);
    dropout_forward(out, mask, x, n, p, &r);
    size_t dropped = 0, other = 0, wrong = 0;
    for (size_t i = 0; i < n; i++) {
        if (mask[i] == 0.0f) dropped++;
        else if (mask[i] != keep) other++;
        if (out[i] != x[i] * mask[i]) wrong++;
    }
    double frac = (double)dropped / n, sigma = sqrt(p * (1 - p) / n);
    printf("  dropout p=%.2f: dropped fraction %.4f (|diff| %.1f sigma)\n", p, frac, fabs(frac - p) / sigma);
    EXPECT(fabs(frac - p) < 6 * sigma, "dropped fraction %.4f, expected %.2f +- %.4f", frac, p, 6 * sigma);
    EXPECT(other == 0, "%zu mask values neither 0 nor 1/(1-p) = %g", other, keep);
    EXPECT(wrong == 0, "%zu outputs differ from inp * mask", wrong);
    dropout_backward(dx, dout, mask, n, p);
    wrong = 0;
    for (size_t i = 0; i < n; i++) wrong += dx[i] != dout[i] * mask[i];
    EXPECT(wrong == 0, "backward: %zu gradients differ from dout * mask", wrong);

    // the same seed gives the same mask; another seed a different one
    float *mask2 = zeros(n), *out2 = zeros(n);
    rng_seed(&r, 7);
    dropout_forward(out2, mask2, x, n, p, &r);
    EXPECT(memcmp(mask, mask2, n * sizeof(float)) == 0, "same seed, different mask");
    rng_seed(&r, 8);
    dropout_forward(out2, mask2, x, n, p, &r);
    EXPECT(memcmp(mask, mask2, n * sizeof(float)) != 0, "different seeds, same mask");

    // p = 0: identity, no mask needed
    memset(dx, 0, n * sizeof(float));
    dropout_forward(out2, NULL, x, n, 0.0f, NULL);
    EXPECT_CLOSE("dropout p=0 out", out2, x, n, 0, 0);
    dropout_backward(dx, dout, NULL, n, 0.0f);
    EXPECT_CLOSE("dropout p=0 dinp", dx, dout, n, 0, 0);
    free(x), free(out), free(mask), free(dout), free(dx), free(mask2), free(out2);
}

typedef struct {
    size_t n;
    float p;
    float *x, *out, *mask, *dout;
} DropCtx;

static double drop_loss(void *p) {
    DropCtx *c = p;
    Rng r;
    rng_seed(&r, 99);  // the same mask every call
    dropout_forward(c->out, c->mask, c->x, c->n, c->p, &r);
    return dot_f64(c->out, c->dout, c->n);
}

static void test_dropout_fd(void) {
    const size_t n = 50;
    DropCtx c = {n, 0.4f, randn(n, 81, 1.0f), zeros(n), zeros(n), randn(n, 82, 1.0f)};
    float *dx = zeros(n);
    drop_loss(&c);
    dropout_backward(dx, c.dout, c.mask, n, c.p);
    fd_check("dropout dinp", c.x, dx, n, drop_loss, &c, (int)n, 1e-2f, FD_TOL);
    free(c.x), free(c.out), free(c.mask), free(c.dout), free(dx);
}

static void dropout_p1(void *arg) {
    float x = 1, out, mask;
    Rng r;
    rng_seed(&r, 1);
    dropout_forward(&out, &mask, &x, 1, 1.0f, &r);
}

// ===================================== avgpool =====================================

static void test_avgpool_fixture(void) {
    SafeTensors *st = fx_open("op_avgpool");
    if (!st) return;
    const StTensor *tx = st_find(st, "x");
    int N = (int)tx->shape[0], C = (int)tx->shape[1], HW = (int)(tx->shape[2] * tx->shape[3]);
    float *x = fx_f32(st, "x", NULL), *want = fx_f32(st, "out", NULL), *dout = fx_f32(st, "dout", NULL);
    float *gx = fx_f32(st, "grad.x", NULL), *out = zeros((size_t)N * C), *dx = zeros((size_t)N * C * HW);
    avgpool_forward(out, x, N, C, HW);
    EXPECT_CLOSE("avgpool out", out, want, (size_t)N * C, ATOL, RTOL);
    avgpool_backward(dx, dout, N, C, HW);
    EXPECT_CLOSE("avgpool grad.x", dx, gx, (size_t)N * C * HW, ATOL, RTOL);
    free(x), free(want), free(dout), free(gx), free(out), free(dx);
    fx_close(st);
}

typedef struct {
    int N, C, HW;
    float *x, *out, *dout;
} PoolCtx;

static double pool_loss(void *p) {
    PoolCtx *c = p;
    avgpool_forward(c->out, c->x, c->N, c->C, c->HW);
    return dot_f64(c->out, c->dout, (size_t)c->N * c->C);
}

static void test_avgpool_fd(void) {
    PoolCtx c = {2, 3, 7, randn(42, 91, 1.0f), zeros(6), randn(6, 92, 1.0f)};
    float *dx = zeros(42);
    avgpool_backward(dx, c.dout, c.N, c.C, c.HW);
    fd_check("avgpool dinp", c.x, dx, 42, pool_loss, &c, 42, 1e-2f, FD_TOL);
    free(c.x), free(c.out), free(c.dout), free(dx);
}

// ===================================== losses =====================================

// mse / l1 fixture: pred, target, out (1), grad.pred
static void pointwise_loss_fixture(const char *name, float (*fwd)(const float *, const float *, size_t),
                                   void (*bwd)(float *, const float *, const float *, size_t, float)) {
    SafeTensors *st = fx_open(name);
    if (!st) return;
    size_t n;
    float *pred = fx_f32(st, "pred", &n), *target = fx_f32(st, "target", NULL);
    float *want = fx_f32(st, "out", NULL), *gp = fx_f32(st, "grad.pred", NULL), *dp = zeros(n);
    float loss = fwd(pred, target, n);
    char what[64];
    snprintf(what, sizeof(what), "%s out", name);
    EXPECT_CLOSE(what, &loss, want, 1, ATOL, RTOL);
    bwd(dp, pred, target, n, 1.0f);
    snprintf(what, sizeof(what), "%s grad.pred", name);
    EXPECT_CLOSE(what, dp, gp, n, ATOL, RTOL);
    free(pred), free(target), free(want), free(gp), free(dp);
    fx_close(st);
}

static void test_mse_fixture(void) { pointwise_loss_fixture("op_mse", mse_forward, mse_backward); }
static void test_l1_fixture(void) { pointwise_loss_fixture("op_l1", l1_forward, l1_backward); }

typedef struct {
    size_t n;
    float dloss;
    float (*fwd)(const float *, const float *, size_t);
    float *pred, *target;
} PwCtx;

static double pw_loss(void *p) {
    PwCtx *c = p;
    return (double)c->dloss * c->fwd(c->pred, c->target, c->n);
}

static void test_mse_l1_fd(void) {
    const size_t n = 40;
    float *pred = randn(n, 101, 1.0f), *target = randn(n, 102, 1.0f), *dp = zeros(n);
    for (size_t i = 0; i < n; i++)  // keep |pred - target| > 0.05 so l1 is differentiable at +-eps
        if (fabsf(pred[i] - target[i]) < 0.05f) pred[i] = target[i] + (pred[i] >= target[i] ? 0.1f : -0.1f);
    PwCtx c = {n, 0.7f, mse_forward, pred, target};
    mse_backward(dp, pred, target, n, c.dloss);
    fd_check("mse dpred", pred, dp, n, pw_loss, &c, (int)n, 1e-2f, FD_TOL);
    memset(dp, 0, n * sizeof(float));
    c.fwd = l1_forward;
    l1_backward(dp, pred, target, n, c.dloss);
    fd_check("l1 dpred", pred, dp, n, pw_loss, &c, (int)n, 1e-3f, FD_TOL);
    // torch's sign(0) = 0: equal pred and target give no gradient
    float z = 0.0f;
    l1_backward(&z, target, target, 1, 1.0f);
    EXPECT(z == 0.0f, "l1 gradient at pred == target is %g, torch gives 0", z);
    free(pred), free(target), free(dp);
}

static void test_kl_fixture(void) {
    SafeTensors *st = fx_open("op_kl");
    if (!st) return;
    const StTensor *tm = st_find(st, "moments");
    int N = (int)tm->shape[0], C = (int)tm->shape[1] / 2, HW = (int)(tm->shape[2] * tm->shape[3]);
    size_t n = (size_t)N * 2 * C * HW;
    float *m = fx_f32(st, "moments", NULL), *want = fx_f32(st, "out", NULL), *wkl = fx_f32(st, "kl", NULL);
    float *gm = fx_f32(st, "grad.moments", NULL), *kl = zeros(N), *dm = zeros(n);
    float loss = kl_forward(kl, m, N, C, HW);  // the fixture has logvars 25 and -35: both clamped
    EXPECT_CLOSE("kl out", &loss, want, 1, ATOL, RTOL);
    EXPECT_CLOSE("kl per sample", kl, wkl, N, ATOL, RTOL);
    kl_backward(dm, m, N, C, HW, 1.0f);
    EXPECT_CLOSE("kl grad.moments", dm, gm, n, ATOL, RTOL);
    free(m), free(want), free(wkl), free(gm), free(kl), free(dm);
    fx_close(st);
}

typedef struct {
    int N, C, HW;
    float dloss;
    float *m;
} KlCtx;

static double kl_loss(void *p) {
    KlCtx *c = p;
    return (double)c->dloss * kl_forward(NULL, c->m, c->N, c->C, c->HW);
}

static void test_kl_fd(void) {
    const int N = 2, C = 3, HW = 5;
    size_t n = (size_t)N * 2 * C * HW;
    KlCtx c = {N, C, HW, 0.8f, randn(n, 111, 1.0f)};
    c.m[(size_t)C * HW + 2] = -35.0f;  // logvar below the clamp: no gradient
    c.m[(size_t)2 * C * HW + C * HW + 4] = -31.0f;
    float *dm = zeros(n);
    kl_backward(dm, c.m, N, C, HW, c.dloss);
    EXPECT(dm[(size_t)C * HW + 2] == 0.0f && dm[(size_t)2 * C * HW + C * HW + 4] == 0.0f,
           "clamped logvars got gradients %g, %g", dm[(size_t)C * HW + 2], dm[(size_t)2 * C * HW + C * HW + 4]);
    fd_check("kl dmoments", c.m, dm, n, kl_loss, &c, (int)n, 1e-2f, FD_TOL);
    free(c.m), free(dm);
}

static void test_gaussian_sample_fixture(void) {
    SafeTensors *st = fx_open("op_gaussian_sample");
    if (!st) return;
    const StTensor *tm = st_find(st, "moments");
    int N = (int)tm->shape[0], C = (int)tm->shape[1] / 2, HW = (int)(tm->shape[2] * tm->shape[3]);
    size_t nz = (size_t)N * C * HW;
    float *m = fx_f32(st, "moments", NULL), *eps = fx_f32(st, "eps", NULL), *want = fx_f32(st, "out", NULL);
    float *dz = fx_f32(st, "dout", NULL), *gm = fx_f32(st, "grad.moments", NULL);
    float *z = zeros(nz), *dm = zeros(2 * nz);
    gaussian_sample_forward(z, m, eps, N, C, HW);
    EXPECT_CLOSE("gaussian_sample out", z, want, nz, ATOL, RTOL);
    gaussian_sample_backward(dm, dz, m, eps, N, C, HW);
    EXPECT_CLOSE("gaussian_sample grad.moments", dm, gm, 2 * nz, ATOL, RTOL);
    free(m), free(eps), free(want), free(dz), free(gm), free(z), free(dm);
    fx_close(st);
}

typedef struct {
    int N, C, HW;
    float *m, *eps, *z, *dz;
} GsCtx;

static double gs_loss(void *p) {
    GsCtx *c = p;
    gaussian_sample_forward(c->z, c->m, c->eps, c->N, c->C, c->HW);
    return dot_f64(c->z, c->dz, (size_t)c->N * c->C * c->HW);
}

static void test_gaussian_sample_fd(void) {
    const int N = 2, C = 2, HW = 6;
    size_t nz = (size_t)N * C * HW;
    GsCtx c = {N, C, HW, randn(2 * nz, 121, 1.0f), randn(nz, 122, 1.0f), zeros(nz), randn(nz, 123, 1.0f)};
    c.m[(size_t)C * HW + 1] = 21.0f;   // logvar above the clamp: no gradient, std = exp(10)
    c.m[(size_t)C * HW + 3] = -33.0f;  // below
    float *dm = zeros(2 * nz);
    gaussian_sample_backward(dm, c.dz, c.m, c.eps, N, C, HW);
    EXPECT(dm[(size_t)C * HW + 1] == 0.0f && dm[(size_t)C * HW + 3] == 0.0f, "clamped logvars got gradients");
    fd_check("gaussian_sample dmoments", c.m, dm, 2 * nz, gs_loss, &c, (int)(2 * nz), 1e-2f, FD_TOL);
    free(c.m), free(c.eps), free(c.z), free(c.dz), free(dm);
}

static void test_cross_entropy_fixture(void) {
    SafeTensors *st = fx_open("op_cross_entropy");
    if (!st) return;
    size_t nl, N;
    float *logits = fx_f32(st, "logits", &nl), *want = fx_f32(st, "out", NULL), *gl = fx_f32(st, "grad.logits", NULL);
    int32_t *labels = fx_i32(st, "labels", &N);
    int K = (int)(nl / N);
    float *probs = zeros(nl), *dl = zeros(nl);
    float loss = cross_entropy_forward(probs, logits, labels, (int)N, K);
    EXPECT_CLOSE("cross_entropy out", &loss, want, 1, ATOL, RTOL);
    cross_entropy_backward(dl, probs, labels, (int)N, K, 1.0f);
    EXPECT_CLOSE("cross_entropy grad.logits", dl, gl, nl, ATOL, RTOL);
    free(logits), free(want), free(gl), free(labels), free(probs), free(dl);
    fx_close(st);
}

typedef struct {
    int N, K;
    float dloss;
    const int32_t *labels;
    float *logits, *probs;
} CeCtx;

static double ce_loss(void *p) {
    CeCtx *c = p;
    return (double)c->dloss * cross_entropy_forward(c->probs, c->logits, c->labels, c->N, c->K);
}

static void test_cross_entropy_fd(void) {
    const int N = 4, K = 7;
    const int32_t labels[4] = {6, 0, 3, 3};
    CeCtx c = {N, K, 1.3f, labels, randn((size_t)N * K, 131, 2.0f), zeros((size_t)N * K)};
    c.logits[5] += 80.0f;  // a large logit: the max subtraction keeps exp finite
    float *dl = zeros((size_t)N * K);
    float loss = cross_entropy_forward(c.probs, c.logits, labels, N, K);
    EXPECT(isfinite(loss), "cross entropy with a logit of 80 is %g", loss);
    cross_entropy_backward(dl, c.probs, labels, N, K, c.dloss);
    fd_check("cross_entropy dlogits", c.logits, dl, (size_t)N * K, ce_loss, &c, N * K, 1e-2f, FD_TOL);
    free(c.logits), free(c.probs), free(dl);
}

// ============================ batch norm, 2x2 average pool ============================

static void batchnorm_fixture(const char *name, int train) {
    SafeTensors *st = fx_open(name);
    if (!st) return;
    size_t nx, C;
    float *x = fx_f32(st, "x", &nx), *w = fx_f32(st, "weight", &C), *b = fx_f32(st, "bias", NULL);
    float *rm = fx_f32(st, "running_mean", NULL), *rv = fx_f32(st, "running_var", NULL);
    float *want = fx_f32(st, "out", NULL), *dout = fx_f32(st, "dout", NULL), *rm_after = fx_f32(st, "running_mean_after", NULL),
          *rv_after = fx_f32(st, "running_var_after", NULL), *gx = fx_f32(st, "grad.x", NULL),
          *gw = fx_f32(st, "grad.weight", NULL), *gb = fx_f32(st, "grad.bias", NULL);
    int N = 3, HW = (int)(nx / (3 * C));
    float *y = zeros(nx), *mean = zeros(C), *rstd = zeros(C), *dx = zeros(nx), *dw = zeros(C), *db = zeros(C);
    batchnorm_forward(y, mean, rstd, rm, rv, x, w, b, N, (int)C, HW, 1e-5f, 0.1f, train);
    EXPECT_CLOSE("batchnorm out", y, want, nx, ATOL, RTOL);
    EXPECT_CLOSE("batchnorm running_mean", rm, rm_after, C, ATOL, RTOL);
    EXPECT_CLOSE("batchnorm running_var", rv, rv_after, C, ATOL, RTOL);
    batchnorm_backward(dx, dw, db, dout, x, w, mean, rstd, N, (int)C, HW, train);
    EXPECT_CLOSE("batchnorm grad.x", dx, gx, nx, ATOL, RTOL);
    EXPECT_CLOSE("batchnorm grad.weight", dw, gw, C, ATOL, RTOL);
    EXPECT_CLOSE("batchnorm grad.bias", db, gb, C, ATOL, RTOL);
    free(x), free(w), free(b), free(rm), free(rv), free(want), free(dout), free(rm_after), free(rv_after), free(gx),
        free(gw), free(gb), free(y), free(mean), free(rstd), free(dx), free(dw), free(db);
    fx_close(st);
}

static void test_batchnorm_fixture(void) {
    batchnorm_fixture("op_batchnorm_train", 1);
    batchnorm_fixture("op_batchnorm_eval", 0);
}

typedef struct {
    int N, C, HW;
    float *x, *w, *b, *dout, *y, *mean, *rstd, *rm, *rv;
} BnCtx;

static double bn_loss(void *p) {
    BnCtx *c = p;
    batchnorm_forward(c->y, c->mean, c->rstd, NULL, NULL, c->x, c->w, c->b, c->N, c->C, c->HW, 1e-5f, 0.1f, 1);
    return dot_f64(c->y, c->dout, (size_t)c->N * c->C * c->HW);
}

static void test_batchnorm_fd(void) {
    int N = 4, C = 3, HW = 6;
    size_t n = (size_t)N * C * HW;
    BnCtx c = {N, C, HW, randn(n, 151, 2.0f), randn(C, 152, 1.0f), randn(C, 153, 1.0f), randn(n, 154, 1.0f), zeros(n),
               zeros(C), zeros(C), NULL, NULL};
    float *dx = zeros(n), *dw = zeros(C), *db = zeros(C);
    bn_loss(&c);
    batchnorm_backward(dx, dw, db, c.dout, c.x, c.w, c.mean, c.rstd, N, C, HW, 1);
    fd_check("batchnorm dinp (train)", c.x, dx, n, bn_loss, &c, 40, 1e-2f, FD_TOL);
    fd_check("batchnorm dweight (train)", c.w, dw, C, bn_loss, &c, C, 1e-2f, FD_TOL);
    // the training output has zero mean and unit (biased) variance per channel before the affine
    float one[3] = {1, 1, 1}, zero[3] = {0, 0, 0};
    batchnorm_forward(c.y, c.mean, c.rstd, NULL, NULL, c.x, one, zero, N, C, HW, 0.0f, 0.1f, 1);
    for (int ch = 0; ch < C; ch++) {
        double s = 0, ss = 0;
        for (int k = 0; k < N; k++)
            for (int i = 0; i < HW; i++) s += c.y[((size_t)k * C + ch) * HW + i], ss += pow(c.y[((size_t)k * C + ch) * HW + i], 2);
        EXPECT(fabs(s / (N * HW)) < 1e-5 && fabs(ss / (N * HW) - 1) < 1e-4, "channel %d: mean %g, var %g", ch, s / (N * HW),
               ss / (N * HW));
    }
    free(c.x), free(c.w), free(c.b), free(c.dout), free(c.y), free(c.mean), free(c.rstd), free(dx), free(dw), free(db);
}

static void test_avgpool2x2_fixture(void) {
    SafeTensors *st = fx_open("op_avgpool2x2");
    if (!st) return;
    size_t nx, no;
    float *x = fx_f32(st, "x", &nx), *want = fx_f32(st, "out", &no), *dout = fx_f32(st, "dout", NULL),
          *gx = fx_f32(st, "grad.x", NULL);
    float *y = zeros(no), *dx = zeros(nx);
    avgpool2x2_forward(y, x, 2, 3, 5, 7);
    EXPECT_CLOSE("avgpool2x2 out", y, want, no, ATOL, RTOL);
    avgpool2x2_backward(dx, dout, 2, 3, 5, 7);
    EXPECT_CLOSE("avgpool2x2 grad.x", dx, gx, nx, ATOL, RTOL);
    free(x), free(want), free(dout), free(gx), free(y), free(dx);
    fx_close(st);
}

// ============================ triplet loss (cosine, batch-hard) ============================

static void triplet_fixture(const char *name) {
    SafeTensors *st = fx_open(name);
    if (!st) return;
    size_t nz, N;
    float *z = fx_f32(st, "z", &nz), *want = fx_f32(st, "out", NULL), *gz = fx_f32(st, "grad.z", NULL);
    int32_t *labels = fx_i32(st, "labels", &N);
    json_t *cfg = fx_config(st);
    float margin = (float)json_real_value(json_object_get(cfg, "margin"));
    int D = (int)(nz / N);
    float *dz = zeros(nz);
    TripletStats ts;
    float loss = triplet_cosine_loss(dz, z, labels, (int)N, D, margin, 1.0f, &ts);
    EXPECT_CLOSE("triplet out", &loss, want, 1, ATOL, RTOL);
    EXPECT_CLOSE("triplet grad.z", dz, gz, nz, ATOL, RTOL);
    EXPECT(ts.anchors > 0 && ts.active > 0 && ts.active <= ts.anchors && ts.neg_dist >= 0, "stats %d %d %g", ts.anchors,
           ts.active, (double)ts.neg_dist);
    // backward adds into dz: a second call doubles it
    triplet_cosine_loss(dz, z, labels, (int)N, D, margin, 1.0f, NULL);
    for (size_t i = 0; i < nz; i++) gz[i] *= 2;
    EXPECT_CLOSE("triplet grad.z accumulated", dz, gz, nz, ATOL, RTOL);
    json_decref(cfg);
    free(z), free(want), free(gz), free(labels), free(dz);
    fx_close(st);
}

static void test_triplet_fixture(void) {
    triplet_fixture("op_triplet_cosine");       // some anchors inactive (margin 0.3), one without a positive
    triplet_fixture("op_triplet_cosine_wide");  // margin 1.5: every anchor active
}

typedef struct {
    int N, D;
    const int32_t *labels;
    float *z, dloss;
} TripletCtx;

static double triplet_fd_loss(void *p) {
    TripletCtx *c = p;
    return (double)c->dloss * triplet_cosine_loss(NULL, c->z, c->labels, c->N, c->D, 0.4f, 1.0f, NULL);
}

static void test_triplet_fd_and_edges(void) {
    const int N = 8, D = 5;
    const int32_t labels[8] = {0, 0, 1, 1, 2, 2, 3, 3};
    TripletCtx c = {N, D, labels, randn((size_t)N * D, 141, 1.5f), 0.7f};
    float *dz = zeros((size_t)N * D);
    triplet_cosine_loss(dz, c.z, labels, N, D, 0.4f, c.dloss, NULL);
    fd_check("triplet dz", c.z, dz, (size_t)N * D, triplet_fd_loss, &c, N * D, 1e-3f, FD_TOL);
    // scaling an embedding changes nothing (only directions count) and its gradient is orthogonal to it
    float before = triplet_cosine_loss(NULL, c.z, labels, N, D, 0.4f, 1.0f, NULL);
    double along = 0;
    for (int d = 0; d < D; d++) along += (double)dz[d] * c.z[d], c.z[d] *= 3.0f;
    float after = triplet_cosine_loss(NULL, c.z, labels, N, D, 0.4f, 1.0f, NULL);
    EXPECT(fabsf(after - before) < 1e-6f, "scaling z_0 by 3 moved the loss %g -> %g", (double)before, (double)after);
    EXPECT(fabs(along) < 1e-5, "dz_0 . z_0 = %g, expected 0", along);
    // no anchor has both a positive and a negative: loss 0, no gradient
    const int32_t all_same[8] = {0}, all_diff[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    float *dz2 = zeros((size_t)N * D);
    TripletStats ts;
    EXPECT(triplet_cosine_loss(dz2, c.z, all_same, N, D, 0.4f, 1.0f, &ts) == 0.0f && ts.anchors == 0, "one user: loss");
    EXPECT(triplet_cosine_loss(dz2, c.z, all_diff, N, D, 0.4f, 1.0f, &ts) == 0.0f && ts.anchors == 0, "no pairs: loss");
    for (int i = 0; i < N * D; i++) EXPECT(dz2[i] == 0.0f, "gradient %g without anchors", (double)dz2[i]);
    // well separated users (orthogonal directions): every hinge is 0 for a margin below 1
    float sep[8 * 5] = {0};
    for (int i = 0; i < N; i++) sep[i * D + labels[i]] = 1.0f + 0.1f * i;
    EXPECT(triplet_cosine_loss(NULL, sep, labels, N, D, 0.9f, 1.0f, &ts) == 0.0f && ts.anchors == N && ts.active == 0,
           "separated users: loss not 0 (%d active)", ts.active);
    free(c.z), free(dz), free(dz2);
}

static void ce_bad_label(void *arg) {
    float logits[6] = {0}, probs[6];
    int32_t labels[2] = {1, 3};  // K = 3
    cross_entropy_forward(probs, logits, labels, 2, 3);
}

static void test_caller_bugs_stop(void) {
    expect_dies("cross_entropy label 3 of K=3", ce_bad_label, NULL, "labels[1] = 3 is outside [0, 3)");
    expect_dies("dropout p=1", dropout_p1, NULL, "p = 1 must be in [0, 1)");
}

// ============================ backward accumulates (+=) ============================

// Runs a backward twice from zeroed gradients: the second call must double the first.
#define EXPECT_DOUBLES(what, g, n, call)                                  \
    do {                                                                  \
        memset((g), 0, (n) * sizeof(float));                              \
        call;                                                             \
        float *once_ = xmalloc((n) * sizeof(float));                      \
        for (size_t i_ = 0; i_ < (n); i_++) once_[i_] = 2.0f * (g)[i_];  \
        call;                                                             \
        EXPECT_CLOSE(what, (g), once_, (n), 1e-6, 1e-6);                  \
        free(once_);                                                      \
    } while (0)

static void test_backward_accumulates(void) {
    const int N = 2, L = 5, NH = 2, HD = 3, C = 3, HW = 4, K = 5, dim = 9;
    size_t n = (size_t)N * L * NH * HD, na = (size_t)N * NH * L * L, nc = (size_t)N * C * HW;
    float *q = randn(n, 141, 1.0f), *k = randn(n, 142, 1.0f), *v = randn(n, 143, 1.0f), *dout = randn(n, 144, 1.0f);
    float *out = zeros(n), *att = zeros(na), *scratch = zeros(attention_scratch_floats(L));
    float *g = zeros(4 * n), *g2 = zeros(n), *g3 = zeros(n);
    attention_forward(out, att, q, k, v, N, L, NH, HD);
    EXPECT_DOUBLES("2x attention dq", g, n, attention_backward(g, NULL, NULL, dout, q, k, v, att, scratch, N, L, NH, HD));
    EXPECT_DOUBLES("2x attention dk", g, n, attention_backward(NULL, g, NULL, dout, q, k, v, att, scratch, N, L, NH, HD));
    EXPECT_DOUBLES("2x attention dv", g, n, attention_backward(g2, g3, g, dout, q, k, v, att, scratch, N, L, NH, HD));

    const int32_t ids[3] = {1, 1, 0};
    EXPECT_DOUBLES("2x embedding", g, 2 * 4, embedding_backward(g, dout, ids, 3, 4));
    float t[2] = {3.0f, 500.0f};
    EXPECT_DOUBLES("2x timesteps", g, 2, timestep_embedding_backward(g, dout, t, 2, dim, 1, 0.0f, 1.0f, 10000.0f));
    float *mask = zeros(nc), *tmp = zeros(nc);
    Rng r;
    rng_seed(&r, 3);
    dropout_forward(tmp, mask, q, nc, 0.5f, &r);
    EXPECT_DOUBLES("2x dropout", g, nc, dropout_backward(g, dout, mask, nc, 0.5f));
    EXPECT_DOUBLES("2x dropout p=0", g, nc, dropout_backward(g, dout, NULL, nc, 0.0f));
    EXPECT_DOUBLES("2x avgpool", g, nc, avgpool_backward(g, dout, N, C, HW));
    EXPECT_DOUBLES("2x mse", g, nc, mse_backward(g, q, k, nc, 0.5f));
    EXPECT_DOUBLES("2x l1", g, nc, l1_backward(g, q, k, nc, 0.5f));
    EXPECT_DOUBLES("2x kl", g, 2 * nc, kl_backward(g, q, N, C, HW, 0.5f));
    EXPECT_DOUBLES("2x gaussian_sample", g, 2 * nc, gaussian_sample_backward(g, dout, q, k, N, C, HW));
    const int32_t labels[2] = {4, 0};
    float *probs = zeros((size_t)2 * K);
    cross_entropy_forward(probs, q, labels, 2, K);
    EXPECT_DOUBLES("2x cross_entropy", g, (size_t)2 * K, cross_entropy_backward(g, probs, labels, 2, K, 0.5f));
    float *bufs[] = {q, k, v, dout, out, att, scratch, g, g2, g3, mask, tmp, probs};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) free(bufs[i]);
}

int main(void) {
    RUN(test_attention_fixture);
    RUN(test_attention_fd);
    RUN(test_attention_schedules_agree);
    RUN(test_attention_null_grads);
    RUN(test_nchw_nlc);
    RUN(test_embedding_fixture);
    RUN(test_embedding_fd);
    RUN(test_timesteps_fixture);
    RUN(test_timesteps_noflip_fixture);
    RUN(test_timesteps_fd);
    RUN(test_dropout);
    RUN(test_dropout_fd);
    RUN(test_avgpool_fixture);
    RUN(test_avgpool_fd);
    RUN(test_mse_fixture);
    RUN(test_l1_fixture);
    RUN(test_mse_l1_fd);
    RUN(test_kl_fixture);
    RUN(test_kl_fd);
    RUN(test_gaussian_sample_fixture);
    RUN(test_gaussian_sample_fd);
    RUN(test_cross_entropy_fixture);
    RUN(test_cross_entropy_fd);
    RUN(test_batchnorm_fixture);
    RUN(test_batchnorm_fd);
    RUN(test_avgpool2x2_fixture);
    RUN(test_triplet_fixture);
    RUN(test_triplet_fd_and_edges);
    RUN(test_caller_bugs_stop);
    RUN(test_backward_accumulates);
    return tl_finish();
}
