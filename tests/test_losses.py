"""Specs for pixdiff.losses / weighting / vlb: each weighting is its paper's loss in every space, the
exact denoiser attains the analytic minimum, L_hybrid's stop-gradient, importance sampling of t,
the Haar power loss, and the errors a user can cause."""

import math

import pytest
import torch
from torch import nn

from pixdiff import process, schedules
from pixdiff.analytic import GaussianMixture
from pixdiff.denoiser import Denoiser
from pixdiff.losses import LossConfig, loss_fn, make_sampler, power_loss, sample_t
from pixdiff.vlb import ImportanceSampler
from pixdiff.weighting import (
    WEIGHTINGS,
    eps_to_v,
    eps_to_x,
    haar2d,
    haar_subbands,
    ihaar2d,
    log_weight_eps,
    sigmoid_bias,
    time_shifted_bias,
)

F64 = torch.float64



def _images(B=6, C=3, H=8, W=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, C, H, W, generator=g, dtype=F64) * 2 - 1, g


def _toy_denoiser(z, logsnr, cond=None):
    """A smooth, imperfect x̂ (not a Denoiser): enough to compare the loss in different spaces."""
    return 0.7 * torch.tanh(z) + 0.05


def _cfg(weighting, **kw):
    kw.setdefault("bias", -1.0 if weighting == "sigmoid" else None)
    return LossConfig(weighting=weighting, **kw)


# --- every weighting is the same number in ε-, x- and v-space (Hoogeboom et al. 2025, §2.1) ---


@pytest.mark.parametrize("weighting", list(WEIGHTINGS))
@pytest.mark.parametrize("schedule", ["cosine", "edm_lognormal", "linear_discrete"])
def test_eps_x_v_forms_agree(weighting, schedule):
    x, g = _images()
    out = loss_fn(_toy_denoiser, x, None, g, _cfg(weighting, schedule=schedule))
    lam, W = out.logsnr, out.weight
    out_noise = _replay_noise(x)
    z = process.diffuse(x, lam, out_noise)
    x_hat = _toy_denoiser(z, lam)
    a, s = process.alpha_sigma(lam)
    eps_hat, v_hat = process.from_x(x_hat, "eps", z, lam), process.from_x(x_hat, "v", z, lam)
    v = a.reshape(-1, 1, 1, 1) * out_noise - s.reshape(-1, 1, 1, 1) * x
    D = x[0].numel()
    eps_form = 0.5 * W * ((out_noise - eps_hat) ** 2).flatten(1).sum(1) / D
    x_form = 0.5 * torch.exp(eps_to_x(W.log(), lam)) * ((x - x_hat) ** 2).flatten(1).sum(1) / D
    v_form = 0.5 * torch.exp(eps_to_v(W.log(), lam)) * ((v - v_hat) ** 2).flatten(1).sum(1) / D
    torch.testing.assert_close(out.loss, x_form, rtol=1e-10, atol=0)
    torch.testing.assert_close(eps_form, x_form, rtol=1e-7, atol=0)
    torch.testing.assert_close(v_form, x_form, rtol=1e-7, atol=0)


def _replay_noise(x):
    # loss_fn draws t then ε from the generator: replay the same stream to recover ε.
    g = torch.Generator().manual_seed(0)
    torch.rand(x.shape, generator=g, dtype=F64)  # the draw of x in _images
    torch.rand(x.shape[0], generator=g, dtype=F64)  # t
    return torch.randn(x.shape, generator=g, dtype=x.dtype)


