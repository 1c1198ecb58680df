"""Schedules: endpoints, monotonicity, inverses, derivatives, and the discrete tables against
diffusers' DDPMScheduler (an independent implementation)."""

import math

import numpy as np
import pytest
import torch

from pixdiff import schedules as S

ALL = S.available()
T_INNER = torch.linspace(0.001, 0.999, 401, dtype=torch.float64)


@pytest.mark.parametrize("name", ALL)
def test_monotone_decreasing(name):
    lam = S.get(name).logsnr(T_INNER)
    assert lam.dtype == torch.float64
    assert (lam[1:] < lam[:-1]).all(), f"{name}: λ(t) must decrease strictly"


@pytest.mark.parametrize("name", ALL)
def test_roundtrip_t_of_logsnr(name):
    s = S.get(name)
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    back = s.t(s.logsnr(t))
    rel = ((back - t).abs() / t).max().item()
    assert rel < 1e-9, f"{name}: t(λ(t)) rel. error {rel}"


@pytest.mark.parametrize("name", ALL)
def test_derivative_matches_finite_differences(name):
    s = S.get(name)
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    if isinstance(s, S.DiscreteSchedule):
        # piecewise linear: compare inside segments (midpoints of steps)
        t = (torch.arange(20, 980, 19, dtype=torch.float64) + 0.5) / 1000
    h = 1e-6
    fd = (s.logsnr(t + h) - s.logsnr(t - h)) / (2 * h)
    d = s.dlogsnr_dt(t)
    assert torch.allclose(d, fd, rtol=1e-5, atol=1e-6), f"{name}: max diff {(d - fd).abs().max()}"
    assert (d < 0).all()


def test_endpoints():
    cos = S.get("cosine")
    assert cos.logsnr(0.0).item() == pytest.approx(15.0, abs=1e-9)
    assert cos.logsnr(1.0).item() == pytest.approx(-15.0, abs=1e-9)
    assert cos.logsnr(0.5).item() == pytest.approx(0.0, abs=1e-12)  # α = σ halfway
    # shifted cosine: 64 px base, 256 px image ⇒ λ lowered by 2 log 4 everywhere
    sh = S.get("shifted_cosine", resolution=256, base_resolution=64)
    assert (sh.logsnr(T_INNER) - cos.logsnr(T_INNER)).allclose(torch.tensor(-2 * math.log(4.0), dtype=torch.float64))
    # interpolated: shift of `high` at t = 0, of `low` at t = 1
    ci = S.get("cosine_interpolated", resolution=128, low=32, high=512)
    assert ci.logsnr(0.0).item() == pytest.approx(15 + 2 * math.log(512 / 128))
    assert ci.logsnr(1.0).item() == pytest.approx(-15 + 2 * math.log(32 / 128))
    assert ci.logsnr(0.5).item() == pytest.approx(math.log(32 / 128) + math.log(512 / 128))
    # EDM: σ_min at t = 0, σ_max at t = 1
    edm = S.get("edm")
    assert S.sigma_from_logsnr(edm.logsnr(0.0)).item() == pytest.approx(0.002)
    assert S.sigma_from_logsnr(edm.logsnr(1.0)).item() == pytest.approx(80.0)
    ve = S.get("ve", sigma_min=0.01, sigma_max=50)
    assert S.sigma_from_logsnr(ve.logsnr(1.0)).item() == pytest.approx(50.0)
    # VP / IDDPM cosine: clean at t = 0 (λ = +∞); VP at t = 1: ᾱ = exp(−(0.1 + 19.9/2))
    vp = S.get("vp")
    assert vp.logsnr(0.0).item() == math.inf
    ab1 = math.exp(-(0.1 + 19.9 / 2))
    assert vp.logsnr(1.0).item() == pytest.approx(math.log(ab1 / (1 - ab1)), rel=1e-9)
    assert S.get("iddpm_cosine").logsnr(0.0).item() == math.inf
    assert S.get("iddpm_cosine").logsnr(1.0).item() < -70


def test_edm_lognormal_is_the_training_distribution():
    s = S.get("edm_lognormal")
    u = torch.rand(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    log_sigma = -0.5 * s.logsnr(u)
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.01)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.01)


def test_vp_continuous_is_limit_of_ddpm_linear():
    cont, disc = S.get("linear"), S.get("linear_discrete")
    t = disc.step_t()[9::10]
    # ᾱ_i = Π(1 − β_j) vs exp(−∫β): agree to O(β²) ~ 1e-3 in λ over the chain
    assert torch.allclose(cont.logsnr(t), disc.logsnr(t), atol=0.08)


