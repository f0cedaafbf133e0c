// realism.c: FID, KID, inception score, k-NN precision/recall, ROC AUC and EER (realism.h).
#include "metrics/realism.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

// mean (D) and sample covariance (D, D) (ddof 1) of x (n, D), in double
static void mean_cov(const float *x, int n, int D, double *mu, double *cov) {
    double *c = xmalloc((size_t)n * D * sizeof(double));  // centred rows
    for (int j = 0; j < D; j++) mu[j] = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < D; j++) mu[j] += x[(size_t)i * D + j];
    for (int j = 0; j < D; j++) mu[j] /= n;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < D; j++) c[(size_t)i * D + j] = x[(size_t)i * D + j] - mu[j];
    // cov (D, D) = c^T c / (n - 1)
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, D, D, n, 1.0 / (n - 1), c, D, c, D, 0.0, cov, D);
    free(c);
}

// eigen-decomposition of the symmetric a (D, D) in place: a's rows become eigenvectors' layout as
// LAPACK's row-major dsyevd leaves them (columns are eigenvectors); w (D) the eigenvalues
static int sym_eig(double *a, double *w, int D, int vectors, char *err, size_t errlen) {
    for (int i = 0; i < D; i++)  // exact symmetry: round-off can leave a[i][j] != a[j][i]
        for (int j = i + 1; j < D; j++) a[(size_t)i * D + j] = a[(size_t)j * D + i] = 0.5 * (a[(size_t)i * D + j] + a[(size_t)j * D + i]);
    lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, vectors ? 'V' : 'N', 'U', D, a, D, w);
    if (info) return errf(err, errlen, "LAPACK dsyevd failed (info %d) on a %dx%d covariance", (int)info, D, D);
    return 0;
}

int fid(const float *a, int na, const float *b, int nb, int D, double *out, char *err, size_t errlen) {
    if (na < 2 || nb < 2) return errf(err, errlen, "FID needs at least 2 samples per set (got %d and %d)", na, nb);
    size_t DD = (size_t)D * D;
    double *mu_a = xmalloc(D * sizeof(double)), *mu_b = xmalloc(D * sizeof(double));
    double *sa = xmalloc(DD * sizeof(double)), *sb = xmalloc(DD * sizeof(double)), *v = xmalloc(DD * sizeof(double));
    double *r = xmalloc(DD * sizeof(double)), *t = xmalloc(DD * sizeof(double)), *w = xmalloc(D * sizeof(double));
    mean_cov(a, na, D, mu_a, sa);
    mean_cov(b, nb, D, mu_b, sb);
    double diff = 0, tr = 0;
    for (int j = 0; j < D; j++) diff += (mu_a[j] - mu_b[j]) * (mu_a[j] - mu_b[j]), tr += sa[(size_t)j * D + j] + sb[(size_t)j * D + j];
    int rc = 0;
    // r = S_a^(1/2) = V diag(sqrt(max(w, 0))) V^T
    memcpy(v, sa, DD * sizeof(double));
    if ((rc = sym_eig(v, w, D, 1, err, errlen))) goto done;
    for (int i = 0; i < D; i++)
        for (int k = 0; k < D; k++) t[(size_t)i * D + k] = v[(size_t)i * D + k] * sqrt(w[k] > 0 ? w[k] : 0);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, D, D, D, 1.0, t, D, v, D, 0.0, r, D);
    // t = r S_b r (symmetric, similar to S_a S_b): tr((S_a S_b)^(1/2)) = sum sqrt(eig)
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, D, D, D, 1.0, r, D, sb, D, 0.0, v, D);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, D, D, D, 1.0, v, D, r, D, 0.0, t, D);
    if ((rc = sym_eig(t, w, D, 0, err, errlen))) goto done;
    double tr_sqrt = 0;
    for (int k = 0; k < D; k++) tr_sqrt += sqrt(w[k] > 0 ? w[k] : 0);
    *out = diff + tr - 2.0 * tr_sqrt;
done:
    free(mu_a), free(mu_b), free(sa), free(sb), free(v), free(r), free(t), free(w);
    return rc;
}

// sum over the pairs (i, j) of k(x_i, y_j) = (x_i . y_j / D + 1)^3, leaving out i == j when
// same (x is y); in row blocks so memory stays (block, ny)
static double kernel_sum(const float *x, int nx, const float *y, int ny, int D, int same) {
    enum { BLK = 256 };
    double *xd = xmalloc((size_t)nx * D * sizeof(double)), *yd = xmalloc((size_t)ny * D * sizeof(double));
    double *g = xmalloc((size_t)BLK * ny * sizeof(double)), total = 0;
    for (size_t i = 0; i < (size_t)nx * D; i++) xd[i] = x[i];
    for (size_t i = 0; i < (size_t)ny * D; i++) yd[i] = y[i];
    for (int i0 = 0; i0 < nx; i0 += BLK) {
        int m = nx - i0 < BLK ? nx - i0 : BLK;
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, ny, D, 1.0 / D, xd + (size_t)i0 * D, D, yd, D, 0.0, g, ny);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < ny; j++) {
                if (same && i0 + i == j) continue;
                double k = g[(size_t)i * ny + j] + 1.0;
                total += k * k * k;
            }
    }
    free(xd), free(yd), free(g);
    return total;
}

int kid(const float *a, int na, const float *b, int nb, int D, double *out, char *err, size_t errlen) {
    if (na < 2 || nb < 2) return errf(err, errlen, "KID needs at least 2 samples per set (got %d and %d)", na, nb);
    double kaa = kernel_sum(a, na, a, na, D, 1) / ((double)na * (na - 1));
    double kbb = kernel_sum(b, nb, b, nb, D, 1) / ((double)nb * (nb - 1));
    double kab = kernel_sum(a, na, b, nb, D, 0) / ((double)na * nb);
    *out = kaa + kbb - 2.0 * kab;
    return 0;
}

