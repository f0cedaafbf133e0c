// test_plot.c: plot_lines (common/plot/plot.h) writes a readable 900x500 PNG through PLplot, skips
// non-finite points, handles empty series and log axes, leaves no temporary file behind, reports
// an unwritable folder as an error, and may be called from several threads at once.
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "image/image.h"
#include "io/fileio.h"
#include "plot/plot.h"
#include "testlib.h"

static char out_dir[512];

static const char *out_path(const char *name) {
    static char path[1024];
    snprintf(path, sizeof(path), "%s/%s", out_dir, name);
    return path;
}

// reads the PNG back: 900x500 RGB, with `min_dark` pixels that are not white and `min_colour`
// pixels of a saturated colour (the series lines)
static void expect_plot(const char *path, size_t min_dark, size_t min_colour) {
    Image im = {0};
    char err[512];
    if (image_read_png(path, &im, err, sizeof(err)) != 0) {
        tl_fail(__FILE__, __LINE__, "%s does not read back as a PNG: %s", path, err);
        return;
    }
    EXPECT(im.W == PLOT_WIDTH && im.H == PLOT_HEIGHT, "%s is %dx%d, want %dx%d", path, im.W, im.H, PLOT_WIDTH,
           PLOT_HEIGHT);
    EXPECT(im.C == 3, "%s has %d channels, want RGB", path, im.C);
    size_t HW = (size_t)im.H * im.W, dark = 0, colour = 0;
    if (im.C == 3) {
        for (size_t i = 0; i < HW; i++) {
            float r = im.data[i], g = im.data[HW + i], b = im.data[2 * HW + i];
            float mx = fmaxf(r, fmaxf(g, b)), mn = fminf(r, fminf(g, b));
            dark += mn < 0.9f;
            colour += mx - mn > 0.3f;
        }
        // the corner is background: white
        EXPECT(im.data[0] > 0.99f && im.data[HW] > 0.99f && im.data[2 * HW] > 0.99f, "%s: the background is not white",
               path);
    }
    printf("  %s: %dx%dx%d, %zu non-white pixels, %zu coloured\n", path, im.C, im.H, im.W, dark, colour);
    EXPECT(dark >= min_dark, "%s: only %zu non-white pixels (axes, text), want >= %zu", path, dark, min_dark);
    EXPECT(colour >= min_colour, "%s: only %zu coloured pixels (series lines), want >= %zu", path, colour, min_colour);
    image_free(&im);
}

