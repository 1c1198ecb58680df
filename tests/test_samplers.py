"""Samplers against exact answers: each sampler, driven by the exact denoiser of a Gaussian mixture,
reproduces the mixture; plus NFE, determinism, per-sample seeding, options and bad input.

Order of accuracy: tests/test_samplers_order.py. Identities between samplers and single steps:
tests/test_samplers_identities.py. Cross-check with diffusers: tests/test_samplers_diffusers.py.

Tolerances of the distribution test, for n = 10 000 samples (standard errors in brackets):
    mean        max |Δ| ≤ 0.04                   (σ/√n ≤ 0.01)
    covariance  max |Δ| ≤ 0.06 entrywise          (≈ var·√(2/n) ≤ 0.012)
    SWD         sliced W1 to 10k true samples ≤ 0.03 (two true 10k samples: ≈ 0.007–0.01)
    mass        |E p(k | x) − w_k| ≤ 0.025       (√(w(1−w)/n) ≤ 0.005)
"""

from __future__ import annotations

import math

import pytest
import torch
from test_samplers_support import component_mass, gaussian16, pf_map, pf_ode_reference, sliced_wasserstein

from pixdiff import samplers as S
from pixdiff.analytic import GaussianMixture
from pixdiff.schedules import VESchedule

N = 10_000
MEAN_TOL, COV_TOL, SWD_TOL, MASS_TOL = 0.04, 0.06, 0.03, 0.025
# Annealed Langevin is biased at a finite step (the unadjusted Langevin algorithm inflates variances by
# ≈ 1/(1 − α/4v) per level); on the 16-D Gaussian its covariance is off by ≈ 0.05 at the default 1001 NFE.
COV_TOL_BY_SAMPLER = {"langevin": 0.08}

TARGETS = {"toy_2d": GaussianMixture.toy_2d, "gauss16": gaussian16}
_CACHE: dict[str, tuple] = {}


def target(name):
    if name not in _CACHE:
        gm = TARGETS[name]()
        _CACHE[name] = (gm, gm.denoise, gm.sample(N, torch.Generator().manual_seed(123)))
    return _CACHE[name]


# Options for the distribution test. SiD2's static clipping is for data in [−1, 1]; these targets
# reach outside it, so the clipping is tested on its own below.
DIST_OPTIONS = {"sid2_ddpm": {"clip_x": None}}


def _sample(name, key, **kw):
    gm, fast, _ = target(key)
    den = pf_map(gm) if name == "consistency" else fast
    kw = {**DIST_OPTIONS.get(name, {}), **kw}
    return S.sample(den, (N, gm.dim), sampler=name, generator=torch.Generator().manual_seed(7),
                    return_nfe=True, **kw)



def check_distribution(gm, x, ref, cov_tol=COV_TOL):
    x = x.to(torch.float64)
    assert torch.isfinite(x).all()
    dm = (x.mean(0) - gm.mean()).abs().max().item()
    dc = (torch.cov(x.T) - gm.cov()).abs().max().item()
    swd = sliced_wasserstein(x, ref)
    assert dm <= MEAN_TOL, f"mean off by {dm:.4f}"
    assert dc <= cov_tol, f"covariance off by {dc:.4f}"
    assert swd <= SWD_TOL, f"sliced Wasserstein {swd:.4f}"
    if len(gm.weights) > 1:
        dmass = (component_mass(gm, x) - gm.weights).abs().max().item()
        assert dmass <= MASS_TOL, f"component mass off by {dmass:.4f}"


@pytest.mark.parametrize("key", sorted(TARGETS))
@pytest.mark.parametrize("name", S.available())
def test_reproduces_target(name, key):
    gm, _, ref = target(key)
    x, nfe = _sample(name, key)
    assert x.shape == (N, gm.dim)
    check_distribution(gm, x, ref, COV_TOL_BY_SAMPLER.get(name, COV_TOL))


@pytest.mark.parametrize("name,process", [("euler_maruyama", "ve"), ("pc", "vp")])
def test_sde_samplers_other_process(name, process):
    """The default runs above use VP for euler_maruyama and VE for pc; here the other process."""
    gm, _, ref = target("toy_2d")
    x, _ = _sample(name, "toy_2d", process=process)
    check_distribution(gm, x, ref)


