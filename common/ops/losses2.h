// losses2.h: image-structure losses for the VAE: SSIM and a log-magnitude spectral (texture) loss.
// Same conventions as ops.h: a forward returns the mean loss; its backward adds (+=)
// dloss * d(loss)/d(pred) and skips a NULL dpred. Target gets no gradient. Both run OpenMP over
// the N*C planes. The forward fills `cache` (sized by *_cache_floats) with what the backward
// reads; pass cache = NULL when no backward follows (evaluation).
#pragma once
#include <stddef.h>

// ---- SSIM loss: loss = 1 - mean SSIM ----
// As pytorch_msssim.ssim(pred, target, data_range, size_average=True, win_size=11, win_sigma=1.5,
// K=(0.01, 0.03)): a separable 11-tap Gaussian (sigma 1.5, normalised to sum 1) filters each
// (n, c) plane with 'valid' positions only, (H-10) x (W-10) of them; with mu = G*x,
// sigma_xy = G*(xy) - mu_x mu_y, C1 = (0.01 data_range)^2, C2 = (0.03 data_range)^2,
//   ssim = (2 mu_p mu_t + C1)(2 sigma_pt + C2) / ((mu_p^2 + mu_t^2 + C1)(sigma_p^2 + sigma_t^2 + C2))
// averaged over N, C and positions (no clamp at 0). Needs H, W >= 11. pred, target (N,C,H,W).
// cache: d(loss)/d(mu_p), d(loss)/d(G*p^2), d(loss)/d(G*(pt)) at every valid position.
#define SSIM_WIN 11
#define SSIM_SIGMA 1.5
#define SSIM_K1 0.01
#define SSIM_K2 0.03
size_t ssim_cache_floats(int N, int C, int H, int W);  // 3 * N*C*(H-10)*(W-10)
float ssim_loss_forward(float *cache, const float *pred, const float *target, int N, int C, int H, int W,
                        float data_range);
void ssim_loss_backward(float *dpred, const float *cache, const float *pred, const float *target, int N,
                        int C, int H, int W, float data_range, float dloss);

// ---- spectral loss: L1 between log-magnitude spectra ----
// With F = the unnormalised 2-D DFT of each (n, c) plane (torch.fft.fft2, norm="backward"),
//   loss = mean over n, c, u < H, v < W of | log(1 + |F_pred(u,v)|) - log(1 + |F_target(u,v)|) |,
// i.e. the mean over all N*C*H*W full-spectrum bins; in PyTorch
//   (torch.log1p(torch.fft.fft2(pred).abs()) - torch.log1p(torch.fft.fft2(target).abs())).abs().mean()
// It is computed from the r2c half spectrum (H x (W/2+1)) with multiplicity 1 for column v = 0
// (and v = W/2 when W is even) and 2 for the other columns, since |F(u,v)| = |F(-u,-v)|.
// The gradient at a bin where |F_pred| = 0 or the two log-magnitudes are equal is 0 (as torch).
// cache: the half-spectrum gradient, ready for the adjoint (a c2r) in the backward:
// 2 * N*C*H*(W/2+1) floats. pred and target are not read by the backward (the cache holds all
// it needs); they keep the signature the same as ssim_loss_backward.
size_t spectral_cache_floats(int N, int C, int H, int W);
float spectral_loss_forward(float *cache, const float *pred, const float *target, int N, int C, int H, int W);
void spectral_loss_backward(float *dpred, const float *cache, const float *pred, const float *target, int N,
                            int C, int H, int W, float dloss);
