// cli.c: version line, usage errors, strict option parsing, progress reporting and JSONL metrics
// (see cli.h). Messages go to stderr; only --version writes to stdout.
#include "cli/cli.h"
#include "cuda/cuda.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "blas.h"
#include "check.h"

#define BAR_WIDTH 24
#define TTY_REDRAW_S 0.1  // at most ~10 redraws a second
#define LOG_EVERY_S 10.0  // plain lines when stderr is not a terminal

void cli_print_version(const char *tool) {
#ifdef DOPPEL_CUDA
    const char *cuda = "compiled";
#else
    const char *cuda = "not compiled";
#endif
    const char *core = blas_core_name();
    printf("doppel-%s %s (OpenBLAS %s, CUDA: %s)\n", tool, DOPPEL_VERSION, core ? core : "unknown", cuda);
}

void cli_usage_error(const char *tool, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "doppel-%s: ", tool);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\ntry 'doppel-%s --help'\n", tool);
    exit(EXIT_USAGE);
}

long cli_parse_long(const char *tool, const char *opt, const char *s, long lo, long hi) {
    char *end = NULL;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || isspace((unsigned char)*s) || end == s || *end || errno == ERANGE || v < lo || v > hi)
        cli_usage_error(tool, "%s expects an integer in [%ld, %ld], got '%s'", opt, lo, hi, s ? s : "");
    return v;
}

double cli_parse_double(const char *tool, const char *opt, const char *s, double lo, double hi) {
    char *end = NULL;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || !*s || isspace((unsigned char)*s) || end == s || *end || errno == ERANGE || !isfinite(v) || v < lo || v > hi)
        cli_usage_error(tool, "%s expects a number in [%g, %g], got '%s'", opt, lo, hi, s ? s : "");
    return v;
}

const char *cli_parse_device(const char *tool, const char *s) {
    if (strcmp(s, "cpu") && strcmp(s, "cuda") && strcmp(s, "auto"))
        cli_usage_error(tool, "--device must be cpu, cuda or auto, not '%s'", s);
    return s;
}

