"""Optimised sampling grids: fit a sampler's noise levels to a denoiser you can afford to run many
times (the exact 2-D mixture of ``pixdiff.analytic``, a small model).

The idea is "Align Your Steps" (Sabour et al. 2024): the schedule, not only the solver, decides the
few-step error, and it is worth optimising per model and per solver. AYS minimises a KL upper bound
of the discretised SDE; ``fit_grid`` minimises what a deterministic sampler's schedule actually
changes, the pathwise error of the sample against the exact probability-flow map:

    min over λ_0 < λ_1 < … < λ_{N−1}  of  RMS_i |sampler(ε_i; λ_0, …, λ_{N−1}, +∞) − Φ(ε_i)|,

Φ(ε) the solution of the ODE from the same start s_max ε (``reference``: by default UniPC-3 on a fine
λ-uniform grid, 512 steps from s_max down to s = 10⁻³, then x̂), over a fixed set of starting
noises. The N finite levels are free (the first too: starting below s_max trades the prior's
mismatch against larger steps), parametrised as log s_0 and positive decrements of log s, and
found by Nelder–Mead from the λ-uniform grid. The last point stays +∞ (N intervals cost N NFE for
the multistep solvers).

Use the grid on noise other than the fitting noise (``sample(..., grid=fit_grid(...))``): the
benchmark fits on seed 12345 and scores on seeds 0–3.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pixdiff.errors import PixdiffError
from pixdiff.samplers import grids

__all__ = ["fit_grid", "reference_map", "interpolate_grid"]

_F64 = torch.float64


def reference_map(denoiser, noise: torch.Tensor, sigma_max: float = 80.0, steps: int = 512,
                  sigma_min: float = 1e-3) -> torch.Tensor:
    """Φ(ε): the probability-flow ODE from x_σ = s_max ε to data, by UniPC-3 (Zhao et al. 2023) on a
    λ-uniform grid of ``steps`` intervals down to ``sigma_min``, then x̂ (error ≈ 10⁻⁷ on the toy mixture,
    where UniPC-3 converges at order 4: tests/test_samplers_solvers.py)."""
    from pixdiff.samplers import sample

    grid = grids.exponential(steps, sigma_min=sigma_min, sigma_max=sigma_max)
    return sample(denoiser, tuple(noise.shape), "unipc", grid=grid, noise=noise.to(_F64), dtype=_F64, order=3)


def _grid_from(theta: np.ndarray) -> torch.Tensor:
    log_s = theta[0] - np.concatenate([[0.0], np.cumsum(np.exp(theta[1:]))])
    lam = torch.tensor(-2.0 * log_s, dtype=_F64)
    return torch.cat([lam, torch.full((1,), math.inf, dtype=_F64)])


def fit_grid(denoiser, sampler: str, steps: int, noise: torch.Tensor, *, sigma_min: float = 0.002,
             sigma_max: float = 80.0, floor: float = 1e-4, reference: torch.Tensor | None = None,
             maxiter: int | None = None, **sampler_options) -> torch.Tensor:
    """An N = ``steps`` interval grid (N finite logSNR levels, then +∞) minimising the RMS distance of
    ``sampler``'s output from the exact flow map Φ(noise) (``reference``, computed by ``reference_map``
    from ``sigma_max`` when not given). Starts from ``grids.exponential(steps, sigma_min, sigma_max)``;
    the levels stay in [``floor``, ``sigma_max``].
    Deterministic samplers only (a stochastic one has no pathwise target)."""
    from scipy.optimize import minimize

    from pixdiff.samplers import sample

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise PixdiffError(f"fit_grid needs steps ≥ 2 (got {steps!r}): one interval has no level to place")
    noise = noise.to(_F64)
    ref = reference_map(denoiser, noise, sigma_max) if reference is None else reference.to(_F64)
    init = grids.exponential(steps, sigma_min=sigma_min, sigma_max=sigma_max)[:-1]
    log_s = (-0.5 * init).numpy()
    theta0 = np.concatenate([[log_s[0] - 1e-9], np.log(-np.diff(log_s))])

    top, bottom = math.log(sigma_max), math.log(floor)

    def loss(theta):
        # the start stays at or below s_max (where the noise ε was drawn for) and every level above ``floor``
        if not np.all(np.isfinite(theta)) or theta[0] > top or theta[0] - np.exp(theta[1:]).sum() < bottom:
            return 1e6
        x = sample(denoiser, tuple(noise.shape), sampler, grid=_grid_from(theta), noise=noise, dtype=_F64,
                   **sampler_options)
        err = float((x - ref).reshape(x.shape[0], -1).pow(2).sum(1).mean().sqrt())
        return err if math.isfinite(err) else 1e6

    res = minimize(loss, theta0, method="Nelder-Mead",
                   options={"maxiter": maxiter or 200 * len(theta0), "xatol": 1e-4, "fatol": 1e-7, "adaptive": True})
    best = res.x if res.fun <= loss(theta0) else theta0
    return _grid_from(best)


def interpolate_grid(grid: torch.Tensor, steps: int) -> torch.Tensor:
    """A grid of ``steps`` intervals with the same shape: log s of the finite levels interpolated
    linearly in the level's relative position (the log-linear interpolation the AYS authors use to
    carry their 10-step schedules to other step counts, Sabour et al. 2024); the +∞ end is kept."""
    lam = torch.as_tensor(grid, dtype=_F64).flatten()
    to_data = not math.isfinite(float(lam[-1]))
    fin = lam[:-1] if to_data else lam
    log_s = (-0.5 * fin).numpy()
    k = steps if to_data else steps + 1
    new = np.interp(np.linspace(0.0, 1.0, k), np.linspace(0.0, 1.0, len(log_s)), log_s)
    out = torch.tensor(-2.0 * new, dtype=_F64)
    if to_data:
        out = torch.cat([out, torch.full((1,), math.inf, dtype=_F64)])
    return out
