"""Distillation (pixdiff.distill): each method's loss against its paper's formula on hand-computed
cases, students trained on the exact 2-D mixture against sliced-W1 bounds, the CLI end to end,
and bit-exact resume.

Sources of the formulas checked here: Song et al. 2023 (consistency models: boundary
parameterisation §3 / App. C, Alg. 2 CD, Alg. 3 CT); Song & Dhariwal 2023 (improved CT: eq. 8
pseudo-Huber, eq. 9 curriculum, eq. 10 log-normal levels, λ(σ_i) = 1/(σ_{i+1} − σ_i)); Salimans &
Ho 2022 (progressive distillation, Alg. 2, truncated-SNR weighting).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pixdiff import samplers
from pixdiff.denoiser import Denoiser
from pixdiff.distill import DistillConfig, distill
from pixdiff.distill.cd import cd_loss, teacher_ode_step
from pixdiff.distill.common import (
    ConsistencyFunction,
    SlicedW1,
    boundary_scalings,
    cosine_logsnr,
    cosine_t_grid,
    ddim_to,
    karras_sigmas,
    pseudo_huber,
    toy_mixture,
)
from pixdiff.distill.ct import ct_loss, curriculum, noise_level_probs
from pixdiff.distill.progressive import pd_target, truncated_snr
from pixdiff.nets.mlp import MLP, MLPConfig

F64 = torch.float64


def _random_cm(seed=0, sigma_min=0.002, sigma_data=0.5) -> ConsistencyFunction:
    torch.manual_seed(seed)
    net = MLP(MLPConfig(in_channels=2, hidden=16, blocks=1))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.5)  # the zero-initialised output layer too: F_θ ≠ 0
    return ConsistencyFunction(Denoiser(net, "x"), sigma_min, sigma_data)


class _Zero(torch.nn.Module):
    """F_θ ≡ 0: f(x, σ) = c_skip(σ) x."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, lam, cond=None):
        return x * self.w


# --- consistency function ---------------------------------------------------------------------------


def test_boundary_condition_holds_exactly_for_any_network():
    f = _random_cm()
    x = torch.randn(64, 2, dtype=F64)
    assert torch.equal(f.sigma(x, 0.002), x)  # f(x, σ_min) = x, bit for bit
    assert not torch.allclose(f.sigma(x, 0.01), x, atol=1e-3)  # and the network matters elsewhere


def test_boundary_scalings_hand_values():
    # σ = 1, σ_min = 0.002, σ_d = 0.5 (Song et al. 2023, App. C)
    c_skip, c_out, c_in = boundary_scalings(torch.tensor(1.0, dtype=F64), 0.002, 0.5)
    assert float(c_skip) == pytest.approx(0.25 / (0.998**2 + 0.25), rel=1e-15)
    assert float(c_out) == pytest.approx(0.5 * 0.998 / math.sqrt(1.25), rel=1e-15)
    assert float(c_in) == pytest.approx(1 / math.sqrt(1.25), rel=1e-15)
    c_skip, c_out, _ = boundary_scalings(torch.tensor(0.002, dtype=F64), 0.002, 0.5)
    assert float(c_skip) == 1.0 and float(c_out) == 0.0


def test_consistency_sampler_calls_f_at_the_sigma_space_state():
    """pixdiff's Alg. 1 sampler and the student agree on the state: one step is f(σ_max ε, σ_max)."""
    f = _random_cm(1)
    eps = torch.randn(8, 2, dtype=F64)
    x = samplers.sample(f, (8, 2), sampler="consistency", steps=1, noise=eps, dtype=F64)
    assert torch.allclose(x, f.sigma(80.0 * eps, 80.0), rtol=1e-10, atol=1e-10)


def test_karras_discretisation_ends_and_rho():
    s = karras_sigmas(5, 0.002, 80.0, 7.0)
    assert s[0] == 0.002 and s[-1] == 80.0 and (s[1:] > s[:-1]).all()
    a, b = 0.002 ** (1 / 7), 80.0 ** (1 / 7)
    assert float(s[2]) == pytest.approx(((a + b) / 2) ** 7, rel=1e-12)