double inception_score(const float *probs, int N, int K) {
    double *py = xcalloc((size_t)K, sizeof(double)), kl = 0;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) py[k] += probs[(size_t)n * K + k] / (double)N;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            double p = probs[(size_t)n * K + k];
            if (p > 0 && py[k] > 0) kl += p * (log(p) - log(py[k]));
        }
    free(py);
    return exp(kl / N);
}

// squared Euclidean distances d (nx, ny) between the rows of x and y
static void sq_dists(double *d, const float *x, int nx, const float *y, int ny, int D) {
    for (int i = 0; i < nx; i++)
        for (int j = 0; j < ny; j++) {
            double s = 0;
            for (int c = 0; c < D; c++) {
                double e = (double)x[(size_t)i * D + c] - y[(size_t)j * D + c];
                s += e * e;
            }
            d[(size_t)i * ny + j] = s;
        }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// r (n): squared distance of each row of x to its k-th nearest other row
static void knn_radii(double *r, const float *x, int n, int D, int k) {
    double *d = xmalloc((size_t)n * n * sizeof(double)), *row = xmalloc((size_t)n * sizeof(double));
    sq_dists(d, x, n, x, n, D);
    for (int i = 0; i < n; i++) {
        int m = 0;
        for (int j = 0; j < n; j++)
            if (j != i) row[m++] = d[(size_t)i * n + j];
        qsort(row, (size_t)m, sizeof(double), cmp_double);
        r[i] = row[k - 1];
    }
    free(d), free(row);
}

// fraction of the rows of q inside the union of the balls (centres c, squared radii r)
static double coverage(const float *q, int nq, const float *c, const double *r, int nc, int D) {
    double *d = xmalloc((size_t)nq * nc * sizeof(double));
    sq_dists(d, q, nq, c, nc, D);
    int in = 0;
    for (int i = 0; i < nq; i++)
        for (int j = 0; j < nc; j++)
            if (d[(size_t)i * nc + j] <= r[j]) {
                in++;
                break;
            }
    free(d);
    return (double)in / nq;
}

int precision_recall(const float *real, int nr, const float *gen, int ng, int D, int k, double *precision,
                     double *recall, char *err, size_t errlen) {
    if (k < 1 || nr <= k || ng <= k)
        return errf(err, errlen, "precision/recall with k = %d needs more than k samples per set (got %d and %d)", k, nr, ng);
    double *rr = xmalloc((size_t)nr * sizeof(double)), *rg = xmalloc((size_t)ng * sizeof(double));
    knn_radii(rr, real, nr, D, k);
    knn_radii(rg, gen, ng, D, k);
    *precision = coverage(gen, ng, real, rr, nr, D);
    *recall = coverage(real, nr, gen, rg, ng, D);
    free(rr), free(rg);
    return 0;
}

typedef struct {
    double s;
    int genuine;
} Scored;

static int cmp_scored(const void *a, const void *b) {
    double x = ((const Scored *)a)->s, y = ((const Scored *)b)->s;
    return (x > y) - (x < y);
}

static Scored *merge_sorted(const double *genuine, int ng, const double *impostor, int ni) {
    Scored *all = xmalloc((size_t)(ng + ni) * sizeof(Scored));
    for (int i = 0; i < ng; i++) all[i] = (Scored){genuine[i], 1};
    for (int i = 0; i < ni; i++) all[ng + i] = (Scored){impostor[i], 0};
    qsort(all, (size_t)(ng + ni), sizeof(Scored), cmp_scored);
    return all;
}

double roc_auc(const double *genuine, int ng, const double *impostor, int ni) {
    if (ng < 1 || ni < 1) return NAN;
    int n = ng + ni;
    Scored *all = merge_sorted(genuine, ng, impostor, ni);
    double rank_sum = 0;  // ranks from 1, ties sharing their average rank
    for (int i = 0; i < n;) {
        int j = i;
        while (j < n && all[j].s == all[i].s) j++;
        double avg = 0.5 * ((i + 1) + j);
        for (int q = i; q < j; q++)
            if (all[q].genuine) rank_sum += avg;
        i = j;
    }
    free(all);
    return (rank_sum - 0.5 * ng * (ng + 1.0)) / ((double)ng * ni);
}

double equal_error_rate(const double *genuine, int ng, const double *impostor, int ni) {
    if (ng < 1 || ni < 1) return NAN;
    int n = ng + ni;
    Scored *all = merge_sorted(genuine, ng, impostor, ni);
    // accept when score >= t. t below everything: FAR 1, FRR 0; raise t past each distinct score
    double far = 1.0, frr = 0.0, eer = NAN;
    for (int i = 0; i <= n;) {
        if (i == n) {  // t above everything: FAR 0, FRR 1 (reached only if no crossing before)
            eer = 0.5 * (far + frr);
            break;
        }
        int j = i;
        int g = 0, m = 0;
        while (j < n && all[j].s == all[i].s) g += all[j].genuine, m += !all[j].genuine, j++;
        double far1 = far - (double)m / ni, frr1 = frr + (double)g / ng;
        if (far1 - frr1 <= 0) {  // the curves cross between t_i and just above it
            double d0 = far - frr, d1 = far1 - frr1, alpha = d0 - d1 > 0 ? d0 / (d0 - d1) : 0;
            eer = far + alpha * (far1 - far);
            break;
        }
        far = far1, frr = frr1, i = j;
    }
    free(all);
    return eer;
}
