"""Stochastic samplers: EDM's stochastic sampler (Algorithm 2), the reverse-SDE predictor
(Euler–Maruyama / reverse diffusion, VE and VP), predictor–corrector with a Langevin corrector, and
NCSN's annealed Langevin dynamics (seed 003).

Scores come from the one denoiser interface by Tweedie (``process.score_from_x``):
∇_z log q(z) = (α x̂ − z)/σ² in VP, ∇ log p(x_σ) = (x̂ − x_σ)/s² in sigma-space (VE, x_σ = z/α).
"""

from __future__ import annotations

from pixdiff.errors import PixdiffError

import math
from typing import Callable

import torch

from pixdiff.samplers.common import (CountingDenoiser, Generators, check_grid, coef, randn_like, sigma_space,
                                     start, to_data)

__all__ = ["edm_step", "edm", "reverse_diffusion_step", "euler_maruyama", "langevin_step", "pc", "langevin",
           "PROCESSES"]

PROCESSES = ("ve", "vp")


# --- EDM Algorithm 2 -------------------------------------------------------------------------------------


def edm_step(D: Callable[[torch.Tensor, float], torch.Tensor], x: torch.Tensor, s: float, s_next: float,
             gamma: float, noise: torch.Tensor | None, S_noise: float = 1.0) -> torch.Tensor:
    """EDM Algorithm 2 lines 4–11 (seed 003): raise the noise level to ŝ = s(1 + γ) by adding
    fresh noise of std sqrt(ŝ² − s²) S_noise, then one Heun step from ŝ to s_next."""
    s_hat = s * (1.0 + gamma)
    x_hat = x if gamma == 0.0 else x + math.sqrt(s_hat * s_hat - s * s) * S_noise * noise
    d = (x_hat - D(x_hat, s_hat)) / s_hat
    x_next = x_hat + (s_next - s_hat) * d
    if s_next == 0.0:
        return x_next
    d_next = (x_next - D(x_next, s_next)) / s_next
    return x_hat + (s_next - s_hat) * 0.5 * (d + d_next)


def edm(denoiser, logsnr, noise: torch.Tensor, *, S_churn: float = 40.0, S_tmin: float = 0.05,
        S_tmax: float = 50.0, S_noise: float = 1.0, cond=None, generator: Generators = None) -> torch.Tensor:
    """EDM's stochastic sampler (seed 003, EDM Algorithm 2; σ(t) = t, s(t) = 1):
    γ_i = min(S_churn/N, √2 − 1) where s_i ∈ [S_tmin, S_tmax], else 0. Defaults are EDM's ImageNet
    settings except S_noise = 1 (EDM's 1.003 compensates for imperfect networks and biases an exact one)."""
    for name, v in (("S_churn", S_churn), ("S_tmin", S_tmin), ("S_tmax", S_tmax), ("S_noise", S_noise)):
        if not (isinstance(v, (int, float)) and v >= 0):
            raise PixdiffError(f"{name} must be a non-negative number (got {v!r})")
    D, lam = CountingDenoiser(denoiser, cond), check_grid(logsnr)
    s = torch.exp(-0.5 * lam).tolist()
    n = len(s) - 1
    Ds = sigma_space(D)
    x = noise * s[0]
    for s_i, s_next in zip(s[:-1], s[1:]):
        gamma = min(S_churn / n, math.sqrt(2.0) - 1.0) if S_tmin <= s_i <= S_tmax else 0.0
        eps = randn_like(x, generator) if gamma > 0 else None
        x = edm_step(Ds, x, s_i, s_next, gamma, eps, S_noise)
    return x


# --- score SDEs (seed 003 "Score matching through SDE", Algorithms 2 and 3) -----------------------------


def _score(D, x, lam, process):
    """The score of the state x: VE works on x_σ = z/α with ∇ log p = (x̂ − x_σ)/s²; VP on z."""
    a, sig = coef(lam)
    if process == "ve":
        return (D(x * a, lam) - x) / math.exp(-lam)
    return (a * D(x, lam) - x) / (sig * sig)


def reverse_diffusion_step(x: torch.Tensor, score: torch.Tensor, logsnr_t: float, logsnr_s: float,
                           noise: torch.Tensor | None, process: str = "ve") -> torch.Tensor:
    """The predictor of PC sampling (seed 003 Algorithm 2 lines 3–5 for VE, Algorithm 3 lines 3–5 for
    VP), an Euler–Maruyama step of the reverse SDE between the grid's levels:

        VE  x' = x + (s_t² − s_s²) ∇ log p + sqrt(s_t² − s_s²) ξ            (state x_σ)
        VP  z' = (2 − sqrt(1 − β)) z + β ∇ log q + sqrt(β) ξ,  β = 1 − ᾱ_t/ᾱ_s  (state z)
    """
    if process == "ve":
        dvar = math.exp(-logsnr_t) - math.exp(-logsnr_s)  # s_t² − s_s²
        x = x + dvar * score
        return x if noise is None else x + math.sqrt(dvar) * noise
    a_t, _ = coef(logsnr_t)
    a_s, _ = coef(logsnr_s)
    beta = 1.0 - (a_t / a_s) ** 2
    z = (2.0 - math.sqrt(1.0 - beta)) * x + beta * score
    return z if noise is None else z + math.sqrt(beta) * noise