static int leftover_tmp_files(void) {
    DIR *d = opendir(out_dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

static void test_two_series_with_nan(void) {
    enum { N = 200 };
    float x0[N], y0[N], x1[N], y1[N];
    for (int i = 0; i < N; i++) {
        x0[i] = x1[i] = (float)i;
        y0[i] = 1.0f / (1.0f + 0.05f * i) + 0.02f * sinf(0.7f * i);
        y1[i] = 0.6f * expf(-0.01f * i) + 0.1f;
    }
    y0[50] = NAN;        // a gap in the training loss
    y1[120] = INFINITY;  // and a non-finite validation point
    x1[121] = NAN;
    const char *names[2] = {"train loss (l1 + kl)", "val #1"};
    const float *xs[2] = {x0, x1}, *ys[2] = {y0, y1};
    int counts[2] = {N, N};
    char err[512] = "";
    const char *path = out_path("two_series.png");
    int rc = plot_lines(path, "VAE training", "step", "loss", 0, 2, names, xs, ys, counts, err, sizeof(err));
    EXPECT(rc == 0, "plot_lines failed: %s", err);
    struct stat sb;
    EXPECT(stat(path, &sb) == 0 && sb.st_size > 1000, "%s is missing or tiny", path);
    expect_plot(path, 2000, 400);
    EXPECT(leftover_tmp_files() == 0, "a temporary file was left in %s", out_dir);
}

static void test_logy_empty_and_degenerate(void) {
    float x[5] = {0, 1, 2, 3, 4}, y[5] = {1.0f, 0.1f, 0.0f, -1.0f, 0.001f};  // y <= 0 skipped on a log axis
    float cx[3] = {5, 5, 5}, cy[3] = {0.5f, 0.5f, 0.5f};                       // one x, one y: a degenerate range
    const char *names[3] = {"loss", "empty", "constant"};
    const float *xs[3] = {x, NULL, cx}, *ys[3] = {y, NULL, cy};
    int counts[3] = {5, 0, 3};
    char err[512] = "";
    EXPECT(plot_lines(out_path("logy.png"), "log axis", "step", "loss", 1, 3, names, xs, ys, counts, err,
                      sizeof(err)) == 0, "log plot failed: %s", err);
    expect_plot(out_path("logy.png"), 1000, 200);
    // nothing plottable at all, and no series at all: axes on [0, 1]
    float nx[2] = {NAN, 1}, ny[2] = {1, NAN};
    const float *nxs[1] = {nx}, *nys[1] = {ny};
    int nc[1] = {2};
    EXPECT(plot_lines(out_path("nan_only.png"), "no data", "x", "y", 0, 1, NULL, nxs, nys, nc, err, sizeof(err)) == 0,
           "all-NaN plot failed: %s", err);
    expect_plot(out_path("nan_only.png"), 1000, 0);
    EXPECT(plot_lines(out_path("none.png"), NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL, err, sizeof(err)) == 0,
           "plot without series failed: %s", err);
    expect_plot(out_path("none.png"), 500, 0);
}

static void test_errors(void) {
    float x[2] = {0, 1}, y[2] = {0, 1};
    const float *xs[1] = {x}, *ys[1] = {y};
    int counts[1] = {2}, bad[1] = {-1};
    char err[512] = "";
    EXPECT(plot_lines("/nonexistent-dir/plot.png", "t", "x", "y", 0, 1, NULL, xs, ys, counts, err, sizeof(err)) == -1,
           "an unwritable path was accepted");
    printf("  error: %s\n", err);
    EXPECT(strstr(err, "/nonexistent-dir/plot.png") != NULL, "the message does not name the file: %s", err);
    EXPECT(plot_lines(out_path("bad.png"), "t", "x", "y", 0, 1, NULL, xs, ys, bad, err, sizeof(err)) == -1,
           "a negative point count was accepted");
    const float *nulls[1] = {NULL};
    EXPECT(plot_lines(out_path("bad.png"), "t", "x", "y", 0, 1, NULL, nulls, ys, counts, err, sizeof(err)) == -1,
           "a series with points and no x array was accepted");
    EXPECT(access(out_path("bad.png"), F_OK) != 0, "a failed plot left a file behind");
    EXPECT(leftover_tmp_files() == 0, "a failed plot left a temporary file in %s", out_dir);
}

// the lock serialises PLplot; every thread gets its own complete file
static void test_threads(void) {
    enum { T = 4, N = 64 };
    int fails = 0;
#pragma omp parallel for num_threads(T) reduction(+ : fails)
    for (int t = 0; t < T; t++) {
        float x[N], y[N];
        for (int i = 0; i < N; i++) x[i] = (float)i, y[i] = sinf(0.1f * i * (t + 1));
        const float *xs[1] = {x}, *ys[1] = {y};
        int counts[1] = {N};
        char name[64], err[512];
        snprintf(name, sizeof(name), "thread%d.png", t);
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", out_dir, name);
        fails += plot_lines(path, name, "x", "y", 0, 1, NULL, xs, ys, counts, err, sizeof(err)) != 0;
    }
    EXPECT(fails == 0, "%d threaded plots failed", fails);
    for (int t = 0; t < T; t++) {
        char name[64];
        snprintf(name, sizeof(name), "thread%d.png", t);
        expect_plot(out_path(name), 1000, 100);
    }
}

int main(void) {
    const char *base = getenv("DOPPEL_TEST_OUT");
    snprintf(out_dir, sizeof(out_dir), "%s/plot", base ? base : "build/test-out");
    char err[512];
    CHECK(mkdir_p(out_dir, err, sizeof(err)) == 0, "%s", err);
    RUN(test_two_series_with_nan);
    RUN(test_logy_empty_and_degenerate);
    RUN(test_errors);
    RUN(test_threads);
    return tl_finish();
}
