// test_sim.c: the walking-person radar simulator (common/sim/walker.c): determinism, thread
// safety, value range, the torso line at the body Doppler, the gait cadence, and that synthetic
// users are separable but not trivially (nearest-centroid accuracy, printed).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "sim/walker.h"
#include "testlib.h"

#define C_LIGHT 299792458.0

static float *spectrogram(int H, int W, uint64_t users_seed, int user, uint64_t sample_seed) {
    WalkerTraits t;
    walker_traits(&t, users_seed, user);
    RadarConfig rc = radar_default();
    float *x = xmalloc(sizeof(float) * (size_t)H * W);
    walker_spectrogram(x, H, W, &t, &rc, sample_seed);
    return x;
}

static void test_deterministic(void) {
    int H = 64, W = 64;
    float *a = spectrogram(H, W, 11, 3, 1234), *b = spectrogram(H, W, 11, 3, 1234);
    float *c = spectrogram(H, W, 11, 3, 1235), *d = spectrogram(H, W, 11, 4, 1234);
    size_t n = sizeof(float) * (size_t)H * W;
    EXPECT(memcmp(a, b, n) == 0, "same traits and sample seed gave different bytes");
    EXPECT(memcmp(a, c, n) != 0, "a different sample seed gave the same spectrogram");
    EXPECT(memcmp(a, d, n) != 0, "a different user gave the same spectrogram");
    WalkerTraits t1, t2;
    walker_traits(&t1, 11, 3);
    walker_traits(&t2, 11, 3);
    EXPECT(memcmp(&t1, &t2, sizeof(t1)) == 0, "walker_traits is not deterministic");
    free(a), free(b), free(c), free(d);
}

// the loader calls the simulator from OpenMP workers: every image must match the serial one
static void test_thread_safe(void) {
    enum { N = 16, H = 48, W = 40 };
    float *serial = xmalloc(sizeof(float) * N * H * W), *par = xmalloc(sizeof(float) * N * H * W);
    RadarConfig rc = radar_default();
    for (int i = 0; i < N; i++) {
        WalkerTraits t;
        walker_traits(&t, 5, i % 4);
        walker_spectrogram(serial + (size_t)i * H * W, H, W, &t, &rc, 100 + i);
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < N; i++) {
        WalkerTraits t;
        walker_traits(&t, 5, i % 4);
        walker_spectrogram(par + (size_t)i * H * W, H, W, &t, &rc, 100 + i);
    }
    EXPECT(memcmp(serial, par, sizeof(float) * N * H * W) == 0, "spectrograms made in OpenMP threads differ from serial ones");
    free(serial);
    free(par);
}

static void test_range(void) {
    int sizes[][2] = {{32, 32}, {64, 64}, {256, 256}, {48, 80}, {7, 3}};
    for (int s = 0; s < 5; s++) {
        int H = sizes[s][0], W = sizes[s][1];
        float *x = spectrogram(H, W, 2, s, 77);
        int bad = 0, zeros = 0;
        float mx = -1;
        for (int i = 0; i < H * W; i++) {
            if (!(x[i] >= 0.0f && x[i] <= 1.0f)) bad++;
            if (x[i] == 0.0f) zeros++;
            mx = fmaxf(mx, x[i]);
        }
        EXPECT(bad == 0, "%dx%d: %d values outside [0, 1] or NaN", H, W, bad);
        if (H >= 32) {
            EXPECT(mx > 0.6f, "%dx%d: brightest pixel %.3f, expected the torso near the peak (1)", H, W, mx);
            EXPECT(zeros > H * W / 10, "%dx%d: only %d pixels at the floor; the background should be dark", H, W, zeros);
        }
        free(x);
    }
    WalkerTraits t;
    for (int i = 0; i < 200; i++) {  // traits stay in their documented ranges
        walker_traits(&t, 9, i);
        EXPECT(t.height >= 1.5f && t.height <= 1.95f && t.rel_speed >= 0.9f && t.rel_speed <= 1.7f && t.arm_swing >= 0.4f &&
                   t.arm_swing <= 1.4f && t.asymmetry >= 0 && t.asymmetry <= 0.25f && t.body_scale >= 0.85f &&
                   t.body_scale <= 1.2f && t.aspect_deg >= 0 && t.aspect_deg <= 40,
               "user %d: traits out of range (h %.2f rv %.2f arm %.2f asym %.2f scale %.2f aspect %.1f)", i, t.height,
               t.rel_speed, t.arm_swing, t.asymmetry, t.body_scale, t.aspect_deg);
        if (tl_current_failed()) break;
    }
}

