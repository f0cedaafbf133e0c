// test_ops_a.c: conv2d, linear, group norm, SiLU, nearest upsample, concat, residual and the
// broadcast add: forward and every gradient against PyTorch fixtures (tests/reference/ops.py),
// and by finite differences (forward in float32, loss accumulated in double).
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ops/ops.h"
#include "testlib.h"

#define ATOL 1e-5
#define RTOL 1e-5
#define FD_TOL 1e-2

static float *zeros(size_t n) { return xcalloc(n ? n : 1, sizeof(float)); }
static float *randn(size_t n, unsigned long long seed) {
    float *x = xmalloc(n * sizeof(float));
    fill_randn(x, n, seed, 1.0f);
    return x;
}

// ---- conv2d ----
typedef struct {
    Conv2dDims d;
    float *x, *w, *b, *out, *dout, *scratch;
    size_t nout;
} ConvCase;

static double conv_loss(void *p) {
    ConvCase *c = p;
    conv2d_forward(c->out, c->x, c->w, c->b, c->scratch, c->d);
    return dot_f64(c->out, c->dout, c->nout);
}

static void conv_fixture(const char *name) {
    SafeTensors *st = fx_open(name);
    if (!st) return;
    json_t *cfg = fx_config(st);
    const StTensor *tx = st_find(st, "x"), *tw = st_find(st, "weight");
    json_t *pad = json_object_get(cfg, "pad");
    Conv2dDims d = {(int)tx->shape[0], (int)tx->shape[1], (int)tx->shape[2], (int)tx->shape[3], (int)tw->shape[0],
                    (int)tw->shape[2], (int)json_integer_value(json_object_get(cfg, "stride")),
                    (int)json_integer_value(json_array_get(pad, 0)), (int)json_integer_value(json_array_get(pad, 1)),
                    (int)json_integer_value(json_array_get(pad, 2)), (int)json_integer_value(json_array_get(pad, 3))};
    size_t nx, nw, nb, nout;
    ConvCase c = {d, fx_f32(st, "x", &nx), fx_f32(st, "weight", &nw), fx_f32(st, "bias", &nb), NULL,
                  fx_f32(st, "dout", &nout), NULL, 0};
    float *want = fx_f32(st, "out", &nout);
    EXPECT(nout == (size_t)d.N * d.OC * conv2d_oh(d) * conv2d_ow(d), "%s: output size %zu", name, nout);
    c.nout = nout;
    c.out = zeros(nout);
    c.scratch = zeros(conv2d_scratch_floats(d));
    conv2d_forward(c.out, c.x, c.w, c.b, c.scratch, d);
    EXPECT_CLOSE("out", c.out, want, nout, ATOL, RTOL);
    float *dx = zeros(nx), *dw = zeros(nw), *db = zeros(nb);
    conv2d_backward(dx, dw, db, c.dout, c.x, c.w, c.scratch, d);
    float *gx = fx_f32(st, "grad.x", NULL), *gw = fx_f32(st, "grad.weight", NULL), *gb = fx_f32(st, "grad.bias", NULL);
    EXPECT_CLOSE("grad.x", dx, gx, nx, ATOL, RTOL);
    EXPECT_CLOSE("grad.weight", dw, gw, nw, ATOL, RTOL);
    EXPECT_CLOSE("grad.bias", db, gb, nb, ATOL, RTOL);
    fd_check("conv dx", c.x, dx, nx, conv_loss, &c, 40, 1e-2f, FD_TOL);
    fd_check("conv dweight", c.w, dw, nw, conv_loss, &c, 40, 1e-2f, FD_TOL);
    fd_check("conv dbias", c.b, db, nb, conv_loss, &c, 4, 1e-2f, FD_TOL);
    // backward adds: a second call doubles every gradient
    float *dx2 = zeros(nx);
    memcpy(dx2, dx, nx * sizeof(float));
    conv2d_backward(dx2, NULL, NULL, c.dout, c.x, c.w, c.scratch, d);
    for (size_t i = 0; i < nx; i++) dx[i] *= 2;
    EXPECT_CLOSE("grad.x accumulated twice", dx2, dx, nx, 1e-6, 1e-6);
    free(c.x), free(c.w), free(c.b), free(c.dout), free(c.out), free(c.scratch), free(want);
    free(dx), free(dw), free(db), free(dx2), free(gx), free(gw), free(gb);
    json_decref(cfg);
    fx_close(st);
}

