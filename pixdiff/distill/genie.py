"""GENIE: a distilled derivative head and its second-order Taylor sampler (Dockhorn, Vahdat &
Kreis 2022, "GENIE: Higher-order denoising diffusion solvers").

DDIM is Euler's method on the probability-flow ODE written as dx̄/dγ = ε_θ(x̄, γ) with x̄ = x/α and
γ = σ/α (GENIE §3, eq. 6); in pixdiff's sigma space x̄ = x_σ, γ = s and ε(x_σ, s) = (x_σ − D(x_σ, s))/s.
The second-order truncated Taylor method TTM-2 (GENIE eq. 8) adds the next term:

    x_σ(s_{n+1}) = x_σ(s_n) + h ε(x_σ, s_n) + ½ h² d_s ε(x_σ, s_n),     h = s_{n+1} − s_n,
    d_s ε = ∂ε/∂x_σ · ε + ∂ε/∂s                                          (GENIE eq. 9, total derivative
                                                                           along the ODE)

Computing d_s ε needs a Jacobian-vector product through the network at every step; GENIE distils
it into a small head k_ψ(x_σ, s) ≈ d_s ε trained on the forward process of the data (GENIE §3.2,
eq. 13): L(ψ) = E_{t, x} w(t) ‖k_ψ(x_t, t) − d_s ε_θ(x_t, t)‖², the target by automatic
differentiation (``ode_derivative``; a JVP with tangent (ε, 1)). Here the head is a separate
network of the teacher's architecture (an MLP for the toys; GENIE's shares the teacher U-Net's
last features) that outputs u with k_ψ = u / s, and w = s²/(1 + s²) on ‖u − s d_s ε‖² (the error
½ h² (k_ψ − d_s ε) a step makes, with h ∝ s on a geometric grid, relative to the state's scale
sqrt(1 + s²)): that weighting is this module's choice, stated, not GENIE's. t ~ U(0, 1] on the
cosine schedule.

A GENIE run holds the head; the teacher (a run folder or a toy's exact denoiser) is named in its
meta and loaded with it. ``pixdiff sample --ckpt RUN`` uses TTM-2 on the EDM grid (Karras et al.
2022, eq. 5; ``grids.make("edm")``; ``pixdiff distill --method genie --option grid=exponential --option
sigma_min=…`` makes another the run's default, ``--option afs=true`` adds GENIE's analytical first
step; ``Pipeline.sample(..., grid=…, afs=…)`` overrides them), one teacher and one head evaluation per step; any other ``--sampler``
samples the teacher alone.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pixdiff import process
from pixdiff.distill.common import Method, load_teacher, sigma_denoiser
from pixdiff.errors import PixdiffError
from pixdiff.generate import Pipeline

__all__ = ["GenieDistillation", "ode_derivative", "ttm2_step", "genie_sample", "analytic_eps", "genie_pipeline", "load_genie", "GeniePipeline"]


def _bc(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return c.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


def ode_derivative(D, x_sigma: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε, d_s ε) at (x_σ, s) along the PF-ODE dx_σ/ds = ε = (x_σ − D(x_σ, s))/s: the total derivative
    ∂ε/∂x_σ · ε + ∂ε/∂s as one Jacobian-vector product with tangent (ε, 1) (GENIE eq. 9)."""
    s = torch.as_tensor(s, dtype=torch.float64, device=x_sigma.device).expand(x_sigma.shape[0]).clone()

    def eps_fn(x, sv):
        return (x - D(x, sv)) / _bc(sv, x)

    with torch.no_grad():
        eps = eps_fn(x_sigma, s)
    _, jv = torch.autograd.functional.jvp(eps_fn, (x_sigma.detach(), s), (eps, torch.ones_like(s)))
    return eps, jv.detach()


def ttm2_step(x_sigma: torch.Tensor, eps: torch.Tensor, k: torch.Tensor, s_from: float, s_to: float) -> torch.Tensor:
    """TTM-2 (GENIE eq. 8): x + h ε + ½ h² k, h = s_to − s_from."""
    h = s_to - s_from
    return x_sigma + h * eps + 0.5 * h * h * k


