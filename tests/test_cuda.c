// test_cuda.c: the CUDA backend against the CPU reference: every op forward and backward, the
// optimizer, whole UNet and VAE passes, a diffusion training step and guided sampling.
// fp32 tolerance |gpu - cpu| <= 1e-4 + 1e-4 |cpu| (the issue's), looser where stated: long
// chains (a 10-step sampler) compound float rounding. Built in every configuration; without a GPU
// (or a CUDA build) every test says so and skips.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <signal.h>

#include "check.h"
#include "cuda/cuda.h"
#include "io/safetensors.h"
#include "models/unet_folder.h"
#include "models/vae_train.h"
#include "proc.h"
#include "models/diffusion.h"
#include "models/models.h"
#include "ops/ops.h"
#include "optim/clip.h"
#include "optim/ema.h"
#include "testlib.h"

#define ATOL 1e-4
#define RTOL 1e-4

static unsigned long long seed = 1;

static int need_gpu(void) {
    if (cuda_available()) return 1;
    tl_skip("no CUDA GPU here (or a build without nvcc): the CPU reference is all there is");
    return 0;
}

static float *rnd(size_t n) {
    float *x = xmalloc((n ? n : 1) * sizeof(float));
    fill_randn(x, n, seed++, 1.0f);
    return x;
}
static float *up(const float *h, size_t n) {
    float *d = cuda_malloc((n ? n : 1) * sizeof(float));
    cuda_upload(d, h, n * sizeof(float));
    return d;
}
static void *up_bytes(const void *h, size_t bytes) {
    void *d = cuda_malloc(bytes ? bytes : 1);
    cuda_upload(d, h, bytes);
    return d;
}
// compares device memory with the CPU's result
static void same(const char *what, const float *dev, const float *cpu, size_t n, double atol, double rtol) {
    float *h = xmalloc((n ? n : 1) * sizeof(float));
    cuda_download(h, dev, n * sizeof(float));
    EXPECT_CLOSE(what, h, cpu, n, atol, rtol);
    free(h);
}
#define SAME(what, dev, cpu, n) same((what), (dev), (cpu), (n), ATOL, RTOL)

// ---- ops ----
static void conv_case(Conv2dDims d, int with_bias) {
    int OH = conv2d_oh(d), OW = conv2d_ow(d);
    size_t nin = (size_t)d.N * d.C * d.H * d.W, nout = (size_t)d.N * d.OC * OH * OW, nw = (size_t)d.OC * d.C * d.K * d.K;
    float *x = rnd(nin), *w = rnd(nw), *b = rnd(d.OC), *dy = rnd(nout);
    float *dx = rnd(nin), *dw = rnd(nw), *db = rnd(d.OC);  // backward adds into what is there
    float *y = xmalloc(nout * sizeof(float)), *scratch = xmalloc(conv2d_scratch_floats(d) * sizeof(float));
    float *x_d = up(x, nin), *w_d = up(w, nw), *b_d = up(b, d.OC), *dy_d = up(dy, nout), *dx_d = up(dx, nin),
          *dw_d = up(dw, nw), *db_d = up(db, d.OC), *y_d = cuda_malloc(nout * sizeof(float)),
          *s_d = cuda_malloc(conv2d_scratch_floats_cuda(d) * sizeof(float));
    conv2d_forward(y, x, w, with_bias ? b : NULL, scratch, d);
    conv2d_forward_cuda(y_d, x_d, w_d, with_bias ? b_d : NULL, s_d, d, NULL);
    char what[96];
    snprintf(what, sizeof(what), "conv2d K%d s%d pad %d%d%d%d %s forward", d.K, d.stride, d.pad_t, d.pad_b, d.pad_l,
             d.pad_r, with_bias ? "bias" : "no bias");
    SAME(what, y_d, y, nout);
    conv2d_backward(dx, dw, with_bias ? db : NULL, dy, x, w, scratch, d);
    conv2d_backward_cuda(dx_d, dw_d, with_bias ? db_d : NULL, dy_d, x_d, w_d, s_d, d, NULL);
    SAME("conv2d dinp", dx_d, dx, nin);
    SAME("conv2d dweight", dw_d, dw, nw);
    SAME("conv2d dbias", db_d, db, d.OC);
    free(x), free(w), free(b), free(dy), free(dx), free(dw), free(db), free(y), free(scratch);
    cuda_free(x_d), cuda_free(w_d), cuda_free(b_d), cuda_free(dy_d), cuda_free(dx_d), cuda_free(dw_d), cuda_free(db_d);
    cuda_free(y_d), cuda_free(s_d);
}

static void test_conv2d(void) {
    if (!need_gpu()) return;
    conv_case((Conv2dDims){3, 5, 9, 7, 6, 3, 1, 1, 1, 1, 1}, 1);
    conv_case((Conv2dDims){2, 4, 8, 8, 4, 3, 2, 0, 1, 0, 1}, 1);   // the VAE's Downsample2D
    conv_case((Conv2dDims){2, 6, 9, 9, 6, 3, 2, 1, 1, 1, 1}, 0);   // the UNet's
    conv_case((Conv2dDims){4, 32, 16, 16, 16, 1, 1, 0, 0, 0, 0}, 1);  // conv_shortcut
    conv_case((Conv2dDims){8, 64, 32, 32, 64, 3, 1, 1, 1, 1, 1}, 1);  // a small-preset layer
}

static void test_linear(void) {
    if (!need_gpu()) return;
    int N = 37, IN = 48, OUT = 29;
    float *x = rnd((size_t)N * IN), *w = rnd((size_t)OUT * IN), *b = rnd(OUT), *dy = rnd((size_t)N * OUT);
    float *dx = rnd((size_t)N * IN), *dw = rnd((size_t)OUT * IN), *db = rnd(OUT), *y = xmalloc((size_t)N * OUT * 4);
    float *x_d = up(x, N * IN), *w_d = up(w, OUT * IN), *b_d = up(b, OUT), *dy_d = up(dy, N * OUT),
          *dx_d = up(dx, N * IN), *dw_d = up(dw, OUT * IN), *db_d = up(db, OUT), *y_d = cuda_malloc((size_t)N * OUT * 4);
    linear_forward(y, x, w, b, N, IN, OUT);
    linear_forward_cuda(y_d, x_d, w_d, b_d, N, IN, OUT, NULL);
    SAME("linear forward", y_d, y, N * OUT);
    linear_backward(dx, dw, db, dy, x, w, N, IN, OUT);
    linear_backward_cuda(dx_d, dw_d, db_d, dy_d, x_d, w_d, N, IN, OUT, NULL);
    SAME("linear dinp", dx_d, dx, N * IN);
    SAME("linear dweight", dw_d, dw, OUT * IN);
    SAME("linear dbias", db_d, db, OUT);
    free(x), free(w), free(b), free(dy), free(dx), free(dw), free(db), free(y);
    cuda_free(x_d), cuda_free(w_d), cuda_free(b_d), cuda_free(dy_d), cuda_free(dx_d), cuda_free(dw_d), cuda_free(db_d),
        cuda_free(y_d);
}

static void test_groupnorm(void) {
    if (!need_gpu()) return;
    int N = 3, C = 16, HW = 35, G = 4;
    size_t n = (size_t)N * C * HW;
    float *x = rnd(n), *w = rnd(C), *b = rnd(C), *dy = rnd(n), *dx = rnd(n), *dw = rnd(C), *db = rnd(C);
    for (size_t i = 0; i < n; i++) x[i] = 3.0f + 2.0f * x[i];  // a mean and a scale to remove
    float *y = xmalloc(n * 4), *mean = xmalloc(N * G * 4), *rstd = xmalloc(N * G * 4);
    float *x_d = up(x, n), *w_d = up(w, C), *b_d = up(b, C), *dy_d = up(dy, n), *dx_d = up(dx, n), *dw_d = up(dw, C),
          *db_d = up(db, C), *y_d = cuda_malloc(n * 4), *mean_d = cuda_malloc(N * G * 4), *rstd_d = cuda_malloc(N * G * 4);
    groupnorm_forward(y, mean, rstd, x, w, b, N, C, HW, G, 1e-5f);
    groupnorm_forward_cuda(y_d, mean_d, rstd_d, x_d, w_d, b_d, N, C, HW, G, 1e-5f, NULL);
    SAME("groupnorm forward", y_d, y, n);
    SAME("groupnorm mean", mean_d, mean, N * G);
    SAME("groupnorm rstd", rstd_d, rstd, N * G);
    groupnorm_backward(dx, dw, db, dy, x, w, mean, rstd, N, C, HW, G);
    groupnorm_backward_cuda(dx_d, dw_d, db_d, dy_d, x_d, w_d, mean_d, rstd_d, N, C, HW, G, NULL);
    SAME("groupnorm dinp", dx_d, dx, n);
    SAME("groupnorm dweight", dw_d, dw, C);
    SAME("groupnorm dbias", db_d, db, C);
    free(x), free(w), free(b), free(dy), free(dx), free(dw), free(db), free(y), free(mean), free(rstd);
    cuda_free(x_d), cuda_free(w_d), cuda_free(b_d), cuda_free(dy_d), cuda_free(dx_d), cuda_free(dw_d), cuda_free(db_d);
    cuda_free(y_d), cuda_free(mean_d), cuda_free(rstd_d);
}

