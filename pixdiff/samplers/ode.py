"""Probability-flow ODE solvers: Euler and Heun in sigma-space (EDM), DPM-Solver-1/2/3 and
DPM-Solver++(2M) as exponential integrators in λ.

Sigma-space (Karras et al. 2022, Alg. 1 with σ(t) = t, s(t) = 1): x_σ = z/α = x + s ε solves

    dx_σ/ds = (x_σ − D(x_σ; s)) / s,        s = exp(−λ/2).

The steps take and return the VP state z (the samplers' one signature, see ``pixdiff.samplers``)
and do their arithmetic in x_σ = z/α_t, returning z_s = α_s x_σ'.

In the half-logSNR ℓ = λ/2 = log(α/σ) (DPM-Solver's "λ", Lu et al. 2022a) the VP state's ODE is
linear in z but for the network term, so its exact solution over a step h = ℓ_s − ℓ_t is (the
exponential integrator)

    z_s = (α_s/α_t) z_t − α_s ∫ e^{−ℓ} ε̂ dℓ          (noise form: DPM-Solver, Lu et al. 2022a)
    z_s = (σ_s/σ_t) z_t + σ_s ∫ e^{ℓ} x̂ dℓ            (data form: DPM-Solver++, Lu et al. 2022b)

and the solvers expand ε̂ or x̂ in ℓ. With ε̂ constant the first gives DDIM, z_s = (α_s/α_t) z_t −
σ_s (e^h − 1) ε̂; note h is *half* the logSNR step of this codebase's λ.

Every solver takes the step into λ = +∞ as x = x̂ (the limit of each first-order update; EDM's
"σ_{i+1} = 0" branch), so Heun costs 2N − 1 NFE on an EDM grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from pixdiff import process
from pixdiff.samplers.common import as_grid, counting, start, to_data

__all__ = ["euler_step", "heun_step", "euler", "heun", "dpm_solver_step", "dpm_solver", "dpmpp_2m_step",
           "dpmpp_2m"]

Denoise = Callable[[torch.Tensor, float], torch.Tensor]


# --- Karras et al. 2022, Algorithm 1 --------------------------------------------------------------------


def euler_step(z: torch.Tensor, x_hat: torch.Tensor, logsnr_t: float, logsnr_s: float,
               noise: torch.Tensor | None = None) -> torch.Tensor:
    """x_σ' = x_σ + (s_s − s_t) d with d = (x_σ − x̂)/s_t (Karras et al. 2022, Alg. 1 lines 4–5), on
    x_σ = z/α_t; returns α_s x_σ'. ``noise`` is unused (deterministic)."""
    a_t, _ = process.alpha_sigma_at(logsnr_t)
    a_s, _ = process.alpha_sigma_at(logsnr_s)
    s_t, s_s = process.sigma_at(logsnr_t), process.sigma_at(logsnr_s)
    x = z / a_t
    return a_s * (x + (s_s - s_t) * (x - x_hat) / s_t)


def heun_step(z: torch.Tensor, x_hat: torch.Tensor | None, logsnr_t: float, logsnr_s: float,
              noise: torch.Tensor | None = None, *, denoiser: Denoise) -> torch.Tensor:
    """Karras et al. 2022, Alg. 1 lines 4–8 (and Alg. 2 lines 7–11 from the raised level): an Euler
    step, then the trapezoidal correction unless s_s = 0 (λ_s = +∞). ``denoiser(z, λ)`` is the VP
    denoiser for the second evaluation; ``x_hat`` = D(z, λ_t), or None to evaluate it here."""
    if x_hat is None:
        x_hat = denoiser(z, logsnr_t)
    a_t, _ = process.alpha_sigma_at(logsnr_t)
    a_s, _ = process.alpha_sigma_at(logsnr_s)
    s_t, s_s = process.sigma_at(logsnr_t), process.sigma_at(logsnr_s)
    x = z / a_t
    d = (x - x_hat) / s_t
    x_next = x + (s_s - s_t) * d
    if s_s == 0.0:
        return x_next
    d_next = (x_next - denoiser(a_s * x_next, logsnr_s)) / s_s
    return a_s * (x + (s_s - s_t) * 0.5 * (d + d_next))


def euler(denoiser, logsnr, noise: torch.Tensor, *, cond=None) -> torch.Tensor:
    """Euler's method on the probability-flow ODE in sigma-space (Karras et al. 2022, Alg. 1 without
    the correction); it is DDIM η = 0 on the same grid (Song et al. 2021a, §4.3)."""
    D, lam = counting(denoiser, cond), as_grid(logsnr)
    z = start(noise, float(lam[0]))
    for lt, ls in zip(lam[:-1].tolist(), lam[1:].tolist()):
        z = euler_step(z, D(z, lt), lt, ls)
    return to_data(z, float(lam[-1]))


def heun(denoiser, logsnr, noise: torch.Tensor, *, cond=None) -> torch.Tensor:
    """EDM's deterministic sampler, Heun's 2nd-order method (Karras et al. 2022, Alg. 1, σ(t) = t,
    s(t) = 1), 2N − 1 NFE when the grid ends at σ = 0."""
    D, lam = counting(denoiser, cond), as_grid(logsnr)
    z = start(noise, float(lam[0]))
    for lt, ls in zip(lam[:-1].tolist(), lam[1:].tolist()):
        z = heun_step(z, None, lt, ls, denoiser=D)
    return to_data(z, float(lam[-1]))


# --- DPM-Solver (noise form, singlestep; Lu et al. 2022a) ----------------------------------------------


def _eps(z, x_hat, lam):
    a, s = process.alpha_sigma_at(lam)
    return (z - a * x_hat) / s


