// ssim_loss.c: loss = 1 - mean SSIM over 11x11 Gaussian windows at 'valid' positions, as
// pytorch_msssim.ssim (see losses2.h). Its backward adds (+=) dloss * d(loss)/d(pred).
//
// Per plane, with G the valid separable Gaussian filter (x (H,W) -> (OH,OW), OH = H-10):
//   mu_p = G*p, mu_t = G*t, m_pp = G*(p p), m_tt = G*(t t), m_pt = G*(p t)
//   s_pp = m_pp - mu_p^2, s_tt = m_tt - mu_t^2, s_pt = m_pt - mu_p mu_t
//   A1 = 2 mu_p mu_t + C1, B1 = mu_p^2 + mu_t^2 + C1, A2 = 2 s_pt + C2, B2 = s_pp + s_tt + C2
//   S = A1 A2 / (B1 B2)
// The forward saves dS/dmu_p, dS/dm_pp, dS/dm_pt (times dloss/dS = -1/(N C OH OW)); the backward
// runs them through G^T (the transposed, 'full' filter). Filtering is in double.
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "ops/losses2.h"

#define R (SSIM_WIN / 2)

static void gauss_window(double w[SSIM_WIN]) {
    double sum = 0.0;
    for (int k = 0; k < SSIM_WIN; k++) {
        double c = k - R;
        w[k] = exp(-c * c / (2.0 * SSIM_SIGMA * SSIM_SIGMA));
        sum += w[k];
    }
    for (int k = 0; k < SSIM_WIN; k++) w[k] /= sum;
}

static void check_dims(const char *fn, int N, int C, int H, int W, float data_range) {
    CHECK(N > 0 && C > 0, "%s: empty batch (N %d, C %d)", fn, N, C);
    CHECK(H >= SSIM_WIN && W >= SSIM_WIN,
          "%s: image %dx%d is smaller than the %dx%d SSIM window; use a smaller window or larger images",
          fn, H, W, SSIM_WIN, SSIM_WIN);
    CHECK(data_range > 0.0f, "%s: data_range %g must be positive (2 for images in [-1, 1])", fn,
          (double)data_range);
}

size_t ssim_cache_floats(int N, int C, int H, int W) {
    return 3 * (size_t)N * C * (size_t)(H - 2 * R) * (size_t)(W - 2 * R);
}

// One plane: returns sum_positions S; fills g (3, OH, OW) with scale * dS/d{mu_p, m_pp, m_pt} when
// g != NULL. h: scratch (5, H, OW) doubles.
static double ssim_plane(float *g, const float *p, const float *t, double *h, const double *w, int H, int W,
                         double C1, double C2, double scale) {
    const int OH = H - 2 * R, OW = W - 2 * R;
    const size_t HO = (size_t)H * OW;
    double *hp = h, *ht = h + HO, *hpp = h + 2 * HO, *htt = h + 3 * HO, *hpt = h + 4 * HO;
    for (int i = 0; i < H; i++) {  // horizontal pass: (H, W) -> (H, OW), five maps at once
        const float *pr = p + (size_t)i * W, *tr = t + (size_t)i * W;
        for (int ox = 0; ox < OW; ox++) {
            double sp = 0, st = 0, spp = 0, stt = 0, spt = 0;
            for (int k = 0; k < SSIM_WIN; k++) {
                double a = pr[ox + k], b = tr[ox + k], wk = w[k];
                sp += wk * a, st += wk * b, spp += wk * a * a, stt += wk * b * b, spt += wk * a * b;
            }
            size_t o = (size_t)i * OW + ox;
            hp[o] = sp, ht[o] = st, hpp[o] = spp, htt[o] = stt, hpt[o] = spt;
        }
    }
    const size_t P = (size_t)OH * OW;
    double total = 0.0;
    for (int oy = 0; oy < OH; oy++) {  // vertical pass and the SSIM map
        for (int ox = 0; ox < OW; ox++) {
            double mp = 0, mt = 0, mpp = 0, mtt = 0, mpt = 0;
            for (int k = 0; k < SSIM_WIN; k++) {
                size_t o = (size_t)(oy + k) * OW + ox;
                double wk = w[k];
                mp += wk * hp[o], mt += wk * ht[o], mpp += wk * hpp[o], mtt += wk * htt[o], mpt += wk * hpt[o];
            }
            double A1 = 2.0 * mp * mt + C1, B1 = mp * mp + mt * mt + C1;
            double A2 = 2.0 * (mpt - mp * mt) + C2, B2 = (mpp - mp * mp) + (mtt - mt * mt) + C2;
            double inv = 1.0 / (B1 * B2), S = A1 * A2 * inv;
            total += S;
            if (!g) continue;
            // S = A1 A2 / (B1 B2); dA1/dmu_p = 2 mu_t, dA2/dmu_p = -2 mu_t, dB1/dmu_p = 2 mu_p,
            // dB2/dmu_p = -2 mu_p, dB2/dm_pp = 1, dA2/dm_pt = 2
            size_t o = (size_t)oy * OW + ox;
            g[o] = (float)(scale * (2.0 * mt * (A2 - A1) * inv - 2.0 * mp * S * (1.0 / B1 - 1.0 / B2)));
            g[P + o] = (float)(scale * (-S / B2));
            g[2 * P + o] = (float)(scale * (2.0 * A1 * inv));
        }
    }
    return total;
}