def test_weightings_are_the_papers_losses():
    """Total ε-weight W = −dλ/dt w̃: ε-mse is DDPM's ‖ε − ε̂‖², x-mse ‖x − x̂‖², v-mse ‖v − v̂‖²,
    ELBO w̃ = 1, sigmoid w̃ = sigmoid(b − λ)."""
    x, g = _images()
    sch = schedules.get("cosine")
    for name, expect in {
        "eps_mse": lambda lam, d: torch.full_like(lam, 2.0),
        "x_mse": lambda lam, d: 2.0 * torch.exp(-lam),
        "v_mse": lambda lam, d: 2.0 / torch.sigmoid(lam),
        "elbo": lambda lam, d: d,
        "sigmoid": lambda lam, d: d * torch.sigmoid(-1.0 - lam),
    }.items():
        out = loss_fn(_toy_denoiser, x, None, torch.Generator().manual_seed(1), _cfg(name))
        torch.testing.assert_close(out.weight, expect(out.logsnr, -sch.dlogsnr_dt(out.t)), rtol=1e-9, atol=0)


def test_sigmoid_x_form_sign():
    """Hoogeboom et al. 2025, eq. 4: sigmoid(b − λ) e^λ = e^{+b} sigmoid(λ − b); the e^{−b} that
    some transcriptions of the equation print is a typo."""
    lam = torch.linspace(-15, 15, 61, dtype=F64)
    for b in (-3.0, -1.0, 0.0, 2.0):
        w_x = torch.exp(eps_to_x(log_weight_eps("sigmoid", lam, bias=b), lam))
        torch.testing.assert_close(w_x, math.exp(b) * torch.sigmoid(lam - b), rtol=1e-12, atol=0)
        assert b == 0 or not torch.allclose(w_x, math.exp(-b) * torch.sigmoid(lam - b))
        assert (w_x.diff() > 0).all()  # monotonically increasing in x-space (SiD2 §2.1)


def test_edm_weighting_is_karras_loss():
    """With schedule edm_lognormal the loss is EDM's λ(σ) c_out² ‖F − (y − c_skip(y + n))/c_out‖²."""
    x, g = _images(B=16)
    net = nn.Conv2d(3, 3, 3, padding=1).to(F64)
    den = Denoiser(lambda xin, lam, c: net(xin), "edm", sigma_data=0.5)
    cfg = LossConfig(weighting="edm", schedule="edm_lognormal", sigma_data=0.5, p_mean=-1.2, p_std=1.2)
    out = loss_fn(den, x, None, g, cfg)
    g2 = torch.Generator().manual_seed(0)
    torch.rand(x.shape, generator=g2, dtype=F64), torch.rand(16, generator=g2, dtype=F64)
    n = torch.randn(x.shape, generator=g2, dtype=F64)
    x_sigma, s = process.to_sigma_space(process.diffuse(x, out.logsnr, n), out.logsnr)
    c_skip, c_out, c_in, _ = (c.reshape(-1, 1, 1, 1) for c in process.edm_preconditioning(s, 0.5))
    F = net(c_in * x_sigma)
    lam_edm = ((s**2 + 0.25) / (s * 0.5) ** 2).reshape(-1, 1, 1, 1)
    edm = (lam_edm * c_out**2 * (F - (x - c_skip * x_sigma) / c_out) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(out.loss, edm, rtol=1e-9, atol=1e-12)
    # the weighting's λ-density is EDM's log-normal: ln s ~ N(P_mean, P_std²)
    lam = torch.linspace(-10, 12, 5, dtype=F64)
    log_w = log_weight_eps("edm", lam, sigma_data=0.5, p_mean=-1.2, p_std=1.2)
    dens = torch.exp(-0.5 * ((lam / -2 - -1.2) / 1.2) ** 2) / (1.2 * math.sqrt(2 * math.pi)) / 2
    torch.testing.assert_close(torch.exp(log_w), 2 * dens * (1 + torch.exp(-lam) / 0.25), rtol=1e-12, atol=0)


# --- the exact denoiser attains the analytic minimum -----------------------------------------------


def test_eps_mse_minimum_for_gaussian_data():
    """E‖ε − ε̂*‖²/D = e^λ tr Cov[x | z]/D = Σ_d e^λ c_d/(1 + c_d e^λ)/D for x ~ N(μ, Σ), eigenvalues
    c_d of Σ; a perturbed denoiser scores strictly higher. Tolerance: 4 Monte-Carlo standard errors."""
    g = torch.Generator().manual_seed(3)
    A = torch.randn(4, 4, generator=g, dtype=F64) * 0.2
    cov = A @ A.T + 0.02 * torch.eye(4, dtype=F64)
    gm = GaussianMixture.gaussian(torch.tensor([0.1, -0.2, 0.0, 0.3]), cov)
    c = torch.linalg.eigvalsh(cov)
    cfg = LossConfig(weighting="eps_mse", schedule="cosine")
    n_t, reps = 8, 2000
    t = ((torch.arange(n_t, dtype=F64) + 0.5) / n_t).repeat_interleave(reps)
    x = gm.sample(n_t * reps, g)
    noise = torch.randn(x.shape, generator=g, dtype=F64)
    best = loss_fn(gm, x, None, g, cfg, t=t, noise=noise, check_range=False)
    shift = torch.tensor([0.2, -0.1, 0.0, 0.1], dtype=F64)
    worse = loss_fn(lambda z, lam, cond: gm.denoise(z, lam) + shift, x, None, g, cfg, t=t, noise=noise,
                    check_range=False)
    lam = best.logsnr.reshape(n_t, reps)[:, 0]
    analytic = (torch.exp(lam)[:, None] * c / (1 + c * torch.exp(lam)[:, None])).sum(1) / 4
    per_t = best.loss.reshape(n_t, reps)
    se = per_t.std(1) / math.sqrt(reps)
    assert ((per_t.mean(1) - analytic).abs() < 4 * se).all(), (per_t.mean(1), analytic)
    diff = (worse.loss - best.loss).reshape(n_t, reps)
    assert (diff.mean(1) > 4 * diff.std(1) / math.sqrt(reps)).all()
    # the excess is e^λ‖δ‖²/D: the cross term vanishes because ε̂* is the conditional mean
    excess = torch.exp(lam) * (shift**2).sum() / 4
    assert ((diff.mean(1) - excess).abs() < 4 * diff.std(1) / math.sqrt(reps) + 1e-12).all()


# --- IDDPM: learned variance, L_hybrid with stop-gradient, L_vlb, importance sampling ---------------


class _OutputNet(nn.Module):
    """A 'backbone' whose output is a parameter, so gradients w.r.t. each output half are visible."""

    def __init__(self, shape):
        super().__init__()
        self.out = nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(5), dtype=F64) * 0.3)

    def forward(self, x, logsnr, cond):
        return self.out


