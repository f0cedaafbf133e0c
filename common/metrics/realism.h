// realism.h: distribution-level figures between a set of real and a set of generated samples,
// computed on feature vectors (the judge's pooled features, doppel-validator score) or on
// classifier probabilities, in double precision:
//   fid        Fréchet distance of Gaussians fitted to the two feature sets (Heusel et al. 2017):
//              |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)), sample covariances
//              (ddof 1, as numpy.cov); tr((S_a S_b)^(1/2)) from the eigenvalues of the symmetric
//              S_a^(1/2) S_b S_a^(1/2) (LAPACK dsyevd), negative round-off clipped to 0. Equals
//              pytorch-fid's calculate_frechet_distance (scipy.linalg.sqrtm) to round-off.
//   kid        the unbiased MMD^2 estimator with the cubic polynomial kernel
//              k(x, y) = (x.y / D + 1)^3 (Binkowski et al. 2018) over the whole sets; 0 in
//              expectation for one distribution, can be slightly negative.
//   inception  exp(E_x KL(p(y|x) || p(y))) of probabilities (N, K): 1 for a classifier that says
//              the same thing about everything, K for confident, balanced predictions.
//   precision / recall  Kynkäänniemi et al. 2019: each sample's k-NN radius (k-th nearest other
//              sample of its own set, Euclidean); precision = fraction of generated samples inside
//              some real sample's ball, recall = fraction of real samples inside some generated
//              sample's ball.
//   roc_auc / eer  of scores where genuine pairs should score higher than impostor pairs: AUC
//              with ties counted half (the Mann-Whitney statistic), equal error rate where the
//              false-accept and false-reject rates cross (linear interpolation between thresholds).
// Feature sets are row-major (n, D) float32.
#pragma once
#include <stddef.h>

// -1 + err when a set has fewer than 2 samples or LAPACK fails; else 0 and *out
int fid(const float *a, int na, const float *b, int nb, int D, double *out, char *err, size_t errlen);
int kid(const float *a, int na, const float *b, int nb, int D, double *out, char *err, size_t errlen);
double inception_score(const float *probs, int N, int K);
// k >= 1 and both sets larger than k
int precision_recall(const float *real, int nr, const float *gen, int ng, int D, int k, double *precision,
                     double *recall, char *err, size_t errlen);
double roc_auc(const double *genuine, int ng, const double *impostor, int ni);
double equal_error_rate(const double *genuine, int ng, const double *impostor, int ni);
