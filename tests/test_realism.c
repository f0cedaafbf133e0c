// test_realism.c: the validator's distribution metrics (common/metrics/realism.c) against
// tests/reference/metrics.py (numpy / scipy: pytorch-fid's FID, the unbiased KID, the inception
// score, k-NN precision/recall) and against values known in closed form.
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "metrics/realism.h"
#include "metrics/spectro.h"
#include "testlib.h"

static double ref(json_t *cfg, const char *key) { return json_number_value(json_object_get(cfg, key)); }

static void expect_rel(const char *what, double got, double want, double rtol) {
    EXPECT(fabs(got - want) <= rtol * fabs(want), "%s: %.12g, want %.12g (rtol %g)", what, got, want, rtol);
}

static void test_against_reference(void) {
    SafeTensors *st = fx_open("realism");
    if (!st) return;
    json_t *cfg = fx_config(st);
    size_t na, nb, np_;
    float *a = fx_f32(st, "a", &na), *b = fx_f32(st, "b", &nb), *p = fx_f32(st, "probs", &np_);
    int D = 16, K = 7;
    char err[256];
    double f, k, pr, rc;
    EXPECT(fid(a, (int)(na / D), b, (int)(nb / D), D, &f, err, sizeof(err)) == 0, "%s", err);
    expect_rel("FID vs scipy (pytorch-fid)", f, ref(cfg, "fid"), 1e-7);
    EXPECT(kid(a, (int)(na / D), b, (int)(nb / D), D, &k, err, sizeof(err)) == 0, "%s", err);
    expect_rel("KID vs numpy", k, ref(cfg, "kid"), 1e-9);
    expect_rel("inception score vs numpy", inception_score(p, (int)(np_ / K), K), ref(cfg, "inception"), 1e-6);
    EXPECT(precision_recall(a, (int)(na / D), b, (int)(nb / D), D, 3, &pr, &rc, err, sizeof(err)) == 0, "%s", err);
    EXPECT(pr == ref(cfg, "precision") && rc == ref(cfg, "recall"), "precision/recall %g/%g, want %g/%g", pr, rc,
           ref(cfg, "precision"), ref(cfg, "recall"));
    free(a), free(b), free(p);
    json_decref(cfg);
    fx_close(st);
}

static void test_closed_forms(void) {
    enum { N = 300, D = 8, K = 5 };
    float *x = malloc(sizeof(float) * N * D), *y = malloc(sizeof(float) * N * D);
    fill_randn(x, N * D, 3, 1.0f);
    for (int i = 0; i < N * D; i++) y[i] = x[i] + 2.0f;  // the same spread, the mean moved by 2 in every coordinate
    double f, k;
    char err[256];
    EXPECT(fid(x, N, x, N, D, &f, err, sizeof(err)) == 0 && fabs(f) < 1e-9, "FID of a set with itself: %g", f);
    EXPECT(fid(x, N, y, N, D, &f, err, sizeof(err)) == 0 && fabs(f - 4.0 * D) < 1e-6 * 4.0 * D,
           "FID of a shifted copy: %.10g, want |shift|^2 = %d", f, 4 * D);
    // KID: two independent draws of one distribution score near 0 (unbiased: either sign), a
    // shifted one far above
    float *z = malloc(sizeof(float) * N * D);
    fill_randn(z, N * D, 4, 1.0f);
    double k_shift;
    EXPECT(kid(x, N, z, N, D, &k, err, sizeof(err)) == 0 && kid(x, N, y, N, D, &k_shift, err, sizeof(err)) == 0,
           "%s", err);
    EXPECT(fabs(k) < 0.05 && k_shift > 100 * fabs(k), "KID same distribution %g, shifted %g", k, k_shift);
    free(z);
    EXPECT(fid(x, 1, y, N, D, &f, err, sizeof(err)) == -1, "FID of one sample should be refused");
    // inception score: uniform -> 1; confident and balanced over K classes -> K
    float u[20 * K], c[20 * K];
    for (int n = 0; n < 20; n++)
        for (int j = 0; j < K; j++) u[n * K + j] = 1.0f / K, c[n * K + j] = j == n % K;
    expect_rel("IS of a uniform predictor", inception_score(u, 20, K), 1.0, 1e-12);
    expect_rel("IS of confident balanced predictions", inception_score(c, 20, K), K, 1e-12);
    // precision / recall of a set with itself: every point lies in its own neighbours' balls
    double pr, rc;
    EXPECT(precision_recall(x, N, x, N, D, 3, &pr, &rc, err, sizeof(err)) == 0 && pr == 1.0 && rc == 1.0,
           "precision/recall of identical sets: %g %g", pr, rc);
    free(x), free(y);
}

