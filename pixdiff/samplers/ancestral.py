"""Ancestral and implicit samplers in the VP state z: DDPM (fixed β / β̃ or IDDPM's learned
variance), DDIM with η, and SiD2's 'ddpm' sampler.

All three step from λ_t to λ_s > λ_t through the posterior q(z_s | z_t, x = x̂) (seed 004 eq. 3;
seed 001 "reverse process"), written in logSNR with r = e^{λ_t − λ_s} (``process.posterior_coefficients``):

    mean = r α_s/α_t · z_t + (1 − r) α_s · x̂
    β̃   = σ²_{t→s} = (1 − r) σ_s²          (posterior variance, DDPM's "fixed small")
    β    = σ²_{t|s} = σ_t² − α²_{t|s} σ_s² = 1 − ᾱ_t/ᾱ_s   (forward variance, "fixed large";
           seed 004 writes α_{t|s} without its square, a typo: q(z_t|z_s) has variance
           σ_t² − α_{t|s}² σ_s²)

On a sub-sequence τ of a discrete chain these are exactly IDDPM's respaced β_{S_t}, β̃_{S_t}
(seed 000 "Speeding up sampling"), so one step serves every respacing. No noise is added on the
step into λ = +∞ (DDPM's last step t = 1 → 0, where β̃ = 0).
"""

from __future__ import annotations

from pixdiff.errors import PixdiffError

import math

import torch

from pixdiff.process import posterior_coefficients, transition
from pixdiff.samplers.common import (CountingDenoiser, Generators, check_eta, check_fraction, check_grid,
                                     coef, randn_like, start, threshold, to_data)

__all__ = ["ddpm_step", "ddpm", "ddim_step", "ddim", "sid2_ddpm_step", "sid2_ddpm"]

VARIANCES = ("beta_tilde", "beta", "learned")


def ddpm_step(z: torch.Tensor, x_hat: torch.Tensor, logsnr_t: float, logsnr_s: float,
              noise: torch.Tensor | None = None, var_interp: float | torch.Tensor = 0.0) -> torch.Tensor:
    """One draw from p(z_s | z_t) = N(mean, Σ) with log Σ = f log β + (1 − f) log β̃ (seed 000,
    IDDPM "learned reverse process variance"; f = ``var_interp``: 0 is β̃, 1 is β)."""
    cz, cx, post_var = (float(c) for c in posterior_coefficients(logsnr_t, logsnr_s))
    mean = cz * z + cx * x_hat
    if noise is None or logsnr_s == math.inf:
        return mean
    beta = float(transition(logsnr_t, logsnr_s)[1])
    f = var_interp
    logvar = f * math.log(beta) + (1.0 - f) * math.log(post_var)
    std = torch.exp(0.5 * logvar) if torch.is_tensor(logvar) else math.exp(0.5 * logvar)
    return mean + std * noise


def _ancestral(D: CountingDenoiser, lam: torch.Tensor, noise: torch.Tensor, var_interp, clip,
               generator: Generators) -> torch.Tensor:
    z = start(noise, float(lam[0]))
    for lt, ls in zip(lam[:-1].tolist(), lam[1:].tolist()):
        if var_interp == "learned":
            x_hat, f = D.predict(z, lt)
            if f is None:
                raise PixdiffError("variance='learned' needs a denoiser whose predict() returns var_interp "
                                 "(a Denoiser built with learn_sigma=True)")
        else:
            x_hat, f = D(z, lt), var_interp
        eps = randn_like(z, generator) if ls != math.inf else None
        z = ddpm_step(z, clip(x_hat), lt, ls, eps, f)
    return to_data(z, float(lam[-1]))


