"""Ancestral and implicit samplers in the VP state z: DDPM (fixed β / β̃ or IDDPM's learned
variance), DDIM with η, and SiD2's 'ddpm' sampler.

All three step from λ_t to λ_s > λ_t through the posterior q(z_s | z_t, x = x̂) (Hoogeboom et al.
2025 eq. 3; Ho et al. 2020 eqs. 6–7; Kingma et al. 2021), written in logSNR with
r = e^{λ_t − λ_s} (``process.posterior_coefficients``):

    mean = r α_s/α_t · z_t + (1 − r) α_s · x̂
    β̃   = σ²_{t→s} = (1 − r) σ_s²          (posterior variance, DDPM's "fixed small")
    β    = σ²_{t|s} = σ_t² − α²_{t|s} σ_s² = 1 − ᾱ_t/ᾱ_s   (forward variance, "fixed large";
           the SiD2 text as transcribed writes α_{t|s} without its square, a typo: q(z_t|z_s)
           has variance σ_t² − α_{t|s}² σ_s²)

On a sub-sequence τ of a discrete chain these are exactly IDDPM's respaced β_{S_t}, β̃_{S_t}
(Nichol & Dhariwal 2021, §4 "Improving sampling speed"), so one step serves every respacing. No
noise is added on the step into λ = +∞ (DDPM's last step t = 1 → 0, Ho et al. 2020 Alg. 2).

Classifier guidance: when the denoiser is a ``guidance.ClassifierGuidance``, ``ddpm`` and
``sid2_ddpm`` apply Dhariwal & Nichol 2021 Algorithm 1: μ and Σ come from the *unguided* model and
z_s ~ N(μ + s Σ ∇_{z_t} log p_φ(y | z_t), Σ), with Σ the variance the step actually draws with
(β̃, β, the learned interpolation, or SiD2's; 0 on the step into data, which draws nothing).
``ddim`` (and every ODE sampler) uses the wrapper as a denoiser, i.e. the x̂ shift, which is
Algorithm 2's ε̂ = ε_θ − σ s ∇ log p_φ.
"""

from __future__ import annotations

import math

import torch

from pixdiff import process
from pixdiff.errors import PixdiffError
from pixdiff.guidance import ClassifierGuidance
from pixdiff.samplers.common import (
    CountingDenoiser,
    Generators,
    as_grid,
    counting,
    randn_like,
    start,
    threshold,
    to_data,
)

__all__ = ["ddpm_step", "ddpm", "ddim_step", "ddim", "sid2_ddpm_step", "sid2_ddpm", "VARIANCES"]

VARIANCES = ("beta_tilde", "beta", "learned")


def ddpm_step(z: torch.Tensor, x_hat: torch.Tensor, logsnr_t: float, logsnr_s: float,
              noise: torch.Tensor | None = None, *, var_interp: float | torch.Tensor = 0.0,
              score_shift: torch.Tensor | None = None) -> torch.Tensor:
    """One draw from p(z_s | z_t) = N(μ, Σ), μ the posterior mean at x̂ and
    log Σ = f log β + (1 − f) log β̃ (Nichol & Dhariwal 2021, §3.1; f = ``var_interp``, a
    number or a per-element tensor: 0 is β̃, 1 is β).

    ``score_shift`` = s ∇_{z_t} log p_φ(y | z_t) applies Dhariwal & Nichol 2021 Alg. 1: the mean
    becomes μ + Σ · score_shift. ``noise`` None returns the (shifted) mean; the step into
    λ_s = +∞ returns x̂ (Σ = 0)."""
    cz, cx, post_var = process.posterior_coefficients_at(logsnr_t, logsnr_s)
    mean = cz * z + cx * x_hat
    if logsnr_s == math.inf:
        return mean
    _, beta = process.transition_at(logsnr_t, logsnr_s)
    f = var_interp
    logvar = f * math.log(beta) + (1.0 - f) * math.log(post_var)
    if torch.is_tensor(logvar):
        var, std = torch.exp(logvar), torch.exp(0.5 * logvar)
    else:
        var, std = math.exp(logvar), math.exp(0.5 * logvar)
    if score_shift is not None:
        mean = mean + var * score_shift
    return mean if noise is None else mean + std * noise


def _evaluate(D: CountingDenoiser, z: torch.Tensor, lt: float, f):
    """(x̂, f, score shift) for one ancestral step: f = "learned" asks the model for it."""
    cg = D.denoiser if isinstance(D.denoiser, ClassifierGuidance) else None
    if cg is None:
        if f == "learned":
            return (*D.predict(z, lt), None)
        return D(z, lt), f, None
    # Algorithm 1: the unguided model's μ_θ, Σ_θ, and the classifier's gradient at z_t.
    D.nfe += 1
    lam = D._lam(z, lt)
    if f == "learned":
        out = cg.model_predict(z, lam, D.cond)
        x_hat, f = out.x_hat.to(z.dtype), out.var_interp
    else:
        x_hat = cg.model_x(z, lam, D.cond).to(z.dtype)
    return x_hat, f, cg.score_shift(z, lam, D.cond)


