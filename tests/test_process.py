"""The VP process: parameterisation round trips, posteriors (β̃ on discrete steps, and SiD2's
σ_{t→s} formula, Hoogeboom et al. 2025 eq. 3), transitions, sigma-space, EDM preconditioning, and
the one-λ ``*_at`` forms the samplers use."""

import math

import pytest
import torch

from pixdiff import process as P
from pixdiff import schedules as S
from pixdiff.denoiser import Denoiser

G = torch.Generator().manual_seed(0)


def _rand(*shape):
    return torch.randn(*shape, generator=G, dtype=torch.float64)


def test_alpha_sigma():
    lam = torch.tensor([-20.0, -1.0, 0.0, 3.0, 20.0], dtype=torch.float64)
    a, s = P.alpha_sigma(lam)
    assert torch.allclose(a**2 + s**2, torch.ones(5, dtype=torch.float64))
    assert torch.allclose(torch.log(a**2 / s**2), lam, atol=1e-9)


@pytest.mark.parametrize("kind", ["eps", "x", "v", "score"])
def test_parameterisation_roundtrip(kind):
    x, eps, lam = _rand(8, 3, 4, 4), _rand(8, 3, 4, 4), _rand(8) * 4
    z = P.diffuse(x, lam, eps)
    pred = P.from_x(x, kind, z, lam)
    assert torch.allclose(P.to_x(pred, kind, z, lam), x, atol=1e-10)
    a, s = P.alpha_sigma(lam)
    a, s = a[:, None, None, None], s[:, None, None, None]
    expect = {"eps": eps, "x": x, "v": a * eps - s * x, "score": -eps / s}[kind]
    assert torch.allclose(pred, expect, atol=1e-9)


def test_posterior_matches_sid2_eq3():
    """SiD2 eq. 3 with σ²_{t|s} = σ_t² − α²_{t|s} σ_s² (the square restored)."""
    lt, ls = torch.tensor([-2.0, 0.5, 3.0], dtype=torch.float64), torch.tensor([-1.0, 2.0, 3.5], dtype=torch.float64)
    z, x = _rand(3, 5), _rand(3, 5)
    mean, var = P.posterior(z, x, lt, ls)
    at, st = P.alpha_sigma(lt)
    as_, ss = P.alpha_sigma(ls)
    ats = at / as_
    sts2 = st**2 - ats**2 * ss**2
    var_ref = 1.0 / (1.0 / ss**2 + ats**2 / sts2)
    mean_ref = var_ref[:, None] * ((ats / sts2)[:, None] * z + (as_ / ss**2)[:, None] * x)
    assert torch.allclose(var, var_ref, rtol=1e-10)
    assert torch.allclose(mean, mean_ref, rtol=1e-10, atol=1e-12)
    a, v = P.transition(lt, ls)
    assert torch.allclose(a, ats) and torch.allclose(v, sts2, rtol=1e-10)


@pytest.mark.parametrize("name", ["linear_discrete", "iddpm_cosine_discrete"])
def test_posterior_variance_is_beta_tilde(name):
    s = S.get(name)
    lam = s.logsnr_table
    _, _, var = P.posterior_coefficients(lam[1:], lam[:-1])
    assert torch.allclose(var, s.posterior_variance[1:], rtol=1e-8)
    # DDPM's mean coefficients (Ho et al. 2020, eq. 7): sqrt(ᾱ_{t−1}) β_t/(1−ᾱ_t) and sqrt(α_t)(1−ᾱ_{t−1})/(1−ᾱ_t)
    ab, b = s.alphas_cumprod, s.betas
    cz, cx, _ = P.posterior_coefficients(lam[1:], lam[:-1])
    assert torch.allclose(cx, ab[:-1].sqrt() * b[1:] / (1 - ab[1:]), rtol=1e-8)
    assert torch.allclose(cz, (1 - b[1:]).sqrt() * (1 - ab[:-1]) / (1 - ab[1:]), rtol=1e-8)


def test_transition_composes_to_marginal():
    """q(z_t | z_s) ∘ q(z_s | x) = q(z_t | x): variances and means agree."""
    ls, lt = torch.tensor(1.3, dtype=torch.float64), torch.tensor(-0.7, dtype=torch.float64)
    a_ts, v_ts = P.transition(lt, ls)
    as_, ss = P.alpha_sigma(ls)
    at, st = P.alpha_sigma(lt)
    assert torch.allclose(a_ts * as_, at)
    assert torch.allclose(a_ts**2 * ss**2 + v_ts, st**2)


def test_posterior_is_exact_conditional_monte_carlo():
    """Draw (z_s, z_t) jointly from the process for a fixed x; regress z_s on z_t."""
    g = torch.Generator().manual_seed(1)
    n = 200_000
    x = torch.full((n, 1), 0.7, dtype=torch.float64)
    ls, lt = 1.0, -0.5
    zs, _ = P.q_sample(x, torch.tensor(ls), g)
    zt = P.sample_transition(zs, torch.tensor(lt), torch.tensor(ls), g)
    cz, cx, var = P.posterior_coefficients(torch.tensor(lt), torch.tensor(ls))
    resid = zs - (cz * zt + cx * x)
    assert abs(resid.mean().item()) < 0.005
    assert resid.var().item() == pytest.approx(var.item(), rel=0.01)


