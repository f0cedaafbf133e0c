// quality.h: full-reference image quality between two images of the same shape, as the
// literature and the Python tools compute it, in double precision:
//   psnr      10 log10(R^2 / MSE), R = data_range (2 for images in [-1, 1]); 99 dB when identical
//   ssim      Wang et al. 2004, 11x11 Gaussian window (sigma 1.5, normalised over its 11 taps),
//             K1 0.01, K2 0.03, population (co)variances, valid convolution only (no padding),
//             averaged over positions, then over channels. Equals
//             skimage.metrics.structural_similarity(a, b, channel_axis=0, gaussian_weights=True,
//             sigma=1.5, use_sample_covariance=False, data_range=R) and pytorch_msssim.ssim(...,
//             data_range=R, size_average=True, win_size=11, win_sigma=1.5) for one image.
//   mean_abs  mean |a - b| (the L1 loss; in [-1, 1] units for [-1, 1] images)
// Images are (C, H, W) float32; n = C*H*W. tests/reference/quality.py is the numpy reference.
#pragma once
#include <stddef.h>

#define PSNR_IDENTICAL 99.0  // what psnr returns for MSE 0 (and the cap above it)
#define SSIM_WIN 11          // window taps per axis: images smaller than this have no SSIM
#define SSIM_SIGMA 1.5
#define SSIM_K1 0.01
#define SSIM_K2 0.03

double psnr(const float *a, const float *b, size_t n, double data_range);
// NAN when H or W < SSIM_WIN (no valid window position)
double ssim(const float *a, const float *b, int C, int H, int W, double data_range);
double mean_abs(const float *a, const float *b, size_t n);
double mean_sq(const float *a, const float *b, size_t n);  // MSE
