"""Guidance under the ancestral samplers (``ddpm``, ``sid2_ddpm``), against exact answers.

1. Learned variance (Nichol & Dhariwal 2021) survives guidance: the wrappers expose ``learn_sigma``
   and ``predict``; x̂ is guided, the variance is the conditional model's (Dhariwal & Nichol 2021
   guide the mean only). CFG with w = 0 is the unguided sampler bit for bit, w → 0 converges to it
   linearly, and at w > 0 every step's noise has the learned standard deviation.
2. Classifier guidance in ``ddpm`` is Dhariwal & Nichol 2021 Algorithm 1: the step's mean moves by
   s Σ ∇_{z_t} log p_φ(y | z_t) with Σ the step's own variance (β̃, β or learned), checked on one
   step against the closed-form classifier gradient of the mixture (Bayes: ∇ log p(y|z) =
   ∇ log p(z|y) − ∇ log p(z)). The ODE samplers keep the x̂ (DDIM ε̂) form, Alg. 2.
"""

from __future__ import annotations

import math

import pytest
import torch

from pixdiff import guidance as G
from pixdiff import process as P
from pixdiff import samplers as S
from pixdiff.analytic import GaussianMixture
from pixdiff.denoiser import DenoiserOutput

F64 = torch.float64
N = 64


@pytest.fixture(scope="module")
def gm():
    return GaussianMixture.toy_2d()


class Learned:
    """An IDDPM-style model: the exact mixture x̂ and a learned log-variance fraction f(z, λ, c) ∈ [0, 1]
    that depends on the input (and on the label, so that the conditional model's f is identifiable)."""

    learn_sigma = True

    def __init__(self, gm):
        self.gm = gm

    def f(self, z, logsnr, cond):
        lam = torch.as_tensor(logsnr, dtype=F64).reshape(-1, 1)
        c = 0.0 if cond is None else torch.as_tensor(cond, dtype=F64).reshape(-1, 1)
        return torch.sigmoid(z.to(F64) + 0.1 * lam + 0.7 * c - 0.3).to(z.dtype)

    def __call__(self, z, logsnr, cond=None):
        return self.gm.denoise(z, logsnr, cond)

    def predict(self, z, logsnr, cond=None):
        return DenoiserOutput(self.gm.denoise(z, logsnr, cond), self.f(z, logsnr, cond))


def _noise(seed=0):
    return torch.randn(N, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _labels():
    return torch.arange(N) % 3


def _ddpm(den, grid=None, steps=12, **kw):
    kw = dict(kw)
    if grid is not None:
        kw["grid"] = grid
    else:
        kw["steps"] = steps
    return S.sample(den, (N, 2), "ddpm", noise=_noise(), cond=_labels(), generator=torch.Generator().manual_seed(1),
                    **kw)


# --- 1. learned variance through guidance --------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda d, w: G.classifier_free(d, w),
    lambda d, w: G.classifier_free(d, w, interval=(-2.0, 3.0)),
])
def test_cfg_w0_with_learned_variance_is_the_unguided_sampler(gm, make):
    model = Learned(gm)
    assert make(model, 0.0).learn_sigma
    assert torch.equal(_ddpm(make(model, 0.0)), _ddpm(model))


def test_cfg_w_to_0_converges_to_the_unguided_sampler_linearly(gm):
    model = Learned(gm)
    ref = _ddpm(model)
    gaps = [float((_ddpm(G.classifier_free(model, w)) - ref).abs().max()) for w in (1e-2, 1e-4, 1e-6)]
    assert gaps[2] < 1e-5, gaps
    for a, b in zip(gaps, gaps[1:]):
        assert 30.0 < a / b < 300.0, gaps  # O(w)


def _manual_ancestral(x_hat_fn, f_fn, lam, noise, generator):
    """Ancestral sampling written out: z_s = μ(x̂) + exp(½(f log β + (1 − f) log β̃)) ξ."""
    z = noise * P.alpha_sigma(torch.tensor(lam[0], dtype=F64))[1]
    for lt, ls in zip(lam[:-1], lam[1:]):
        x_hat, f = x_hat_fn(z, lt), f_fn(z, lt)
        mean, var_tilde = P.posterior(z, x_hat, lt, ls)
        if ls == math.inf:
            z = mean
            continue
        beta = P.transition(lt, ls)[1]
        std = torch.exp(0.5 * (f * torch.log(beta) + (1 - f) * torch.log(var_tilde)))
        z = mean + std * torch.randn(z.shape, generator=generator, dtype=z.dtype)
    return z


