"""Guidance wrappers against exact answers on the class-conditional Gaussian mixture (toy_2d):

- CFG with w = 0 is the conditional denoiser bit for bit; intervals select per sample; the
  batched (null-label) pass equals two separate calls; the x-space form is Ho & Salimans 2022's ε-form.
- Classifier guidance of scale s with the exact noisy classifier log p(y | z_t) equals CFG with
  w = s − 1 (both are the score of p(z) p(y|z)^s), to 1e-8 at several λ.
- Samples of class c concentrate monotonically as w grows (variance and mass near the other
  classes fall) under a local DDIM and ancestral loop.
- Autoguidance: good = weak gives good, w = 1 gives good, and it is linear in w.
- Bad arguments raise ValueError with a message.
"""

import math

import pytest
import torch

from pixdiff import guidance as G
from pixdiff import process as P
from pixdiff import schedules
from pixdiff.analytic import GaussianMixture

F64 = torch.float64
LAMS = [-6.0, -2.0, 0.0, 2.0, 5.0]


@pytest.fixture(scope="module")
def gm():
    return GaussianMixture.toy_2d()


def _denoiser(gm):
    """The interface every network follows: cond=None is the unconditional prediction."""
    return lambda z, logsnr, cond=None: gm.denoise(z, logsnr, cond)


def _noisy_batch(gm, lam, n=64, seed=0):
    """z ~ q(z_t) at λ (λ a float or a [n] tensor) and random labels."""
    g = torch.Generator().manual_seed(seed)
    x = gm.sample(n, generator=g)
    lam = torch.as_tensor(lam, dtype=F64).expand(n)
    z, _ = P.q_sample(x, lam, generator=g)
    cond = torch.randint(0, gm.num_classes, (n,), generator=g)
    return z, lam, cond


class NullLabelMixture:
    """A mixture that answers like a network trained with label dropout: label 3 is the null label,
    and it refuses cond=None so the test proves the batched path is taken. Counts its calls."""

    null_label = 3

    def __init__(self, gm):
        self.gm, self.calls, self.rows = gm, 0, 0

    def __call__(self, z, logsnr, cond=None):
        assert cond is not None, "a null-label denoiser is always given labels by the batched path"
        self.calls += 1
        self.rows += z.shape[0]
        null = cond == self.null_label
        out = torch.empty_like(z)
        lam = torch.as_tensor(logsnr, dtype=F64).expand(z.shape[0])
        if null.any():
            out[null] = self.gm.denoise(z[null], lam[null])
        if (~null).any():
            out[~null] = self.gm.denoise(z[~null], lam[~null], cond[~null])
        return out


# --- classifier-free guidance -----------------------------------------------------------------------


@pytest.mark.parametrize("lam", LAMS)
def test_cfg_w0_is_the_conditional_denoiser_exactly(gm, lam):
    z, lam_t, cond = _noisy_batch(gm, lam)
    den = _denoiser(gm)
    for d in (den, NullLabelMixture(gm)):
        assert torch.equal(G.classifier_free(d, 0.0)(z, lam_t, cond), den(z, lam_t, cond))
        assert torch.equal(G.classifier_free(d, 0)(z, lam_t, cond), den(z, lam_t, cond))


@pytest.mark.parametrize("w", [0.5, 1.0, 3.0])
def test_cfg_is_ho_salimans_eps_form_in_every_parameterisation(gm, w):
    """x̃ = (1+w) x̂_c − w x̂_u is ε̃ = (1+w) ε_c − w ε_u (Ho & Salimans 2022 Alg. 2), and likewise for v, score."""
    z, lam, cond = _noisy_batch(gm, torch.linspace(-5, 5, 64, dtype=F64))
    den = _denoiser(gm)
    x_t = G.classifier_free(den, w)(z, lam, cond)
    x_c, x_u = den(z, lam, cond), den(z, lam)
    for kind in ("eps", "v", "score"):
        want = (1 + w) * P.from_x(x_c, kind, z, lam) - w * P.from_x(x_u, kind, z, lam)
        got = P.from_x(x_t, kind, z, lam)
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-10), kind


