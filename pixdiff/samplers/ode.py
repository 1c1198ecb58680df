"""Probability-flow ODE solvers: Euler and Heun in sigma-space (EDM), DPM-Solver-1/2/3 and
DPM-Solver++(2M) as exponential integrators in λ.

Sigma-space (seed 003, EDM Algorithm 1 with σ(t) = t, s(t) = 1): x_σ = z/α = x + s ε solves

    dx_σ/ds = (x_σ − D(x_σ; s)) / s,        s = exp(−λ/2).

In the half-logSNR ℓ = λ/2 = log(α/σ) (DPM-Solver's "λ"; Lu et al. 2022, cited in seed 003
"DPM-Solver") the VP state's ODE is linear in z but for the network term, so its exact solution
over a step h = ℓ_s − ℓ_t is (the exponential integrator)

    z_s = (α_s/α_t) z_t − α_s ∫ e^{−ℓ} ε̂ dℓ          (noise form: DPM-Solver)
    z_s = (σ_s/σ_t) z_t + σ_s ∫ e^{ℓ} x̂ dℓ            (data form: DPM-Solver++)

and the solvers expand ε̂ or x̂ in ℓ. With ε̂ constant the first gives DDIM, z_s = (α_s/α_t) z_t −
σ_s (e^h − 1) ε̂; note h is *half* the logSNR step of this codebase's λ.

Every solver takes the step into λ = +∞ as x = x̂ (the limit of each first-order update; EDM's
"σ_{i+1} = 0" branch), so Heun costs 2N − 1 NFE on an EDM grid.
"""

from __future__ import annotations

from pixdiff.errors import PixdiffError

import math
from typing import Callable

import torch

from pixdiff.samplers.common import CountingDenoiser, check_grid, coef, sigma_space, start, to_data

__all__ = ["euler_step", "heun_step", "euler", "heun", "dpm_solver_step", "dpm_solver", "dpmpp_2m_step",
           "dpmpp_2m"]


# --- EDM Algorithm 1 (seed 003) ------------------------------------------------------------------------


def euler_step(x: torch.Tensor, x_hat: torch.Tensor, s: float, s_next: float) -> torch.Tensor:
    """x_{i+1} = x_i + (s_{i+1} − s_i) d_i with d_i = (x_i − D(x_i; s_i))/s_i (EDM Alg. 1 lines 4–5)."""
    return x + (s_next - s) * (x - x_hat) / s


def heun_step(D: Callable[[torch.Tensor, float], torch.Tensor], x: torch.Tensor, s: float, s_next: float,
              x_hat: torch.Tensor | None = None) -> torch.Tensor:
    """EDM Alg. 1 lines 4–8: an Euler step, then the trapezoidal correction unless s_{i+1} = 0.
    ``D(x_σ, s)`` is the sigma-space denoiser; ``x_hat`` may pass D(x, s) if already known."""
    d = (x - (D(x, s) if x_hat is None else x_hat)) / s
    x_next = x + (s_next - s) * d
    if s_next == 0.0:
        return x_next
    d_next = (x_next - D(x_next, s_next)) / s_next
    return x + (s_next - s) * 0.5 * (d + d_next)


def _sigma_loop(step, denoiser, logsnr, noise, cond):
    D, lam = CountingDenoiser(denoiser, cond), check_grid(logsnr)
    s = torch.exp(-0.5 * lam).tolist()  # s_N = 0 where λ_N = +∞
    Ds = sigma_space(D)
    x = noise * s[0]
    for s_i, s_next in zip(s[:-1], s[1:]):
        x = step(Ds, x, s_i, s_next)
    return x


def euler(denoiser, logsnr, noise: torch.Tensor, *, cond=None) -> torch.Tensor:
    """Euler's method on the probability-flow ODE in sigma-space (seed 003, EDM Algorithm 1 without
    the correction; seed 000 "continuous version of DDIM": this is DDIM η = 0 on the same grid)."""
    return _sigma_loop(lambda D, x, s, sn: euler_step(x, D(x, s), s, sn), denoiser, logsnr, noise, cond)


def heun(denoiser, logsnr, noise: torch.Tensor, *, cond=None) -> torch.Tensor:
    """EDM's deterministic sampler, Heun's 2nd-order method (seed 003, EDM Algorithm 1, σ(t) = t,
    s(t) = 1), 2N − 1 NFE when the grid ends at σ = 0."""
    return _sigma_loop(heun_step, denoiser, logsnr, noise, cond)


# --- DPM-Solver (noise form, singlestep) ---------------------------------------------------------------


def _eps(D, z, lam):
    a, s = coef(lam)
    return (z - a * D(z, lam)) / s


