"""Sampling grids: the noise levels a sampler visits, as an increasing float64 logSNR tensor.

Every sampler in ``pixdiff.samplers`` walks a grid ``logsnr = [λ_0 < λ_1 < … < λ_N]`` from noise
(λ_0) towards data. The last entry may be ``+inf``: the step into λ = +∞ is the final denoising
step, x = x̂(z, λ_{N−1}) (EDM's σ_N = 0, Karras et al. 2022 Alg. 1; DDPM's ᾱ_0 = 1, Ho et al. 2020
Alg. 2). It is
the limit of every first-order update (DDIM, Euler, DPM-Solver-1 and the ancestral step all reduce
to x̂ there), so every sampler takes it the same way, for one NFE. A grid that ends at a finite λ
returns the sigma-space state z/α (data plus a little noise), which is what the order-of-accuracy
tests compare against a reference ODE solution.

Spacings (``to_data=True`` replaces the last point by +∞, so that ``steps`` intervals cost
``steps`` denoiser calls for a first-order sampler):

    edm             σ_i = (σ_max^{1/ρ} + i/(N−1)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, then σ_N = 0
                    (Karras et al. 2022, Alg. 1 / eq. 5; ``pixdiff.schedules.edm_sigma_grid``)
    uniform_t       t_i = t_max − i/N (t_max − t_min) through the schedule's λ(t); on a
                    ``DiscreteSchedule`` a respaced sub-sequence of its steps
                    (``schedules.respaced_timesteps``; ``spacing`` 'linspace' by default: IDDPM's
                    respacing, Nichol & Dhariwal 2021 §4, from step T down to step 1)
    quadratic_t     t_i = t_min + (t_max − t_min)(1 − i/N)², dense near the data; on a
                    ``DiscreteSchedule`` DDIM's quadratic τ (Song et al. 2021a, §4.2 / App. D.2)
    uniform_logsnr  λ_i evenly spaced in [λ_min, λ_max] (DPM-Solver's logSNR steps, Lu et al. 2022a)
    consistency     the time points τ_0 = σ_max > τ_1 > … > τ_{N−1} > σ_min of multistep consistency
                    sampling (Song et al. 2023, Alg. 1), then +∞: N points, N evaluations, none
                    at σ_min (see ``consistency``)

λ = −∞ (pure noise, e.g. IDDPM's cosine at t = 1) is replaced by ``LOGSNR_FLOOR``: a sampler has
to call the denoiser at a finite λ, and at −30 α ≈ 3·10⁻⁷ carries no signal anyway.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from pixdiff import process
from pixdiff import schedules as _schedules
from pixdiff.errors import PixdiffError
from pixdiff.schedules import DiscreteSchedule, Schedule

__all__ = ["LOGSNR_FLOOR", "edm", "uniform_t", "quadratic_t", "uniform_logsnr", "exponential", "consistency", "make",
           "available", "sigmas", "CONSISTENCY_TWO_STEP"]

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
    """EDM's ρ grid (Karras et al. 2022, eq. 5) as logSNR: N + 1 points."""
    n = _steps(steps)
    s = _schedules.edm_sigma_grid(n if to_data else n + 1, sigma_min, sigma_max, rho)
    if to_data:
        s = torch.cat([s, s.new_zeros(1)])
    return _finish(process.logsnr_from_sigma(s), False)


def _t_grid(schedule: Schedule, t: torch.Tensor, pick, steps: int, to_data: bool) -> torch.Tensor:
    if isinstance(schedule, DiscreteSchedule):
        # Discrete chains answer only at their steps: pick a sub-sequence of them (``pick``).
        k = steps if to_data else steps + 1
        idx = pick(len(schedule), k)
        lam = schedule.logsnr_table[torch.tensor(idx) - 1].flip(0)
        return _finish(torch.cat([lam, lam.new_full((1,), math.inf)]) if to_data else lam, False)
    return _finish(schedule.logsnr(t), to_data)


