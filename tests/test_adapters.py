"""pixdiff.adapters: diffusers UNets as pixdiff denoisers, and k-diffusion / EDM sigma-space
denoisers both ways.

The diffusers checks build a small randomly initialised ``UNet2DModel`` and schedulers from config
kwargs (nothing is downloaded): pixdiff's ``ddim`` (η = 0) on the scheduler's own timesteps, driving
``from_diffusers(unet, scheduler)``, gives the images of diffusers' own DDIMScheduler loop from the
same initial noise. The exact-denoiser checks use ``pixdiff.analytic.GaussianMixture`` in float64.
"""

from __future__ import annotations

import math
import types

import pytest
import torch

from pixdiff import process
from pixdiff import samplers as S
from pixdiff.adapters import (
    diffusers_logsnr,
    diffusers_timestep,
    from_diffusers,
    from_sigma_denoiser,
    to_sigma_denoiser,
)
from pixdiff.analytic import GaussianMixture
from pixdiff.errors import PixdiffError

SHAPE = (2, 3, 8, 8)
PRED = {"epsilon": "eps", "sample": "x", "v_prediction": "v"}


def _diffusers():
    return pytest.importorskip("diffusers")


def _unet(out_channels=3, num_class_embeds=None, seed=0):
    diffusers = _diffusers()
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=out_channels, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=num_class_embeds).eval()


def _mixture(seed=0) -> GaussianMixture:
    """A 3-component mixture standing in for images of shape SHAPE[1:]."""
    g = torch.Generator().manual_seed(seed)
    D = math.prod(SHAPE[1:])
    means = torch.randn(3, D, generator=g, dtype=torch.float64) * 0.5
    A = torch.randn(3, D, D, generator=g, dtype=torch.float64) / math.sqrt(D)
    covs = 0.05 * A @ A.transpose(1, 2) + 0.02 * torch.eye(D, dtype=torch.float64)
    return GaussianMixture([0.5, 0.3, 0.2], means, covs, labels=[0, 1, 1], shape=SHAPE[1:])


# --- from_diffusers against diffusers' own DDIM loop ------------------------------------------------------


def _ddim_both(unet, sched, steps=10, class_labels=None):
    sched.set_timesteps(steps)
    table = diffusers_logsnr(sched)
    # the grid: λ at the scheduler's own timesteps, then λ = +∞ (set_alpha_to_one=True: diffusers'
    # last step goes to ᾱ = 1, i.e. x = x̂, which is how pixdiff's ddim ends at +∞)
    grid = torch.cat([table[sched.timesteps.long()], torch.tensor([math.inf], dtype=torch.float64)])
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    x = x_T.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            out = unet(x, t, class_labels=class_labels).sample
            x = sched.step(out, t, x, eta=0.0).prev_sample
    # pixdiff starts at z = σ_0 ε, diffusers at z = x_T: pass ε = x_T / σ_0
    noise = x_T / process.alpha_sigma_at(float(grid[0]))[1]
    ours = S.sample(from_diffusers(unet, sched), SHAPE, "ddim", grid=grid, noise=noise, eta=0.0,
                    cond=class_labels)
    return ours, x


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddim_matches_diffusers_loop(prediction_type, beta_schedule):
    diffusers = _diffusers()
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule,
                                    prediction_type=prediction_type, clip_sample=False, set_alpha_to_one=True)
    ours, theirs = _ddim_both(_unet(), sched)
    # float32 throughout: the only differences are rounding in the two step formulas (pixdiff's in
    # float64 coefficients from λ, diffusers' from float32 ᾱ) carried through 10 UNet calls
    # (measured: max |Δ| ≤ 6e-6 where the images are O(1–20); eps/linear's untrained UNet gives
    # images up to ~190 (ε/α at λ_999 ≈ −10) and |Δ| 1.2e-4 there, i.e. relative 6e-7)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_ddim_matches_diffusers_loop_class_conditional():
    diffusers = _diffusers()
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=True)
    labels = torch.tensor([0, 3])
    ours, theirs = _ddim_both(_unet(num_class_embeds=4), sched, class_labels=labels)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)  # as above
    # the labels matter
    other, _ = _ddim_both(_unet(num_class_embeds=4), sched, class_labels=torch.tensor([1, 2]))
    assert (other - ours).abs().max() > 1e-3


def test_clip_sample_and_learned_variance():
    diffusers = _diffusers()
    unet = _unet(out_channels=6)
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, variance_type="learned_range")
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2)) * 3
    lam = diffusers_logsnr(sched)[[900, 900]]
    with torch.no_grad():
        eps = unet(z, torch.tensor([900, 900])).sample[:, :3]
        x_hat = from_diffusers(unet, sched)(z, lam)
        x_clip = from_diffusers(unet, sched, clip_sample=True)(z, lam)
    torch.testing.assert_close(x_hat, process.x_from_eps(z, eps, lam), rtol=1e-6, atol=1e-6)  # float32 rounding
    assert x_hat.abs().max() > 1 and x_clip.abs().max() <= 1
    torch.testing.assert_close(x_clip, x_hat.clamp(-1, 1), rtol=0, atol=0)