def test_hybrid_stop_gradient():
    """The L_vlb term sends no gradient into the mean half; the variance half gets gradient only
    from L_vlb (Nichol & Dhariwal 2021, §3.1)."""
    x, g = _images(B=4, C=3, H=4, W=4)
    net = _OutputNet((4, 6, 4, 4))
    den = Denoiser(net, "eps", learn_sigma=True)
    cfg = LossConfig(weighting="eps_mse", schedule="linear_discrete", vlb_weight=0.001)
    out = loss_fn(den, x, None, g, cfg)
    (g_vlb,) = torch.autograd.grad(out.terms["vlb"].sum(), net.out, retain_graph=True)
    (g_mse,) = torch.autograd.grad(out.terms["mse"].sum(), net.out)
    assert g_vlb[:, :3].abs().max() == 0  # stop-gradient on the mean
    assert g_vlb[:, 3:].abs().min() > 0  # the variance learns from L_vlb
    assert g_mse[:, 3:].abs().max() == 0  # ... and only from L_vlb
    assert g_mse[:, :3].abs().min() > 0
    # L_hybrid = L_simple + λ L_vlb, L_vlb = L_t / p_t = T L_t under uniform t (IDDPM's T/1000 · L_t)
    torch.testing.assert_close(out.loss, out.terms["mse"] + 0.001 * 1000 * out.terms["vlb_t"], rtol=1e-12, atol=0)


