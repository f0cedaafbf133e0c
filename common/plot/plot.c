// plot.c: line charts through PLplot's pngcairo device (see plot.h).
//
// PLplot state is global; the lock below serialises every use of it in this process. Each plot
// gets its own PLplot stream (plmkstrm ... plend1), so nothing carries over between plots.
// PLplot exits the process on a few unrecoverable errors (plexit) and prompts on stdin for a
// device it cannot find, so everything it could fail on is checked before plinit: the arguments,
// that the pngcairo driver is installed (plgDevs), that the temporary file can be created.
// Recoverable errors (plabort) are captured with plsError instead of printed.
#include "plot/plot.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <plplot/plplot.h>

#include "check.h"

#define PLOT_DEVICE "pngcairo"

#ifdef __SANITIZE_ADDRESS__
// fontconfig (under cairo/pango) keeps its font cache for the life of the process by design;
// LeakSanitizer would call that a leak in every ASan binary that plots (make asan)
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libfontconfig.so\n"; }
#endif

static pthread_mutex_t plot_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long plot_counter;  // temporary-file suffix, under the lock

// colour map 0: 0 background, 1 axes and text, 2 grid, 3.. the series (matplotlib's tab10)
enum { COL_BG, COL_FG, COL_GRID, COL_SERIES, N_SERIES_COLOURS = 10 };
static const unsigned char TAB10[N_SERIES_COLOURS][3] = {
    {31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},  {148, 103, 189},
    {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};

static int driver_available(const char *dev) {
    const char *menu[256], *names[256];
    const char **pm = menu, **pn = names;
    int n = 256;
    plgDevs(&pm, &pn, &n);
    for (int i = 0; i < n; i++)
        if (names[i] && strcmp(names[i], dev) == 0) return 1;
    return 0;
}

// PLplot's escape character is '#'; "##" prints one. Returns a malloc'd copy.
static char *pl_text(const char *s) {
    if (!s) s = "";
    size_t n = 1;
    for (const char *p = s; *p; p++) n += *p == '#' ? 2 : 1;
    char *out = xmalloc(n), *o = out;
    for (const char *p = s; *p; p++) {
        *o++ = *p;
        if (*p == '#') *o++ = '#';
    }
    *o = 0;
    return out;
}

static int point_ok(float x, float y, int logy) { return isfinite(x) && isfinite(y) && (!logy || y > 0.0f); }
static double ycoord(float y, int logy) { return logy ? log10((double)y) : (double)y; }

// world window over every plotted point; [0, 1] when there is none
static void data_range(double r[4], int logy, int n_series, const float *const *x, const float *const *y,
                       const int *counts) {
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int s = 0; s < n_series; s++)
        for (int k = 0; k < counts[s]; k++) {
            if (!point_ok(x[s][k], y[s][k], logy)) continue;
            double px = x[s][k], py = ycoord(y[s][k], logy);
            xmin = fmin(xmin, px), xmax = fmax(xmax, px), ymin = fmin(ymin, py), ymax = fmax(ymax, py);
        }
    if (xmin > xmax) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
    if (xmax - xmin <= 1e-12 * fmax(1.0, fabs(xmin))) {
        double h = fmax(0.5, 0.05 * fabs(xmin));
        xmin -= h, xmax += h;
    }
    if (ymax - ymin <= 1e-12 * fmax(1.0, fabs(ymin))) {
        double h = fmax(0.5, 0.05 * fabs(ymin));
        ymin -= h, ymax += h;
    }
    double mx = 0.01 * (xmax - xmin), my = 0.05 * (ymax - ymin);  // dots at the ends stay inside
    r[0] = xmin - mx, r[1] = xmax + mx, r[2] = ymin - my, r[3] = ymax + my;
}

