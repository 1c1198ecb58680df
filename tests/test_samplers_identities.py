"""Identities between samplers, and single steps checked on their own."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pixdiff import process
from pixdiff import samplers as S
from pixdiff.analytic import GaussianMixture
from pixdiff.denoiser import Denoiser
from pixdiff.schedules import get

F64 = torch.float64


def _noise(n=64, d=2, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("grid", [S.grids.edm(12), S.grids.uniform_t(get("linear_discrete"), 25),
                                  S.grids.uniform_logsnr(get("cosine"), 9, to_data=False)])
def test_ddim_eta0_is_euler_in_sigma_space(grid):
    """Song et al. 2021a §4.3: DDIM η = 0 is Euler on x̄ = z/α against s = σ/α (and DPM-Solver-1)."""
    gm, noise = GaussianMixture.toy_2d(), _noise()
    a = S.sample(gm, noise.shape, "ddim", grid=grid, noise=noise, eta=0.0)
    b = S.sample(gm, noise.shape, "euler", grid=grid, noise=noise)
    c = S.sample(gm, noise.shape, "dpm_solver", grid=grid, noise=noise, order=1)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["uniform_t", "quadratic_t"])
def test_ddim_eta1_is_ddpm_beta_tilde(kind):
    """Song et al. 2021a eq. 16: σ_τ(η = 1) = sqrt(β̃) on the sub-sequence τ, so DDIM η = 1 is DDPM
    with β̃ there."""
    gm, noise = GaussianMixture.toy_2d(), _noise()
    grid = S.grids.make(kind, "linear_discrete", 20)
    a = S.sample(gm, noise.shape, "ddim", grid=grid, noise=noise, eta=1.0, generator=torch.Generator().manual_seed(5))
    b = S.sample(gm, noise.shape, "ddpm", grid=grid, noise=noise, variance="beta_tilde",
                 generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_heun_costs_2n_minus_1():
    for n in (1, 2, 5, 18):
        _, nfe = S.sample(GaussianMixture.toy_2d(), (3, 2), "heun", steps=n, return_nfe=True)
        assert nfe == 2 * n - 1


def test_edm_without_churn_is_heun():
    gm, noise = GaussianMixture.toy_2d(), _noise()
    a = S.sample(gm, noise.shape, "edm", steps=10, noise=noise, S_churn=0.0)
    b = S.sample(gm, noise.shape, "heun", steps=10, noise=noise)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_ddpm_step_is_the_posterior():
    z, x = _noise(8, 3, 1), _noise(8, 3, 2)
    mean, var = process.posterior(z, x, -1.0, 0.5)
    torch.testing.assert_close(S.ddpm_step(z, x, -1.0, 0.5), mean)
    xi = _noise(8, 3, 3)
    torch.testing.assert_close(S.ddpm_step(z, x, -1.0, 0.5, xi, var_interp=0.0), mean + var.sqrt() * xi)
    beta = process.transition(-1.0, 0.5)[1]
    torch.testing.assert_close(S.ddpm_step(z, x, -1.0, 0.5, xi, var_interp=1.0), mean + beta.sqrt() * xi)
    # Dhariwal & Nichol 2021 Alg. 1: the score shift moves the mean by Σ times it
    g = _noise(8, 3, 4)
    torch.testing.assert_close(S.ddpm_step(z, x, -1.0, 0.5, xi, var_interp=1.0, score_shift=g),
                               mean + beta * g + beta.sqrt() * xi)
    # On a discrete chain, β of a step is 1 − ᾱ_t/ᾱ_s (Nichol & Dhariwal 2021 §4 respacing).
    ab_t, ab_s = torch.sigmoid(torch.tensor(-1.0, dtype=F64)), torch.sigmoid(torch.tensor(0.5, dtype=F64))
    torch.testing.assert_close(beta, 1 - ab_t / ab_s)


def test_sid2_step_interpolates_in_log_space():
    """Hoogeboom et al. 2025 §1.1: std = σ_{t→s}^γ σ_{t|s}^{1−γ} (with σ²_{t|s} = σ_t² − α²_{t|s} σ_s²)."""
    z, x, xi = _noise(8, 3, 1), _noise(8, 3, 2), _noise(8, 3, 3)
    lt, ls = -0.3, 1.2
    a_t, s_t = process.alpha_sigma(torch.tensor(lt, dtype=F64))
    a_s, s_s = process.alpha_sigma(torch.tensor(ls, dtype=F64))
    post_var = 1.0 / (1.0 / s_s**2 + (a_t / a_s) ** 2 / (s_t**2 - (a_t / a_s) ** 2 * s_s**2))  # SiD2's σ²_{t→s}
    fwd_var = s_t**2 - (a_t / a_s) ** 2 * s_s**2
    mean = S.ddpm_step(z, x, lt, ls)
    want = mean + (post_var.sqrt() ** 0.3 * fwd_var.sqrt() ** 0.7) * xi
    torch.testing.assert_close(S.sid2_ddpm_step(z, x, lt, ls, xi, gamma=0.3), want)
    torch.testing.assert_close(S.sid2_ddpm_step(z, x, lt, ls, xi, gamma=1.0), S.ddpm_step(z, x, lt, ls, xi, var_interp=0.0))
    torch.testing.assert_close(S.sid2_ddpm_step(z, x, lt, ls, xi, gamma=0.0), S.ddpm_step(z, x, lt, ls, xi, var_interp=1.0))


class _EpsNet(nn.Module):
    """An 'exact' ε-prediction backbone for the analytic mixture plus a fixed variance channel."""

    def __init__(self, gm, v):
        super().__init__()
        self.gm, self.v = gm, v

    def forward(self, z, logsnr, cond=None):
        x_hat = self.gm.denoise(z.flatten(1), logsnr.double()).reshape(z.shape).to(z.dtype)
        eps = process.eps_from_x(z, x_hat, logsnr.double())
        return torch.cat([eps, torch.full_like(z, self.v)], dim=1)


@pytest.mark.parametrize("v,variance", [(-1.0, "beta_tilde"), (1.0, "beta")])
def test_iddpm_learned_variance_endpoints(v, variance):
    """IDDPM: log Σ = f log β + (1 − f) log β̃ with f = (v + 1)/2 (Nichol & Dhariwal 2021 §3.1); v = −1
    is β̃, v = +1 is β."""
    gm = GaussianMixture.toy_2d()
    gm4 = GaussianMixture(gm.weights, gm.means, gm.covs, shape=(2, 1, 1))  # as [B, C, H, W] images
    den = Denoiser(_EpsNet(gm4, v), parameterization="eps", learn_sigma=True).double()
    noise = torch.randn(32, 2, 1, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    a, nfe = S.sample(den, noise.shape, "ddpm", steps=12, noise=noise, generator=torch.Generator().manual_seed(1),
                      return_nfe=True)  # variance defaults to 'learned' for learn_sigma denoisers
    b = S.sample(gm4, noise.shape, "ddpm", steps=12, noise=noise, variance=variance,
                 generator=torch.Generator().manual_seed(1))
    assert nfe == 12
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_dpm_solver_step_on_a_gaussian_is_exact_for_constant_eps():
    """If ε̂ does not depend on λ (x̂ = (z − σ ε)/α with fixed ε), the exponential integrator is exact at
    every order: each DPM-Solver step equals DDIM."""
    eps = _noise(4, 2, 9)

    def D(z, lam):
        a, s = S.common.coef(lam)
        return (z - s * eps) / a

    z = _noise(4, 2, 1)
    ref = S.ddim_step(z, D(z, -2.0), -2.0, 1.5)
    for order in (1, 2, 3):
        torch.testing.assert_close(S.dpm_solver_step(z, D(z, -2.0), -2.0, 1.5, denoiser=D, order=order), ref,
                                   rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(S.dpm_solver_step(z, None, -2.0, 1.5, denoiser=D, order=order), ref,
                                   rtol=1e-12, atol=1e-12)


def test_dpmpp_2m_first_step_is_ddim():
    z, x = _noise(4, 2, 1), _noise(4, 2, 2)
    torch.testing.assert_close(S.dpmpp_2m_step(z, x, -2.0, 0.5), S.ddim_step(z, x, -2.0, 0.5))


def test_euler_step_is_ddim_eta0_and_heun_averages_two_slopes():
    """In the one signature every ODE step maps the VP state; Euler in sigma-space is DDIM η = 0,
    and Heun is the trapezoid of the Euler slope and the slope at the Euler point (Karras et al.
    2022, Alg. 1), checked here in sigma-space by hand."""
    gm = GaussianMixture.toy_2d()
    z, lt, ls = _noise(16, 2, 1), -1.0, 1.5
    x_hat = gm.denoise(z, torch.tensor([lt]))
    torch.testing.assert_close(S.euler_step(z, x_hat, lt, ls), S.ddim_step(z, x_hat, lt, ls), rtol=1e-12, atol=1e-12)
    (a_t, _), (a_s, _) = process.alpha_sigma_at(lt), process.alpha_sigma_at(ls)
    s_t, s_s = math.exp(-lt / 2), math.exp(-ls / 2)
    x = z / a_t
    d = (x - x_hat) / s_t
    x1 = x + (s_s - s_t) * d
    d1 = (x1 - gm.denoise(x1 * a_s, torch.tensor([ls]))) / s_s
    want = a_s * (x + (s_s - s_t) * 0.5 * (d + d1))
    torch.testing.assert_close(S.heun_step(z, x_hat, lt, ls, denoiser=gm.denoise), want, rtol=1e-12, atol=1e-12)
    # EDM's stochastic step without churn is that Heun step; with churn it is Heun from the raised level
    torch.testing.assert_close(S.edm_step(z, x_hat, lt, ls, None, denoiser=gm.denoise, gamma=0.3),
                               S.heun_step(z, x_hat, lt, ls, denoiser=gm.denoise), rtol=0, atol=0)
    xi = _noise(16, 2, 2)
    s_hat = s_t * 1.3
    x_raised = x + math.sqrt(s_hat**2 - s_t**2) * xi
    lam_hat = -2 * math.log(s_hat)
    want = S.heun_step(x_raised * process.alpha_sigma_at(lam_hat)[0], None, lam_hat, ls, denoiser=gm.denoise)
    torch.testing.assert_close(S.edm_step(z, None, lt, ls, xi, denoiser=gm.denoise, gamma=0.3), want,
                               rtol=1e-12, atol=1e-12)


def test_sigma_space_view_is_the_vp_denoiser_through_process():
    """common.sigma_space: D(x_σ; s) = denoiser(α x_σ, λ = −2 log s) (Karras et al. 2022 §2)."""
    gm = GaussianMixture.toy_2d()
    x_sigma, s = _noise(8, 2, 3), 0.7
    lam = -2 * math.log(s)
    want = gm.denoise(x_sigma / math.sqrt(1 + s * s), torch.tensor([lam]))
    got = S.common.sigma_space(lambda z, l: gm.denoise(z, torch.tensor([l])))(x_sigma, s)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_step_into_data_returns_x_hat():
    z, x = _noise(4, 2, 1), _noise(4, 2, 2)
    D = lambda z_, lam: x  # noqa: E731
    for out in (S.ddpm_step(z, x, 3.0, math.inf, _noise(4, 2, 3), var_interp=1.0), S.ddim_step(z, x, 3.0, math.inf),
                S.dpmpp_2m_step(z, x, 3.0, math.inf, x_hat_prev=z, logsnr_prev=2.0), S.euler_step(z, x, 3.0, math.inf),
                S.heun_step(z, x, 3.0, math.inf, denoiser=D), S.dpm_solver_step(z, x, 3.0, math.inf, denoiser=D),
                S.edm_step(z, x, 3.0, math.inf, denoiser=D)):
        torch.testing.assert_close(out, x)


def test_consistency_step_renoises_the_sample_to_the_next_level():
    """Song et al. 2023 Alg. 1: x̂_τ = x + sqrt(τ² − ε²) ξ, returned as the VP state α x̂_τ."""
    x, xi = _noise(4, 2, 1), _noise(4, 2, 2)
    tau = 0.7
    lam = -2 * math.log(tau)
    out = S.consistency_step(None, x, 1.0, lam, xi, sigma_eps=0.1)
    torch.testing.assert_close(out, (x + math.sqrt(tau**2 - 0.01) * xi) / math.sqrt(1 + tau**2), rtol=1e-12, atol=1e-12)