// Doppler (Hz) at the centre of row h; row 0 is +doppler_max
static double row_hz(const RadarConfig *rc, int H, double h) { return rc->doppler_max_hz * (1 - 2 * (h + 0.5) / H); }

// The brightest line is the torso: the mean over columns of the argmax of the smoothed spectrum
// sits at the body's Doppler -2 V cos(aspect) / lambda (walking away from the radar).
static void test_torso_line(void) {
    enum { H = 128, W = 128 };
    RadarConfig rc = radar_default();
    double lambda = C_LIGHT / rc.carrier_hz;
    for (int u = 0; u < 6; u++) {
        WalkerTraits t;
        walker_traits(&t, 21, u);
        float *x = spectrogram(H, W, 21, u, 900 + u);
        double sum = 0;
        for (int c = 1; c < W - 1; c++) {
            int best = 0;
            float bv = -1;
            for (int h = 2; h < H - 2; h++) {  // 5 rows x 3 columns box
                float v = 0;
                for (int dh = -2; dh <= 2; dh++)
                    for (int dc = -1; dc <= 1; dc++) v += x[(h + dh) * W + c + dc];
                if (v > bv) bv = v, best = h;
            }
            sum += row_hz(&rc, H, best);
        }
        double got = sum / (W - 2), want = -2 * walker_speed_mps(&t) * cos(t.aspect_deg * M_PI / 180) / lambda;
        printf("  user %d: V %.2f m/s, aspect %4.1f deg: torso line %6.0f Hz, expected %6.0f Hz (%+.1f%%)\n", u,
               walker_speed_mps(&t), t.aspect_deg, got, want, 100 * (got / want - 1));
        EXPECT(fabs(got / want - 1) < 0.15, "user %d: torso line at %.0f Hz, body Doppler %.0f Hz", u, got, want);
        free(x);
    }
}

// The swing legs come once per step: the autocorrelation of the column energy peaks at half the
// gait cycle (or at the full cycle when left and right differ).
static void test_cadence(void) {
    enum { H = 64, W = 256 };
    RadarConfig rc = radar_default();
    for (int u = 0; u < 6; u++) {
        WalkerTraits t;
        walker_traits(&t, 33, u);
        float *x = spectrogram(H, W, 33, u, 500 + u);
        double e[W], mean = 0, ac[W / 2 + 1];
        for (int c = 0; c < W; c++) {
            e[c] = 0;
            for (int h = 0; h < H; h++) e[c] += x[h * W + c];
            mean += e[c] / W;
        }
        for (int L = 0; L <= W / 2; L++) {
            ac[L] = 0;
            for (int c = 0; c + L < W; c++) ac[L] += (e[c] - mean) * (e[c + L] - mean) / (W - L);
        }
        double cols_per_s = W / radar_window_s(&rc), step = 0.5 * walker_cycle_s(&t) * cols_per_s;
        int lo = (int)(0.6 * step), hi = (int)fmin(W / 2, 2.3 * step), best = lo;
        for (int L = lo; L <= hi; L++)
            if (ac[L] > ac[best]) best = L;
        double r_step = best / step, r_cycle = best / (2 * step);
        printf("  user %d: RV %.2f: autocorrelation peak at %d columns; a step is %.1f, a cycle %.1f\n", u, t.rel_speed, best,
               step, 2 * step);
        EXPECT(fabs(r_step - 1) < 0.15 || fabs(r_cycle - 1) < 0.15,
               "user %d: cadence peak at %d columns, expected %.1f (step) or %.1f (cycle)", u, best, step, 2 * step);
        free(x);
    }
}

