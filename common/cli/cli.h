// cli.h: what every doppel executable shares: --help (examples first), --version, exit codes,
// progress reporting (a bar on a TTY, plain periodic lines otherwise) and JSONL metrics.
#pragma once
#include <stdint.h>
#include <stdio.h>

#define DOPPEL_VERSION "0.1.0"
#define EXIT_OK 0
#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

// Prints "doppel-<tool> " DOPPEL_VERSION and the build (BLAS kernels, CUDA compiled or not).
void cli_print_version(const char *tool);
// Usage errors: message + "try 'doppel-<tool> --help'" on stderr, exit(EXIT_USAGE).
__attribute__((noreturn, format(printf, 2, 3))) void cli_usage_error(const char *tool, const char *fmt, ...);
// Strict number parsing for option values; on failure a usage error naming the option.
long cli_parse_long(const char *tool, const char *opt, const char *s, long lo, long hi);
double cli_parse_double(const char *tool, const char *opt, const char *s, double lo, double hi);
// --device cpu|cuda|auto and --precision fp32|tf32|bf16|fp16 (cuda/cuda.h): s itself, or a usage error
const char *cli_parse_device(const char *tool, const char *s);
const char *cli_parse_precision(const char *tool, const char *s);

typedef struct {
    const char *label;
    int64_t total;  // 0 if unknown
    int64_t done;
    int64_t first;  // count at the first update (a resumed run's rate counts only this run's work)
    int started;
    double t_start, t_last;
    int tty;
    FILE *out;      // stderr
    char unit[16];  // "img", "step", ...
} Progress;
void progress_start(Progress *p, const char *label, int64_t total, const char *unit);
// updates the bar (at most ~10 times a second on a TTY; every 10 s otherwise); extra: short text
void progress_update(Progress *p, int64_t done, const char *extra);
void progress_finish(Progress *p, const char *extra);
double cli_now(void);  // monotonic seconds

// JSONL metrics: one JSON object per line, flushed, with "time" added
typedef struct MetricsLog MetricsLog;
MetricsLog *metrics_open(const char *path, char *err, size_t errlen);
void metrics_write(MetricsLog *m, const char *json_object_text);  // e.g. "{\"step\":1,\"loss\":0.5}"
void metrics_close(MetricsLog **m);