def test_multistep_consistency():
    """Song et al. 2023 Alg. 1 with 3 time points, f = the exact probability-flow map."""
    gm, _, ref = target("toy_2d")
    grid = torch.tensor([-2 * math.log(80.0), -2 * math.log(1.0), -2 * math.log(0.2)])
    x, nfe = _sample("consistency", "toy_2d", grid=grid)
    assert nfe == 3
    check_distribution(gm, x, ref)


def test_pf_map_is_a_consistency_function():
    """f(z_s, λ_s) = f(z_t, λ_t) on one trajectory: map a noisy point down with the reference solver."""
    gm, fast, _ = target("toy_2d")
    f = pf_map(gm)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 5.0
    x_mid = pf_ode_reference(gm, x, 5.0, 0.5, rtol=1e-10)
    a = f(x / math.sqrt(26.0), torch.tensor([-2 * math.log(5.0)]))
    b = f(x_mid / math.sqrt(1.25), torch.tensor([-2 * math.log(0.5)]))
    torch.testing.assert_close(a, b, atol=2e-4, rtol=0)


# --- NFE ------------------------------------------------------------------------------------------------

NFE = {  # sampler: (steps, options, expected NFE) — with the grid ending at data (λ = +∞)
    "ddpm": (10, {}, 10), "ddim": (10, {}, 10), "sid2_ddpm": (10, {}, 10), "euler": (10, {}, 10),
    "heun": (10, {}, 19), "edm": (10, {}, 19), "dpmpp_2m": (10, {}, 10),
    "dpm_solver": (10, {"order": 2}, 19), "euler_maruyama": (10, {}, 10),
    "pc": (10, {"corrector_steps": 2}, 9 * 3 + 1), "langevin": (4, {"steps_per_level": 3}, 13),
    "consistency": (3, {}, 3),
    "lms": (10, {}, 10), "deis": (10, {}, 10), "unipc": (10, {}, 10), "dpmpp_2m_sde": (10, {}, 10),
    "dpmpp_3m_sde": (10, {}, 10), "dpm2_ancestral": (10, {}, 19), "dpmpp_2s_ancestral": (10, {}, 19),
    "dpmpp_sde": (10, {}, 19),
}


@pytest.mark.parametrize("name", S.available())
def test_nfe(name):
    steps, opts, want = NFE[name]
    gm = GaussianMixture.toy_2d()
    _, nfe = S.sample(gm, (4, 2), name, steps=steps, generator=torch.Generator().manual_seed(0),
                      return_nfe=True, **opts)
    assert nfe == want


@pytest.mark.parametrize("order", [1, 2, 3])
def test_dpm_solver_nfe(order):
    _, nfe = S.sample(GaussianMixture.toy_2d(), (4, 2), "dpm_solver", steps=6, order=order, return_nfe=True)
    assert nfe == order * 5 + 1


# --- determinism and per-sample seeding --------------------------------------------------------------------


@pytest.mark.parametrize("name", S.available())
def test_same_generator_same_samples(name):
    gm = GaussianMixture.toy_2d()
    steps = {"langevin": 3, "consistency": 2}.get(name, 6)
    opts = {"steps_per_level": 2} if name == "langevin" else {}
    a = S.sample(gm, (8, 2), name, steps=steps, generator=torch.Generator().manual_seed(3), **opts)
    b = S.sample(gm, (8, 2), name, steps=steps, generator=torch.Generator().manual_seed(3), **opts)
    c = S.sample(gm, (8, 2), name, steps=steps, generator=torch.Generator().manual_seed(4), **opts)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", [n for n in S.available() if n != "pc"])
def test_sample_alone_equals_sample_in_batch(name):
    """With one generator per sample, sample i does not depend on the rest of the batch. (pc is the
    exception: its corrector's step size is a batch statistic, as in Song et al.'s code.)"""
    gm = GaussianMixture.toy_2d()
    steps = {"langevin": 3, "consistency": 2}.get(name, 6)
    opts = {"steps_per_level": 2} if name == "langevin" else {}
    seeds = [11, 12, 13, 14, 15]
    batch = S.sample(gm, (5, 2), name, steps=steps, generator=S.generators(seeds), dtype=torch.float64, **opts)
    alone = S.sample(gm, (1, 2), name, steps=steps, generator=S.generators([seeds[3]]), dtype=torch.float64, **opts)
    torch.testing.assert_close(alone[0], batch[3], rtol=1e-12, atol=1e-12)


