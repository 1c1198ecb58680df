"""Multistep consistency sampling (Song et al. 2023, Algorithm 1).

A consistency function f maps any point of a probability-flow ODE trajectory to the trajectory's
origin. It is called exactly like a denoiser, ``f(z, logsnr, cond) -> x``, on the VP state z (so
the same analytic oracle, network wrapper and guidance code drive it); the paper's
x̂_τ ~ N(x, τ²) is the sigma-space state, z = x̂_τ / sqrt(1 + τ²).

The default grid (``grids.consistency``) puts no time point at ε = σ_min: re-noising to ε adds
sqrt(ε² − ε²) = 0 noise, so evaluating f there would cost an NFE and change nothing.
"""

from __future__ import annotations

import math

import torch

from pixdiff import process
from pixdiff.samplers.common import Generators, as_grid, counting, randn_like, start

__all__ = ["consistency_step", "consistency"]


def consistency_step(z: torch.Tensor, x_hat: torch.Tensor, logsnr_t: float, logsnr_s: float,
                     noise: torch.Tensor | None = None, *, sigma_eps: float = 0.002) -> torch.Tensor:
    """Algorithm 1's re-noising: from the current sample x̂ = f(z, λ_t), x̂_τ = x̂ + sqrt(τ² − ε²) ξ
    at τ = s(λ_s), returned as the VP state α_s x̂_τ at which the loop evaluates f next. ``z`` is
    not used (f already mapped it to x̂)."""
    tau = process.sigma_at(logsnr_s)
    x_tau = x_hat if noise is None else x_hat + math.sqrt(max(tau * tau - sigma_eps * sigma_eps, 0.0)) * noise
    return x_tau * process.alpha_sigma_at(logsnr_s)[0]


def consistency(f, logsnr, noise: torch.Tensor, *, sigma_eps: float = 0.002, cond=None,
                generator: Generators = None) -> torch.Tensor:
    """Multistep consistency sampling (Song et al. 2023, Alg. 1): x ← f(x̂_T, T), then for each later
    time point τ_n: re-noise x to τ_n and map it back with f. The finite entries of the grid are
    T = τ_0 > τ_1 > … (in λ: increasing); a trailing +∞ is ignored. NFE = number of finite entries.
    ``sigma_eps`` is the model's ε, the noise level its outputs carry (0 for an exact ODE map)."""
    F, lam = counting(f, cond), as_grid(logsnr)
    levels = [l for l in lam.tolist() if l != math.inf]
    z = start(noise, levels[0])
    x = F(z, levels[0])
    for lt, ls in zip(levels[:-1], levels[1:]):
        z = consistency_step(z, x, lt, ls, randn_like(x, generator), sigma_eps=sigma_eps)
        x = F(z, ls)
    return x