@pytest.mark.parametrize("wrap", ["cfg", "auto"])
def test_guided_ddpm_draws_with_the_conditional_models_learned_variance(gm, wrap):
    model, w = Learned(gm), 1.5
    cond = _labels()
    weak = GaussianMixture(gm.weights, gm.means * 0.9, gm.covs * 1.6, labels=gm.labels)
    if wrap == "cfg":
        guided = G.classifier_free(model, w)
        x_fn = lambda z, l: (1 + w) * gm.denoise(z, l, cond) - w * gm.denoise(z, l)
    else:
        guided = G.autoguidance(model, weak.denoise, w)
        x_fn = lambda z, l: weak.denoise(z, l, cond) + w * (gm.denoise(z, l, cond) - weak.denoise(z, l, cond))
    assert guided.learn_sigma
    out = guided.predict(_noise(), torch.full((N,), 0.5, dtype=F64), cond)
    torch.testing.assert_close(out.var_interp, model.f(_noise(), 0.5, cond), rtol=0, atol=0)
    grid = S.grids.make("uniform_t", "linear_discrete", 12)
    got = _ddpm(guided, grid=grid)
    want = _manual_ancestral(x_fn, lambda z, l: model.f(z, l, cond), grid.tolist(), _noise(),
                             torch.Generator().manual_seed(1))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_guidance_wrappers_without_learned_variance_keep_beta_tilde(gm):
    den = gm.denoise
    g = G.classifier_free(den, 1.0)
    assert not g.learn_sigma
    assert g.predict(_noise(), torch.zeros(N, dtype=F64), _labels()).var_interp is None
    with pytest.raises(ValueError, match="needs a denoiser whose predict"):
        _ddpm(g, variance="learned")


# --- 2. classifier guidance in the ancestral step: Algorithm 1 ----------------------------------------


def _exact_classifier(gm):
    return lambda z, logsnr: torch.log(gm.class_posterior(z, logsnr))


@pytest.mark.parametrize("variance", ["beta_tilde", "beta", "learned"])
@pytest.mark.parametrize("conditional", [True, False])
def test_ddpm_classifier_guidance_moves_the_mean_by_s_sigma_grad(gm, variance, conditional):
    """One step λ_t = −1 → λ_s = 0.5 with the same noise, guided and unguided: the states differ by
    exactly s Σ g (z/α is returned at the finite end, so the difference is multiplied back by α_s)."""
    model, s, cond = Learned(gm), 3.0, _labels()
    lt, ls = -1.0, 0.5
    grid = torch.tensor([lt, ls], dtype=F64)
    guided = G.classifier(model, _exact_classifier(gm), s, conditional=conditional)
    opts = {} if variance == "learned" else {"variance": variance}
    unguided = (lambda z, l, c=None: model(z, l, c if conditional else None))
    if variance == "learned":
        unguided = Learned(gm) if conditional else _Uncond(gm)
    diff = (_ddpm(guided, grid=grid, **opts) - _ddpm(unguided, grid=grid, **opts)) * P.alpha_sigma(torch.tensor(ls))[0]
    z_t = _noise() * P.alpha_sigma(torch.tensor(lt, dtype=F64))[1]
    lam = torch.full((N,), lt, dtype=F64)
    g = gm.score(z_t, lam, cond) - gm.score(z_t, lam)  # ∇ log p(y | z_t), closed form
    var_tilde = P.posterior_coefficients(lt, ls)[2]
    beta = P.transition(lt, ls)[1]
    f = {"beta_tilde": 0.0, "beta": 1.0}.get(variance)
    if f is None:
        f = model.f(z_t, lt, cond if conditional else None)
    sigma2 = torch.exp(f * torch.log(beta) + (1 - f) * torch.log(var_tilde))
    torch.testing.assert_close(diff, s * sigma2 * g, rtol=1e-9, atol=1e-12)
    assert diff.abs().max() > 1e-3


