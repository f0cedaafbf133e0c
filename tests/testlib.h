// testlib.h: the test runner every tests/test_*.c uses.
// A test binary calls RUN(fn) for each test and returns tl_finish(); each test prints
// PASS/FAIL/SKIP, comparisons print the first mismatches and the max error, and the binary ends
// with "RESULT <passed> <failed>" for tests/run.sh.
#pragma once
#include <jansson.h>
#include <stddef.h>

#include "io/safetensors.h"

void tl_run(const char *name, void (*fn)(void));
int tl_finish(void);
__attribute__((format(printf, 3, 4))) void tl_fail(const char *file, int line, const char *fmt, ...);
__attribute__((format(printf, 1, 2))) void tl_skip(const char *fmt, ...);
int tl_current_failed(void);

#define RUN(fn) tl_run(#fn, fn)
#define EXPECT(cond, ...) do { if (!(cond)) tl_fail(__FILE__, __LINE__, __VA_ARGS__); } while (0)
#define EXPECT_CLOSE(what, got, want, n, atol, rtol) \
    expect_close_(__FILE__, __LINE__, (what), (got), (want), (n), (atol), (rtol))

// |got - want| <= atol + rtol * |want| everywhere; prints the first mismatches and the max error.
int expect_close_(const char *file, int line, const char *what, const float *got, const float *want,
                  size_t n, double atol, double rtol);

// ---- reference fixtures in tests/fixtures/<name>.safetensors (made by tests/reference/*.py) ----
SafeTensors *fx_open(const char *name);               // fails the test and returns NULL if absent
float *fx_f32(const SafeTensors *st, const char *name, size_t *numel);  // malloc'd copy; NULL + fail
int fx_has(const SafeTensors *st, const char *name);
json_t *fx_config(const SafeTensors *st);             // metadata "config" as JSON (owned by caller)
void fx_close(SafeTensors *st);
const char *fx_dir(void);                             // tests/fixtures, or $DOPPEL_FIXTURES

// ---- finite differences ----
// loss(ctx) runs the forward and returns sum(out * dout) accumulated in double. fd_check perturbs
// `samples` coordinates of x (spread over the whole tensor) by +-eps, compares the central
// difference with analytic[i]; passes when |fd - an| <= tol * max(1, |fd|, |an|).
typedef double (*FdLoss)(void *ctx);
int fd_check(const char *what, float *x, const float *analytic, size_t n, FdLoss loss, void *ctx,
             int samples, float eps, double tol);

// ---- files ----
// a per-run scratch folder under $TMPDIR (or /tmp), made on first use, removed by tl_finish()
const char *tl_scratch_dir(void);
char *tl_scratch_path(const char *name);        // scratch_dir/name (8 rotating buffers)
int tl_count_tmp_files(const char *dir);        // files named *.tmp.* (left by atomic writes)
unsigned char *tl_read_file(const char *path, size_t *n);  // malloc'd contents + a NUL, NULL if unreadable

// deterministic test data
void fill_randn(float *x, size_t n, unsigned long long seed, float std);
double dot_f64(const float *a, const float *b, size_t n);
