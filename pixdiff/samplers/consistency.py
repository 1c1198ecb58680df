"""Multistep consistency sampling (seed 003 "Consistency models", Algorithm 1; Song et al. 2023).

A consistency function f maps any point of a probability-flow ODE trajectory to the trajectory's
origin. It is called exactly like a denoiser, ``f(z, logsnr, cond) -> x``, on the VP state z (so
the same analytic oracle, network wrapper and guidance code drive it); the seed's x̂_τ ~ N(x, τ²)
is the sigma-space state, z = x̂_τ / sqrt(1 + τ²).
"""

from __future__ import annotations

from pixdiff.errors import PixdiffError

import math

import torch

from pixdiff.samplers.common import CountingDenoiser, Generators, check_grid, randn_like, start

__all__ = ["consistency_step", "consistency"]


def consistency_step(f, x: torch.Tensor, logsnr: float, noise: torch.Tensor, sigma_eps: float = 0.002) -> torch.Tensor:
    """Algorithm 1's loop body: x̂_τ = x + sqrt(τ² − ε²) z, then x ← f(x̂_τ, τ), with τ = exp(−λ/2)."""
    tau = math.exp(-0.5 * logsnr)
    x_tau = x + math.sqrt(max(tau * tau - sigma_eps * sigma_eps, 0.0)) * noise
    return f(x_tau / math.sqrt(1.0 + tau * tau), logsnr)


def consistency(f, logsnr, noise: torch.Tensor, *, sigma_eps: float = 0.002, cond=None,
                generator: Generators = None) -> torch.Tensor:
    """Multistep consistency sampling (seed 003, Algorithm 1): x ← f(x̂_T, T), then for each later time
    point τ_n: re-noise x to τ_n and map it back with f. The finite entries of the grid are
    T = τ_0 > τ_1 > … (in λ: increasing); a trailing +∞ is ignored. NFE = number of finite entries.
    ``sigma_eps`` is the model's ε, the noise level its outputs carry (0 for an exact ODE map)."""
    if not (isinstance(sigma_eps, (int, float)) and sigma_eps >= 0):
        raise PixdiffError(f"sigma_eps must be a non-negative number (got {sigma_eps!r})")
    F, lam = CountingDenoiser(f, cond), check_grid(logsnr)
    levels = [l for l in lam.tolist() if l != math.inf]
    x = F(start(noise, levels[0]), levels[0])
    for l in levels[1:]:
        x = consistency_step(F, x, l, randn_like(x, generator), sigma_eps)
    return x
