// plot.h: line charts as PNG files through PLplot's "pngcairo" device (Debian: libplplot-dev +
// plplot-driver-cairo), for loss curves and metric histories in reports.
// PLplot keeps global state and is not thread-safe: every call here holds one process-wide lock,
// so any thread may plot, one plot at a time. Errors (a missing driver, an unwritable folder,
// bad arguments) come back as -1 and a message, never an exit.
#pragma once
#include <stddef.h>

// Writes a 900x500 PNG: title, axis labels, one line per series (series i: counts[i] points
// x[i][k], y[i][k]; colours from matplotlib's tab10), a legend with names[i] at the top right.
// logy != 0: logarithmic y axis (points with y <= 0 are skipped). Points with a non-finite x or y
// are skipped and break the line there (a lone finite point between gaps is drawn as a dot).
// An empty series (counts[i] == 0, x[i]/y[i] may be NULL) still gets its legend entry; a plot
// with no points at all gets axes on [0, 1]. names may be NULL ("series 1", ...); '#' in any
// text is literal. Written atomically: PLplot draws into "<png_path>.tmp.<pid>.<k>", which is
// renamed over png_path once complete. Returns 0, or -1 with a message in err.
int plot_lines(const char *png_path, const char *title, const char *xlabel, const char *ylabel, int logy,
               int n_series, const char *const *names, const float *const *x, const float *const *y,
               const int *counts, char *err, size_t errlen);

#define PLOT_WIDTH 900
#define PLOT_HEIGHT 500