static void batchnorm_case(int train) {
    int N = 5, C = 12, HW = 37;
    size_t n = (size_t)N * C * HW;
    float *x = rnd(n), *w = rnd(C), *b = rnd(C), *dy = rnd(n), *dx = rnd(n), *dw = rnd(C), *db = rnd(C);
    float *rm = rnd(C), *rv = rnd(C);
    for (size_t i = 0; i < n; i++) x[i] = 3.0f + 2.0f * x[i];
    for (int c = 0; c < C; c++) rv[c] = 0.5f + fabsf(rv[c]);
    float *y = xmalloc(n * 4), *mean = xmalloc(C * 4), *rstd = xmalloc(C * 4);
    float *x_d = up(x, n), *w_d = up(w, C), *b_d = up(b, C), *dy_d = up(dy, n), *dx_d = up(dx, n), *dw_d = up(dw, C),
          *db_d = up(db, C), *rm_d = up(rm, C), *rv_d = up(rv, C), *y_d = cuda_malloc(n * 4), *mean_d = cuda_malloc(C * 4),
          *rstd_d = cuda_malloc(C * 4);
    batchnorm_forward(y, mean, rstd, rm, rv, x, w, b, N, C, HW, 1e-5f, 0.1f, train);
    batchnorm_forward_cuda(y_d, mean_d, rstd_d, rm_d, rv_d, x_d, w_d, b_d, N, C, HW, 1e-5f, 0.1f, train, NULL);
    SAME(train ? "batchnorm forward (train)" : "batchnorm forward (eval)", y_d, y, n);
    SAME("batchnorm mean", mean_d, mean, C);
    SAME("batchnorm rstd", rstd_d, rstd, C);
    SAME("batchnorm running_mean", rm_d, rm, C);
    SAME("batchnorm running_var", rv_d, rv, C);
    batchnorm_backward(dx, dw, db, dy, x, w, mean, rstd, N, C, HW, train);
    batchnorm_backward_cuda(dx_d, dw_d, db_d, dy_d, x_d, w_d, mean_d, rstd_d, N, C, HW, train, NULL);
    SAME("batchnorm dinp", dx_d, dx, n);
    SAME("batchnorm dweight", dw_d, dw, C);
    SAME("batchnorm dbias", db_d, db, C);
    free(x), free(w), free(b), free(dy), free(dx), free(dw), free(db), free(rm), free(rv), free(y), free(mean), free(rstd);
    cuda_free(x_d), cuda_free(w_d), cuda_free(b_d), cuda_free(dy_d), cuda_free(dx_d), cuda_free(dw_d), cuda_free(db_d);
    cuda_free(rm_d), cuda_free(rv_d), cuda_free(y_d), cuda_free(mean_d), cuda_free(rstd_d);
}

static void test_batchnorm_and_pool(void) {
    if (!need_gpu()) return;
    batchnorm_case(1);
    batchnorm_case(0);
    int N = 3, C = 4, H = 9, W = 6;  // an odd height: the last row is dropped
    size_t n = (size_t)N * C * H * W, no = (size_t)N * C * (H / 2) * (W / 2);
    float *x = rnd(n), *dy = rnd(no), *dx = rnd(n), *y = xmalloc(no * 4);
    float *x_d = up(x, n), *dy_d = up(dy, no), *dx_d = up(dx, n), *y_d = cuda_malloc(no * 4);
    avgpool2x2_forward(y, x, N, C, H, W);
    avgpool2x2_forward_cuda(y_d, x_d, N, C, H, W, NULL);
    SAME("avgpool2x2 forward", y_d, y, no);
    avgpool2x2_backward(dx, dy, N, C, H, W);
    avgpool2x2_backward_cuda(dx_d, dy_d, N, C, H, W, NULL);
    SAME("avgpool2x2 dinp", dx_d, dx, n);
    free(x), free(dy), free(dx), free(y);
    cuda_free(x_d), cuda_free(dy_d), cuda_free(dx_d), cuda_free(y_d);
}

static void test_elementwise(void) {
    if (!need_gpu()) return;
    int N = 3, C = 5, Cb = 3, H = 6, W = 7, HW = H * W;
    size_t n = (size_t)N * C * HW, nb = (size_t)N * Cb * HW, n4 = 4 * n;
    float *x = rnd(n), *y = rnd(n), *g = rnd(n), *acc = rnd(n), *xb = rnd(nb), *g4 = rnd(n4), *gc = rnd(n + nb);
    float *vec = rnd((size_t)N * C), *dvec = rnd((size_t)N * C), *out = xmalloc((n4 + nb) * 4), *accb = rnd(nb);
    float *x_d = up(x, n), *y_d = up(y, n), *g_d = up(g, n), *acc_d = up(acc, n), *xb_d = up(xb, nb), *g4_d = up(g4, n4),
          *gc_d = up(gc, n + nb), *vec_d = up(vec, N * C), *dvec_d = up(dvec, N * C), *accb_d = up(accb, nb),
          *out_d = cuda_malloc((n4 + nb) * 4);

    silu_forward(out, x, n), silu_forward_cuda(out_d, x_d, n, NULL);
    SAME("silu forward", out_d, out, n);
    silu_backward(acc, g, x, n), silu_backward_cuda(acc_d, g_d, x_d, n, NULL);
    SAME("silu backward", acc_d, acc, n);
    upsample_nearest2x_forward(out, x, N, C, H, W), upsample_nearest2x_forward_cuda(out_d, x_d, N, C, H, W, NULL);
    SAME("upsample forward", out_d, out, n4);
    upsample_nearest2x_backward(acc, g4, N, C, H, W), upsample_nearest2x_backward_cuda(acc_d, g4_d, N, C, H, W, NULL);
    SAME("upsample backward", acc_d, acc, n);
    concat_channels_forward(out, x, xb, N, C, Cb, HW), concat_channels_forward_cuda(out_d, x_d, xb_d, N, C, Cb, HW, NULL);
    SAME("concat forward", out_d, out, n + nb);
    concat_channels_backward(acc, accb, gc, N, C, Cb, HW);
    concat_channels_backward_cuda(acc_d, accb_d, gc_d, N, C, Cb, HW, NULL);
    SAME("concat backward a", acc_d, acc, n);
    SAME("concat backward b", accb_d, accb, nb);
    residual_forward(out, x, y, 0.7f, n), residual_forward_cuda(out_d, x_d, y_d, 0.7f, n, NULL);
    SAME("residual forward", out_d, out, n);
    residual_backward(acc, NULL, g, 0.7f, n), residual_backward_cuda(acc_d, NULL, g_d, 0.7f, n, NULL);
    SAME("residual backward", acc_d, acc, n);
    add_channel_forward(out, x, vec, N, C, HW), add_channel_forward_cuda(out_d, x_d, vec_d, N, C, HW, NULL);
    SAME("add_channel forward", out_d, out, n);
    add_channel_backward(acc, dvec, g, N, C, HW), add_channel_backward_cuda(acc_d, dvec_d, g_d, N, C, HW, NULL);
    SAME("add_channel dinp", acc_d, acc, n);
    SAME("add_channel dvec", dvec_d, dvec, N * C);
    accumulate(acc, x, n), accumulate_cuda(acc_d, x_d, n, NULL);
    SAME("accumulate", acc_d, acc, n);
    copy_floats(out, y, n), copy_floats_cuda(out_d, y_d, n, NULL);
    SAME("copy_floats", out_d, out, n);
    float *a = rnd(N), *b = rnd(N), *a_d = up(a, N), *b_d = up(b, N);
    axpby_rows(out, x, a, y, b, N, (size_t)C * HW), axpby_rows_cuda(out_d, x_d, a_d, y_d, b_d, N, (size_t)C * HW, NULL);
    SAME("axpby_rows", out_d, out, n);
    nchw_to_nlc(out, x, N, C, HW), nchw_to_nlc_cuda(out_d, x_d, N, C, HW, NULL);
    SAME("nchw_to_nlc", out_d, out, n);
    nlc_to_nchw(out, x, N, C, HW), nlc_to_nchw_cuda(out_d, x_d, N, C, HW, NULL);
    SAME("nlc_to_nchw", out_d, out, n);
    avgpool_forward(out, x, N, C, HW), avgpool_forward_cuda(out_d, x_d, N, C, HW, NULL);
    SAME("avgpool forward", out_d, out, N * C);
    avgpool_backward(acc, vec, N, C, HW), avgpool_backward_cuda(acc_d, vec_d, N, C, HW, NULL);
    SAME("avgpool backward", acc_d, acc, n);
    // dropout: both sides draw the mask from the same Rng state
    Rng r1, r2;
    rng_seed(&r1, 5), rng_seed(&r2, 5);
    float *mask = xmalloc(n * 4), *mask_d = cuda_malloc(n * 4);
    dropout_forward(out, mask, x, n, 0.3f, &r1), dropout_forward_cuda(out_d, mask_d, x_d, n, 0.3f, &r2, NULL);
    SAME("dropout forward", out_d, out, n);
    dropout_backward(acc, g, mask, n, 0.3f), dropout_backward_cuda(acc_d, g_d, mask_d, n, 0.3f, NULL);
    SAME("dropout backward", acc_d, acc, n);
    free(x), free(y), free(g), free(acc), free(xb), free(g4), free(gc), free(vec), free(dvec), free(out), free(accb);
    free(a), free(b), free(mask);
    cuda_free(x_d), cuda_free(y_d), cuda_free(g_d), cuda_free(acc_d), cuda_free(xb_d), cuda_free(g4_d), cuda_free(gc_d);
    cuda_free(vec_d), cuda_free(dvec_d), cuda_free(accb_d), cuda_free(out_d), cuda_free(a_d), cuda_free(b_d),
        cuda_free(mask_d);
}

