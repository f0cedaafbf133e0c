// bench_report.h: what bench_cpu.c and bench_cuda.c share: a monotonic clock and the one line per
// measurement bench/run.sh and bench/cuda_run.sh read: doppel <model> <what> <median ms> <min ms> <reps>
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// sorts t (reps timings in ms) and prints the median and the minimum
static inline void report(const char *model, const char *what, double *t, int reps) {
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    printf("doppel %s %s %.2f %.2f %d\n", model, what, t[reps / 2], t[0], reps);
    fflush(stdout);
}