static void test_conv2d_3x3_s1(void) { conv_fixture("op_conv2d_3x3_s1"); }
static void test_conv2d_3x3_s2(void) { conv_fixture("op_conv2d_3x3_s2"); }
static void test_conv2d_1x1(void) { conv_fixture("op_conv2d_1x1"); }
static void test_conv2d_pad0101(void) { conv_fixture("op_conv2d_pad0101"); }

// a batch larger than one GEMM chunk must give the same result as image-by-image convolution
static void test_conv2d_chunking(void) {
    Conv2dDims d = {5, 3, 9, 7, 4, 3, 2, 1, 1, 1, 1}, d1 = d;
    d1.N = 1;
    size_t nx = (size_t)5 * 3 * 9 * 7, nw = 4 * 3 * 9, per = (size_t)4 * conv2d_oh(d) * conv2d_ow(d);
    float *x = randn(nx, 1), *w = randn(nw, 2), *b = randn(4, 3), *out = zeros(5 * per), *one = zeros(5 * per);
    float *s = zeros(conv2d_scratch_floats(d));
    conv2d_forward(out, x, w, b, s, d);
    for (int n = 0; n < 5; n++) conv2d_forward(one + n * per, x + (size_t)n * nx / 5, w, b, s, d1);
    EXPECT_CLOSE("batched vs per-image", out, one, 5 * per, 1e-6, 1e-6);
    free(x), free(w), free(b), free(out), free(one), free(s);
}

// Large maps (the row-tiled path: each thread unrolls tiles of output rows of its own images) and
// the same convolution one image at a time, against a plain loop in double: forward, dinp,
// dweight, dbias. C 16 makes each 40-wide tile 22 rows, so 40 output rows are two tiles whose
// input rows overlap.
static void conv_naive(double *out, double *dx, double *dw, double *db, const float *x, const float *w,
                       const float *b, const float *g, Conv2dDims d) {
    int OH = conv2d_oh(d), OW = conv2d_ow(d);
    for (int n = 0; n < d.N; n++)
        for (int oc = 0; oc < d.OC; oc++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    size_t o = (((size_t)n * d.OC + oc) * OH + oh) * OW + ow;
                    double s = b[oc];
                    db[oc] += g[o];
                    for (int c = 0; c < d.C; c++)
                        for (int kh = 0; kh < d.K; kh++)
                            for (int kw = 0; kw < d.K; kw++) {
                                int ih = oh * d.stride - d.pad_t + kh, iw = ow * d.stride - d.pad_l + kw;
                                if (ih < 0 || ih >= d.H || iw < 0 || iw >= d.W) continue;
                                size_t xi = (((size_t)n * d.C + c) * d.H + ih) * d.W + iw;
                                size_t wi = (((size_t)oc * d.C + c) * d.K + kh) * d.K + kw;
                                s += (double)w[wi] * x[xi];
                                dx[xi] += (double)w[wi] * g[o];
                                dw[wi] += (double)x[xi] * g[o];
                            }
                    out[o] = s;
                }
}

static void conv_large_case(Conv2dDims d) {
    size_t nx = (size_t)d.N * d.C * d.H * d.W, nw = (size_t)d.OC * d.C * d.K * d.K;
    size_t no = (size_t)d.N * d.OC * conv2d_oh(d) * conv2d_ow(d);
    EXPECT((size_t)conv2d_oh(d) * conv2d_ow(d) >= 1024, "the case must take the large-map path");
    float *x = randn(nx, 11), *w = randn(nw, 12), *b = randn(d.OC, 13), *g = randn(no, 14);
    double *ro = xcalloc(no, sizeof(double)), *rx = xcalloc(nx, sizeof(double)), *rw = xcalloc(nw, sizeof(double)),
           *rb = xcalloc(d.OC, sizeof(double));
    conv_naive(ro, rx, rw, rb, x, w, b, g, d);
    float *want[4] = {zeros(no), zeros(nx), zeros(nw), zeros(d.OC)};
    size_t len[4] = {no, nx, nw, (size_t)d.OC};
    double *ref[4] = {ro, rx, rw, rb};
    for (int k = 0; k < 4; k++)
        for (size_t i = 0; i < len[k]; i++) want[k][i] = (float)ref[k][i];
    Conv2dDims d1 = d;
    d1.N = 1;
    size_t per_x = nx / d.N, per_o = no / d.N;
    for (int one = 0; one < 2; one++) {  // the whole batch, then one image at a time
        float *out = zeros(no), *dx = zeros(nx), *dw = zeros(nw), *db = zeros(d.OC);
        float *s = zeros(conv2d_scratch_floats(d));
        if (!one) {
            conv2d_forward(out, x, w, b, s, d);
            conv2d_backward(dx, dw, db, g, x, w, s, d);
        } else {
            for (int n = 0; n < d.N; n++) {
                conv2d_forward(out + n * per_o, x + n * per_x, w, b, s, d1);
                conv2d_backward(dx + n * per_x, dw, db, g + n * per_o, x + n * per_x, w, s, d1);
            }
        }
        float *got[4] = {out, dx, dw, db};
        const char *what[4] = {"out", "dinp", "dweight", "dbias"};
        double atol[4] = {1e-4, 1e-4, 1e-3, 1e-3};  // the gradients of weights and biases sum more terms
        for (int k = 0; k < 4; k++) {
            char name[64];
            snprintf(name, sizeof(name), "large map, %s: %s", one ? "per image" : "batch", what[k]);
            EXPECT_CLOSE(name, got[k], want[k], len[k], atol[k], 1e-4);
        }
        free(out), free(dx), free(dw), free(db), free(s);
    }
    for (int k = 0; k < 4; k++) free(want[k]), free(ref[k]);
    free(x), free(w), free(b), free(g);
}

