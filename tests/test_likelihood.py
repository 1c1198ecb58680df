"""Specs for pixdiff.likelihood: with the exact denoiser of Gaussian data, the continuous ELBO, the
discrete VLB (as T grows) and the probability-flow ODE all recover the true log-likelihood."""

import math

import pytest
import torch

from pixdiff import schedules, vlb
from pixdiff.analytic import GaussianMixture
from pixdiff.denoiser import DenoiserOutput
from pixdiff.likelihood import dequantize_uniform, elbo_bpd, mean_ci, ode_nll, vlb_bpd

F64 = torch.float64
LN2 = math.log(2.0)
COV = torch.tensor([[0.05, 0.02], [0.02, 0.08]], dtype=F64)
MU = torch.tensor([0.1, -0.2], dtype=F64)



def _gaussian():
    return GaussianMixture.gaussian(MU, COV)


def test_continuous_elbo_equals_nll_for_gaussian():
    """−ELBO = −log p(x) per example, exact denoiser, λ ∈ [−10, 10]: the endpoint gaps (prior KL
    mismatch O(e^{−10}), decoder variance e^{−10} vs Cov[x | z]) are < 1e-3 nats, far below the
    Monte-Carlo tolerance of 4 standard errors (the SE is itself checked to be < 0.1 nats)."""
    g = torch.Generator().manual_seed(0)
    gm = _gaussian()
    x = gm.sample(16, g)
    res = elbo_bpd(gm, x, g, num_t=4096, logsnr_min=-10.0, logsnr_max=10.0)
    diff = res.nats + gm.log_prob(x)  # [B]
    assert (diff.abs() < 4.5 * res.stderr_nats).all()
    se_mean = res.stderr_nats.pow(2).mean().sqrt() / math.sqrt(len(x))
    assert se_mean < 0.1 and abs(diff.mean()) < 4 * se_mean
    torch.testing.assert_close(res.bpd, res.nats / (2 * LN2))
    # a perturbed denoiser has a strictly worse bound
    worse = elbo_bpd(lambda z, lam, c: gm.denoise(z, lam) * 0.97, x, torch.Generator().manual_seed(0),
                     num_t=4096, logsnr_min=-10.0, logsnr_max=10.0)
    assert (worse.nats - res.nats).mean() > 10 * se_mean


class _ExactWithVariance:
    """The exact denoiser plus IDDPM's variance fraction: f = 0 (β̃, the exact reverse variance of
    q(z_{k−1} | z_k, x)) for k ≥ 2 and f = 1 (β_1 ≈ Var[x | z_1]) at the decoder step."""

    def __init__(self, gm, logsnr_1):
        self.gm, self.logsnr_1 = gm, logsnr_1

    def predict(self, z, logsnr, cond=None):
        f = (torch.as_tensor(logsnr) >= self.logsnr_1).to(z.dtype).reshape(-1, 1).expand(z.shape)
        return DenoiserOutput(self.gm.denoise(z, logsnr), f)


def _expected_vlb(lam: torch.Tensor) -> float:
    """E_x[L_vlb] in nats for x ~ N(μ, Σ) with the exact denoiser and _ExactWithVariance's variances:
    E‖x − x̂_λ‖² = tr Cov[x | z_λ] = Σ_d c_d / (1 + c_d e^λ), so the KLs are ½(SNR_{k−1} − SNR_k) tr Cov
    (VDM's discrete loss), the decoder ½ D log 2πβ_1 + tr Cov(λ_1)/(2β_1), the prior as in vlb.prior_kl."""
    c = torch.linalg.eigvalsh(COV)
    tr = lambda l: float((c / (1 + c * math.exp(l))).sum())  # noqa: E731
    a2 = float(torch.sigmoid(lam[-1]))
    prior = 0.5 * float((a2 * (MU**2 + COV.diagonal() - 1) + math.log1p(math.exp(lam[-1]))).sum())
    b1 = 1 - float(torch.sigmoid(lam[0]))
    dec = math.log(2 * math.pi * b1) + tr(lam[0]) / (2 * b1)
    kl = sum(0.5 * (math.exp(lam[k - 1]) - math.exp(lam[k])) * tr(lam[k]) for k in range(1, len(lam)))
    return prior + dec + kl


