"""The Gaussian-mixture oracle: its denoiser against a Monte-Carlo posterior mean, its score
against autograd of an independently computed log-density, Tweedie's identity, conditioning."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from pixdiff import process as P
from pixdiff.analytic import GaussianMixture


def _mix():
    return GaussianMixture.toy_2d()


def _reference_log_qz(gm, z, lam):
    """log q(z_t) from torch.distributions: Σ_k w_k N(α μ_k, α² Σ_k + σ² I)."""
    a, s = P.alpha_sigma(torch.tensor(lam, dtype=torch.float64))
    comps = [
        MultivariateNormal(a * gm.means[k], a * a * gm.covs[k] + s * s * torch.eye(gm.dim, dtype=torch.float64))
        for k in range(len(gm.weights))
    ]
    lp = torch.stack([gm.weights[k].log() + c.log_prob(z) for k, c in enumerate(comps)], 1)
    return torch.logsumexp(lp, 1)


@pytest.mark.parametrize("lam", [-3.0, 0.0, 2.0, 6.0])
def test_log_prob_z_and_score_against_autograd(lam):
    gm = _mix()
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64).requires_grad_()
    ref = _reference_log_qz(gm, z, lam)
    assert torch.allclose(gm.log_prob_z(z.detach(), lam), ref.detach(), atol=1e-10)
    (grad,) = torch.autograd.grad(ref.sum(), z)
    assert torch.allclose(gm.score(z.detach(), lam), grad, atol=1e-9)


@pytest.mark.parametrize("lam", [-2.0, 0.5, 3.0])
def test_denoiser_equals_monte_carlo_posterior_mean(lam):
    """E[x | z] = Σ_i x_i N(z; α x_i, σ²) / Σ_i N(z; α x_i, σ²) over x_i ~ p(x)."""
    gm = _mix()
    g = torch.Generator().manual_seed(0)
    xs = gm.sample(400_000, g)  # [N, 2]
    z = torch.tensor([[0.3, -0.2], [-1.5, 0.0], [1.0, 1.0]], dtype=torch.float64)
    a, s = P.alpha_sigma(torch.tensor(lam, dtype=torch.float64))
    logw = -((z[:, None, :] - a * xs[None]) ** 2).sum(-1) / (2 * s * s)  # [3, N]
    w = torch.softmax(logw, 1)
    mc = w @ xs
    ess = 1.0 / (w**2).sum(1)
    assert (ess > 500).all(), "Monte-Carlo estimate has too few effective samples to be a test"
    assert torch.allclose(gm.denoise(z, lam), mc, atol=0.02), (gm.denoise(z, lam), mc)


def test_shared_level_path_equals_per_sample_path():
    """`denoise` takes a matmul path when the batch shares λ; it must equal the per-sample path."""
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(16), dtype=torch.float64))
    g16 = GaussianMixture.gaussian(torch.zeros(16), q @ torch.diag(torch.logspace(-1.3, 0, 16, dtype=torch.float64)) @ q.T)
    g = torch.Generator().manual_seed(3)
    for gm in (_mix(), g16):
        for lam in (-8.0, -1.0, 0.5, 4.0, 12.0):
            z = torch.randn(257, gm.dim, generator=g, dtype=torch.float64)
            lams = torch.full((257,), lam, dtype=torch.float64)
            torch.testing.assert_close(gm.denoise(z, lams), gm._denoise_general(z, lams), rtol=1e-10, atol=1e-10)
            if gm.labels is not None:
                c = torch.randint(0, 3, (257,), generator=g)
                torch.testing.assert_close(gm.denoise(z, lams, c), gm._denoise_general(z, lams, c), rtol=1e-10, atol=1e-10)


def test_tweedie_identity():
    gm = GaussianMixture(
        [0.2, 0.8], [[0.0, 1.0, -1.0], [1.0, 0.0, 0.5]],
        torch.stack([torch.eye(3) * 0.3, torch.tensor([[0.5, 0.1, 0.0], [0.1, 0.2, 0.0], [0.0, 0.0, 0.01]])]),
    )
    z = torch.randn(32, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lam = torch.linspace(-5, 5, 32, dtype=torch.float64)  # a different λ per sample
    assert torch.allclose(gm.denoise(z, lam), P.x_from_score(z, gm.score(z, lam), lam), atol=1e-9)


def test_gaussian_denoiser_closed_form():
    """One Gaussian N(m, C): E[x|z] = m + α C (α² C + σ² I)⁻¹ (z − α m)."""
    m, C = torch.tensor([0.5, -0.3], dtype=torch.float64), torch.tensor([[0.4, 0.1], [0.1, 0.2]], dtype=torch.float64)
    gm = GaussianMixture.gaussian(m, C)
    z, lam = torch.tensor([[1.0, 2.0]], dtype=torch.float64), 0.7
    a, s = P.alpha_sigma(torch.tensor(lam, dtype=torch.float64))
    ref = m + a * C @ torch.linalg.solve(a * a * C + s * s * torch.eye(2, dtype=torch.float64), z[0] - a * m)
    assert torch.allclose(gm.denoise(z, lam)[0], ref, atol=1e-12)
    # at very high logSNR the denoiser returns z/α ≈ z; at very low, the data mean
    assert torch.allclose(gm.denoise(z, 30.0), z, atol=1e-6)
    assert torch.allclose(gm.denoise(z, -30.0)[0], m, atol=1e-6)


def test_sampling_moments_and_log_prob():
    gm = _mix()
    x = gm.sample(200_000, torch.Generator().manual_seed(5))
    assert torch.allclose(x.mean(0), gm.mean(), atol=0.01)
    assert torch.allclose(torch.cov(x.T), gm.cov(), atol=0.01)
    # log_prob is a density: its integral over a fine grid is 1
    g = torch.linspace(-3, 3, 601, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    mass = gm.log_prob(pts).exp().sum() * (g[1] - g[0]) ** 2
    assert mass.item() == pytest.approx(1.0, abs=1e-3)


def test_conditioning_restricts_to_class():
    gm = _mix()
    x, k = gm.sample(5000, torch.Generator().manual_seed(2), cond=1, return_components=True)
    assert (k == 1).all()
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sub = GaussianMixture([1.0], gm.means[1:2], gm.covs[1:2])
    assert torch.allclose(gm.denoise(z, 0.0, cond=torch.tensor([1, 1, 1, 1])), sub.denoise(z, 0.0), atol=1e-12)
    post = gm.class_posterior(z, 0.0)
    assert torch.allclose(post.sum(1), torch.ones(4, dtype=torch.float64))
    # Bayes: E[x|z] = Σ_c p(c|z) E[x|z,c]
    mix = sum(post[:, c : c + 1] * gm.denoise(z, 0.0, cond=torch.full((4,), c)) for c in range(3))
    assert torch.allclose(mix, gm.denoise(z, 0.0), atol=1e-12)


def test_image_shaped_mixture_and_dtype():
    gm = GaussianMixture.gaussian(torch.zeros(16), torch.eye(16) * 0.25, shape=(1, 4, 4))
    z = torch.randn(3, 1, 4, 4)
    out = gm.denoise(z, torch.zeros(3))
    assert out.shape == (3, 1, 4, 4) and out.dtype == torch.float32
    # N(0, σ_d² I): E[x|z] = α σ_d² / (α² σ_d² + σ²) z
    a = math.sqrt(0.5)
    assert torch.allclose(out, a * 0.25 / (0.5 * 0.25 + 0.5) * z, atol=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[K, D, D\]"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[1.0]])
    with pytest.raises(ValueError, match="semi-definite"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, -1.0]]])
    gm = _mix()
    with pytest.raises(ValueError, match="D = 2"):
        gm.denoise(torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError, match="no component"):
        gm.denoise(torch.zeros(1, 2), 0.0, cond=7)
    with pytest.raises(ValueError, match="no component labels"):
        GaussianMixture.toy_2d(labels=False).denoise(torch.zeros(1, 2), 0.0, cond=0)