// one series: runs of consecutive plottable points as lines, lone points (or a run that stays on
// one spot) as dots
static void draw_series(const float *x, const float *y, int n, int logy, PLFLT *bx, PLFLT *by) {
    int run = 0, moved = 0;
    for (int k = 0; k <= n; k++) {
        if (k < n && point_ok(x[k], y[k], logy)) {
            bx[run] = x[k], by[run] = ycoord(y[k], logy);
            moved |= run > 0 && (bx[run] != bx[0] || by[run] != by[0]);
            run++;
            continue;
        }
        if (run > 0 && moved) plline(run, bx, by);
        else if (run > 0) plpoin(1, bx, by, 17);
        run = moved = 0;
    }
}

static int check_args(const char *png_path, int n_series, const float *const *x, const float *const *y,
                      const int *counts, char *err, size_t errlen) {
    if (!png_path || !*png_path) return errf(err, errlen, "plot_lines: no output path");
    if (n_series < 0 || (n_series > 0 && !counts))
        return errf(err, errlen, "plot %s: %d series without point counts", png_path, n_series);
    for (int s = 0; s < n_series; s++) {
        if (counts[s] < 0) return errf(err, errlen, "plot %s: series %d has %d points", png_path, s, counts[s]);
        if (counts[s] > 0 && (!x || !y || !x[s] || !y[s]))
            return errf(err, errlen, "plot %s: series %d has %d points but no x or y array", png_path, s, counts[s]);
    }
    return 0;
}

// the drawing itself, on an initialised stream
static void draw(const char *title, const char *xlabel, const char *ylabel, int logy, int n_series,
                 const char *const *names, const float *const *x, const float *const *y, const int *counts) {
    double r[4];
    data_range(r, logy, n_series, x, y, counts);
    pladv(0);
    plvpor(0.09, 0.97, 0.12, 0.90);
    plwind(r[0], r[1], r[2], r[3]);
    plschr(0.0, 0.9);
    plcol0(COL_GRID);
    plwidth(0.5);
    plbox("g", 0.0, 0, logy ? "gl" : "g", 0.0, 0);
    plcol0(COL_FG);
    plwidth(1.0);
    plbox("bcnst", 0.0, 0, logy ? "bcnstvl" : "bcnstv", 0.0, 0);
    char *t = pl_text(title), *xl = pl_text(xlabel), *yl = pl_text(ylabel);
    pllab(xl, yl, t);
    free(t), free(xl), free(yl);

    int maxn = 1;
    for (int s = 0; s < n_series; s++) maxn = counts[s] > maxn ? counts[s] : maxn;
    PLFLT *bx = xmalloc((size_t)maxn * sizeof(PLFLT)), *by = xmalloc((size_t)maxn * sizeof(PLFLT));
    plwidth(1.6);
    plssym(0.0, 0.8);
    for (int s = 0; s < n_series; s++) {
        plcol0(COL_SERIES + s % N_SERIES_COLOURS);
        if (counts[s] > 0) draw_series(x[s], y[s], counts[s], logy, bx, by);
    }
    free(bx), free(by);
    if (n_series == 0) return;

    // legend: a line sample and the name per series, boxed, inside the top right corner
    PLINT *opt = xmalloc((size_t)n_series * sizeof(PLINT)), *col = xmalloc((size_t)n_series * sizeof(PLINT));
    PLINT *sty = xmalloc((size_t)n_series * sizeof(PLINT)), *tcol = xmalloc((size_t)n_series * sizeof(PLINT));
    PLFLT *wid = xmalloc((size_t)n_series * sizeof(PLFLT));
    char **text = xmalloc((size_t)n_series * sizeof(char *));
    for (int s = 0; s < n_series; s++) {
        char def[32];
        snprintf(def, sizeof(def), "series %d", s + 1);
        opt[s] = PL_LEGEND_LINE, col[s] = COL_SERIES + s % N_SERIES_COLOURS, sty[s] = 1, wid[s] = 1.6;
        tcol[s] = COL_FG;
        text[s] = pl_text(names && names[s] ? names[s] : def);
    }
    PLFLT lw, lh;
    plwidth(1.0);
    pllegend(&lw, &lh, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX, PL_POSITION_RIGHT | PL_POSITION_TOP | PL_POSITION_INSIDE,
             0.02, 0.03, 0.06, COL_BG, COL_FG, 1, 0, 0, n_series, opt, 1.0, 0.85, 2.0, 0.0, tcol,
             (const char *const *)text, NULL, NULL, NULL, NULL, col, sty, wid, NULL, NULL, NULL, NULL);
    for (int s = 0; s < n_series; s++) free(text[s]);
    free(opt), free(col), free(sty), free(tcol), free(wid), free(text);
}