def test_cfg_interval_excluding_every_lambda_is_unguided_and_including_all_is_plain_cfg(gm):
    z, lam, cond = _noisy_batch(gm, torch.linspace(-6, 5, 64, dtype=F64))
    den = _denoiser(gm)
    plain = G.classifier_free(den, 2.0)(z, lam, cond)
    for d in (den, NullLabelMixture(gm)):
        assert torch.equal(G.classifier_free(d, 2.0, interval=(6.0, 9.0))(z, lam, cond), den(z, lam, cond))
        assert torch.equal(G.classifier_free(d, 2.0, interval=(-20.0, -7.0))(z, lam, cond), den(z, lam, cond))
        assert torch.allclose(G.classifier_free(d, 2.0, interval=(-7.0, 6.0))(z, lam, cond), plain, rtol=0, atol=1e-14)
        assert torch.allclose(G.classifier_free(d, 2.0, interval=(-math.inf, math.inf))(z, lam, cond), plain,
                              rtol=0, atol=1e-14)


def test_cfg_interval_is_per_sample_and_open(gm):
    lam = torch.tensor([-3.0, -1.5, 0.0, 4.9, 5.0, 6.0], dtype=F64).repeat(4)
    z, lam, cond = _noisy_batch(gm, lam, n=lam.numel())
    den = _denoiser(gm)
    plain = G.classifier_free(den, 1.0)(z, lam, cond)
    cond_only = den(z, lam, cond)
    lo, hi = G.guidance_interval(256)  # (−1.5, 5): Hoogeboom et al. 2025 App. A.4
    inside = (lam > lo) & (lam < hi)
    assert inside.tolist()[:6] == [False, False, True, True, False, False]
    for d in (den, NullLabelMixture(gm)):
        out = G.classifier_free(d, 1.0, interval=(lo, hi))(z, lam, cond)
        assert torch.allclose(out[inside], plain[inside], rtol=0, atol=1e-14)
        assert torch.equal(out[~inside], cond_only[~inside])


def test_batched_cfg_equals_two_separate_calls(gm):
    z, lam, cond = _noisy_batch(gm, torch.linspace(-6, 5, 48, dtype=F64), n=48)
    net = NullLabelMixture(gm)
    for w, interval in [(1.5, None), (4.0, (-2.0, 3.0))]:
        net.calls = net.rows = 0
        batched = G.classifier_free(net, w, interval)(z, lam, cond)
        assert net.calls == 1, "conditional and unconditional passes share one forward"
        separate = G.classifier_free(_denoiser(gm), w, interval)(z, lam, cond)
        assert torch.allclose(batched, separate, rtol=0, atol=1e-14)
    # with an interval only the guided samples pay for the unconditional pass
    inside = int(((lam > -2.0) & (lam < 3.0)).sum())
    assert net.rows == 48 + inside


def test_batched_cfg_with_a_torch_network_equals_two_calls():
    """A small label-embedding network (null label = num_classes), as the trainer builds them."""
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        null_label = 4

        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(5, 8, dtype=F64)
            self.lin = torch.nn.Linear(2 + 8 + 1, 2, dtype=F64)

        def forward(self, z, logsnr, cond=None):
            cond = torch.full((z.shape[0],), self.null_label) if cond is None else cond
            lam = torch.as_tensor(logsnr, dtype=F64).expand(z.shape[0])[:, None]
            return self.lin(torch.cat([z, self.emb(cond), lam], 1))

    net = Net()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(16, 2, generator=g, dtype=F64)
    lam = torch.linspace(-4, 4, 16, dtype=F64)
    cond = torch.randint(0, 4, (16,), generator=g)
    with torch.no_grad():
        batched = G.classifier_free(net, 2.5)(z, lam, cond)
        want = 3.5 * net(z, lam, cond) - 2.5 * net(z, lam, None)
    assert torch.allclose(batched, want, rtol=0, atol=1e-12)


def test_cfg_without_labels_is_the_unconditional_prediction(gm):
    z, lam, _ = _noisy_batch(gm, 0.5)
    den = _denoiser(gm)
    assert torch.equal(G.classifier_free(den, 3.0)(z, lam), den(z, lam))
    # an int label is one label for the whole batch
    assert torch.equal(G.classifier_free(den, 1.0)(z, lam, 2),
                       G.classifier_free(den, 1.0)(z, lam, torch.full((64,), 2)))


# --- classifier guidance ---------------------------------------------------------------------------


def _exact_classifier(gm):
    """log p(class | z_t) of the mixture: exact noisy 'logits' (already normalised), float64."""
    return lambda z, logsnr: torch.log(gm.class_posterior(z, logsnr))


