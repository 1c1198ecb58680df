"""Sliced W1 of 2-D samples to a *known* Gaussian mixture (the exact-answer score of the toys).

For ``projections`` evenly spaced directions θ on a half circle, the 1-D W1 between the n sorted
projected samples and the exact quantiles F_θ⁻¹((i − ½)/n) of the projected mixture (a 1-D
Gaussian mixture, inverted once by bisection), averaged over θ. Against the truth rather than a
second sample, so the only sampling noise is the sample's own (Rabin et al. 2012 define the
sliced Wasserstein distance; Bonneel et al. 2015 use its projections of this form).
"""

from __future__ import annotations

import math

import torch

from pixdiff.analytic import GaussianMixture
from pixdiff.errors import PixdiffError

__all__ = ["SlicedW1"]

F64 = torch.float64


class SlicedW1:
    """``SlicedW1(gm, n)(x)``: the score of n samples x [n, 2]; NaN when x has another count or is not finite."""

    def __init__(self, gm: GaussianMixture, n: int, projections: int = 64):
        if gm.dim != 2:
            raise PixdiffError("SlicedW1 spaces its directions on a half circle: 2-D mixtures only")
        ang = (torch.arange(projections, dtype=F64) + 0.5) * math.pi / projections
        self.dirs = torch.stack([ang.cos(), ang.sin()])  # [2, P]
        m = gm.means @ self.dirs  # [K, P]
        sd = torch.einsum("dp,kde,ep->kp", self.dirs, gm.covs, self.dirs).clamp(min=0).sqrt().clamp(min=1e-12)
        w = gm.weights[:, None, None]
        u = (torch.arange(n, dtype=F64) + 0.5) / n
        lo = (m - 10 * sd).min(0).values.expand(n, -1).clone()
        hi = (m + 10 * sd).max(0).values.expand(n, -1).clone()
        for _ in range(45):  # bracket width 20 sd / 2^45 < 1e-12
            mid = 0.5 * (lo + hi)
            cdf = (w * 0.5 * (1 + torch.erf((mid[None] - m[:, None]) / (sd[:, None] * math.sqrt(2))))).sum(0)
            below = cdf < u[:, None]
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        self.q = 0.5 * (lo + hi)  # [n, P]

    def __call__(self, x) -> float:
        x = torch.as_tensor(x).reshape(-1, 2).to(F64)
        if x.shape[0] != self.q.shape[0] or not torch.isfinite(x).all():
            return float("nan")
        return float((torch.sort(x @ self.dirs, dim=0).values - self.q).abs().mean())
