// verify.c: score's genuine/impostor verification in the judge's embedding space (models/judge.h):
// each image of a set against each user's real prototype. Embeddings are L2-normalised
// (JudgedSet.emb), so a dot product is a cosine similarity.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "metrics/realism.h"
#include "ops/triplet.h"
#include "validator.h"

static double dotf(const float *a, const float *b, int D) {
    double s = 0;
    for (int d = 0; d < D; d++) s += (double)a[d] * b[d];
    return s;
}

// (K, D) normalised mean embedding of each user's real images; has[u] = 0 for a user without any
static float *prototypes(const JudgedSet *real, int *has) {
    int K = real->K, D = real->D;
    float *p = xcalloc((size_t)K * D, sizeof(float));
    double *sum = xcalloc((size_t)K * D, sizeof(double));
    memset(has, 0, (size_t)K * sizeof(int));
    for (int i = 0; i < real->n; i++) {
        int u = real->truth[i];
        has[u] = 1;
        for (int d = 0; d < D; d++) sum[(size_t)u * D + d] += real->emb[(size_t)i * D + d];
    }
    for (size_t j = 0; j < (size_t)K * D; j++) p[j] = (float)sum[j];
    l2_normalize_rows(p, p, K, D);
    free(sum);
    return p;
}

json_t *verification(const JudgedSet *real, const JudgedSet *q) {
    if (!real->D || !q->D || !real->n || !q->n) return NULL;
    int K = real->K, D = real->D;
    int *has = xmalloc((size_t)K * sizeof(int));
    float *proto = prototypes(real, has);
    int users = 0;
    for (int u = 0; u < K; u++) users += has[u];
    double *gen = xmalloc((size_t)q->n * sizeof(double)), *imp = xmalloc((size_t)q->n * K * sizeof(double));
    int ng = 0, ni = 0, nearest_ok = 0, scored = 0;
    double gsum = 0, isum = 0;
    for (int i = 0; i < q->n; i++) {
        int t = q->truth[i], best = -1;
        if (!has[t]) continue;  // no real prototype for this user: nothing to verify against
        double best_s = -INFINITY;
        for (int u = 0; u < K; u++) {
            if (!has[u]) continue;
            double s = dotf(q->emb + (size_t)i * D, proto + (size_t)u * D, D);
            if (u == t) gen[ng++] = s, gsum += s;
            else imp[ni++] = s, isum += s;
            if (s > best_s) best_s = s, best = u;
        }
        nearest_ok += best == t, scored++;
    }
    json_t *j = NULL;
    if (ng && ni)
        j = json_pack("{s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:f}", "users", users, "genuine_pairs", ng, "impostor_pairs", ni,
                      "auc", roc_auc(gen, ng, imp, ni), "eer", equal_error_rate(gen, ng, imp, ni), "genuine_mean_cos",
                      gsum / ng, "impostor_mean_cos", isum / ni, "nearest_prototype_accuracy", (double)nearest_ok / scored);
    free(has), free(proto), free(gen), free(imp);
    return j;
}
