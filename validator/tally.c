// tally.c: a judge's predictions per true user: accuracy (top-1), mean softmax probability of the
// true user, the confusion matrix, and the report drawn from them (JSON and a Markdown table).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cli/cli.h"
#include "io/fileio.h"
#include "validator.h"

void tally_init(Tally *t, int K) {
    t->K = K;
    t->count = xcalloc((size_t)K, sizeof(int64_t));
    t->correct = xcalloc((size_t)K, sizeof(int64_t));
    t->p_true = xcalloc((size_t)K, sizeof(double));
    t->confusion = xcalloc((size_t)K * K, sizeof(int64_t));
}

void tally_free(Tally *t) {
    free(t->count), free(t->correct), free(t->p_true), free(t->confusion);
    memset(t, 0, sizeof(*t));
}

void tally_add(Tally *t, const float *logits, const int *truth, int N) {
    int K = t->K;
    for (int n = 0; n < N; n++) {
        const float *z = logits + (size_t)n * K;
        int best = 0;
        for (int k = 1; k < K; k++) best = z[k] > z[best] ? k : best;  // ties: the lowest index, as torch.argmax
        double sum = 0;
        for (int k = 0; k < K; k++) sum += exp((double)z[k] - z[best]);
        int y = truth[n];
        CHECK(y >= 0 && y < K, "tally_add: true user %d outside [0, %d)", y, K);
        t->count[y]++;
        t->correct[y] += best == y;
        t->p_true[y] += exp((double)z[y] - z[best]) / sum;
        t->confusion[(size_t)y * K + best]++;
    }
}

int64_t tally_total(const Tally *t) {
    int64_t n = 0;
    for (int k = 0; k < t->K; k++) n += t->count[k];
    return n;
}

double tally_accuracy(const Tally *t) {
    int64_t n = 0, c = 0;
    for (int k = 0; k < t->K; k++) n += t->count[k], c += t->correct[k];
    return n ? (double)c / n : NAN;
}

static json_t *jnum(double v) { return isfinite(v) ? json_real(v) : json_null(); }

json_t *tally_json(const Tally *t, const JudgeNet *net, const char *judge_dir, const char *source) {
    int K = t->K;
    json_t *per_user = json_array(), *users = json_array(), *counts = json_array();
    double p_sum = 0;
    for (int y = 0; y < K; y++) {
        const char *name = net->cfg.users[y];
        json_array_append_new(users, json_string(name));
        json_t *row = json_array();
        for (int k = 0; k < K; k++) json_array_append_new(row, json_integer(t->confusion[(size_t)y * K + k]));
        json_array_append_new(counts, row);
        p_sum += t->p_true[y];
        if (!t->count[y]) continue;
        int worst = -1;  // the most frequent wrong prediction (lowest index on ties)
        for (int k = 0; k < K; k++)
            if (k != y && t->confusion[(size_t)y * K + k] &&
                (worst < 0 || t->confusion[(size_t)y * K + k] > t->confusion[(size_t)y * K + worst]))
                worst = k;
        json_t *conf = worst < 0 ? json_null()
                                 : json_pack("{s:s, s:I}", "user", net->cfg.users[worst], "images",
                                             (json_int_t)t->confusion[(size_t)y * K + worst]);
        json_array_append_new(per_user, json_pack("{s:s, s:I, s:I, s:f, s:f, s:o}", "user", name, "images",
                                                  (json_int_t)t->count[y], "correct", (json_int_t)t->correct[y],
                                                  "accuracy", (double)t->correct[y] / t->count[y], "mean_p_true",
                                                  t->p_true[y] / t->count[y], "top_confusion", conf));
    }
    int64_t n = tally_total(t);
    return json_pack("{s:s, s:s, s:s, s:I, s:o, s:o, s:o, s:{s:s, s:o, s:o}}", "version", DOPPEL_VERSION, "judge",
                     judge_dir, "source", source, "images", (json_int_t)n, "accuracy", jnum(tally_accuracy(t)),
                     "mean_p_true", jnum(n ? p_sum / n : NAN), "per_user", per_user, "confusion", "rows",
                     "true user (the judge's user order)", "users", users, "counts", counts);
}

void tally_print_md(FILE *f, const json_t *rep) {
    fprintf(f, "| user | images | accuracy | mean P(true user) | top confusion |\n");
    fprintf(f, "|---|---:|---:|---:|---|\n");
    size_t i;
    json_t *u;
    json_array_foreach(json_object_get(rep, "per_user"), i, u) {
        json_t *c = json_object_get(u, "top_confusion");
        fprintf(f, "| %s | %lld | %.1f%% | %.3f | ", json_string_value(json_object_get(u, "user")),
                (long long)json_integer_value(json_object_get(u, "images")),
                100 * json_number_value(json_object_get(u, "accuracy")), json_number_value(json_object_get(u, "mean_p_true")));
        if (json_is_object(c))
            fprintf(f, "%s (%lld)", json_string_value(json_object_get(c, "user")),
                    (long long)json_integer_value(json_object_get(c, "images")));
        else
            fprintf(f, "–");
        fprintf(f, " |\n");
    }
    long long n = (long long)json_integer_value(json_object_get(rep, "images")), correct = 0;
    json_array_foreach(json_object_get(rep, "per_user"), i, u) correct += json_integer_value(json_object_get(u, "correct"));
    fprintf(f, "\n**overall accuracy: %.1f%%** (%lld of %lld images; %zu users), mean P(true user) %.3f\n",
            n ? 100.0 * correct / n : NAN, correct, n, json_array_size(json_object_get(rep, "per_user")),
            json_number_value(json_object_get(rep, "mean_p_true")));
}

int report_write(const json_t *rep, const char *path, char *err, size_t errlen) {
    char *s = json_dumps(rep, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    if (!s) return errf(err, errlen, "%s: could not encode the report as JSON", path);
    size_t n = strlen(s);
    s = xrealloc(s, n + 2);
    s[n] = '\n';
    int rc = write_file_atomic(path, s, n + 1, err, errlen);
    free(s);
    return rc;
}
