"""The variance-preserving forward process in logSNR, its posteriors, and the exact
conversions between the quantities a network can predict.

    z = α x + σ ε,   α² = sigmoid(λ),  σ² = sigmoid(−λ)
    (Hoogeboom et al. 2025, §1.1 eq. 1; Kingma et al. 2021)

Every coefficient is computed in float64 from λ and cast once to the data's dtype. ``logsnr`` is a
tensor of shape [B] (or a scalar) and broadcasts over the trailing dimensions of the data.

Sigma-space (VE / EDM, Karras et al. 2022 §2): a VP state z at λ is the EDM state x_σ = z / α with
noise level s = σ/α = exp(−λ/2); ``to_sigma_space`` / ``from_sigma_space`` convert, and
``sigma_from_logsnr`` / ``logsnr_from_sigma`` map the levels.

This module is the one place where λ ↔ (α, σ) ↔ s are written down. The tensor functions check
their input (NaN, the order of two levels); the ``*_at`` functions at the end are the same
relations for one Python-float λ, unchecked, for the samplers' inner loops (a sampling grid is
checked once, by ``pixdiff.samplers.sample``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from pixdiff.errors import PixdiffError

__all__ = [
    "Prediction",
    "alpha_sigma",
    "diffuse",
    "q_sample",
    "transition",
    "sample_transition",
    "posterior",
    "posterior_coefficients",
    "eps_from_x",
    "x_from_eps",
    "v_from_x",
    "x_from_v",
    "score_from_x",
    "x_from_score",
    "to_x",
    "from_x",
    "to_sigma_space",
    "from_sigma_space",
    "sigma_from_logsnr",
    "logsnr_from_sigma",
    "edm_preconditioning",
    "alpha_sigma_at",
    "sigma_at",
    "logsnr_at",
    "transition_at",
    "posterior_coefficients_at",
]

Prediction = Literal["eps", "x", "v", "score"]
PREDICTIONS = ("eps", "x", "v", "score")
_F64 = torch.float64


def _lam(logsnr, like: torch.Tensor | None = None) -> torch.Tensor:
    lam = torch.as_tensor(logsnr, dtype=_F64, device=None if like is None else like.device)
    if torch.isnan(lam).any():
        raise PixdiffError("logsnr contains NaN")
    return lam.to(_F64)


def _b(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Cast a float64 per-sample coefficient [B] (or scalar) to x's dtype, shaped to broadcast."""
    coef = coef.to(device=x.device)
    if coef.dim() == 0:
        return coef.to(x.dtype)
    if coef.shape[0] != x.shape[0]:
        raise PixdiffError(f"logsnr has {coef.shape[0]} entries but the batch has {x.shape[0]}")
    return coef.reshape(coef.shape[0], *([1] * (x.dim() - 1))).to(x.dtype)


def alpha_sigma(logsnr) -> tuple[torch.Tensor, torch.Tensor]:
    """(α, σ) in float64: α = sqrt(sigmoid(λ)), σ = sqrt(sigmoid(−λ)) (Hoogeboom et al. 2025 §1.1)."""
    lam = _lam(logsnr)
    return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()


def diffuse(x: torch.Tensor, logsnr, eps: torch.Tensor) -> torch.Tensor:
    """z = α x + σ ε for given noise ε (Hoogeboom et al. 2025 eq. 1)."""
    a, s = alpha_sigma(_lam(logsnr, x))
    return _b(a, x) * x + _b(s, x) * eps


