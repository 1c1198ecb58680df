"""Samplers: turn a denoiser ``denoiser(z, logsnr, cond) -> x̂`` into samples.

    x = pixdiff.samplers.sample(denoiser, (16, 3, 32, 32), sampler="heun", steps=18,
                                generator=torch.Generator().manual_seed(0))
    x, nfe = pixdiff.samplers.sample(..., return_nfe=True)

``sample`` is the API boundary: it checks everything once (the sampler's name and options, steps,
the grid, the noise's shape, the generators, the denoiser), picks the sampler's default grid and
schedule, draws ε and counts NFE. Behind it nothing is re-checked: the sampler functions and their
steps trust their inputs (call them directly only with a grid that ``grids`` made or
``common.check_grid`` passed).

Each sampler is a function ``fn(denoiser, logsnr, noise, *, <options>, cond, generator) -> x`` of a
logSNR grid (``grids``), the initial standard-normal noise ε and an explicit generator (or a list of
per-sample generators, see ``common.randn``). The families live in ``ancestral`` (ddpm, ddim,
sid2_ddpm), ``ode`` (euler, heun, dpm_solver, dpmpp_2m), ``sde`` (edm, euler_maruyama, pc,
langevin), ``consistency``, ``multistep`` (lms, deis, unipc) and ``dpm_sde`` (dpm2_ancestral,
dpmpp_2s_ancestral, dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde: k-diffusion's stochastic DPM-Solvers).
``fitgrid.fit_grid`` fits a grid to a denoiser (pass it as ``grid=``). docs/samplers.md has the table.

The steps: one signature. Each family exports its single step as a pure function

    step(z, x_hat, logsnr_t, logsnr_s, noise=None, **method_options) -> z_s

    z          the VP state at λ_t (z = α x + σ ε; sigma-space samplers convert to x_σ = z/α_t
               inside, through ``pixdiff.process``, and return the VP state at λ_s)
    x_hat      D(z, λ_t), the denoiser's answer at the current point; steps that evaluate again
               (heun_step, edm_step, dpm_solver_step) take ``denoiser=`` (D(z, λ) on the VP
               state) and accept x_hat=None to evaluate it themselves
    logsnr_t   the current level, a float; logsnr_s ≥ logsnr_t the next one (+inf: the step into
               data, which every step takes as x = x̂)
    noise      fresh standard normal noise for the stochastic steps (None: the mean / no noise)

    ddpm_step(..., var_interp=, score_shift=)   sid2_ddpm_step(..., gamma=, score_shift=)
    ddim_step(..., eta=)                         euler_step(...)
    heun_step(..., denoiser=)                    edm_step(..., denoiser=, gamma=, S_noise=)
    dpm_solver_step(..., denoiser=, order=)      dpmpp_2m_step(..., x_hat_prev=, logsnr_prev=)
    reverse_diffusion_step(..., process=)        langevin_step(..., snr= | step_size=, alpha=, process=)
    consistency_step(..., sigma_eps=)            (x_hat = f(z, λ_t); returns the re-noised state at λ_s)
    lms_step / deis_step(..., eps_prev=, logsnr_prev=)      (previous ε̂ and λ, most recent first)
    unipc_step(..., x_hat_prev=, logsnr_prev=, variant=)   unic_step(z_t, x̂_t, λ_t, λ_s, x̂_s, ...)
    dpm2_ancestral_step / dpmpp_2s_ancestral_step(..., denoiser=, eta=, s_noise=)
    dpmpp_sde_step(..., noise=(ξ₁, ξ₂), denoiser=, eta=, s_noise=, r=)
    dpmpp_2m_sde_step(..., x_hat_prev=, logsnr_prev=, eta=, s_noise=, solver_type=)
    dpmpp_3m_sde_step(..., x_hat_prev=(2), logsnr_prev=(2), eta=, s_noise=)

Heun's step is written once (``ode.heun_step``); EDM's stochastic step is a noise increase followed
by it. The coefficients α, σ, s of every step come from ``pixdiff.process``.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from pixdiff.errors import PixdiffError
from pixdiff.samplers import grids
from pixdiff.samplers.ancestral import VARIANCES, ddim, ddim_step, ddpm, ddpm_step, sid2_ddpm, sid2_ddpm_step
from pixdiff.samplers.common import (
    CountingDenoiser,
    check_generators,
    check_grid,
    dynamic_threshold,
    generators,
    randn,
    static_threshold,
)
from pixdiff.samplers.consistency import consistency, consistency_step
from pixdiff.samplers.dpm_sde import (
    SOLVER_TYPES,
    dpm2_ancestral,
    dpm2_ancestral_step,
    dpmpp_2m_sde,
    dpmpp_2m_sde_step,
    dpmpp_2s_ancestral,
    dpmpp_2s_ancestral_step,
    dpmpp_3m_sde,
    dpmpp_3m_sde_step,
    dpmpp_sde,
    dpmpp_sde_step,
)
from pixdiff.samplers.fitgrid import fit_grid
from pixdiff.samplers.multistep import (
    UNIPC_VARIANTS,
    deis,
    deis_step,
    lms,
    lms_step,
    unic_step,
    unipc,
    unipc_step,
)
from pixdiff.samplers.ode import (
    dpm_solver,
    dpm_solver_step,
    dpmpp_2m,
    dpmpp_2m_step,
    euler,
    euler_step,
    heun,
    heun_step,
)
from pixdiff.samplers.sde import (
    PROCESSES,
    edm,
    edm_step,
    euler_maruyama,
    langevin,
    langevin_step,
    pc,
    reverse_diffusion_step,
)
from pixdiff.schedules import InterpolatedCosineSchedule, Schedule, VESchedule
from pixdiff.schedules import get as get_schedule

__all__ = [
    "sample", "available", "get", "options", "SamplerSpec", "Sampled", "grids", "sid2_schedule", "CountingDenoiser",
    "fit_grid",
    "generators",
    "randn", "static_threshold", "dynamic_threshold",
    "ddpm", "ddim", "sid2_ddpm", "euler", "heun", "edm", "dpm_solver", "dpmpp_2m", "euler_maruyama", "pc",
    "langevin", "consistency", "lms", "deis", "unipc", "dpm2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde",
    "dpmpp_2m_sde", "dpmpp_3m_sde",
    "ddpm_step", "ddim_step", "sid2_ddpm_step", "euler_step", "heun_step", "edm_step", "dpm_solver_step",
    "dpmpp_2m_step", "reverse_diffusion_step", "langevin_step", "consistency_step", "lms_step", "deis_step",
    "unipc_step", "unic_step", "dpm2_ancestral_step", "dpmpp_2s_ancestral_step", "dpmpp_sde_step",
    "dpmpp_2m_sde_step", "dpmpp_3m_sde_step",
]


def sid2_schedule(shape) -> Schedule:
    """SiD2's sampling schedule for samples of ``shape`` = [B, C, H, W]: ``cosine_interpolated``
    (low 32, high 512) shifted for the resolution √(H·W) (Hoogeboom et al. 2025, App. A.4; the
    shift is per pixel count, so a non-square image counts as the square of equal area). Shapes
    without two spatial axes have no resolution: the plain cosine."""
    if len(shape) < 4:
        return get_schedule("cosine")
    h, w = int(shape[-2]), int(shape[-1])
    return InterpolatedCosineSchedule(resolution=math.sqrt(h * w), low=32, high=512)


@dataclass(frozen=True)
class SamplerSpec:
    """A registry entry: the function and the defaults ``sample`` uses for it."""

    fn: Callable[..., torch.Tensor]
    steps: int  # default number of grid intervals
    grid: str  # default grid kind (``grids.available()``)
    # default schedule when none is given: a name, a Schedule, a function of the sample shape, or
    # None (the grid needs none)
    schedule: str | Schedule | Callable[[tuple], Schedule] | None
    paper: str  # where the algorithm comes from (docs/references.md has the full entries)
    schedule_by_process: dict[str, str] = field(default_factory=dict)  # SDE samplers: VE vs VP


_REGISTRY: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec(ddpm, 250, "uniform_t", "linear_discrete",
                        "Ho et al. 2020, Alg. 2; Nichol & Dhariwal 2021, §3.1 (learned Σ), §4 (respacing); "
                        "Dhariwal & Nichol 2021, Alg. 1 (classifier guidance)"),
    "ddim": SamplerSpec(ddim, 50, "uniform_t", "linear_discrete", "Song et al. 2021a, eq. 12, §4.2"),
    "sid2_ddpm": SamplerSpec(sid2_ddpm, 256, "uniform_t", sid2_schedule,
                             "Hoogeboom et al. 2025, §1.1 eq. 3, App. A.4 (sampling settings)"),
    "euler": SamplerSpec(euler, 100, "edm", None, "Karras et al. 2022, Alg. 1 (first order)"),
    "heun": SamplerSpec(heun, 32, "edm", None, "Karras et al. 2022, Alg. 1"),
    "edm": SamplerSpec(edm, 64, "edm", None, "Karras et al. 2022, Alg. 2, Table 5"),
    "dpm_solver": SamplerSpec(dpm_solver, 16, "edm", None, "Lu et al. 2022a, Alg. 1–2 (DPM-Solver-1/2/3)"),
    "dpmpp_2m": SamplerSpec(dpmpp_2m, 32, "edm", None, "Lu et al. 2022b, Alg. 2 (DPM-Solver++(2M))"),
    "euler_maruyama": SamplerSpec(euler_maruyama, 500, "uniform_t", None,
                                  "Song et al. 2021b, Alg. 2/3 (predictor only)", {"ve": "ve", "vp": "vp"}),
    "pc": SamplerSpec(pc, 250, "uniform_t", None, "Song et al. 2021b, Alg. 2/3, App. G", {"ve": "ve", "vp": "vp"}),
    # σ from 10 (≈ 5× the data's extent, NCSNv2's "largest pairwise distance" rule) to 0.01.
    "langevin": SamplerSpec(langevin, 20, "uniform_logsnr", VESchedule(0.01, 10.0), "Song & Ermon 2019, Alg. 1"),
    "consistency": SamplerSpec(consistency, 1, "consistency", None, "Song et al. 2023, Alg. 1"),
    # k-diffusion's solvers (k_diffusion/sampling.py) and diffusers' multistep schedulers
    "lms": SamplerSpec(lms, 32, "edm", None, "k-diffusion sample_lms (Adams–Bashforth on σ, order 4); "
                       "Karras et al. 2022, §2 (the ODE)"),
    "dpm2_ancestral": SamplerSpec(dpm2_ancestral, 32, "edm", None,
                                  "Lu et al. 2022a, Alg. 1 (DPM-Solver-2), ancestral as k-diffusion"),
    "dpmpp_2s_ancestral": SamplerSpec(dpmpp_2s_ancestral, 32, "edm", None,
                                      "Lu et al. 2022b, Alg. 1 (DPM-Solver++(2S)), ancestral as k-diffusion"),
    "dpmpp_sde": SamplerSpec(dpmpp_sde, 32, "edm", None,
                             "Lu et al. 2022b, Alg. 1 (DPM-Solver++(2S), r = ½) with ancestral sub-steps, as k-diffusion"),
    "dpmpp_2m_sde": SamplerSpec(dpmpp_2m_sde, 32, "exponential", None,
                                "Lu et al. 2022b, Alg. 2 (DPM-Solver++(2M)), SDE variant, midpoint as k-diffusion"),
    "dpmpp_3m_sde": SamplerSpec(dpmpp_3m_sde, 32, "exponential", None,
                                "Lu et al. 2022b (third-order multistep of its reference code), SDE variant, as k-diffusion"),
    "unipc": SamplerSpec(unipc, 20, "exponential", None, "Zhao et al. 2023, Thm 3.1 / Cor. 3.2 (UniC-p, UniP-p; B(h) bh1/bh2)"),
    "deis": SamplerSpec(deis, 20, "exponential", None, "Zhang & Chen 2023 (tAB-DEIS, ε̂ polynomial in log ρ)"),
}

_SAMPLE_OPTIONS = ("grid", "noise", "dtype", "device", "return_nfe")


class Sampled(NamedTuple):
    x: torch.Tensor  # samples in data space, [B, *shape]
    nfe: int  # denoiser evaluations for the whole batch


def available() -> list[str]:
    """Names accepted by ``sample``."""
    return sorted(_REGISTRY)


def get(name: str) -> SamplerSpec:
    if name not in _REGISTRY:
        raise PixdiffError(f"unknown sampler {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def options(name: str) -> dict[str, Any]:
    """The sampler's own options and their defaults."""
    sig = inspect.signature(get(name).fn)
    return {k: p.default for k, p in sig.parameters.items()
            if p.kind is p.KEYWORD_ONLY and k not in ("cond", "generator")}


