"""Reference values for common/metrics/realism.c (tests/fixtures/realism.safetensors).

FID as pytorch-fid's calculate_frechet_distance (scipy.linalg.sqrtm of the covariance product),
KID as the unbiased MMD^2 with the cubic polynomial kernel over the whole sets, the inception score
of softmax outputs, and k-NN precision/recall (Kynkaenniemi et al. 2019), all in float64 numpy on
fixed random features."""
import numpy as np
import torch
from scipy import linalg

from common import save


def fid(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def kid(a, b):
    d = a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1) ** 3
    m, n = len(a), len(b)
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
                 - 2 * kab.mean())


def inception(p):
    py = p.mean(0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(p > 0, p * (np.log(p) - np.log(py)), 0.0)
    return float(np.exp(t.sum(1).mean()))


def pr(real, gen, k=3):
    def radii(x):
        d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        return np.sort(d, 1)[:, k - 1]

    def cover(q, c, r):
        d = ((q[:, None, :] - c[None, :, :]) ** 2).sum(-1)
        return float((d <= r[None, :]).any(1).mean())

    return cover(gen, real, radii(real)), cover(real, gen, radii(gen))


rng = np.random.default_rng(7)
D = 16
a = rng.standard_normal((200, D)).astype(np.float32)
mix = rng.standard_normal((D, D)) * 0.3 + np.eye(D)
b = (rng.standard_normal((150, D)) @ mix + 0.4).astype(np.float32)
a64, b64 = a.astype(np.float64), b.astype(np.float64)
logits = rng.standard_normal((90, 7)) * 2.0
p = np.exp(logits - logits.max(1, keepdims=True))
p = (p / p.sum(1, keepdims=True)).astype(np.float32)
prec, rec = pr(a64, b64, 3)
vals = {"fid": fid(a64, b64), "kid": kid(a64, b64), "inception": inception(p.astype(np.float64)),
        "precision": prec, "recall": rec}
print(vals)
save("realism", {"a": torch.from_numpy(a), "b": torch.from_numpy(b), "probs": torch.from_numpy(p),
                 "expected": torch.tensor([vals["fid"], vals["kid"], vals["inception"], prec, rec])}, vals)
