// loss.c: training losses and the VAE posterior sample. A loss forward returns the mean loss
// (reductions summed in double); its backward adds (+=) dloss * d(loss)/d(input).
#include <float.h>
#include <math.h>

#include "check.h"
#include "ops/ops.h"
#include "ops/pointwise.h"

#define PAR_MIN 65536  // elements below which a loop stays on one thread

// ---- mean squared error: loss = sum (pred - target)^2 / n ----
float mse_forward(const float *pred, const float *target, size_t n) {
    double sum = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : sum) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        double d = (double)pred[i] - target[i];
        sum += d * d;
    }
    return (float)(sum / (double)n);
}

// In the forward pass this was: loss = sum (pred - target)^2 / n; so dpred += dloss * 2 (pred - target) / n.
void mse_backward(float *dpred, const float *pred, const float *target, size_t n, float dloss) {
    if (!dpred) return;
    const float g = 2.0f * dloss / (float)n;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) dpred[i] += g * (pred[i] - target[i]);
}

// ---- per-row MSE (the diffusion loss with per-sample weights) ----
void mse_rows_forward(float *mse, const float *pred, const float *target, int N, size_t per) {
    for (int n = 0; n < N; n++) {
        const float *p = pred + n * per, *y = target + n * per;
        double e = 0;
        for (size_t i = 0; i < per; i++) {
            float d = p[i] - y[i];
            e += (double)d * d;
        }
        mse[n] = (float)(e / (double)per);
    }
}

// In the forward pass this was: loss = sum_n c_n mse_n; so dpred[n] += k[n] (pred - target), k = 2 c_n / per.
void mse_rows_backward(float *dpred, const float *pred, const float *target, const float *k, int N, size_t per) {
    if (!dpred) return;
    for (int n = 0; n < N; n++)
        for (size_t i = 0; i < per; i++) dpred[n * per + i] += k[n] * (pred[n * per + i] - target[n * per + i]);
}

// ---- mean absolute error: loss = sum |pred - target| / n ----
float l1_forward(const float *pred, const float *target, size_t n) {
    double sum = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : sum) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) sum += fabs((double)pred[i] - target[i]);
    return (float)(sum / (double)n);
}

// In the forward pass this was: loss = sum |pred - target| / n; so dpred += dloss * sign(pred - target) / n,
// with sign(0) = 0 as torch.
void l1_backward(float *dpred, const float *pred, const float *target, size_t n, float dloss) {
    if (!dpred) return;
    const float g = dloss / (float)n;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float d = pred[i] - target[i];
        dpred[i] += d > 0.0f ? g : d < 0.0f ? -g : 0.0f;
    }
}

// ---- diagonal Gaussian posterior: moments (N, 2C, HW) = [mean; logvar] per sample ----

// kl (N) optional: 0.5 * sum_{C,HW} (mean^2 + var - 1 - logvar); returns the mean over N.
float kl_forward(float *kl, const float *moments, int N, int C, int HW) {
    const size_t CHW = (size_t)C * HW;
    double total = 0.0;
    for (int n = 0; n < N; n++) {
        const float *mean = moments + (size_t)n * 2 * CHW, *logvar = mean + CHW;
        double sum = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : sum) if (CHW > PAR_MIN)
        for (size_t i = 0; i < CHW; i++) {
            float lv = clamp_logvar(logvar[i]);
            sum += (double)mean[i] * mean[i] + exp((double)lv) - 1.0 - lv;
        }
        if (kl) kl[n] = (float)(0.5 * sum);
        total += 0.5 * sum;
    }
    return (float)(total / N);
}

// In the forward pass this was: loss = (1/N) sum_n 0.5 sum (mean^2 + exp(lv) - 1 - lv), lv = clamp(logvar);
// so dmean += dloss * mean / N and dlogvar += dloss * 0.5 (exp(lv) - 1) / N inside the clamp range.
void kl_backward(float *dmoments, const float *moments, int N, int C, int HW, float dloss) {
    if (!dmoments) return;
    const size_t CHW = (size_t)C * HW;
    const float g = dloss / (float)N;
#pragma omp parallel for schedule(static) if ((size_t)N * CHW > PAR_MIN)
    for (size_t j = 0; j < (size_t)N * CHW; j++) {
        size_t n = j / CHW, i = j % CHW;
        const float *mean = moments + n * 2 * CHW, *logvar = mean + CHW;
        float *dmean = dmoments + n * 2 * CHW, *dlogvar = dmean + CHW;
        dmean[i] += g * mean[i];
        if (logvar_in_range(logvar[i])) dlogvar[i] += g * 0.5f * (expf(logvar[i]) - 1.0f);
    }
}

