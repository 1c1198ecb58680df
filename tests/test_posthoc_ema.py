"""Post-hoc EMA (Karras et al. 2024, EDM2, §3 and App. C; pixdiff.posthoc_ema): the σ_rel ↔ γ map,
the power-function EMA against its closed form, reconstruction of an EMA that was never tracked
from snapshots of two that were, and the trainer's snapshots and bit-exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import NET
from safetensors.torch import load_file

import pixdiff
from pixdiff import checkpoint as ckpt_io
from pixdiff import posthoc_ema as ph
from pixdiff.config import TrainConfig
from pixdiff.errors import PixdiffError
from pixdiff.train import train

# ------------------------------------------------------------------------------- (a) σ_rel ↔ γ


def test_paper_examples_sigma_rel_005_and_010():
    # EDM2 stores σ_rel 0.05 and 0.10, i.e. γ ≈ 16.97 and 6.94. Checked independently: plugging
    # the values back into σ_rel² = (γ+1)/((γ+2)²(γ+3)) gives 0.050005 and 0.099972.
    assert ph.sigma_rel_to_gamma(0.05) == pytest.approx(16.9722, abs=1e-4)
    assert ph.sigma_rel_to_gamma(0.10) == pytest.approx(6.9372, abs=1e-4)
    assert math.sqrt((16.97 + 1) / ((16.97 + 2) ** 2 * (16.97 + 3))) == pytest.approx(0.05, abs=1e-5)
    assert ph.gamma_to_sigma_rel(0.0) == pytest.approx(1 / math.sqrt(12), rel=1e-15)  # γ = 0: the plain average
    assert ph.sigma_rel_to_gamma(ph.SIGMA_REL_MAX) == pytest.approx(0.0, abs=1e-9)


def test_sigma_rel_gamma_round_trip():
    for s in np.geomspace(1e-3, ph.SIGMA_REL_MAX, 40):
        assert ph.gamma_to_sigma_rel(ph.sigma_rel_to_gamma(s)) == pytest.approx(s, rel=1e-13)
    for g in (0.0, 0.25, 1.0, 6.94, 16.97, 100.0, 1e4):
        assert ph.sigma_rel_to_gamma(ph.gamma_to_sigma_rel(g)) == pytest.approx(g, rel=1e-9, abs=1e-9)
    # σ_rel falls monotonically as γ grows: a longer-tailed profile is a wider one
    gs = np.linspace(0, 50, 200)
    assert np.all(np.diff([ph.gamma_to_sigma_rel(g) for g in gs]) < 0)


def test_sigma_rel_is_the_std_of_the_weights_over_the_run_length():
    # The definition, not the formula: the std of τ/t under the EMA's own weights w_τ.
    t = 200_000
    for s in (0.02, 0.05, 0.10, 0.25):
        w = ph.power_weights(t, ph.sigma_rel_to_gamma(s))
        x = (np.arange(1, t + 1) - 0.5) / t  # w_τ is the profile's mass on (τ−1, τ]
        mean = float(w @ x)
        assert math.sqrt(float(w @ (x - mean) ** 2)) == pytest.approx(s, rel=1e-4)


@pytest.mark.parametrize("bad", [0.0, -0.1, 0.29, float("nan"), float("inf"), "wide"])
def test_sigma_rel_outside_the_power_family_is_refused(bad):
    with pytest.raises(PixdiffError, match="sigma_rel"):
        ph.sigma_rel_to_gamma(bad)


# ------------------------------------------------------------- (b) the EMA and its closed form


def _scalar_ema(gamma, values, t=None):
    e = ph.PowerEMA({"x": torch.tensor(-1e6, dtype=torch.float64)}, gamma=gamma)  # the initial value is forgotten
    out = []
    for i, v in enumerate(values, start=1):
        e.update({"x": torch.tensor(v, dtype=torch.float64)}, t=None if t is None else t[i - 1])
        out.append(float(e.ema["x"]))
    return out


def test_gamma_0_is_the_running_average():
    th = [3.0, -1.0, 4.0, 10.0]
    got = _scalar_ema(0.0, th)
    assert got == pytest.approx([3.0, 1.0, 2.0, 4.0], abs=1e-12)


def test_gamma_1_weights_2tau_minus_1_over_t_squared():
    # by hand: w_τ = (τ² − (τ−1)²)/t² = (2τ − 1)/t²; at t = 4: (1, 3, 5, 7)/16
    th = [3.0, -1.0, 4.0, 10.0]
    want = [3.0, (3 - 3) / 4, (3 - 3 + 20) / 9, (3 - 3 + 20 + 70) / 16]
    assert _scalar_ema(1.0, th) == pytest.approx(want, abs=1e-12)
    assert ph.power_weights(4, 1.0) == pytest.approx(np.array([1, 3, 5, 7]) / 16, abs=1e-15)


def test_power_ema_equals_the_normalised_power_function_sum():
    rng = np.random.default_rng(1)
    th = rng.standard_normal(60).cumsum()
    for s in (0.05, 0.10, 0.2):
        g = ph.sigma_rel_to_gamma(s)
        got = _scalar_ema(g, th)
        for t in (1, 2, 3, 17, 60):
            w = ph.power_weights(t, g)
            assert w.sum() == pytest.approx(1.0, abs=1e-13)
            assert got[t - 1] == pytest.approx(float(w @ th[:t]), abs=1e-12)


def test_a_skipped_step_averages_the_unchanged_weights_twice():
    # the trainer passes t = its step number; a non-finite step leaves θ unchanged and updates nothing
    g = ph.sigma_rel_to_gamma(0.1)
    with_skip = _scalar_ema(g, [1.0, 5.0, 7.0], t=[1, 3, 4])
    replayed = _scalar_ema(g, [1.0, 1.0, 5.0, 7.0])
    assert with_skip[-1] == pytest.approx(replayed[-1], abs=1e-12)
    with pytest.raises(PixdiffError, match="increase"):
        _scalar_ema(g, [1.0, 2.0], t=[2, 2])


def test_state_dict_resumes_bit_for_bit():
    torch.manual_seed(0)
    seq = [{"w": torch.randn(5, 3), "n": torch.tensor(i)} for i in range(20)]
    a = ph.PowerEMA(seq[0], sigma_rel=0.05)
    for p in seq[:10]:
        a.update(p)
    b = ph.PowerEMA({k: torch.zeros_like(v) for k, v in seq[0].items()}, sigma_rel=0.2)
    b.load_state_dict(a.state_dict())
    for p in seq[10:]:
        a.update(p)
        b.update(p)
    assert a.t == b.t == 20 and a.gamma == b.gamma
    assert torch.equal(a.ema["w"], b.ema["w"]) and int(a.ema["n"]) == 19


# ------------------------------------------------------------------------------ (c) reconstruction

T, EVERY = 400, 10


@pytest.fixture(scope="module")
def walk():
    """A random-walk trajectory (2000 weights, float64), its snapshots of σ_rel 0.05 and 0.10 every
    10 of 400 steps, and a function tracking any σ_rel directly."""
    gen = torch.Generator().manual_seed(0)
    steps = torch.randn(T + 1, 2000, generator=gen, dtype=torch.float64).cumsum(0)
    const = torch.full((4,), 0.3, dtype=torch.float64)

    def params(t):
        return {"w": steps[t], "c": const, "count": torch.tensor(t)}

    def track(sigma_rel, every=None, upto=T):
        e, snaps = ph.PowerEMA(params(0), sigma_rel=sigma_rel), []
        for t in range(1, upto + 1):
            e.update(params(t))
            if every and t % every == 0:
                snaps.append((t, e.gamma, {k: v.clone() for k, v in e.ema.items()}))
        return e.ema, snaps

    snaps = track(0.05, EVERY)[1] + track(0.10, EVERY)[1]
    return steps, snaps, track


# measured (seed 0) error ‖reconstructed − tracked‖ / ‖tracked − θ_T‖, i.e. relative to how far the
# EMA sits from the raw weights: 0.02: 5.4e-3, 0.03: 9.7e-4, 0.07: 3.4e-5, 0.15: 4.1e-5, 0.25: 5.6e-3
# (the nearest stored EMA is 0.25-0.9 away).
# Between the stored widths the fit is near exact; outside them (narrower than 0.05, wider than
# 0.10) the power functions fit the target less well, as the paper's App. C.3 notes. The bounds
# leave ~2-3× room over these numbers.
BOUNDS = {0.02: 1.5e-2, 0.03: 3e-3, 0.07: 1e-4, 0.15: 1e-4, 0.25: 1.5e-2}


@pytest.mark.parametrize("sigma_rel", sorted(BOUNDS))
def test_reconstruction_matches_an_ema_tracked_directly(walk, sigma_rel):
    steps, snaps, track = walk
    direct = track(sigma_rel)[0]
    rec = ph.reconstruct(snaps, sigma_rel)
    err = float((rec["w"] - direct["w"]).norm() / (direct["w"] - steps[T]).norm())
    assert err < BOUNDS[sigma_rel], err
    # ... and far closer to it than to the stored EMAs it was built from
    nearest = min(float((s[2]["w"] - direct["w"]).norm() / (direct["w"] - steps[T]).norm())
                  for s in snaps if s[0] == T)
    assert err < 0.1 * nearest
    # the profile fit error bounds the reconstruction's: measured 4.7-36× the weight error here
    ts, gs = [s[0] for s in snaps], [s[1] for s in snaps]
    x = ph.solve_coefficients(ts, gs, T, ph.sigma_rel_to_gamma(sigma_rel))
    assert err < ph.fit_error(ts, gs, x, T, ph.sigma_rel_to_gamma(sigma_rel)) < 50 * err + 1e-6
    # a parameter that never moved comes back exactly (coefficients sum to 1), integers from the newest
    assert torch.allclose(rec["c"], torch.full((4,), 0.3, dtype=torch.float64), rtol=0, atol=1e-13)
    assert int(rec["count"]) == T and rec["w"].dtype == torch.float64


def test_reconstruction_at_an_earlier_snapshot_time_uses_only_the_past(walk):
    steps, snaps, track = walk
    direct = track(0.07, upto=200)[0]
    rec = ph.reconstruct(snaps, 0.07, t_target=200)
    assert float((rec["w"] - direct["w"]).norm() / (direct["w"] - steps[200]).norm()) < 1e-3
    with pytest.raises(PixdiffError, match="not a snapshot time"):
        ph.reconstruct(snaps, 0.07, t_target=205)


def test_a_stored_sigma_rel_is_returned_as_stored(walk):
    _, snaps, _ = walk
    stored = next(s for s in snaps if s[0] == T and s[1] == ph.sigma_rel_to_gamma(0.10))
    rec = ph.reconstruct(snaps, 0.10)
    assert torch.equal(rec["w"], stored[2]["w"])
    # the least-squares solve alone finds it too: a unit coefficient, the others ~0
    ts, gs = [s[0] for s in snaps], [s[1] for s in snaps]
    x = ph.solve_coefficients(ts, gs, T, stored[1])
    i = next(i for i, s in enumerate(snaps) if s is stored)
    assert abs(x[i] - 1) < 1e-9 and np.abs(np.delete(x, i)).max() < 1e-9


def test_profile_inner_product_is_the_integral():
    # ⟨p_a, p_b⟩ against the sum of products of the discrete weights, which → the integral as
    # t grows (w_τ ≈ p(τ)·1): compare with both profiles stretched by 1000
    for (ta, sa), (tb, sb) in [((300, 0.05), (400, 0.1)), ((400, 0.2), (400, 0.03)), ((100, 0.1), (100, 0.1))]:
        ga, gb = ph.sigma_rel_to_gamma(sa), ph.sigma_rel_to_gamma(sb)
        k = 1000
        wa, wb = ph.power_weights(ta * k, ga), ph.power_weights(tb * k, gb)
        n = min(len(wa), len(wb))
        assert float(ph.profile_inner(ta, ga, tb, gb)) == pytest.approx(float(wa[:n] @ wb[:n]) * k, rel=1e-3)


# ------------------------------------------------------------------ (d) the trainer's snapshots


def _cfg(images, posthoc=(0.05, 0.1)):
    cfg = TrainConfig()
    cfg.model.overrides = dict(NET)
    cfg.optim.batch, cfg.optim.warmup_images, cfg.optim.decay_images = 8, 16, 48
    cfg.optim.posthoc_ema, cfg.optim.posthoc_every_images = posthoc, 16
    cfg.run.images, cfg.run.ckpt_every_images, cfg.run.log_every_images, cfg.run.keep = images, 8, 8, 10
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("posthoc")
    train(_cfg(48), root / "ref", progress=False)
    train(_cfg(24), root / "cut", progress=False)  # stops at 24 images, then resumes to 48
    train(_cfg(48), root / "cut", resume=True, progress=False)
    return root / "ref", root / "cut"


def test_snapshots_are_written_every_interval_and_at_the_end(runs):
    ref, cut = runs
    assert sorted(p.name for p in (ref / "posthoc").iterdir()) == \
        [f"snap-{i:012d}.safetensors" for i in (16, 32, 48)]
    assert {p.name for p in (cut / "posthoc").iterdir()} == {f"snap-{i:012d}.safetensors" for i in (16, 24, 32, 48)}
    info = ph.read_snapshot_info(ref / "posthoc" / f"snap-{48:012d}.safetensors")
    assert (info["t"], info["images"], info["batch"]) == (6, 48, 8)
    assert [e["sigma_rel"] for e in info["emas"]] == pytest.approx([0.05, 0.1], rel=1e-12)


def test_the_trainer_tracks_the_power_function_ema_of_its_steps(runs):
    # snapshot at 16 images = step t = 2: w_1 θ_1 + w_2 θ_2, θ_t the raw weights after step t
    ref, _ = runs
    th = [ckpt_io.load(ref / "checkpoints" / f"ckpt-{8 * t:012d}").model for t in (1, 2)]
    snap = load_file(str(ref / "posthoc" / f"snap-{16:012d}.safetensors"))
    for j, s in enumerate((0.05, 0.1)):
        w = ph.power_weights(2, ph.sigma_rel_to_gamma(s))
        for k in th[0]:
            if th[0][k].is_floating_point():
                want = w[0] * th[0][k].double() + w[1] * th[1][k].double()
                torch.testing.assert_close(snap[f"{j}/{k}"].double(), want, rtol=1e-6, atol=1e-6)


def test_resume_is_bit_exact_including_the_power_emas(runs):
    ref, cut = runs
    a, b = ckpt_io.load(ref), ckpt_io.load(cut)
    assert a.state["images"] == b.state["images"] == 48
    assert a.state["posthoc_ema"] == b.state["posthoc_ema"] and [e["t"] for e in a.state["posthoc_ema"]] == [6, 6]
    assert any(k.startswith("posthoc.1.") for k in a.optim)
    for part in ("model", "ema", "optim"):
        x, y = getattr(a, part), getattr(b, part)
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), f"{part} {k} differs after resume"
    for i in (16, 32, 48):  # snapshots written before and after the resume
        x, y = (load_file(str(r / "posthoc" / f"snap-{i:012d}.safetensors")) for r in (ref, cut))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), i
    # the checkpoint's EMAs are the last snapshot's
    last = load_file(str(ref / "posthoc" / f"snap-{48:012d}.safetensors"))
    assert all(torch.equal(a.optim[f"posthoc.{k.replace('/', '.', 1)}"], v) for k, v in last.items())


def test_a_run_reconstructs_into_a_loadable_model(runs, tmp_path):
    ref, _ = runs
    weights, info = ph.reconstruct_run(ref, 0.1)
    stored = load_file(str(ref / "posthoc" / f"snap-{48:012d}.safetensors"))
    assert info["snapshots"] == 1 and all(torch.equal(weights[k], stored[f"1/{k}"]) for k in weights)
    out = ph.export_posthoc(ref, 0.07, tmp_path / "phema.safetensors")
    pipe = pixdiff.load(out, device="cpu")
    x, _ = pipe.sample(2, None, "ddim", 2, seed=0)
    assert np.isfinite(np.asarray(x, dtype=np.float64)).all()
    with pytest.raises(PixdiffError, match="no post-hoc EMA snapshots"):
        ph.reconstruct_run(tmp_path, 0.07)


def test_cli_export_posthoc_writes_the_reconstruction(runs, tmp_path, capsys):
    from safetensors.torch import load_file as load

    from pixdiff.cli import main

    ref, _ = runs
    out = tmp_path / "cli.safetensors"
    assert main(["export", "--ckpt", str(ref), "--format", "safetensors-posthoc", "--sigma-rel", "0.07",
                 "--out", str(out)]) == 0
    weights, _ = ph.reconstruct_run(ref, 0.07)
    got = load(str(out))
    assert got.keys() == weights.keys() and all(torch.equal(got[k], weights[k].contiguous()) for k in got)
    for argv in (["--format", "safetensors-posthoc"], ["--format", "safetensors-ema", "--sigma-rel", "0.07"]):
        assert main(["export", "--ckpt", str(ref), *argv, "--out", str(tmp_path / "x.safetensors")]) == 2
        assert "--sigma-rel" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_off_by_default_and_checked(tmp_path):
    cfg = TrainConfig()
    assert cfg.optim.posthoc_ema == ()
    run = tmp_path / "run"
    train(_cfg(16, posthoc=()), run, progress=False)
    ck = ckpt_io.load(run)
    assert not (run / "posthoc").exists() and "posthoc_ema" not in ck.state
    assert not any(k.startswith("posthoc.") for k in ck.optim)
    assert TrainConfig.from_dict({"optim": {"posthoc_ema": [0.05, 0.1]}}).optim.posthoc_ema == (0.05, 0.1)
    for bad in ([0.5], [0.05, 0.05], [-1.0]):
        with pytest.raises(PixdiffError, match="posthoc_ema"):
            TrainConfig.from_dict({"optim": {"posthoc_ema": bad}})
    with pytest.raises(PixdiffError, match="posthoc_every_images"):
        TrainConfig.from_dict({"optim": {"posthoc_every_images": 0}})