def q_sample(x: torch.Tensor, logsnr, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw z ~ q(z_t | x); returns (z, ε)."""
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return diffuse(x, logsnr, eps), eps


def transition(logsnr_t, logsnr_s) -> tuple[torch.Tensor, torch.Tensor]:
    """q(z_t | z_s) = N(α_{t|s} z_s, σ²_{t|s}) for λ_s ≥ λ_t (Hoogeboom et al. 2025 §1.1; Kingma et
    al. 2021), with α_{t|s} = α_t/α_s and σ²_{t|s} = σ_t² − α²_{t|s} σ_s² (the SiD2 text as
    transcribed drops the square on α_{t|s}: q(z_t | z_s) has variance σ_t² − α²_{t|s} σ_s²).
    Written as σ²_{t|s} = σ_t² (1 − e^{λ_t − λ_s}) to keep precision when s ≈ t.
    Returns (α_{t|s}, σ²_{t|s}) in float64."""
    lt, ls = _lam(logsnr_t), _lam(logsnr_s)
    if (lt > ls).any():
        raise PixdiffError("transition q(z_t | z_s) needs logsnr_t <= logsnr_s (t later than s)")
    at, st = alpha_sigma(lt)
    as_, _ = alpha_sigma(ls)
    return at / as_, st**2 * -torch.expm1(lt - ls)


def sample_transition(z_s: torch.Tensor, logsnr_t, logsnr_s, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw z_t ~ q(z_t | z_s)."""
    a, var = transition(logsnr_t, logsnr_s)
    noise = torch.randn(z_s.shape, generator=generator, dtype=z_s.dtype, device=z_s.device)
    return _b(a, z_s) * z_s + _b(var.sqrt(), z_s) * noise


def posterior_coefficients(logsnr_t, logsnr_s) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q(z_s | z_t, x) = N(c_z z_t + c_x x, var) for s < t (Hoogeboom et al. 2025 eq. 3; Kingma et
    al. 2021; Ho et al. 2020 eq. 7 for DDPM).

    With r = e^{λ_t − λ_s} ∈ (0, 1] (SiD2's σ²_{t→s} and μ_{t→s} simplified):
        c_z = r α_s / α_t,   c_x = (1 − r) α_s,   var = (1 − r) σ_s².
    On a discrete chain this is DDPM's μ̃ and β̃ = (1 − ᾱ_{t−1})/(1 − ᾱ_t) β_t."""
    lt, ls = _lam(logsnr_t), _lam(logsnr_s)
    if (lt > ls).any():
        raise PixdiffError("posterior q(z_s | z_t, x) needs logsnr_s >= logsnr_t (s earlier than t)")
    at, _ = alpha_sigma(lt)
    as_, ss = alpha_sigma(ls)
    one_minus_r = -torch.expm1(lt - ls)
    r = 1.0 - one_minus_r
    return r * as_ / at, one_minus_r * as_, one_minus_r * ss**2


def posterior(z_t: torch.Tensor, x: torch.Tensor, logsnr_t, logsnr_s) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of q(z_s | z_t, x); the variance is float64 of shape [B] or []."""
    cz, cx, var = posterior_coefficients(logsnr_t, logsnr_s)
    return _b(cz, z_t) * z_t + _b(cx, x) * x, var


# --- parameterisations (Ho et al. 2020: ε; Hoogeboom et al. 2025: v = α ε − σ x) --------------------


def eps_from_x(z, x_hat, logsnr):
    a, s = alpha_sigma(_lam(logsnr, z))
    return (z - _b(a, z) * x_hat) / _b(s, z)


def x_from_eps(z, eps_hat, logsnr):
    a, s = alpha_sigma(_lam(logsnr, z))
    return (z - _b(s, z) * eps_hat) / _b(a, z)


def v_from_x(z, x_hat, logsnr):
    # v = α ε − σ x with ε = (z − α x)/σ  ⇒  v = (α z − x)/σ  (α² + σ² = 1)
    a, s = alpha_sigma(_lam(logsnr, z))
    return (_b(a, z) * z - x_hat) / _b(s, z)


def x_from_v(z, v_hat, logsnr):
    # α z − σ v = α² x + ασ ε − σα ε + σ² x = x
    a, s = alpha_sigma(_lam(logsnr, z))
    return _b(a, z) * z - _b(s, z) * v_hat


def score_from_x(z, x_hat, logsnr):
    """∇_z log q(z_t) = −ε̂/σ = (α x̂ − z)/σ² (Tweedie; Song et al. 2021b §3)."""
    a, s = alpha_sigma(_lam(logsnr, z))
    return (_b(a, z) * x_hat - z) / _b(s * s, z)


def x_from_score(z, score, logsnr):
    a, s = alpha_sigma(_lam(logsnr, z))
    return (z + _b(s * s, z) * score) / _b(a, z)


_TO_X = {"x": lambda z, p, l: p, "eps": x_from_eps, "v": x_from_v, "score": x_from_score}
_FROM_X = {"x": lambda z, x, l: x, "eps": eps_from_x, "v": v_from_x, "score": score_from_x}


def to_x(pred: torch.Tensor, kind: Prediction, z: torch.Tensor, logsnr) -> torch.Tensor:
    """x̂ from a prediction of ``kind`` ∈ {eps, x, v, score}."""
    if kind not in _TO_X:
        raise PixdiffError(f"unknown prediction kind {kind!r}; choose from {', '.join(PREDICTIONS)}")
    return _TO_X[kind](z, pred, logsnr)


def from_x(x_hat: torch.Tensor, kind: Prediction, z: torch.Tensor, logsnr) -> torch.Tensor:
    """The prediction of ``kind`` that corresponds to x̂."""
    if kind not in _FROM_X:
        raise PixdiffError(f"unknown prediction kind {kind!r}; choose from {', '.join(PREDICTIONS)}")
    return _FROM_X[kind](z, x_hat, logsnr)


# --- sigma-space and EDM preconditioning (Karras et al. 2022) ----------------------------------------


def to_sigma_space(z: torch.Tensor, logsnr) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_σ, s): the VE/EDM view x_σ = z/α = x + s ε with s = exp(−λ/2) (float64)."""
    lam = _lam(logsnr, z)
    a, _ = alpha_sigma(lam)
    return z / _b(a, z), torch.exp(-0.5 * lam)


def from_sigma_space(x_sigma: torch.Tensor, s) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, λ) from an EDM state x + s ε: α = 1/sqrt(1 + s²), λ = −2 log s."""
    s = torch.as_tensor(s, dtype=_F64, device=x_sigma.device)
    if (s < 0).any() or torch.isnan(s).any():
        raise PixdiffError("sigma must be a non-negative number")
    a = torch.rsqrt(1.0 + s * s)
    return x_sigma * _b(a, x_sigma), -2.0 * torch.log(s)


def sigma_from_logsnr(logsnr) -> torch.Tensor:
    """s = σ/α = exp(−λ/2), the sigma-space noise level of a VP state at λ (0 at λ = +∞)."""
    return torch.exp(-0.5 * _lam(logsnr))


def logsnr_from_sigma(sigma) -> torch.Tensor:
    """λ = −2 log s for a sigma-space (VE / EDM) noise level s ≥ 0 (+∞ at s = 0)."""
    s = torch.as_tensor(sigma, dtype=_F64)
    if torch.isnan(s).any():
        raise PixdiffError("sigma contains NaN")
    if (s < 0).any():
        raise PixdiffError(f"sigma must be non-negative (got {s[s < 0].flatten()[0].item()})")
    return -2.0 * torch.log(s)


def edm_preconditioning(s, sigma_data: float = 0.5) -> tuple[torch.Tensor, ...]:
    """EDM's (c_skip, c_out, c_in, c_noise) at sigma-space noise level s (Karras et al. 2022, Table 1):
    c_skip = σ_d²/(s² + σ_d²), c_out = s σ_d / sqrt(s² + σ_d²), c_in = 1/sqrt(s² + σ_d²),
    c_noise = ln(s)/4. D(x_σ) = c_skip x_σ + c_out F(c_in x_σ, c_noise)."""
    s = torch.as_tensor(s, dtype=_F64)
    if (s < 0).any():
        raise PixdiffError("sigma must be non-negative")
    if sigma_data <= 0:
        raise PixdiffError(f"sigma_data must be positive (got {sigma_data})")
    d2 = sigma_data**2
    norm = torch.sqrt(s * s + d2)
    return d2 / (s * s + d2), s * sigma_data / norm, 1.0 / norm, 0.25 * torch.log(s)


# --- one λ at a time: the samplers' inner loops ------------------------------------------------------
# The relations above for a Python float λ (float64 arithmetic), without checks: a sampling grid is
# validated once, at ``pixdiff.samplers.sample``. λ = +∞ (clean data) gives α = 1, σ = 0, s = 0.


def alpha_sigma_at(logsnr: float) -> tuple[float, float]:
    """(α, σ) at one λ: α² = sigmoid(λ), σ² = sigmoid(−λ), each from the exponential that cannot
    overflow."""
    if logsnr >= 0.0:
        e = math.exp(-logsnr)  # in [0, 1]
        return 1.0 / math.sqrt(1.0 + e), math.sqrt(e / (1.0 + e))
    e = math.exp(logsnr)
    return math.sqrt(e / (1.0 + e)), 1.0 / math.sqrt(1.0 + e)


def sigma_at(logsnr: float) -> float:
    """Sigma-space noise level s = σ/α = exp(−λ/2) at one λ (0 at λ = +∞)."""
    return math.exp(-0.5 * logsnr)


def logsnr_at(sigma: float) -> float:
    """λ = −2 log s at one sigma-space level s (+∞ at s = 0)."""
    return math.inf if sigma == 0.0 else -2.0 * math.log(sigma)


def transition_at(logsnr_t: float, logsnr_s: float) -> tuple[float, float]:
    """(α_{t|s}, σ²_{t|s}) of q(z_t | z_s) for λ_t ≤ λ_s, as ``transition``."""
    a_t, s_t = alpha_sigma_at(logsnr_t)
    a_s, _ = alpha_sigma_at(logsnr_s)
    return a_t / a_s, s_t * s_t * -math.expm1(logsnr_t - logsnr_s)


def posterior_coefficients_at(logsnr_t: float, logsnr_s: float) -> tuple[float, float, float]:
    """(c_z, c_x, var) of q(z_s | z_t, x) for λ_t ≤ λ_s, as ``posterior_coefficients``; at
    λ_s = +∞ they are (0, 1, 0): the step into data returns x."""
    a_t, _ = alpha_sigma_at(logsnr_t)
    a_s, s_s = alpha_sigma_at(logsnr_s)
    one_minus_r = -math.expm1(logsnr_t - logsnr_s)
    r = 1.0 - one_minus_r
    return r * a_s / a_t, one_minus_r * a_s, one_minus_r * s_s * s_s