@pytest.mark.parametrize("lam", LAMS)
@pytest.mark.parametrize("s", [1.0, 2.0, 4.5])
def test_classifier_guidance_scale_s_equals_cfg_w_s_minus_1(gm, lam, s):
    """p(z) p(y|z)^s ∝ p(z|y)^s p(z)^{1−s}: both guidances give the same tilted score."""
    z, lam_t, cond = _noisy_batch(gm, lam, n=128, seed=int(10 * s))
    den = _denoiser(gm)
    clf = _exact_classifier(gm)
    cfg = G.classifier_free(den, s - 1.0)(z, lam_t, cond)
    # an unconditional model + classifier, and a conditional model + classifier of scale s − 1
    cg_u = G.classifier(den, clf, s, conditional=False)(z, lam_t, cond)
    cg_c = G.classifier(den, clf, s - 1.0)(z, lam_t, cond)
    assert (cg_u - cfg).abs().max() < 1e-8
    assert (cg_c - cfg).abs().max() < 1e-8


def test_classifier_guidance_is_dhariwal_nichol_alg2_eps_form(gm):
    """ε̃ = ε̂ − σ s ∇ log p(y | z_t) (Dhariwal & Nichol 2021, Alg. 2, with scale s)."""
    z, lam, cond = _noisy_batch(gm, torch.linspace(-4, 4, 64, dtype=F64))
    den, clf, s = _denoiser(gm), _exact_classifier(gm), 3.0
    x_t = G.classifier(den, clf, s, conditional=False)(z, lam, cond)
    grad = G.classifier_gradient(clf, z, lam, cond)
    _, sigma = P.alpha_sigma(lam)
    want = P.eps_from_x(z, den(z, lam), lam) - sigma[:, None] * s * grad
    assert torch.allclose(P.eps_from_x(z, x_t, lam), want, rtol=1e-10, atol=1e-10)


def test_classifier_gradient_matches_mixture_scores(gm):
    """∇ log p(y|z) = ∇ log p(z|y) − ∇ log p(z) (Bayes), from the mixture's closed-form scores."""
    z, lam, cond = _noisy_batch(gm, 1.0)
    grad = G.classifier_gradient(_exact_classifier(gm), z, lam, cond)
    want = gm.score(z, lam, cond) - gm.score(z, lam)
    assert torch.allclose(grad, want, rtol=1e-9, atol=1e-9)


def test_classifier_guidance_works_under_inference_mode(gm):
    z, lam, cond = _noisy_batch(gm, 0.0)
    guided = G.classifier(_denoiser(gm), _exact_classifier(gm), 2.0)
    ref = guided(z, lam, cond)
    with torch.inference_mode():
        out = guided(z, lam, cond)
    assert torch.equal(out, ref)
    with torch.no_grad():
        assert torch.equal(guided(z, lam, cond), ref)
    # no label: the unguided unconditional prediction
    assert torch.equal(guided(z, lam), gm.denoise(z, lam))