# --- the timestep map ----------------------------------------------------------------------------------


def test_timestep_inverts_the_table():
    diffusers = _diffusers()
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear")
    table = diffusers_logsnr(sched)
    assert (table[1:] < table[:-1]).all()
    t = torch.arange(1000, dtype=torch.float64)
    assert torch.equal(diffusers_timestep(table, table), t)  # exact at table entries
    mid = 0.5 * (table[:-1] + table[1:])
    torch.testing.assert_close(diffusers_timestep(table, mid), t[:-1] + 0.5, rtol=0, atol=1e-9)
    # clamped outside the table: above λ_0 (and +∞) → 0, below λ_{T−1} → T − 1
    out = diffusers_timestep(table, torch.tensor([math.inf, float(table[0]) + 5, float(table[-1]) - 5, -math.inf]))
    assert out.tolist() == [0.0, 0.0, 999.0, 999.0]


# --- exact denoisers ----------------------------------------------------------------------------------


def test_sigma_round_trips_are_the_identity():
    gm = _mixture()
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lam = torch.tensor([-3.0, 4.5], dtype=torch.float64)
    cond = torch.tensor([0, 1])
    back = from_sigma_denoiser(to_sigma_denoiser(gm.denoise))
    for c in (None, cond):
        # float64: the VP → sigma → VP round trip costs a few ulps of α (tolerance 1e-12)
        torch.testing.assert_close(back(z, lam, c), gm.denoise(z, lam, c), rtol=0, atol=1e-12)
    # the other way: an EDM-style D(x_σ, σ) built from the exact denoiser
    f = to_sigma_denoiser(gm.denoise)
    x_sigma = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 3
    for sigma in (torch.tensor([0.3, 12.0], dtype=torch.float64), 2.5):
        torch.testing.assert_close(to_sigma_denoiser(from_sigma_denoiser(f))(x_sigma, sigma, cond),
                                   f(x_sigma, sigma, cond), rtol=0, atol=1e-12)
    # and f really is the sigma-space view: f(z/α, e^{−λ/2}) = D(z, λ)
    xs, s = process.to_sigma_space(z, lam)
    torch.testing.assert_close(f(xs, s), gm.denoise(z, lam), rtol=0, atol=1e-12)


def test_from_sigma_denoiser_edm_preconditioning():
    gm = _mixture()
    sd = 0.5

    def raw(x_in, c_noise, class_labels=None):
        # F = (D − c_skip x_σ)/c_out with D the exact denoiser: then the preconditioned D is exact
        s = torch.exp(4 * c_noise)
        c_skip, c_out, c_in, _ = process.edm_preconditioning(s, sd)
        x_sigma = x_in / c_in.reshape(-1, 1, 1, 1)
        d = to_sigma_denoiser(gm.denoise)(x_sigma, s, class_labels)
        return (d - c_skip.reshape(-1, 1, 1, 1) * x_sigma) / c_out.reshape(-1, 1, 1, 1)

    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    lam = torch.tensor([-1.0, 2.0], dtype=torch.float64)
    # float64 (tolerance 1e-10: c_noise = ln(s)/4 is inverted by exp inside `raw`)
    torch.testing.assert_close(from_sigma_denoiser(raw, sigma_data=sd)(z, lam), gm.denoise(z, lam),
                               rtol=0, atol=1e-10)