# --- improved consistency training -----------------------------------------------------------------


def test_pseudo_huber_value():
    a = torch.tensor([[3.0, 0.0]], dtype=F64)
    b = torch.tensor([[0.0, -4.0]], dtype=F64)  # ‖a − b‖ = 5
    c = 0.00054 * math.sqrt(2)
    assert float(pseudo_huber(a, b, c)) == pytest.approx(math.sqrt(25 + c * c) - c, rel=1e-14)
    assert float(pseudo_huber(a, a, c)) == 0.0


def test_curriculum_at_a_few_steps():
    # K = 800, s0 = 10, s1 = 1280: K' = ⌊800 / (⌊log2 128⌋ + 1)⌋ = 100; N = min(10·2^⌊k/100⌋, 1280) + 1
    got = [curriculum(k, 800, 10, 1280) for k in (0, 99, 100, 250, 699, 700, 799)]
    assert got == [11, 11, 21, 41, 641, 1281, 1281]
    # the paper's setting: K = 400 000 → K' = 50 000
    assert curriculum(49_999, 400_000) == 11 and curriculum(50_000, 400_000) == 21


def test_lognormal_level_probabilities():
    s = torch.tensor([0.1, 1.0, 10.0], dtype=F64)
    p = noise_level_probs(s, -1.1, 2.0)
    e = [math.erf((math.log(v) + 1.1) / (math.sqrt(2) * 2.0)) for v in (0.1, 1.0, 10.0)]
    want = torch.tensor([e[1] - e[0], e[2] - e[1]], dtype=F64)
    assert torch.allclose(p, want / want.sum(), rtol=1e-14)


def test_ct_loss_hand_case():
    f = ConsistencyFunction(Denoiser(_Zero(), "x").double(), 0.002, 0.5)
    x = torch.tensor([[0.3, -0.2]], dtype=F64)
    z = torch.tensor([[1.0, 2.0]], dtype=F64)
    sig = torch.tensor([0.5, 1.5, 3.0], dtype=F64)
    c = 0.01
    got = ct_loss(f, x, z, torch.tensor([1]), sig, c).detach()
    cs = lambda s: 0.25 / ((s - 0.002) ** 2 + 0.25)  # noqa: E731
    a = cs(3.0) * (x + 3.0 * z)
    b = cs(1.5) * (x + 1.5 * z)
    want = (1 / (3.0 - 1.5)) * (math.sqrt(float(((a - b) ** 2).sum()) + c * c) - c)
    assert float(got) == pytest.approx(want, rel=1e-13)


# --- consistency distillation ----------------------------------------------------------------------


def test_teacher_heun_step_is_second_order():
    """Data N(0, v): D(x, s) = v/(v + s²) x and the PF-ODE solution x(s) = x₀ sqrt((v + s²)/(v + s₀²))."""
    v = 0.3
    D = lambda x, s: v / (v + s.reshape(-1, 1) ** 2) * x  # noqa: E731
    x = torch.ones(1, 1, dtype=F64)
    errs = {}
    for solver in ("euler", "heun"):
        errs[solver] = []
        for h in (0.2, 0.1):
            s0, s1 = torch.tensor([1.0], dtype=F64), torch.tensor([1.0 - h], dtype=F64)
            exact = math.sqrt((v + (1 - h) ** 2) / (v + 1))
            errs[solver].append(abs(float(teacher_ode_step(D, x, s0, s1, solver)) - exact))
    # local error O(h²) for Euler, O(h³) for Heun
    assert 3.0 < errs["euler"][0] / errs["euler"][1] < 5.0
    assert 6.0 < errs["heun"][0] / errs["heun"][1] < 10.0