def test_vlb_objective_trains_the_mean_and_uses_decoder_at_step_1():
    x, g = _images(B=4, C=3, H=4, W=4)
    x = (torch.round((x + 1) * 127.5) / 127.5 - 1)  # 8-bit grid, as the discretised decoder assumes
    net = _OutputNet((4, 6, 4, 4))
    den = Denoiser(net, "eps", learn_sigma=True)
    cfg = LossConfig(weighting="vlb", schedule="linear_discrete")
    out = loss_fn(den, x, None, g, cfg, t=torch.tensor([0.001, 0.5, 0.75, 1.0]))
    assert out.steps.tolist() == [1, 500, 750, 1000]
    (grad,) = torch.autograd.grad(out.loss.sum(), net.out)
    assert grad[:, :3].abs().max() > 0 and grad[:, 3:].abs().max() > 0
    torch.testing.assert_close(out.loss, 1000 * out.terms["vlb_t"], rtol=1e-12, atol=0)
    assert (out.terms["vlb_t"] > 0).all()  # a KL and a discrete NLL are both non-negative


def test_importance_sampler_uniform_until_full_then_sqrt_second_moment():
    K, hist = 12, 10
    c = torch.linspace(0.2, 3.0, K, dtype=F64)
    sampler = ImportanceSampler(K, history=hist, uniform_prob=0.0)
    g = torch.Generator().manual_seed(0)
    while not sampler.ready:
        torch.testing.assert_close(sampler.probabilities(), torch.full((K,), 1 / K, dtype=F64))
        steps, p = sampler.sample(16, g)
        signs = torch.randint(0, 2, (16,), generator=g).to(F64) * 2 - 1
        sampler.update(steps, c[steps - 1] * signs)  # E[L_t²] = c_t² exactly, whatever the sign
    torch.testing.assert_close(sampler.probabilities(), c / c.sum(), rtol=1e-12, atol=0)
    # with p_t ∝ |L_t| the estimate L_t / p_t of Σ_t L_t has zero variance
    steps, p = sampler.sample(1000, g)
    torch.testing.assert_close(c[steps - 1] / p, torch.full((1000,), c.sum().item(), dtype=F64))
    # checkpoint round trip
    other = ImportanceSampler(K, history=hist, uniform_prob=0.0)
    other.load_state_dict(sampler.state_dict())
    torch.testing.assert_close(other.probabilities(), sampler.probabilities())
    with pytest.raises(ValueError, match="history"):
        ImportanceSampler(K + 1, history=hist).load_state_dict(sampler.state_dict())


def test_importance_sampler_converges_on_noisy_losses():
    """L_t = c_t · N(0, 1): the time-averaged p_t approaches c_t / Σ c (6 % relative; seeds 0-5 give ≤ 4.2 %)."""
    K = 8
    c = torch.tensor([0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 1.0, 0.6], dtype=F64)
    sampler = ImportanceSampler(K, uniform_prob=1e-3)
    g = torch.Generator().manual_seed(1)
    acc, n = torch.zeros(K, dtype=F64), 0
    for it in range(1000):
        steps, _ = sampler.sample(32, g)
        sampler.update(steps, c[steps - 1] * torch.randn(32, generator=g, dtype=F64))
        if sampler.ready and it > 100:
            acc += sampler.probabilities()
            n += 1
    target = 0.999 * c / c.sum() + 1e-3 / K
    torch.testing.assert_close(acc / n, target, rtol=0.06, atol=0)


def test_importance_sampling_in_loss_fn_updates_sampler():
    x, g = _images(B=8, C=1, H=4, W=4)
    cfg = LossConfig(weighting="vlb", schedule="linear_discrete", schedule_options={"T": 10},
                     t_sampling="importance")
    sampler = make_sampler(cfg)
    den = Denoiser(_OutputNet((8, 2, 4, 4)), "eps", learn_sigma=True)
    out = loss_fn(den, x, None, g, cfg, sampler=sampler)
    assert int(sampler.state_dict()["counts"].sum()) == 8
    torch.testing.assert_close(out.loss, out.terms["vlb_t"] * 10, rtol=1e-12, atol=0)  # uniform p_t = 1/10
    with pytest.raises(ValueError, match="ImportanceSampler"):
        loss_fn(den, x, None, g, cfg)


