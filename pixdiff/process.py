"""The variance-preserving forward process in logSNR, its posteriors, and the exact
conversions between the quantities a network can predict.

    z = α x + σ ε,   α² = sigmoid(λ),  σ² = sigmoid(−λ)         (seed 004 eq. 1)

Every coefficient is computed in float64 from λ and cast once to the data's dtype. ``logsnr`` is a
tensor of shape [B] (or a scalar) and broadcasts over the trailing dimensions of the data.

Sigma-space (VE / EDM, seed 003 "EDM"): a VP state z at λ is the EDM state x_σ = z / α with noise
level s = σ/α = exp(−λ/2); ``to_sigma_space`` / ``from_sigma_space`` convert.
"""

from __future__ import annotations

from pixdiff.errors import PixdiffError

from typing import Literal

import torch

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
    "edm_preconditioning",
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
    """(α, σ) in float64: α = sqrt(sigmoid(λ)), σ = sqrt(sigmoid(−λ)) (seed 004 §1.1)."""
    lam = _lam(logsnr)
    return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()


def diffuse(x: torch.Tensor, logsnr, eps: torch.Tensor) -> torch.Tensor:
    """z = α x + σ ε for given noise ε (seed 004 eq. 1)."""
    a, s = alpha_sigma(_lam(logsnr, x))
    return _b(a, x) * x + _b(s, x) * eps


def q_sample(x: torch.Tensor, logsnr, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw z ~ q(z_t | x); returns (z, ε)."""
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return diffuse(x, logsnr, eps), eps


def transition(logsnr_t, logsnr_s) -> tuple[torch.Tensor, torch.Tensor]:
    """q(z_t | z_s) = N(α_{t|s} z_s, σ²_{t|s}) for λ_s ≥ λ_t (seed 004 §1.1), with
    α_{t|s} = α_t/α_s and σ²_{t|s} = σ_t² − α²_{t|s} σ_s² (the seed drops the square on α_{t|s}).
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
    """q(z_s | z_t, x) = N(c_z z_t + c_x x, var) for s < t (seed 004 eq. 3; seed 001 for DDPM).

    With r = e^{λ_t − λ_s} ∈ (0, 1] (the seed's σ²_{t→s} and μ_{t→s} simplified):
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


# --- parameterisations (seed 001; seed 004: v = α ε − σ x) ----------------------------------------


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
    """∇_z log q(z_t) = −ε̂/σ = (α x̂ − z)/σ² (Tweedie; seed 003 "score matching")."""
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


# --- sigma-space and EDM preconditioning (seed 003, "EDM") ------------------------------------------


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


def edm_preconditioning(s, sigma_data: float = 0.5) -> tuple[torch.Tensor, ...]:
    """EDM's (c_skip, c_out, c_in, c_noise) at sigma-space noise level s (seed 003, EDM Table 1):
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
