"""Patch-discriminator reference fixture: tests/fixtures/patch_disc.safetensors.

taming-transformers' NLayerDiscriminator (taming/modules/discriminator/model.py) written out with
GroupNorm in place of BatchNorm2d, as doppel builds it (common/models/patch_disc.h): groups = the
largest divisor of the channels up to 32, eps 1e-5. Parameters under the nn.Sequential keys
("main.0.weight", ...); convs keep PyTorch's default init and GroupNorm is randomised (common.randomize)
so a wrong constant cannot hide. Input x (2, 1, 32, 32), ndf 8, n_layers 3; the backward is of
L = sum(out * dout).
"""
import zlib

import torch
from torch import nn

from common import dot_loss, grads, params, randn, randomize, save


def groups_for(c, most=32):
    return next(g for g in range(min(most, c), 0, -1) if c % g == 0)


class NLayerDiscriminatorGN(nn.Module):
    """NLayerDiscriminator(input_nc, ndf, n_layers) with norm_layer = GroupNorm (no conv bias before a norm)."""

    def __init__(self, input_nc, ndf, n_layers):
        super().__init__()
        norm = lambda c: nn.GroupNorm(groups_for(c), c, eps=1e-5)
        kw, padw = 4, 1
        seq = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
        nf_mult = 1
        for n in range(1, n_layers):
            nf_mult_prev, nf_mult = nf_mult, min(2 ** n, 8)
            seq += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=2, padding=padw, bias=False),
                    norm(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
        nf_mult_prev, nf_mult = nf_mult, min(2 ** n_layers, 8)
        seq += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=1, padding=padw, bias=False),
                norm(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
        seq += [nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw)]
        self.main = nn.Sequential(*seq)

    def forward(self, x):
        return self.main(x)


def main():
    name = "patch_disc"
    torch.manual_seed(zlib.crc32(name.encode()))
    cfg = {"input_nc": 1, "ndf": 8, "n_layers": 3, "norm": "GroupNorm", "eps": 1e-5, "negative_slope": 0.2}
    m = randomize(NLayerDiscriminatorGN(cfg["input_nc"], cfg["ndf"], cfg["n_layers"]))
    x = randn(2, 1, 32, 32, grad=True)
    out = m(x)
    dout = torch.randn_like(out)
    t = dict(params(m))
    t.update({"x": x, "out": out, "dout": dout})
    t.update(grads(dot_loss([(out, dout)]), {"x": x}, m))
    save(name, t, cfg)


if __name__ == "__main__":
    main()