def test_cd_loss_hand_case():
    f = ConsistencyFunction(Denoiser(_Zero(), "x").double(), 0.002, 0.5)
    D = lambda x, s: torch.zeros_like(x)  # noqa: E731 - dx/ds = x/s: both solvers are exact, x(s) ∝ s
    x = torch.tensor([[0.3, -0.2]], dtype=F64)
    z = torch.tensor([[1.0, 2.0]], dtype=F64)
    sig = torch.tensor([0.5, 2.0], dtype=F64)
    got = cd_loss(f, f, D, x, z, torch.tensor([0]), sig, "heun").detach()
    cs = lambda s: 0.25 / ((s - 0.002) ** 2 + 0.25)  # noqa: E731
    x_hi = x + 2.0 * z
    x_lo = x_hi * 0.5 / 2.0
    want = ((cs(2.0) * x_hi - cs(0.5) * x_lo) ** 2).mean()
    assert float(got) == pytest.approx(float(want), rel=1e-13)


# --- progressive distillation ------------------------------------------------------------------------


def test_cosine_grid_and_truncated_snr():
    assert float(cosine_logsnr(torch.tensor(0.5))) == pytest.approx(0.0, abs=1e-14)
    g = cosine_t_grid(2)
    assert g[0] == -30.0 and abs(float(g[1])) < 1e-14 and g[2] == math.inf
    assert torch.equal(cosine_t_grid(8)[::2], cosine_t_grid(4))  # the rounds' grids nest
    w = truncated_snr(torch.tensor([-3.0, 0.0, 2.0], dtype=F64))
    assert torch.allclose(w, torch.tensor([1.0, 1.0, math.exp(2.0)], dtype=F64))


def _gauss_teacher(v=0.4):
    def D(z, lam, cond=None):  # exact E[x | z] for x ~ N(0, v): α v / (α² v + σ²) z
        a2 = torch.sigmoid(lam).reshape(-1, 1)
        return (a2.sqrt() * v / (a2 * v + (1 - a2))) * z
    return D


def test_pd_target_one_student_step_lands_on_two_teacher_steps():
    D = _gauss_teacher()
    n = 4
    t = torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=F64)
    z = torch.randn(4, 1, dtype=F64, generator=torch.Generator().manual_seed(0))
    x_tilde = pd_target(D, z, t, n)
    lam, lam1, lam2 = cosine_logsnr(t), cosine_logsnr(t - 0.125), cosine_logsnr(t - 0.25)
    two = ddim_to(ddim_to(z, D(z, lam), lam, lam1), D(ddim_to(z, D(z, lam), lam, lam1), lam1), lam1, lam2)
    one = ddim_to(z, x_tilde, lam, lam2)
    assert torch.allclose(one, two, rtol=1e-10, atol=1e-12)
    # the last interval (t'' = 0): x̃ is the two-step sample itself
    assert torch.allclose(x_tilde[3], two[3], rtol=1e-12)


def test_pd_target_of_a_constant_teacher_is_that_constant():
    c = torch.tensor([[0.7]], dtype=F64)
    x_tilde = pd_target(lambda z, lam, cond=None: c.expand_as(z), torch.tensor([[0.3]], dtype=F64),
                        torch.tensor([0.75], dtype=F64), 2)
    assert torch.allclose(x_tilde, c, rtol=1e-12)


# --- moment matching -------------------------------------------------------------------------------------


class _Linear(torch.nn.Module):
    """g_θ(z) = θ z with one scalar θ: every Alg. 3 quantity by hand."""

    def __init__(self, theta):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(theta, dtype=F64))

    def forward(self, z, lam, cond=None):
        return self.theta * z


def test_moment_parameter_space_hand_case():
    """Salimans et al. 2024, Alg. 3 on g_θ(z) = θ z: g = ∇_θ mean ‖x̃ − θ z‖² = mean −2 zᵀ(x̃ − θ z), and
    the surrogate's value −2/n Σ x̃ᵀ (J_θ v) = −2/n Σ x̃ᵀ z v."""
    from pixdiff.distill.moment import parameter_loss, teacher_loss_grad

    m = _Linear(0.5)
    params = {"theta": m.theta.detach()}
    x = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=F64)
    z = torch.tensor([[2.0, 1.0], [-1.0, 3.0]], dtype=F64)
    lam = torch.zeros(2, dtype=F64)
    g = teacher_loss_grad(m, params, x, z, lam)
    by_hand = (-2 * (2 * (1 - 1.0) + 1 * (-2 - 0.5)) + -2 * (-1 * (0.5 + 0.5) + 3 * (0 - 1.5))) / 2
    assert float(g["theta"]) == pytest.approx(by_hand, rel=1e-14)  # = 7.0
    xt = x.clone().requires_grad_(True)
    val = parameter_loss(m, params, {"theta": torch.tensor(0.3, dtype=F64)}, xt, z, lam)
    assert float(val.detach()) == pytest.approx(-2 / 2 * 0.3 * float((x * z).sum()), rel=1e-14)
    val.backward()
    assert torch.allclose(xt.grad, -2 / 2 * 0.3 * z)