# --- the power loss over Haar sub-bands (Hoogeboom et al. 2025, App. A.1) -----------------------


def test_haar_is_orthonormal_and_invertible():
    x, _ = _images(B=2, C=3, H=16, W=8)
    bands = haar2d(x)
    torch.testing.assert_close(sum((b**2).sum() for b in bands), (x**2).sum(), rtol=1e-12, atol=0)
    torch.testing.assert_close(ihaar2d(*bands), x, rtol=0, atol=1e-12)
    sub = haar_subbands(x, 2)
    assert [(n, tuple(b.shape[-2:]), l) for n, b, l in sub] == [
        ("LLLL", (4, 2), 4), ("LLLH", (4, 2), 3), ("LLHL", (4, 2), 3), ("LLHH", (4, 2), 2),
        ("LH", (8, 4), 1), ("HL", (8, 4), 1), ("HH", (8, 4), 0)]
    torch.testing.assert_close(sum((b**2).sum() for _, b, _ in sub), (x**2).sum(), rtol=1e-12, atol=0)
    # the low band of a constant image holds all its energy: the smooth signal of SiD2 App. A.1
    const = torch.ones(1, 1, 8, 8, dtype=F64)
    assert [n for n, b, _ in haar_subbands(const, 2) if b.abs().max() > 1e-12] == ["LLLL"]


@pytest.mark.parametrize("band", ["LL", "LH", "HL", "HH"])
def test_power_loss_subband_shift(band):
    """An error living in one sub-band s is weighted by e^{b} sigmoid(λ + b_s), b_s = log 2 · l(s) − b."""
    x, g = _images(B=5, C=2, H=8, W=8)
    coeffs = {k: torch.zeros(5, 2, 4, 4, dtype=F64) for k in ("LL", "LH", "HL", "HH")}
    coeffs[band] = 0.01 * torch.randn(5, 2, 4, 4, generator=g, dtype=F64)
    err = ihaar2d(coeffs["LL"], coeffs["LH"], coeffs["HL"], coeffs["HH"])
    b = -2.0
    cfg = LossConfig(weighting="sigmoid", bias=b, haar_levels=1)
    out = loss_fn(lambda z, lam, c: x + err, x, None, g, cfg)
    d = -schedules.get("cosine").dlogsnr_dt(out.t)
    b_s = math.log(2) * band.count("L") - b
    expect = 0.5 * d * math.exp(b) * torch.sigmoid(out.logsnr + b_s) * (coeffs[band] ** 2).flatten(1).sum(1) / x[0].numel()
    torch.testing.assert_close(out.loss, expect, rtol=1e-10, atol=0)


def test_power_loss_without_levels_is_sigmoid_loss():
    x, _ = _images()
    for b in (-3.0, 0.0, 1.5):
        a = loss_fn(_toy_denoiser, x, None, torch.Generator().manual_seed(2), LossConfig(bias=b))
        lam, d = a.logsnr, torch.log(-schedules.get("cosine").dlogsnr_dt(a.t))
        z = process.diffuse(x, lam, _replay_noise_seed(x, 2))
        p = power_loss(x, _toy_denoiser(z, lam), lam, d, b, 0)
        torch.testing.assert_close(a.loss, p, rtol=1e-10, atol=0)


def _replay_noise_seed(x, seed):
    g = torch.Generator().manual_seed(seed)
    torch.rand(x.shape[0], generator=g, dtype=F64)
    return torch.randn(x.shape, generator=g, dtype=x.dtype)


# --- bias choices and t sampling ----------------------------------------------------------------------


