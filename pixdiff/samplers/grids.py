"""Sampling grids: the noise levels a sampler visits, as an increasing float64 logSNR tensor.

Every sampler in ``pixdiff.samplers`` walks a grid ``logsnr = [λ_0 < λ_1 < … < λ_N]`` from noise
(λ_0) towards data. The last entry may be ``+inf``: the step into λ = +∞ is the final denoising
step, x = x̂(z, λ_{N−1}) (EDM's σ_N = 0, seed 003 Algorithm 1; DDPM's ᾱ_0 = 1, seed 001). It is
the limit of every first-order update (DDIM, Euler, DPM-Solver-1 and the ancestral step all reduce
to x̂ there), so every sampler takes it the same way, for one NFE. A grid that ends at a finite λ
returns the sigma-space state z/α (data plus a little noise), which is what the order-of-accuracy
tests compare against a reference ODE solution.

Spacings (``to_data=True`` replaces the last point by +∞, so that ``steps`` intervals cost
``steps`` denoiser calls for a first-order sampler):

    edm             σ_i = (σ_max^{1/ρ} + i/(N−1)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, then σ_N = 0
                    (seed 003, EDM Algorithm 1 / eq. 5; ``pixdiff.schedules.edm_sigma_grid``)
    uniform_t       t_i = t_max − i/N (t_max − t_min) through the schedule's λ(t); on a
                    ``DiscreteSchedule`` this is DDIM's uniform sub-sequence τ (seed 001)
    quadratic_t     t_i = t_min + (t_max − t_min)(1 − i/N)², dense near the data; on a
                    ``DiscreteSchedule`` DDIM's quadratic τ (seed 000 "DDIM recap")
    uniform_logsnr  λ_i evenly spaced in [λ_min, λ_max] (DPM-Solver's logSNR steps)

λ = −∞ (pure noise, e.g. IDDPM's cosine at t = 1) is replaced by ``LOGSNR_FLOOR``: a sampler has
to call the denoiser at a finite λ, and at −30 α ≈ 3·10⁻⁷ carries no signal anyway.
"""

from __future__ import annotations

from pixdiff.errors import PixdiffError

import math
from typing import Callable

import torch

from pixdiff import schedules as _schedules
from pixdiff.schedules import DiscreteSchedule, Schedule

__all__ = ["LOGSNR_FLOOR", "edm", "uniform_t", "quadratic_t", "uniform_logsnr", "make", "available",
           "sigmas"]

_F64 = torch.float64
LOGSNR_FLOOR = -30.0


def _steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise PixdiffError(f"steps must be a positive integer (got {steps!r})")
    return steps


def _finish(lam: torch.Tensor, to_data: bool) -> torch.Tensor:
    lam = lam.to(_F64).clamp(min=LOGSNR_FLOOR)
    if to_data:
        lam[-1] = math.inf
    if (lam[1:] <= lam[:-1]).any():
        raise PixdiffError("the grid's logsnr values are not strictly increasing; use fewer steps "
                         "or a wider range")
    return lam


def edm(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
        to_data: bool = True) -> torch.Tensor:
    """EDM's ρ grid (seed 003, EDM eq. 5) as logSNR: N + 1 points."""
    n = _steps(steps)
    s = _schedules.edm_sigma_grid(n if to_data else n + 1, sigma_min, sigma_max, rho)
    if to_data:
        s = torch.cat([s, s.new_zeros(1)])
    with torch.no_grad():
        lam = -2.0 * torch.log(s)
    return _finish(lam, False)


def _t_grid(schedule: Schedule, t: torch.Tensor, kind: str, steps: int, to_data: bool) -> torch.Tensor:
    if isinstance(schedule, DiscreteSchedule):
        # Discrete chains answer only at their steps: pick DDIM's sub-sequence τ (seed 001).
        k = steps if to_data else steps + 1
        idx = _schedules.ddim_timesteps(len(schedule), k, kind)
        lam = schedule.logsnr_table[torch.tensor(idx) - 1].flip(0)
        return _finish(torch.cat([lam, lam.new_full((1,), math.inf)]) if to_data else lam, False)
    return _finish(schedule.logsnr(t), to_data)