static void attention_case(int N, int L, int NH, int HD) {
    int E = NH * HD;
    size_t n = (size_t)N * L * E, na = (size_t)N * NH * L * L;
    float *q = rnd(n), *k = rnd(n), *v = rnd(n), *dy = rnd(n), *dq = rnd(n), *dk = rnd(n), *dv = rnd(n);
    float *o = xmalloc(n * 4), *att = xmalloc(na * 4), *scratch = xmalloc(attention_scratch_floats(L) * 4);
    float *q_d = up(q, n), *k_d = up(k, n), *v_d = up(v, n), *dy_d = up(dy, n), *dq_d = up(dq, n), *dk_d = up(dk, n),
          *dv_d = up(dv, n), *o_d = cuda_malloc(n * 4), *att_d = cuda_malloc(na * 4),
          *s_d = cuda_malloc(attention_scratch_floats_cuda(N, L) * 4);
    attention_forward(o, att, q, k, v, N, L, NH, HD);
    attention_forward_cuda(o_d, att_d, q_d, k_d, v_d, N, L, NH, HD, NULL);
    SAME("attention out", o_d, o, n);
    SAME("attention probabilities", att_d, att, na);
    attention_backward(dq, dk, dv, dy, q, k, v, att, scratch, N, L, NH, HD);
    attention_backward_cuda(dq_d, dk_d, dv_d, dy_d, q_d, k_d, v_d, att_d, s_d, N, L, NH, HD, NULL);
    SAME("attention dq", dq_d, dq, n);
    SAME("attention dk", dk_d, dk, n);
    SAME("attention dv", dv_d, dv, n);
    free(q), free(k), free(v), free(dy), free(dq), free(dk), free(dv), free(o), free(att), free(scratch);
    cuda_free(q_d), cuda_free(k_d), cuda_free(v_d), cuda_free(dy_d), cuda_free(dq_d), cuda_free(dk_d), cuda_free(dv_d);
    cuda_free(o_d), cuda_free(att_d), cuda_free(s_d);
}

static void test_attention(void) {
    if (!need_gpu()) return;
    attention_case(2, 20, 2, 8);
    attention_case(3, 64, 4, 32);
    attention_case(2, 256, 2, 32);  // a 16x16 map
}

static void test_embeddings(void) {
    if (!need_gpu()) return;
    int N = 6, D = 40, rows = 4, dim = 33;
    int32_t ids[6] = {3, 0, 3, 1, 2, 3};
    float t[6] = {0, 1, 17, 250.5f, 999, 500};
    float *table = rnd((size_t)rows * D), *dtable = rnd((size_t)rows * D), *g = rnd((size_t)N * D),
          *out = xmalloc((size_t)N * 64 * 4), *gt = rnd((size_t)N * dim), *dt = rnd(N);
    float *table_d = up(table, rows * D), *dtable_d = up(dtable, rows * D), *g_d = up(g, N * D), *t_d = up(t, N),
          *gt_d = up(gt, N * dim), *dt_d = up(dt, N), *out_d = cuda_malloc((size_t)N * 64 * 4);
    int32_t *ids_d = up_bytes(ids, sizeof(ids));
    embedding_forward(out, ids, table, N, D), embedding_forward_cuda(out_d, ids_d, table_d, N, D, NULL);
    SAME("embedding forward", out_d, out, N * D);
    embedding_backward(dtable, g, ids, N, D), embedding_backward_cuda(dtable_d, g_d, ids_d, N, D, NULL);
    SAME("embedding backward", dtable_d, dtable, rows * D);
    for (int flip = 0; flip < 2; flip++) {
        timestep_embedding_forward(out, t, N, dim, flip, 1.0f, 1.0f, 10000.0f);
        timestep_embedding_forward_cuda(out_d, t_d, N, dim, flip, 1.0f, 1.0f, 10000.0f, NULL);
        SAME("timestep embedding forward", out_d, out, (size_t)N * dim);
        timestep_embedding_backward(dt, gt, t, N, dim, flip, 1.0f, 1.0f, 10000.0f);
        timestep_embedding_backward_cuda(dt_d, gt_d, t_d, N, dim, flip, 1.0f, 1.0f, 10000.0f, NULL);
        // d/dt of sin(t f) at t ~ 1e3 sums terms of size ~1: the CPU and GPU sin differ by an ulp of ~1e3
        same("timestep embedding backward", dt_d, dt, N, 1e-3, 1e-4);
    }
    free(table), free(dtable), free(g), free(out), free(gt), free(dt);
    cuda_free(table_d), cuda_free(dtable_d), cuda_free(g_d), cuda_free(t_d), cuda_free(gt_d), cuda_free(dt_d);
    cuda_free(out_d), cuda_free(ids_d);
}