def _diffusers():
    pytest.importorskip("diffusers")
    from diffusers import DDPMScheduler

    return DDPMScheduler


@pytest.mark.parametrize("ours,theirs", [("linear_discrete", "linear"), ("iddpm_cosine_discrete", "squaredcos_cap_v2")])
def test_discrete_alphas_cumprod_match_diffusers(ours, theirs):
    DDPMScheduler = _diffusers()
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs, beta_start=1e-4, beta_end=0.02)
    s = S.get(ours)
    assert torch.allclose(s.alphas_cumprod, ref.alphas_cumprod.double(), rtol=0, atol=1e-6)
    assert torch.allclose(s.betas, ref.betas.double(), rtol=0, atol=1e-6)


def test_cosine_table_clipped_and_continuous_agrees():
    betas = S.cosine_beta_table(1000)
    assert betas.max().item() == pytest.approx(0.999)
    cont, disc = S.get("iddpm_cosine"), S.get("iddpm_cosine_discrete")
    t = disc.step_t()[:-5]  # away from the clipped last steps
    assert torch.allclose(cont.logsnr(t), disc.logsnr(t), rtol=1e-9, atol=1e-9)


def test_discrete_interpolates_between_steps_and_hits_them():
    s = S.get("linear_discrete")
    assert torch.allclose(s.logsnr(s.step_t()), s.logsnr_table, atol=1e-12)
    t0, t1 = s.step_t()[100], s.step_t()[101]
    mid = s.logsnr(0.5 * (t0 + t1))
    assert mid.item() == pytest.approx(0.5 * (s.logsnr_table[100] + s.logsnr_table[101]).item())
    assert np.isfinite(s.logsnr(0.0).item()) and s.logsnr(0.0) > s.logsnr_table[0]


def test_respace_betas_formula():
    base = S.get("linear_discrete")
    use = S.ddim_timesteps(1000, 50)
    r = S.respace(base, use)
    ab = base.alphas_cumprod
    idx = torch.tensor(use) - 1
    expect = 1 - ab[idx] / torch.cat([torch.ones(1, dtype=torch.float64), ab[idx[:-1]]])
    assert torch.allclose(r.betas, expect, rtol=1e-12)
    assert torch.allclose(torch.cumprod(1 - r.betas, 0), ab[idx], rtol=1e-12)
    # the respaced chain keeps the original times: λ at its steps is the original λ
    assert torch.allclose(r.logsnr(r.step_t()), base.logsnr_table[idx], atol=1e-12)


def test_ddim_subsequences():
    assert S.ddim_timesteps(1000, 10) == [1, 101, 201, 301, 401, 501, 601, 701, 801, 901]
    q = S.ddim_timesteps(1000, 10, "quadratic")
    assert q[0] == 1 and len(q) == 10 and q == sorted(q)
    gaps = np.diff(q)
    assert (np.diff(gaps) >= 0).all()  # quadratic: gaps grow
    with pytest.raises(ValueError, match="uniform"):
        S.ddim_timesteps(1000, 10, "cubic")


def test_edm_sigma_grid():
    g = S.edm_sigma_grid(18)
    assert g[0].item() == pytest.approx(80.0) and g[-1].item() == pytest.approx(0.002)
    assert (g[1:] < g[:-1]).all()
    # the grid samples the continuous EDM schedule at t = 1 − i/(N−1)
    edm = S.get("edm")
    t = 1 - torch.arange(18, dtype=torch.float64) / 17
    assert torch.allclose(S.logsnr_from_sigma(g), edm.logsnr(t), atol=1e-10)


def test_alpha_sigma_variance_preserving():
    a, s = S.get("cosine").alpha_sigma(T_INNER)
    assert torch.allclose(a * a + s * s, torch.ones_like(a))


def test_bad_inputs():
    with pytest.raises(ValueError, match="cosine_interpolated"):
        S.get("cosinus")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        S.get("cosine").logsnr(1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        S.get("vp").dlogsnr_dt(torch.tensor([-0.1]))
    with pytest.raises(ValueError, match="non-negative"):
        S.logsnr_from_sigma(-1.0)
    with pytest.raises(ValueError, match="bad option"):
        S.get("cosine", resolution=3)
    with pytest.raises(ValueError):
        S.get("edm", sigma_min=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        S.get("cosine").logsnr(float("nan"))