// Nearest-centroid accuracy (%) of U users x S samples of D features each: the first TRAIN
// samples of a user make its centroid, the others are classified.
static double nearest_centroid(const float *x, int U, int S, int TRAIN, int D, int *correct, int *total) {
    float *cent = xcalloc((size_t)U * D, sizeof(float));
    for (int u = 0; u < U; u++)
        for (int s = 0; s < TRAIN; s++)
            for (int k = 0; k < D; k++) cent[(size_t)u * D + k] += x[((size_t)u * S + s) * D + k] / TRAIN;
    *correct = *total = 0;
    for (int u = 0; u < U; u++)
        for (int s = TRAIN; s < S; s++, (*total)++) {
            const float *v = x + ((size_t)u * S + s) * D;
            int best = -1;
            double bd = 1e30;
            for (int c = 0; c < U; c++) {
                double d = 0;
                for (int k = 0; k < D; k++) d += (v[k] - cent[(size_t)c * D + k]) * (v[k] - cent[(size_t)c * D + k]);
                if (d < bd) bd = d, best = c;
            }
            *correct += best == u;
        }
    free(cent);
    return 100.0 * *correct / *total;
}

static void standardise(float *v, int n) {  // zero mean, unit variance
    double m = 0, s = 0;
    for (int k = 0; k < n; k++) m += v[k];
    m /= n;
    for (int k = 0; k < n; k++) s += (v[k] - m) * (v[k] - m);
    s = sqrt(s / n) + 1e-6;
    for (int k = 0; k < n; k++) v[k] = (float)((v[k] - m) / s);
}

// 31 users x 12 samples, 8 to train / 4 to test, nearest centroid after per-image
// standardisation. On raw pixels the random start phase (where the leg swings fall in time)
// dominates the distances, so identity is scored on the time-averaged spectrum (each image
// averaged over its columns: phase-free): well above chance (1/31), and not perfect. The pixel
// figure is printed and only has to beat chance clearly.
static void test_separable(void) {
    enum { U = 31, S = 12, TRAIN = 8, R = 32, P = R * R };
    float *x = xmalloc(sizeof(float) * U * S * P), *prof = xmalloc(sizeof(float) * U * S * R);
    RadarConfig rc = radar_default();
#pragma omp parallel for schedule(dynamic, 4)
    for (int i = 0; i < U * S; i++) {
        WalkerTraits t;
        walker_traits(&t, 2024, i / S);
        walker_spectrogram(x + (size_t)i * P, R, R, &t, &rc, 7000 + (uint64_t)i);
    }
    for (int i = 0; i < U * S; i++) {
        float *v = x + (size_t)i * P, *p = prof + (size_t)i * R;
        for (int h = 0; h < R; h++) {
            p[h] = 0;
            for (int w = 0; w < R; w++) p[h] += v[h * R + w] / R;
        }
        standardise(v, P);
        standardise(p, R);
    }
    int c_pix, c_prof, n;
    double acc_pix = nearest_centroid(x, U, S, TRAIN, P, &c_pix, &n);
    double acc_prof = nearest_centroid(prof, U, S, TRAIN, R, &c_prof, &n);
    printf("  nearest centroid, %d users at %dx%d, %d test samples (chance %.1f%%):\n", U, R, R, n, 100.0 / U);
    printf("    time-averaged spectrum: %d right = %.1f%%%s\n", c_prof, acc_prof,
           c_prof == n ? " (100%: users are trivially separable)" : " (not 100%)");
    printf("    raw pixels:             %d right = %.1f%%%s\n", c_pix, acc_pix,
           c_pix == n ? " (100%: users are trivially separable)" : " (not 100%)");
    EXPECT(acc_prof > 30, "users not separable: nearest-centroid accuracy on the time-averaged spectrum %.1f%%", acc_prof);
    EXPECT(acc_pix > 2 * 100.0 / U, "raw-pixel nearest centroid %.1f%% is not clearly above chance", acc_pix);
    free(x);
    free(prof);
}

int main(void) {
    RUN(test_deterministic);
    RUN(test_thread_safe);
    RUN(test_range);
    RUN(test_torso_line);
    RUN(test_cadence);
    RUN(test_separable);
    return tl_finish();
}