static void test_conv2d_large_maps(void) {
    conv_large_case((Conv2dDims){3, 16, 40, 40, 5, 3, 1, 1, 1, 1, 1});  // 3x3, stride 1, 40x40 out
    conv_large_case((Conv2dDims){3, 16, 80, 80, 5, 3, 2, 0, 1, 0, 1});  // stride 2, diffusers' (0,1,0,1) pad
    conv_large_case((Conv2dDims){2, 8, 33, 35, 4, 1, 1, 0, 0, 0, 0});   // 1x1 on an odd map
}

// ---- linear ----
typedef struct {
    float *x, *w, *b, *out, *dout;
    int N, IN, OUT;
} LinCase;

static double lin_loss(void *p) {
    LinCase *c = p;
    linear_forward(c->out, c->x, c->w, c->b, c->N, c->IN, c->OUT);
    return dot_f64(c->out, c->dout, (size_t)c->N * c->OUT);
}

static void test_linear(void) {
    SafeTensors *st = fx_open("op_linear");
    if (!st) return;
    const StTensor *tw = st_find(st, "weight");
    size_t nx, nw, nb, no;
    LinCase c = {fx_f32(st, "x", &nx), fx_f32(st, "weight", &nw), fx_f32(st, "bias", &nb), NULL, fx_f32(st, "dout", &no),
                 0, (int)tw->shape[1], (int)tw->shape[0]};
    c.N = (int)(nx / c.IN);
    c.out = zeros(no);
    float *want = fx_f32(st, "out", NULL);
    linear_forward(c.out, c.x, c.w, c.b, c.N, c.IN, c.OUT);
    EXPECT_CLOSE("out", c.out, want, no, ATOL, RTOL);
    float *dx = zeros(nx), *dw = zeros(nw), *db = zeros(nb);
    linear_backward(dx, dw, db, c.dout, c.x, c.w, c.N, c.IN, c.OUT);
    float *gx = fx_f32(st, "grad.x", NULL), *gw = fx_f32(st, "grad.weight", NULL), *gb = fx_f32(st, "grad.bias", NULL);
    EXPECT_CLOSE("grad.x", dx, gx, nx, ATOL, RTOL);
    EXPECT_CLOSE("grad.weight", dw, gw, nw, ATOL, RTOL);
    EXPECT_CLOSE("grad.bias", db, gb, nb, ATOL, RTOL);
    fd_check("linear dx", c.x, dx, nx, lin_loss, &c, 15, 1e-2f, FD_TOL);
    fd_check("linear dweight", c.w, dw, nw, lin_loss, &c, 20, 1e-2f, FD_TOL);
    fd_check("linear dbias", c.b, db, nb, lin_loss, &c, 4, 1e-2f, FD_TOL);
    free(c.x), free(c.w), free(c.b), free(c.out), free(c.dout), free(want);
    free(dx), free(dw), free(db), free(gx), free(gw), free(gb);
    fx_close(st);
}

// ---- group norm ----
typedef struct {
    float *x, *w, *b, *out, *mean, *rstd, *dout;
    int N, C, HW, G;
    float eps;
} GnCase;