def dpm_solver_step(D: Callable[[torch.Tensor, float], torch.Tensor], z: torch.Tensor, logsnr_t: float,
                    logsnr_s: float, order: int = 2) -> torch.Tensor:
    """One DPM-Solver-k step (Lu et al. 2022, Algorithms 1–2 / DPM-Solver-3 with r₁ = 1/3, r₂ = 2/3;
    seed 003 "DPM-Solver"). ``D(z, λ)`` is the VP denoiser; ε̂ = (z − α x̂)/σ; h = (λ_s − λ_t)/2.
    Costs ``order`` NFE.

        k=1: z_s = (α_s/α_t) z − σ_s (e^h − 1) ε_t                                (= DDIM η = 0)
        k=2: u = DPM-1 to λ_t + h/2;  z_s = DPM-1(z) − σ_s (e^h − 1)(ε(u) − ε_t)        (r₁ = ½)
        k=3: u₁ = DPM-1 to λ_t + h/3;  u₂ = DPM-1 to λ_t + 2h/3 − σ₂ (r₂/r₁)(φ(r₂h) − 1)(ε(u₁) − ε_t)
             z_s = DPM-1(z) − (σ_s/r₂)(φ(h) − 1)(ε(u₂) − ε_t),   φ(x) = (e^x − 1)/x
    """
    if logsnr_s == math.inf:
        return D(z, logsnr_t)
    a_t, _ = coef(logsnr_t)
    H = logsnr_s - logsnr_t
    h = 0.5 * H  # the step in DPM-Solver's λ = log(α/σ)
    eps_t = _eps(D, z, logsnr_t)

    def dpm1(frac):  # first-order update over the fraction ``frac`` of the step, and σ there
        a, s = coef(logsnr_t + frac * H)
        return (a / a_t) * z - s * math.expm1(frac * h) * eps_t, s

    z_s, s_s = dpm1(1.0)
    if order == 1:
        return z_s
    if order == 2:
        u, _ = dpm1(0.5)
        return z_s - s_s * math.expm1(h) * (_eps(D, u, logsnr_t + 0.5 * H) - eps_t)
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    u1, _ = dpm1(r1)
    d1 = _eps(D, u1, logsnr_t + r1 * H) - eps_t
    u2, s2 = dpm1(r2)
    u2 = u2 - s2 * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1.0) * d1
    d2 = _eps(D, u2, logsnr_t + r2 * H) - eps_t
    return z_s - (s_s / r2) * (math.expm1(h) / h - 1.0) * d2


def dpm_solver(denoiser, logsnr, noise: torch.Tensor, *, order: int = 3, cond=None) -> torch.Tensor:
    """DPM-Solver-``order`` (1, 2 or 3), singlestep, one step per grid interval (seed 003 "DPM-Solver";
    Lu et al. 2022). NFE = order · (intervals with finite end) + 1 for a final step to data."""
    if order not in (1, 2, 3):
        raise PixdiffError(f"order must be 1, 2 or 3 (got {order!r})")
    D, lam = CountingDenoiser(denoiser, cond), check_grid(logsnr)
    z = start(noise, float(lam[0]))
    for lt, ls in zip(lam[:-1].tolist(), lam[1:].tolist()):
        z = dpm_solver_step(D, z, lt, ls, order)
    return to_data(z, float(lam[-1]))


# --- DPM-Solver++(2M) (data form, multistep) -----------------------------------------------------------


def dpmpp_2m_step(z: torch.Tensor, x_hat: torch.Tensor, x_hat_prev: torch.Tensor | None, logsnr_prev: float | None,
                  logsnr_t: float, logsnr_s: float) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2): with h = (λ_s − λ_t)/2 and r = h_prev/h,
    D = (1 + 1/(2r)) x̂_t − 1/(2r) x̂_prev, then z_s = (σ_s/σ_t) z_t − α_s (e^{−h} − 1) D.
    The first step (no x̂_prev) and the step into λ = +∞ are first order (D = x̂_t)."""
    if logsnr_s == math.inf:
        return x_hat
    _, s_t = coef(logsnr_t)
    a_s, s_s = coef(logsnr_s)
    h = 0.5 * (logsnr_s - logsnr_t)  # DPM-Solver's λ = log(α/σ) is half this logSNR
    d = x_hat
    if x_hat_prev is not None:
        r = 0.5 * (logsnr_t - logsnr_prev) / h
        d = (1.0 + 0.5 / r) * x_hat - (0.5 / r) * x_hat_prev
    return (s_s / s_t) * z - a_s * math.expm1(-h) * d


def dpmpp_2m(denoiser, logsnr, noise: torch.Tensor, *, cond=None) -> torch.Tensor:
    """DPM-Solver++(2M): second-order multistep in the data prediction, one NFE per step (seed 003
    "DPM-Solver"; Lu et al. 2022b, as diffusers' DPMSolverMultistepScheduler with solver_order=2,
    midpoint form)."""
    D, lam = CountingDenoiser(denoiser, cond), check_grid(logsnr)
    z = start(noise, float(lam[0]))
    x_prev, l_prev = None, None
    for lt, ls in zip(lam[:-1].tolist(), lam[1:].tolist()):
        x_hat = D(z, lt)
        z = dpmpp_2m_step(z, x_hat, x_prev, l_prev, lt, ls)
        x_prev, l_prev = x_hat, lt
    return to_data(z, float(lam[-1]))