// fsync + rename + a check that the file PLplot wrote is a whole PNG
static int commit(const char *tmp, const char *path, char *err, size_t errlen) {
    static const unsigned char SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    unsigned char head[8] = {0};
    int fd = open(tmp, O_RDONLY);
    if (fd < 0) return errf(err, errlen, "plot %s: PLplot's output %s is missing: %s", path, tmp, strerror(errno));
    ssize_t got = read(fd, head, sizeof(head));
    off_t size = lseek(fd, 0, SEEK_END);
    int synced = fsync(fd) == 0 || errno == EINVAL;
    close(fd);
    if (got != (ssize_t)sizeof(head) || memcmp(head, SIG, sizeof(SIG)) != 0 || size < 64)
        return errf(err, errlen, "plot %s: PLplot wrote no PNG (%lld bytes)", path, (long long)size);
    if (!synced) return errf(err, errlen, "plot %s: fsync of %s failed", path, tmp);
    if (rename(tmp, path) != 0)
        return errf(err, errlen, "plot %s: renaming %s over it failed: %s", path, tmp, strerror(errno));
    return 0;
}

int plot_lines(const char *png_path, const char *title, const char *xlabel, const char *ylabel, int logy,
               int n_series, const char *const *names, const float *const *x, const float *const *y,
               const int *counts, char *err, size_t errlen) {
    if (check_args(png_path, n_series, x, y, counts, err, errlen) != 0) return -1;
    pthread_mutex_lock(&plot_lock);
    int rc = -1;
    size_t tn = strlen(png_path) + 64;
    char *tmp = xmalloc(tn);
    snprintf(tmp, tn, "%s.tmp.%ld.%lu", png_path, (long)getpid(), plot_counter++);
    FILE *probe = NULL;
    if (!driver_available(PLOT_DEVICE)) {
        errf(err, errlen, "plot %s: PLplot has no '%s' device; install plplot-driver-cairo (.ci/install-deps)",
             png_path, PLOT_DEVICE);
    } else if (!(probe = fopen(tmp, "wb"))) {
        errf(err, errlen, "plot %s: cannot create %s: %s (does the folder exist and is it writable?)", png_path,
             tmp, strerror(errno));
    } else {
        fclose(probe);
        PLINT strm, code = 0;
        char msg[512] = "";  // PLplot copies up to 160 characters
        plmkstrm(&strm);
        plsError(&code, msg);
        plsdev(PLOT_DEVICE);
        plsfnam(tmp);
        plspage(0.0, 0.0, PLOT_WIDTH, PLOT_HEIGHT, 0, 0);
        plscmap0n(COL_SERIES + N_SERIES_COLOURS);
        plscol0(COL_BG, 255, 255, 255);
        plscol0(COL_FG, 0, 0, 0);
        plscol0(COL_GRID, 225, 225, 225);
        for (int i = 0; i < N_SERIES_COLOURS; i++) plscol0(COL_SERIES + i, TAB10[i][0], TAB10[i][1], TAB10[i][2]);
        plinit();
        if (code == 0) draw(title, xlabel, ylabel, logy, n_series, names, x, y, counts);
        plend1();  // closes the file
        if (code != 0) errf(err, errlen, "plot %s: PLplot: %s", png_path, msg[0] ? msg : "error");
        else rc = commit(tmp, png_path, err, errlen);
        if (rc != 0) unlink(tmp);
    }
    free(tmp);
    pthread_mutex_unlock(&plot_lock);
    return rc;
}