# --- option checks (done here, once) ------------------------------------------------------------------


def _number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _fraction(name, hint=""):
    def check(v):
        if not (_number(v) and 0.0 <= v <= 1.0):
            raise PixdiffError(f"{name} must be a number in [0, 1] (got {v!r}){hint}")
    return check


def _nonneg(name, allow_none=False):
    def check(v):
        if allow_none and v is None:
            return
        if not (_number(v) and v >= 0):
            raise PixdiffError(f"{name} must be a non-negative number (got {v!r})")
    return check


def _positive(name):
    def check(v):
        if not (_number(v) and v > 0):
            raise PixdiffError(f"{name} must be a positive number (got {v!r})")
    return check


def _count(name, minimum):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            what = "a positive integer" if minimum == 1 else "a non-negative integer"
            raise PixdiffError(f"{name} must be {what} (got {v!r})")
    return check


def _one_of(name, allowed):
    def check(v):
        if v not in allowed:
            raise PixdiffError(f"{name} must be one of {', '.join(map(str, allowed))} (got {v!r})")
    return check


def _order(v):
    if isinstance(v, bool) or v not in (1, 2, 3):
        raise PixdiffError(f"order must be 1, 2 or 3 (got {v!r})")


def _bool(name):
    def check(v):
        if not isinstance(v, bool):
            raise PixdiffError(f"{name} must be True or False (got {v!r})")
    return check