def head_derivative(head, x_sigma: torch.Tensor, s, cond=None) -> torch.Tensor:
    """k_ψ(x_σ, s) = u/s with u = head(z, λ, cond) on the VP state z = x_σ/sqrt(1 + s²)."""
    s = torch.as_tensor(s, dtype=torch.float64, device=x_sigma.device).expand(x_sigma.shape[0])
    z = x_sigma / _bc(torch.sqrt(1.0 + s * s), x_sigma)
    p = next(head.parameters())
    u = head(z.to(p.dtype), (-2.0 * torch.log(s)).to(p.dtype), cond).to(x_sigma.dtype)
    return u / _bc(s, x_sigma)


GRID_OPTIONS = ("grid", "sigma_min", "sigma_max", "rho", "afs", "sigma_data")


def analytic_eps(x_sigma: torch.Tensor, s: float, sigma_data: float) -> torch.Tensor:
    """ε of data ~ N(0, σ_d² I), whose denoiser is D = σ_d² x_σ/(σ_d² + s²): ε = (x_σ − D)/s = s x_σ/(σ_d² + s²).
    GENIE's analytical first step (Dockhorn et al. 2022, §3.3, "AFS") uses it in place of the network at
    σ_max, where every data distribution looks Gaussian, and saves that step's evaluation."""
    return x_sigma * (s / (sigma_data * sigma_data + s * s))


@torch.no_grad()
def genie_sample(teacher, head, noise: torch.Tensor, steps: int, cond=None, grid: str = "edm", afs: bool = False,
                 sigma_data: float = 0.5, **grid_options) -> torch.Tensor:
    """TTM-2 sampling from s_0 = σ_max to 0 in ``steps`` steps on the grid ``grid`` (any
    ``pixdiff.samplers.grids`` kind with its options, e.g. ``exponential`` with ``sigma_min``; default
    EDM's ρ = 7 grid). Each step costs one teacher and one head evaluation; with ``afs`` the first
    step is a DDIM step with the analytic ε (``analytic_eps``) and costs none."""
    from pixdiff.samplers import grids

    lam = grids.make(grid, None, steps, **grid_options)
    s = [process.sigma_at(float(v)) if math.isfinite(float(v)) else 0.0 for v in lam.tolist()]
    D = sigma_denoiser(teacher, cond)
    x = noise * s[0]
    for i, (s_from, s_to) in enumerate(zip(s[:-1], s[1:])):
        if i == 0 and afs:
            x = x + (s_to - s_from) * analytic_eps(x, s_from, sigma_data)
            continue
        sf = torch.full((x.shape[0],), s_from, dtype=torch.float64, device=x.device)
        eps = (x - D(x, sf)) / s_from
        k = head_derivative(head, x, sf, cond)
        x = ttm2_step(x, eps, k, s_from, s_to)
    return x


class GenieDistillation(Method):
    name = "genie"
    sampler = "genie"
    run_kind = "genie"  # RUN_KINDS["genie"]: load_genie
    # how the run samples by default (``genie_sample``'s grid options); training does not use them
    OPTIONS: dict = {"grid": "edm", "sigma_min": 0.002, "afs": False}

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.head = self.student.net  # a teacher run's head starts from the teacher's weights (a warm start)
        from pixdiff.samplers import grids

        grids.make(str(self.opt["grid"]), None, 2, sigma_min=float(self.opt["sigma_min"]))  # refuse a bad grid now

    def loss(self, step, x, cond, g):
        t = 1.0 - torch.rand(x.shape[0], generator=g, dtype=torch.float64)
        from pixdiff.distill.common import cosine_logsnr

        lam = cosine_logsnr(t).to(x.device)
        eps_n = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
        z = process.diffuse(x, lam, eps_n)
        x_sigma, s = process.to_sigma_space(z, lam)
        D = sigma_denoiser(self.teacher.denoise, cond)
        _, target = ode_derivative(D, x_sigma, s)
        u = head_derivative(self.head, x_sigma, s, cond) * _bc(s, x_sigma)
        w = (s * s / (1.0 + s * s)).to(x.dtype)
        err = (u - _bc(s, x_sigma) * target.to(x.dtype)).reshape(x.shape[0], -1).pow(2).sum(1)
        return (w * err).mean()

    def meta(self):
        sampling = {"grid": str(self.opt["grid"]), "sigma_min": float(self.opt["sigma_min"]),
                    "afs": self.opt["afs"] in (True, "true", "True", "1", 1)}
        return {**super().meta(), "genie_teacher": str(self.cfg.teacher), "genie_sampling": sampling}


