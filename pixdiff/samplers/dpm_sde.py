"""Stochastic DPM-Solver samplers as k-diffusion has them (k_diffusion/sampling.py, v0.1.1):
DPM-Solver-2 ancestral, DPM-Solver++(2S) ancestral, DPM-Solver++ SDE, DPM-Solver++(2M) SDE and
DPM-Solver++(3M) SDE.

They work in sigma-space, x_σ = z/α = x + s ε with s = exp(−λ/2) (k-diffusion's σ), and in the
half-logSNR ℓ = λ/2 = −log s (k-diffusion's t); h = ℓ_s − ℓ_t. Every step takes and returns the VP
state z (``pixdiff.samplers``): x_σ = z/α_t inside, z_s = α_s x_σ' out.

Ancestral steps split a step s_t → s_s into a deterministic step down to s_down and fresh noise of
std s_up (k-diffusion ``get_ancestral_step``):

    s_up = min(s_s, η sqrt(s_s² (s_t² − s_s²)/s_t²)),   s_down = sqrt(s_s² − s_up²);

η = 1 makes the pair the DDPM posterior's variance (Ho et al. 2020, eq. 7, in sigma-space), η = 0
the ODE. The SDE solvers are data-prediction exponential integrators of the reverse SDE, the SDE
variants of DPM-Solver++ (Lu et al. 2022b; as in its reference code, k-diffusion and diffusers'
``sde-dpmsolver++``): with η scaling the noise, a first-order step is

    x_σ' = (s_s/s_t) e^{−ηh} x_σ + (1 − e^{−(1+η)h}) x̂ + s_s sqrt(1 − e^{−2ηh}) ξ,

which is DDPM's posterior at η = 1 and DPM-Solver++(1) = DDIM at η = 0. Fresh noise ξ comes from
the sampler's generator (``common.randn_like``); k-diffusion's default for ``dpmpp_sde`` and the
multistep SDEs is a Brownian tree, i.e. increments of one Brownian motion W(s): the same law as
independent draws on non-overlapping intervals (2M/3M SDE), and for ``dpmpp_sde``'s two overlapping
intervals (t → mid, t → s) this module draws the two increments of one path (``brownian_pair``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from pixdiff import process
from pixdiff.samplers.common import Generators, as_grid, counting, randn_like, start, to_data

__all__ = ["ancestral_sigmas", "brownian_pair", "dpm2_ancestral_step", "dpm2_ancestral", "dpmpp_2s_ancestral_step",
           "dpmpp_2s_ancestral", "dpmpp_sde_step", "dpmpp_sde", "dpmpp_2m_sde_step", "dpmpp_2m_sde",
           "dpmpp_3m_sde_step", "dpmpp_3m_sde", "SOLVER_TYPES"]

Denoise = Callable[[torch.Tensor, float], torch.Tensor]
SOLVER_TYPES = ("midpoint", "heun")


def ancestral_sigmas(s_from: float, s_to: float, eta: float = 1.0) -> tuple[float, float]:
    """(s_down, s_up): s_up = min(s_to, η sqrt(s_to²(s_from² − s_to²)/s_from²)), s_down =
    sqrt(s_to² − s_up²) (k-diffusion ``get_ancestral_step``; at η = 1, s_up² is DDPM's β̃ in
    sigma-space, Ho et al. 2020 eq. 7)."""
    if not eta:
        return s_to, 0.0
    up = min(s_to, eta * math.sqrt(s_to * s_to * (s_from * s_from - s_to * s_to) / (s_from * s_from)))
    return math.sqrt(s_to * s_to - up * up), up


def _lam(s: float) -> float:
    return process.logsnr_at(s)


def _to_z(x_sigma: torch.Tensor, s: float) -> torch.Tensor:
    return x_sigma * process.alpha_sigma_at(_lam(s))[0]


def _d_sigma(denoiser: Denoise, x_sigma: torch.Tensor, s: float) -> torch.Tensor:
    """D at sigma-space level s for a sigma-space state (the VP denoiser at α x_σ)."""
    return denoiser(_to_z(x_sigma, s), _lam(s))


# --- ancestral: DPM-Solver-2 and DPM-Solver++(2S) (k-diffusion sample_dpm_2_ancestral, sample_dpmpp_2s_ancestral) --


def dpm2_ancestral_step(z: torch.Tensor, x_hat: torch.Tensor | None, logsnr_t: float, logsnr_s: float,
                        noise: torch.Tensor | None = None, *, denoiser: Denoise, eta: float = 1.0,
                        s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver-2 down to s_down (Lu et al. 2022a, Alg. 1 with r₁ = ½, written in sigma-space as
    k-diffusion: the midpoint s_mid = sqrt(s_t s_down) is the geometric mean, i.e. the λ-midpoint),
    then noise of std s_up · ``s_noise``. x_σ' = x_σ + (s_down − s_t) d(x_σ + (s_mid − s_t) d_t,
    s_mid), d = (x_σ − x̂)/s. s_down = 0 (the step into data) is Euler, i.e. x̂. 2 NFE (1 into data)."""
    if x_hat is None:
        x_hat = denoiser(z, logsnr_t)
    s_t, s_s = process.sigma_at(logsnr_t), process.sigma_at(logsnr_s)
    down, up = ancestral_sigmas(s_t, s_s, eta)
    x = z / process.alpha_sigma_at(logsnr_t)[0]
    d = (x - x_hat) / s_t
    if down == 0.0:
        return _to_z(x + (down - s_t) * d, s_s)
    mid = math.exp(0.5 * (math.log(s_t) + math.log(down)))
    x2 = x + (mid - s_t) * d
    d2 = (x2 - _d_sigma(denoiser, x2, mid)) / mid
    x = x + (down - s_t) * d2
    if noise is not None and up > 0.0:
        x = x + s_noise * up * noise
    return _to_z(x, s_s)