static void test_losses(void) {
    if (!need_gpu()) return;
    int N = 4, C = 3, HW = 50, K = 7;
    size_t n = (size_t)N * C * HW, per = (size_t)C * HW;
    float *p = rnd(n), *y = rnd(n), *dp = rnd(n), *mom = rnd(2 * n), *dmom = rnd(2 * n), *eps = rnd(n), *z = xmalloc(n * 4);
    float *kl = xmalloc(N * 4), *mse = xmalloc(N * 4), *k = rnd(N), *logits = rnd((size_t)N * K), *probs = xmalloc(N * K * 4),
          *dl = rnd((size_t)N * K);
    int32_t lab[4] = {0, 6, 3, 3};
    float *p_d = up(p, n), *y_d = up(y, n), *dp_d = up(dp, n), *mom_d = up(mom, 2 * n), *dmom_d = up(dmom, 2 * n),
          *eps_d = up(eps, n), *z_d = cuda_malloc(n * 4), *kl_d = cuda_malloc(N * 4), *mse_d = cuda_malloc(N * 4),
          *k_d = up(k, N), *logits_d = up(logits, N * K), *probs_d = cuda_malloc(N * K * 4), *dl_d = up(dl, N * K);
    int32_t *lab_d = up_bytes(lab, sizeof(lab));
    float a, b;
    a = mse_forward(p, y, n), b = mse_forward_cuda(p_d, y_d, n, NULL);
    EXPECT_CLOSE("mse", &b, &a, 1, ATOL, RTOL);
    mse_backward(dp, p, y, n, 0.5f), mse_backward_cuda(dp_d, p_d, y_d, n, 0.5f, NULL);
    SAME("mse backward", dp_d, dp, n);
    a = l1_forward(p, y, n), b = l1_forward_cuda(p_d, y_d, n, NULL);
    EXPECT_CLOSE("l1", &b, &a, 1, ATOL, RTOL);
    l1_backward(dp, p, y, n, 0.5f), l1_backward_cuda(dp_d, p_d, y_d, n, 0.5f, NULL);
    SAME("l1 backward", dp_d, dp, n);
    mse_rows_forward(mse, p, y, N, per), mse_rows_forward_cuda(mse_d, p_d, y_d, N, per, NULL);
    SAME("mse_rows", mse_d, mse, N);
    mse_rows_backward(dp, p, y, k, N, per), mse_rows_backward_cuda(dp_d, p_d, y_d, k_d, N, per, NULL);
    SAME("mse_rows backward", dp_d, dp, n);
    a = kl_forward(kl, mom, N, C, HW), b = kl_forward_cuda(kl_d, mom_d, N, C, HW, NULL);
    EXPECT_CLOSE("kl", &b, &a, 1, ATOL, RTOL);
    SAME("kl per sample", kl_d, kl, N);
    kl_backward(dmom, mom, N, C, HW, 0.3f), kl_backward_cuda(dmom_d, mom_d, N, C, HW, 0.3f, NULL);
    SAME("kl backward", dmom_d, dmom, 2 * n);
    gaussian_sample_forward(z, mom, eps, N, C, HW), gaussian_sample_forward_cuda(z_d, mom_d, eps_d, N, C, HW, NULL);
    SAME("gaussian sample", z_d, z, n);
    gaussian_sample_backward(dmom, p, mom, eps, N, C, HW);
    gaussian_sample_backward_cuda(dmom_d, p_d, mom_d, eps_d, N, C, HW, NULL);
    SAME("gaussian sample backward", dmom_d, dmom, 2 * n);
    a = cross_entropy_forward(probs, logits, lab, N, K), b = cross_entropy_forward_cuda(probs_d, logits_d, lab_d, N, K, NULL);
    EXPECT_CLOSE("cross entropy", &b, &a, 1, ATOL, RTOL);
    SAME("cross entropy probs", probs_d, probs, N * K);
    cross_entropy_backward(dl, probs, lab, N, K, 0.7f), cross_entropy_backward_cuda(dl_d, probs_d, lab_d, N, K, 0.7f, NULL);
    SAME("cross entropy backward", dl_d, dl, N * K);
    free(p), free(y), free(dp), free(mom), free(dmom), free(eps), free(z), free(kl), free(mse), free(k), free(logits);
    free(probs), free(dl);
    cuda_free(p_d), cuda_free(y_d), cuda_free(dp_d), cuda_free(mom_d), cuda_free(dmom_d), cuda_free(eps_d), cuda_free(z_d);
    cuda_free(kl_d), cuda_free(mse_d), cuda_free(k_d), cuda_free(logits_d), cuda_free(probs_d), cuda_free(dl_d),
        cuda_free(lab_d);
}

// ---- optimizer ----
static void test_optim(void) {
    if (!need_gpu()) return;
    UNetConfig c;
    preset_unet("tiny", 3, &c);
    UNet2DModel m;
    unet_build(&m, &c);
    Rng rng;
    rng_seed(&rng, 3);
    params_init(&m.ps, &rng);
    fill_randn(m.ps.grad, m.ps.total, 77, 0.01f);
    m.ps.info[0].no_decay = 1;  // one view without decay: the per-view path
    AdamW opt, opt_d;
    adamw_init(&opt, &m.ps, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f);
    ema_init(&m.ps);
    ParamSet dev;
    cuda_params_mirror(&dev, &m.ps);
    cuda_upload(dev.grad, m.ps.grad, m.ps.total * sizeof(float));  // the mirror starts from zero gradients
    opt_d = opt;
    for (int s = 0; s < 3; s++) {
        float norm = clip_grad_norm(&m.ps, 0.5f), norm_d = clip_grad_norm_cuda(&dev, 0.5f, NULL);
        EXPECT_CLOSE("gradient norm", &norm_d, &norm, 1, ATOL, RTOL);
        SAME("clipped gradients", dev.grad, m.ps.grad, m.ps.total);
        adamw_step(&opt, &m.ps, 1e-3f), adamw_step_cuda(&opt_d, &dev, 1e-3f, NULL);
        ema_update(&m.ps, 0.9f), ema_update_cuda(&dev, 0.9f, NULL);
    }
    // AdamW divides by sqrt(v) ~ |g|: float rounding in v moves p by ~1e-7 lr-scaled steps
    SAME("AdamW parameters after 3 steps", dev.data, m.ps.data, m.ps.total);
    SAME("AdamW first moments", dev.m, m.ps.m, m.ps.total);
    SAME("AdamW second moments", dev.v, m.ps.v, m.ps.total);
    SAME("EMA weights", dev.ema, m.ps.ema, m.ps.total);
    EXPECT(grads_finite_cuda(&dev, NULL), "finite gradients reported as not finite");
    float nan = NAN;
    cuda_upload(dev.grad + 5, &nan, sizeof(float));
    EXPECT(!grads_finite_cuda(&dev, NULL), "a NaN gradient was not seen");
    cuda_params_free(&dev);
    unet_free(&m);
}

// One side of a GPU-vs-CPU comparison: an arena on that device, the model's parameters (mirrored
// to the GPU; the host ParamSet itself on the CPU), a context on the default stream.
typedef struct {
    Arena arena;
    ParamSet dev;
    Ctx ctx;
    int gpu;
} Side;

static void side_init(Side *s, ParamSet *ps, Rng *rng, int gpu) {
    s->gpu = gpu;
    if (gpu) {
        arena_init_on(&s->arena, 0, &cuda_arena_memory);
        cuda_params_mirror(&s->dev, ps);
        ctx_init_cuda(&s->ctx, &s->dev, &s->arena, rng);
    } else {
        arena_init(&s->arena, 0);
        ctx_init(&s->ctx, ps, &s->arena, rng);
    }
}

static void side_free(Side *s) {
    ctx_free(&s->ctx);
    arena_free(&s->arena);
    if (s->gpu) cuda_params_free(&s->dev);
}

// ---- whole models ----
typedef struct {
    float *out, *dx, *grad;  // host copies
    size_t n_out, n_in;
} Pass;

// one forward + backward of the UNet on random data (the same for both devices), into p
static void unet_pass(UNet2DModel *m, int gpu, int N, Pass *p) {
    const UNetConfig *c = &m->cfg;
    int S = c->sample_size;
    size_t n_in = (size_t)N * c->in_channels * S * S, n_out = (size_t)N * c->out_channels * S * S;
    float *x = xmalloc(n_in * 4), *dy = xmalloc(n_out * 4), t[64];
    int32_t lab[64];
    fill_randn(x, n_in, 11, 1.0f), fill_randn(dy, n_out, 12, 1.0f);
    for (int n = 0; n < N; n++) t[n] = (float)((n * 397) % 1000), lab[n] = n % c->num_class_embeds;
    Rng rng;
    rng_seed(&rng, 9);
    if (!gpu) params_zero_grad(&m->ps);  // the mirror starts from zero gradients
    Side sd;
    side_init(&sd, &m->ps, &rng, gpu);
    Ctx *ctx = &sd.ctx;
    Tensor xs = ctx_tensor(ctx, N, c->in_channels, S, S);
    ctx_put(ctx, xs.d, x, n_in * 4);
    Tensor out = unet_forward(ctx, m, xs, t, lab);
    Tensor dout = ctx_tensor(ctx, out.N, out.C, out.H, out.W);
    ctx_put(ctx, dout.d, dy, n_out * 4);
    Tensor dx = unet_backward(ctx, m, dout);
    p->n_out = n_out, p->n_in = n_in;
    p->out = xmalloc(n_out * 4), p->dx = xmalloc(n_in * 4), p->grad = xmalloc(m->ps.total * 4);
    ctx_get(ctx, p->out, out.d, n_out * 4);
    ctx_get(ctx, p->dx, dx.d, n_in * 4);
    ctx_get(ctx, p->grad, ctx->ps->grad, m->ps.total * 4);
    side_free(&sd);
    free(x), free(dy);
}

