"""Consistency distillation (Song et al. 2023, Alg. 2).

The discretisation t_1 = σ_min < … < t_N = σ_max (Karras et al. 2022, eq. 5, ρ = 7;
``common.karras_sigmas``; the paper's N = 18 for CIFAR-10), n ~ U{1, …, N−1}, x ~ data,
z ~ N(0, I):

    x_{t_{n+1}} = x + t_{n+1} z
    x̂_{t_n}     = one step of the teacher's probability-flow ODE from t_{n+1} to t_n: Heun's
                  (Karras et al. 2022, Alg. 1; the paper's choice) or Euler's (= DDIM, Song et al.
                  2021a) on dx/dt = (x − D_φ(x, t))/t
    L(θ, θ⁻)    = λ(t_n) d( f_θ(x_{t_{n+1}}, t_{n+1}),  f_θ⁻(x̂_{t_n}, t_n) ),   λ ≡ 1
    θ⁻          ← stopgrad(μ θ⁻ + (1 − μ) θ)                                 (the EMA target, μ = 0.95)

with the boundary parameterisation of §3 / App. C (``common.boundary_scalings``). d is the squared
L2 distance (mean over values, the paper's code's ``l2``) or, with ``loss=huber``, improved CT's
pseudo-Huber (Song & Dhariwal 2023, §3.3). The student starts from the teacher's weights when the
teacher is a network. It samples with ``pixdiff.samplers.consistency`` (Alg. 1).
"""

from __future__ import annotations

import math

import torch

from pixdiff.distill.common import (
    SIGMA_MAX,
    SIGMA_MIN,
    ConsistencyFunction,
    Method,
    copy_module,
    ema_update,
    karras_sigmas,
    mean_sq,
    pseudo_huber,
    sigma_denoiser,
)
from pixdiff.errors import PixdiffError

__all__ = ["ConsistencyDistillation", "teacher_ode_step", "cd_loss"]


def teacher_ode_step(D, x: torch.Tensor, s_from: torch.Tensor, s_to: torch.Tensor, solver: str = "heun") -> torch.Tensor:
    """One step of the PF-ODE dx/ds = (x − D(x, s))/s from s_from to s_to (per-sample levels):
    Euler (DDIM) or Heun (Karras et al. 2022, Alg. 1, lines 5–8)."""
    b = (-1,) + (1,) * (x.dim() - 1)
    sf, st = s_from.reshape(b).to(x.dtype), s_to.reshape(b).to(x.dtype)
    d = (x - D(x, s_from)) / sf
    x_euler = x + (st - sf) * d
    if solver == "euler":
        return x_euler
    d2 = (x_euler - D(x_euler, s_to)) / st
    return x + (st - sf) * 0.5 * (d + d2)


def cd_loss(f: ConsistencyFunction, f_target: ConsistencyFunction, D, x: torch.Tensor, z: torch.Tensor,
            n: torch.Tensor, sigmas: torch.Tensor, solver: str = "heun", distance=mean_sq, cond=None) -> torch.Tensor:
    """Per-example loss of Alg. 2 (λ ≡ 1): pairs (t_n, t_{n+1}) = (sigmas[n], sigmas[n + 1]), 0-based."""
    t_lo, t_hi = sigmas[n].to(x.device), sigmas[n + 1].to(x.device)
    b = (-1,) + (1,) * (x.dim() - 1)
    x_hi = x + t_hi.reshape(b).to(x.dtype) * z
    with torch.no_grad():
        x_lo = teacher_ode_step(D, x_hi, t_hi, t_lo, solver)
        target = f_target.sigma(x_lo, t_lo, cond)
    return distance(f.sigma(x_hi, t_hi, cond), target)


class ConsistencyDistillation(Method):
    name = "cd"
    sampler = "consistency"
    consistency = True
    OPTIONS = {"N": 18, "mu": 0.95, "solver": "heun", "loss": "l2", "sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX,
               "rho": 7.0}

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        o = self.opt
        if o["solver"] not in ("heun", "euler"):
            raise PixdiffError(f"cd: solver must be heun or euler (got {o['solver']!r})")
        if o["loss"] not in ("l2", "huber"):
            raise PixdiffError(f"cd: loss must be l2 or huber (got {o['loss']!r})")
        sd = self.teacher.student_config.loss.sigma_data
        self.f = ConsistencyFunction(self.student, o["sigma_min"], sd)
        self.target_den = copy_module(self.student)  # θ⁻, initialised to θ
        self.f_target = ConsistencyFunction(self.target_den, o["sigma_min"], sd)
        self.sigmas = karras_sigmas(int(o["N"]), o["sigma_min"], o["sigma_max"], o["rho"])
        c = 0.00054 * math.sqrt(math.prod(self.teacher.data_shape))
        self.distance = mean_sq if o["loss"] == "l2" else (lambda a, b: pseudo_huber(a, b, c))

    def model(self, den):
        return ConsistencyFunction(den, self.opt["sigma_min"], self.teacher.student_config.loss.sigma_data)

    def loss(self, step, x, cond, g):
        n = torch.randint(0, len(self.sigmas) - 1, (x.shape[0],), generator=g)
        z = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
        D = sigma_denoiser(self.teacher.denoise, cond)
        return cd_loss(self.f, self.f_target, D, x, z, n, self.sigmas, self.opt["solver"], self.distance, cond).mean()

    def after_step(self, step):
        target = self.target_den.state_dict(keep_vars=False)
        ema_update(target, self.student, float(self.opt["mu"]))

    def extra_tensors(self):
        return {f"target.{k}": v for k, v in self.target_den.state_dict().items()}

    def load_extra(self, tensors, state):
        self.target_den.load_state_dict({k[len("target."):]: v for k, v in tensors.items() if k.startswith("target.")})