class _ExactUNet:
    """A fake float64 diffusers UNet whose output at timestep t is the exact ε (or x, v) of a Gaussian
    mixture at the model's own λ(t): the table value at integer t and, between integers, λ from ᾱ
    interpolated linearly in t (a smooth continuation the network never saw in training)."""

    dtype = torch.float64

    def __init__(self, gm, table, alphas_cumprod, kind):
        self.gm, self.table, self.ab, self.kind = gm, table, alphas_cumprod.double(), kind
        self.config = {"time_embedding_type": "positional", "num_class_embeds": None}
        self.seen = []

    def model_logsnr(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        lo = t.floor().long().clamp(max=self.ab.numel() - 2)
        w = t - lo
        ab = (1 - w) * self.ab[lo] + w * self.ab[lo + 1]
        return torch.where(w == 0, self.table[lo], torch.log(ab) - torch.log1p(-ab))

    def __call__(self, z, t, class_labels=None):
        self.seen.append(t)
        lam = self.model_logsnr(t)
        return types.SimpleNamespace(sample=process.from_x(self.gm.denoise(z, lam), self.kind, z, lam))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_from_diffusers_exact_denoiser(prediction_type):
    diffusers = _diffusers()
    gm = _mixture()
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type=prediction_type)
    table = diffusers_logsnr(sched)
    net = _ExactUNet(gm, table, sched.alphas_cumprod, PRED[prediction_type])
    D = from_diffusers(net, sched)
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    for t in ([0, 999], [37, 512], [250, 251]):
        lam = table[t]
        # at table λ: integer timesteps, the exact x̂ (float64 round-off of the ε/v ↔ x conversions
        # at λ down to −10: tolerance 1e-10)
        torch.testing.assert_close(D(z, lam), gm.denoise(z, lam), rtol=0, atol=1e-10)
        assert net.seen[-1].tolist() == [float(i) for i in t]
    # between table entries the network's λ(t) differs from the requested λ by the interpolation
    # error; the x̂ error is that λ error times |∂x̂/∂λ|
    for i in (3, 100, 500, 900):
        lam = torch.full((2,), 0.5 * float(table[i] + table[i + 1]), dtype=torch.float64)
        x_hat = D(z, lam)
        dlam = float((net.model_logsnr(net.seen[-1]) - lam).abs().max())
        # on one segment λ_lin is the chord of λ(ᾱ) = log(ᾱ/(1−ᾱ)) over ᾱ: |Δλ| ≤ (Δᾱ)²/8 · max|λ''(ᾱ)|,
        # λ'' = −(1−2ᾱ)/(ᾱ(1−ᾱ))², whose modulus peaks at an end of the segment
        a = sched.alphas_cumprod.double()[[i, i + 1]]
        f2 = float(((1 - 2 * a).abs() / (a * (1 - a)) ** 2).max())
        assert 0 < dlam <= float(a[0] - a[1]) ** 2 / 8 * f2 * (1 + 1e-6)
        # first order: x̂ error = Δλ · ∂/∂λ' of the network's output at λ' converted to x at λ
        kind = PRED[prediction_type]

        def converted(lp, lam=lam, kind=kind):
            return process.to_x(process.from_x(gm.denoise(z, lp), kind, z, lp), kind, z, lam)

        h = 1e-5
        dx = (converted(lam + h) - converted(lam - h)) / (2 * h)
        bound = dlam * float(dx.abs().max()) * 1.5 + 1e-10  # 1.5: room for the second-order term
        assert float((x_hat - gm.denoise(z, lam)).abs().max()) <= bound


# --- one-line errors ------------------------------------------------------------------------------------


def _fake_sched(**config):
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)
    return types.SimpleNamespace(config={"num_train_timesteps": 1000, **config}, alphas_cumprod=ab)


def _one_line(exc):
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def test_errors_are_one_line():
    net = _ExactUNet(_mixture(), diffusers_logsnr(_fake_sched()), _fake_sched().alphas_cumprod, "eps")
    with pytest.raises(PixdiffError) as e:
        from_diffusers(net, types.SimpleNamespace(config={"num_train_timesteps": 1000}))
    assert "alphas_cumprod" in _one_line(e)
    with pytest.raises(PixdiffError) as e:
        from_diffusers(net, _fake_sched(prediction_type="flow"))
    assert "prediction_type" in _one_line(e)
    with pytest.raises(PixdiffError) as e:
        from_diffusers(net, _fake_sched(timestep_type="continuous"))
    assert "timestep_type" in _one_line(e)
    with pytest.raises(PixdiffError) as e:
        from_diffusers(net, _fake_sched(num_train_timesteps=500))
    assert "num_train_timesteps" in _one_line(e)
    fourier = types.SimpleNamespace(config={"time_embedding_type": "fourier"})
    with pytest.raises(PixdiffError) as e:
        from_diffusers(fourier, _fake_sched())
    assert "fourier" in _one_line(e)
    z = torch.zeros(SHAPE, dtype=torch.float64)
    D = from_diffusers(net, _fake_sched())
    with pytest.raises(PixdiffError) as e:
        D(z, 0.0, torch.tensor([0, 1]))
    assert "class embedding" in _one_line(e)
    with pytest.raises(PixdiffError) as e:
        D(z, torch.zeros(3))
    assert "batch" in _one_line(e)

    def wide(z, t, class_labels=None):  # 2C channels without a learned-variance scheduler
        return torch.cat([z, z], 1)

    with pytest.raises(PixdiffError) as e:
        from_diffusers(wide, _fake_sched())(z, 0.0)
    assert "channels" in _one_line(e)
    with pytest.raises(PixdiffError) as e:
        from_sigma_denoiser(lambda x, s: x, sigma_data=-1.0)
    assert "sigma_data" in _one_line(e)
    with pytest.raises(PixdiffError) as e:
        to_sigma_denoiser(lambda z, lam, c=None: z)(z, torch.tensor([-1.0, 1.0]))
    assert "sigma" in _one_line(e)
    with pytest.raises(PixdiffError):
        to_sigma_denoiser(None)
