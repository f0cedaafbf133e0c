#include "check.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void doppel_die(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "doppel: error at %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

void *xmalloc_(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) doppel_die(file, line, "out of memory allocating %zu bytes; reduce --batch or the preset", n);
    return p;
}

void *xcalloc_(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) doppel_die(file, line, "out of memory allocating %zu x %zu bytes; reduce --batch or the preset", n, size);
    return p;
}

void *xrealloc_(void *p, size_t n, const char *file, int line) {
    void *q = realloc(p, n ? n : 1);
    if (!q) doppel_die(file, line, "out of memory reallocating to %zu bytes", n);
    return q;
}

char *xstrdup_(const char *s, const char *file, int line) {
    size_t n = strlen(s) + 1;
    char *d = xmalloc_(n, file, line);
    memcpy(d, s, n);
    return d;
}

int errf(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}
