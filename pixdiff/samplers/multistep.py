"""Deterministic multistep solvers of the probability-flow ODE: k-diffusion's linear multistep
(``lms``), DEIS (``deis``) and UniPC (``unipc``). One NFE per grid interval, and no extra NFE for
UniPC's corrector.

Two of them are one method in sigma-space. With x_σ = z/α = x + s ε and s = exp(−λ/2), the ODE is
(Karras et al. 2022, §2 with σ(t) = t, s(t) = 1)

    dx_σ/ds = (x_σ − x̂)/s = ε̂,

so an Adams–Bashforth step replaces ε̂ over [s_t, s_s] by the polynomial through the last k values
ε̂_j and integrates it exactly:

    x_σ(s_s) = x_σ(s_t) + Σ_j w_j ε̂_j,     w_j = ∫_{s_t}^{s_s} L_j(v(s)) ds,

with L_j the Lagrange basis on the nodes v(s_j). ``lms`` interpolates in v = s (k-diffusion's
``sample_lms``: Adams–Bashforth on σ, order 4 by default); ``deis`` interpolates in v = log s = log ρ
(Zhang & Chen 2023, §4, the "tAB" exponential integrator with the polynomial extrapolation in log ρ,
ρ = σ/α, as diffusers' DEISMultistepScheduler ``solver_type='logrho'``). Both integrals are done in
closed form here (polynomials; polynomial × eᵘ), which for polynomials is what k-diffusion's
quadrature and diffusers' antiderivatives compute.

UniPC (Zhao et al. 2023) works in the data prediction x̂ and the half-logSNR ℓ = λ/2, with
h = ℓ_s − ℓ_t, r_k = (ℓ_{t_k} − ℓ_t)/h and D_k = (x̂_{t_k} − x̂_t)/r_k:

    z_s = (σ_s/σ_t) z_t − α_s (e^{−h} − 1) x̂_t − α_s B(h) Σ_k a_k D_k,

whose coefficients a solve the order conditions R a = g/B(h) with R_{ik} = r_k^{i−1} and
g_i = i!·(e^{−h} − Σ_{k≤i} (−h)^k/k!)/(−h)^i (``_unipc_rhs``), B(h) = −h ('bh1') or e^{−h} − 1 ('bh2'). The
predictor UniP-p uses the p − 1 previous points; the corrector UniC-p re-does the last step once
x̂ at the new point is known (no extra NFE: that x̂ is the next step's anyway), adding the new
point at r = 1, which raises the order to p + 1 (Zhao et al. 2023, §3.1 Thm 3.1 for UniC, §3.2
Cor. 3.2 for UniP).

The step into λ = +∞ (s = 0) is x = x̂ for ``deis`` and ``unipc`` (their first-order limit, as for
every pixdiff sampler; diffusers' UniPC also takes its last step at first order). ``lms`` instead
integrates its polynomial down to s = 0, as k-diffusion and diffusers' LMSDiscreteScheduler do: in
sigma-space that endpoint is regular.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from numpy.polynomial import Polynomial

from pixdiff import process
from pixdiff.samplers.common import as_grid, counting, start, to_data

__all__ = ["lms_step", "lms", "deis_step", "deis", "unipc_step", "unic_step", "unipc", "UNIPC_VARIANTS"]

UNIPC_VARIANTS = ("bh1", "bh2")


# --- Adams–Bashforth on x_σ in s: LMS (nodes in s) and DEIS (nodes in log s) ------------------------------


def _lagrange(nodes: Sequence[float], j: int) -> Polynomial:
    """L_j: 1 at nodes[j], 0 at the other nodes."""
    others = [v for k, v in enumerate(nodes) if k != j]
    p = Polynomial.fromroots(others) if others else Polynomial([1.0])
    return p / float(np.prod([nodes[j] - v for v in others])) if others else p


def ab_weights(sigmas: Sequence[float], s_to: float, log: bool = False) -> list[float]:
    """w_j = ∫_{s_0}^{s_to} L_j(v(s)) ds over the nodes s_0 (the current level), s_1, … (previous
    ones), with v = s (``log=False``: k-diffusion's ``linear_multistep_coeff``) or v = log s
    (``log=True``: DEIS's log-ρ basis, Zhang & Chen 2023). The log form integrates L_j(u) eᵘ
    exactly: an antiderivative of p(u) eᵘ is eᵘ Σ_k (−1)^k p^{(k)}(u)."""
    if not log:
        out = []
        for j in range(len(sigmas)):
            P = _lagrange(sigmas, j).integ()
            out.append(float(P(s_to) - P(sigmas[0])))
        return out
    nodes = [math.log(s) for s in sigmas]
    u0, u1 = nodes[0], math.log(s_to)
    out = []
    for j in range(len(nodes)):
        p = _lagrange(nodes, j)
        anti, sign, d = Polynomial([0.0]), 1.0, p
        for _ in range(len(nodes)):
            anti, sign, d = anti + sign * d, -sign, d.deriv()
        out.append(float(math.exp(u1) * anti(u1) - math.exp(u0) * anti(u0)))
    return out


def _ab_step(z, eps, logsnr_t, logsnr_s, eps_prev, logsnr_prev, log):
    a_t, _ = process.alpha_sigma_at(logsnr_t)
    a_s, _ = process.alpha_sigma_at(logsnr_s)
    sig = [process.sigma_at(logsnr_t)] + [process.sigma_at(l) for l in logsnr_prev]
    w = ab_weights(sig, process.sigma_at(logsnr_s), log=log)
    x = z / a_t
    for wj, e in zip(w, [eps, *eps_prev]):
        x = x + wj * e
    return a_s * x


def _eps(z, x_hat, logsnr):
    a, s = process.alpha_sigma_at(logsnr)
    return (z - a * x_hat) / s


def lms_step(z: torch.Tensor, x_hat: torch.Tensor, logsnr_t: float, logsnr_s: float,
             noise: torch.Tensor | None = None, *, eps_prev: Sequence[torch.Tensor] = (),
             logsnr_prev: Sequence[float] = ()) -> torch.Tensor:
    """One linear multistep (Adams–Bashforth) step on x_σ = z/α_t in s (k-diffusion ``sample_lms``):
    x_σ' = x_σ + Σ_j w_j d_j with d_j = (x_σ,j − x̂_j)/s_j = ε̂_j (d_0 from x̂ here; the previous
    ε̂ most recent first in ``eps_prev``, at ``logsnr_prev``) and w_j = ∫_{s_t}^{s_s} L_j(s) ds
    (``ab_weights``). Order = 1 + len(eps_prev). Integrates to s = 0 at λ_s = +∞."""
    return _ab_step(z, _eps(z, x_hat, logsnr_t), logsnr_t, logsnr_s, eps_prev, logsnr_prev, log=False)


def lms(denoiser, logsnr, noise: torch.Tensor, *, order: int = 4, cond=None) -> torch.Tensor:
    """k-diffusion's linear multistep sampler (``sample_lms``, default order 4): Adams–Bashforth on
    dx_σ/ds = ε̂ with the order ramping up 1, 2, … over the first steps (Karras et al. 2022, §2
    for the ODE; the method is the classical Adams–Bashforth, Hairer et al. 1993 §III.1). N NFE."""
    D, lam = counting(denoiser, cond), as_grid(logsnr)
    z = start(noise, float(lam[0]))
    eps_hist, lam_hist = [], []
    for lt, ls in zip(lam[:-1].tolist(), lam[1:].tolist()):
        x_hat = D(z, lt)
        z_new = lms_step(z, x_hat, lt, ls, eps_prev=eps_hist[:order - 1], logsnr_prev=lam_hist[:order - 1])
        eps_hist.insert(0, _eps(z, x_hat, lt))
        lam_hist.insert(0, lt)
        del eps_hist[order - 1:], lam_hist[order - 1:]
        z = z_new
    return to_data(z, float(lam[-1]))


def deis_step(z: torch.Tensor, x_hat: torch.Tensor, logsnr_t: float, logsnr_s: float,
              noise: torch.Tensor | None = None, *, eps_prev: Sequence[torch.Tensor] = (),
              logsnr_prev: Sequence[float] = ()) -> torch.Tensor:
    """One DEIS-tAB step with the log-ρ basis (Zhang & Chen 2023, tAB-DEIS with ε̂ extrapolated by
    a polynomial in log ρ, ρ = σ/α = s; diffusers' ``multistep_deis_{second,third}_order_update``):
    z_s/α_s = z_t/α_t + Σ_j (∫_{ρ_t}^{ρ_s} L_j(log ρ) dρ) ε̂_j. With no previous points it is
    DDIM (order 1); the step into λ = +∞ is x̂."""
    if logsnr_s == math.inf:
        return x_hat
    return _ab_step(z, _eps(z, x_hat, logsnr_t), logsnr_t, logsnr_s, eps_prev, logsnr_prev, log=True)


def _deis_order(i: int, n: int, order: int, lower_order_final: bool) -> int:
    # warm-up 1, 2, …; with fewer than 15 steps the last two steps drop to orders 1 and ≤ 2
    # (DPM-Solver's and diffusers' ``lower_order_final`` heuristic for few-step stability)
    k = min(order, i + 1)
    if lower_order_final and n < 15:
        k = min(k, n - i)
    return k


def deis(denoiser, logsnr, noise: torch.Tensor, *, order: int = 3, lower_order_final: bool = True,
         cond=None) -> torch.Tensor:
    """DEIS (Zhang & Chen 2023): multistep exponential integrator, ε̂ extrapolated in log ρ over the
    last ``order`` points (tAB-DEIS, 'logrho', as diffusers' DEISMultistepScheduler). Orders ramp up
    1, 2, …; ``lower_order_final`` as diffusers (last two steps at orders 1 and ≤ 2 when the grid has
    fewer than 15 intervals). N NFE. Default order 3: diffusers' recommendation for unconditional
    sampling (its own default is 2, for guided sampling)."""
    D, lam = counting(denoiser, cond), as_grid(logsnr)
    n = lam.numel() - 1
    z = start(noise, float(lam[0]))
    eps_hist, lam_hist = [], []
    for i, (lt, ls) in enumerate(zip(lam[:-1].tolist(), lam[1:].tolist())):
        x_hat = D(z, lt)
        k = _deis_order(i, n, order, lower_order_final) - 1
        z_new = deis_step(z, x_hat, lt, ls, eps_prev=eps_hist[:k], logsnr_prev=lam_hist[:k])
        eps_hist.insert(0, _eps(z, x_hat, lt))
        lam_hist.insert(0, lt)
        del eps_hist[order - 1:], lam_hist[order - 1:]
        z = z_new
    return to_data(z, float(lam[-1]))


# --- UniPC (Zhao et al. 2023) ------------------------------------------------------------------------------


def _unipc_rhs(hh: float, p: int, variant: str) -> tuple[list[float], float]:
    """(g_i/B(h) for i = 1…p, B(h)) with hh = −h (data prediction): g_i = i!·(e^{hh} − Σ_{k≤i}
    hh^k/k!)/hh^i, B = hh ('bh1') or e^{hh} − 1 ('bh2') (Zhao et al. 2023, the order conditions of
    Thm 3.1 / Cor. 3.2 in the data-prediction form; the recursion is the UniPC reference code's, as
    diffusers)."""
    B = hh if variant == "bh1" else math.expm1(hh)
    g = math.expm1(hh) / hh - 1.0  # (e^x − 1 − x)/x
    fact, out = 1, []
    for i in range(1, p + 1):
        out.append(g * fact / B)
        fact *= i + 1
        g = g / hh - 1.0 / fact
    return out, B


def _unipc_update(z, x_hat_t, logsnr_t, logsnr_s, x_hat_prev, logsnr_prev, x_hat_new, order, variant):
    """z_s = (σ_s/σ_t) z − α_s(e^{−h} − 1) x̂_t − α_s B(h) Σ a_k D_k over the ``order − 1`` previous
    points (and, for the corrector, the new point x̂_s at r = 1)."""
    _, s_t = process.alpha_sigma_at(logsnr_t)
    a_s, s_s = process.alpha_sigma_at(logsnr_s)
    h = 0.5 * (logsnr_s - logsnr_t)
    hh = -h
    rks = [0.5 * (l - logsnr_t) / h for l in logsnr_prev[:order - 1]]
    Ds = [(xp - x_hat_t) / r for xp, r in zip(x_hat_prev, rks)]
    rhs, B = _unipc_rhs(hh, order, variant)
    z_s = (s_s / s_t) * z - a_s * math.expm1(hh) * x_hat_t
    if x_hat_new is None:  # UniP-p
        if order == 1:
            return z_s
        # order 2: a = 1/2 (the reference code's simplification; the exact solve gives 1/2 + O(h))
        a = [0.5] if order == 2 else np.linalg.solve(np.vander(rks, order - 1, increasing=True).T, rhs[:-1]).tolist()
    else:  # UniC-p: the new point at r = 1 joins
        Ds = Ds + [x_hat_new - x_hat_t]
        a = [0.5] if order == 1 else np.linalg.solve(np.vander(rks + [1.0], order, increasing=True).T, rhs).tolist()
    for ak, Dk in zip(a, Ds):
        z_s = z_s - a_s * B * ak * Dk
    return z_s


def unipc_step(z: torch.Tensor, x_hat: torch.Tensor, logsnr_t: float, logsnr_s: float,
               noise: torch.Tensor | None = None, *, x_hat_prev: Sequence[torch.Tensor] = (),
               logsnr_prev: Sequence[float] = (), variant: str = "bh2") -> torch.Tensor:
    """UniP-p, the predictor (Zhao et al. 2023, §3.2, data prediction), with p = 1 + len(x_hat_prev)
    (previous x̂, most recent first, at ``logsnr_prev``). p = 1 is DDIM; the step into λ = +∞ is x̂."""
    if logsnr_s == math.inf:
        return x_hat
    p = 1 + len(x_hat_prev)
    return _unipc_update(z, x_hat, logsnr_t, logsnr_s, x_hat_prev, logsnr_prev, None, p, variant)


def unic_step(z: torch.Tensor, x_hat: torch.Tensor, logsnr_t: float, logsnr_s: float, x_hat_s: torch.Tensor, *,
              x_hat_prev: Sequence[torch.Tensor] = (), logsnr_prev: Sequence[float] = (),
              variant: str = "bh2") -> torch.Tensor:
    """UniC-p, the corrector (Zhao et al. 2023, §3.1): re-take the step λ_t → λ_s from z = z_t
    (x̂ = x̂_t, previous points as ``unipc_step``), now also using x̂_s = D(predicted z_s, λ_s); p =
    1 + len(x_hat_prev) is the predictor's order, the corrected state has order p + 1."""
    p = 1 + len(x_hat_prev)
    return _unipc_update(z, x_hat, logsnr_t, logsnr_s, x_hat_prev, logsnr_prev, x_hat_s, p, variant)


def unipc(denoiser, logsnr, noise: torch.Tensor, *, order: int = 2, variant: str = "bh2", corrector: bool = True,
          lower_order_final: bool = True, cond=None) -> torch.Tensor:
    """UniPC-p (Zhao et al. 2023; multistep, data prediction, as diffusers' UniPCMultistepScheduler with
    ``predict_x0=True``): at each grid point, evaluate x̂ at the predicted state, correct that state
    with UniC (``corrector``), then predict the next with UniP of order min(order, i + 1) (warm-up)
    and, with ``lower_order_final``, min(…, N − i) (diffusers' default, always on for UniPC). N NFE;
    order p + 1 with the corrector. ``variant`` is B(h): 'bh1' = −h, 'bh2' = e^{−h} − 1 (diffusers'
    default; diffusers' docs recommend bh1 for unconditional sampling below 10 steps, bh2 otherwise)."""
    D, lam = counting(denoiser, cond), as_grid(logsnr)
    n = lam.numel() - 1
    z = start(noise, float(lam[0]))
    xs, ls_hist = [], []  # previous x̂ and λ, most recent first
    z_prev, prev_order = None, 0
    for i, (lt, ls) in enumerate(zip(lam[:-1].tolist(), lam[1:].tolist())):
        x_hat = D(z, lt)
        if corrector and z_prev is not None:
            k = prev_order - 1
            z = unic_step(z_prev, xs[0], ls_hist[0], lt, x_hat, x_hat_prev=xs[1:1 + k], logsnr_prev=ls_hist[1:1 + k],
                          variant=variant)
        p = min(order, i + 1, n - i) if lower_order_final else min(order, i + 1)
        z_prev, prev_order = z, p
        z = unipc_step(z, x_hat, lt, ls, x_hat_prev=xs[:p - 1], logsnr_prev=ls_hist[:p - 1], variant=variant)
        xs.insert(0, x_hat)
        ls_hist.insert(0, lt)
        del xs[order + 1:], ls_hist[order + 1:]
    return to_data(z, float(lam[-1]))
