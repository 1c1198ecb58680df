"""The samplers' default grids and settings against the papers they come from, observed through the
noise levels at which the denoiser is actually called (a spy that records λ and returns the exact
mixture denoiser's x̂).

- ``edm``: Karras et al. 2022 tuned γ_i = min(S_churn/N, √2 − 1) with S_churn = 40 at N = 256 steps
  (ImageNet-64, Table 5); at the default N the per-step γ must be that 40/256, below the clamp.
- ``consistency``: Song et al. 2023 Alg. 1 re-noises only to τ_n > ε; k steps cost k NFE and the
  2-step grid uses the official ImageNet-64 point (index 22 of the 40-point ρ = 7 grid).
- ``sid2_ddpm``: Hoogeboom et al. 2025 sample on cosine_interpolated (low 32, high 512) shifted
  for the image resolution, which the default takes from the sample shape.
- ``ddpm``/``ddim`` on a discrete schedule: the respaced sub-sequence starts at step T (Nichol &
  Dhariwal 2021, ``space_timesteps``), and still ends at step 1.
"""

from __future__ import annotations

import math

import pytest
import torch

from pixdiff import samplers as S
from pixdiff.analytic import GaussianMixture
from pixdiff.schedules import InterpolatedCosineSchedule, edm_sigma_grid, get

F64 = torch.float64


class Spy:
    """Records the (shared) λ of every call; answers with the toy mixture's exact x̂ (or x̂ = 0 for
    image-shaped inputs, where only the grid matters)."""

    def __init__(self):
        self.gm, self.lams = GaussianMixture.toy_2d(), []

    def __call__(self, z, logsnr, cond=None):
        lam = torch.as_tensor(logsnr, dtype=F64).flatten()
        self.lams.append(float(lam[0]))
        if z.dim() == 2 and z.shape[1] == 2:
            return self.gm.denoise(z, logsnr, cond)
        return torch.zeros_like(z)


def _run(name, shape=(4, 2), **kw):
    spy = Spy()
    _, nfe = S.sample(spy, shape, name, generator=torch.Generator().manual_seed(0), return_nfe=True, **kw)
    assert nfe == len(spy.lams)
    return spy.lams, nfe


# --- edm: γ at the default N -------------------------------------------------------------------------


def test_edm_default_gamma_is_the_papers_40_over_256_below_the_clamp():
    """γ_i = ŝ_i/s_i − 1, read off the first evaluation of each step (at ŝ_i = s_i (1 + γ_i))."""
    lams, _ = _run("edm")
    steps = S.get("edm").steps
    grid = S.grids.make("edm", None, steps)
    s = torch.exp(-0.5 * grid).tolist()
    firsts = lams[0::2]  # Heun: 2 calls per step, 1 on the last (s_N = 0)
    assert len(firsts) == steps
    gammas = [math.exp(-0.5 * lh) / s_i - 1.0 for lh, s_i in zip(firsts, s[:-1])]
    inside = [0.05 <= s_i <= 50.0 for s_i in s[:-1]]
    assert sum(inside) > steps // 2
    want = 40.0 / 256.0
    for g, ins in zip(gammas, inside):
        if ins:
            assert g < math.sqrt(2.0) - 1.0 - 1e-3, "γ is clamped"
            assert g == pytest.approx(want, rel=1e-9)
        else:
            assert abs(g) < 1e-12


def test_edm_explicit_s_churn_is_the_papers_formula():
    """An explicit S_churn keeps Karras et al. 2022's γ = min(S_churn/N, √2 − 1)."""
    for churn, want in ((5.0, 5.0 / 20), (40.0, math.sqrt(2.0) - 1.0)):
        lams, _ = _run("edm", steps=20, S_churn=churn)
        s0 = float(edm_sigma_grid(20)[5])
        assert math.exp(-0.5 * lams[10]) / s0 - 1.0 == pytest.approx(want, rel=1e-9)


# --- consistency: k NFE, no re-noising to σ_min -------------------------------------------------------


def _paper_tau1(sigma_min=0.002, sigma_max=80.0, rho=7.0):
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (a + 22 / 39 * (b - a)) ** rho  # openai/consistency_models: --ts 0,22,39 --steps 40


@pytest.mark.parametrize("steps", [None, 1, 2, 3, 5])
def test_consistency_default_grid_costs_k_nfe_and_never_renoises_to_sigma_min(steps):
    lams, nfe = _run("consistency", steps=steps)
    k = steps or 1
    assert nfe == k
    sig = [math.exp(-0.5 * l) for l in lams]
    assert sig[0] == pytest.approx(80.0, rel=1e-12)
    assert all(b < a for a, b in zip(sig, sig[1:]))
    assert min(sig) > 0.002 * 1.5, f"an evaluation at σ_min adds nothing: {sig}"
    if k == 2:
        assert sig[1] == pytest.approx(_paper_tau1(), rel=1e-12)


def test_consistency_grid_respects_sigma_bounds():
    lams, nfe = _run("consistency", steps=2, sigma_max=20.0, sigma_min=0.01)
    assert nfe == 2
    assert math.exp(-0.5 * lams[0]) == pytest.approx(20.0)
    assert math.exp(-0.5 * lams[1]) == pytest.approx(_paper_tau1(0.01, 20.0))


# --- sid2_ddpm: interpolated cosine at the image resolution ------------------------------------------


@pytest.mark.parametrize("res", [16, 64])
def test_sid2_default_grid_is_the_interpolated_cosine_at_the_shape_resolution(res):
    lams, nfe = _run("sid2_ddpm", shape=(1, 3, res, res))
    steps = S.get("sid2_ddpm").steps
    assert nfe == steps
    sched = InterpolatedCosineSchedule(resolution=res, low=32, high=512)
    want = sched.logsnr(torch.linspace(1.0, 0.0, steps + 1, dtype=F64))[:-1]
    torch.testing.assert_close(torch.tensor(lams, dtype=F64), want, rtol=0, atol=1e-12)


def test_sid2_non_square_resolution_is_the_geometric_mean():
    lams, _ = _run("sid2_ddpm", shape=(1, 1, 16, 64), steps=4)
    sched = InterpolatedCosineSchedule(resolution=32, low=32, high=512)
    want = sched.logsnr(torch.linspace(1.0, 0.0, 5, dtype=F64))[:-1]
    torch.testing.assert_close(torch.tensor(lams, dtype=F64), want, rtol=0, atol=1e-12)


# --- respaced DDPM: the sub-sequence starts at T -----------------------------------------------------


def _iddpm_space_timesteps(T, k):
    """Nichol & Dhariwal 2021's space_timesteps(T, [k]) (improved-diffusion/respace.py), 0-based."""
    frac = (T - 1) / (k - 1)
    cur, out = 0.0, []
    for _ in range(k):
        out.append(round(cur))
        cur += frac
    return out


@pytest.mark.parametrize("name,steps", [("ddpm", 25), ("ddpm", None), ("ddim", 10)])
def test_respaced_grid_starts_at_step_T_and_ends_at_step_1(name, steps):
    lams, nfe = _run(name, steps=steps)
    sched = get("linear_discrete")
    k = steps or S.get(name).steps
    assert nfe == k
    assert lams[0] == pytest.approx(float(sched.logsnr_table[-1]), abs=1e-12)  # t = T
    assert lams[-1] == pytest.approx(float(sched.logsnr_table[0]), abs=1e-12)  # t = 1, then x̂
    idx = torch.tensor(_iddpm_space_timesteps(1000, k))
    torch.testing.assert_close(torch.tensor(lams, dtype=F64), sched.logsnr_table[idx].flip(0), rtol=0, atol=1e-12)
