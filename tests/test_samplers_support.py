"""Shared helpers for the sampler tests: a fast exact denoiser for a Gaussian mixture (the same math
as ``pixdiff.analytic.GaussianMixture.denoise`` specialised to one λ for the whole batch, so that
10k-sample runs of 1000-step samplers stay cheap; ``test_fast_oracle_matches_analytic`` checks it
against the lead's oracle), the targets, statistics, and a reference probability-flow ODE solve."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp

from pixdiff.analytic import GaussianMixture

F64 = torch.float64


class FastMixture:
    """E[x | z] for a GaussianMixture when all samples share λ: every per-component reduction is a
    matmul over the stacked eigenbases U = [U_1 | … | U_K] ([D, K·D]); tensors are feature-major
    ([features, n]) because broadcasting over a short last axis is slow on CPU."""

    def __init__(self, gm: GaussianMixture):
        self.gm = gm
        K, D = gm.means.shape
        self.K, self.D = K, D
        U, d = gm._U, gm._d  # [K, D, D], [K, D]
        self.Ucat = U.permute(1, 0, 2).reshape(D, K * D).contiguous()  # Ucatᵀ z = [U_1ᵀz; …; U_Kᵀz]
        self.UcatT = self.Ucat.T.contiguous()
        self.muU = torch.einsum("kd,kde->ke", gm.means, U).reshape(K * D, 1)
        self.d = d.reshape(K * D, 1)
        self.logw = gm.weights.log()[:, None]
        self.blockT = torch.zeros(K, K * D, dtype=F64)
        for k in range(K):
            self.blockT[k, k * D:(k + 1) * D] = 1.0
        self.meansT = gm.means.T.contiguous()
        self.shape = gm.shape
        self.calls = 0

    def __call__(self, z, logsnr, cond=None):
        lam = torch.as_tensor(logsnr, dtype=F64).flatten()
        if cond is not None or (lam != lam[0]).any():
            return self.gm.denoise(z, logsnr, cond)
        self.calls += 1
        lam0 = float(lam[0])
        a2, s2 = 1.0 / (1.0 + math.exp(-lam0)), 1.0 / (1.0 + math.exp(lam0))
        a = math.sqrt(a2)
        n = z.shape[0]
        zT = z.reshape(n, -1).to(F64).T  # [D, n]
        c = a2 * self.d + s2  # eigenvalues of C_k, stacked [K·D, 1]
        r = self.UcatT @ zT - a * self.muU  # U_kᵀ(z − α μ_k): [K·D, n]
        quad = (self.blockT / c.T) @ (r * r)  # [K, n]
        logits = self.logw - 0.5 * (quad + self.blockT @ torch.log(c))
        e = torch.exp(logits - logits.max(0, keepdim=True).values)
        resp = e / e.sum(0, keepdim=True)  # p(k | z): [K, n]
        y = r * (a * self.d / c) * resp.repeat_interleave(self.D, dim=0)
        x = self.meansT @ resp + self.Ucat @ y  # [D, n]
        return x.T.reshape(z.shape).to(z.dtype)


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
    fast = FastMixture(gm)

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
    fast = FastMixture(gm)

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


def test_fast_oracle_matches_analytic():
    for gm in (GaussianMixture.toy_2d(), gaussian16()):
        fast = FastMixture(gm)
        g = torch.Generator().manual_seed(3)
        for lam in (-8.0, -1.0, 0.5, 4.0, 12.0):
            z = torch.randn(257, gm.dim, generator=g, dtype=F64)
            want = gm.denoise(z, torch.full((257,), lam, dtype=F64))
            torch.testing.assert_close(fast(z, torch.full((257,), lam, dtype=F64)), want, rtol=1e-10, atol=1e-10)