def test_moment_parameter_space_gradient_is_the_double_backward_of_v_dot_grad():
    """The surrogate's gradient in x̃ equals ∂/∂x̃ [vᵀ ∇_θ ℓ(θ; x̃, z)] computed by double backward
    through a real network: the identity ∇_x̃ (vᵀ ∇_θ ℓ) = −2 J_θ v that Alg. 3's implementation uses."""
    from torch.func import functional_call

    from pixdiff.distill.moment import parameter_loss
    from pixdiff.nets.mlp import MLP, MLPConfig

    torch.manual_seed(0)
    net = MLP(MLPConfig(in_channels=2, hidden=16, blocks=1))  # float32 (its λ embedding is)
    params = {k: v.detach() for k, v in net.named_parameters()}
    v = {k: torch.randn_like(p) for k, p in params.items()}
    x = torch.randn(5, 2, requires_grad=True)
    z, lam = torch.randn(5, 2), torch.linspace(-2, 2, 5)
    parameter_loss(net, params, v, x, z, lam).backward()
    ours = x.grad.clone()

    x2 = x.detach().clone().requires_grad_(True)
    p2 = {k: p.clone().requires_grad_(True) for k, p in params.items()}
    loss = (x2 - functional_call(net, p2, (z, lam))).pow(2).sum(1).mean()
    grads = torch.autograd.grad(loss, list(p2.values()), create_graph=True)
    vdot = sum((gk * v[k]).sum() for gk, k in zip(grads, p2))
    (exact,) = torch.autograd.grad(vdot, x2)
    assert torch.allclose(ours, exact, rtol=1e-5, atol=1e-6) and exact.abs().max() > 1e-2


def test_moment_losses_and_posterior_sample_hand_case():
    from pixdiff.distill.moment import aux_loss, generator_loss, posterior_sample

    x_t = torch.tensor([[0.5, -1.0]], dtype=F64, requires_grad=True)
    aux = torch.tensor([[0.2, 0.1]], dtype=F64)
    te = torch.tensor([[0.3, -0.4]], dtype=F64)
    lg = generator_loss(x_t, aux, te, 2.0)
    assert float(lg.detach()) == pytest.approx(2.0 * (0.5 * -0.1 + -1.0 * 0.5), rel=1e-14)
    lg.sum().backward()  # ∇_x̃ L(η) = w (g_φ − g_θ): x̃ moves towards the teacher's mean
    assert torch.allclose(x_t.grad, 2.0 * (aux - te))
    assert float(aux_loss(x_t, aux)) == pytest.approx((0.3**2 + 1.1**2), rel=1e-14)
    # q(z_s | z_t, x) at λ_t = 0, λ_s = 2: r = e^{−2}, c_z = r α_s/α_t, c_x = (1 − r) α_s, var = (1 − r) σ_s²
    z = torch.tensor([[1.0, -2.0]], dtype=F64)
    x = torch.tensor([[0.4, 0.6]], dtype=F64)
    noise = torch.tensor([[1.0, 1.0]], dtype=F64)
    r = math.exp(-2.0)
    a_s, s_s, a_t = math.sqrt(1 / (1 + math.exp(-2))), math.sqrt(1 / (1 + math.exp(2))), math.sqrt(0.5)
    want = r * a_s / a_t * z + (1 - r) * a_s * x + math.sqrt((1 - r) * s_s**2) * noise
    got = posterior_sample(z, x, torch.tensor([0.0], dtype=F64), torch.tensor([2.0], dtype=F64), noise)
    assert torch.allclose(got, want, rtol=1e-13)
    assert torch.allclose(posterior_sample(z, x, torch.tensor([0.0], dtype=F64),
                                           torch.tensor([math.inf], dtype=F64), noise), x)  # s = 0: x itself


