"""Run folders that nothing can corrupt: the lock, folder checks on --resume / new runs, stale
temporary checkpoints, failed writes, non-finite weights, torn log lines, 16-bit images."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import NET

from pixdiff import checkpoint as ckpt_io
from pixdiff.config import TrainConfig
from pixdiff.errors import PixdiffError
from pixdiff.runlock import RunInUse, RunLock
from pixdiff.train import TrainingStopped, read_log, train


def _cfg(images=16, batch=8, lr=1e-3):
    cfg = TrainConfig()
    cfg.model.overrides = dict(NET)
    cfg.optim.batch, cfg.optim.lr, cfg.optim.warmup_images, cfg.optim.decay = batch, lr, 0, "constant"
    cfg.run.images, cfg.run.ckpt_every_images, cfg.run.log_every_images = images, batch, batch
    return cfg


def test_second_trainer_on_a_folder_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        with pytest.raises(RunInUse, match=f"in use by pid {os.getpid()}"):
            train(_cfg(), run, progress=False)
    assert not (run / "checkpoints").exists()  # refused before any work


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    run = tmp_path / "run"
    code = f"from pixdiff.runlock import RunLock; import time; RunLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(RunInUse, match=f"pid {p.pid}"):
            RunLock(run).acquire()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    lock = RunLock(run).acquire()  # the kernel released it with the process
    lock.release()


def test_resume_needs_a_run_and_a_new_run_needs_a_free_folder(tmp_path):
    empty = tmp_path / "typo"
    with pytest.raises(PixdiffError, match="holds no run .*config.json"):
        train(_cfg(), empty, resume=True, progress=False)
    assert not empty.exists()  # nothing written into the mistaken folder
    run = tmp_path / "run"
    train(_cfg(images=8), run, progress=False)
    with pytest.raises(PixdiffError, match="already holds a run"):
        train(_cfg(images=8), run, progress=False)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(PixdiffError, match="is a file"):
        train(_cfg(), f, progress=False)


def test_stale_temporaries_are_removed_and_a_failed_write_keeps_older_checkpoints(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(_cfg(images=8), run, progress=False)
    stale = run / "checkpoints" / ".tmp-ckpt-000000000016-99999"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_io, "save_file", disk_full)
    with pytest.raises(ckpt_io.CheckpointWriteError, match="No space left") as e:
        train(_cfg(images=16), run, resume=True, progress=False)
    assert e.value.exit_code == 3
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["ckpt-000000000008"]  # the stale and the failed temporary folders are gone
    monkeypatch.undo()
    train(_cfg(images=16), run, resume=True, progress=False)
    assert ckpt_io.load(run).state["images"] == 16


def test_non_finite_weights_are_never_saved_as_good(tmp_path, monkeypatch):
    with pytest.raises(PixdiffError, match="--lr must be a finite number"):
        TrainConfig.from_dict({"optim": {"lr": float("inf")}})
    run = tmp_path / "run"
    train(_cfg(images=8), run, progress=False)
    step = torch.optim.AdamW.step

    def poisoned(self, *a, **k):  # an update that leaves the loss of this step finite but NaN weights
        out = step(self, *a, **k)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoned)
    with pytest.raises(TrainingStopped, match="weights are not finite at 16 images.*ckpt-000000000008"):
        train(_cfg(images=32), run, resume=True, progress=False)
    assert [p.name for p in ckpt_io.list_checkpoints(run)] == ["ckpt-000000000008"]
    assert all(torch.isfinite(v).all() for v in ckpt_io.load(run).model.values() if v.is_floating_point())


def test_a_torn_last_log_line_is_dropped_with_a_warning_naming_the_file(tmp_path):
    run = tmp_path / "run"
    train(_cfg(images=8), run, progress=False)
    log = run / "log.jsonl"
    with open(log, "a") as f:
        f.write('{"step": 2, "images": 1')  # a kill in the middle of a write
    with pytest.warns(UserWarning, match="log.jsonl: dropped 1"):
        train(_cfg(images=16), run, resume=True, progress=False)
    assert [r["images"] for r in read_log(log)] == [8, 16]


def test_16_bit_png_is_scaled_not_saturated(tmp_path):
    from PIL import Image

    from pixdiff.datasets import load_image_folder

    a = (np.arange(16 * 16).reshape(16, 16) * 257).astype(np.uint16)  # 0 .. 65535 ramp
    Image.fromarray(a).save(tmp_path / "ramp.png")
    ds = load_image_folder(tmp_path, 16, channels=1)
    expect = np.rint(a / 65535 * 255) / 127.5 - 1
    assert np.allclose(ds.images[0, 0].numpy(), expect, atol=1e-6)
    assert abs(float(ds.images.mean())) < 0.01  # not white (mean 0.996 before the fix)


def test_a_full_disk_outside_checkpoints_is_one_line_keeping_the_last_checkpoint(tmp_path, monkeypatch):
    import errno

    from pixdiff import train as train_mod

    run = tmp_path / "run"

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(run / "loss.png"))

    monkeypatch.setattr(train_mod, "plot_loss_curve", full)
    with pytest.raises(ckpt_io.CheckpointWriteError, match="No space left.*Last checkpoint: .*ckpt-000000000016") as e:
        train(_cfg(images=16), run, progress=False)
    assert e.value.exit_code == 3


def test_non_finite_loss_settings_and_classifier_presets_are_refused(tmp_path):
    with pytest.raises(PixdiffError, match="sigma_data must be a finite"):
        TrainConfig.from_dict({"loss": {"sigma_data": float("nan")}})
    cfg = _cfg()
    cfg.model.preset = "tiny-classifier"
    cfg.model.overrides = {}
    with pytest.raises(PixdiffError, match="train-classifier"):
        train(cfg, tmp_path / "run", progress=False)