def test_classifier_mean_shift_is_algorithm_1_and_the_small_step_limit_of_the_x_shift(gm):
    z, lam_t, cond = _noisy_batch(gm, 1.0, n=32)
    grad = G.classifier_gradient(_exact_classifier(gm), z, lam_t, cond)
    mean = torch.randn(z.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    var = torch.linspace(0.1, 0.2, 32, dtype=F64)
    assert torch.allclose(G.classifier_mean_shift(mean, var, grad, 2.0), mean + 2.0 * var[:, None] * grad, atol=0)
    assert torch.allclose(G.classifier_mean_shift(mean, 0.3, grad, 2.0), mean + 0.6 * grad, atol=1e-15)
    assert torch.allclose(G.classifier_mean_shift(mean, var[:, None].expand(32, 2), grad, 2.0),
                          mean + 2.0 * var[:, None] * grad, atol=0)
    # the posterior mean of the x̂-shifted denoiser vs Algorithm 1: relative gap O(step)
    den, clf = _denoiser(gm), _exact_classifier(gm)
    gaps = []
    for d in (0.1, 0.01, 0.001):
        lam_s = lam_t + d
        m_plain, var_post = P.posterior(z, den(z, lam_t, cond), lam_t, lam_s)
        m_x, _ = P.posterior(z, G.classifier(den, clf, 2.0)(z, lam_t, cond), lam_t, lam_s)
        m_alg1 = G.classifier_mean_shift(m_plain, var_post, grad, 2.0)
        gaps.append(((m_x - m_alg1).norm() / (m_alg1 - m_plain).norm()).item())
    assert gaps[0] < 0.2 and gaps[1] < gaps[0] / 5 and gaps[2] < gaps[1] / 5, gaps


# --- concentration as w grows (sampling) ----------------------------------------------------------


def _local_sample(denoiser, n, label, steps, generator, stochastic):
    """DDIM (η = 0) or ancestral (Hoogeboom et al. 2025 eq. 3 posterior) on the cosine schedule λ ∈ [−15, 15];
    returns z/α at λ = 15 (≈ x). Used so the test does not depend on pixdiff.samplers."""
    lam = schedules.get("cosine").logsnr(torch.linspace(1, 0, steps + 1, dtype=F64))
    z = torch.randn(n, 2, generator=generator, dtype=F64)
    cond = torch.full((n,), label)
    for i in range(steps):
        lt, ls = lam[i].expand(n), lam[i + 1].expand(n)
        x = denoiser(z, lt, cond)
        if stochastic:
            mean, var = P.posterior(z, x, lt, ls)
            z = mean + var.sqrt()[:, None] * torch.randn(n, 2, generator=generator, dtype=F64)
        else:
            z = P.diffuse(x, ls, P.eps_from_x(z, x, lt))
    return z / P.alpha_sigma(lam[-1])[0]


def _concentration(gm, x, label):
    """(trace of the sample covariance, mean posterior mass of the other classes at the data)."""
    others = [k for k in range(gm.num_classes) if k != label]
    post = gm.class_posterior(x, torch.tensor(30.0, dtype=F64))
    return torch.cov(x.T).trace().item(), post[:, others].sum(1).mean().item()


WS = [0.0, 0.5, 1.0, 2.0, 4.0]


@pytest.mark.parametrize("label,stochastic", [(0, False), (1, False), (2, False), (2, True)])
def test_samples_concentrate_monotonically_as_w_grows(gm, label, stochastic):
    """2000 samples, 32 steps, the same noise (seed 7) for every w. Tolerances: at w = 0 the sample
    mean is within 0.03 of μ_c (the sampler's own accuracy); over w ∈ {0, 0.5, 1, 2, 4} the
    variance and the other classes' mass both fall strictly at every step, the variance by ≥ 5 %
    overall (DDIM: about 50 %, ancestral: about 10 %) and the other-class mass by ≥ 5× (ancestral: about 10×)."""
    den = _denoiser(gm)
    stats = []
    for w in WS:
        x = _local_sample(G.classifier_free(den, w), 2000, label, 32, torch.Generator().manual_seed(7), stochastic)
        if w == 0.0:
            assert (x.mean(0) - gm.means[label]).abs().max() < 0.03
        stats.append(_concentration(gm, x, label))
    var, other = zip(*stats)
    assert all(b < a for a, b in zip(var, var[1:])), var
    assert all(b < a for a, b in zip(other, other[1:])), other
    assert var[-1] < 0.95 * var[0], var
    assert other[-1] < 0.2 * other[0], other


def test_library_sampler_concentrates_too(gm):
    """Same check through pixdiff.samplers.sample, when that package exists."""
    samplers = pytest.importorskip("pixdiff.samplers")
    den = _denoiser(gm)
    stats = []
    for w in (0.0, 4.0):
        x = samplers.sample(G.classifier_free(den, w), (2000, 2), sampler="ddim", steps=32, schedule="cosine",
                            cond=torch.full((2000,), 1), generator=torch.Generator().manual_seed(3))
        stats.append(_concentration(gm, x.to(F64), 1))
    assert stats[1][0] < 0.95 * stats[0][0] and stats[1][1] < stats[0][1], stats


# --- autoguidance -----------------------------------------------------------------------------------


def _weak(gm):
    """A 'worse' model: the same mixture with blurred covariances and nudged means."""
    return GaussianMixture(gm.weights, gm.means * 0.9, gm.covs * 1.6, labels=gm.labels)


@pytest.mark.parametrize("cond_kind", ["labels", "none"])
def test_autoguidance_identities_and_linearity(gm, cond_kind):
    z, lam, cond = _noisy_batch(gm, torch.linspace(-5, 5, 64, dtype=F64))
    cond = cond if cond_kind == "labels" else None
    good, weak = _denoiser(gm), _denoiser(_weak(gm))
    d_good, d_weak = good(z, lam, cond), weak(z, lam, cond)
    twin = _denoiser(GaussianMixture.toy_2d())  # equal to good, a different object
    for w in (0.0, 0.5, 1.0, 2.0, 3.5):
        assert torch.equal(G.autoguidance(good, good, w)(z, lam, cond), d_good)
        assert torch.equal(G.autoguidance(good, twin, w)(z, lam, cond), d_good)
    assert torch.equal(G.autoguidance(good, weak, 1.0)(z, lam, cond), d_good)
    assert torch.equal(G.autoguidance(good, weak, 0.0)(z, lam, cond), d_weak)
    for w in (0.5, 2.0, 3.5):
        out = G.autoguidance(good, weak, w)(z, lam, cond)
        assert torch.allclose(out, d_weak + w * (d_good - d_weak), rtol=0, atol=1e-12)
        # Ho & Salimans 2022's convention: D_good + w (D_good − D_weak) = EDM2's w + 1
        cfg_style = G.autoguidance(good, weak, w, convention="cfg")(z, lam, cond)
        assert torch.allclose(cfg_style, d_good + w * (d_good - d_weak), rtol=0, atol=1e-12)


def test_nfe_per_call_counts_network_evaluations(gm):
    den = _denoiser(gm)
    assert G.classifier_free(den, 0.0).nfe_per_call == 1
    assert G.classifier_free(den, 1.0).nfe_per_call == 2
    assert G.classifier(den, _exact_classifier(gm), 2.0).nfe_per_call == 1
    assert G.autoguidance(den, _denoiser(_weak(gm)), 2.0).nfe_per_call == 2
    assert G.autoguidance(den, _denoiser(_weak(gm)), 1.0).nfe_per_call == 1
    nested = G.classifier_free(G.autoguidance(den, _denoiser(_weak(gm)), 2.0), 1.0)
    assert nested.nfe_per_call == 4


def test_guidance_intervals_table():
    assert G.guidance_interval(512) == (-3.0, 5.0)
    assert G.guidance_interval(256) == (-1.5, 5.0)
    assert G.guidance_interval(128) == (0.0, 5.0)
    assert G.guidance_interval(32) is None


# --- bad input ----------------------------------------------------------------------------------------


def test_bad_arguments_raise_clear_value_errors(gm):
    den, clf = _denoiser(gm), _exact_classifier(gm)
    z, lam, cond = _noisy_batch(gm, 0.0, n=8)
    bad = [
        (lambda: G.classifier_free(den, -0.5), "w"),
        (lambda: G.classifier_free(den, float("nan")), "finite"),
        (lambda: G.classifier_free(den, float("inf")), "finite"),
        (lambda: G.classifier_free(den, True), "real number"),
        (lambda: G.classifier_free(den, "2"), "real number"),
        (lambda: G.classifier_free(den, 1.0, interval=(5.0, -3.0)), "logsnr_lo < logsnr_hi"),
        (lambda: G.classifier_free(den, 1.0, interval=(1.0, 1.0)), "logsnr_lo < logsnr_hi"),
        (lambda: G.classifier_free(den, 1.0, interval=(float("nan"), 1.0)), "logsnr_lo < logsnr_hi"),
        (lambda: G.classifier_free(den, 1.0, interval=(1.0,)), "pair"),
        (lambda: G.classifier_free(den, 1.0, interval=5.0), "pair"),
        (lambda: G.classifier_free("model", 1.0), "callable"),
        (lambda: G.classifier_free(den, 1.0)(z, lam, cond.double()), "integer"),
        (lambda: G.classifier_free(den, 1.0)(z, lam, cond[:3]), "shape"),
        (lambda: G.classifier_free(den, 1.0)(z, lam[:3], cond), "logsnr"),
        (lambda: G.classifier(den, clf, float("nan")), "finite"),
        (lambda: G.classifier(den, None, 1.0), "callable"),
        (lambda: G.classifier(den, lambda z, l: z[:, 0], 1.0)(z, lam, cond), "logits"),
        (lambda: G.classifier(den, clf, 1.0, conditional=False)(z, lam, torch.full((8,), 7)), "labels must lie"),
        (lambda: G.classifier_gradient(clf, z, lam, None), "needs class labels"),
        (lambda: G.classifier_mean_shift(z, 0.1, z[:3], 1.0), "shape"),
        (lambda: G.classifier_mean_shift(z, torch.ones(5), z, 1.0), "variance"),
        (lambda: G.autoguidance(den, den, float("inf")), "finite"),
        (lambda: G.autoguidance(den, den, 1.0, convention="karras"), "convention"),
        (lambda: G.autoguidance(den, 3, 1.0), "callable"),
    ]
    for make, words in bad:
        with pytest.raises(ValueError, match=words):
            make()

    class BadNull:
        null_label = "none"

        def __call__(self, z, logsnr, cond=None):
            return z

    with pytest.raises(ValueError, match="null_label"):
        G.classifier_free(BadNull(), 1.0)