def dpm_solver_step(z: torch.Tensor, x_hat: torch.Tensor | None, logsnr_t: float, logsnr_s: float,
                    noise: torch.Tensor | None = None, *, denoiser: Denoise, order: int = 2) -> torch.Tensor:
    """One DPM-Solver-k step (Lu et al. 2022a, Algorithms 1–2 and DPM-Solver-3 with r₁ = 1/3,
    r₂ = 2/3). ``denoiser(z, λ)`` is the VP denoiser for the intermediate evaluations; ``x_hat`` =
    D(z, λ_t) or None; ε̂ = (z − α x̂)/σ; h = (λ_s − λ_t)/2. Costs ``order`` NFE (with x_hat).

        k=1: z_s = (α_s/α_t) z − σ_s (e^h − 1) ε_t                                (= DDIM η = 0)
        k=2: u = DPM-1 to λ_t + h/2;  z_s = DPM-1(z) − σ_s (e^h − 1)(ε(u) − ε_t)        (r₁ = ½)
        k=3: u₁ = DPM-1 to λ_t + h/3;  u₂ = DPM-1 to λ_t + 2h/3 − σ₂ (r₂/r₁)(φ(r₂h) − 1)(ε(u₁) − ε_t)
             z_s = DPM-1(z) − (σ_s/r₂)(φ(h) − 1)(ε(u₂) − ε_t),   φ(x) = (e^x − 1)/x
    """
    if x_hat is None:
        x_hat = denoiser(z, logsnr_t)
    if logsnr_s == math.inf:
        return x_hat
    a_t, _ = process.alpha_sigma_at(logsnr_t)
    H = logsnr_s - logsnr_t
    h = 0.5 * H  # the step in DPM-Solver's λ = log(α/σ)
    eps_t = _eps(z, x_hat, logsnr_t)

    def dpm1(frac):  # first-order update over the fraction ``frac`` of the step, and σ there
        a, s = process.alpha_sigma_at(logsnr_t + frac * H)
        return (a / a_t) * z - s * math.expm1(frac * h) * eps_t, s

    def eps_at(u, frac):
        lam = logsnr_t + frac * H
        return _eps(u, denoiser(u, lam), lam)

    z_s, s_s = dpm1(1.0)
    if order == 1:
        return z_s
    if order == 2:
        u, _ = dpm1(0.5)
        return z_s - s_s * math.expm1(h) * (eps_at(u, 0.5) - eps_t)
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    u1, _ = dpm1(r1)
    d1 = eps_at(u1, r1) - eps_t
    u2, s2 = dpm1(r2)
    u2 = u2 - s2 * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1.0) * d1
    d2 = eps_at(u2, r2) - eps_t
    return z_s - (s_s / r2) * (math.expm1(h) / h - 1.0) * d2


def dpm_solver(denoiser, logsnr, noise: torch.Tensor, *, order: int = 3, cond=None) -> torch.Tensor:
    """DPM-Solver-``order`` (1, 2 or 3), singlestep, one step per grid interval (Lu et al. 2022a).
    NFE = order · (intervals with finite end) + 1 for a final step to data."""
    D, lam = counting(denoiser, cond), as_grid(logsnr)
    z = start(noise, float(lam[0]))
    for lt, ls in zip(lam[:-1].tolist(), lam[1:].tolist()):
        z = dpm_solver_step(z, None, lt, ls, denoiser=D, order=order)
    return to_data(z, float(lam[-1]))


# --- DPM-Solver++(2M) (data form, multistep; Lu et al. 2022b) -------------------------------------------


def dpmpp_2m_step(z: torch.Tensor, x_hat: torch.Tensor, logsnr_t: float, logsnr_s: float,
                  noise: torch.Tensor | None = None, *, x_hat_prev: torch.Tensor | None = None,
                  logsnr_prev: float | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2): with h = (λ_s − λ_t)/2 and r = h_prev/h,
    D = (1 + 1/(2r)) x̂_t − 1/(2r) x̂_prev, then z_s = (σ_s/σ_t) z_t − α_s (e^{−h} − 1) D.
    The first step (no x̂_prev) and the step into λ = +∞ are first order (D = x̂_t)."""
    if logsnr_s == math.inf:
        return x_hat
    _, s_t = process.alpha_sigma_at(logsnr_t)
    a_s, s_s = process.alpha_sigma_at(logsnr_s)
    h = 0.5 * (logsnr_s - logsnr_t)  # DPM-Solver's λ = log(α/σ) is half this logSNR
    d = x_hat
    if x_hat_prev is not None:
        r = 0.5 * (logsnr_t - logsnr_prev) / h
        d = (1.0 + 0.5 / r) * x_hat - (0.5 / r) * x_hat_prev
    return (s_s / s_t) * z - a_s * math.expm1(-h) * d


def dpmpp_2m(denoiser, logsnr, noise: torch.Tensor, *, cond=None) -> torch.Tensor:
    """DPM-Solver++(2M): second-order multistep in the data prediction, one NFE per step (Lu et al.
    2022b, Alg. 2; as diffusers' DPMSolverMultistepScheduler with solver_order=2, midpoint form)."""
    D, lam = counting(denoiser, cond), as_grid(logsnr)
    z = start(noise, float(lam[0]))
    x_prev, l_prev = None, None
    for lt, ls in zip(lam[:-1].tolist(), lam[1:].tolist()):
        x_hat = D(z, lt)
        z = dpmpp_2m_step(z, x_hat, lt, ls, x_hat_prev=x_prev, logsnr_prev=l_prev)
        x_prev, l_prev = x_hat, lt
    return to_data(z, float(lam[-1]))