def test_cond_is_passed_to_the_denoiser():
    gm = GaussianMixture.toy_2d()
    x = S.sample(gm, (500, 2), "ddim", steps=20, cond=torch.full((500,), 1), generator=torch.Generator().manual_seed(0))
    assert (component_mass(gm, x)[1] > 0.99).item()


# --- options, thresholding, grids -------------------------------------------------------------------------


def test_sid2_static_clipping_bounds_the_output():
    gm = GaussianMixture.gaussian(torch.zeros(2), 4.0 * torch.eye(2))  # mostly outside [−1, 1]
    x = S.sample(gm, (2000, 2), "sid2_ddpm", steps=32, generator=torch.Generator().manual_seed(0))
    assert x.abs().max() <= 1.0
    y = S.sample(gm, (2000, 2), "sid2_ddpm", steps=32, clip_x=None, generator=torch.Generator().manual_seed(0))
    assert y.abs().max() > 2.0


def test_thresholds():
    x = torch.tensor([[0.5, -3.0, 2.0, 0.1], [0.2, 0.3, -0.4, 0.9]])
    assert torch.equal(S.static_threshold(x), x.clamp(-1, 1))
    y = S.dynamic_threshold(x, percentile=1.0)
    torch.testing.assert_close(y[0], x[0] / 3.0)  # s = max |x| = 3 > 1: rescale into [−1, 1]
    torch.testing.assert_close(y[1], x[1])  # s < 1: clip to ±1, i.e. unchanged
    assert y.abs().max() <= 1.0


def test_grids():
    from pixdiff.schedules import ddim_timesteps, edm_sigma_grid, get, respaced_timesteps
    g = S.grids.edm(18)
    assert g.shape == (19,) and g[-1] == math.inf and (g[1:] > g[:-1]).all()
    torch.testing.assert_close(torch.exp(-0.5 * g[:-1]), edm_sigma_grid(18))
    sched = get("linear_discrete")
    g = S.grids.uniform_t(sched, 50)
    idx = torch.tensor(respaced_timesteps(1000, 50)) - 1  # IDDPM's respacing: steps 1 … T
    assert idx[0] == 0 and idx[-1] == 999
    torch.testing.assert_close(g[:-1], sched.logsnr_table[idx].flip(0))
    g = S.grids.uniform_t(sched, 50, spacing="leading")  # DDIM's τ
    torch.testing.assert_close(g[:-1], sched.logsnr_table[torch.tensor(ddim_timesteps(1000, 50)) - 1].flip(0))
    assert respaced_timesteps(1000, 1) == [1000] and respaced_timesteps(1000, 4, "trailing") == [250, 500, 750, 1000]
    cos = get("cosine")
    g = S.grids.uniform_t(cos, 4, to_data=False)
    torch.testing.assert_close(g, cos.logsnr(torch.linspace(1, 0, 5, dtype=torch.float64)))
    q = S.grids.quadratic_t(cos, 4, to_data=False)
    torch.testing.assert_close(q, cos.logsnr(torch.tensor([1.0, 9 / 16, 4 / 16, 1 / 16, 0.0], dtype=torch.float64)))
    u = S.grids.uniform_logsnr(cos, 6, to_data=False)
    torch.testing.assert_close(u, torch.linspace(-15, 15, 7, dtype=torch.float64))
    # IDDPM's cosine reaches λ = −∞ at t = 1: the grid starts at the floor instead.
    assert S.grids.uniform_t(get("iddpm_cosine"), 4)[0] == S.grids.LOGSNR_FLOOR