static void test_auc_eer(void) {
    double g1[] = {0.9, 0.8, 0.7}, i1[] = {0.1, 0.2, 0.3};
    EXPECT(roc_auc(g1, 3, i1, 3) == 1.0 && fabs(equal_error_rate(g1, 3, i1, 3)) < 1e-12, "separable: AUC %g EER %g",
           roc_auc(g1, 3, i1, 3), equal_error_rate(g1, 3, i1, 3));
    double g2[] = {0.6, 0.4}, i2[] = {0.5, 0.3};
    EXPECT(roc_auc(g2, 2, i2, 2) == 0.75, "AUC %g, want 0.75 (3 of 4 pairs ordered)", roc_auc(g2, 2, i2, 2));
    EXPECT(fabs(equal_error_rate(g2, 2, i2, 2) - 0.5) < 1e-12, "EER %g, want 0.5", equal_error_rate(g2, 2, i2, 2));
    double g3[] = {1, 2, 3}, i3[] = {1, 2, 3};
    EXPECT(roc_auc(g3, 3, i3, 3) == 0.5 && fabs(equal_error_rate(g3, 3, i3, 3) - 0.5) < 1e-12,
           "identical scores: AUC %g EER %g, want 0.5 0.5", roc_auc(g3, 3, i3, 3), equal_error_rate(g3, 3, i3, 3));
    double g4[] = {0.2, 0.1}, i4[] = {0.9, 0.8};
    EXPECT(roc_auc(g4, 2, i4, 2) == 0.0 && fabs(equal_error_rate(g4, 2, i4, 2) - 1.0) < 1e-12, "reversed: AUC %g EER %g",
           roc_auc(g4, 2, i4, 2), equal_error_rate(g4, 2, i4, 2));
}

// the spectrogram statistics on images built to known answers
static void test_spectro(void) {
    enum { H = 16, W = 48 };
    float img[2][H * W];
    for (int s = 0; s < 2; s++)  // a torso line oscillating with period 8 (s = 0) and 12 (s = 1), the rest -1
        for (int w = 0; w < W; w++) {
            int line = 8 + (int)lrint(4 * sin(2 * M_PI * w / (s ? 12.0 : 8.0)));
            for (int h = 0; h < H; h++) img[s][h * W + w] = h == line ? 1.0f : h == line - 1 || h == line + 1 ? 0.0f : -1.0f;
        }
    EXPECT(cadence(img[0], H, W) == 8 && cadence(img[1], H, W) == 12, "cadence %d and %d, want 8 and 12",
           cadence(img[0], H, W), cadence(img[1], H, W));
    float flat[H * W];
    for (int i = 0; i < H * W; i++) flat[i] = 0.5f;
    EXPECT(cadence(flat, H, W) == 0, "a flat line has no cadence (%d)", cadence(flat, H, W));
    double p[H], q[H], sum = 0;
    doppler_profile(p, img[0], 1, 1, H, W);
    doppler_profile(q, img[1], 1, 1, H, W);
    for (int h = 0; h < H; h++) sum += p[h];
    EXPECT(fabs(sum - 1) < 1e-12 && total_variation(p, p, H) == 0 && total_variation(p, q, H) > 0.01,
           "profile sums to %g; TV self %g, other %g", sum, total_variation(p, p, H), total_variation(p, q, H));
    float a[4] = {3, 1, 2, 4}, b[4] = {4, 2, 3, 1}, c[3] = {5, 6, 7}, d[4] = {1, 2, 3, 4};
    EXPECT(ks_statistic(a, 4, b, 4) == 0, "KS of equal sets %g", ks_statistic(a, 4, b, 4));
    EXPECT(ks_statistic(d, 4, c, 3) == 1, "KS of disjoint sets %g", ks_statistic(d, 4, c, 3));
    float e[2] = {1, 3}, f[2] = {2, 4};
    EXPECT(fabs(ks_statistic(e, 2, f, 2) - 0.5) < 1e-12, "KS of interleaved sets %g, want 0.5", ks_statistic(e, 2, f, 2));
}

int main(void) {
    RUN(test_against_reference);
    RUN(test_closed_forms);
    RUN(test_auc_eer);
    RUN(test_spectro);
    return tl_finish();
}
