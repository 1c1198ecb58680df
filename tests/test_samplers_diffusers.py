"""Peer cross-check: given identical model outputs, pixdiff's ddpm, ddim, euler, heun and dpmpp_2m
take the same steps as diffusers' DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler,
HeunDiscreteScheduler and DPMSolverMultistepScheduler (float32, to float tolerance).

"The model" is one fixed smooth function ε(z, λ) of the VP state and logSNR. diffusers calls it on
its scaled model input at the noise level of the current step; pixdiff calls the denoiser
x̂ = (z − σ ε(z, λ))/α built from it. Each diffusers loop runs on the scheduler's own grid, which is
converted to logSNR (λ = log ᾱ − log(1 − ᾱ), or −2 log σ for the sigma schedulers) for pixdiff.
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import (  # noqa: E402
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
)

from pixdiff import samplers as S  # noqa: E402
from pixdiff.schedules import ddim_timesteps  # noqa: E402
from pixdiff.schedules import get as get_schedule  # noqa: E402

SHAPE = (6, 3, 4, 4)
BETAS = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
             prediction_type="epsilon")
TOL = dict(rtol=2e-4, atol=2e-4)
W = torch.randn(3, 3, generator=torch.Generator().manual_seed(0)) * 0.5


def model_eps(z: torch.Tensor, logsnr: float) -> torch.Tensor:
    """A fixed smooth 'network': mixes channels and depends on the noise level."""
    return torch.tanh(torch.einsum("ij,bjhw->bihw", W, z) + 0.1 * logsnr) + 0.3 * z


def denoiser(z, logsnr, cond=None):
    lam = float(logsnr[0])
    a, s = math.sqrt(1 / (1 + math.exp(-lam))), math.sqrt(1 / (1 + math.exp(lam)))
    return (z - s * model_eps(z, lam)) / a


def _lam_ab(ab: torch.Tensor) -> float:
    ab = ab.double()
    return float(torch.log(ab) - torch.log1p(-ab))


def _init(seed=0):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


def _start_noise(x_init_vp: torch.Tensor, lam0: float) -> torch.Tensor:
    """pixdiff starts at z = σ_0 ε; diffusers at z = ε: rescale ε so both start at the same z."""
    return x_init_vp / math.sqrt(1 / (1 + math.exp(lam0)))



# (fixed_large, trailing) is left out: its last step runs from step T/k (diffusers' t = 39 > 0) to data,
# and diffusers adds noise of variance β = 1 − ᾱ_40 there, where Ho et al. 2020 Alg. 2 (and pixdiff)
# add none on the step into x_0; with β̃ (= 0 there) and with spacings ending at step 1 they agree.
@pytest.mark.parametrize("variance,spacing", [(v, s) for v in ("fixed_small", "fixed_large")
                                              for s in ("linspace", "leading", "trailing")
                                              if (v, s) != ("fixed_large", "trailing")])
def test_ddpm_matches_diffusers(variance, spacing):
    sched = DDPMScheduler(**BETAS, variance_type=variance, clip_sample=False, timestep_spacing=spacing)
    sched.set_timesteps(25)
    x = _init()
    g = torch.Generator().manual_seed(1)
    grid = [_lam_ab(sched.alphas_cumprod[int(t)]) for t in sched.timesteps] + [math.inf]
    for t in sched.timesteps:
        x = sched.step(model_eps(x, _lam_ab(sched.alphas_cumprod[int(t)])), t, x, generator=g).prev_sample
    ours = S.sample(denoiser, SHAPE, "ddpm", grid=torch.tensor(grid, dtype=torch.float64),
                    noise=_start_noise(_init(), grid[0]), generator=torch.Generator().manual_seed(1),
                    variance={"fixed_small": "beta_tilde", "fixed_large": "beta"}[variance])
    torch.testing.assert_close(ours, x, **TOL)
    # pixdiff's grid with the same spacing is the same sub-sequence; its default is 'linspace'
    # (IDDPM's respacing: from step T down to step 1)
    torch.testing.assert_close(S.grids.uniform_t(get_schedule("linear_discrete"), 25, spacing=spacing),
                               torch.tensor(grid, dtype=torch.float64), rtol=1e-4, atol=0)  # diffusers: float32 ᾱ
    if spacing == "linspace":
        torch.testing.assert_close(S.grids.uniform_t(get_schedule("linear_discrete"), 25),
                                   torch.tensor(grid, dtype=torch.float64), rtol=1e-4, atol=0)


def test_ddpm_learned_range_matches_diffusers():
    v = torch.linspace(-0.8, 0.9, 3).reshape(1, 3, 1, 1).expand(SHAPE)

    class Learned:
        learn_sigma = True

        def __call__(self, z, logsnr, cond=None):
            return denoiser(z, logsnr)

        def predict(self, z, logsnr, cond=None):
            return denoiser(z, logsnr), (v + 1) / 2

    sched = DDPMScheduler(**BETAS, variance_type="learned_range", clip_sample=False)
    sched.set_timesteps(20)
    x = _init()
    g = torch.Generator().manual_seed(1)
    grid = [_lam_ab(sched.alphas_cumprod[int(t)]) for t in sched.timesteps] + [math.inf]
    for t in sched.timesteps:
        eps = model_eps(x, _lam_ab(sched.alphas_cumprod[int(t)]))
        x = sched.step(torch.cat([eps, v], 1), t, x, generator=g).prev_sample
    ours = S.sample(Learned(), SHAPE, "ddpm", grid=torch.tensor(grid, dtype=torch.float64),
                    noise=_start_noise(_init(), grid[0]), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours, x, **TOL)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_matches_diffusers(eta):
    sched = DDIMScheduler(**BETAS, clip_sample=False, set_alpha_to_one=True, steps_offset=0,
                          timestep_spacing="leading")
    sched.set_timesteps(20)
    # DDIM's own sub-sequence τ (Song et al. 2021a) is diffusers' 'leading'
    assert sorted(int(t) + 1 for t in sched.timesteps) == ddim_timesteps(1000, 20)
    x = _init()
    g = torch.Generator().manual_seed(1)
    grid = [_lam_ab(sched.alphas_cumprod[int(t)]) for t in sched.timesteps] + [math.inf]
    for t in sched.timesteps:
        x = sched.step(model_eps(x, _lam_ab(sched.alphas_cumprod[int(t)])), t, x, eta=eta, generator=g).prev_sample
    ours = S.sample(denoiser, SHAPE, "ddim", grid=torch.tensor(grid, dtype=torch.float64),
                    noise=_start_noise(_init(), grid[0]), eta=eta, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours, x, **TOL)


def _sigma_loop(sched, x):
    """Run a k-diffusion-style diffusers scheduler; the model's λ is −2 log σ of the current step."""
    for t in sched.timesteps:
        inp = sched.scale_model_input(x, t)
        lam = -2.0 * math.log(float(sched.sigmas[sched.step_index]))
        x = sched.step(model_eps(inp, lam), t, x).prev_sample
    return x