def uniform_t(schedule: Schedule, steps: int, t_min: float = 0.0, t_max: float = 1.0, spacing: str = "linspace",
              to_data: bool = True) -> torch.Tensor:
    """λ(t) on t evenly spaced from t_max down to t_min (N + 1 points).

    On a ``DiscreteSchedule`` the points are its steps ``schedules.respaced_timesteps(T, k,
    spacing)`` (k = N with ``to_data``, whose last interval is the step into +∞): by default
    'linspace', IDDPM's respacing (Nichol & Dhariwal 2021, §4), which starts at step T (pure
    noise as trained) and ends at step 1; 'leading' is DDIM's τ (diffusers' default for DDIM/DDPM,
    from step 1 to step T − T/k + 1), 'trailing' starts at T and stops at step T/k."""
    n = _steps(steps)
    if spacing not in _schedules.SPACINGS:
        raise PixdiffError(f"spacing must be one of {', '.join(_schedules.SPACINGS)} (got {spacing!r})")
    t = torch.linspace(t_max, t_min, n + 1, dtype=_F64)
    return _t_grid(schedule, t, lambda T, k: _schedules.respaced_timesteps(T, k, spacing), n, to_data)


def quadratic_t(schedule: Schedule, steps: int, t_min: float = 0.0, t_max: float = 1.0,
                to_data: bool = True) -> torch.Tensor:
    """λ(t) on t_i = t_min + (t_max − t_min)(1 − i/N)²: small steps near the data."""
    n = _steps(steps)
    u = 1.0 - torch.arange(n + 1, dtype=_F64) / n
    return _t_grid(schedule, t_min + (t_max - t_min) * u * u,
                   lambda T, k: _schedules.ddim_timesteps(T, k, "quadratic"), n, to_data)


def uniform_logsnr(schedule: Schedule, steps: int, to_data: bool = True) -> torch.Tensor:
    """λ evenly spaced over the schedule's [λ_min, λ_max] (floored at LOGSNR_FLOOR; the logSNR-uniform
    steps of Lu et al. 2022a)."""
    n = _steps(steps)
    lo = max(schedule.logsnr_min, LOGSNR_FLOOR)
    hi = schedule.logsnr_max
    if not math.isfinite(hi):
        raise PixdiffError(f"schedule {schedule!r} reaches logsnr = +inf at t = 0; a uniform logsnr grid "
                         "needs a finite logsnr_max")
    return _finish(torch.linspace(lo, hi, n + 1, dtype=_F64), to_data)


def exponential(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, to_data: bool = True) -> torch.Tensor:
    """λ-uniform steps between EDM's bounds: log σ evenly spaced from σ_max to σ_min (k-diffusion's
    ``get_sigmas_exponential``; DPM-Solver's uniform-λ steps, Lu et al. 2022a), then σ = 0 with
    ``to_data`` (N + 1 points; the N finite ones span [σ_min, σ_max])."""
    n = _steps(steps)
    if not (0 < sigma_min < sigma_max):
        raise PixdiffError(f"need 0 < sigma_min < sigma_max (got {sigma_min}, {sigma_max})")
    k = n if to_data else n + 1
    lam = torch.linspace(-2.0 * math.log(sigma_max), -2.0 * math.log(sigma_min), k, dtype=_F64)
    if to_data:
        lam = torch.cat([lam, torch.full((1,), math.inf, dtype=_F64)])
    return _finish(lam, False)


# Song et al. 2023's two-step ImageNet-64 point: openai/consistency_models samples CD-LPIPS with
# ``--sampler multistep --ts 0,22,39 --steps 40``, i.e. τ_1 = index 22 of the 40-point ρ-grid
# (≈ 1.38 for σ ∈ [0.002, 80], ρ = 7); its last point, index 39 = σ_min, re-noises by
# sqrt(σ_min² − ε²) = 0 and is not evaluated there.
CONSISTENCY_TWO_STEP = (22, 40)


