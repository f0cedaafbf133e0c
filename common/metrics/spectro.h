// spectro.h: what a radar engineer checks on micro-Doppler spectrograms, real against generated.
// Images are (C, H, W) in [-1, 1] (doppel's normalisation) with H the Doppler axis and W time;
// channel 0 is the magnitude (1-channel images) or the first colour plane. Values are mapped to
// [0, 1] power-like units u = (x + 1) / 2.
//   doppler_profile  the mean over samples and time of u, per Doppler bin, normalised to sum 1
//                    (the frequency marginal); two profiles compare by total variation
//                    0.5 sum |p - q| (0: the same, 1: disjoint)
//   ks_statistic     two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b| of two value sets
//   cadence          the gait period of one spectrogram in time columns: the torso line is the
//                    Doppler bin of largest u in each column (the strongest return), and the period
//                    is the first lag in [2, W/2] where the autocorrelation of that line (mean
//                    removed, unbiased) has a local maximum within 80% of its largest value there;
//                    0 when the line is flat or never repeats
#pragma once
#include <stddef.h>

void doppler_profile(double *profile, const float *imgs, int n, int C, int H, int W);  // profile (H)
double total_variation(const double *p, const double *q, int H);
double ks_statistic(float *a, size_t na, float *b, size_t nb);  // sorts a and b in place
int cadence(const float *img, int H, int W);