def test_discrete_vlb_converges_to_nll_as_T_grows():
    """Chains uniform in λ on [−10, 10] with T = 16, 64, 512 steps: the Monte-Carlo L_vlb matches its
    analytic expectation within 4 SE, and its gap to −log p(x) falls (6.5 → 1.1 → 0.12 nats)."""
    gm = _gaussian()
    g = torch.Generator().manual_seed(1)
    x = gm.sample(256, g)
    nll = -gm.log_prob(x)
    entropy = 0.5 * float(torch.logdet(2 * math.pi * math.e * COV))
    gaps = []
    for T in (16, 64, 512):
        lam = torch.linspace(10, -10, T, dtype=F64)
        chain = schedules.DiscreteSchedule(torch.sigmoid(lam))
        res = vlb_bpd(_ExactWithVariance(gm, float(lam[0])), x, chain, g, decoder="gaussian")
        d = res.bpd * 2 * LN2 - nll
        analytic_gap = _expected_vlb(lam) - entropy
        assert abs(d.mean() - analytic_gap) < 4 * d.std() / math.sqrt(len(d)), (T, d.mean(), analytic_gap)
        gaps.append(analytic_gap)
        torch.testing.assert_close(res.bpd, res.prior_bpd + res.terms_bpd.sum(1))
    assert gaps[0] > gaps[1] > gaps[2] > 0 and gaps[2] < 0.15


def test_kl_term_is_vdm_discrete_loss_and_posterior_variance_is_beta_tilde():
    """With Σ = β̃ the KL of step k is ½(SNR_{k−1} − SNR_k)‖x − x̂‖² (VDM), and process.posterior's
    variance equals DDPM's β̃ = (1 − ᾱ_{k−1})/(1 − ᾱ_k) β_k."""
    chain = schedules.get("linear_discrete", T=50)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(5, 3, generator=g, dtype=F64) * 2 - 1
    x_hat = x + 0.1 * torch.randn(5, 3, generator=g, dtype=F64)
    z = torch.randn(5, 3, generator=g, dtype=F64)
    steps = torch.tensor([2, 10, 25, 49, 50])
    kl = vlb.vlb_term(x, z, x_hat, steps, chain, torch.zeros_like(x)).sum(1)
    lam_t, lam_s = vlb.step_logsnr(chain, steps)
    torch.testing.assert_close(kl, 0.5 * (lam_s.exp() - lam_t.exp()) * ((x - x_hat) ** 2).sum(1), rtol=1e-9, atol=1e-12)
    from pixdiff.process import posterior_coefficients

    ks = torch.arange(2, 51)
    _, _, var = posterior_coefficients(*vlb.step_logsnr(chain, ks))
    torch.testing.assert_close(var, chain.posterior_variance[ks - 1], rtol=1e-10, atol=0)


def test_discretized_decoder_is_a_distribution_over_256_bins():
    bins = torch.arange(256, dtype=F64) / 127.5 - 1
    for mean, logvar in [(0.0, -4.0), (0.9, -12.0), (-1.3, 0.5), (0.37, -20.0)]:
        ll = vlb.discretized_gaussian_log_likelihood(bins, torch.tensor(mean, dtype=F64), torch.tensor(logvar, dtype=F64))
        assert torch.isfinite(ll).all()
        assert abs(ll.exp().sum().item() - 1.0) < 1e-9


def test_ode_likelihood_matches_mixture_log_prob():
    """PF-ODE with the exact score of the 2-D toy mixture: |−log p̂(x) − (−log p(x))| < 0.02 nats per
    point. RK45 with rtol = atol = 1e-5, λ from 15 (data end, z = α x) to −15 (prior N(0, I)),
    exact trace."""
    gm = GaussianMixture.toy_2d()
    g = torch.Generator().manual_seed(3)
    x = gm.sample(16, g)
    res = ode_nll(gm, x, g, trace="exact")
    err = res.nats + gm.log_prob(x)
    assert err.abs().max() < 0.02, err
    torch.testing.assert_close(res.bpd, res.nats / (2 * LN2))
    assert res.nfe < 1000