const char *cli_parse_precision(const char *tool, const char *s) {
    Precision p;
    if (precision_parse(s, &p)) cli_usage_error(tool, "--precision must be fp32, tf32, bf16 or fp16, not '%s'", s);
    return s;
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// ---- progress ----

void progress_start(Progress *p, const char *label, int64_t total, const char *unit) {
    memset(p, 0, sizeof(*p));
    p->label = label;
    p->total = total > 0 ? total : 0;
    p->out = stderr;
    p->tty = isatty(fileno(stderr));
    p->t_start = cli_now();
    p->t_last = p->tty ? p->t_start - TTY_REDRAW_S : p->t_start;  // a TTY shows the bar at once
    snprintf(p->unit, sizeof(p->unit), "%s", unit ? unit : "it");
}

// "1:02:03" or "2:03"
static void fmt_duration(char *buf, size_t len, double s) {
    if (!(s >= 0) || s > 1e7) {
        snprintf(buf, len, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
}

static void fmt_rate(char *buf, size_t len, double rate, const char *unit) {
    if (rate >= 100) snprintf(buf, len, "%.0f %s/s", rate, unit);
    else if (rate >= 1) snprintf(buf, len, "%.1f %s/s", rate, unit);
    else if (rate > 0) snprintf(buf, len, "%.1f s/%s", 1.0 / rate, unit);
    else snprintf(buf, len, "- %s/s", unit);
}

// rate and ETA text for the current state
static void stats(const Progress *p, double now, char *rate, size_t rlen, char *eta, size_t elen) {
    double el = now - p->t_start, r = el > 0 ? (double)(p->done - p->first) / el : 0;
    fmt_rate(rate, rlen, r, p->unit);
    if (p->total > 0 && r > 0 && p->done < p->total) fmt_duration(eta, elen, (double)(p->total - p->done) / r);
    else snprintf(eta, elen, "-");
}

static void draw_bar(Progress *p, double now, const char *extra) {
    char rate[48], eta[32], bar[BAR_WIDTH + 1];
    stats(p, now, rate, sizeof(rate), eta, sizeof(eta));
    fprintf(p->out, "\r%s ", p->label);
    if (p->total > 0) {
        int64_t d = p->done < p->total ? p->done : p->total;
        int fill = (int)(d * BAR_WIDTH / p->total);
        for (int i = 0; i < BAR_WIDTH; i++) bar[i] = i < fill ? '#' : '.';
        bar[BAR_WIDTH] = '\0';
        fprintf(p->out, "[%s] %lld/%lld %s, %s, ETA %s", bar, (long long)p->done, (long long)p->total, p->unit, rate, eta);
    } else {
        fprintf(p->out, "%lld %s, %s", (long long)p->done, p->unit, rate);
    }
    if (extra && *extra) fprintf(p->out, ", %s", extra);
    fputs("\x1b[K", p->out);  // clear what a longer previous line left
    fflush(p->out);
}

static void log_line(Progress *p, double now, const char *extra) {
    char rate[48], eta[32];
    stats(p, now, rate, sizeof(rate), eta, sizeof(eta));
    if (p->total > 0)
        fprintf(p->out, "%s: %lld/%lld %s (%.0f%%), %s, ETA %s", p->label, (long long)p->done, (long long)p->total,
                p->unit, 100.0 * (double)p->done / (double)p->total, rate, eta);
    else
        fprintf(p->out, "%s: %lld %s, %s", p->label, (long long)p->done, p->unit, rate);
    if (extra && *extra) fprintf(p->out, ", %s", extra);
    fputc('\n', p->out);
    fflush(p->out);
}

void progress_update(Progress *p, int64_t done, const char *extra) {
    if (!p->started) p->started = 1, p->first = done > 0 ? done - 1 : 0;
    p->done = done;
    double now = cli_now();
    if (now - p->t_last < (p->tty ? TTY_REDRAW_S : LOG_EVERY_S)) return;
    p->t_last = now;
    if (p->tty) draw_bar(p, now, extra);
    else log_line(p, now, extra);
}

void progress_finish(Progress *p, const char *extra) {
    double now = cli_now();
    char rate[48], took[32];
    if (p->tty) {
        draw_bar(p, now, extra);
        fputc('\n', p->out);
        fflush(p->out);
        return;
    }
    double el = now - p->t_start;
    fmt_rate(rate, sizeof(rate), el > 0 ? (double)(p->done - p->first) / el : 0, p->unit);
    fmt_duration(took, sizeof(took), el);
    if (p->total > 0)
        fprintf(p->out, "%s: done, %lld/%lld %s in %s (%s)", p->label, (long long)p->done, (long long)p->total, p->unit,
                took, rate);
    else
        fprintf(p->out, "%s: done, %lld %s in %s (%s)", p->label, (long long)p->done, p->unit, took, rate);
    if (extra && *extra) fprintf(p->out, ", %s", extra);
    fputc('\n', p->out);
    fflush(p->out);
}

// ---- JSONL metrics ----

struct MetricsLog {
    FILE *f;
    int warned;
    char *path;
};

MetricsLog *metrics_open(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "a");
    if (!f) {
        errf(err, errlen, "cannot open metrics file '%s' for appending: %s (does its directory exist and is it writable?)",
             path, strerror(errno));
        return NULL;
    }
    MetricsLog *m = xcalloc(1, sizeof(*m));
    m->f = f;
    m->path = xstrdup(path);
    return m;
}

static double unix_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void metrics_write(MetricsLog *m, const char *json_object_text) {
    if (!m) return;
    json_error_t e;
    json_t *j = json_object_text ? json_loads(json_object_text, 0, &e) : NULL;
    if (!j || !json_is_object(j)) {
        if (!m->warned)
            fprintf(stderr, "doppel: metrics line for '%s' is not a JSON object (%s); skipping it and any like it\n",
                    m->path, j ? "not an object" : (json_object_text ? e.text : "NULL"));
        m->warned = 1;
        json_decref(j);
        return;
    }
    json_object_set_new(j, "time", json_real(unix_time()));
    // 15 digits: the values keep the text they were written with, and "time" keeps its milliseconds
    char *line = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(j);
    if (!line) return;
    if (fprintf(m->f, "%s\n", line) < 0 || fflush(m->f) != 0) {
        if (!m->warned) fprintf(stderr, "doppel: cannot write metrics to '%s': %s\n", m->path, strerror(errno));
        m->warned = 1;
    }
    free(line);
}

void metrics_close(MetricsLog **m) {
    if (!m || !*m) return;
    if (fclose((*m)->f) != 0) fprintf(stderr, "doppel: closing metrics file '%s': %s\n", (*m)->path, strerror(errno));
    free((*m)->path);
    free(*m);
    *m = NULL;
}