# --- GENIE ----------------------------------------------------------------------------------------------------


def test_genie_derivative_target_equals_the_ode_second_derivative():
    """Data N(0, v): along the PF-ODE x(s) ∝ sqrt(v + s²), so d_s ε = d²x/ds² = x v / (v + s²)²."""
    from pixdiff.distill.common import sigma_denoiser
    from pixdiff.distill.genie import ode_derivative

    v = 0.3
    D = sigma_denoiser(_gauss_teacher(v))
    x = torch.tensor([[0.7], [-1.3], [2.0]], dtype=F64)
    s = torch.tensor([0.2, 1.0, 5.0], dtype=F64)
    eps, k = ode_derivative(D, x, s)
    assert torch.allclose(eps, x * s[:, None] / (v + s[:, None] ** 2), rtol=1e-10)
    assert torch.allclose(k, x * v / (v + s[:, None] ** 2) ** 2, rtol=1e-8)


def test_ttm2_with_the_exact_derivative_is_second_order():
    from pixdiff.distill.common import sigma_denoiser
    from pixdiff.distill.genie import ode_derivative, ttm2_step

    v = 0.3
    D = sigma_denoiser(_gauss_teacher(v))
    x = torch.ones(1, 1, dtype=F64)
    errs = []
    for h in (0.2, 0.1):
        eps, k = ode_derivative(D, x, torch.tensor([1.0], dtype=F64))
        exact = math.sqrt((v + (1 - h) ** 2) / (v + 1))
        errs.append(abs(float(ttm2_step(x, eps, k, 1.0, 1.0 - h)) - exact))
    assert 6.0 < errs[0] / errs[1] < 10.0  # local error O(h³)