static void unet_case(const char *preset, int N, double atol, double rtol) {
    UNetConfig c;
    preset_unet(preset, 5, &c);
    UNet2DModel m;
    unet_build(&m, &c);
    Rng rng;
    rng_seed(&rng, 21);
    params_init(&m.ps, &rng);
    Pass cpu, gpu;
    unet_pass(&m, 0, N, &cpu);
    unet_pass(&m, 1, N, &gpu);
    char what[64];
    snprintf(what, sizeof(what), "UNet %s output", preset);
    EXPECT_CLOSE(what, gpu.out, cpu.out, cpu.n_out, atol, rtol);
    snprintf(what, sizeof(what), "UNet %s dsample", preset);
    EXPECT_CLOSE(what, gpu.dx, cpu.dx, cpu.n_in, atol, rtol);
    snprintf(what, sizeof(what), "UNet %s parameter gradients", preset);
    EXPECT_CLOSE(what, gpu.grad, cpu.grad, m.ps.total, atol, rtol);
    free(cpu.out), free(cpu.dx), free(cpu.grad), free(gpu.out), free(gpu.dx), free(gpu.grad);
    unet_free(&m);
}

static void test_unet_tiny(void) {
    if (need_gpu()) unet_case("tiny", 3, ATOL, RTOL);
}
// 16 M parameters, 46 layers deep: gradients sum over 8 x 256 positions in another order; the
// issue's fp32 bound, on values of order 1-100
static void test_unet_small(void) {
    if (need_gpu()) unet_case("small", 8, ATOL, RTOL);
}

// ||a - b|| / ||b|| in double
static double rel_l2(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), den += (double)b[i] * b[i];
    return sqrt(num / (den > 0 ? den : 1));
}

// TF32, bf16 and fp16 GEMMs (cuda_set_precision) against the fp32 CPU, as relative L2 errors: TF32
// and fp16 keep a 10-bit mantissa in products, bf16 a 7-bit one (2^-8 = 4e-3 per operand); sums
// stay fp32. Bounds: TF32 and fp16 out/dsample 5e-3, gradients 1e-2 (TF32) / 2e-2 (fp16);
// bf16 out/dsample 2e-2, gradients 5e-2.
static void test_unet_small_mixed_precision(void) {
    if (!need_gpu()) return;
    UNetConfig c;
    preset_unet("small", 5, &c);
    UNet2DModel m;
    unet_build(&m, &c);
    Rng rng;
    rng_seed(&rng, 21);
    params_init(&m.ps, &rng);
    Pass cpu, gpu;
    unet_pass(&m, 0, 8, &cpu);
    const Precision modes[3] = {PREC_TF32, PREC_BF16, PREC_FP16};
    const char *names[3] = {"TF32", "bf16", "fp16"};
    const double bound_out[3] = {5e-3, 2e-2, 5e-3}, bound_grad[3] = {1e-2, 5e-2, 2e-2};
    for (int k = 0; k < 3; k++) {
        cuda_set_precision(modes[k]);
        unet_pass(&m, 1, 8, &gpu);
        cuda_set_precision(PREC_FP32);
        double eo = rel_l2(gpu.out, cpu.out, cpu.n_out), ed = rel_l2(gpu.dx, cpu.dx, cpu.n_in),
               eg = rel_l2(gpu.grad, cpu.grad, m.ps.total);
        printf("  UNet small %s: relative L2 error output %.2e, dsample %.2e, parameter gradients %.2e\n", names[k], eo, ed,
               eg);
        EXPECT(eo <= bound_out[k] && ed <= bound_out[k] && eg <= bound_grad[k],
               "%s: errors %.2e %.2e %.2e above %.0e / %.0e", names[k], eo, ed, eg, bound_out[k], bound_grad[k]);
        EXPECT(eo > 0, "%s gave exactly the fp32 result: the mode did not take effect", names[k]);
        free(gpu.out), free(gpu.dx), free(gpu.grad);
    }
    // the bf16 convolution path of its own (col written in bf16)
    Conv2dDims d = {4, 64, 16, 16, 32, 3, 1, 1, 1, 1, 1};
    size_t nin = (size_t)4 * 64 * 256, nout = (size_t)4 * 32 * 256, nw = (size_t)32 * 64 * 9;
    float *x = rnd(nin), *w = rnd(nw), *y = xmalloc(nout * 4), *scratch = xmalloc(conv2d_scratch_floats(d) * 4);
    float *x_d = up(x, nin), *w_d = up(w, nw), *y_d = cuda_malloc(nout * 4), *s_d = cuda_malloc(conv2d_scratch_floats_cuda(d) * 4);
    float *yh = xmalloc(nout * 4);
    conv2d_forward(y, x, w, NULL, scratch, d);
    cuda_set_precision(PREC_BF16);
    conv2d_forward_cuda(y_d, x_d, w_d, NULL, s_d, d, NULL);
    cuda_set_precision(PREC_FP32);
    cuda_download(yh, y_d, nout * 4);
    double e = rel_l2(yh, y, nout);
    printf("  conv2d 3x3 bf16: relative L2 error %.2e\n", e);
    EXPECT(e > 0 && e <= 1e-2, "bf16 conv2d relative error %.2e (bound 1e-2)", e);
    free(x), free(w), free(y), free(scratch), free(yh);
    cuda_free(x_d), cuda_free(w_d), cuda_free(y_d), cuda_free(s_d);
    free(cpu.out), free(cpu.dx), free(cpu.grad);
    unet_free(&m);
}

static void test_vae_tiny(void) {
    if (!need_gpu()) return;
    VaeConfig c;
    preset_vae("tiny", &c);
    AutoencoderKL m;
    vae_build(&m, &c);
    Rng rng;
    rng_seed(&rng, 4);
    params_init(&m.ps, &rng);
    int N = 2, S = c.sample_size, f = vae_downscale(&c), h = S / f;
    size_t n_img = (size_t)N * c.in_channels * S * S, n_lat = (size_t)N * c.latent_channels * h * h;
    size_t n_mom = 2 * n_lat;
    float *img = rnd(n_img), *lat = rnd(n_lat), *dmom = rnd(n_mom), *drec = rnd(n_img);
    float *res[2][5];  // [device][moments, reconstruction, dimage, dlatent, grads]
    for (int gpu = 0; gpu < 2; gpu++) {
        if (!gpu) params_zero_grad(&m.ps);
        Side sd;
        side_init(&sd, &m.ps, &rng, gpu);
        Ctx *ctx = &sd.ctx;
        Tensor x = ctx_tensor(ctx, N, c.in_channels, S, S), z = ctx_tensor(ctx, N, c.latent_channels, h, h);
        ctx_put(ctx, x.d, img, n_img * 4);
        ctx_put(ctx, z.d, lat, n_lat * 4);
        Tensor mom = vae_encode(ctx, &m, x);                               // [N, 2 latent, h, h]
        Tensor rec = vae_decode(ctx, &m, z);                                // [N, out, S, S]
        Tensor g = ctx_tensor(ctx, rec.N, rec.C, rec.H, rec.W);
        ctx_put(ctx, g.d, drec, n_img * 4);
        Tensor dz = vae_decode_backward(ctx, &m, g);
        Tensor dm = ctx_tensor(ctx, mom.N, mom.C, mom.H, mom.W);
        ctx_put(ctx, dm.d, dmom, n_mom * 4);
        Tensor dx = vae_encode_backward(ctx, &m, dm);
        for (int i = 0; i < 4; i++) res[gpu][i] = xmalloc((i == 0 ? n_mom : i == 3 ? n_lat : n_img) * 4);
        res[gpu][4] = xmalloc(m.ps.total * 4);
        ctx_get(ctx, res[gpu][0], mom.d, n_mom * 4);
        ctx_get(ctx, res[gpu][1], rec.d, n_img * 4);
        ctx_get(ctx, res[gpu][2], dx.d, n_img * 4);
        ctx_get(ctx, res[gpu][3], dz.d, n_lat * 4);
        ctx_get(ctx, res[gpu][4], ctx->ps->grad, m.ps.total * 4);
        side_free(&sd);
    }
    EXPECT_CLOSE("VAE moments", res[1][0], res[0][0], n_mom, ATOL, RTOL);
    EXPECT_CLOSE("VAE reconstruction", res[1][1], res[0][1], n_img, ATOL, RTOL);
    EXPECT_CLOSE("VAE dimage", res[1][2], res[0][2], n_img, ATOL, RTOL);
    EXPECT_CLOSE("VAE dlatent", res[1][3], res[0][3], n_lat, ATOL, RTOL);
    EXPECT_CLOSE("VAE parameter gradients", res[1][4], res[0][4], m.ps.total, ATOL, RTOL);
    for (int d = 0; d < 2; d++)
        for (int i = 0; i < 5; i++) free(res[d][i]);
    free(img), free(lat), free(dmom), free(drec);
    vae_free(&m);
}

