"""Samplers: turn a denoiser ``denoiser(z, logsnr, cond) -> x̂`` into samples.

    x = pixdiff.samplers.sample(denoiser, (16, 3, 32, 32), sampler="heun", steps=18,
                                generator=torch.Generator().manual_seed(0))
    x, nfe = pixdiff.samplers.sample(..., return_nfe=True)

Each sampler is a function ``fn(denoiser, logsnr, noise, *, <options>, cond, generator) -> x`` of a
logSNR grid (``grids``), the initial standard-normal noise ε and an explicit generator (or a list of
per-sample generators, see ``common.randn``); ``sample`` picks the sampler's default grid, draws ε,
validates the options and counts NFE. The families live in ``ancestral`` (ddpm, ddim, sid2_ddpm),
``ode`` (euler, heun, dpm_solver, dpmpp_2m), ``sde`` (edm, euler_maruyama, pc, langevin) and
``consistency``; each exports its single step as a pure function. docs/samplers.md has the table.
"""

from __future__ import annotations

from pixdiff.errors import PixdiffError

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import torch

from pixdiff.samplers import grids
from pixdiff.schedules import Schedule, VESchedule
from pixdiff.samplers.ancestral import ddim, ddim_step, ddpm, ddpm_step, sid2_ddpm, sid2_ddpm_step
from pixdiff.samplers.common import (CountingDenoiser, dynamic_threshold, generators, randn, static_threshold)
from pixdiff.samplers.consistency import consistency, consistency_step
from pixdiff.samplers.ode import (dpm_solver, dpm_solver_step, dpmpp_2m, dpmpp_2m_step, euler, euler_step, heun,
                                  heun_step)
from pixdiff.samplers.sde import edm, edm_step, euler_maruyama, langevin, langevin_step, pc, reverse_diffusion_step

__all__ = [
    "sample", "available", "get", "SamplerSpec", "Sampled", "grids", "CountingDenoiser", "generators", "randn",
    "static_threshold", "dynamic_threshold",
    "ddpm", "ddim", "sid2_ddpm", "euler", "heun", "edm", "dpm_solver", "dpmpp_2m", "euler_maruyama", "pc",
    "langevin", "consistency",
    "ddpm_step", "ddim_step", "sid2_ddpm_step", "euler_step", "heun_step", "edm_step", "dpm_solver_step",
    "dpmpp_2m_step", "reverse_diffusion_step", "langevin_step", "consistency_step",
]


@dataclass(frozen=True)
class SamplerSpec:
    """A registry entry: the function and the defaults ``sample`` uses for it."""

    fn: Callable[..., torch.Tensor]
    steps: int  # default number of grid intervals
    grid: str  # default grid kind (``grids.available()``)
    schedule: str | Schedule | None  # default schedule when none is given (None: the grid needs none)
    seed: str  # where the algorithm comes from
    schedule_by_process: dict[str, str] = field(default_factory=dict)  # SDE samplers: VE vs VP


_REGISTRY: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec(ddpm, 250, "uniform_t", "linear_discrete", "seed 001 Alg. 2; seed 000 IDDPM"),
    "ddim": SamplerSpec(ddim, 50, "uniform_t", "linear_discrete", "seed 000 DDIM recap; seed 001"),
    "sid2_ddpm": SamplerSpec(sid2_ddpm, 256, "uniform_t", "cosine", "seed 004 §1.1 eq. 3, App. settings"),
    "euler": SamplerSpec(euler, 100, "edm", None, "seed 003 EDM Alg. 1 (Euler)"),
    "heun": SamplerSpec(heun, 32, "edm", None, "seed 003 EDM Alg. 1"),
    "edm": SamplerSpec(edm, 64, "edm", None, "seed 003 EDM Alg. 2"),
    "dpm_solver": SamplerSpec(dpm_solver, 16, "edm", None, "seed 003 DPM-Solver (Lu et al. 2022)"),
    "dpmpp_2m": SamplerSpec(dpmpp_2m, 32, "edm", None, "seed 003 DPM-Solver (Lu et al. 2022b)"),
    "euler_maruyama": SamplerSpec(euler_maruyama, 500, "uniform_t", None, "seed 003 score SDE Alg. 2/3 predictor",
                                  {"ve": "ve", "vp": "vp"}),
    "pc": SamplerSpec(pc, 250, "uniform_t", None, "seed 003 score SDE Alg. 2/3", {"ve": "ve", "vp": "vp"}),
    # σ from 10 (≈ 5× the data's extent, NCSNv2's "largest pairwise distance" rule) to 0.01.
    "langevin": SamplerSpec(langevin, 20, "uniform_logsnr", VESchedule(0.01, 10.0), "seed 003 NCSN Alg. 1"),
    "consistency": SamplerSpec(consistency, 1, "edm", None, "seed 003 consistency models Alg. 1"),
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


def sample(denoiser, shape, sampler: str = "heun", steps: int | None = None, schedule=None, cond=None,
           generator=None, **options_):
    """Draw samples of ``shape`` = [B, ...] with ``sampler`` (see ``available()``).

    Args:
        denoiser: ``denoiser(z, logsnr, cond) -> x̂`` (the consistency sampler calls its f the same way).
        steps: grid intervals (default: the sampler's); NFE per step depends on the sampler.
        schedule: a name for ``pixdiff.schedules.get`` or a Schedule; sets the grid's λ range.
        generator: a ``torch.Generator`` or a list of B generators (per-sample noise).
        options: the sampler's own options (``options(name)``), grid options (``grid`` = a kind from
            ``grids.available()`` or an explicit increasing logSNR tensor; ``sigma_min``, ``sigma_max``,
            ``rho``, ``t_min``, ``t_max``), ``noise`` (the initial ε, else drawn), ``dtype`` (float32),
            ``device``, and ``return_nfe``.

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
    if grid_kind is None:
        logsnr = torch.as_tensor(grid, dtype=torch.float64).flatten()
        if steps is not None and steps != logsnr.numel() - 1:
            raise PixdiffError(f"steps={steps} disagrees with the explicit grid of {logsnr.numel() - 1} intervals")
    else:
        if schedule is None and spec.schedule_by_process:
            process = options_.get("process", own.get("process"))
            if process not in spec.schedule_by_process:
                raise PixdiffError(f"process must be one of {', '.join(spec.schedule_by_process)} (got {process!r})")
            schedule = spec.schedule_by_process[process]
        elif schedule is None:
            schedule = spec.schedule
        logsnr = grids.make(grid_kind, schedule, spec.steps if steps is None else steps, **grid_opts)
    shape = tuple(int(s) for s in shape)
    if noise is None:
        noise = randn(shape, generator, dtype=dtype, device=device)
    elif tuple(noise.shape) != shape:
        raise PixdiffError(f"noise has shape {tuple(noise.shape)}, expected {shape}")
    counter = CountingDenoiser(denoiser)
    kwargs = dict(options_, cond=cond)
    if "generator" in inspect.signature(spec.fn).parameters:
        kwargs["generator"] = generator
    with torch.no_grad():
        x = spec.fn(counter, logsnr, noise, **kwargs)
    return Sampled(x, counter.nfe) if return_nfe else x
