// attention.c: scaled dot-product self-attention with heads packed in the feature axis, and the
// (N,C,HW) <-> (N,HW,C) transposes around it. Backward adds (+=) into dq, dk, dv.
//
// q, k, v, out are (N, L, E) with E = NH*HD, exactly what to_q / to_k / to_v produce; head h of
// sample n is the (L, HD) matrix at q + n*L*E + h*HD with leading dimension E, so every GEMM
// addresses it in place (no head split/merge transposes).
//
// Parallelism: with many (n, h) pairs (or small ones) each OpenMP thread takes whole pairs and
// OpenBLAS runs single-threaded inside; with few large pairs, pairs run one after another, the
// GEMMs use OpenBLAS's own threads and the row-wise softmax steps use OpenMP. Scratch is one
// (L, L) slice per OpenMP thread, so size it with attention_scratch_floats() under the same
// thread setting the backward runs with.
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "check.h"
#include "ops/ops.h"

size_t attention_scratch_floats(int L) { return (size_t)omp_get_max_threads() * (size_t)L * (size_t)L; }

// Pairs in parallel when there are enough of them to fill the threads, or when each pair's GEMM is
// too small for OpenBLAS to thread anyway (it stays single-threaded below ~256k multiply-adds).
static int pairs_in_parallel(int pairs, int L, int HD) {
    return omp_get_max_threads() > 1 &&
           (2 * pairs >= omp_get_max_threads() || (double)L * L * HD <= 262144.0);
}

// row-wise softmax of x (rows, L) in place, numerically stable
static inline void softmax_row(float *x, int L) {
    float mx = x[0];
    for (int j = 1; j < L; j++) mx = x[j] > mx ? x[j] : mx;
    float sum = 0.0f;
    for (int j = 0; j < L; j++) {
        x[j] = expf(x[j] - mx);
        sum += x[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < L; j++) x[j] *= inv;
}

// In the forward pass this was: out_i = sum_j att_ij v_j, att_ij = softmax_j(s_ij),
// s_ij = scale * q_i.k_j; so ds_ij = att_ij * (datt_ij - sum_l datt_il att_il) * scale.
static inline void softmax_backward_row(float *ds, const float *att, int L, float scale) {
    float dot = 0.0f;
    for (int j = 0; j < L; j++) dot += ds[j] * att[j];
    for (int j = 0; j < L; j++) ds[j] = att[j] * (ds[j] - dot) * scale;
}

// one (n, h) pair; parallel_rows: spread the softmax rows over OpenMP threads
static void forward_pair(float *o, float *a, const float *q, const float *k, const float *v,
                         int L, int E, int HD, float scale, int parallel_rows) {
    // a (L, L) = scale * q (L, HD) @ k (L, HD)^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, HD, scale, q, E, k, E, 0.0f, a, L);
    if (parallel_rows) {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < L; i++) softmax_row(a + (size_t)i * L, L);
    } else {
        for (int i = 0; i < L; i++) softmax_row(a + (size_t)i * L, L);
    }
    // o (L, HD) = a (L, L) @ v (L, HD)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, HD, L, 1.0f, a, L, v, E, 0.0f, o, E);
}

void attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                       int N, int L, int NH, int HD) {
    const int E = NH * HD, pairs = N * NH;
    const float scale = 1.0f / sqrtf((float)HD);
    if (pairs_in_parallel(pairs, L, HD)) {
        int blas_threads = openblas_get_num_threads();
        openblas_set_num_threads(1);
#pragma omp parallel for schedule(static)
        for (int p = 0; p < pairs; p++) {
            size_t off = (size_t)(p / NH) * L * E + (size_t)(p % NH) * HD;
            forward_pair(out + off, att + (size_t)p * L * L, q + off, k + off, v + off, L, E, HD, scale, 0);
        }
        openblas_set_num_threads(blas_threads);
    } else {
        for (int p = 0; p < pairs; p++) {
            size_t off = (size_t)(p / NH) * L * E + (size_t)(p % NH) * HD;
            forward_pair(out + off, att + (size_t)p * L * L, q + off, k + off, v + off, L, E, HD, scale, 1);
        }
    }
}