def _lms_order(v):
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 6:
        raise PixdiffError(f"order must be an integer from 1 to 6 (got {v!r})")


def _clip(v):
    if v not in (None, "static", "dynamic"):
        raise PixdiffError(f"clip_x must be None, 'static' or 'dynamic' (got {v!r})")


_CHECKS: dict[str, Callable[[Any], None]] = {
    "eta": _fraction("eta", "; 0 is DDIM, 1 is DDPM's β̃ variance"),
    "gamma": _fraction("gamma"),
    "variance": lambda v: v is None or _one_of("variance", VARIANCES)(v),
    "clip_x": _clip,
    "order": _order,
    "process": _one_of("process", PROCESSES),
    "snr": _positive("snr"),
    "corrector_steps": _count("corrector_steps", 0),
    "S_churn": _nonneg("S_churn", allow_none=True),
    "S_tmin": _nonneg("S_tmin"),
    "S_tmax": _nonneg("S_tmax"),
    "S_noise": _nonneg("S_noise"),
    "step_size": _positive("step_size"),
    "steps_per_level": _count("steps_per_level", 1),
    "sigma_eps": _nonneg("sigma_eps"),
    "s_noise": _nonneg("s_noise"),
    "r": lambda v: None if _number(v) and 0.0 < v <= 1.0 else _raise(f"r must be a number in (0, 1] (got {v!r})"),
    "variant": _one_of("variant", UNIPC_VARIANTS),
    "solver_type": _one_of("solver_type", SOLVER_TYPES),
    "corrector": _bool("corrector"),
    "lower_order_final": _bool("lower_order_final"),
}