class GeniePipeline(Pipeline):
    """The teacher sampled with TTM-2 and the distilled head (``sampler`` None or "genie"), or alone
    with any pixdiff sampler."""

    head: object = None
    teacher_denoise: object = None

    def sample(self, n, classes=None, sampler=None, steps=None, guidance=0.0, seed=0, batch=None, *,
               guidance_interval=None, classifier=None, guide_ckpt=None, progress=False, distributed=None,
               **options):
        from pixdiff import data as data_mod
        from pixdiff.generate import _labels_for

        if sampler not in (None, "genie"):
            return Pipeline(self.teacher_denoise, self.config, self.checkpoint, self.weights, self.device,
                            {k: v for k, v in self.meta.items() if k not in ("sampler", "steps")}).sample(
                n, classes, sampler, steps, guidance, seed, batch, guidance_interval=guidance_interval,
                classifier=classifier, guide_ckpt=guide_ckpt, progress=progress, distributed=distributed,
                **options)
        if guidance or classifier is not None or guide_ckpt is not None or guidance_interval is not None:
            raise PixdiffError("the GENIE sampler runs unguided (name another --sampler to sample the teacher "
                               "with guidance)")
        unknown = sorted(set(options) - set(GRID_OPTIONS))
        if unknown:
            raise PixdiffError(f"the GENIE sampler takes the options {', '.join(GRID_OPTIONS)} (got {unknown})")
        steps = int(self.meta.get("steps", 4) if steps is None else steps)
        batch = batch or 256
        labels = _labels_for(n, classes, self.num_classes)
        shape = self.data_shape
        out = []
        for lo in range(0, n, batch):
            hi = min(n, lo + batch)
            noise = torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed + i))
                               for i in range(lo, hi)]).to(self.device)
            cond = None if labels is None else labels[lo:hi].to(self.device)
            opts = {**self.meta.get("genie_sampling", {}), **options}  # the run's defaults, then the caller's
            out.append(genie_sample(self.teacher_denoise, self.head, noise, steps, cond, **opts).float().cpu())
        x = torch.cat(out)
        lab = None if labels is None else labels.numpy()
        if len(shape) == 1:  # 2-D points: not clipped
            return x.numpy().astype(np.float32), lab
        return data_mod.to_uint8(x.clamp(-1, 1)), lab

    def points(self, n: int, steps: int | None = None, seed: int = 0, sampler: str | None = None,
               **options) -> torch.Tensor:
        """n unconditional 2-D samples, unclipped (as ``DistilledPipeline.points``); ``options`` as
        ``genie_sample``'s."""
        if sampler not in (None, "genie"):
            from pixdiff.distill.common import DistilledPipeline

            return DistilledPipeline(self.teacher_denoise, self.config, self.checkpoint, self.weights, self.device,
                                     {k: v for k, v in self.meta.items() if k not in ("sampler", "steps", "method")}
                                     ).points(n, steps, seed, sampler)
        return torch.from_numpy(self.sample(n, None, None, steps, 0.0, seed, n, **options)[0])


def load_genie(ck, device, weights: str = "ema") -> GeniePipeline:
    """``pixdiff.generate.RUN_KINDS["genie"]``: the head of a GENIE run beside its teacher."""
    from pixdiff.config import TrainConfig
    from pixdiff.generate import load_denoiser

    den, ck = load_denoiser(ck.path, weights, device, checkpoint=ck)
    return genie_pipeline(ck, den, TrainConfig.from_dict(ck.state["config"]), device, weights)


def genie_pipeline(ck, den, cfg, device, weights) -> GeniePipeline:
    meta = dict(ck.state["meta"])
    teacher = load_teacher(meta["genie_teacher"], None, device)
    p = GeniePipeline(den, cfg, ck.path, weights, device, meta)
    p.head = den.net.eval()
    p.teacher_denoise = teacher.denoise
    return p