def test_genie_analytical_first_step_is_the_gaussian_epsilon_and_saves_one_teacher_call():
    """AFS (Dockhorn et al. 2022, §3.3): at σ_max the first step uses ε of data ~ N(0, σ_d² I),
    s x/(σ_d² + s²), which is exactly the ε of the Gaussian's own denoiser; it costs no evaluation."""
    from pixdiff.distill.common import sigma_denoiser
    from pixdiff.distill.genie import analytic_eps, genie_sample

    v = 0.3
    D = sigma_denoiser(_gauss_teacher(v))
    x = torch.tensor([[0.7], [-1.3], [2.0]], dtype=F64)
    for s in (0.5, 80.0):
        exact = (x - D(x, torch.full((3,), s, dtype=F64))) / s
        assert torch.allclose(analytic_eps(x, s, math.sqrt(v)), exact, rtol=1e-12)

    calls = []
    teacher = _gauss_teacher(v)

    def counted(z, lam, cond=None):
        calls.append(1)
        return teacher(z, lam, cond)

    def head(z, lam, cond=None):  # any head: this test counts teacher calls only
        return torch.zeros_like(z)

    head.parameters = lambda: iter([torch.zeros(1, dtype=F64)])
    noise = torch.randn(5, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    for afs, expected in ((False, 4), (True, 3)):
        calls.clear()
        genie_sample(counted, head, noise, 4, afs=afs, sigma_data=math.sqrt(v), grid="exponential", sigma_min=0.05)
        assert len(calls) == expected


def test_genie_run_samples_on_the_grid_it_was_distilled_with(tmp_path):
    import pixdiff

    distill(DistillConfig("genie", "mixture", steps=4, images=512, batch=128,
                          options={"grid": "exponential", "sigma_min": 0.05, "afs": True}), tmp_path / "g",
            progress=False)
    pipe = pixdiff.load(tmp_path / "g", device="cpu")
    assert pipe.meta["genie_sampling"] == {"grid": "exponential", "sigma_min": 0.05, "afs": True}
    own = pipe.points(64, 4, seed=0)
    assert torch.equal(own, pipe.points(64, 4, seed=0, grid="exponential", sigma_min=0.05, afs=True))
    assert not torch.allclose(own, pipe.points(64, 4, seed=0, grid="edm", afs=False))


def test_genie_head_beats_the_teacher_alone_at_equal_teacher_evaluations(tmp_path):
    distill(DistillConfig("genie", "mixture", steps=8, images=32_000, batch=128), tmp_path / "g", progress=False)
    genie = _score(tmp_path / "g", 8)
    euler = _score(tmp_path / "g", 8, sampler="euler")  # the teacher alone, first order (DDIM), same grid
    assert genie < 0.75 * euler, (genie, euler)


# --- students on the exact mixture --------------------------------------------------------------------


def _score(out, steps, n=4000, sampler=None):
    import pixdiff

    x = pixdiff.load(out, device="cpu").points(n, steps, seed=0, sampler=sampler)
    return SlicedW1(toy_mixture("mixture"), n)(x)


@pytest.mark.parametrize("method,steps,images,bound", [
    ("cd", 1, 48_000, 0.13),  # measured 0.094
    ("progressive", 4, 48_000, 0.10),  # measured 0.066
])
def test_student_on_the_exact_mixture_reaches_its_bound(tmp_path, method, steps, images, bound):
    """A short run (a few seconds); docs/distillation.md has the long runs. The 1-step mean of the
    teacher (its x̂ at σ_max, 1 NFE) scores ≈ 0.5 here."""
    opts = {"start_steps": 16} if method == "progressive" else {}
    distill(DistillConfig(method, "mixture", steps=steps, images=images, batch=128, options=opts), tmp_path / "s",
            progress=False)
    assert _score(tmp_path / "s", steps) <= bound


@pytest.mark.slow
@pytest.mark.parametrize("method,steps,images,bound", [
    ("cd", 1, 256_000, 0.07),
    ("progressive", 4, 256_000, 0.08),
    ("ct", 1, 768_000, 0.2),
    ("moment", 4, 128_000, 0.12),
])
def test_student_on_the_exact_mixture_long(tmp_path, method, steps, images, bound):
    opts = {"start_steps": 32} if method == "progressive" else {}
    teacher, data = (None, "mixture") if method == "ct" else ("mixture", None)
    lr = 2e-4 if method == "moment" else 1e-3
    distill(DistillConfig(method, teacher, data, steps=steps, images=images, lr=lr, options=opts), tmp_path / "s",
            progress=False)
    assert _score(tmp_path / "s", steps) <= bound


# --- the program, end to end; resume ----------------------------------------------------------------------


def test_cli_distill_then_sample(tmp_path, capsys):
    from pixdiff.cli import main

    out = tmp_path / "cd"
    assert main(["distill", "--method", "cd", "--teacher", "mixture", "--out", str(out), "--images", "25600",
                 "--quiet"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["checkpoint"].startswith(str(out))
    assert main(["sample", "--ckpt", str(out), "--out", str(tmp_path / "x.npz"), "--n", "300"]) == 0
    x = np.load(tmp_path / "x.npz")["samples"]
    assert x.shape == (300, 2) and np.isfinite(x).all()
    state = json.loads(next((out / "checkpoints").glob("ckpt-*/state.json")).read_text())
    assert state["kind"] == "distilled" and state["meta"]["sampler"] == "consistency" and state["meta"]["steps"] == 1
    assert main(["distill", "--method", "cd", "--teacher", "mixture", "--out", str(out), "--images", "256",
                 "--option", "nope=1"]) == 2  # a run already there, and an unknown option: refused in one line


def test_cli_genie_run_samples_with_ttm2_and_with_any_teacher_sampler(tmp_path, capsys):
    from pixdiff.cli import main

    out = tmp_path / "g"
    assert main(["distill", "--method", "genie", "--teacher", "mixture", "--out", str(out), "--images", "2560",
                 "--steps", "4", "--quiet"]) == 0
    for extra in ([], ["--sampler", "heun", "--steps", "5"]):
        assert main(["sample", "--ckpt", str(out), "--out", str(tmp_path / "x.npz"), "--n", "20", *extra]) == 0
        assert np.isfinite(np.load(tmp_path / "x.npz")["samples"]).all()


def test_moment_parameter_space_runs_from_a_teacher_run_resumes_and_refuses_a_toy(tmp_path):
    import pixdiff
    from pixdiff.config import TrainConfig
    from pixdiff.train import train

    cfg = TrainConfig()
    cfg.data.name, cfg.model.preset = "mixture", "mlp"
    cfg.model.overrides = {"hidden": 32, "blocks": 1}
    cfg.loss.bias = 0.0
    cfg.optim.batch, cfg.run.images, cfg.run.ckpt_every_images = 64, 64 * 30, 64 * 30
    train(cfg, tmp_path / "teacher", progress=False)
    kw = dict(steps=2, batch=64, log_every=5, options={"variant": "parameter", "fit_fraction": 0.0})
    make = lambda: DistillConfig("moment", str(tmp_path / "teacher"), images=64 * 12, **kw)  # noqa: E731
    distill(make(), tmp_path / "full", progress=False)
    distill(make(), tmp_path / "cut", progress=False, stop_at=64 * 8)
    distill(make(), tmp_path / "cut", resume=True, progress=False)
    a, b = _tensors(tmp_path / "full"), _tensors(tmp_path / "cut")
    assert any(k.startswith("o.extra.nu.") for k in a) and a.keys() == b.keys()  # Λ's estimate is carried over
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = pixdiff.load(tmp_path / "full", device="cpu").points(50, 2, seed=0)
    assert x.shape == (50, 2) and torch.isfinite(x).all()
    from pixdiff.errors import PixdiffError

    with pytest.raises(PixdiffError, match="needs a teacher run"):
        distill(DistillConfig("moment", "mixture", images=64, **kw), tmp_path / "toy", progress=False)


def test_cli_refuses_unknown_method_option(tmp_path, capsys):
    from pixdiff.cli import main

    assert main(["distill", "--method", "cd", "--teacher", "mixture", "--out", str(tmp_path / "o"), "--images",
                 "256", "--option", "nope=1", "--quiet"]) == 2
    assert "no option(s) ['nope']" in capsys.readouterr().err


def _tensors(run):
    from pixdiff import checkpoint as ckpt_io

    ck = ckpt_io.load(run)
    return {**{f"m.{k}": v for k, v in ck.model.items()}, **{f"e.{k}": v for k, v in ck.ema.items()},
            **{f"o.{k}": v for k, v in ck.optim.items()}}


@pytest.mark.parametrize("method,opts", [("cd", {}), ("progressive", {"start_steps": 8}), ("moment", {})])
def test_resume_is_bit_exact(tmp_path, method, opts):
    """Interrupted at 2/3 and resumed (progressive: past a round boundary, so the promoted teacher is
    restored too; moment: past the fit, so the auxiliary network and its optimizer state are) equals
    the uninterrupted run, bit for bit."""
    kw = dict(steps=2, batch=64, log_every=5, options=opts, net={"hidden": 32, "blocks": 1})
    distill(DistillConfig(method, "mixture", images=64 * 60, **kw), tmp_path / "full", progress=False)
    distill(DistillConfig(method, "mixture", images=64 * 60, **kw), tmp_path / "cut", progress=False, stop_at=64 * 40)
    assert (tmp_path / "cut" / "checkpoints" / f"ckpt-{64 * 40:012d}").is_dir()
    distill(DistillConfig(method, "mixture", images=64 * 60, **kw), tmp_path / "cut", resume=True, progress=False)
    a, b = _tensors(tmp_path / "full"), _tensors(tmp_path / "cut")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    la = (tmp_path / "full" / "log.jsonl").read_text().splitlines()
    lb = (tmp_path / "cut" / "log.jsonl").read_text().splitlines()
    strip = lambda ls: [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in ls]  # noqa: E731
    assert strip(la) == strip(lb)
