"""Interop end to end: pixdiff's samplers on diffusers models (library and `--diffusers` in the
program), and pixdiff runs exported as a weights file and as a diffusers scheduler config.

The diffusers models are small random ``UNet2DModel``s written by ``save_pretrained`` into a temp
folder (nothing is downloaded). Where a diffusers scheduler's own loop is the reference, both sides
start from the same x_T and, for the stochastic DDPM, draw their per-step noise from generators with
the same seed in the same order (Ho et al. 2020, Alg. 2: one N(0, I) draw per step but the last).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import NET_FLAGS

import pixdiff
from pixdiff import process
from pixdiff import samplers as S
from pixdiff.adapters import diffusers_logsnr, from_diffusers, load_diffusers, to_diffusers_model
from pixdiff.cli import main

diffusers = pytest.importorskip("diffusers")

SHAPE = (2, 3, 8, 8)


def _unet(channels=3, size=8, num_class_embeds=None, seed=0):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
        layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=num_class_embeds).eval()


def _start(x_T: torch.Tensor, lam0: float) -> torch.Tensor:
    """pixdiff starts at z = σ_0 ε, diffusers at z = x_T: the ε that gives the same start."""
    return x_T / process.alpha_sigma_at(lam0)[1]


# --- pixdiff samplers on a diffusers UNet == diffusers' own scheduler loops ---------------------------


@pytest.mark.parametrize("prediction_type,beta_schedule", [("epsilon", "linear"), ("v_prediction", "squaredcos_cap_v2"),
                                                           ("sample", "linear")])
def test_ddpm_through_the_adapter_matches_ddpm_scheduler(prediction_type, beta_schedule):
    unet = _unet()
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, variance_type="fixed_small",
                                    prediction_type=prediction_type, clip_sample=False)
    sched.set_timesteps(12)
    table = diffusers_logsnr(sched)
    grid = torch.cat([table[sched.timesteps.long()], torch.tensor([math.inf], dtype=torch.float64)])
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    x, g = x_T.clone(), torch.Generator().manual_seed(4)
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x, generator=g).prev_sample
    ours = S.sample(from_diffusers(unet, sched), SHAPE, "ddpm", grid=grid, noise=_start(x_T, float(grid[0])),
                    generator=torch.Generator().manual_seed(4), variance="beta_tilde")
    # float32 networks and steps; the step formulas differ only in rounding (pixdiff's coefficients
    # from float64 λ, diffusers' from float32 ᾱ): measured max |Δ| 1.2e-6 (v, values ≤ 3) and 2.7e-6
    # (x, ≤ 1.4); eps/linear's untrained UNet reaches values of 262 and |Δ| 1.2e-4 (relative 5e-7)
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)
    # the noise matters: another seed gives other images
    other = S.sample(from_diffusers(unet, sched), SHAPE, "ddpm", grid=grid, noise=_start(x_T, float(grid[0])),
                     generator=torch.Generator().manual_seed(5), variance="beta_tilde")
    assert (other - ours).abs().max() > 1e-2


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_dpmpp_2m_through_the_adapter_matches_dpm_solver_multistep(prediction_type):
    unet = _unet(seed=1)
    sched = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_schedule="linear", prediction_type=prediction_type,
        algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", lower_order_final=True,
        final_sigmas_type="zero", timestep_spacing="linspace")
    sched.set_timesteps(10)
    # the grid: λ = −2 log σ_k of diffusers' own σ_k (sigma space), ending at σ = 0 (λ = +∞)
    grid = -2.0 * torch.log(sched.sigmas.double())
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(6))
    x = x_T.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x).prev_sample
    ours = S.sample(from_diffusers(unet, sched), SHAPE, "dpmpp_2m", grid=grid, noise=_start(x_T, float(grid[0])))
    # linspace timesteps are integers here (999, 899, …), so the UNet sees the same t on both sides:
    # measured max |Δ| 2.4e-4 where eps/linear's untrained UNet gives values up to 567 (relative
    # 4e-7), 1.2e-6 for v (values up to 3.7): float32 round-off
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)


def test_diffusers_loop_drives_a_pixdiff_model_through_to_diffusers_model():
    from pixdiff.analytic import GaussianMixture

    g = torch.Generator().manual_seed(0)
    D = math.prod(SHAPE[1:])
    gm = GaussianMixture([0.6, 0.4], torch.randn(2, D, generator=g, dtype=torch.float64) * 0.5,
                         torch.stack([0.1 * torch.eye(D, dtype=torch.float64)] * 2), shape=SHAPE[1:])
    for kind in ("epsilon", "v_prediction", "sample"):
        sched = diffusers.DDIMScheduler(num_train_timesteps=1000, prediction_type=kind, clip_sample=False,
                                        set_alpha_to_one=True)
        sched.set_timesteps(8)
        model = to_diffusers_model(gm.denoise, sched)
        x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        x = x_T.clone()
        for t in sched.timesteps:
            x = sched.step(model(x, t), t, x, eta=0.0).prev_sample
        table = diffusers_logsnr(sched)
        grid = torch.cat([table[sched.timesteps.long()], torch.tensor([math.inf], dtype=torch.float64)])
        ours = S.sample(gm.denoise, SHAPE, "ddim", grid=grid, noise=_start(x_T, float(grid[0])), eta=0.0)
        # float64 model, diffusers' ᾱ in float32: agreement to float32 round-off
        torch.testing.assert_close(x, ours, rtol=1e-5, atol=1e-5)
    # the output kinds are the same x̂ written three ways: ε = (z − α x̂)/σ, v = α ε − σ x̂
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.tensor(500)
    lam = float(diffusers_logsnr(sched)[500])
    a, s = process.alpha_sigma_at(lam)
    x_hat = gm.denoise(z, torch.full((SHAPE[0],), lam, dtype=torch.float64))
    eps = to_diffusers_model(gm.denoise, sched, "epsilon")(z, t)
    torch.testing.assert_close(eps, (z - a * x_hat) / s)
    torch.testing.assert_close(to_diffusers_model(gm.denoise, sched, "v_prediction")(z, t), a * eps - s * x_hat)


# --- `pixdiff sample / eval --diffusers DIR` ---------------------------------------------------------------


@pytest.fixture(scope="module")
def diffusers_dirs(tmp_path_factory):
    """A DDPMPipeline folder (model_index.json, unet/, scheduler/) of a 1-channel 16×16 UNet, and a
    conditional one written as plain unet/ + scheduler/ save_pretrained folders."""
    root = tmp_path_factory.mktemp("diffusers")
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    diffusers.DDPMPipeline(unet=_unet(1, 16), scheduler=sched).save_pretrained(root / "pipe")
    _unet(1, 16, num_class_embeds=11, seed=2).save_pretrained(root / "cond" / "unet")
    sched.save_pretrained(root / "cond" / "scheduler")
    return root / "pipe", root / "cond"


def test_sample_diffusers_folder_equals_the_library(diffusers_dirs, tmp_path, capsys):
    pipe_dir, _ = diffusers_dirs
    out = tmp_path / "x.npz"
    assert main(["sample", "--diffusers", str(pipe_dir), "--n", "3", "--sampler", "ddim", "--steps", "4",
                 "--seed", "5", "--out", str(out), "--device", "cpu"]) == 0
    got = np.load(out)
    assert got["images"].shape == (3, 16, 16, 1) and got["images"].dtype == np.uint8
    lib, _ = load_diffusers(pipe_dir, device="cpu").sample(3, sampler="ddim", steps=4, seed=5)
    np.testing.assert_array_equal(got["images"], lib)
    # every pixdiff sampler applies: heun differs from ddim on the same seeds
    other, _ = load_diffusers(pipe_dir, device="cpu").sample(3, sampler="heun", steps=3, seed=5)
    assert (other.astype(int) - lib.astype(int)).any()


def test_sample_diffusers_conditional_with_null_class_and_guidance(diffusers_dirs, tmp_path, capsys):
    _, cond_dir = diffusers_dirs
    out = tmp_path / "c.npz"
    # without a null class, guidance has no unconditional model: one line, exit 2
    assert main(["sample", "--diffusers", str(cond_dir), "--n", "2", "--sampler", "ddim", "--steps", "2",
                 "--guidance", "1", "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "null" in err, err
    assert main(["sample", "--diffusers", str(cond_dir), "--null-class", "10", "--n", "4", "--classes", "2,7",
                 "--sampler", "ddim", "--steps", "2", "--guidance", "1", "--out", str(out), "--device", "cpu"]) == 0
    got = np.load(out)
    assert got["labels"].tolist() == [2, 7, 2, 7]
    pipe = load_diffusers(cond_dir, device="cpu", null_label=10)
    guided, _ = pipe.sample(4, [2, 7], "ddim", 2, guidance=1.0)
    plain, _ = pipe.sample(4, [2, 7], "ddim", 2)
    np.testing.assert_array_equal(got["images"], guided)
    assert (guided.astype(int) - plain.astype(int)).any()  # the guidance weight acts
    with pytest.raises(pixdiff.PixdiffError, match="null_label"):
        load_diffusers(cond_dir, device="cpu", null_label=11)  # no such embedding


def test_eval_diffusers_folder(diffusers_dirs, tmp_path):
    pipe_dir, _ = diffusers_dirs
    js = tmp_path / "e.json"
    assert main(["eval", "--diffusers", str(pipe_dir), "--n", "70", "--sampler", "ddim", "--steps", "2",
                 "--metrics", "fd", "--json", str(js), "--device", "cpu"]) == 0
    result = json.loads(js.read_text())
    assert result["protocol"]["source"]["diffusers"] == str(pipe_dir)
    assert result["metrics"]["fd"]["fd"] > 0  # a random UNet's samples are far from digits


def test_diffusers_folder_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["sample", "--diffusers", str(tmp_path / "empty"), "--out", str(tmp_path / "x.npz")]) == 2
    assert "unet/config.json" in capsys.readouterr().err
    assert main(["sample", "--diffusers", str(tmp_path), "--ckpt", str(tmp_path), "--out", str(tmp_path / "x.npz")]) == 2


# --- `pixdiff export` --------------------------------------------------------------------------------------


def _train(out, *flags):
    assert main(["train", "--data", "digits", *NET_FLAGS, "--steps", "2", "--batch", "4", "--warmup", "0",
                 "--out", str(out), "--quiet", "--device", "cpu", *flags]) == 0
    return out


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("export") / "run", "--train-schedule", "linear_discrete", "--param", "v")


def test_export_weights_file_samples_bit_identically(ddpm_run, tmp_path, capsys):
    f = tmp_path / "model.safetensors"
    assert main(["export", "--ckpt", str(ddpm_run), "--format", "safetensors-ema", "--out", str(f)]) == 0
    a, _ = pixdiff.load(ddpm_run, device="cpu").sample(4, sampler="ddim", steps=3, seed=1)
    pipe = pixdiff.load(f, device="cpu")
    b, _ = pipe.sample(4, sampler="ddim", steps=3, seed=1)
    np.testing.assert_array_equal(a, b)
    assert pipe.weights == "ema"
    # the raw export is the raw weights, which differ from the EMA after training
    r = tmp_path / "raw.safetensors"
    assert main(["export", "--ckpt", str(ddpm_run), "--format", "safetensors-raw", "--out", str(r)]) == 0
    c, _ = pixdiff.load(ddpm_run, device="cpu", weights="raw").sample(4, sampler="ddim", steps=3, seed=1)
    np.testing.assert_array_equal(c, pixdiff.load(r, device="cpu").sample(4, sampler="ddim", steps=3, seed=1)[0])
    with pytest.raises(pixdiff.PixdiffError, match="ema weights only"):
        pixdiff.load(f, device="cpu", weights="raw")
    # and the program reads the file
    out = tmp_path / "s.npz"
    assert main(["sample", "--ckpt", str(f), "--n", "4", "--sampler", "ddim", "--steps", "3", "--seed", "1",
                 "--out", str(out), "--device", "cpu"]) == 0
    np.testing.assert_array_equal(np.load(out)["images"], a)


def test_export_errors_are_one_line(ddpm_run, tmp_path, capsys):
    assert main(["export", "--ckpt", str(ddpm_run), "--format", "safetensors-ema", "--out", str(tmp_path / "m.bin")]) == 2
    assert ".safetensors" in capsys.readouterr().err
    junk = tmp_path / "junk.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(junk))
    with pytest.raises(pixdiff.PixdiffError, match="no pixdiff metadata"):
        pixdiff.load(junk, device="cpu")
    cont = _train(tmp_path / "cont")  # the default continuous cosine schedule
    assert main(["export", "--ckpt", str(cont), "--format", "diffusers-scheduler", "--out", str(tmp_path / "d")]) == 2
    assert "--timesteps" in capsys.readouterr().err


def test_export_diffusers_scheduler_reproduces_the_chain_and_drives_the_model(ddpm_run, tmp_path):
    from pixdiff import schedules

    d = tmp_path / "sched"
    assert main(["export", "--ckpt", str(ddpm_run), "--format", "diffusers-scheduler", "--out", str(d)]) == 0
    cfg = json.loads((d / "scheduler_config.json").read_text())
    assert cfg["beta_schedule"] == "linear" and cfg["prediction_type"] == "v_prediction"
    sched = diffusers.DDIMScheduler.from_pretrained(str(d))
    ours = schedules.get("linear_discrete").alphas_cumprod
    torch.testing.assert_close(sched.alphas_cumprod.double(), ours, rtol=1e-6, atol=0)  # diffusers keeps float32
    # a diffusers DDIM loop on the exported config drives the pixdiff network = pixdiff's ddim
    pipe = pixdiff.load(ddpm_run, device="cpu")
    shape = (2, *pipe.data_shape)
    sched.set_timesteps(5)
    model = to_diffusers_model(pipe.denoiser, sched)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    x = x_T.clone()
    cond = torch.tensor([1, 4])
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(model(x, t, cond), t, x, eta=0.0).prev_sample
        table = diffusers_logsnr(sched)
        grid = torch.cat([table[sched.timesteps.long()], torch.tensor([math.inf], dtype=torch.float64)])
        ref = S.sample(pipe.denoiser, shape, "ddim", grid=grid, noise=_start(x_T, float(grid[0])), cond=cond)
    torch.testing.assert_close(x, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("schedule,options", [("iddpm_cosine_discrete", {}), ("cosine", {"timesteps": 1000})])
def test_scheduler_config_of_other_schedules(tmp_path, schedule, options):
    from pixdiff import schedules
    from pixdiff.export import diffusers_scheduler_config

    run = _train(tmp_path / "r", "--train-schedule", schedule)
    cfg = diffusers_scheduler_config(run, **options)
    cfg.pop("_class_name")
    sched = diffusers.DDPMScheduler(**cfg)
    if schedule == "iddpm_cosine_discrete":
        assert cfg["beta_schedule"] == "squaredcos_cap_v2"
        want = schedules.get(schedule).alphas_cumprod
    else:  # tabulated: ᾱ_i = sigmoid(λ(i/T)) of the continuous schedule
        want = torch.sigmoid(schedules.get(schedule).logsnr(torch.arange(1, 1001, dtype=torch.float64) / 1000))
    torch.testing.assert_close(sched.alphas_cumprod.double(), want, rtol=2e-5, atol=1e-7)


# --- a k-diffusion-style σ-space loop driving a pixdiff model --------------------------------------------


def _euler_sigma_loop(model, x, sigmas):
    """Karras et al. 2022, Alg. 1 with S_churn = 0 (k-diffusion's ``sample_euler``): in σ space,
    d = (x − D(x; σ_i)) / σ_i and x ← x + (σ_{i+1} − σ_i) d; written here independently of pixdiff."""
    for i in range(len(sigmas) - 1):
        d = (x - model(x, sigmas[i] * x.new_ones(x.shape[0]))) / sigmas[i]
        x = x + (sigmas[i + 1] - sigmas[i]) * d
    return x


def test_sigma_space_euler_driving_a_pixdiff_model_equals_pixdiff_euler():
    from pixdiff.adapters import to_sigma_denoiser
    from pixdiff.analytic import GaussianMixture

    gm = GaussianMixture.toy_2d(labels=False)
    sigmas = torch.tensor([80.0, 20.0, 5.0, 1.5, 0.4, 0.1, 0.02, 0.0], dtype=torch.float64)
    noise = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    drivers = [_euler_sigma_loop]
    from test_samplers_kdiffusion_support import load_kdiffusion_sampling

    kd = load_kdiffusion_sampling()  # k-diffusion's own sample_euler too, where it is installed (make test does)
    if kd is not None:
        drivers.append(lambda m, x, s: kd.sample_euler(m, x, s, disable=True))
    grid = -2.0 * torch.log(sigmas)  # λ = −2 log σ; σ = 0 is λ = +∞
    ours = S.sample(gm.denoise, (64, 2), "euler", grid=grid, noise=noise)
    for drive in drivers:
        theirs = drive(to_sigma_denoiser(gm.denoise), sigmas[0] * noise, sigmas)
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)  # float64 throughout