float ssim_loss_forward(float *cache, const float *pred, const float *target, int N, int C, int H, int W,
                        float data_range) {
    check_dims("ssim_loss_forward", N, C, H, W, data_range);
    double w[SSIM_WIN];
    gauss_window(w);
    const int OH = H - 2 * R, OW = W - 2 * R, NC = N * C;
    const size_t HW = (size_t)H * W, P = (size_t)OH * OW;
    const double C1 = (SSIM_K1 * data_range) * (SSIM_K1 * data_range);
    const double C2 = (SSIM_K2 * data_range) * (SSIM_K2 * data_range);
    const double scale = -1.0 / ((double)NC * (double)P);  // d(1 - mean S)/dS
    double total = 0.0;
#pragma omp parallel reduction(+ : total) if (NC > 1)
    {
        double *h = xmalloc(5 * (size_t)H * OW * sizeof(double));  // per thread, once per call
#pragma omp for schedule(static)
        for (int nc = 0; nc < NC; nc++)
            total += ssim_plane(cache ? cache + (size_t)nc * 3 * P : NULL, pred + (size_t)nc * HW,
                                target + (size_t)nc * HW, h, w, H, W, C1, C2, scale);
        free(h);
    }
    return (float)(1.0 - total / ((double)NC * (double)P));
}

// In the forward pass this was: mu_p = G*p, m_pp = G*(p p), m_pt = G*(p t) and loss(S(mu_p, m_pp, m_pt));
// so dp = G^T g_mu + 2 p (G^T g_pp) + t (G^T g_pt), with g the cached dloss/d{mu_p, m_pp, m_pt}.
void ssim_loss_backward(float *dpred, const float *cache, const float *pred, const float *target, int N,
                        int C, int H, int W, float data_range, float dloss) {
    if (!dpred) return;
    check_dims("ssim_loss_backward", N, C, H, W, data_range);
    double w[SSIM_WIN];
    gauss_window(w);
    const int OH = H - 2 * R, OW = W - 2 * R, NC = N * C;
    const size_t HW = (size_t)H * W, P = (size_t)OH * OW, OHW = (size_t)OH * W;
#pragma omp parallel if (NC > 1)
    {
        double *r = xmalloc(3 * OHW * sizeof(double));  // G^T's horizontal half: (3, OH, W)
#pragma omp for schedule(static)
        for (int nc = 0; nc < NC; nc++) {
            const float *g = cache + (size_t)nc * 3 * P;
            const float *p = pred + (size_t)nc * HW, *t = target + (size_t)nc * HW;
            float *dp = dpred + (size_t)nc * HW;
            for (int m = 0; m < 3; m++)  // r[m][oy][j] = sum_ox w[j - ox] g[m][oy][ox]
                for (int oy = 0; oy < OH; oy++) {
                    const float *gr = g + m * P + (size_t)oy * OW;
                    double *rr = r + m * OHW + (size_t)oy * W;
                    for (int j = 0; j < W; j++) {
                        int lo = j - 2 * R > 0 ? j - 2 * R : 0, hi = j < OW - 1 ? j : OW - 1;
                        double s = 0.0;
                        for (int ox = lo; ox <= hi; ox++) s += w[j - ox] * gr[ox];
                        rr[j] = s;
                    }
                }
            for (int i = 0; i < H; i++) {  // vertical half, then combine the three maps
                int lo = i - 2 * R > 0 ? i - 2 * R : 0, hi = i < OH - 1 ? i : OH - 1;
                for (int j = 0; j < W; j++) {
                    double s0 = 0, s1 = 0, s2 = 0;
                    for (int oy = lo; oy <= hi; oy++) {
                        size_t o = (size_t)oy * W + j;
                        double wk = w[i - oy];
                        s0 += wk * r[o], s1 += wk * r[OHW + o], s2 += wk * r[2 * OHW + o];
                    }
                    size_t q = (size_t)i * W + j;
                    dp[q] += dloss * (float)(s0 + 2.0 * p[q] * s1 + t[q] * s2);
                }
            }
        }
        free(r);
    }
}
