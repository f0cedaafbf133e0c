// spectro.c: Doppler profiles, the KS statistic and the gait cadence (spectro.h).
#include "metrics/spectro.h"

#include <math.h>
#include <stdlib.h>

#include "check.h"

void doppler_profile(double *profile, const float *imgs, int n, int C, int H, int W) {
    double total = 0;
    for (int h = 0; h < H; h++) profile[h] = 0;
    for (int i = 0; i < n; i++) {
        const float *x = imgs + (size_t)i * C * H * W;  // channel 0
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++) profile[h] += 0.5 * (x[(size_t)h * W + w] + 1.0);
    }
    for (int h = 0; h < H; h++) total += profile[h];
    for (int h = 0; h < H; h++) profile[h] = total > 0 ? profile[h] / total : 1.0 / H;
}

double total_variation(const double *p, const double *q, int H) {
    double s = 0;
    for (int h = 0; h < H; h++) s += fabs(p[h] - q[h]);
    return 0.5 * s;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

double ks_statistic(float *a, size_t na, float *b, size_t nb) {
    qsort(a, na, sizeof(float), cmp_float);
    qsort(b, nb, sizeof(float), cmp_float);
    size_t i = 0, j = 0;
    double d = 0;
    while (i < na && j < nb) {  // step through the merged values; ties advance both sides together
        float v = a[i] < b[j] ? a[i] : b[j];
        while (i < na && a[i] == v) i++;
        while (j < nb && b[j] == v) j++;
        double e = fabs((double)i / na - (double)j / nb);
        if (e > d) d = e;
    }
    return d;
}

int cadence(const float *img, int H, int W) {
    if (W < 4) return 0;
    double *line = xmalloc((size_t)W * sizeof(double)), mean = 0;
    for (int w = 0; w < W; w++) {
        int best = 0;
        for (int h = 1; h < H; h++)
            if (img[(size_t)h * W + w] > img[(size_t)best * W + w]) best = h;
        line[w] = best, mean += best;
    }
    mean /= W;
    double var = 0;
    for (int w = 0; w < W; w++) line[w] -= mean, var += line[w] * line[w];
    int period = 0, L = W / 2;
    if (var > 0) {
        double *r = xmalloc((size_t)(L + 2) * sizeof(double)), top = -INFINITY;
        for (int lag = 1; lag <= L + 1 && lag < W; lag++) {
            double s = 0;
            for (int w = 0; w + lag < W; w++) s += line[w] * line[w + lag];
            r[lag] = s / (W - lag);  // unbiased: long lags are not penalised for their shorter overlap
            if (lag >= 2 && lag <= L && r[lag] > top) top = r[lag];
        }
        // the first local maximum within 80% of the highest: the period, not one of its multiples
        for (int lag = 2; lag <= L && !period; lag++) {
            int right_ok = lag + 1 >= W || r[lag] >= r[lag + 1];
            if (r[lag] >= r[lag - 1] && right_ok && r[lag] >= 0.8 * top && top > 0) period = lag;
        }
        free(r);
    }
    free(line);
    return period;
}