def test_sigma_space_roundtrip_and_edm_coefficients():
    x, eps, lam = _rand(4, 2), _rand(4, 2), torch.tensor([-3.0, 0.0, 2.0, 6.0], dtype=torch.float64)
    z = P.diffuse(x, lam, eps)
    xs, s = P.to_sigma_space(z, lam)
    assert torch.allclose(xs, x + s[:, None] * eps, atol=1e-10)
    z2, lam2 = P.from_sigma_space(xs, s)
    assert torch.allclose(z2, z, atol=1e-10) and torch.allclose(lam2, lam)
    c_skip, c_out, c_in, c_noise = P.edm_preconditioning(s, 0.5)
    # EDM's design (Karras et al. 2022, App. B.6): unit-variance network input when Var x = σ_d² ...
    assert torch.allclose(c_in**2 * (0.25 + s**2), torch.ones(4, dtype=torch.float64))
    # ... and a unit-variance effective training target (x − c_skip x_σ)/c_out has unit variance when Var x = σ_d²
    tvar = ((1 - c_skip) ** 2 * 0.25 + c_skip**2 * s**2) / c_out**2
    assert torch.allclose(tvar, torch.ones(4, dtype=torch.float64))
    assert torch.allclose(c_noise, torch.log(s) / 4)
    with pytest.raises(ValueError):
        P.from_sigma_space(xs, -1.0)


class _Oracle(torch.nn.Module):
    """A 'network' that returns the exact target for its parameterisation, given the truth."""

    def __init__(self, x, kind):
        super().__init__()
        self.x, self.kind = x, kind

    def forward(self, x_in, logsnr, cond=None):
        return self.target

    def prepare(self, z, lam, sigma_data=0.5):
        if self.kind == "edm":
            xs, s = P.to_sigma_space(z, lam)
            c_skip, c_out, _, _ = P.edm_preconditioning(s, sigma_data)
            self.target = (self.x - c_skip[:, None, None, None] * xs) / c_out[:, None, None, None]
        else:
            self.target = P.from_x(self.x, self.kind, z, lam)


@pytest.mark.parametrize("kind", ["eps", "x", "v", "edm"])
def test_denoiser_wrapper_recovers_x(kind):
    x, eps, lam = _rand(6, 2, 3, 3), _rand(6, 2, 3, 3), _rand(6) * 3
    z = P.diffuse(x, lam, eps)
    net = _Oracle(x, kind)
    net.prepare(z, lam)
    d = Denoiser(net, kind)
    assert torch.allclose(d(z, lam), x, atol=1e-9)


def test_denoiser_bad_inputs():
    with pytest.raises(ValueError, match="eps, x, v, edm"):
        Denoiser(torch.nn.Identity(), "score-ish")
    d = Denoiser(lambda x, l, c: torch.zeros(x.shape[0], 3, 2, 2), "x")
    with pytest.raises(ValueError, match="channels"):
        d(torch.zeros(1, 1, 2, 2), torch.zeros(1))
    with pytest.raises(ValueError, match="unknown prediction"):
        P.to_x(torch.zeros(1), "y", torch.zeros(1), 0.0)
    with pytest.raises(ValueError, match="logsnr_t <= logsnr_s"):
        P.transition(1.0, 0.0)
    with pytest.raises(ValueError, match="batch"):
        P.diffuse(torch.zeros(2, 3), torch.zeros(3), torch.zeros(2, 3))
    assert math.isfinite(P.alpha_sigma(torch.tensor(50.0))[1].item())


@pytest.mark.parametrize("lt,ls", [(-30.0, -29.0), (-3.0, -1.0), (-0.5, 0.7), (2.0, 9.0), (12.0, 40.0), (5.0, math.inf)])
def test_one_lambda_forms_equal_the_tensor_forms(lt, ls):
    """``alpha_sigma_at`` etc. (floats, for the samplers' loops) are the tensor relations."""
    for lam in (lt, ls):
        a, s = P.alpha_sigma(torch.tensor(lam, dtype=torch.float64))
        assert P.alpha_sigma_at(lam) == pytest.approx((a.item(), s.item()), rel=1e-14, abs=1e-300)
        assert P.sigma_at(lam) == pytest.approx(P.sigma_from_logsnr(lam).item(), rel=1e-14, abs=0)
        if lam != math.inf:
            assert P.logsnr_at(P.sigma_at(lam)) == pytest.approx(lam, rel=1e-13, abs=1e-13)
    assert P.logsnr_at(0.0) == math.inf and P.sigma_at(math.inf) == 0.0
    want = [c.item() for c in P.posterior_coefficients(lt, ls)]
    assert P.posterior_coefficients_at(lt, ls) == pytest.approx(want, rel=1e-13, abs=1e-300)
    want = [c.item() for c in P.transition(lt, ls)]
    assert P.transition_at(lt, ls) == pytest.approx(want, rel=1e-13, abs=1e-300)


def test_sigma_logsnr_maps_and_schedules_use_them():
    s = torch.tensor([0.0, 0.002, 1.0, 80.0], dtype=torch.float64)
    lam = P.logsnr_from_sigma(s)
    assert lam[0] == math.inf and torch.allclose(P.sigma_from_logsnr(lam), s, rtol=1e-14)
    assert torch.equal(S.logsnr_from_sigma(s), lam) and torch.equal(S.sigma_from_logsnr(lam[1:]), P.sigma_from_logsnr(lam[1:]))
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    cos = S.get("cosine")
    for u, v in zip(cos.alpha_sigma(t), P.alpha_sigma(cos.logsnr(t))):
        assert torch.equal(u, v)
    with pytest.raises(ValueError, match="non-negative"):
        P.logsnr_from_sigma(-0.1)
