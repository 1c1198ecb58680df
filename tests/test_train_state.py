"""The training state and step as the library exposes them: the learning-rate horizon that
resume keeps, EMA ramp-up, networks rebuilt from the saved config, and ``pixdiff.load``."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import NET

import pixdiff
from pixdiff import checkpoint as ckpt_io
from pixdiff import nets
from pixdiff.config import OptimConfig, TrainConfig
from pixdiff.errors import PixdiffError
from pixdiff.train import _lr, ema_decay, train


def _cfg(images=48, batch=8, **optim):
    cfg = TrainConfig()
    cfg.model.overrides = dict(NET)
    cfg.optim.batch = batch
    cfg.optim.warmup_images = 16
    for k, v in optim.items():
        setattr(cfg.optim, k, v)
    cfg.run.images = images
    cfg.run.ckpt_every_images = 16
    cfg.run.log_every_images = batch
    return cfg


def _log(run):
    return [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]


def test_resume_with_another_length_keeps_the_learning_rate(tmp_path):
    # Before the fix the cosine horizon was run.images, so resuming a 48-image run as a 96-image
    # one moved the learning rate of every later step (measured 6e-6 -> 5e-4 in a longer run).
    run = tmp_path / "run"
    train(_cfg(images=48), run, progress=False)
    before = {r["images"]: r["lr"] for r in _log(run)}
    assert TrainConfig.load(run / "config.json").optim.decay_images == 48
    longer = _cfg(images=96)
    with pytest.warns(UserWarning, match="cosine decay ends at 48"):
        train(longer, run, resume=True, progress=False)
    after = {r["images"]: r["lr"] for r in _log(run)}
    assert all(after[i] == before[i] for i in before)  # the shared steps are untouched
    ref = _cfg(images=48)
    ref.optim.decay_images = 48
    for images, lr in after.items():
        assert lr == pytest.approx(_lr(ref, images - 8), abs=0)
    # the first step after the resume does not jump above the last one before it
    assert after[56] <= after[48]


def test_lr_schedule_warmup_then_cosine_to_zero_at_the_horizon():
    cfg = _cfg(images=1000, batch=10)
    cfg.optim.warmup_images, cfg.optim.decay_images, cfg.optim.lr = 100, 600, 2.0
    assert _lr(cfg, 0) == pytest.approx(2.0 * 10 / 100)  # first step: (0 + B)/warm-up
    assert _lr(cfg, 100) == pytest.approx(2.0)
    assert _lr(cfg, 350) == pytest.approx(1.0)  # half-way through the decay: cos(π/2) -> 1/2
    assert _lr(cfg, 600) == pytest.approx(0.0, abs=1e-15)
    assert _lr(cfg, 900) == pytest.approx(0.0, abs=1e-15)


def test_ema_rampup_follows_edm_and_tf_forms():
    o = OptimConfig(batch=64, ema_halflife_images=20_000.0)
    assert ema_decay(o, 0) == 0.0  # first step: the EMA becomes the weights
    assert ema_decay(o, 6400) == pytest.approx(0.5 ** (64 / 320))  # half-life min(20000, 0.05 * 6400)
    assert ema_decay(o, 10_000_000) == pytest.approx(0.5 ** (64 / 20_000))
    off = OptimConfig(batch=64, ema_halflife_images=20_000.0, ema_rampup=0.0)
    assert ema_decay(off, 0) == pytest.approx(0.5 ** (64 / 20_000))
    d = OptimConfig(batch=64, ema_decay=0.9999)
    assert ema_decay(d, 0) == pytest.approx(1 / 10)
    assert ema_decay(d, 64 * 90) == pytest.approx(91 / 100)
    assert ema_decay(d, 64 * 10**6) == 0.9999


def test_short_run_ema_is_not_mostly_the_initial_weights(tmp_path):
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in pixdiff.generate.build_denoiser(_cfg(), 1, 10).state_dict().items()}
    run = tmp_path / "run"
    train(_cfg(images=48, lr=3e-3), run, progress=False)
    ck = ckpt_io.load(run)
    keys = [k for k in ck.model if ck.model[k].is_floating_point() and not torch.equal(ck.model[k], init[k])]
    d_init = sum(float((ck.ema[k] - init[k]).norm()) for k in keys)
    d_raw = sum(float((ck.ema[k] - ck.model[k]).norm()) for k in keys)
    assert d_raw < 0.5 * d_init  # without ramp-up (half-life 20k images) d_raw ≈ d_init


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "run"
    train(_cfg(images=32), run, progress=False)
    return run


def test_load_rebuilds_the_network_from_the_checkpoint_not_the_preset(small_run, monkeypatch):
    ref, _ = pixdiff.load(small_run, device="cpu").sample(4, sampler="ddim", steps=3)
    # editing the preset must not change what an old checkpoint loads into
    monkeypatch.setitem(nets.PRESETS, "tiny", dataclasses.replace(nets.PRESETS["tiny"], emb_channels=48, resblock_updown=False))
    pipe = pixdiff.load(small_run, device="cpu")
    assert pipe.denoiser.net.config.channels == 8 and pipe.denoiser.net.config.resblock_updown
    again, _ = pipe.sample(4, sampler="ddim", steps=3)
    assert np.array_equal(ref, again)


def test_pipeline_sample_is_bit_identical_to_the_program(small_run, tmp_path):
    pipe = pixdiff.load(small_run, device="cpu")
    assert pipe.config.run.images == 32 and pipe.num_classes == 10 and pipe.weights == "ema"
    images, labels = pipe.sample(5, classes=[3, 7], sampler="ddim", steps=4, guidance=0.5, seed=11, batch=2)
    assert images.dtype == np.uint8 and images.shape == (5, 16, 16, 1)
    assert labels.tolist() == [3, 7, 3, 7, 3]
    out = tmp_path / "x.npz"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "pixdiff", "sample", "--ckpt", str(small_run), "--n", "5", "--classes",
                        "3,7", "--sampler", "ddim", "--steps", "4", "--guidance", "0.5", "--seed", "11", "--batch",
                        "2", "--out", str(out)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    f = np.load(out)
    assert np.array_equal(f["images"], images) and f["labels"].tolist() == labels.tolist()


def test_pipeline_rejects_bad_requests_in_one_line(small_run):
    pipe = pixdiff.load(small_run, device="cpu")
    with pytest.raises(PixdiffError, match="out of range"):
        pipe.sample(2, classes=[12])
    with pytest.raises(PixdiffError, match="positive integer"):
        pipe.sample(0)
    with pytest.raises(PixdiffError, match="batch"):
        pipe.sample(2, batch=0)
    with pytest.raises(PixdiffError, match="unknown sampler"):
        pipe.sample(2, sampler="nope")
    with pytest.raises(PixdiffError, match="no CUDA") if not torch.cuda.is_available() else pytest.raises(Exception):
        pixdiff.load(small_run, device="cuda")


def test_sigma_data_is_stored_once():
    old = {"model": {"preset": "tiny", "sigma_data": 0.6}}  # configs from before the change
    assert TrainConfig.from_dict(old).loss.sigma_data == 0.6
    assert "sigma_data" not in TrainConfig().to_dict()["model"]
    with pytest.raises(PixdiffError, match="two σ_data"):
        TrainConfig.from_dict({"model": {"sigma_data": 0.6}, "loss": {"sigma_data": 0.5}})
    with pytest.raises(PixdiffError, match="p_mean"):
        TrainConfig.from_dict({"loss": {"schedule": "edm_lognormal", "schedule_options": {"p_mean": 0.0}}})
    cfg = TrainConfig.from_dict({"loss": {"schedule": "edm_lognormal", "p_mean": -1.0, "p_std": 1.5}})
    sch = cfg.loss.build_schedule()
    assert (sch.p_mean, sch.p_std) == (-1.0, 1.5)


def test_torchrun_sampling_splits_images_and_equals_one_process(small_run, tmp_path):
    out = tmp_path / "two.npz"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                        "pixdiff", "sample", "--ckpt", str(small_run), "--num-images", "7", "--sampler", "ddim", "--steps", "3",
                        "--seed", "5", "--batch", "2", "--device", "cpu", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    one, labels = pixdiff.load(small_run, device="cpu").sample(7, sampler="ddim", steps=3, seed=5, batch=3)
    f = np.load(out)
    assert np.array_equal(f["images"], one) and f["labels"].tolist() == labels.tolist()
