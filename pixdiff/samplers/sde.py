"""Stochastic samplers: EDM's stochastic sampler (Karras et al. 2022, Alg. 2), the reverse-SDE
predictor (Euler–Maruyama / reverse diffusion, VE and VP) and predictor–corrector sampling with a
Langevin corrector (Song et al. 2021b, Alg. 2–3), and annealed Langevin dynamics (Song & Ermon
2019, Alg. 1).

Scores come from the one denoiser interface by Tweedie (``process.score_from_x``):
∇_z log q(z) = (α x̂ − z)/σ² in VP, ∇ log p(x_σ) = (x̂ − x_σ)/s² in sigma-space (VE, x_σ = z/α).
Every step takes and returns the VP state z (see ``pixdiff.samplers``); the VE ones work on
x_σ = z/α_t inside and return z_s = α_s x_σ'.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from pixdiff import process as P
from pixdiff.samplers.common import Generators, as_grid, counting, randn_like, start, to_data
from pixdiff.samplers.ode import heun_step

__all__ = ["edm_step", "edm", "edm_gammas", "reverse_diffusion_step", "euler_maruyama", "langevin_step", "pc",
           "langevin", "PROCESSES", "EDM_PAPER_CHURN"]

PROCESSES = ("ve", "vp")

# Karras et al. 2022, Table 5 (ImageNet-64, their retrained model): S_churn = 40 at N = 256 steps
# (511 NFE), S_tmin = 0.05, S_tmax = 50, S_noise = 1.003: a per-step γ = 40/256.
EDM_PAPER_CHURN = (40.0, 256)


# --- Karras et al. 2022, Algorithm 2 ---------------------------------------------------------------------


def edm_gammas(logsnr, S_churn: float | None = None, S_tmin: float = 0.05, S_tmax: float = 50.0) -> list[float]:
    """γ_i = min(S_churn/N, √2 − 1) where s_i ∈ [S_tmin, S_tmax], else 0 (Karras et al. 2022,
    Alg. 2), for the grid's N intervals. ``S_churn=None`` is S_churn = 40 N/256: the paper's
    per-step γ = 40/256 (tuned at N = 256) at any N."""
    s = P.sigma_from_logsnr(as_grid(logsnr)).tolist()
    n = len(s) - 1
    churn = EDM_PAPER_CHURN[0] * n / EDM_PAPER_CHURN[1] if S_churn is None else S_churn
    g = min(churn / n, math.sqrt(2.0) - 1.0)
    return [g if S_tmin <= s_i <= S_tmax else 0.0 for s_i in s[:-1]]


def edm_step(z: torch.Tensor, x_hat: torch.Tensor | None, logsnr_t: float, logsnr_s: float,
             noise: torch.Tensor | None = None, *, denoiser: Callable[[torch.Tensor, float], torch.Tensor],
             gamma: float = 0.0, S_noise: float = 1.0) -> torch.Tensor:
    """Karras et al. 2022, Alg. 2 lines 4–11: raise the noise level to ŝ = s_t (1 + γ) by adding
    fresh noise of std sqrt(ŝ² − s_t²) S_noise to x_σ = z/α_t, then one Heun step (``heun_step``)
    from ŝ to s_s. ``x_hat`` = D(z, λ_t) is used only when nothing is added (γ = 0 or no noise);
    with churn the first evaluation is at ŝ."""
    if gamma == 0.0 or noise is None:
        return heun_step(z, x_hat, logsnr_t, logsnr_s, denoiser=denoiser)
    a_t, _ = P.alpha_sigma_at(logsnr_t)
    s_t = P.sigma_at(logsnr_t)
    s_hat = s_t * (1.0 + gamma)
    x = z / a_t + math.sqrt(s_hat * s_hat - s_t * s_t) * S_noise * noise
    lam_hat = P.logsnr_at(s_hat)
    return heun_step(x * P.alpha_sigma_at(lam_hat)[0], None, lam_hat, logsnr_s, denoiser=denoiser)


def edm(denoiser, logsnr, noise: torch.Tensor, *, S_churn: float | None = None, S_tmin: float = 0.05,
        S_tmax: float = 50.0, S_noise: float = 1.0, cond=None, generator: Generators = None) -> torch.Tensor:
    """EDM's stochastic sampler (Karras et al. 2022, Alg. 2; σ(t) = t, s(t) = 1):
    γ_i = min(S_churn/N, √2 − 1) where s_i ∈ [S_tmin, S_tmax], else 0 (``edm_gammas``).

    Defaults: EDM's ImageNet-64 settings (Table 5: S_churn 40, S_tmin 0.05, S_tmax 50, S_noise
    1.003, N = 256). S_churn was tuned with N = 256, where γ = 40/256 ≈ 0.156 per step; at pixdiff's
    default N = 64 a fixed S_churn = 40 would give 40/64 and hit the clamp √2 − 1 at every step
    (2.7× the tuned churn). So ``S_churn=None`` (default) scales with N, S_churn = 40 N/256: every
    step churns the paper's γ = 40/256 (N = 256 gives the paper's S_churn = 40 exactly). An explicit
    S_churn is used as given. S_noise defaults to 1: EDM's 1.003 compensates for imperfect
    networks and biases an exact denoiser."""
    D, lam = counting(denoiser, cond), as_grid(logsnr)
    z = start(noise, float(lam[0]))
    for (lt, ls), gamma in zip(zip(lam[:-1].tolist(), lam[1:].tolist()), edm_gammas(lam, S_churn, S_tmin, S_tmax)):
        eps = randn_like(z, generator) if gamma > 0 else None
        z = edm_step(z, None, lt, ls, eps, denoiser=D, gamma=gamma, S_noise=S_noise)
    return to_data(z, float(lam[-1]))


# --- score SDEs (Song et al. 2021b, Algorithms 2 and 3) -----------------------------------------------


def reverse_diffusion_step(z: torch.Tensor, x_hat: torch.Tensor, logsnr_t: float, logsnr_s: float,
                           noise: torch.Tensor | None = None, *, process: str = "vp") -> torch.Tensor:
    """The predictor of PC sampling (Song et al. 2021b, Alg. 2 lines 3–5 for VE, Alg. 3 lines 3–5
    for VP), an Euler–Maruyama step of the reverse SDE between the grid's levels, with the score
    from x̂ (Tweedie):

        VE  x' = x + (s_t² − s_s²) ∇ log p + sqrt(s_t² − s_s²) ξ            (on x_σ = z/α_t)
        VP  z' = (2 − sqrt(1 − β)) z + β ∇ log q + sqrt(β) ξ,  β = 1 − ᾱ_t/ᾱ_s  (on z)
    """
    a_t, s_t = P.alpha_sigma_at(logsnr_t)
    if process == "ve":
        x = z / a_t
        var_t, var_s = P.sigma_at(logsnr_t) ** 2, P.sigma_at(logsnr_s) ** 2
        dvar = var_t - var_s  # s_t² − s_s²
        x = x + dvar * (x_hat - x) / var_t
        if noise is not None:
            x = x + math.sqrt(dvar) * noise
        return x * P.alpha_sigma_at(logsnr_s)[0]
    a_s, _ = P.alpha_sigma_at(logsnr_s)
    beta = 1.0 - (a_t / a_s) ** 2
    z = (2.0 - math.sqrt(1.0 - beta)) * z + beta * (a_t * x_hat - z) / (s_t * s_t)
    return z if noise is None else z + math.sqrt(beta) * noise


def langevin_step(z: torch.Tensor, x_hat: torch.Tensor, logsnr_t: float, logsnr_s: float,
                  noise: torch.Tensor, *, snr: float | None = None, step_size: float | None = None,
                  alpha: float = 1.0, process: str = "ve") -> torch.Tensor:
    """One Langevin MCMC step at the level λ_t: x + ε ∇ log p + sqrt(2ε) ξ, on x_σ = z/α_t (VE) or z
    (VP). Langevin does not move the level: a corrector passes λ_s = λ_t; annealed Langevin passes
    the next level on a level's last step, and the VE state x_σ is handed on unchanged (returned
    as z_s = α_s x_σ'), as Song & Ermon 2019 carry x from σ_i to σ_{i+1}. VP needs λ_s = λ_t.

    Step size: ``step_size`` ε directly (annealed Langevin, Song & Ermon 2019 Alg. 1, where
    ε = α_i/2), or from the target signal-to-noise ratio ``snr`` (the corrector of Song et al.
    2021b, Alg. 2/3 lines 6–8, App. G): ε = 2 α (snr ‖ξ‖ / ‖∇ log p‖)² (α = 1 − β for VP, 1 for VE).
    As in Song's reference code the norms are batch means: per-sample norms of a low-dimensional
    state can be ≈ 0 and blow the step up, so the snr step couples the samples of a batch."""
    a_t, s_t = P.alpha_sigma_at(logsnr_t)
    if process == "ve":
        x = z / a_t
        score = (x_hat - x) / P.sigma_at(logsnr_t) ** 2
    else:
        x = z
        score = (a_t * x_hat - z) / (s_t * s_t)
    if step_size is None:
        g = score.flatten(1).norm(dim=1).mean().clamp(min=1e-30)
        n = noise.flatten(1).norm(dim=1).mean()
        step_size = float(2.0 * alpha * (snr * n / g) ** 2)
    x = x + step_size * score + math.sqrt(2.0 * step_size) * noise
    return x * P.alpha_sigma_at(logsnr_s)[0] if process == "ve" else x


def _sde_loop(denoiser, logsnr, noise, process, cond, generator, corrector_steps=0, snr=0.16):
    D, lam = counting(denoiser, cond), as_grid(logsnr)
    z = start(noise, float(lam[0]))
    for lt, ls in zip(lam[:-1].tolist(), lam[1:].tolist()):
        if ls == math.inf:  # the final denoising step
            return D(z, lt)
        z = reverse_diffusion_step(z, D(z, lt), lt, ls, randn_like(z, generator), process=process)
        alpha = 1.0 if process == "ve" else (P.alpha_sigma_at(lt)[0] / P.alpha_sigma_at(ls)[0]) ** 2
        for _ in range(corrector_steps):
            z = langevin_step(z, D(z, ls), ls, ls, randn_like(z, generator), snr=snr, alpha=alpha, process=process)
    return to_data(z, float(lam[-1]))


def euler_maruyama(denoiser, logsnr, noise: torch.Tensor, *, process: str = "vp", cond=None,
                   generator: Generators = None) -> torch.Tensor:
    """The reverse SDE by its Euler–Maruyama (reverse diffusion) discretisation, the predictor of
    Song et al. 2021b, Alg. 2 (VE) and Alg. 3 (VP), with no corrector. Needs ~10³ steps; one NFE
    per step."""
    return _sde_loop(denoiser, logsnr, noise, process, cond, generator)


def pc(denoiser, logsnr, noise: torch.Tensor, *, process: str = "ve", snr: float = 0.16,
       corrector_steps: int = 1, cond=None, generator: Generators = None) -> torch.Tensor:
    """Predictor–corrector sampling (Song et al. 2021b, Alg. 2 and 3): a reverse-diffusion predictor
    step to the next level, then ``corrector_steps`` Langevin steps at that level with
    signal-to-noise ``snr``. NFE = (1 + corrector_steps) per finite step, plus the final denoising
    step."""
    return _sde_loop(denoiser, logsnr, noise, process, cond, generator, corrector_steps, float(snr))


def langevin(denoiser, logsnr, noise: torch.Tensor, *, step_size: float = 5e-5, steps_per_level: int = 50,
             cond=None, generator: Generators = None) -> torch.Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1): at each finite level s_i of the grid,
    T = ``steps_per_level`` steps x ← x + (α_i/2) ∇ log p + sqrt(α_i) ξ with α_i = ε s_i²/s_L²
    (ε = ``step_size``, s_L the last finite level), the state x_σ carried unchanged from level to
    level; a final +∞ entry denoises (as NCSNv2's final step). NFE = L·T (+1). The default
    ε = 5·10⁻⁵ (NCSN: 2·10⁻⁵ with s_L = 0.01) gives α_i/s_i² = ε/s_L² = 0.25 on the default grid,
    whose last finite level is s_L ≈ 0.014."""
    D, lam = counting(denoiser, cond), as_grid(logsnr)
    levels = [l for l in lam.tolist() if l != math.inf]
    s_last2 = P.sigma_at(levels[-1]) ** 2
    z = start(noise, levels[0])
    for i, l in enumerate(levels):
        eps = 0.5 * step_size * P.sigma_at(l) ** 2 / s_last2  # α_i / 2
        nxt = levels[i + 1] if i + 1 < len(levels) else l
        for k in range(steps_per_level):
            # the last step of a level hands x_σ on to the next level
            z = langevin_step(z, D(z, l), l, nxt if k == steps_per_level - 1 else l, randn_like(z, generator),
                              step_size=eps, process="ve")
    if lam[-1] == math.inf:
        return D(z, levels[-1])
    return to_data(z, levels[-1])
