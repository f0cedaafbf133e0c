// quality.c: PSNR, SSIM and L1 between two images (see quality.h for the definitions).
#include "quality.h"

#include <math.h>
#include <stdlib.h>

#include "../check.h"

double mean_sq(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        s += d * d;
    }
    return n ? s / n : 0.0;
}

double mean_abs(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += fabs((double)a[i] - b[i]);
    return n ? s / n : 0.0;
}

double psnr(const float *a, const float *b, size_t n, double data_range) {
    double mse = mean_sq(a, b, n);
    if (mse <= 0) return PSNR_IDENTICAL;
    double p = 10.0 * log10(data_range * data_range / mse);
    return p > PSNR_IDENTICAL ? PSNR_IDENTICAL : p;
}

// the 1-D Gaussian, normalised over its SSIM_WIN taps (scipy's gaussian_filter with truncate 3.5
// at sigma 1.5 has radius 5: the same 11 taps, which skimage's crop then keeps to valid positions)
static void gauss_window(double *g) {
    int r = SSIM_WIN / 2;
    double s = 0;
    for (int i = 0; i < SSIM_WIN; i++) s += g[i] = exp(-(double)(i - r) * (i - r) / (2 * SSIM_SIGMA * SSIM_SIGMA));
    for (int i = 0; i < SSIM_WIN; i++) g[i] /= s;
}

// valid separable filtering of the five moment maps of one channel:
// in: x, y (H, W); out: mu_x, mu_y, E[x^2], E[y^2], E[xy] at (OH, OW) = (H-10, W-10)
static void ssim_moments(double *const out[5], const float *x, const float *y, int H, int W, const double *g,
                         double *row /* (5, H, OW) */) {
    int OW = W - SSIM_WIN + 1, OH = H - SSIM_WIN + 1;
    size_t plane = (size_t)H * OW;
    for (int i = 0; i < H; i++)  // horizontal pass
        for (int j = 0; j < OW; j++) {
            double s[5] = {0};
            for (int k = 0; k < SSIM_WIN; k++) {
                double a = x[(size_t)i * W + j + k], b = y[(size_t)i * W + j + k], w = g[k];
                s[0] += w * a, s[1] += w * b, s[2] += w * a * a, s[3] += w * b * b, s[4] += w * a * b;
            }
            for (int m = 0; m < 5; m++) row[m * plane + (size_t)i * OW + j] = s[m];
        }
    for (int m = 0; m < 5; m++)  // vertical pass
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                double s = 0;
                for (int k = 0; k < SSIM_WIN; k++) s += g[k] * row[m * plane + (size_t)(i + k) * OW + j];
                out[m][(size_t)i * OW + j] = s;
            }
}

double ssim(const float *a, const float *b, int C, int H, int W, double data_range) {
    if (H < SSIM_WIN || W < SSIM_WIN || C < 1) return NAN;
    double g[SSIM_WIN];
    gauss_window(g);
    int OH = H - SSIM_WIN + 1, OW = W - SSIM_WIN + 1;
    size_t on = (size_t)OH * OW;
    double *buf = xmalloc((5 * (size_t)H * OW + 5 * on) * sizeof(double));
    double *row = buf, *m[5];
    for (int k = 0; k < 5; k++) m[k] = buf + 5 * (size_t)H * OW + k * on;
    double c1 = (SSIM_K1 * data_range) * (SSIM_K1 * data_range), c2 = (SSIM_K2 * data_range) * (SSIM_K2 * data_range);
    double total = 0;
    for (int c = 0; c < C; c++) {
        const size_t off = (size_t)c * H * W;
        ssim_moments(m, a + off, b + off, H, W, g, row);
        double s = 0;
        for (size_t i = 0; i < on; i++) {
            double ux = m[0][i], uy = m[1][i];
            double vx = m[2][i] - ux * ux, vy = m[3][i] - uy * uy, vxy = m[4][i] - ux * uy;
            s += ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
        }
        total += s / on;
    }
    free(buf);
    return total / C;
}