def consistency(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """Time points for multistep consistency sampling (Song et al. 2023, Alg. 1), as logSNR: N
    finite points τ_0 = σ_max > τ_1 > … > τ_{N−1}, then +∞ (the grid's N intervals are N
    evaluations of f).

    Alg. 1 re-noises the current sample to each τ_n with std sqrt(τ_n² − ε²), ε = σ_min: a point at
    σ_min adds no noise and its evaluation returns (for an exact f) the sample unchanged, an NFE
    for nothing. So no point sits at σ_min: N = 1 is one-step generation (τ_0 only); N = 2 uses
    the paper's intermediate point (``CONSISTENCY_TWO_STEP``: index 22 of the 40-point ρ-grid,
    the official ImageNet-64 setting); N ≥ 3 takes the first N points of the (N + 1)-point ρ-grid
    from σ_max to σ_min (Karras et al. 2022, eq. 5), i.e. the ρ-grid without its last point."""
    n = _steps(steps)
    if not (0 < sigma_min < sigma_max):
        raise PixdiffError(f"need 0 < sigma_min < sigma_max (got {sigma_min}, {sigma_max})")
    a, b = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    if n == 2:
        i, m = CONSISTENCY_TWO_STEP
        u = torch.tensor([0.0, i / (m - 1)], dtype=_F64)
    else:
        u = torch.arange(n, dtype=_F64) / n
    s = (a + u * (b - a)) ** rho
    s[0] = sigma_max  # exactly, not through the ρ-th power
    return _finish(torch.cat([process.logsnr_from_sigma(s), torch.full((1,), math.inf, dtype=_F64)]), False)


def sigmas(logsnr: torch.Tensor) -> torch.Tensor:
    """Sigma-space noise levels s = exp(−λ/2) of a grid (0 at λ = +∞)."""
    return process.sigma_from_logsnr(logsnr)


def _sigma_bounds(schedule: Schedule | None, sigma_min, sigma_max) -> tuple[float, float]:
    # Without explicit bounds, an explicit schedule's λ range sets σ_min/σ_max; otherwise EDM's.
    if schedule is not None:
        sigma_min = sigma_min if sigma_min is not None else process.sigma_at(min(schedule.logsnr_max, 30.0))
        sigma_max = sigma_max if sigma_max is not None else process.sigma_at(max(schedule.logsnr_min, LOGSNR_FLOOR))
    return 0.002 if sigma_min is None else sigma_min, 80.0 if sigma_max is None else sigma_max


def _edm_for(schedule: Schedule | None, steps: int, sigma_min=None, sigma_max=None, rho=7.0, to_data=True):
    return edm(steps, *_sigma_bounds(schedule, sigma_min, sigma_max), rho, to_data)


def _exponential_for(schedule: Schedule | None, steps: int, sigma_min=None, sigma_max=None, to_data=True):
    return exponential(steps, *_sigma_bounds(schedule, sigma_min, sigma_max), to_data)


def _consistency_for(schedule: Schedule | None, steps: int, sigma_min=None, sigma_max=None, rho=7.0, to_data=True):
    # Like ``edm``: an explicit schedule's λ range sets the bounds, else EDM's σ ∈ [0.002, 80]. The
    # grid always ends at +∞ (f maps to data; the trailing point is not evaluated).
    return consistency(steps, *_sigma_bounds(schedule, sigma_min, sigma_max), rho)


_GRIDS: dict[str, Callable[..., torch.Tensor]] = {
    "edm": _edm_for,
    "uniform_t": uniform_t,
    "quadratic_t": quadratic_t,
    "uniform_logsnr": uniform_logsnr,
    "exponential": _exponential_for,
    "consistency": _consistency_for,
}

# Options that ``make`` takes, by grid kind (for validation in ``pixdiff.samplers.sample``).
GRID_OPTIONS = {
    "edm": ("sigma_min", "sigma_max", "rho"),
    "uniform_t": ("t_min", "t_max", "spacing"),
    "quadratic_t": ("t_min", "t_max"),
    "uniform_logsnr": (),
    "exponential": ("sigma_min", "sigma_max"),
    "consistency": ("sigma_min", "sigma_max", "rho"),
}


def available() -> list[str]:
    return sorted(_GRIDS)


def make(kind: str, schedule: Schedule | str | None, steps: int, to_data: bool = True, **options) -> torch.Tensor:
    """The grid ``kind`` for ``schedule`` with ``steps`` intervals. ``edm``, ``exponential`` and
    ``consistency`` need no schedule (one given sets their σ range)."""
    if kind not in _GRIDS:
        raise PixdiffError(f"unknown grid {kind!r}; available: {', '.join(available())}")
    bad = set(options) - set(GRID_OPTIONS[kind])
    if bad:
        raise PixdiffError(f"grid {kind!r} takes no option(s) {sorted(bad)}; it takes {list(GRID_OPTIONS[kind])}")
    sched = None if schedule is None else _schedules.get(schedule)
    if kind in ("edm", "exponential", "consistency"):
        return _GRIDS[kind](sched, steps, to_data=to_data, **options)
    if sched is None:
        raise PixdiffError(f"grid {kind!r} needs a schedule")
    return _GRIDS[kind](sched, steps, to_data=to_data, **options)