// two VAE training steps (L1 + KL, AdamW at the encoder's default lr 1e-4) from the same state and
// RNG, tiny and small presets. AdamW moves a weight by about lr whatever its gradient's size, so
// where a gradient is at rounding level the two devices may step differently: the bound on the
// parameters is the gradients' (1e-4) only because lr is 1e-4.
static void vae_train_case(const char *preset, int N, int S) {
    VaeConfig c;
    preset_vae(preset, &c);
    c.sample_size = S;
    AutoencoderKL m;
    vae_build(&m, &c);
    Rng init;
    rng_seed(&init, 6);
    params_init(&m.ps, &init);
    size_t n = (size_t)N * c.in_channels * S * S;
    float *img = rnd(n);
    for (size_t i = 0; i < n; i++) img[i] = tanhf(img[i]);  // images live in [-1, 1]
    AdamW oc, og;
    adamw_init(&oc, &m.ps, 1e-4f, 0.9f, 0.999f, 1e-8f, 0.01f);
    og = oc;
    Rng rc, rg;
    rng_seed(&rc, 5), rng_seed(&rg, 5);
    Side sc, sg;  // the CPU reference and the GPU
    side_init(&sc, &m.ps, &rc, 0), side_init(&sg, &m.ps, &rg, 1);
    Ctx *cc = &sc.ctx, *cg = &sg.ctx;
    ParamSet *dev = &sg.dev;
    cc->train = cg->train = 1;
    TrainLossConfig lc = {0, 1e-3f, 0, 0};
    char what[96];
    for (int step = 0; step < 2; step++) {
        TrainLosses lcpu, lgpu;
        arena_reset(&sc.arena), arena_reset(&sg.arena);
        params_zero_grad(&m.ps);
        cuda_zero(dev->grad, dev->total * 4);
        Tensor xc = ctx_tensor(cc, N, c.in_channels, S, S), xg = ctx_tensor(cg, N, c.in_channels, S, S);
        ctx_put(cc, xc.d, img, n * 4), ctx_put(cg, xg.d, img, n * 4);
        vae_train_step(cc, &m, xc, &lc, 1.0f, &lcpu);
        vae_train_step(cg, &m, xg, &lc, 1.0f, &lgpu);
        snprintf(what, sizeof(what), "VAE %s training loss", preset);
        EXPECT_CLOSE(what, &lgpu.total, &lcpu.total, 1, ATOL, RTOL);
        snprintf(what, sizeof(what), "VAE %s training gradients", preset);
        SAME(what, dev->grad, m.ps.grad, m.ps.total);
        clip_grad_norm(&m.ps, 1.0f), clip_grad_norm_cuda(dev, 1.0f, NULL);
        adamw_step(&oc, &m.ps, 1e-4f), adamw_step_cuda(&og, dev, 1e-4f, NULL);
    }
    snprintf(what, sizeof(what), "VAE %s parameters after 2 steps", preset);
    SAME(what, dev->data, m.ps.data, m.ps.total);
    side_free(&sc), side_free(&sg);
    free(img);
    vae_free(&m);
}

static void test_vae_train_step(void) {
    if (!need_gpu()) return;
    vae_train_case("tiny", 4, 32);
    vae_train_case("small", 4, 64);
}

// two VAE training steps with every term: L1 + KL + SSIM + spectral + the patch discriminator
// (adaptive weight, its own AdamW step), GPU against CPU; both discriminators start equal
static void test_vae_train_step_all_terms(void) {
    if (!need_gpu()) return;
    VaeConfig c;
    preset_vae("tiny", &c);
    c.sample_size = 32;
    AutoencoderKL m;
    vae_build(&m, &c);
    Rng init;
    rng_seed(&init, 16);
    params_init(&m.ps, &init);
    PatchDiscriminator dc_, dg_;
    patch_disc_build(&dc_, c.in_channels, 32, 3), patch_disc_build(&dg_, c.in_channels, 32, 3);
    Rng drc, drg;
    rng_seed(&drc, 4), rng_seed(&drg, 4);
    patch_disc_init(&dc_, &drc), patch_disc_init(&dg_, &drg);
    int N = 4, S = 32;
    size_t n = (size_t)N * c.in_channels * S * S;
    float *img = rnd(n);
    for (size_t i = 0; i < n; i++) img[i] = tanhf(img[i]);
    AdamW oc, og, doc, dog;
    adamw_init(&oc, &m.ps, 1e-4f, 0.9f, 0.999f, 1e-8f, 0.01f);
    adamw_init(&doc, &dc_.ps, 1e-4f, 0.5f, 0.9f, 1e-8f, 0.0f), adamw_init(&dog, &dg_.ps, 1e-4f, 0.5f, 0.9f, 1e-8f, 0.0f);
    og = oc;
    patch_disc_to_gpu(&dg_);
    Rng rc, rg;
    rng_seed(&rc, 5), rng_seed(&rg, 5);
    Side sc, sg;  // the CPU reference and the GPU
    side_init(&sc, &m.ps, &rc, 0), side_init(&sg, &m.ps, &rg, 1);
    Ctx *cc = &sc.ctx, *cg = &sg.ctx;
    ParamSet *dev = &sg.dev;
    cc->train = cg->train = 1;
    TrainLossConfig lc = {0, 1e-3f, 0.5f, 0.1f};
    DiscLossConfig dcc = {&dc_, &doc, 0.5f, 1, 1e-4f, 1.0f, 0}, dcg = {&dg_, &dog, 0.5f, 1, 1e-4f, 1.0f, 0};
    for (int step = 0; step < 2; step++) {
        TrainLosses lcpu, lgpu;
        arena_reset(&sc.arena), arena_reset(&sg.arena);
        params_zero_grad(&m.ps);
        cuda_zero(dev->grad, dev->total * 4);
        Tensor xc = ctx_tensor(cc, N, c.in_channels, S, S), xg = ctx_tensor(cg, N, c.in_channels, S, S);
        ctx_put(cc, xc.d, img, n * 4), ctx_put(cg, xg.d, img, n * 4);
        vae_train_step_disc(cc, &m, xc, &lc, &dcc, step, 1.0f, &lcpu);
        vae_train_step_disc(cg, &m, xg, &lc, &dcg, step, 1.0f, &lgpu);
        float lc4[5] = {lcpu.total, lcpu.ssim, lcpu.spectral, lcpu.g_loss, lcpu.d_loss};
        float lg4[5] = {lgpu.total, lgpu.ssim, lgpu.spectral, lgpu.g_loss, lgpu.d_loss};
        EXPECT_CLOSE("VAE losses: total, SSIM, spectral, g, d", lg4, lc4, 5, ATOL, RTOL);
        EXPECT_CLOSE("adaptive discriminator weight", &lgpu.g_weight, &lcpu.g_weight, 1, ATOL, 1e-3);
        SAME("VAE gradients with every term", dev->grad, m.ps.grad, m.ps.total);
        clip_grad_norm(&m.ps, 1.0f), clip_grad_norm_cuda(dev, 1.0f, NULL);
        adamw_step(&oc, &m.ps, 1e-4f), adamw_step_cuda(&og, dev, 1e-4f, NULL);
    }
    SAME("VAE parameters after 2 steps with every term", dev->data, m.ps.data, m.ps.total);
    SAME("discriminator parameters after 2 of its steps", dg_.active->data, dc_.ps.data, dc_.ps.total);
    side_free(&sc), side_free(&sg);
    patch_disc_free(&dc_), patch_disc_free(&dg_);
    free(img);
    vae_free(&m);
}