class _Uncond(Learned):
    """The learned model asked without labels (what classifier guidance with conditional=False sees)."""

    def __call__(self, z, logsnr, cond=None):
        return super().__call__(z, logsnr, None)

    def predict(self, z, logsnr, cond=None):
        return super().predict(z, logsnr, None)


def test_ddpm_classifier_guidance_costs_one_evaluation_per_step_and_shares_alg1_with_sid2(gm):
    guided = G.classifier(gm.denoise, _exact_classifier(gm), 2.0)
    _, nfe = S.sample(guided, (N, 2), "ddpm", steps=9, cond=_labels(), return_nfe=True)
    assert nfe == 9
    # sid2_ddpm shares the ancestral loop: γ = 0 is ddpm with β, γ = 1 is ddpm with β̃
    grid = S.grids.make("uniform_t", "cosine", 8)
    for gamma, variance in ((0.0, "beta"), (1.0, "beta_tilde")):
        a = S.sample(guided, (N, 2), "sid2_ddpm", grid=grid, gamma=gamma, clip_x=None, noise=_noise(),
                     cond=_labels(), generator=torch.Generator().manual_seed(1))
        b = _ddpm(guided, grid=grid, variance=variance)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_ode_samplers_keep_the_x_hat_shift_form(gm):
    """DDIM with classifier guidance is Alg. 2's ε̂ − σ s g, i.e. DDIM on x̃ = x̂ + (σ²/α) s g."""
    s, cond = 2.0, _labels()
    guided = G.classifier(gm.denoise, _exact_classifier(gm), s)
    grid = S.grids.make("uniform_t", "cosine", 6)

    def x_tilde(z, logsnr, c=None):
        lam = torch.as_tensor(logsnr, dtype=F64).expand(z.shape[0])
        g = gm.score(z, lam, c) - gm.score(z, lam)
        a, sig = P.alpha_sigma(lam)
        return gm.denoise(z, lam, c) + (sig * sig / a)[:, None] * s * g

    a = S.sample(guided, (N, 2), "ddim", grid=grid, noise=_noise(), cond=cond)
    b = S.sample(x_tilde, (N, 2), "ddim", grid=grid, noise=_noise(), cond=cond)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_cfg_with_a_learn_sigma_denoiser_and_null_label_batching():
    """A real ``Denoiser(learn_sigma=True)`` with a null label (one batched forward): CFG's predict
    returns the conditional half's var_interp, and ddpm with w = 0 is the unguided sampler."""
    from types import SimpleNamespace

    from pixdiff.denoiser import Denoiser

    class Net(torch.nn.Module):
        config = SimpleNamespace(num_classes=3)  # null label 3

        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(4, 4, dtype=F64)
            self.lin = torch.nn.Linear(2 + 4 + 1, 4, dtype=F64)

        def forward(self, z, logsnr, cond=None):
            cond = torch.full((z.shape[0],), 3) if cond is None else cond
            lam = torch.as_tensor(logsnr, dtype=F64).expand(z.shape[0])[:, None]
            return torch.tanh(self.lin(torch.cat([z, self.emb(cond), lam], 1)))

    torch.manual_seed(0)
    den = Denoiser(Net(), "eps", learn_sigma=True)
    assert den.null_label == 3
    z, lam, cond = _noise(), torch.linspace(-3, 3, N, dtype=F64), _labels()
    with torch.no_grad():
        out = G.classifier_free(den, 2.0).predict(z, lam, cond)
        ref = den.predict(z, lam, cond)
        x_u = den(z, lam, torch.full((N,), 3))
    torch.testing.assert_close(out.var_interp, ref.var_interp, rtol=0, atol=1e-15)
    torch.testing.assert_close(out.x_hat, 3.0 * ref.x_hat - 2.0 * x_u, rtol=1e-12, atol=1e-12)
    assert torch.equal(_ddpm(G.classifier_free(den, 0.0), steps=5), _ddpm(den, steps=5))
