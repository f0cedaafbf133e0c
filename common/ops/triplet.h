// triplet.h: the metric-learning loss of the judge's embedding head: batch-hard triplet loss on
// cosine distances of L2-normalised embeddings (Hermans, Beyer & Leibe 2017, "In Defense of the
// Triplet Loss for Person Re-Identification"), forward and backward in one call.
//
//   e_i  = z_i / max(|z_i|, 1e-12)               (torch.nn.functional.normalize)
//   d_ij = 1 - e_i . e_j                          cosine distance, in [0, 2]
//   for every anchor i with a positive (j != i, same label) and a negative in the batch:
//     hp_i = max_{j positive} d_ij,  hn_i = min_{k negative} d_ik
//     l_i  = max(0, margin + hp_i - hn_i)
//   loss = mean of l_i over those anchors (0 when there is none)
// Ties go to the lowest index (as torch.max/torch.min). Host memory only: (N, D) embeddings are a
// few kilobytes, so GPU callers copy them over (validator/train.c).
#pragma once
#include <stdint.h>

typedef struct {
    int anchors;     // anchors with a positive and a negative in the batch
    int active;      // anchors whose hinge is positive (those that get a gradient)
    float pos_dist;  // mean hardest-positive distance over the anchors
    float neg_dist;  // mean hardest-negative distance
} TripletStats;

// z (N, D) raw embeddings, labels (N). Returns the loss; when dz is not NULL, adds dloss * dL/dz
// into dz (N, D). stats may be NULL.
float triplet_cosine_loss(float *dz, const float *z, const int32_t *labels, int N, int D, float margin, float dloss,
                          TripletStats *stats);

// e (N, D) = z normalised per row (the embeddings the validator compares)
void l2_normalize_rows(float *e, const float *z, int N, int D);