def test_sigmoid_bias_per_resolution_and_time_shift():
    assert [sigmoid_bias(r) for r in (128, 256, 512)] == [0.0, -1.0, -3.0]
    assert sigmoid_bias(64) == pytest.approx(2 * math.log(2))
    assert time_shifted_bias(0, -8.0, -3.0, 100) == -8.0
    assert time_shifted_bias(50, -8.0, -3.0, 100) == -5.5
    assert time_shifted_bias(10_000, -8.0, -3.0, 100) == -3.0
    # loss_fn reads the image side when bias is None, and the step for a time-shifted bias
    x, _ = _images(B=2, C=1, H=256, W=256)
    out = loss_fn(_toy_denoiser, x, None, torch.Generator().manual_seed(0), LossConfig())
    d = -schedules.get("cosine").dlogsnr_dt(out.t)
    torch.testing.assert_close(out.weight, d * torch.sigmoid(-1.0 - out.logsnr))
    cfg = LossConfig(bias=-3.0, bias_start=-8.0, bias_warmup_steps=100)
    out = loss_fn(_toy_denoiser, x, None, torch.Generator().manual_seed(0), cfg, step=50)
    torch.testing.assert_close(out.weight, d * torch.sigmoid(-5.5 - out.logsnr))


def test_t_sampling_covers_strata():
    g = torch.Generator().manual_seed(0)
    t = sample_t(64, g, "stratified")
    assert (torch.floor(t * 64) == torch.arange(64)).all()
    t = sample_t(64, g, "low_discrepancy")
    assert torch.allclose(torch.sort(torch.remainder(t - t[0], 1.0)).values, torch.arange(64, dtype=F64) / 64)
    x, _ = _images(B=10, C=1, H=4, W=4)
    out = loss_fn(_toy_denoiser, x, None, g, LossConfig(weighting="eps_mse", schedule="linear_discrete",
                                                       schedule_options={"T": 10}))
    assert sorted(out.steps.tolist()) == list(range(1, 11))


# --- errors a user can cause -------------------------------------------------------------------------


def test_bad_inputs_raise_one_line_errors():
    x, g = _images(B=4)
    cfg = LossConfig(bias=0.0)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        loss_fn(_toy_denoiser, x * 3, None, g, cfg)
    bad = x.clone()
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        loss_fn(_toy_denoiser, bad, None, g, cfg)
    with pytest.raises(ValueError, match="one label per example"):
        loss_fn(_toy_denoiser, x, torch.zeros(3, dtype=torch.long), g, cfg)
    with pytest.raises(ValueError, match="shape"):
        loss_fn(lambda z, l, c: z[:, :1], x, None, g, cfg)
    with pytest.raises(ValueError, match="t has"):
        loss_fn(_toy_denoiser, x, None, g, cfg, t=torch.rand(3))
    with pytest.raises(ValueError, match="noise has shape"):
        loss_fn(_toy_denoiser, x, None, g, cfg, noise=torch.randn(4, 3, 8, 7))
    with pytest.raises(ValueError, match="per-resolution bias"):
        loss_fn(_toy_denoiser, torch.zeros(4, 2), None, g, LossConfig())
    den = Denoiser(_OutputNet((4, 6, 8, 8)), "eps", learn_sigma=True)
    with pytest.raises(ValueError, match="vlb_weight"):
        loss_fn(den, x, None, g, cfg)
    with pytest.raises(ValueError, match="learn_sigma"):
        loss_fn(_toy_denoiser, x, None, g, LossConfig(weighting="eps_mse", schedule="linear_discrete", vlb_weight=1e-3))
    for kwargs, match in [
        (dict(weighting="l1"), "unknown weighting"),
        (dict(weighting="eps_mse", haar_levels=2), "power loss"),
        (dict(weighting="vlb"), "discrete chain"),
        (dict(weighting="eps_mse", t_sampling="importance", schedule="linear_discrete"), "importance"),
        (dict(bias=-3.0, bias_start=-8.0), "time-shifted"),
        (dict(schedule="nope"), "unknown schedule"),
        (dict(reduction="max"), "reduction"),
    ]:
        with pytest.raises(ValueError, match=match):
            LossConfig(**kwargs)
    with pytest.raises(ValueError, match="even height"):
        loss_fn(_toy_denoiser, x[..., :7, :7], None, g, LossConfig(bias=0.0, haar_levels=1))