def langevin_step(x: torch.Tensor, score: torch.Tensor, noise: torch.Tensor, snr: float,
                  alpha: float = 1.0) -> torch.Tensor:
    """The Langevin corrector (seed 003 Algorithm 2/3 lines 6–8): x + ε ∇ log p + sqrt(2ε) ξ, with the
    step ε set by the target signal-to-noise ratio ``snr`` (the seed leaves ε_i open):
    ε = 2 α (snr ‖ξ‖ / ‖∇ log p‖)² (Song et al. 2021, Appendix G; α = 1 − β for VP, 1 for VE).
    As in Song's reference code the norms are batch means: per-sample norms of a low-dimensional state
    can be ≈ 0 and blow the step up, so this one step couples the samples of a batch."""
    g = score.flatten(1).norm(dim=1).mean().clamp(min=1e-30)
    n = noise.flatten(1).norm(dim=1).mean()
    eps = float(2.0 * alpha * (snr * n / g) ** 2)
    return x + eps * score + math.sqrt(2.0 * eps) * noise


def _sde_loop(denoiser, logsnr, noise, process, cond, generator, corrector_steps=0, snr=0.16):
    if process not in PROCESSES:
        raise PixdiffError(f"process must be one of {', '.join(PROCESSES)} (got {process!r})")
    D, lam = CountingDenoiser(denoiser, cond), check_grid(logsnr)
    z = start(noise, float(lam[0]))
    x = z / coef(float(lam[0]))[0] if process == "ve" else z
    for lt, ls in zip(lam[:-1].tolist(), lam[1:].tolist()):
        if ls == math.inf:  # the final denoising step
            return D(x * coef(lt)[0] if process == "ve" else x, lt)
        x = reverse_diffusion_step(x, _score(D, x, lt, process), lt, ls, randn_like(x, generator), process)
        alpha = 1.0 if process == "ve" else (coef(lt)[0] / coef(ls)[0]) ** 2
        for _ in range(corrector_steps):
            x = langevin_step(x, _score(D, x, ls, process), randn_like(x, generator), snr, alpha)
    return x if process == "ve" else to_data(x, float(lam[-1]))


def euler_maruyama(denoiser, logsnr, noise: torch.Tensor, *, process: str = "vp", cond=None,
                   generator: Generators = None) -> torch.Tensor:
    """The reverse SDE by its Euler–Maruyama (reverse diffusion) discretisation, the predictor of seed 003
    Algorithms 2 (VE) and 3 (VP), with no corrector. Needs ~10³ steps; one NFE per step."""
    return _sde_loop(denoiser, logsnr, noise, process, cond, generator)


def pc(denoiser, logsnr, noise: torch.Tensor, *, process: str = "ve", snr: float = 0.16,
       corrector_steps: int = 1, cond=None, generator: Generators = None) -> torch.Tensor:
    """Predictor–corrector sampling (seed 003 Algorithms 2 and 3): a reverse-diffusion predictor step to
    the next level, then ``corrector_steps`` Langevin steps at that level with signal-to-noise ``snr``.
    NFE = (1 + corrector_steps) per finite step, plus the final denoising step."""
    if not (isinstance(snr, (int, float)) and snr > 0):
        raise PixdiffError(f"snr must be a positive number (got {snr!r})")
    if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, int) or corrector_steps < 0:
        raise PixdiffError(f"corrector_steps must be a non-negative integer (got {corrector_steps!r})")
    return _sde_loop(denoiser, logsnr, noise, process, cond, generator, corrector_steps, float(snr))


def langevin(denoiser, logsnr, noise: torch.Tensor, *, step_size: float = 5e-5, steps_per_level: int = 50,
             cond=None, generator: Generators = None) -> torch.Tensor:
    """NCSN's annealed Langevin dynamics (seed 003 "Annealed Langevin dynamics", Algorithm 1): at each
    finite level s_i of the grid, T = ``steps_per_level`` steps x ← x + (α_i/2) ∇ log p + sqrt(α_i) z with
    α_i = ε s_i²/s_L² (ε = ``step_size``, s_L the last finite level); a final +∞ entry denoises
    (NCSNv2's final step). NFE = L·T (+1). The default ε = 5·10⁻⁵ (NCSN: 2·10⁻⁵ with s_L = 0.01) gives
    α_i/s_i² = ε/s_L² = 0.25 on the default grid, whose last finite level is s_L ≈ 0.014."""
    if not (isinstance(step_size, (int, float)) and step_size > 0):
        raise PixdiffError(f"step_size must be a positive number (got {step_size!r})")
    if isinstance(steps_per_level, bool) or not isinstance(steps_per_level, int) or steps_per_level < 1:
        raise PixdiffError(f"steps_per_level must be a positive integer (got {steps_per_level!r})")
    D, lam = CountingDenoiser(denoiser, cond), check_grid(logsnr)
    levels = [l for l in lam.tolist() if l != math.inf]
    s_last2 = math.exp(-levels[-1])
    x = start(noise, levels[0]) / coef(levels[0])[0]
    for l in levels:
        step = step_size * math.exp(-l) / s_last2
        for _ in range(steps_per_level):
            score = _score(D, x, l, "ve")
            x = x + 0.5 * step * score + math.sqrt(step) * randn_like(x, generator)
    if lam[-1] == math.inf:
        return D(x * coef(levels[-1])[0], levels[-1])
    return x