// z (N, C, HW) = mean + exp(0.5 * clamp(logvar)) * eps
void gaussian_sample_forward(float *z, const float *moments, const float *eps, int N, int C, int HW) {
    const size_t CHW = (size_t)C * HW;
#pragma omp parallel for schedule(static) if ((size_t)N * CHW > PAR_MIN)
    for (size_t j = 0; j < (size_t)N * CHW; j++) {
        size_t n = j / CHW, i = j % CHW;
        const float *mean = moments + n * 2 * CHW, *logvar = mean + CHW;
        z[j] = mean[i] + expf(0.5f * clamp_logvar(logvar[i])) * eps[j];
    }
}

// In the forward pass this was: z = mean + exp(0.5 lv) * eps, lv = clamp(logvar);
// so dmean += dz and dlogvar += dz * eps * 0.5 exp(0.5 lv) inside the clamp range.
void gaussian_sample_backward(float *dmoments, const float *dz, const float *moments, const float *eps,
                              int N, int C, int HW) {
    if (!dmoments) return;
    const size_t CHW = (size_t)C * HW;
#pragma omp parallel for schedule(static) if ((size_t)N * CHW > PAR_MIN)
    for (size_t j = 0; j < (size_t)N * CHW; j++) {
        size_t n = j / CHW, i = j % CHW;
        const float *logvar = moments + n * 2 * CHW + CHW;
        float *dmean = dmoments + n * 2 * CHW, *dlogvar = dmean + CHW;
        dmean[i] += dz[j];
        if (logvar_in_range(logvar[i])) dlogvar[i] += dz[j] * eps[j] * 0.5f * expf(0.5f * logvar[i]);
    }
}

// ---- softmax cross-entropy: loss = (1/N) sum_n (logsumexp(logits[n]) - logits[n, labels[n]]) ----
float cross_entropy_forward(float *probs, const float *logits, const int32_t *labels, int N, int K) {
    double total = 0.0;
    for (int n = 0; n < N; n++) {
        CHECK(labels[n] >= 0 && labels[n] < K,
              "cross_entropy_forward: labels[%d] = %d is outside [0, %d): the label and the number of "
              "classes disagree", n, (int)labels[n], K);
        const float *x = logits + (size_t)n * K;
        float *p = probs + (size_t)n * K;
        float mx = -FLT_MAX;
        for (int k = 0; k < K; k++) mx = x[k] > mx ? x[k] : mx;
        double sum = 0.0;
        for (int k = 0; k < K; k++) {
            p[k] = expf(x[k] - mx);
            sum += p[k];
        }
        float inv = (float)(1.0 / sum);
        for (int k = 0; k < K; k++) p[k] *= inv;
        total += (double)mx + log(sum) - x[labels[n]];
    }
    return (float)(total / N);
}

// In the forward pass this was: loss = (1/N) sum_n -log softmax(logits[n])[labels[n]];
// so dlogits[n] += dloss * (probs[n] - onehot(labels[n])) / N.
void cross_entropy_backward(float *dlogits, const float *probs, const int32_t *labels, int N, int K,
                            float dloss) {
    if (!dlogits) return;
    const float g = dloss / (float)N;
    for (int n = 0; n < N; n++) {
        CHECK(labels[n] >= 0 && labels[n] < K,
              "cross_entropy_backward: labels[%d] = %d is outside [0, %d)", n, (int)labels[n], K);
        const float *p = probs + (size_t)n * K;
        float *d = dlogits + (size_t)n * K;
        for (int k = 0; k < K; k++) d[k] += g * p[k];
        d[labels[n]] -= g;
    }
}
