// triplet.c: batch-hard triplet loss on cosine distances (triplet.h).
#include "triplet.h"

#include <math.h>
#include <stdlib.h>

#include "../check.h"

#define NORM_EPS 1e-12f  // F.normalize's eps

void l2_normalize_rows(float *e, const float *z, int N, int D) {
    for (int i = 0; i < N; i++) {
        const float *zi = z + (size_t)i * D;
        double s = 0;
        for (int d = 0; d < D; d++) s += (double)zi[d] * zi[d];
        float r = fmaxf((float)sqrt(s), NORM_EPS);
        for (int d = 0; d < D; d++) e[(size_t)i * D + d] = zi[d] / r;
    }
}

float triplet_cosine_loss(float *dz, const float *z, const int32_t *labels, int N, int D, float margin, float dloss,
                          TripletStats *stats) {
    float *e = xmalloc((size_t)N * D * sizeof(float));   // (N, D) normalised
    float *de = xcalloc((size_t)N * D, sizeof(float));   // (N, D) dL/de
    float *dist = xmalloc((size_t)N * N * sizeof(float)); // (N, N) cosine distances
    l2_normalize_rows(e, z, N, D);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double dot = 0;
            for (int d = 0; d < D; d++) dot += (double)e[(size_t)i * D + d] * e[(size_t)j * D + d];
            dist[(size_t)i * N + j] = 1.0f - (float)dot;
        }
    int anchors = 0, active = 0;
    double sum = 0, sum_p = 0, sum_n = 0;
    int *hp = xmalloc((size_t)N * sizeof(int)), *hn = xmalloc((size_t)N * sizeof(int));
    for (int i = 0; i < N; i++) {
        hp[i] = hn[i] = -1;
        const float *di = dist + (size_t)i * N;
        for (int j = 0; j < N; j++) {
            if (j == i) continue;
            if (labels[j] == labels[i]) {
                if (hp[i] < 0 || di[j] > di[hp[i]]) hp[i] = j;
            } else if (hn[i] < 0 || di[j] < di[hn[i]]) {
                hn[i] = j;
            }
        }
        if (hp[i] >= 0 && hn[i] >= 0) anchors++, sum_p += di[hp[i]], sum_n += di[hn[i]];
    }
    for (int i = 0; i < N; i++) {
        if (hp[i] < 0 || hn[i] < 0) continue;
        float l = margin + dist[(size_t)i * N + hp[i]] - dist[(size_t)i * N + hn[i]];
        if (l <= 0) continue;
        active++, sum += l;
        // d(1 - e_i.e_j)/de_i = -e_j: l_i = m - e_i.e_p + e_i.e_n
        float g = dloss / (float)anchors;
        float *dei = de + (size_t)i * D, *dep = de + (size_t)hp[i] * D, *den = de + (size_t)hn[i] * D;
        const float *ei = e + (size_t)i * D, *ep = e + (size_t)hp[i] * D, *en = e + (size_t)hn[i] * D;
        for (int d = 0; d < D; d++) {
            dei[d] += g * (en[d] - ep[d]);
            dep[d] -= g * ei[d];
            den[d] += g * ei[d];
        }
    }
    if (dz)  // through e = z / |z|: dz = (de - e (e . de)) / |z|
        for (int i = 0; i < N; i++) {
            const float *zi = z + (size_t)i * D, *ei = e + (size_t)i * D, *dei = de + (size_t)i * D;
            double s = 0, dot = 0;
            for (int d = 0; d < D; d++) s += (double)zi[d] * zi[d], dot += (double)ei[d] * dei[d];
            float r = (float)sqrt(s);
            if (r <= NORM_EPS) {  // the clamp is active: e = z / eps, a plain scaling
                for (int d = 0; d < D; d++) dz[(size_t)i * D + d] += dei[d] / NORM_EPS;
                continue;
            }
            for (int d = 0; d < D; d++) dz[(size_t)i * D + d] += (dei[d] - ei[d] * (float)dot) / r;
        }
    if (stats)
        *stats = (TripletStats){anchors, active, anchors ? (float)(sum_p / anchors) : 0, anchors ? (float)(sum_n / anchors) : 0};
    free(e), free(de), free(dist), free(hp), free(hn);
    return anchors ? (float)(sum / anchors) : 0.0f;
}
