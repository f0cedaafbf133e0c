// resize.c: separable resampling. Each axis gets a table of taps (first source index, count,
// weights) for every output index; a horizontal pass over rows then a vertical pass apply them.
//   AREA      exact box filter: output pixel o covers source interval [o*s, (o+1)*s), s = in/out,
//             and each source pixel weighs by the length of its overlap (fractions at the ends)
//   BILINEAR  torch.nn.functional.interpolate(mode="bilinear", align_corners=False) (and PIL's
//             pixel-centre convention): source x = (o + 0.5) * s - 0.5, clamped at the edges; no
//             antialiasing when shrinking, as torch
//   LANCZOS   Lanczos-3 as PIL computes it: kernel stretched by max(s, 1), taps cut at the image
//             edge and renormalised
//   AUTO      per axis: AREA when that axis shrinks, BILINEAR when it grows
// Weights of every output sum to 1, so a constant image stays constant.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "image/image.h"

typedef struct {
    int *start;  // (out) first source index of each output
    int *n;      // (out) number of taps
    float *w;    // (out, maxn) weights
    int maxn;
} Taps;

static double lanczos3(double x) {
    x = fabs(x);
    if (x < 1e-12) return 1.0;
    if (x >= 3.0) return 0.0;
    double px = M_PI * x;
    return 3.0 * sin(px) * sin(px / 3.0) / (px * px);
}

// Fills taps for output o; returns the number used (at most maxn).
static int taps_area(double *w, int *start, int o, int in, double s) {
    double lo = o * s, hi = (o + 1) * s;
    int i0 = (int)floor(lo), i1 = (int)ceil(hi);
    if (i1 > in) i1 = in;
    *start = i0;
    for (int i = i0; i < i1; i++) w[i - i0] = (fmin(hi, i + 1.0) - fmax(lo, (double)i)) / s;
    return i1 - i0;
}

static int taps_bilinear(double *w, int *start, int o, int in, double s) {
    double x = (o + 0.5) * s - 0.5;
    if (x < 0) x = 0;
    int i0 = (int)x;
    if (i0 > in - 1) i0 = in - 1;
    double l1 = x - i0;
    *start = i0;
    if (i0 >= in - 1 || l1 == 0) {
        w[0] = 1.0;
        return 1;
    }
    w[0] = 1.0 - l1, w[1] = l1;
    return 2;
}

static int taps_lanczos(double *w, int *start, int o, int in, double s) {
    double fs = s > 1 ? s : 1, support = 3.0 * fs, center = (o + 0.5) * s;
    int i0 = (int)(center - support + 0.5), i1 = (int)(center + support + 0.5);
    if (i0 < 0) i0 = 0;
    if (i1 > in) i1 = in;
    *start = i0;
    for (int i = i0; i < i1; i++) w[i - i0] = lanczos3((i - center + 0.5) / fs);
    return i1 - i0;
}

static void taps_build(Taps *t, int in, int out, ResizeMode mode) {
    double s = (double)in / out;
    if (mode == RESIZE_AUTO) mode = out < in ? RESIZE_AREA : RESIZE_BILINEAR;
    t->maxn = mode == RESIZE_AREA ? (int)ceil(s) + 2 : mode == RESIZE_BILINEAR ? 2 : (int)ceil(6.0 * (s > 1 ? s : 1)) + 2;
    t->start = xmalloc((size_t)out * sizeof(int));
    t->n = xmalloc((size_t)out * sizeof(int));
    t->w = xcalloc((size_t)out * (size_t)t->maxn, sizeof(float));
    double *w = xmalloc((size_t)t->maxn * sizeof(double));
    for (int o = 0; o < out; o++) {
        int n = mode == RESIZE_AREA ? taps_area(w, &t->start[o], o, in, s)
              : mode == RESIZE_BILINEAR ? taps_bilinear(w, &t->start[o], o, in, s)
              : taps_lanczos(w, &t->start[o], o, in, s);
        CHECK(n >= 1 && n <= t->maxn && t->start[o] >= 0 && t->start[o] + n <= in, "resize taps: %d at %d for %d->%d", n, t->start[o], in, out);
        double sum = 0;
        for (int k = 0; k < n; k++) sum += w[k];
        for (int k = 0; k < n; k++) t->w[(size_t)o * (size_t)t->maxn + (size_t)k] = (float)(w[k] / sum);
        t->n[o] = n;
    }
    free(w);
}

static void taps_free(Taps *t) {
    free(t->start);
    free(t->n);
    free(t->w);
}

// out (rows, Wo) from in (rows, Wi) along rows
static void resize_rows(float *out, const float *in, const Taps *t, int rows, int Wi, int Wo) {
#pragma omp parallel for schedule(static) if ((size_t)rows * (size_t)Wo > 65536)
    for (int r = 0; r < rows; r++) {
        const float *src = in + (size_t)r * (size_t)Wi;
        float *dst = out + (size_t)r * (size_t)Wo;
        for (int o = 0; o < Wo; o++) {
            const float *w = t->w + (size_t)o * (size_t)t->maxn, *p = src + t->start[o];
            float acc = 0;
            for (int k = 0; k < t->n[o]; k++) acc += w[k] * p[k];
            dst[o] = acc;
        }
    }
}

// out (C, Ho, W) from in (C, Hi, W) along columns, a whole row at a time
static void resize_cols(float *out, const float *in, const Taps *t, int C, int Hi, int Ho, int W) {
#pragma omp parallel for schedule(static) if ((size_t)C * (size_t)Ho * (size_t)W > 65536)
    for (int r = 0; r < C * Ho; r++) {
        int c = r / Ho, o = r % Ho;
        float *dst = out + (size_t)r * (size_t)W;
        const float *w = t->w + (size_t)o * (size_t)t->maxn;
        const float *src = in + ((size_t)c * (size_t)Hi + (size_t)t->start[o]) * (size_t)W;
        for (int x = 0; x < W; x++) dst[x] = 0;
        for (int k = 0; k < t->n[o]; k++)
            for (int x = 0; x < W; x++) dst[x] += w[k] * src[(size_t)k * (size_t)W + (size_t)x];
    }
}

int image_resize(const Image *src, Image *dst, int H, int W, ResizeMode mode) {
    if (dst == src) return -1;  // dst is overwritten; it must be another Image
    memset(dst, 0, sizeof(*dst));
    if (!src || !src->data || src->H <= 0 || src->W <= 0 || mode < RESIZE_AUTO || mode > RESIZE_LANCZOS) return -1;
    if (image_alloc(dst, src->C, H, W) != 0) return -1;
    dst->bits = src->bits;
    if (H == src->H && W == src->W) {
        memcpy(dst->data, src->data, (size_t)src->C * (size_t)H * (size_t)W * sizeof(float));
        return 0;
    }
    Taps th, tw;
    taps_build(&tw, src->W, W, mode);
    taps_build(&th, src->H, H, mode);
    float *tmp = xmalloc((size_t)src->C * (size_t)src->H * (size_t)W * sizeof(float));  // (C, src->H, W)
    resize_rows(tmp, src->data, &tw, src->C * src->H, src->W, W);
    resize_cols(dst->data, tmp, &th, src->C, src->H, H, W);
    free(tmp);
    taps_free(&tw);
    taps_free(&th);
    return 0;
}