static double gn_loss(void *p) {
    GnCase *c = p;
    groupnorm_forward(c->out, c->mean, c->rstd, c->x, c->w, c->b, c->N, c->C, c->HW, c->G, c->eps);
    return dot_f64(c->out, c->dout, (size_t)c->N * c->C * c->HW);
}

static void test_groupnorm(void) {
    SafeTensors *st = fx_open("op_groupnorm");
    if (!st) return;
    json_t *cfg = fx_config(st);
    const StTensor *tx = st_find(st, "x");
    size_t n;
    GnCase c = {fx_f32(st, "x", &n), fx_f32(st, "weight", NULL), fx_f32(st, "bias", NULL), NULL, NULL, NULL,
                fx_f32(st, "dout", NULL), (int)tx->shape[0], (int)tx->shape[1], (int)(tx->shape[2] * tx->shape[3]),
                (int)json_integer_value(json_object_get(cfg, "groups")),
                (float)json_number_value(json_object_get(cfg, "eps"))};
    c.out = zeros(n), c.mean = zeros((size_t)c.N * c.G), c.rstd = zeros((size_t)c.N * c.G);
    float *want = fx_f32(st, "out", NULL);
    groupnorm_forward(c.out, c.mean, c.rstd, c.x, c.w, c.b, c.N, c.C, c.HW, c.G, c.eps);
    EXPECT_CLOSE("out", c.out, want, n, ATOL, RTOL);
    float *dx = zeros(n), *dw = zeros((size_t)c.C), *db = zeros((size_t)c.C);
    groupnorm_backward(dx, dw, db, c.dout, c.x, c.w, c.mean, c.rstd, c.N, c.C, c.HW, c.G);
    float *gx = fx_f32(st, "grad.x", NULL), *gw = fx_f32(st, "grad.weight", NULL), *gb = fx_f32(st, "grad.bias", NULL);
    EXPECT_CLOSE("grad.x", dx, gx, n, ATOL, RTOL);
    EXPECT_CLOSE("grad.weight", dw, gw, (size_t)c.C, ATOL, RTOL);
    EXPECT_CLOSE("grad.bias", db, gb, (size_t)c.C, ATOL, RTOL);
    fd_check("groupnorm dx", c.x, dx, n, gn_loss, &c, 40, 1e-2f, FD_TOL);
    fd_check("groupnorm dweight", c.w, dw, (size_t)c.C, gn_loss, &c, 6, 1e-2f, FD_TOL);
    fd_check("groupnorm dbias", c.b, db, (size_t)c.C, gn_loss, &c, 6, 1e-2f, FD_TOL);
    free(c.x), free(c.w), free(c.b), free(c.out), free(c.mean), free(c.rstd), free(c.dout), free(want);
    free(dx), free(dw), free(db), free(gx), free(gw), free(gb);
    json_decref(cfg);
    fx_close(st);
}

// ---- pointwise and layout ops: silu, upsample, concat, residual, add_channel ----
typedef struct {
    int kind;  // 0 silu, 1 upsample, 2 concat, 3 residual, 4 add_channel
    float *a, *b, *out, *dout;
    int N, C, Cb, H, W;
    float scale;
    size_t nout;
} PwCase;

static void pw_forward(PwCase *c) {
    size_t n = (size_t)c->N * c->C * c->H * c->W;
    switch (c->kind) {
    case 0: silu_forward(c->out, c->a, n); break;
    case 1: upsample_nearest2x_forward(c->out, c->a, c->N, c->C, c->H, c->W); break;
    case 2: concat_channels_forward(c->out, c->a, c->b, c->N, c->C, c->Cb, c->H * c->W); break;
    case 3: residual_forward(c->out, c->a, c->b, c->scale, n); break;
    case 4: add_channel_forward(c->out, c->a, c->b, c->N, c->C, c->H * c->W); break;
    }
}

static void pw_backward(PwCase *c, float *da, float *db) {
    size_t n = (size_t)c->N * c->C * c->H * c->W;
    switch (c->kind) {
    case 0: silu_backward(da, c->dout, c->a, n); break;
    case 1: upsample_nearest2x_backward(da, c->dout, c->N, c->C, c->H, c->W); break;
    case 2: concat_channels_backward(da, db, c->dout, c->N, c->C, c->Cb, c->H * c->W); break;
    case 3: residual_backward(da, db, c->dout, c->scale, n); break;
    case 4: add_channel_backward(da, db, c->dout, c->N, c->C, c->H * c->W); break;
    }
}