_CHECKS_BY_SAMPLER: dict[str, dict[str, Callable[[Any], None]]] = {
    "lms": {"order": _lms_order},  # k-diffusion's default is 4
}


def _raise(msg):
    raise PixdiffError(msg)


def _check_options(name: str, opts: dict, counter: CountingDenoiser) -> None:
    for k, v in opts.items():
        check = _CHECKS_BY_SAMPLER.get(name, {}).get(k, _CHECKS.get(k))
        if check is not None:
            check(v)
    if name == "ddpm":
        variance = opts.get("variance") or ("learned" if counter.learn_sigma else "beta_tilde")
        if variance == "learned" and not counter.has_predict:
            raise PixdiffError("variance='learned' needs a denoiser whose predict() returns var_interp "
                               "(a Denoiser built with learn_sigma=True)")


# --- the front door ---------------------------------------------------------------------------------------


def sample(denoiser, shape, sampler: str = "heun", steps: int | None = None, schedule=None, cond=None,
           generator=None, **options_):
    """Draw samples of ``shape`` = [B, ...] with ``sampler`` (see ``available()``).

    Args:
        denoiser: ``denoiser(z, logsnr, cond) -> x̂`` (the consistency sampler calls its f the same way).
        steps: grid intervals (default: the sampler's); NFE per step depends on the sampler.
        schedule: a name for ``pixdiff.schedules.get`` or a Schedule; sets the grid's λ range.
            Default: the sampler's (``get(name).schedule``; for ``sid2_ddpm`` SiD2's interpolated
            cosine at the resolution of ``shape``).
        generator: a ``torch.Generator`` or a list of B generators (per-sample noise).
        options: the sampler's own options (``options(name)``), grid options (``grid`` = a kind from
            ``grids.available()`` or an explicit increasing logSNR tensor; ``sigma_min``, ``sigma_max``,
            ``rho``, ``t_min``, ``t_max``, ``spacing``), ``noise`` (the initial ε, else drawn),
            ``dtype`` (float32), ``device``, and ``return_nfe``.

    Returns:
        x in data space ([B, *shape]), or ``Sampled(x, nfe)`` with ``return_nfe=True``.
    """
    spec = get(sampler)
    own = options(sampler)
    grid = options_.pop("grid", spec.grid)
    noise = options_.pop("noise", None)
    dtype = options_.pop("dtype", torch.float32)
    device = options_.pop("device", None)
    return_nfe = bool(options_.pop("return_nfe", False))
    grid_kind = grid if isinstance(grid, str) else None
    grid_opts = {k: options_.pop(k) for k in list(options_)
                 if grid_kind in grids.GRID_OPTIONS and k in grids.GRID_OPTIONS[grid_kind]}
    bad = sorted(set(options_) - set(own))
    if bad:
        raise PixdiffError(f"sampler {sampler!r} takes no option(s) {bad}; its options are {sorted(own)}, "
                           f"grid options {list(grids.GRID_OPTIONS.get(grid_kind, ()))}, and {list(_SAMPLE_OPTIONS)}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise PixdiffError(f"steps must be a positive integer (got {steps!r})")
    if not callable(denoiser):
        raise PixdiffError(f"denoiser must be callable as denoiser(z, logsnr, cond) (got {type(denoiser).__name__})")
    shape = tuple(int(s) for s in shape)
    counter = CountingDenoiser(denoiser, cond)
    _check_options(sampler, options_, counter)
    if grid_kind is None:
        logsnr = check_grid(grid)
        if steps is not None and steps != logsnr.numel() - 1:
            raise PixdiffError(f"steps={steps} disagrees with the explicit grid of {logsnr.numel() - 1} intervals")
    else:
        if schedule is None and spec.schedule_by_process:
            process = options_.get("process", own.get("process"))
            schedule = spec.schedule_by_process[process]
        elif schedule is None:
            schedule = spec.schedule
            if callable(schedule) and not isinstance(schedule, Schedule):
                schedule = schedule(shape)
        logsnr = grids.make(grid_kind, schedule, spec.steps if steps is None else steps, **grid_opts)
    check_generators(generator, shape[0])
    if noise is None:
        noise = randn(shape, generator, dtype=dtype, device=device)
    elif tuple(noise.shape) != shape:
        raise PixdiffError(f"noise has shape {tuple(noise.shape)}, expected {shape}")
    kwargs = dict(options_)
    if "generator" in inspect.signature(spec.fn).parameters:
        kwargs["generator"] = generator
    with torch.no_grad():
        x = spec.fn(counter, logsnr, noise, **kwargs)
    return Sampled(x, counter.nfe) if return_nfe else x