def uniform_t(schedule: Schedule, steps: int, t_min: float = 0.0, t_max: float = 1.0,
              to_data: bool = True) -> torch.Tensor:
    """λ(t) on t evenly spaced from t_max down to t_min (N + 1 points)."""
    n = _steps(steps)
    t = torch.linspace(t_max, t_min, n + 1, dtype=_F64)
    return _t_grid(schedule, t, "uniform", n, to_data)


def quadratic_t(schedule: Schedule, steps: int, t_min: float = 0.0, t_max: float = 1.0,
                to_data: bool = True) -> torch.Tensor:
    """λ(t) on t_i = t_min + (t_max − t_min)(1 − i/N)²: small steps near the data."""
    n = _steps(steps)
    u = 1.0 - torch.arange(n + 1, dtype=_F64) / n
    return _t_grid(schedule, t_min + (t_max - t_min) * u * u, "quadratic", n, to_data)


def uniform_logsnr(schedule: Schedule, steps: int, to_data: bool = True) -> torch.Tensor:
    """λ evenly spaced over the schedule's [λ_min, λ_max] (floored at LOGSNR_FLOOR)."""
    n = _steps(steps)
    lo = max(schedule.logsnr_min, LOGSNR_FLOOR)
    hi = schedule.logsnr_max
    if not math.isfinite(hi):
        raise PixdiffError(f"schedule {schedule!r} reaches logsnr = +inf at t = 0; a uniform logsnr grid "
                         "needs a finite logsnr_max")
    return _finish(torch.linspace(lo, hi, n + 1, dtype=_F64), to_data)


def sigmas(logsnr: torch.Tensor) -> torch.Tensor:
    """Sigma-space noise levels s = exp(−λ/2) of a grid (0 at λ = +∞)."""
    return torch.exp(-0.5 * logsnr.to(_F64))


def _edm_for(schedule: Schedule | None, steps: int, sigma_min=None, sigma_max=None, rho=7.0, to_data=True):
    # Without explicit bounds, an explicit schedule's λ range sets σ_min/σ_max; otherwise EDM's.
    if schedule is not None:
        sigma_min = sigma_min if sigma_min is not None else math.exp(-0.5 * min(schedule.logsnr_max, 30.0))
        sigma_max = sigma_max if sigma_max is not None else math.exp(-0.5 * max(schedule.logsnr_min, LOGSNR_FLOOR))
    return edm(steps, 0.002 if sigma_min is None else sigma_min, 80.0 if sigma_max is None else sigma_max, rho, to_data)


_GRIDS: dict[str, Callable[..., torch.Tensor]] = {
    "edm": _edm_for,
    "uniform_t": uniform_t,
    "quadratic_t": quadratic_t,
    "uniform_logsnr": uniform_logsnr,
}

# Options that ``make`` takes, by grid kind (for validation in ``pixdiff.samplers.sample``).
GRID_OPTIONS = {
    "edm": ("sigma_min", "sigma_max", "rho"),
    "uniform_t": ("t_min", "t_max"),
    "quadratic_t": ("t_min", "t_max"),
    "uniform_logsnr": (),
}


def available() -> list[str]:
    return sorted(_GRIDS)


def make(kind: str, schedule: Schedule | str | None, steps: int, to_data: bool = True, **options) -> torch.Tensor:
    """The grid ``kind`` for ``schedule`` with ``steps`` intervals. ``edm`` needs no schedule."""
    if kind not in _GRIDS:
        raise PixdiffError(f"unknown grid {kind!r}; available: {', '.join(available())}")
    bad = set(options) - set(GRID_OPTIONS[kind])
    if bad:
        raise PixdiffError(f"grid {kind!r} takes no option(s) {sorted(bad)}; it takes {list(GRID_OPTIONS[kind])}")
    sched = None if schedule is None else _schedules.get(schedule)
    if kind == "edm":
        return _edm_for(sched, steps, to_data=to_data, **options)
    if sched is None:
        raise PixdiffError(f"grid {kind!r} needs a schedule")
    return _GRIDS[kind](sched, steps, to_data=to_data, **options)