def test_ode_hutchinson_is_unbiased():
    """Hutchinson's trace (one Rademacher probe per point): per-point error is noise, its mean over
    48 points is within 4 SE of zero."""
    gm = GaussianMixture.toy_2d()
    g = torch.Generator().manual_seed(4)
    x = gm.sample(48, g)
    err = ode_nll(gm, x, g, trace="hutchinson").nats + gm.log_prob(x)
    assert abs(err.mean()) < 4 * err.std() / math.sqrt(len(err)) and err.std() < 2.0


def test_ode_uniform_dequantisation():
    """x̃ = 2(k + u)/256 − 1 lands in its own bin, and bpd = (−log p(x̃) − D log(2/256)) / (D log 2)."""
    gm = GaussianMixture.toy_2d()
    x = (torch.round((gm.sample(6, torch.Generator().manual_seed(5)).clamp(-1, 1) + 1) * 127.5) / 127.5 - 1)
    xt = dequantize_uniform(x, torch.Generator().manual_seed(6))
    k = torch.round((x + 1) * 127.5)
    assert ((xt + 1) * 128 >= k).all() and ((xt + 1) * 128 < k + 1).all()
    res = ode_nll(gm, x, torch.Generator().manual_seed(6), dequantize="uniform")
    assert (res.nats + gm.log_prob(xt)).abs().max() < 0.02
    torch.testing.assert_close(res.bpd, (res.nats - 2 * math.log(2 / 256)) / (2 * LN2))


def test_mean_ci():
    m, h = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert m == 3.0 and h == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)


def test_bad_inputs():
    gm = GaussianMixture.toy_2d()
    x = gm.sample(4, torch.Generator().manual_seed(0))
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ode_nll(gm, bad)
    with pytest.raises(ValueError, match="NaN"):
        elbo_bpd(gm, bad, num_t=4)
    with pytest.raises(ValueError, match="discrete chain"):
        vlb_bpd(gm, x, schedules.get("cosine"))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        vlb_bpd(gm, x * 10, schedules.get("linear_discrete", T=10))
    with pytest.raises(ValueError, match="8-bit"):
        dequantize_uniform(x * 0.5 + 0.001)
    with pytest.raises(ValueError, match="logsnr_min < logsnr_max"):
        ode_nll(gm, x, logsnr_min=5.0, logsnr_max=-5.0)
    with pytest.raises(ValueError, match="holds 2 values|D = 2"):
        ode_nll(gm, torch.zeros(4, 3, dtype=F64))
    with pytest.raises(ValueError, match="at least 2"):
        mean_ci([1.0])


def test_vlb_clipping_x_hat_to_the_data_range_only_ever_tightens_the_bound():
    """IDDPM evaluates L_vlb with x̂ clipped to [−1, 1]. For data in [−1, 1] clipping moves every
    coordinate of x̂ towards x, so each KL term (∝ (μ̃ − μ)², μ affine in x̂) and the decoder's −log
    bin mass can only fall: per image, clipped ≤ unclipped, with equality when x̂ stays in range."""
    chain = schedules.get("linear_discrete", T=20)
    x = torch.tensor([[[[-1.0, 1.0], [0.2, -0.6]]]], dtype=F64).expand(3, 1, 2, 2).clone()

    def in_range(z, lam, cond=None):  # x̂ = tanh(z): always inside (−1, 1)
        return torch.tanh(z)

    def overshooting(z, lam, cond=None):  # x̂ = 3 z: far outside the range at the noisy end
        return 3.0 * z

    for den, strict in ((in_range, False), (overshooting, True)):
        clipped = vlb_bpd(den, x, chain, torch.Generator().manual_seed(0)).bpd
        raw = vlb_bpd(den, x, chain, torch.Generator().manual_seed(0), clip_denoised=False).bpd
        assert (clipped <= raw + 1e-12).all()
        assert (clipped < raw - 0.1).all() if strict else torch.allclose(clipped, raw, rtol=0, atol=1e-12)
    # the gaussian decoder (data with a density, any range) does not clip unless asked
    y = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(1), dtype=F64) * 3
    a = vlb_bpd(overshooting, y, chain, torch.Generator().manual_seed(0), decoder="gaussian").bpd
    b = vlb_bpd(overshooting, y, chain, torch.Generator().manual_seed(0), decoder="gaussian", clip_denoised=False).bpd
    assert torch.equal(a, b)