// one (n, h) pair; s is an (L, L) scratch for datt, turned into dscore in place
static void backward_pair(float *dq, float *dk, float *dv, const float *dout, const float *q,
                          const float *k, const float *v, const float *a, float *s, int L, int E,
                          int HD, float scale, int parallel_rows) {
    // out = att @ v  =>  dv += att^T @ dout, datt = dout @ v^T
    if (dv) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, HD, L, 1.0f, a, L, dout, E, 1.0f, dv, E);
    if (!dq && !dk) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, HD, 1.0f, dout, E, v, E, 0.0f, s, L);
    if (parallel_rows) {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < L; i++) softmax_backward_row(s + (size_t)i * L, a + (size_t)i * L, L, scale);
    } else {
        for (int i = 0; i < L; i++) softmax_backward_row(s + (size_t)i * L, a + (size_t)i * L, L, scale);
    }
    // s = q @ k^T (scale already folded into dscore)  =>  dq += ds @ k, dk += ds^T @ q
    if (dq) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, HD, L, 1.0f, s, L, k, E, 1.0f, dq, E);
    if (dk) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, HD, L, 1.0f, s, L, q, E, 1.0f, dk, E);
}

void attention_backward(float *dq, float *dk, float *dv, const float *dout,
                        const float *q, const float *k, const float *v, const float *att,
                        float *scratch, int N, int L, int NH, int HD) {
    const int E = NH * HD, pairs = N * NH;
    const float scale = 1.0f / sqrtf((float)HD);
    const size_t LL = (size_t)L * L;
    // pair p = n*NH + h; slot picks the (L, L) scratch slice
#define BACKWARD_PAIR(p, slot, rows)                                                               \
    do {                                                                                           \
        size_t off = (size_t)((p) / NH) * L * E + (size_t)((p) % NH) * HD;                         \
        backward_pair(dq ? dq + off : NULL, dk ? dk + off : NULL, dv ? dv + off : NULL,            \
                      dout + off, q + off, k + off, v + off, att + (size_t)(p) * LL,               \
                      scratch + (size_t)(slot) * LL, L, E, HD, scale, rows);                       \
    } while (0)
    if (pairs_in_parallel(pairs, L, HD)) {
        int blas_threads = openblas_get_num_threads();
        openblas_set_num_threads(1);
#pragma omp parallel for schedule(static)
        for (int p = 0; p < pairs; p++) BACKWARD_PAIR(p, omp_get_thread_num(), 0);
        openblas_set_num_threads(blas_threads);
    } else {
        for (int p = 0; p < pairs; p++) BACKWARD_PAIR(p, 0, 1);
    }
#undef BACKWARD_PAIR
}

// Cache-blocked transpose of each sample: inp (R, Cc) -> out (Cc, R), per n.
static void transpose_batched(float *out, const float *inp, int N, int R, int Cc) {
    enum { T = 32 };
    const int rb = (R + T - 1) / T, cb = (Cc + T - 1) / T;
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++) {
        for (int b = 0; b < rb * cb; b++) {
            const float *src = inp + (size_t)n * R * Cc;
            float *dst = out + (size_t)n * R * Cc;
            int r0 = (b / cb) * T, c0 = (b % cb) * T;
            int r1 = r0 + T < R ? r0 + T : R, c1 = c0 + T < Cc ? c0 + T : Cc;
            for (int r = r0; r < r1; r++)
                for (int c = c0; c < c1; c++) dst[(size_t)c * R + r] = src[(size_t)r * Cc + c];
        }
    }
}

// out (N, HW, C) from inp (N, C, HW)
void nchw_to_nlc(float *out, const float *inp, int N, int C, int HW) { transpose_batched(out, inp, N, C, HW); }

// out (N, C, HW) from inp (N, HW, C)
void nlc_to_nchw(float *out, const float *inp, int N, int C, int HW) { transpose_batched(out, inp, N, HW, C); }
