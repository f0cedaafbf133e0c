// test_disc.c: the adversarial term of VAE training: LeakyReLU and the hinge losses
// (common/ops/activations.h) against PyTorch fixtures (tests/reference/ops.py) and by finite
// differences; the patch discriminator (common/models/patch_disc.h) against a PyTorch
// NLayerDiscriminator with GroupNorm (tests/reference/disc.py), its init, its one-batch hinge step,
// that it learns to tell spectrograms from noise; and vae_train_step_disc: off before disc_start
// (bit-exact vae_train_step), the generator gradient through D by finite differences, taming's
// adaptive weight recomputed independently.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "data/dataset.h"
#include "models/patch_disc.h"
#include "models/vae_train.h"
#include "ops/activations.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "testlib.h"

#define ATOL 1e-5
#define RTOL 1e-5
#define FD_TOL 1e-2

static float *zeros(size_t n) { return xcalloc(n ? n : 1, sizeof(float)); }
static float *randn(size_t n, unsigned long long seed, float std) {
    float *x = xmalloc(n * sizeof(float));
    fill_randn(x, n, seed, std);
    return x;
}
static float *copy(const float *x, size_t n) {
    float *y = xmalloc(n * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}

// fd_check for losses with kinks (LeakyReLU, relu): float32 forwards need a step eps far larger
// than the distance of some pre-activation from 0, so a few coordinates see a kink inside
// [-eps, eps]. Such a coordinate shows as one-sided differences that disagree by more than tol
// (relative as fd_check's); it is skipped, and at most half of the coordinates may be (the first
// conv's weights each move 512 pre-activations of the fixture: about a third meet a kink).
static void fd_check_kinked(const char *what, float *x, const float *analytic, size_t n, FdLoss loss, void *ctx,
                            int samples, float eps, double tol) {
    int bad = 0, kinks = 0, tried = 0;
    double worst = 0, l0 = loss(ctx);
    size_t step = n > (size_t)samples ? n / (size_t)samples : 1;
    for (size_t i = 0, k = 0; i < n && k < (size_t)samples; i += step, k++) {
        size_t j = (i + k * 7) % n;  // fd_check's coordinates
        float orig = x[j];
        x[j] = orig + eps;
        double lp = loss(ctx);
        x[j] = orig - eps;
        double lm = loss(ctx);
        x[j] = orig;
        double fwd = (lp - l0) / eps, bwd = (l0 - lm) / eps, fd = (lp - lm) / (2.0 * (double)eps), an = analytic[j];
        double scale = fmax(1.0, fmax(fabs(fd), fabs(an)));
        tried++;
        if (fabs(fwd - bwd) / scale > tol) {
            kinks++;
            continue;
        }
        double err = fabs(fd - an) / scale;
        worst = fmax(worst, err);
        if (err > tol) {
            if (bad < 5) printf("  fd %s[%zu]: finite difference %.6g, analytic %.6g\n", what, j, fd, an);
            bad++;
        }
    }
    printf("  fd    %-40s worst relative error %.3g (tol %.1g), %d of %d at a kink\n", what, worst, tol, kinks, tried);
    EXPECT(!bad, "fd %s: %d coordinates disagree", what, bad);
    EXPECT(2 * kinks <= tried, "fd %s: %d of %d coordinates at a kink", what, kinks, tried);
}

// ======================================= ops =======================================

typedef struct {
    float *x, *out, *dout;
    size_t n;
} LreluCase;

static double lrelu_loss(void *p) {
    LreluCase *c = p;
    leaky_relu_forward(c->out, c->x, c->n, 0.2f);
    return dot_f64(c->out, c->dout, c->n);
}

static void test_leaky_relu(void) {
    SafeTensors *st = fx_open("op_leaky_relu");
    if (!st) return;
    size_t n;
    float *x = fx_f32(st, "x", &n), *dout = fx_f32(st, "dout", NULL), *want = fx_f32(st, "out", NULL);
    float *gx = fx_f32(st, "grad.x", NULL), *out = zeros(n), *dx = zeros(n);
    leaky_relu_forward(out, x, n, 0.2f);
    EXPECT_CLOSE("out", out, want, n, ATOL, RTOL);
    leaky_relu_backward(dx, dout, x, n, 0.2f);
    EXPECT_CLOSE("grad.x (slope at 0)", dx, gx, n, ATOL, RTOL);
    leaky_relu_backward(dx, dout, x, n, 0.2f);  // adds
    for (size_t i = 0; i < n; i++) gx[i] *= 2;
    EXPECT_CLOSE("grad.x accumulated twice", dx, gx, n, 1e-6, 1e-6);
    // finite differences away from the kink
    LreluCase c = {randn(200, 1, 1.0f), zeros(200), randn(200, 2, 1.0f), 200};
    float *an = zeros(200);
    leaky_relu_backward(an, c.dout, c.x, 200, 0.2f);
    fd_check("leaky_relu dx", c.x, an, 200, lrelu_loss, &c, 40, 1e-3f, FD_TOL);
    free(x), free(dout), free(want), free(gx), free(out), free(dx), free(c.x), free(c.out), free(c.dout), free(an);
    fx_close(st);
}

typedef struct {
    float *real, *fake;
    size_t n;
    float scale;  // the loss times n: O(1) gradients for fd_check's tolerance
} HingeCase;

static double hinge_d_loss(void *p) {
    HingeCase *c = p;
    return c->scale * (double)hinge_d_forward(c->real, c->fake, c->n);
}
static double hinge_g_loss(void *p) {
    HingeCase *c = p;
    return c->scale * (double)hinge_g_forward(c->fake, c->n);
}

static void test_hinge_d(void) {
    SafeTensors *st = fx_open("op_hinge_d");
    if (!st) return;
    size_t n;
    float *real = fx_f32(st, "logits_real", &n), *fake = fx_f32(st, "logits_fake", NULL), *want = fx_f32(st, "out", NULL);
    float *gr = fx_f32(st, "grad.logits_real", NULL), *gf = fx_f32(st, "grad.logits_fake", NULL);
    float got = hinge_d_forward(real, fake, n);
    EXPECT_CLOSE("out", &got, want, 1, 1e-6, 1e-6);
    float *dr = zeros(n), *df = zeros(n);
    hinge_d_backward(dr, df, real, fake, n, 1.0f);
    EXPECT_CLOSE("grad.logits_real (0 at the kink)", dr, gr, n, 1e-7, 1e-6);
    EXPECT_CLOSE("grad.logits_fake (0 at the kink)", df, gf, n, 1e-7, 1e-6);
    // dloss scales, NULL skips, backward adds
    float *dr2 = copy(dr, n);
    hinge_d_backward(dr2, NULL, real, fake, n, 2.0f);
    for (size_t i = 0; i < n; i++) gr[i] *= 3;
    EXPECT_CLOSE("grad.logits_real: + 2x, fake skipped", dr2, gr, n, 1e-7, 1e-6);
    // finite differences on logits off the kinks
    HingeCase c = {randn(64, 3, 1.5f), randn(64, 4, 1.5f), 64, 64.0f};
    for (int i = 0; i < 64; i++) {
        if (fabsf(fabsf(c.real[i]) - 1.0f) < 0.02f) c.real[i] += 0.05f;
        if (fabsf(fabsf(c.fake[i]) - 1.0f) < 0.02f) c.fake[i] += 0.05f;
    }
    float *ar = zeros(64), *af = zeros(64);
    hinge_d_backward(ar, af, c.real, c.fake, 64, c.scale);
    fd_check("hinge_d dreal (loss x n)", c.real, ar, 64, hinge_d_loss, &c, 64, 1e-2f, FD_TOL);
    fd_check("hinge_d dfake (loss x n)", c.fake, af, 64, hinge_d_loss, &c, 64, 1e-2f, FD_TOL);
    free(real), free(fake), free(want), free(gr), free(gf), free(dr), free(df), free(dr2);
    free(c.real), free(c.fake), free(ar), free(af);
    fx_close(st);
}

static void test_hinge_g(void) {
    SafeTensors *st = fx_open("op_hinge_g");
    if (!st) return;
    size_t n;
    float *fake = fx_f32(st, "logits_fake", &n), *want = fx_f32(st, "out", NULL), *gf = fx_f32(st, "grad.logits_fake", NULL);
    float got = hinge_g_forward(fake, n);
    EXPECT_CLOSE("out", &got, want, 1, 1e-6, 1e-6);
    float *df = zeros(n);
    hinge_g_backward(df, n, 1.0f);
    EXPECT_CLOSE("grad.logits_fake", df, gf, n, 1e-7, 1e-6);
    hinge_g_backward(df, n, 0.5f);
    for (size_t i = 0; i < n; i++) gf[i] *= 1.5f;
    EXPECT_CLOSE("grad.logits_fake, + 0.5x", df, gf, n, 1e-7, 1e-6);
    HingeCase c = {NULL, randn(32, 5, 1.0f), 32, 32.0f};
    float *an = zeros(32);
    hinge_g_backward(an, 32, c.scale);
    fd_check("hinge_g dfake (loss x n)", c.fake, an, 32, hinge_g_loss, &c, 32, 1e-2f, FD_TOL);
    free(fake), free(want), free(gf), free(df), free(c.fake), free(an);
    fx_close(st);
}

// ================================ patch discriminator ================================

typedef struct {
    PatchDiscriminator d;
    Arena arena;
    Rng rng;
    Ctx ctx;
} DiscEnv;

static void env_init(DiscEnv *e, int C, int ndf, int n_layers, uint64_t seed) {
    patch_disc_build(&e->d, C, ndf, n_layers);
    rng_seed(&e->rng, seed);
    patch_disc_init(&e->d, &e->rng);
    arena_init(&e->arena, 0);
    ctx_init(&e->ctx, &e->d.ps, &e->arena, &e->rng);
}

static void env_free(DiscEnv *e) {
    ctx_free(&e->ctx);
    arena_free(&e->arena);
    patch_disc_free(&e->d);
}

typedef struct {
    DiscEnv *e;
    Tensor x;
    const float *dout;
} DiscLoss;

static double disc_dot_loss(void *p) {  // sum(D(x) * dout)
    DiscLoss *c = p;
    arena_reset(&c->e->arena);
    Tensor y = patch_disc_forward(&c->e->ctx, &c->e->d, c->x);
    return dot_f64(y.d, c->dout, tensor_numel(y));
}

static void test_patch_disc_fixture(void) {
    SafeTensors *st = fx_open("patch_disc");
    if (!st) return;
    json_t *cfg = fx_config(st);
    int C = (int)json_integer_value(json_object_get(cfg, "input_nc")), ndf = (int)json_integer_value(json_object_get(cfg, "ndf"));
    int nl = (int)json_integer_value(json_object_get(cfg, "n_layers"));
    DiscEnv e;
    env_init(&e, C, ndf, nl, 1);
    ParamSet *ps = &e.d.ps;
    // the same parameters under the same names, both ways
    int n_fx = 0;
    for (int i = 0; i < st->count; i++) n_fx += strncmp(st->tensors[i].name, "main.", 5) == 0;
    EXPECT(n_fx == ps->count, "fixture has %d parameters, the discriminator %d", n_fx, ps->count);
    for (int i = 0; i < ps->count; i++) {
        const ParamInfo *p = &ps->info[i];
        const StTensor *t = st_find(st, p->name);
        EXPECT(t && t->numel == p->numel, "parameter %s: %s", p->name, t ? "size differs" : "not in the fixture");
        if (t && t->numel == p->numel) st_to_f32(ps->data + p->offset, t);
    }
    if (tl_current_failed()) goto done;
    const StTensor *tx = st_find(st, "x");
    size_t nx, nout;
    float *x = fx_f32(st, "x", &nx), *dout = fx_f32(st, "dout", &nout), *want = fx_f32(st, "out", NULL);
    Tensor xt = {x, (int)tx->shape[0], (int)tx->shape[1], (int)tx->shape[2], (int)tx->shape[3]};
    Tensor y = patch_disc_forward(&e.ctx, &e.d, xt);
    EXPECT(tensor_numel(y) == nout && y.C == 1 && y.H == 2 && y.W == 2, "logits (%d,%d,%d,%d)", y.N, y.C, y.H, y.W);
    EXPECT_CLOSE("out", y.d, want, nout, ATOL, RTOL);
    params_zero_grad(ps);
    Tensor dx = patch_disc_backward(&e.ctx, &e.d, (Tensor){dout, y.N, y.C, y.H, y.W});
    float *gx = fx_f32(st, "grad.x", NULL);
    EXPECT_CLOSE("grad.x", dx.d, gx, nx, ATOL, RTOL);
    char name[PARAM_NAME_MAX + 8];
    for (int i = 0; i < ps->count; i++) {
        snprintf(name, sizeof(name), "grad.%s", ps->info[i].name);
        float *g = fx_f32(st, name, NULL);
        if (g) EXPECT_CLOSE(name, grad_ptr(ps, i), g, ps->info[i].numel, ATOL, RTOL);
        free(g);
    }
    // finite differences on x and on every parameter tensor
    float *an_x = copy(dx.d, nx), *an_p = copy(ps->grad, ps->total);
    DiscLoss c = {&e, xt, dout};
    fd_check_kinked("patch_disc dx", x, an_x, nx, disc_dot_loss, &c, 30, 1e-3f, FD_TOL);
    for (int i = 0; i < ps->count; i++)
        fd_check_kinked(ps->info[i].name, ps->data + ps->info[i].offset, an_p + ps->info[i].offset, ps->info[i].numel,
                        disc_dot_loss, &c, 12, 3e-4f, FD_TOL);
    free(x), free(dout), free(want), free(gx), free(an_x), free(an_p);
done:
    json_decref(cfg);
    env_free(&e);
    fx_close(st);
}

static void moments(const float *x, size_t n, double *mean, double *std) {
    double s = 0, ss = 0;
    for (size_t i = 0; i < n; i++) s += x[i], ss += (double)x[i] * x[i];
    *mean = s / n;
    *std = sqrt(fmax(0, ss / n - *mean * *mean));
}

// taming's layout and init at its default size (ndf 32 here, n_layers 3)
static void test_patch_disc_build_init(void) {
    DiscEnv e;
    env_init(&e, 1, 32, 3, 7);
    ParamSet *ps = &e.d.ps;
    const char *names[] = {"main.0.weight", "main.0.bias", "main.2.weight", "main.3.weight", "main.3.bias",
                           "main.5.weight", "main.6.weight", "main.6.bias", "main.8.weight", "main.9.weight",
                           "main.9.bias", "main.11.weight", "main.11.bias"};
    EXPECT(ps->count == 13, "%d parameters", ps->count);
    for (int i = 0; i < 13; i++) EXPECT(params_find(ps, names[i]) >= 0, "no %s", names[i]);
    EXPECT(params_find(ps, "main.2.bias") < 0 && params_find(ps, "main.8.bias") < 0, "a conv before a norm has a bias");
    const int64_t w8[] = {256, 128, 4, 4};
    const ParamInfo *p8 = &ps->info[params_find(ps, "main.8.weight")];
    EXPECT(memcmp(p8->shape, w8, sizeof(w8)) == 0, "main.8.weight shape");
    EXPECT(e.d.norm[1].G == 32 && e.d.norm[3].G == 32, "groups %d %d", e.d.norm[1].G, e.d.norm[3].G);
    double mean, std;
    int id = params_find(ps, "main.8.weight");
    moments(param_ptr(ps, id), ps->info[id].numel, &mean, &std);
    printf("  main.8.weight mean %.2g std %.4f (taming: N(0, 0.02))\n", mean, std);
    EXPECT(fabs(mean) < 1e-3 && fabs(std - 0.02) < 0.001, "conv weight mean %g std %g", mean, std);
    id = params_find(ps, "main.9.weight");
    moments(param_ptr(ps, id), 256, &mean, &std);
    printf("  main.9.weight mean %.4f std %.4f (taming: N(1, 0.02))\n", mean, std);
    EXPECT(fabs(mean - 1) < 0.005 && fabs(std - 0.02) < 0.005, "norm weight mean %g std %g", mean, std);
    id = params_find(ps, "main.9.bias");
    moments(param_ptr(ps, id), 256, &mean, &std);
    EXPECT(mean == 0 && std == 0, "norm bias not zero");
    // logits maps: 32x32 -> 2x2, 64x64 -> 6x6
    Tensor x = ctx_zeros(&e.ctx, 2, 1, 64, 64);
    fill_randn(x.d, tensor_numel(x), 9, 1.0f);
    Tensor y = patch_disc_forward(&e.ctx, &e.d, x);
    EXPECT(y.N == 2 && y.C == 1 && y.H == 6 && y.W == 6, "64x64 -> (%d,%d,%d,%d)", y.N, y.C, y.H, y.W);
    EXPECT(e.ctx.ps == ps, "ctx->ps restored");
    env_free(&e);
}

// patch_disc_train_step's one batch of 2N gives the gradients of two separate passes, and leaves a
// caller's ctx->ps alone
static void test_disc_step_one_batch(void) {
    DiscEnv e;
    env_init(&e, 1, 8, 3, 11);
    ParamSet *ps = &e.d.ps, other = {0};
    Tensor real = ctx_tensor(&e.ctx, 3, 1, 32, 32), fake = ctx_tensor(&e.ctx, 3, 1, 32, 32);
    fill_randn(real.d, tensor_numel(real), 1, 1.0f);
    fill_randn(fake.d, tensor_numel(fake), 2, 0.3f);
    for (size_t i = 0; i < tensor_numel(fake); i++) fake.d[i] += 0.5f;
    // separately: D(real) then D(fake), hinge_d's two halves
    params_zero_grad(ps);
    Tensor lr = patch_disc_forward(&e.ctx, &e.d, real);
    size_t nl = tensor_numel(lr);
    float *logit_r = copy(lr.d, nl);
    Tensor dl = ctx_zeros(&e.ctx, lr.N, 1, lr.H, lr.W);
    hinge_d_backward(dl.d, NULL, lr.d, NULL, nl, 1.0f);
    patch_disc_backward(&e.ctx, &e.d, dl);
    Tensor lf = patch_disc_forward(&e.ctx, &e.d, fake);
    float want_loss = hinge_d_forward(logit_r, lf.d, nl);
    dl = ctx_zeros(&e.ctx, lf.N, 1, lf.H, lf.W);
    hinge_d_backward(NULL, dl.d, NULL, lf.d, nl, 1.0f);
    patch_disc_backward(&e.ctx, &e.d, dl);
    float *want = copy(ps->grad, ps->total), *before = copy(ps->data, ps->total);
    AdamW opt;
    adamw_init(&opt, ps, 1e-3f, 0.5f, 0.9f, 1e-8f, 0.0f);
    e.ctx.ps = &other;  // a caller's (VAE) ParamSet: the discriminator must not touch it
    float loss = patch_disc_train_step(&e.ctx, &e.d, &opt, 1e-3f, 0.0f, real, fake);
    EXPECT(e.ctx.ps == &other, "ctx->ps not restored");
    EXPECT_CLOSE("hinge_d, one batch vs two", &loss, &want_loss, 1, 1e-6, 1e-5);
    EXPECT_CLOSE("D grads, one batch vs two", ps->grad, want, ps->total, 1e-6, 1e-4);
    int moved = 0;
    for (size_t i = 0; i < ps->total; i++) moved += ps->data[i] != before[i];
    EXPECT(moved > 1000 && opt.step == 1, "the step moved %d values", moved);
    printf("  hinge_d %.4f, one AdamW step moved %d of %zu floats\n", loss, moved, ps->total);
    free(logit_r), free(want), free(before);
    env_free(&e);
}

// a few hundred steps on simulated spectrograms (real) vs noise (fake) drive hinge_d down
static void test_disc_learns_real_vs_noise(void) {
    const int B = 4, S = 32, steps = 200;
    Dataset ds;
    dataset_synthetic(&ds, 4, 4, 21);
    Preprocess pp = {S, 1, CMAP_JET};
    float *imgs = xmalloc((size_t)16 * S * S * sizeof(float));
    char err[256];
    for (int i = 0; i < 16; i++) EXPECT(preprocess_sample(&ds, i, &pp, imgs + (size_t)i * S * S, err, sizeof(err)) == 0, "%s", err);
    DiscEnv e;
    env_init(&e, 1, 8, 3, 5);
    AdamW opt;
    adamw_init(&opt, &e.d.ps, 2e-4f, 0.5f, 0.9f, 1e-8f, 0.0f);  // taming's D optimizer betas
    Rng noise;
    rng_seed(&noise, 99);
    double first = 0, last = 0;  // the untrained D's loss; the mean of the last 10 steps
    for (int s = 0; s < steps; s++) {
        arena_reset(&e.arena);
        Tensor real = ctx_tensor(&e.ctx, B, 1, S, S), fake = ctx_tensor(&e.ctx, B, 1, S, S);
        for (int b = 0; b < B; b++) memcpy(real.d + (size_t)b * S * S, imgs + (size_t)((s * B + b) % 16) * S * S, (size_t)S * S * sizeof(float));
        rng_fill_normal(&noise, fake.d, (long)tensor_numel(fake), 0.0f, 0.5f);
        float d = patch_disc_train_step(&e.ctx, &e.d, &opt, 2e-4f, 1.0f, real, fake);
        EXPECT(isfinite(d), "step %d: hinge_d %g", s, d);
        if (s == 0) first = d;
        if (s >= steps - 10) last += d / 10;
        if (s % 50 == 0 || s == steps - 1) printf("  step %3d  hinge_d %.4f\n", s + 1, d);
    }
    printf("  hinge_d: untrained %.4f, last 10 steps %.4f\n", first, last);
    EXPECT(first > 0.5 && last < 0.1 * first, "hinge_d went from %.4f to %.4f", first, last);
    free(imgs);
    dataset_free(&ds);
    env_free(&e);
}

// ================================ VAE step with D ================================

typedef struct {
    AutoencoderKL m;
    PatchDiscriminator d;
    AdamW dopt;
    Arena arena;
    Rng rng;
    Ctx ctx;
    Tensor x;
    float *xdata;
} VaeEnv;

static void vae_env_init(VaeEnv *e) {
    VaeConfig c;
    preset_vae("tiny", &c);
    vae_build(&e->m, &c);
    rng_seed(&e->rng, 3);
    params_init(&e->m.ps, &e->rng);
    patch_disc_build(&e->d, 1, 8, 3);
    patch_disc_init(&e->d, &e->rng);
    // a discriminator with O(1) logits, so the generator gradient stands out of float32 noise
    for (int i = 0; i <= e->d.n_layers + 1; i++) {
        float *w = param_ptr(&e->d.ps, e->d.conv[i].weight);
        size_t n = e->d.ps.info[e->d.conv[i].weight].numel;
        for (size_t j = 0; j < n; j++) w[j] *= 10.0f;
    }
    adamw_init(&e->dopt, &e->d.ps, 1e-3f, 0.5f, 0.9f, 1e-8f, 0.0f);
    arena_init(&e->arena, 0);
    ctx_init(&e->ctx, &e->m.ps, &e->arena, &e->rng);
    Dataset ds;
    dataset_synthetic(&ds, 2, 1, 11);
    Preprocess pp = {32, 1, CMAP_JET};
    e->xdata = xmalloc(2 * 32 * 32 * sizeof(float));
    char err[256];
    for (int i = 0; i < 2; i++) EXPECT(preprocess_sample(&ds, i, &pp, e->xdata + i * 1024, err, sizeof(err)) == 0, "%s", err);
    dataset_free(&ds);
}

static void vae_env_free(VaeEnv *e) {
    free(e->xdata);
    ctx_free(&e->ctx);
    arena_free(&e->arena);
    patch_disc_free(&e->d);
    vae_free(&e->m);
}

// one micro-step from zeroed grads with the rng at a fixed state; returns a copy of the VAE grads
static float *vae_env_step_scaled(VaeEnv *e, const DiscLossConfig *dc, int64_t step, float scale, TrainLosses *l) {
    arena_reset(&e->arena);
    rng_seed(&e->rng, 42);
    params_zero_grad(&e->m.ps);
    Tensor x = ctx_tensor(&e->ctx, 2, 1, 32, 32);
    memcpy(x.d, e->xdata, 2 * 1024 * sizeof(float));
    TrainLossConfig lc = {.mse = 0, .kl_weight = 1e-6f, .ssim_weight = 0.1f, .spectral_weight = 0.1f};
    if (dc) vae_train_step_disc(&e->ctx, &e->m, x, &lc, dc, step, scale, l);
    else vae_train_step(&e->ctx, &e->m, x, &lc, scale, l);
    EXPECT(e->ctx.ps == &e->m.ps, "ctx->ps is the VAE's after the step");
    return copy(e->m.ps.grad, e->m.ps.total);
}
static float *vae_env_step(VaeEnv *e, const DiscLossConfig *dc, int64_t step, TrainLosses *l) {
    return vae_env_step_scaled(e, dc, step, 1.0f, l);
}

typedef struct {
    VaeEnv *e;
    double k;  // loss scale
} VaeFd;

// k * g, g = -mean(D(decode(sample(encode(x))))) drawn as vae_train_step draws it
static double vae_g_loss(void *p) {
    VaeFd *f = p;
    VaeEnv *e = f->e;
    arena_reset(&e->arena);
    rng_seed(&e->rng, 42);
    Tensor x = ctx_tensor(&e->ctx, 2, 1, 32, 32);
    memcpy(x.d, e->xdata, 2 * 1024 * sizeof(float));
    Tensor mom = vae_encode(&e->ctx, &e->m, x);
    int L = e->m.cfg.latent_channels;
    Tensor eps = ctx_tensor(&e->ctx, 2, L, mom.H, mom.W), z = ctx_tensor(&e->ctx, 2, L, mom.H, mom.W);
    rng_fill_normal(e->ctx.rng, eps.d, (long)tensor_numel(eps), 0, 1);
    gaussian_sample_forward(z.d, mom.d, eps.d, 2, L, mom.H * mom.W);
    Tensor logits = patch_disc_forward(&e->ctx, &e->d, vae_decode(&e->ctx, &e->m, z));
    double s = 0;
    for (size_t i = 0; i < tensor_numel(logits); i++) s += logits.d[i];
    return -f->k * s / (double)tensor_numel(logits);
}

static void test_vae_step_disc_off_before_start(void) {
    VaeEnv e;
    vae_env_init(&e);
    float *dbefore = copy(e.d.ps.data, e.d.ps.total);
    DiscLossConfig dc = {&e.d, &e.dopt, 0.5f, 1, 1e-3f, 1.0f, 100};
    TrainLosses l0, l1;
    float *g0 = vae_env_step(&e, NULL, 0, &l0), *g1 = vae_env_step(&e, &dc, 99, &l1);
    EXPECT(memcmp(g0, g1, e.m.ps.total * sizeof(float)) == 0, "grads differ before disc_start");
    EXPECT(memcmp(&l0, &l1, sizeof(l0)) == 0, "losses differ before disc_start");
    EXPECT(l1.g_loss == 0 && l1.d_loss == 0 && l1.g_weight == 0, "adversarial losses before disc_start");
    EXPECT(memcmp(dbefore, e.d.ps.data, e.d.ps.total * sizeof(float)) == 0 && e.dopt.step == 0, "D trained before disc_start");
    free(g0), free(g1), free(dbefore);
    vae_env_free(&e);
}

static void test_vae_step_disc_runs(void) {
    VaeEnv e;
    vae_env_init(&e);
    float *dbefore = copy(e.d.ps.data, e.d.ps.total);
    DiscLossConfig dc = {&e.d, &e.dopt, 0.5f, 1, 1e-3f, 1.0f, 100};
    TrainLosses l0, l;
    float *g0 = vae_env_step(&e, NULL, 0, &l0), *g = vae_env_step(&e, &dc, 100, &l);
    printf("  rec %.4f  g %.4f  d %.4f  g_weight %.4g  total %.4f (without D %.4f)\n", l.rec, l.g_loss, l.d_loss,
           l.g_weight, l.total, l0.total);
    EXPECT(isfinite(l.g_loss) && isfinite(l.d_loss) && isfinite(l.total) && l.d_loss > 0, "losses g %g d %g", l.g_loss, l.d_loss);
    EXPECT(l.g_weight > 0 && isfinite(l.g_weight), "adaptive weight %g", l.g_weight);
    EXPECT(fabsf(l.total - (l0.total + l.g_weight * l.g_loss)) <= 1e-5f * (1 + fabsf(l.total)), "total includes g_weight * g");
    EXPECT(l.rec == l0.rec && l.kl == l0.kl, "the other terms do not change");
    int moved = 0, changed = 0;
    for (size_t i = 0; i < e.d.ps.total; i++) moved += e.d.ps.data[i] != dbefore[i];
    for (size_t i = 0; i < e.m.ps.total; i++) changed += g[i] != g0[i];
    EXPECT(moved > 1000 && e.dopt.step == 1, "D took no step (%d floats moved)", moved);
    EXPECT(changed > 1000, "the generator term changed %d VAE gradients", changed);
    EXPECT(grads_finite(&e.m.ps), "VAE gradients are finite");
    free(g0), free(g), free(dbefore);
    vae_env_free(&e);
}

// with a fixed weight w the generator term adds w * dg/dtheta to the VAE's gradients: compare with
// finite differences of g; D is held fixed (lr 0) so every call sees the same discriminator
static void test_vae_step_disc_gradient(void) {
    VaeEnv e;
    vae_env_init(&e);
    const float w = 2.0f;
    DiscLossConfig dc = {&e.d, &e.dopt, w, 0, 0.0f, 0.0f, 0};
    TrainLosses l0, l;
    float *g0 = vae_env_step(&e, NULL, 0, &l0), *dg = vae_env_step(&e, &dc, 0, &l);
    EXPECT(l.g_weight == w, "fixed weight %g", l.g_weight);
    size_t n = e.m.ps.total;
    double big = 0;
    for (size_t i = 0; i < n; i++) dg[i] = (dg[i] - g0[i]) / w, big = fmax(big, fabs(dg[i]));
    VaeFd f = {&e, 1.0};
    double g_at = vae_g_loss(&f);
    printf("  g %.6f (the step's %.6f), max |dg/dtheta| %.3g\n", g_at, l.g_loss, big);
    EXPECT(fabs(g_at - l.g_loss) <= 1e-5 * (1 + fabs(g_at)), "g recomputed %g vs %g", g_at, l.g_loss);
    // fd_check's tolerance is relative to max(1, |fd|, |an|): normalise to the largest gradient
    f.k = 1.0 / big;
    for (size_t i = 0; i < n; i++) dg[i] = (float)(dg[i] / big);
    const char *tensors[] = {"decoder.conv_out.weight", "decoder.up_blocks.1.resnets.0.conv1.weight",
                             "decoder.mid_block.attentions.0.to_v.weight", "post_quant_conv.weight",
                             "encoder.down_blocks.0.resnets.0.conv2.weight"};
    for (int t = 0; t < 5; t++) {
        int id = params_find(&e.m.ps, tensors[t]);
        EXPECT(id >= 0, "no %s", tensors[t]);
        if (id < 0) continue;
        const ParamInfo *p = &e.m.ps.info[id];
        fd_check_kinked(tensors[t], e.m.ps.data + p->offset, dg + p->offset, p->numel, vae_g_loss, &f, 6, 3e-4f, FD_TOL);
    }
    free(g0), free(dg);
    vae_env_free(&e);
}

// taming's adaptive weight, recomputed from the gradients with and without the generator term
static void test_vae_step_adaptive_weight(void) {
    VaeEnv e;
    vae_env_init(&e);
    DiscLossConfig fixed = {&e.d, &e.dopt, 1.0f, 0, 0.0f, 0.0f, 0}, adaptive = fixed;
    adaptive.disc_weight = 0.5f, adaptive.disc_adaptive = 1;
    TrainLosses l0, l1, l2;
    float *g0 = vae_env_step(&e, NULL, 0, &l0), *g1 = vae_env_step(&e, &fixed, 0, &l1), *g2 = vae_env_step(&e, &adaptive, 0, &l2);
    const ParamInfo *p = &e.m.ps.info[e.m.decoder.conv_out.weight];
    double rec = 0, g = 0;
    for (size_t j = p->offset; j < p->offset + p->numel; j++) {
        double gr = g0[j], gg = (double)g1[j] - g0[j];
        rec += gr * gr, g += gg * gg;
    }
    double want = 0.5 * fmin(fmax(sqrt(rec) / (sqrt(g) + 1e-4), 0.0), 1e4);
    printf("  ||grad rec|| %.4g  ||grad g|| %.4g at decoder.conv_out.weight: weight %.5g (step: %.5g)\n", sqrt(rec),
           sqrt(g), want, l2.g_weight);
    float wantf = (float)want;
    EXPECT_CLOSE("adaptive weight", &l2.g_weight, &wantf, 1, 0, 1e-4);
    // the gradients are those of rec + ... + weight * g
    float *expect = zeros(e.m.ps.total);
    for (size_t i = 0; i < e.m.ps.total; i++) expect[i] = g0[i] + l2.g_weight * (g1[i] - g0[i]);
    EXPECT_CLOSE("VAE grads with the adaptive weight", g2, expect, e.m.ps.total, 1e-6, 1e-3);
    // a micro-batch of an accumulated step (scale 1/4): the same weight, a quarter of the gradients
    TrainLosses l3;
    float *g3 = vae_env_step_scaled(&e, &adaptive, 0, 0.25f, &l3);
    EXPECT_CLOSE("adaptive weight at scale 1/4", &l3.g_weight, &l2.g_weight, 1, 0, 1e-5);
    for (size_t i = 0; i < e.m.ps.total; i++) expect[i] = 0.25f * g2[i];
    EXPECT_CLOSE("VAE grads at scale 1/4", g3, expect, e.m.ps.total, 1e-7, 1e-4);
    free(g0), free(g1), free(g2), free(g3), free(expect);
    vae_env_free(&e);
}

int main(void) {
    RUN(test_leaky_relu);
    RUN(test_hinge_d);
    RUN(test_hinge_g);
    RUN(test_patch_disc_fixture);
    RUN(test_patch_disc_build_init);
    RUN(test_disc_step_one_batch);
    RUN(test_disc_learns_real_vs_noise);
    RUN(test_vae_step_disc_off_before_start);
    RUN(test_vae_step_disc_runs);
    RUN(test_vae_step_disc_gradient);
    RUN(test_vae_step_adaptive_weight);
    return tl_finish();
}