// two diffusion training steps (min-SNR, condition dropout, AdamW, EMA) from the same state and RNG
static void test_train_step(void) {
    if (!need_gpu()) return;
    UNetConfig c;
    preset_unet("tiny", 4, &c);
    UNet2DModel m;
    unet_build(&m, &c);
    Rng init;
    rng_seed(&init, 8);
    params_init(&m.ps, &init);
    NoiseSchedule s;
    char err[256];
    CHECK(noise_schedule_init(&s, 1000, BETA_LINEAR, 1e-4f, 0.02f, PRED_EPSILON, err, sizeof(err)) == 0, "%s", err);
    DiffusionLossConfig lc = {0.25f, 5.0f};
    int N = 6, S = c.sample_size;
    size_t n = (size_t)N * 4 * S * S;
    float *x0 = rnd(n);
    int32_t lab[6] = {0, 1, 2, 3, 1, 2};
    AdamW opt_c, opt_g;
    adamw_init(&opt_c, &m.ps, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f);
    ema_init(&m.ps);
    opt_g = opt_c;
    Rng rc, rg;
    rng_seed(&rc, 99), rng_seed(&rg, 99);
    Side sc, sg;  // the CPU reference and the GPU
    side_init(&sc, &m.ps, &rc, 0), side_init(&sg, &m.ps, &rg, 1);
    Ctx *cc = &sc.ctx, *cg = &sg.ctx;
    ParamSet *dev = &sg.dev;
    cc->train = cg->train = 1;
    for (int step = 0; step < 2; step++) {
        DiffusionLosses lcpu, lgpu;
        arena_reset(&sc.arena), arena_reset(&sg.arena);
        params_zero_grad(&m.ps);
        cuda_zero(dev->grad, dev->total * 4);
        Tensor xc = ctx_tensor(cc, N, 4, S, S), xg = ctx_tensor(cg, N, 4, S, S);
        ctx_put(cc, xc.d, x0, n * 4), ctx_put(cg, xg.d, x0, n * 4);
        diffusion_train_step(cc, &m, &s, xc, lab, &lc, 1.0f, &lcpu);
        diffusion_train_step(cg, &m, &s, xg, lab, &lc, 1.0f, &lgpu);
        EXPECT_CLOSE("training loss", &lgpu.loss, &lcpu.loss, 1, ATOL, RTOL);
        EXPECT(lcpu.dropped == lgpu.dropped, "condition dropout differs: %d vs %d", lcpu.dropped, lgpu.dropped);
        SAME("training gradients", dev->grad, m.ps.grad, m.ps.total);
        clip_grad_norm(&m.ps, 1.0f), clip_grad_norm_cuda(dev, 1.0f, NULL);
        adamw_step(&opt_c, &m.ps, 1e-3f), adamw_step_cuda(&opt_g, dev, 1e-3f, NULL);
        ema_update(&m.ps, 0.99f), ema_update_cuda(dev, 0.99f, NULL);
    }
    SAME("parameters after 2 training steps", dev->data, m.ps.data, m.ps.total);
    SAME("EMA after 2 training steps", dev->ema, m.ps.ema, m.ps.total);
    EXPECT(memcmp(&rc, &rg, sizeof(Rng)) == 0, "the GPU step drew a different amount of randomness");
    side_free(&sc), side_free(&sg);
    free(x0);
    unet_free(&m);
}

// guided sampling with fixed seeds, both samplers that carry state
static void test_sampling(void) {
    if (!need_gpu()) return;
    UNetConfig c;
    preset_unet("tiny", 3, &c);
    UNet2DModel m;
    unet_build(&m, &c);
    Rng init;
    rng_seed(&init, 13);
    params_init(&m.ps, &init);
    NoiseSchedule s;
    char err[256];
    CHECK(noise_schedule_init(&s, 1000, BETA_LINEAR, 1e-4f, 0.02f, PRED_EPSILON, err, sizeof(err)) == 0, "%s", err);
    int N = 4, S = c.sample_size;
    size_t n = (size_t)N * 4 * S * S;
    int32_t lab[4] = {0, 1, 2, 3};  // 3 is the "no user" class
    int64_t seeds[4] = {1, 2, 3, 1000004};
    SamplerKind kinds[2] = {SAMPLER_DDIM, SAMPLER_DPMPP_2M};
    // GPU contexts: the default stream (eager), a stream of its own (CUDA graphs from step 1), and
    // a stream of its own with DOPPEL_CUDA_GRAPHS=0
    const char *variant[3] = {"default stream", "CUDA graphs", "own stream, no graphs"};
    for (int k = 0; k < 2; k++) {
        SampleConfig sc = {0};
        CHECK(sampler_init(&sc.sampler, &s, kinds[k], 10, 0.0f, 0, err, sizeof(err)) == 0, "%s", err);
        sc.guidance = 2.0f;
        float *out_c = xmalloc(n * 4), *out_g = xmalloc(n * 4);
        Rng rc;
        rng_seed(&rc, 1);
        Side scpu;
        side_init(&scpu, &m.ps, &rc, 0);
        diffusion_sample(&scpu.ctx, &m, &s, &sc, lab, seeds, N, out_c, NULL, NULL);
        for (int v = 0; v < 3; v++) {
            Rng rg;
            rng_seed(&rg, 1);
            Compute cp;  // variants 1, 2: what the stages use
            Side sg;     // variant 0
            if (v == 0) side_init(&sg, &m.ps, &rg, 1);
            else compute_init(&cp, &m.ps, &rg, 1);
            if (v == 2) setenv("DOPPEL_CUDA_GRAPHS", "0", 1);
            diffusion_sample(v ? &cp.ctx : &sg.ctx, &m, &s, &sc, lab, seeds, N, out_g, NULL, NULL);
            unsetenv("DOPPEL_CUDA_GRAPHS");
            char what[96];
            snprintf(what, sizeof(what), "%s 10 steps, guidance 2, %s", k ? "DPM-Solver++" : "DDIM", variant[v]);
            // 10 guided steps of a random network compound fp32 differences: 1e-3 absolute on values ~1
            EXPECT_CLOSE(what, out_g, out_c, n, 1e-3, 1e-3);
            if (v) compute_free(&cp);
            else side_free(&sg);
        }
        side_free(&scpu);
        free(out_c), free(out_g);
    }
    unet_free(&m);
}

// ---- the stages with --device cuda ----
#define PIPE "build/test-out/cuda-pipeline"

static float *cache_latents(const char *path, size_t *n) {
    SafeTensors st;
    char err[512];
    if (st_load(&st, path, err, sizeof(err))) return tl_fail(__FILE__, __LINE__, "%s", err), NULL;
    const StTensor *t = st_find(&st, "latent");
    float *x = NULL;
    if (t) {
        *n = t->numel;
        x = xmalloc(t->numel * sizeof(float));
        st_to_f32(x, t);
    }
    st_free(&st);
    return x;
}