static double pw_loss(void *p) {
    PwCase *c = p;
    pw_forward(c);
    return dot_f64(c->out, c->dout, c->nout);
}

// fixture (if any) + finite differences for one pointwise case
static void pw_run(const char *fixture, PwCase *c, const char *aname, const char *bname, size_t na, size_t nb) {
    float *da = zeros(na), *db = zeros(nb);
    c->out = zeros(c->nout);
    pw_forward(c);
    pw_backward(c, da, c->b ? db : NULL);
    if (fixture) {
        SafeTensors *st = fx_open(fixture);
        if (st) {
            char g[64];
            float *want = fx_f32(st, "out", NULL);
            EXPECT_CLOSE("out", c->out, want, c->nout, ATOL, RTOL);
            snprintf(g, sizeof(g), "grad.%s", aname);
            float *ga = fx_f32(st, g, NULL);
            EXPECT_CLOSE(g, da, ga, na, ATOL, RTOL);
            free(want), free(ga);
            if (bname) {
                snprintf(g, sizeof(g), "grad.%s", bname);
                float *gb = fx_f32(st, g, NULL);
                EXPECT_CLOSE(g, db, gb, nb, ATOL, RTOL);
                free(gb);
            }
            fx_close(st);
        }
    }
    fd_check(aname, c->a, da, na, pw_loss, c, 30, 1e-2f, FD_TOL);
    if (c->b) fd_check(bname ? bname : "b", c->b, db, nb, pw_loss, c, 20, 1e-2f, FD_TOL);
    free(da), free(db), free(c->out);
}

static PwCase pw_from_fixture(SafeTensors *st, int kind, const char *aname, const char *bname, size_t *na, size_t *nb) {
    const StTensor *ta = st_find(st, aname);
    PwCase c = {kind, fx_f32(st, aname, na), bname ? fx_f32(st, bname, nb) : NULL, NULL, fx_f32(st, "dout", NULL),
                (int)ta->shape[0], (int)ta->shape[1], 0, (int)ta->shape[2], (int)ta->shape[3], 1.0f, 0};
    if (bname) c.Cb = (int)st_find(st, bname)->shape[1];
    c.nout = st_find(st, "out")->numel;
    return c;
}

static void pw_fixture_case(const char *name, int kind, const char *aname, const char *bname, float scale) {
    SafeTensors *st = fx_open(name);
    if (!st) return;
    size_t na = 0, nb = 0;
    PwCase c = pw_from_fixture(st, kind, aname, bname, &na, &nb);
    c.scale = scale;
    fx_close(st);
    pw_run(name, &c, aname, bname, na, nb);
    free(c.a), free(c.b), free(c.dout);
}

static void test_silu(void) { pw_fixture_case("op_silu", 0, "x", NULL, 1.0f); }
static void test_upsample(void) { pw_fixture_case("op_upsample", 1, "x", NULL, 1.0f); }
static void test_concat(void) { pw_fixture_case("op_concat", 2, "a", "b", 1.0f); }
static void test_residual(void) { pw_fixture_case("op_residual", 3, "a", "b", 0.5f); }

static void test_add_channel(void) {  // no PyTorch op of its own: finite differences and a direct check
    PwCase c = {4, randn(2 * 3 * 20, 5), randn(2 * 3, 6), NULL, randn(2 * 3 * 20, 7), 2, 3, 0, 4, 5, 1.0f, 2 * 3 * 20};
    pw_run(NULL, &c, "inp", "vec", c.nout, 6);
    float *out = zeros(c.nout);
    add_channel_forward(out, c.a, c.b, 2, 3, 20);
    EXPECT(out[3 * 20 + 7] == c.a[3 * 20 + 7] + c.b[3], "add_channel broadcasts vec[n, c] over HW");
    free(out), free(c.a), free(c.b), free(c.dout);
}

int main(void) {
    RUN(test_conv2d_3x3_s1);
    RUN(test_conv2d_3x3_s2);
    RUN(test_conv2d_1x1);
    RUN(test_conv2d_pad0101);
    RUN(test_conv2d_chunking);
    RUN(test_conv2d_large_maps);
    RUN(test_linear);
    RUN(test_groupnorm);
    RUN(test_silu);
    RUN(test_upsample);
    RUN(test_concat);
    RUN(test_residual);
    RUN(test_add_channel);
    return tl_finish();
}