def test_sample_with_explicit_grid_and_schedule():
    gm = GaussianMixture.toy_2d()
    x, nfe = S.sample(gm, (4, 2), "ddim", schedule="cosine", steps=7, return_nfe=True)
    assert nfe == 7 and x.shape == (4, 2)
    x, nfe = S.sample(gm, (4, 2), "heun", grid=S.grids.edm(5, sigma_max=10.0), return_nfe=True)
    assert nfe == 9
    x, nfe = S.sample(gm, (4, 2), "euler", steps=5, grid="uniform_logsnr", schedule="cosine", return_nfe=True)
    assert nfe == 5


# --- bad input -------------------------------------------------------------------------------------------


def test_unknown_sampler_lists_names():
    with pytest.raises(ValueError, match="available: .*ddim.*heun"):
        S.sample(GaussianMixture.toy_2d(), (2, 2), "heunn")


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        S.sample(GaussianMixture.toy_2d(), (2, 2), "ddim", steps=steps)


@pytest.mark.parametrize("eta", [-0.1, 1.5, "1"])
def test_bad_eta(eta):
    with pytest.raises(ValueError, match=r"eta must be a number in \[0, 1\]"):
        S.sample(GaussianMixture.toy_2d(), (2, 2), "ddim", steps=3, eta=eta)


@pytest.mark.parametrize("name,opt", [("heun", {"eta": 0.5}), ("ddpm", {"S_churn": 1.0}), ("euler", {"order": 2}),
                                      ("ddim", {"rho": 7.0})])
def test_option_the_sampler_does_not_take(name, opt):
    with pytest.raises(ValueError, match=f"sampler '{name}' takes no option"):
        S.sample(GaussianMixture.toy_2d(), (2, 2), name, steps=3, **opt)


@pytest.mark.parametrize("name,opt,msg", [
    ("ddpm", {"variance": "large"}, "variance must be one of"),
    ("ddpm", {"variance": "learned"}, "needs a denoiser whose predict"),
    ("dpm_solver", {"order": 4}, "order must be 1, 2 or 3"),
    ("sid2_ddpm", {"gamma": 2.0}, r"gamma must be a number in \[0, 1\]"),
    ("ddim", {"clip_x": "soft"}, "clip_x must be None"),
    ("euler_maruyama", {"process": "sub-vp"}, "process must be one of"),
    ("pc", {"snr": -1.0}, "snr must be a positive number"),
    ("edm", {"S_churn": -1.0}, "S_churn must be a non-negative number"),
    ("langevin", {"steps_per_level": 0}, "steps_per_level must be a positive integer"),
    ("ddim", {"grid": "log"}, "unknown grid"),
    ("ddpm", {"spacing": "middle"}, "spacing must be one of"),
    ("edm", {"S_noise": float("nan")}, "S_noise must be a non-negative number"),
    ("dpm_solver", {"order": True}, "order must be 1, 2 or 3"),
    ("consistency", {"sigma_eps": -0.1}, "sigma_eps must be a non-negative number"),
])
def test_bad_option_values(name, opt, msg):
    with pytest.raises(ValueError, match=msg):
        S.sample(GaussianMixture.toy_2d(), (2, 2), name, steps=3, **opt)


def test_bad_generators_and_grid():
    gm = GaussianMixture.toy_2d()
    with pytest.raises(ValueError, match="3 generators for a batch of 2"):
        S.sample(gm, (2, 2), "ddpm", steps=3, generator=S.generators([1, 2, 3]))
    with pytest.raises(ValueError, match="strictly increasing"):
        S.sample(gm, (2, 2), "euler", grid=torch.tensor([0.0, -1.0, math.inf]))
    with pytest.raises(ValueError, match="disagrees with the explicit grid"):
        S.sample(gm, (2, 2), "euler", steps=5, grid=S.grids.edm(3))


def test_registry_metadata():
    assert set(S.available()) == {"ddpm", "ddim", "sid2_ddpm", "euler", "heun", "edm", "dpm_solver", "dpmpp_2m",
                                  "euler_maruyama", "pc", "langevin", "consistency", "lms", "deis", "unipc",
                                  "dpm2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde"}
    assert S.options("ddim") == {"eta": 0.0, "clip_x": None}
    assert isinstance(S.get("langevin").schedule, VESchedule)
    assert all(S.get(n).paper for n in S.available())