def dpmpp_2s_ancestral_step(z: torch.Tensor, x_hat: torch.Tensor | None, logsnr_t: float, logsnr_s: float,
                            noise: torch.Tensor | None = None, *, denoiser: Denoise, eta: float = 1.0,
                            s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver++(2S) (Lu et al. 2022b, Alg. 1 with r = ½) down to s_down, then noise s_up ·
    ``s_noise``: with ℓ = −log s, h = ℓ_down − ℓ_t,
        u = (s_mid/s_t) x_σ − (e^{−h/2} − 1) x̂_t,   x_σ' = (s_down/s_t) x_σ − (e^{−h} − 1) D(u, s_mid).
    s_down = 0 is x̂. 2 NFE (1 into data)."""
    if x_hat is None:
        x_hat = denoiser(z, logsnr_t)
    s_t, s_s = process.sigma_at(logsnr_t), process.sigma_at(logsnr_s)
    down, up = ancestral_sigmas(s_t, s_s, eta)
    x = z / process.alpha_sigma_at(logsnr_t)[0]
    if down == 0.0:
        return _to_z(x_hat, s_s)
    h = math.log(s_t) - math.log(down)
    mid = s_t * math.exp(-0.5 * h)
    u = (mid / s_t) * x - math.expm1(-0.5 * h) * x_hat
    x = (down / s_t) * x - math.expm1(-h) * _d_sigma(denoiser, u, mid)
    if noise is not None and s_s > 0.0:
        x = x + s_noise * up * noise
    return _to_z(x, s_s)


def _ancestral_loop(step, denoiser, logsnr, noise, eta, s_noise, cond, generator):
    D, lam = counting(denoiser, cond), as_grid(logsnr)
    z = start(noise, float(lam[0]))
    for lt, ls in zip(lam[:-1].tolist(), lam[1:].tolist()):
        xi = randn_like(z, generator) if ls != math.inf and eta > 0 else None
        z = step(z, None, lt, ls, xi, denoiser=D, eta=eta, s_noise=s_noise)
    return to_data(z, float(lam[-1]))


def dpm2_ancestral(denoiser, logsnr, noise: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0, cond=None,
                   generator: Generators = None) -> torch.Tensor:
    """Ancestral sampling with DPM-Solver-2 steps (k-diffusion ``sample_dpm_2_ancestral``; DPM-Solver-2
    from Lu et al. 2022a, Alg. 1; η = 0 is k-diffusion's ``sample_dpm_2``, DPM-Solver-2 with the
    midpoint in log s). 2N − 1 NFE on a grid ending at data."""
    return _ancestral_loop(dpm2_ancestral_step, denoiser, logsnr, noise, float(eta), float(s_noise), cond, generator)


def dpmpp_2s_ancestral(denoiser, logsnr, noise: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0, cond=None,
                       generator: Generators = None) -> torch.Tensor:
    """Ancestral sampling with DPM-Solver++(2S) steps (k-diffusion ``sample_dpmpp_2s_ancestral``; Lu et
    al. 2022b, Alg. 1, r = ½). 2N − 1 NFE on a grid ending at data."""
    return _ancestral_loop(dpmpp_2s_ancestral_step, denoiser, logsnr, noise, float(eta), float(s_noise), cond,
                           generator)


# --- DPM-Solver++ SDE, singlestep (k-diffusion sample_dpmpp_sde) --------------------------------------------


def brownian_pair(xi1: torch.Tensor, xi2: torch.Tensor, s_t: float, s_mid: float, s_s: float):
    """The normalised increments (W(s_mid) − W(s_t))/sqrt|s_mid − s_t| and (W(s_s) − W(s_t))/sqrt|s_s − s_t|
    of one Brownian motion in s (what k-diffusion's ``BrownianTreeNoiseSampler`` returns for
    (s_t, s_mid) and then (s_t, s_s)), from two independent standard normals: the second increment
    is the first plus an independent piece over [s_s, s_mid]."""
    a, b = s_t - s_mid, s_mid - s_s
    return xi1, (math.sqrt(a) * xi1 + math.sqrt(b) * xi2) / math.sqrt(a + b)


def dpmpp_sde_step(z: torch.Tensor, x_hat: torch.Tensor | None, logsnr_t: float, logsnr_s: float,
                   noise: Sequence[torch.Tensor] | None = None, *, denoiser: Denoise, eta: float = 1.0,
                   s_noise: float = 1.0, r: float = 0.5) -> torch.Tensor:
    """One DPM-Solver++ SDE step (k-diffusion ``sample_dpmpp_sde``: DPM-Solver++(2S), Lu et al. 2022b
    Alg. 1 with general r, each sub-step made ancestral). With ℓ = −log s, h = ℓ_s − ℓ_t, the
    intermediate level ℓ_m = ℓ_t + r h:
        1. ancestral pair (s_t → s_m): u = (s'_m/s_t) x_σ − (e^{−(ℓ'_m − ℓ_t)} − 1) x̂_t + s_up ξ₁
        2. x̂_d = (1 − 1/(2r)) x̂_t + 1/(2r) D(u, s_m); ancestral pair (s_t → s_s):
           x_σ' = (s'_s/s_t) x_σ − (e^{−(ℓ'_s − ℓ_t)} − 1) x̂_d + s_up ξ₂
    (primes: the s_down of the pair). ``noise`` = (ξ₁, ξ₂), the normalised increments of one Brownian
    path (``brownian_pair``). The step into data is x̂. 2 NFE (1 into data)."""
    if x_hat is None:
        x_hat = denoiser(z, logsnr_t)
    if logsnr_s == math.inf:
        return x_hat
    s_t, s_s = process.sigma_at(logsnr_t), process.sigma_at(logsnr_s)
    x = z / process.alpha_sigma_at(logsnr_t)[0]
    h = math.log(s_t) - math.log(s_s)
    s_m = s_t * math.exp(-r * h)
    n1, n2 = (None, None) if noise is None else noise
    down, up = ancestral_sigmas(s_t, s_m, eta)
    u = (down / s_t) * x - math.expm1(math.log(down) - math.log(s_t)) * x_hat
    if n1 is not None and up > 0.0:
        u = u + s_noise * up * n1
    fac = 1.0 / (2.0 * r)
    x_d = (1.0 - fac) * x_hat + fac * _d_sigma(denoiser, u, s_m)
    down, up = ancestral_sigmas(s_t, s_s, eta)
    x = (down / s_t) * x - math.expm1(math.log(down) - math.log(s_t)) * x_d
    if n2 is not None and up > 0.0:
        x = x + s_noise * up * n2
    return _to_z(x, s_s)


def dpmpp_sde(denoiser, logsnr, noise: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5,
              cond=None, generator: Generators = None) -> torch.Tensor:
    """DPM-Solver++ SDE (k-diffusion ``sample_dpmpp_sde``, r = ½ by default): two ancestral
    half-steps per interval, the second using x̂ mixed from both evaluations (Lu et al. 2022b,
    Alg. 1). 2N − 1 NFE on a grid ending at data."""
    D, lam = counting(denoiser, cond), as_grid(logsnr)
    z = start(noise, float(lam[0]))
    eta, s_noise, r = float(eta), float(s_noise), float(r)
    for lt, ls in zip(lam[:-1].tolist(), lam[1:].tolist()):
        pair = None
        if ls != math.inf and eta > 0:
            s_t, s_s = process.sigma_at(lt), process.sigma_at(ls)
            s_m = s_t * math.exp(-r * (math.log(s_t) - math.log(s_s)))
            xi1 = randn_like(z, generator)
            pair = brownian_pair(xi1, randn_like(z, generator), s_t, s_m, s_s)
        z = dpmpp_sde_step(z, None, lt, ls, pair, denoiser=D, eta=eta, s_noise=s_noise, r=r)
    return to_data(z, float(lam[-1]))


# --- DPM-Solver++(2M) SDE and (3M) SDE, multistep (k-diffusion sample_dpmpp_2m_sde, sample_dpmpp_3m_sde) ----


def _first_order_sde(x, x_hat, s_t, s_s, eta):
    """(s_s/s_t) e^{−ηh} x_σ + (1 − e^{−(1+η)h}) x̂ and (1 + η) h (Lu et al. 2022b, SDE-DPM-Solver++1)."""
    h = math.log(s_t) - math.log(s_s)
    he = (1.0 + eta) * h
    return (s_s / s_t) * math.exp(-eta * h) * x - math.expm1(-he) * x_hat, h, he


def _sde_noise(x, noise, s_s, h, eta, s_noise):
    if noise is None or not eta:
        return x
    return x + noise * (s_s * math.sqrt(-math.expm1(-2.0 * eta * h)) * s_noise)


def dpmpp_2m_sde_step(z: torch.Tensor, x_hat: torch.Tensor, logsnr_t: float, logsnr_s: float,
                      noise: torch.Tensor | None = None, *, x_hat_prev: torch.Tensor | None = None,
                      logsnr_prev: float | None = None, eta: float = 1.0, s_noise: float = 1.0,
                      solver_type: str = "midpoint") -> torch.Tensor:
    """DPM-Solver++(2M) SDE (k-diffusion ``sample_dpmpp_2m_sde``: the SDE variant of Lu et al. 2022b's
    DPM-Solver++(2M), Alg. 2, with η): the first-order SDE step plus, with r = h_prev/h and (1+η)h = ĥ,
        midpoint: + ½ (1 − e^{−ĥ}) (x̂_t − x̂_prev)/r
        heun:     + ((1 − e^{−ĥ})/(−ĥ) + 1) (x̂_t − x̂_prev)/r,
    then noise s_s sqrt(1 − e^{−2ηh}) ``s_noise`` ξ. η = 0, midpoint is DPM-Solver++(2M)
    (``ode.dpmpp_2m_step``). The step into data is x̂."""
    if logsnr_s == math.inf:
        return x_hat
    s_t, s_s = process.sigma_at(logsnr_t), process.sigma_at(logsnr_s)
    x = z / process.alpha_sigma_at(logsnr_t)[0]
    x, h, he = _first_order_sde(x, x_hat, s_t, s_s, eta)
    if x_hat_prev is not None:
        r = 0.5 * (logsnr_t - logsnr_prev) / h
        if solver_type == "heun":
            x = x + (-math.expm1(-he) / -he + 1.0) / r * (x_hat - x_hat_prev)
        else:
            x = x + 0.5 * -math.expm1(-he) / r * (x_hat - x_hat_prev)
    return _to_z(_sde_noise(x, noise, s_s, h, eta, s_noise), s_s)


def dpmpp_3m_sde_step(z: torch.Tensor, x_hat: torch.Tensor, logsnr_t: float, logsnr_s: float,
                      noise: torch.Tensor | None = None, *, x_hat_prev: Sequence[torch.Tensor] = (),
                      logsnr_prev: Sequence[float] = (), eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver++(3M) SDE (k-diffusion ``sample_dpmpp_3m_sde``; the third-order multistep update of
    the DPM-Solver++ reference code and diffusers, Lu et al. 2022b, with h → ĥ = (1+η)h). With
    r₀ = h₁/h, r₁ = h₂/h (previous step sizes), D₁₀ = (x̂_t − x̂_1)/r₀, D₁₁ = (x̂_1 − x̂_2)/r₁,
    D₁ = D₁₀ + r₀/(r₀ + r₁)(D₁₀ − D₁₁), D₂ = (D₁₀ − D₁₁)/(r₀ + r₁), φ₂ = (e^{−ĥ} − 1)/ĥ + 1,
    φ₃ = φ₂/ĥ − ½:  x_σ' = first-order step + φ₂ D₁ − φ₃ D₂ (+ φ₂ D₁₀ alone with one previous
    point), then the 2M SDE's noise. The step into data is x̂.

    Note: a Taylor expansion of x̂ in ℓ gives D₂ ≈ h² x̂''/2 and the exact weight of x̂'' as
    (ĥ²/2 − ĥ + 1 − e^{−ĥ}), i.e. −2(φ₃) on D₂: the weight used here (k-diffusion's, and diffusers'
    ODE branch) is half of that, which makes the η = 0 method second order, not third, on the
    exact mixture (tests/test_samplers_solvers.py). Kept as k-diffusion has it."""
    if logsnr_s == math.inf:
        return x_hat
    s_t, s_s = process.sigma_at(logsnr_t), process.sigma_at(logsnr_s)
    x = z / process.alpha_sigma_at(logsnr_t)[0]
    x, h, he = _first_order_sde(x, x_hat, s_t, s_s, eta)
    phi2 = math.expm1(-he) / he + 1.0
    if len(x_hat_prev) >= 2:
        r0 = 0.5 * (logsnr_t - logsnr_prev[0]) / h
        r1 = 0.5 * (logsnr_prev[0] - logsnr_prev[1]) / h
        d10 = (x_hat - x_hat_prev[0]) / r0
        d11 = (x_hat_prev[0] - x_hat_prev[1]) / r1
        d1 = d10 + (d10 - d11) * (r0 / (r0 + r1))
        d2 = (d10 - d11) / (r0 + r1)
        x = x + phi2 * d1 - (phi2 / he - 0.5) * d2
    elif len(x_hat_prev) == 1:
        r = 0.5 * (logsnr_t - logsnr_prev[0]) / h
        x = x + phi2 * (x_hat - x_hat_prev[0]) / r
    return _to_z(_sde_noise(x, noise, s_s, h, eta, s_noise), s_s)


def dpmpp_2m_sde(denoiser, logsnr, noise: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0,
                 solver_type: str = "midpoint", cond=None, generator: Generators = None) -> torch.Tensor:
    """DPM-Solver++(2M) SDE (k-diffusion ``sample_dpmpp_2m_sde``, midpoint by default as k-diffusion
    and diffusers' ``algorithm_type='sde-dpmsolver++'``; Lu et al. 2022b). N NFE."""
    D, lam = counting(denoiser, cond), as_grid(logsnr)
    z = start(noise, float(lam[0]))
    eta, s_noise = float(eta), float(s_noise)
    x_prev, l_prev = None, None
    for lt, ls in zip(lam[:-1].tolist(), lam[1:].tolist()):
        x_hat = D(z, lt)
        xi = randn_like(z, generator) if eta > 0 and ls != math.inf else None
        z = dpmpp_2m_sde_step(z, x_hat, lt, ls, xi, x_hat_prev=x_prev, logsnr_prev=l_prev, eta=eta, s_noise=s_noise,
                              solver_type=solver_type)
        x_prev, l_prev = x_hat, lt
    return to_data(z, float(lam[-1]))


def dpmpp_3m_sde(denoiser, logsnr, noise: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0, cond=None,
                 generator: Generators = None) -> torch.Tensor:
    """DPM-Solver++(3M) SDE (k-diffusion ``sample_dpmpp_3m_sde``): orders 1, 2, then 3. N NFE."""
    D, lam = counting(denoiser, cond), as_grid(logsnr)
    z = start(noise, float(lam[0]))
    eta, s_noise = float(eta), float(s_noise)
    xs, ls_hist = [], []
    for lt, ls in zip(lam[:-1].tolist(), lam[1:].tolist()):
        x_hat = D(z, lt)
        xi = randn_like(z, generator) if eta > 0 and ls != math.inf else None
        z = dpmpp_3m_sde_step(z, x_hat, lt, ls, xi, x_hat_prev=xs[:2], logsnr_prev=ls_hist[:2], eta=eta,
                              s_noise=s_noise)
        xs.insert(0, x_hat)
        ls_hist.insert(0, lt)
        del xs[2:], ls_hist[2:]
    return to_data(z, float(lam[-1]))