def _ancestral(D: CountingDenoiser, lam: torch.Tensor, noise: torch.Tensor, var_interp, clip,
               generator: Generators) -> torch.Tensor:
    z = start(noise, float(lam[0]))
    for lt, ls in zip(lam[:-1].tolist(), lam[1:].tolist()):
        x_hat, f, shift = _evaluate(D, z, lt, var_interp)
        if f is None:
            raise PixdiffError("variance='learned' needs a denoiser whose predict() returns var_interp "
                               "(a Denoiser built with learn_sigma=True)")
        eps = randn_like(z, generator) if ls != math.inf else None
        z = ddpm_step(z, clip(x_hat), lt, ls, eps, var_interp=f, score_shift=shift)
    return to_data(z, float(lam[-1]))


def ddpm(denoiser, logsnr, noise: torch.Tensor, *, variance: str | None = None, clip_x: str | None = None,
         cond=None, generator: Generators = None) -> torch.Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) on the grid ``logsnr``, any respaced
    sub-sequence (Nichol & Dhariwal 2021, §4). ``variance``: 'beta_tilde' (σ² = β̃), 'beta'
    (σ² = β) or 'learned' (IDDPM's interpolation from ``denoiser.predict``); default 'learned'
    when the denoiser (or the guidance wrapper around it) has ``learn_sigma``, else 'beta_tilde'.
    A ``guidance.ClassifierGuidance`` denoiser is sampled by Dhariwal & Nichol 2021 Alg. 1."""
    D = counting(denoiser, cond)
    variance = variance or ("learned" if D.learn_sigma else "beta_tilde")
    f = {"beta_tilde": 0.0, "beta": 1.0, "learned": "learned"}[variance]
    return _ancestral(D, as_grid(logsnr), noise, f, threshold(clip_x), generator)


def sid2_ddpm_step(z: torch.Tensor, x_hat: torch.Tensor, logsnr_t: float, logsnr_s: float,
                   noise: torch.Tensor | None = None, *, gamma: float = 0.3,
                   score_shift: torch.Tensor | None = None) -> torch.Tensor:
    """SiD2's step (Hoogeboom et al. 2025, §1.1 below eq. 3): the posterior mean with standard
    deviation σ_{t→s}^γ σ_{t|s}^{1−γ}, i.e. log Σ = γ log β̃ + (1 − γ) log β (IDDPM's f = 1 − γ)."""
    return ddpm_step(z, x_hat, logsnr_t, logsnr_s, noise, var_interp=1.0 - gamma, score_shift=score_shift)


def sid2_ddpm(denoiser, logsnr, noise: torch.Tensor, *, gamma: float = 0.3, clip_x: str | None = "static",
              cond=None, generator: Generators = None) -> torch.Tensor:
    """SiD2's 'ddpm' sampler (Hoogeboom et al. 2025, §1.1 and App. A.4 "the important sampling
    settings": ``logvar_type = '0.3'``, ``clip_x = 'static'``): ancestral steps with the variance
    interpolated in log space between the posterior's σ²_{t→s} (weight γ) and the forward σ²_{t|s},
    x̂ clipped to [−1, 1].

    Defaults through ``sample``: the paper samples on its training schedule
    ``cosine_interpolated_low_32_high_512`` shifted for the image resolution, which ``sample``
    reads off the sample shape (``InterpolatedCosineSchedule(resolution=√(H·W))``; the plain cosine
    for non-image shapes), with ``num_steps = 512``; pixdiff's default is 256 steps (half the
    cost), pass ``steps=512`` for the paper's setting."""
    return _ancestral(counting(denoiser, cond), as_grid(logsnr), noise, 1.0 - float(gamma), threshold(clip_x),
                      generator)


def ddim_step(z: torch.Tensor, x_hat: torch.Tensor, logsnr_t: float, logsnr_s: float,
              noise: torch.Tensor | None = None, *, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2021a, eq. 12): z_s = α_s x̂ + sqrt(σ_s² − σ_η²) ε̂ + σ_η ξ with σ_η² = η² β̃
    (eq. 16: σ_{τ_i}(η) = η sqrt((1−ᾱ_{τ_{i−1}})/(1−ᾱ_{τ_i})) sqrt(1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}})
    = η sqrt(β̃)). η = 0 is deterministic; η = 1 is DDPM with β̃."""
    a_t, s_t = process.alpha_sigma_at(logsnr_t)
    a_s, s_s = process.alpha_sigma_at(logsnr_s)
    beta_tilde = process.posterior_coefficients_at(logsnr_t, logsnr_s)[2]
    eps_hat = (z - a_t * x_hat) / s_t
    var_eta = eta * eta * beta_tilde
    z_s = a_s * x_hat + math.sqrt(max(s_s * s_s - var_eta, 0.0)) * eps_hat
    if var_eta > 0.0 and noise is not None:
        z_s = z_s + math.sqrt(var_eta) * noise
    return z_s


def ddim(denoiser, logsnr, noise: torch.Tensor, *, eta: float = 0.0, clip_x: str | None = None, cond=None,
         generator: Generators = None) -> torch.Tensor:
    """DDIM on the sub-sequence τ given by the grid (Song et al. 2021a, §4.2 "Accelerated
    generation processes"). η ∈ [0, 1] scales the fresh noise; noise is drawn only where it is
    used (η > 0, λ_s finite)."""
    D, lam, clip, eta = counting(denoiser, cond), as_grid(logsnr), threshold(clip_x), float(eta)
    z = start(noise, float(lam[0]))
    for lt, ls in zip(lam[:-1].tolist(), lam[1:].tolist()):
        x_hat = clip(D(z, lt))
        xi = randn_like(z, generator) if eta > 0 and ls != math.inf else None
        z = ddim_step(z, x_hat, lt, ls, xi, eta=eta)
    return to_data(z, float(lam[-1]))
