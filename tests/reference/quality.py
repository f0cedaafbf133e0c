"""Reference values for common/metrics/quality.c (hard-coded in tests/test_check.c).

Run with /usr/bin/python3 (numpy; scipy optional): prints PSNR, SSIM and mean |a-b| for the test
images below. SSIM is written out in numpy from Wang et al. 2004 (11x11 Gaussian window,
sigma 1.5, K1 0.01, K2 0.03, population variances, valid positions only, mean over channels);
where scipy is present it is checked against skimage's own recipe (scipy.ndimage.gaussian_filter,
truncate 3.5, reflect padding, then cropping 5 pixels per side), which is what
skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=2) computes.
"""
import numpy as np


def image_a(C, H, W):
    c, i, j = np.meshgrid(np.arange(C), np.arange(H), np.arange(W), indexing="ij")
    return (0.9 * np.sin(0.37 * i + 0.5 * c) * np.cos(0.23 * j - 0.3 * c)).astype(np.float32)


def image_b(C, H, W):
    c, i, j = np.meshgrid(np.arange(C), np.arange(H), np.arange(W), indexing="ij")
    a = 0.9 * np.sin(0.37 * i + 0.5 * c) * np.cos(0.23 * j - 0.3 * c)
    return (0.7 * a + 0.25 * np.sin(1.3 * i + 0.9 * j + c) + 0.05 * np.cos(0.11 * i * j)).astype(np.float32)


def psnr(a, b, data_range=2.0):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else min(99.0, 10 * np.log10(data_range**2 / mse))


def gauss(win=11, sigma=1.5):
    x = np.arange(win) - win // 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def filt_valid(x, g):
    k = len(g)
    H, W = x.shape
    h = np.stack([x[:, j:j + k] @ g for j in range(W - k + 1)], axis=1)  # (H, W-k+1)
    return np.stack([g @ h[i:i + k, :] for i in range(H - k + 1)], axis=0)


def ssim(a, b, data_range=2.0):
    g = gauss()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for x, y in zip(a.astype(np.float64), b.astype(np.float64)):
        ux, uy = filt_valid(x, g), filt_valid(y, g)
        vx = filt_valid(x * x, g) - ux**2
        vy = filt_valid(y * y, g) - uy**2
        vxy = filt_valid(x * y, g) - ux * uy
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        vals.append(s.mean())
    return float(np.mean(vals))


def ssim_skimage_recipe(a, b, data_range=2.0):
    from scipy.ndimage import gaussian_filter

    f = lambda z: gaussian_filter(z, sigma=1.5, truncate=3.5, mode="reflect")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for x, y in zip(a.astype(np.float64), b.astype(np.float64)):
        ux, uy = f(x), f(y)
        vx, vy, vxy = f(x * x) - ux * ux, f(y * y) - uy * uy, f(x * y) - ux * uy
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        vals.append(s[5:-5, 5:-5].mean())
    return float(np.mean(vals))


if __name__ == "__main__":
    for C, H, W in [(1, 32, 32), (2, 32, 32), (1, 20, 27)]:
        a, b = image_a(C, H, W), image_b(C, H, W)
        s = ssim(a, b)
        line = f"{C}x{H}x{W}: psnr {psnr(a, b):.12f} ssim {s:.12f} mean_abs {np.mean(np.abs(a.astype(np.float64) - b)):.12f}"
        line += f" | ssim(a,a) {ssim(a, a):.12f}"
        try:
            line += f" | skimage recipe differs by {abs(ssim_skimage_recipe(a, b) - s):.1e}"
        except ImportError:
            pass
        print(line)