@pytest.mark.parametrize("name,cls", [("euler", EulerDiscreteScheduler), ("heun", HeunDiscreteScheduler)])
def test_euler_heun_match_diffusers(name, cls):
    sched = cls(**BETAS, timestep_spacing="linspace")
    sched.set_timesteps(12)
    sigmas = torch.unique_consecutive(sched.sigmas.double())  # Heun repeats each σ for its 2 stages
    grid = -2.0 * torch.log(sigmas)
    x0 = _init() * sched.init_noise_sigma  # sigma-space start x_σ
    x = _sigma_loop(sched, x0.clone())
    # pixdiff starts at x_σ = s_0 ε
    ours, nfe = S.sample(denoiser, SHAPE, name, grid=grid, noise=x0 / float(sigmas[0]), return_nfe=True)
    assert nfe == (12 if name == "euler" else 23)
    torch.testing.assert_close(ours, x, **TOL)


def test_dpmpp_2m_matches_diffusers():
    sched = DPMSolverMultistepScheduler(**BETAS, algorithm_type="dpmsolver++", solver_order=2,
                                        solver_type="midpoint", lower_order_final=True, final_sigmas_type="zero",
                                        timestep_spacing="linspace")
    sched.set_timesteps(20)
    sigmas = sched.sigmas.double()
    grid = -2.0 * torch.log(sigmas)
    x = _init()
    z0 = x.clone()
    for i, t in enumerate(sched.timesteps):
        x = sched.step(model_eps(x, float(grid[i])), t, x).prev_sample
    ours = S.sample(denoiser, SHAPE, "dpmpp_2m", grid=grid, noise=_start_noise(z0, float(grid[0])))
    torch.testing.assert_close(ours, x, **TOL)