def ddpm(denoiser, logsnr, noise: torch.Tensor, *, variance: str | None = None, clip_x: str | None = None,
         cond=None, generator: Generators = None) -> torch.Tensor:
    """DDPM ancestral sampling (seed 001 "Algorithm 2 Sampling"; seed 003 DDPM Algorithm 2) on the grid
    ``logsnr``, any respaced sub-sequence (seed 000 IDDPM). ``variance``: 'beta_tilde' (σ² = β̃),
    'beta' (σ² = β) or 'learned' (IDDPM's interpolation from ``denoiser.predict``); default 'learned'
    when the denoiser was built with ``learn_sigma``, else 'beta_tilde'."""
    D = CountingDenoiser(denoiser, cond)
    variance = variance or ("learned" if D.learn_sigma else "beta_tilde")
    if variance not in VARIANCES:
        raise PixdiffError(f"variance must be one of {', '.join(VARIANCES)} (got {variance!r})")
    if variance == "learned" and not D.has_predict:
        raise PixdiffError("variance='learned' needs a denoiser whose predict() returns var_interp "
                         "(a Denoiser built with learn_sigma=True)")
    f = {"beta_tilde": 0.0, "beta": 1.0, "learned": "learned"}[variance]
    return _ancestral(D, check_grid(logsnr), noise, f, threshold(clip_x), generator)


def sid2_ddpm_step(z: torch.Tensor, x_hat: torch.Tensor, logsnr_t: float, logsnr_s: float,
                   noise: torch.Tensor | None = None, gamma: float = 0.3) -> torch.Tensor:
    """SiD2's step (seed 004 §1.1, eq. 3): the posterior mean with standard deviation
    σ_{t→s}^γ σ_{t|s}^{1−γ}, i.e. log Σ = γ log β̃ + (1 − γ) log β (IDDPM's f = 1 − γ)."""
    return ddpm_step(z, x_hat, logsnr_t, logsnr_s, noise, var_interp=1.0 - gamma)


def sid2_ddpm(denoiser, logsnr, noise: torch.Tensor, *, gamma: float = 0.3, clip_x: str | None = "static",
              cond=None, generator: Generators = None) -> torch.Tensor:
    """SiD2's 'ddpm' sampler (seed 004 §1.1 and Appendix sampling settings: ``logvar_type = '0.3'``,
    ``clip_x = 'static'``): ancestral steps with the variance interpolated in log space between the
    posterior's σ²_{t→s} (weight γ) and the forward σ²_{t|s}, x̂ clipped to [−1, 1]."""
    gamma = check_fraction(gamma, "gamma")
    return _ancestral(CountingDenoiser(denoiser, cond), check_grid(logsnr), noise, 1.0 - gamma,
                      threshold(clip_x), generator)


def ddim_step(z: torch.Tensor, x_hat: torch.Tensor, logsnr_t: float, logsnr_s: float,
              noise: torch.Tensor | None = None, eta: float = 0.0) -> torch.Tensor:
    """DDIM (seed 000 "DDIM sampling"; seed 001): z_s = α_s x̂ + sqrt(σ_s² − σ_η²) ε̂ + σ_η ξ with
    σ_η² = η² β̃ (seed 000's σ_{τ_i}(η) = η sqrt((1−ᾱ_{τ_{i−1}})/(1−ᾱ_{τ_i})) sqrt(1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}})
    = η sqrt(β̃)). η = 0 is deterministic; η = 1 is DDPM with β̃."""
    a_t, s_t = coef(logsnr_t)
    a_s, s_s = coef(logsnr_s)
    eps_hat = (z - a_t * x_hat) / s_t
    one_minus_r = -math.expm1(logsnr_t - logsnr_s)
    var_eta = eta * eta * one_minus_r * s_s * s_s
    z_s = a_s * x_hat + s_s * math.sqrt(max(1.0 - eta * eta * one_minus_r, 0.0)) * eps_hat
    if var_eta > 0.0 and noise is not None:
        z_s = z_s + math.sqrt(var_eta) * noise
    return z_s


def ddim(denoiser, logsnr, noise: torch.Tensor, *, eta: float = 0.0, clip_x: str | None = None, cond=None,
         generator: Generators = None) -> torch.Tensor:
    """DDIM on the sub-sequence τ given by the grid (seed 000 "Accelerated generation"; seed 001).
    η ∈ [0, 1] scales the fresh noise; noise is drawn only where it is used (η > 0, λ_s finite)."""
    eta = check_eta(eta)
    D, lam, clip = CountingDenoiser(denoiser, cond), check_grid(logsnr), threshold(clip_x)
    z = start(noise, float(lam[0]))
    for lt, ls in zip(lam[:-1].tolist(), lam[1:].tolist()):
        x_hat = clip(D(z, lt))
        xi = randn_like(z, generator) if eta > 0 and ls != math.inf else None
        z = ddim_step(z, x_hat, lt, ls, xi, eta)
    return to_data(z, float(lam[-1]))
