#include "testlib.h"

#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rng.h"

static int n_pass, n_fail, cur_failed, cur_skipped;

void tl_run(const char *name, void (*fn)(void)) {
    cur_failed = cur_skipped = 0;
    fn();
    if (cur_failed) {
        printf("FAIL %s\n", name);
        n_fail++;
    } else if (cur_skipped) {
        printf("SKIP %s\n", name);
    } else {
        printf("PASS %s\n", name);
        n_pass++;
    }
    fflush(stdout);
}

static char scratch[256];

const char *tl_scratch_dir(void) {
    if (!scratch[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(scratch, sizeof(scratch), "%s/doppel_test_XXXXXX", t && *t ? t : "/tmp");
        CHECK(mkdtemp(scratch), "mkdtemp %s failed", scratch);
    }
    return scratch;
}

char *tl_scratch_path(const char *name) {
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 512, "%s/%s", tl_scratch_dir(), name);
    return p;
}

int tl_count_tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

unsigned char *tl_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = xmalloc(*n + 1);
    if (fread(b, 1, *n, f) != *n) *n = 0;
    b[*n] = 0;  // text files can be searched with strstr
    fclose(f);
    return b;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f) {
    (void)sb, (void)flag, (void)f;
    return remove(p);
}

int tl_finish(void) {
    if (scratch[0]) nftw(scratch, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    printf("RESULT %d %d\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}

void tl_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("  %s:%d: ", file, line);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    cur_failed = 1;
}

void tl_skip(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("  skipped: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    cur_skipped = 1;
}

int tl_current_failed(void) { return cur_failed; }

int expect_close_(const char *file, int line, const char *what, const float *got, const float *want,
                  size_t n, double atol, double rtol) {
    double max_abs = 0, max_ratio = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double a = got[i], b = want[i], diff = fabs(a - b), lim = atol + rtol * fabs(b);
        if (!(diff <= lim)) {  // NaN fails too
            if (bad < 5) printf("  %s:%d: %s[%zu]: got %.8g want %.8g (|diff| %.3g > %.3g)\n", file, line, what, i, a, b, diff, lim);
            bad++;
        }
        if (diff > max_abs) max_abs = diff;
        if (diff / lim > max_ratio) max_ratio = diff / lim;
    }
    printf("  close %-40s n=%-8zu max|diff| %.3g  (%.2f of tolerance)\n", what, n, max_abs, max_ratio);
    if (bad) {
        printf("  %s:%d: %s: %zu of %zu values outside atol %.1g + rtol %.1g\n", file, line, what, bad, n, atol, rtol);
        cur_failed = 1;
        return 0;
    }
    return 1;
}

const char *fx_dir(void) {
    const char *d = getenv("DOPPEL_FIXTURES");
    return d ? d : "tests/fixtures";
}

SafeTensors *fx_open(const char *name) {
    char path[1024], err[512];
    snprintf(path, sizeof(path), "%s/%s.safetensors", fx_dir(), name);
    SafeTensors *st = xcalloc(1, sizeof(*st));
    if (st_load(st, path, err, sizeof(err)) != 0) {
        tl_fail(__FILE__, __LINE__, "fixture %s: %s (regenerate with `make fixtures`)", path, err);
        free(st);
        return NULL;
    }
    return st;
}

int fx_has(const SafeTensors *st, const char *name) { return st_find(st, name) != NULL; }

float *fx_f32(const SafeTensors *st, const char *name, size_t *numel) {
    const StTensor *t = st_find(st, name);
    if (!t) {
        tl_fail(__FILE__, __LINE__, "fixture has no tensor '%s'", name);
        return NULL;
    }
    float *out = xmalloc((t->numel ? t->numel : 1) * sizeof(float));
    st_to_f32(out, t);
    if (numel) *numel = t->numel;
    return out;
}

json_t *fx_config(const SafeTensors *st) {
    const char *s = st_meta(st, "config");
    if (!s) return json_object();
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    if (!j) tl_fail(__FILE__, __LINE__, "fixture config is not JSON: %s", e.text);
    return j ? j : json_object();
}

void fx_close(SafeTensors *st) {
    if (!st) return;
    st_free(st);
    free(st);
}

int fd_check(const char *what, float *x, const float *analytic, size_t n, FdLoss loss, void *ctx,
             int samples, float eps, double tol) {
    int bad = 0;
    double worst = 0;
    size_t step = n > (size_t)samples ? n / (size_t)samples : 1;
    for (size_t i = 0, k = 0; i < n && k < (size_t)samples; i += step, k++) {
        size_t j = (i + k * 7) % n;  // jitter so strided layouts are not always hit at index 0
        float orig = x[j];
        x[j] = orig + eps;
        double lp = loss(ctx);
        x[j] = orig - eps;
        double lm = loss(ctx);
        x[j] = orig;
        double fd = (lp - lm) / (2.0 * (double)eps), an = analytic[j];
        double scale = fmax(1.0, fmax(fabs(fd), fabs(an)));
        double err = fabs(fd - an) / scale;
        if (err > worst) worst = err;
        if (err > tol) {
            if (bad < 5) printf("  fd %s[%zu]: finite difference %.6g, analytic %.6g\n", what, j, fd, an);
            bad++;
        }
    }
    printf("  fd    %-40s worst relative error %.3g (tol %.1g)\n", what, worst, tol);
    if (bad) {
        printf("  fd %s: %d coordinates disagree\n", what, bad);
        cur_failed = 1;
        return 0;
    }
    return 1;
}

void fill_randn(float *x, size_t n, unsigned long long seed, float std) {
    Rng r;
    rng_seed(&r, seed);
    rng_fill_normal(&r, x, (long)n, 0.0f, std);
}

double dot_f64(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}
