"""Shared helpers for the sampler tests: the targets, statistics, and a reference probability-flow
ODE solve. The exact denoiser is ``GaussianMixture.denoise``, whose shared-λ path keeps 10k-sample
runs of 1000-step samplers cheap (tests/test_analytic.py checks it against the per-sample path)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp

from pixdiff.analytic import GaussianMixture

F64 = torch.float64


def gaussian16() -> GaussianMixture:
    """A 16-D Gaussian with a random mean and a correlated covariance, eigenvalues in [0.05, 1]."""
    g = torch.Generator().manual_seed(16)
    Q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=F64))
    eig = torch.logspace(math.log10(0.05), 0.0, 16, dtype=F64)
    cov = Q @ torch.diag(eig) @ Q.T
    mean = 0.5 * torch.randn(16, generator=g, dtype=F64)
    return GaussianMixture.gaussian(mean, 0.5 * (cov + cov.T))


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, projections: int = 128, seed: int = 0) -> float:
    """Mean over random directions of the 1-D W1 distance between the projected samples."""
    x, y = x.reshape(x.shape[0], -1).to(F64), y.reshape(y.shape[0], -1).to(F64)
    n = min(x.shape[0], y.shape[0])
    dirs = torch.randn(x.shape[1], projections, generator=torch.Generator().manual_seed(seed), dtype=F64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px = torch.sort(x[:n] @ dirs, dim=0).values
    py = torch.sort(y[:n] @ dirs, dim=0).values
    return float((px - py).abs().mean())


def component_mass(gm: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """E[p(k | x)] over the samples: equals the weights w_k exactly for samples from the mixture."""
    return gm.class_posterior(x.to(F64), torch.tensor(math.inf)).mean(0)


def pf_ode_reference(gm: GaussianMixture, x_start: torch.Tensor, s_start: float, s_end: float,
                     rtol: float = 1e-11) -> torch.Tensor:
    """The probability-flow ODE dx/ds = (x − D(x; s))/s solved in u = log s (where it is smooth) by
    scipy's DOP853 at tight tolerance, from x_σ = x_start at s_start to s_end > 0."""
    shape = x_start.shape
    fast = gm.denoise

    def rhs(u, y):
        s = math.exp(u)
        x = torch.from_numpy(y).reshape(shape)
        x_hat = fast(x / math.sqrt(1 + s * s), torch.tensor([-2.0 * math.log(s)]))
        return (x - x_hat).reshape(-1).numpy()

    sol = solve_ivp(rhs, (math.log(s_start), math.log(s_end)), x_start.to(F64).reshape(-1).numpy(),
                    method="DOP853", rtol=rtol, atol=rtol)
    assert sol.success, sol.message
    return torch.from_numpy(sol.y[:, -1]).reshape(shape)


def pf_map(gm: GaussianMixture, steps: int = 40):
    """The exact consistency function of the mixture to high accuracy: f(z, λ) = the origin (s = 0) of
    the probability-flow trajectory through z, by classical RK4 in u = log s down to s = 1e-4, then
    the denoiser (x̂ at s = 1e-4 differs from the origin by O(s²))."""
    fast = gm.denoise

    def f(z, logsnr, cond=None):
        lam = float(torch.as_tensor(logsnr).flatten()[0])
        s0 = math.exp(-0.5 * lam)
        x = z.to(F64) * math.sqrt(1 + s0 * s0)

        def rhs(u, x):
            s = math.exp(u)
            return x - fast(x / math.sqrt(1 + s * s), torch.tensor([-2.0 * math.log(s)]))

        us = np.linspace(math.log(s0), math.log(1e-4), steps + 1)
        for u0, u1 in zip(us[:-1], us[1:]):
            h = u1 - u0
            k1 = rhs(u0, x)
            k2 = rhs(u0 + h / 2, x + h / 2 * k1)
            k3 = rhs(u0 + h / 2, x + h / 2 * k2)
            k4 = rhs(u1, x + h * k3)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return fast(x / math.sqrt(1 + 1e-8), torch.tensor([-2.0 * math.log(1e-4)])).to(z.dtype)

    return f


def fitted_slope(steps, errors) -> float:
    """The order p of error ∝ steps^−p, by least squares on log–log."""
    return float(-np.polyfit(np.log(steps), np.log(errors), 1)[0])