// loader -> encoder (CPU) make a latent cache; doppel-diffuser train runs 5 steps with --device
// cuda and with --device cpu from the same cache and seed; the weights agree; sample --device cuda
// feeds doppel-decoder over ZeroMQ (one PNG per sample) and its latents agree with the CPU's.
static void test_pipeline_gpu_stages(void) {
    if (!need_gpu()) return;
    EXPECT(system("rm -rf " PIPE " && mkdir -p " PIPE) == 0, "mkdir");
    int port = free_port();
    char b[64], c[64];
    snprintf(b, sizeof(b), "@tcp://127.0.0.1:%d", port), snprintf(c, sizeof(c), ">tcp://127.0.0.1:%d", port);
    Proc loader, enc;
    proc_start(&loader, (const char *[]){"doppel-loader", "--synthetic", "--users", "3", "--per-user", "8", "--resolution",
                                         "32", "--batch", "8", "--forever", "--shuffle", "--seed", "2", "--out", b, NULL});
    proc_start(&enc, (const char *[]){"doppel-encoder", "train", "--in", c, "--vae", PIPE "/vae", "--preset", "tiny",
                                      "--steps", "4", "--lr", "1e-3", "--warmup", "1", NULL});
    int rc = proc_wait(&enc, 120);
    kill(loader.pid, SIGTERM);
    proc_wait(&loader, 20);
    EXPECT(rc == 0, "encoder train: rc %d\n%s", rc, proc_read(enc.err));
    if (rc) return;
    port = free_port();
    snprintf(b, sizeof(b), "@tcp://127.0.0.1:%d", port), snprintf(c, sizeof(c), ">tcp://127.0.0.1:%d", port);
    proc_start(&loader, (const char *[]){"doppel-loader", "--synthetic", "--users", "3", "--per-user", "8", "--resolution",
                                         "32", "--batch", "8", "--split", "all", "--out", b, NULL});
    proc_start(&enc, (const char *[]){"doppel-encoder", "encode", "--vae", PIPE "/vae", "--in", c, "--cache",
                                      PIPE "/latents.safetensors", NULL});
    rc = proc_wait(&enc, 60);
    proc_wait(&loader, 20);
    EXPECT(rc == 0, "encoder encode: rc %d\n%s", rc, proc_read(enc.err));
    if (rc) return;
    const char *dev[2] = {"cpu", "cuda"}, *dirs[2] = {PIPE "/unet_cpu", PIPE "/unet_gpu"};
    for (int d = 0; d < 2; d++) {
        char *out, *err;
        rc = proc_run((const char *[]){"doppel-diffuser", "train", "--cache", PIPE "/latents.safetensors", "--unet", dirs[d],
                                       "--preset", "tiny", "--batch", "6", "--steps", "5", "--lr", "1e-3", "--warmup", "2",
                                       "--seed", "3", "--augment", "--device", dev[d], NULL},
                      300, &out, &err);
        EXPECT(rc == 0, "train --device %s: rc %d\n%s", dev[d], rc, err);
        if (d == 1) EXPECT(strstr(err, "training on"), "train --device cuda did not say it trains on the GPU:\n%s", err);
        free(out), free(err);
    }
    if (tl_current_failed()) return;
    UNetFolder u[2];
    char err[512];
    for (int d = 0; d < 2; d++) EXPECT(unet_folder_load(&u[d], dirs[d], 0, NULL, err, sizeof(err)) == 0, "%s", err);
    if (tl_current_failed()) return;
    // 5 AdamW steps at lr 1e-3: a weight moves up to ~5e-3, so 1e-3 is a tenth of the whole update
    EXPECT_CLOSE("UNet weights after 5 steps, GPU vs CPU", u[1].model.ps.data, u[0].model.ps.data, u[0].model.ps.total, 1e-3,
                 1e-3);
    unet_folder_free(&u[0]), unet_folder_free(&u[1]);
    // sample on the GPU into a decoder, and into a cache next to the CPU's
    port = free_port();
    snprintf(b, sizeof(b), "@tcp://127.0.0.1:%d", port), snprintf(c, sizeof(c), ">tcp://127.0.0.1:%d", port);
    Proc dec, dif;
    proc_start(&dec, (const char *[]){"doppel-decoder", "--vae", PIPE "/vae", "--in", c, "--png", PIPE "/gen", NULL});
    proc_start(&dif, (const char *[]){"doppel-diffuser", "sample", "--unet", dirs[0], "--users", "all", "--per-user", "2",
                                      "--steps", "10", "--device", "cuda", "--out", b, "--cache", PIPE "/gen_gpu.safetensors",
                                      NULL});
    int rs = proc_wait(&dif, 120), rd = proc_wait(&dec, 60);
    EXPECT(rs == 0 && rd == 0, "sample --device cuda -> decoder: rc %d / %d\n%s\n%s", rs, rd, proc_read(dif.err),
           proc_read(dec.err));
    char *o, *e;
    rc = proc_run((const char *[]){"doppel-diffuser", "sample", "--unet", dirs[0], "--users", "all", "--per-user", "2",
                                   "--steps", "10", "--device", "cpu", "--cache", PIPE "/gen_cpu.safetensors", NULL},
                  120, &o, &e);
    EXPECT(rc == 0, "sample --device cpu: rc %d\n%s", rc, e);
    free(o), free(e);
    FILE *f = popen("find " PIPE "/gen -name '*.png' | wc -l", "r");
    int pngs = -1;
    if (f && fscanf(f, "%d", &pngs) != 1) pngs = -1;
    if (f) pclose(f);
    EXPECT(pngs == 6, "the decoder wrote %d PNGs for 3 users x 2 samples", pngs);
    size_t n1 = 0, n0 = 0;
    float *g = cache_latents(PIPE "/gen_gpu.safetensors", &n1), *cpu = cache_latents(PIPE "/gen_cpu.safetensors", &n0);
    if (g && cpu && n0 == n1) EXPECT_CLOSE("sampled latents, GPU vs CPU (DPM-Solver++ 10 steps)", g, cpu, n0, 1e-3, 1e-3);
    else EXPECT(0, "latent caches missing or of different sizes (%zu vs %zu)", n1, n0);
    free(g);
    // the same samples with bf16 GEMMs
    rc = proc_run((const char *[]){"doppel-diffuser", "sample", "--unet", dirs[0], "--users", "all", "--per-user", "2",
                                   "--steps", "10", "--device", "cuda", "--precision", "bf16", "--cache",
                                   PIPE "/gen_bf16.safetensors", NULL},
                  120, &o, &e);
    EXPECT(rc == 0, "sample --precision bf16: rc %d\n%s", rc, e);
    free(o), free(e);
    g = cache_latents(PIPE "/gen_bf16.safetensors", &n1);
    if (g && cpu && n0 == n1) {
        double err = rel_l2(g, cpu, n0);
        printf("  sampled latents, bf16 GPU vs fp32 CPU: relative L2 error %.2e\n", err);
        EXPECT(err > 0 && err <= 5e-2, "bf16 sampling: relative L2 error %.2e (bound 5e-2)", err);
    }
    free(g), free(cpu);
    // fp16 GEMMs with dynamic loss scaling: trains, logs the scale, lands near the fp32 CPU weights
    {
        char *out, *err2;
        rc = proc_run((const char *[]){"doppel-diffuser", "train", "--cache", PIPE "/latents.safetensors", "--unet",
                                       PIPE "/unet_fp16", "--preset", "tiny", "--batch", "6", "--steps", "5", "--lr",
                                       "1e-3", "--warmup", "2", "--seed", "3", "--augment", "--device", "cuda",
                                       "--precision", "fp16", NULL},
                      300, &out, &err2);
        EXPECT(rc == 0 && strstr(err2, "loss scaling"), "train --precision fp16: rc %d\n%s", rc, err2);
        free(out), free(err2);
        char *metrics = proc_read(PIPE "/unet_fp16/metrics.jsonl");
        EXPECT(strstr(metrics, "\"loss_scale\":65536"), "metrics.jsonl has no loss_scale 65536:\n%s", metrics);
        free(metrics);
        UNetFolder a, f;
        if (unet_folder_load(&a, dirs[0], 0, NULL, err, sizeof(err)) == 0) {
            if (unet_folder_load(&f, PIPE "/unet_fp16", 0, NULL, err, sizeof(err)) == 0) {
                double e16 = rel_l2(f.model.ps.data, a.model.ps.data, a.model.ps.total);
                printf("  UNet weights after 5 fp16 steps vs fp32 CPU: relative L2 error %.2e\n", e16);
                EXPECT(e16 > 0 && e16 <= 1e-2, "fp16 training: relative L2 error %.2e (bound 1e-2)", e16);
                unet_folder_free(&f);
            } else {
                EXPECT(0, "%s", err);
            }
            unet_folder_free(&a);
        }
    }
    // the judge trains on the GPU from a loader stream
    port = free_port();
    snprintf(b, sizeof(b), "@tcp://127.0.0.1:%d", port), snprintf(c, sizeof(c), ">tcp://127.0.0.1:%d", port);
    proc_start(&loader, (const char *[]){"doppel-loader", "--synthetic", "--users", "3", "--per-user", "8", "--resolution",
                                         "32", "--batch", "8", "--forever", "--shuffle", "--seed", "2", "--out", b, NULL});
    rc = proc_run((const char *[]){"doppel-validator", "train", "--in", c, "--judge", PIPE "/judge", "--steps", "5",
                                   "--device", "cuda", NULL},
                  120, &o, &e);
    kill(loader.pid, SIGTERM);
    proc_wait(&loader, 20);
    EXPECT(rc == 0 && strstr(e, "training on"), "validator train --device cuda: rc %d\n%s", rc, e);
    free(o), free(e);
}

int main(void) {
    if (cuda_available()) printf("GPU: %s\n", cuda_device_name());
    RUN(test_conv2d);
    RUN(test_linear);
    RUN(test_groupnorm);
    RUN(test_batchnorm_and_pool);
    RUN(test_elementwise);
    RUN(test_attention);
    RUN(test_embeddings);
    RUN(test_losses);
    RUN(test_optim);
    RUN(test_unet_tiny);
    RUN(test_unet_small);
    RUN(test_unet_small_mixed_precision);
    RUN(test_vae_tiny);
    RUN(test_vae_train_step);
    RUN(test_vae_train_step_all_terms);
    RUN(test_train_step);
    RUN(test_sampling);
    RUN(test_pipeline_gpu_stages);
    return tl_finish();
}
