"""Training end to end through the CLI: exact resume after SIGKILL, SIGINT checkpoints, clear
errors, and a 2-process DDP run that equals one process with two accumulation micro-batches."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import NET_FLAGS as NET

from pixdiff import checkpoint as ckpt_io
from pixdiff.cli import main

ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")


def _train_args(out, steps=6, batch=8, extra=()):
    return ["train", "--data", "digits", "--preset", "tiny", *NET, "--steps", str(steps), "--batch", str(batch),
            "--out", str(out), "--ckpt-every", str(2 * batch), "--log-every", str(batch), "--quiet", *extra]


def _cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "pixdiff", *args], env=ENV, capture_output=True, text=True, **kw)


def _final_weights(run):
    ck = ckpt_io.load(run)
    return ck.state["images"], ck.model, ck.ema



def test_no_final_grid_skips_only_the_sample_grid(tmp_path):
    run = tmp_path / "run"
    assert main(_train_args(run, steps=2, extra=("--no-final-grid",))) == 0
    assert (run / "loss.png").exists() and not (run / "samples.png").exists()
    assert ckpt_io.load(run).state["images"] == 16
    assert main(_train_args(run, steps=3, extra=("--resume",))) == 0  # a resume keeps the run's choice
    assert not (run / "samples.png").exists()
    assert main(_train_args(run, steps=4, extra=("--resume", "--final-grid"))) == 0  # and may change it
    assert (run / "samples.png").exists()


def test_train_sample_info_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train_args(run)) == 0
    assert (run / "loss.png").exists() and (run / "config.json").exists() and (run / "samples.png").exists()
    recs = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert [r["images"] for r in recs] == [8 * i for i in range(1, 7)]
    assert all(np.isfinite(r["loss"]) for r in recs)
    images, model, ema = _final_weights(run)
    assert images == 48
    # EMA differs from the raw weights after training, and both are saved
    assert any(not torch.equal(model[k], ema[k]) for k in model if model[k].is_floating_point())
    out = tmp_path / "s.npz"
    assert main(["sample", "--ckpt", str(run), "--n", "6", "--sampler", "ddim", "--steps", "3", "--out", str(out)]) == 0
    f = np.load(out)
    assert f["images"].shape == (6, 16, 16, 1) and f["images"].dtype == np.uint8
    assert f["labels"].tolist() == [0, 1, 2, 3, 4, 5]
    # per-sample seeds: image 3 is the same when drawn alone
    out1 = tmp_path / "one.npz"
    assert main(["sample", "--ckpt", str(run), "--n", "4", "--sampler", "ddim", "--steps", "3", "--batch", "1",
                 "--out", str(out1)]) == 0
    assert np.array_equal(np.load(out1)["images"], f["images"][:4])
    png = tmp_path / "g.png"
    assert main(["sample", "--ckpt", str(run), "--n", "10", "--steps", "2", "--guidance", "1", "--out", str(png)]) == 0
    assert png.stat().st_size > 0
    capsys.readouterr()
    assert main(["info", "--ckpt", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 48
    # likelihood and evaluation of the same checkpoint through the CLI
    nll = tmp_path / "nll.json"
    assert main(["nll", "--ckpt", str(run), "--n", "4", "--num-t", "8", "--json", str(nll)]) == 0
    res = json.loads(nll.read_text())
    assert 0 < res["bits_per_dim"] < 30 and res["ci95"] > 0 and res["n"] == 4
    ev = tmp_path / "eval.json"
    assert main(["eval", "--ckpt", str(run), "--n", "20", "--sampler", "ddim", "--steps", "3",
                 "--metrics", "acc,is", "--json", str(ev)]) == 0
    m = json.loads(ev.read_text())
    assert m["protocol"]["source"]["n"] == 20 and 0 <= m["metrics"]["acc"]["accuracy"] <= 1


def test_sigkill_then_resume_is_bit_exact(tmp_path):
    ref, crash = tmp_path / "ref", tmp_path / "crash"
    args = lambda out: _train_args(out, steps=12)  # noqa: E731
    assert _cli(args(ref)).returncode == 0
    p = subprocess.Popen([sys.executable, "-m", "pixdiff", *args(crash)], env=ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(ckpt_io.list_checkpoints(crash)) < 2 and p.poll() is None:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed_at = ckpt_io.load(crash).state["images"]
    assert killed_at < 96, "the run finished before it could be killed; the test proves nothing"
    r = _cli(args(crash) + ["--resume"])
    assert r.returncode == 0, r.stderr
    a, b = _final_weights(ref), _final_weights(crash)
    assert a[0] == b[0] == 96
    for k in a[1]:
        assert torch.equal(a[1][k], b[1][k]), f"raw weight {k} differs after resume"
        assert torch.equal(a[2][k], b[2][k]), f"EMA weight {k} differs after resume"
    recs = [json.loads(l)["images"] for l in (crash / "log.jsonl").read_text().splitlines()]
    assert recs == sorted(set(recs)), "the log repeats steps after resume"


def test_sigint_saves_a_valid_checkpoint_and_exits_zero(tmp_path):
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "pixdiff", *_train_args(run, steps=100_000)], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "log.jsonl").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    images, _, _ = _final_weights(run)
    assert 0 < images < 800_000


def test_corrupt_checkpoint_falls_back_and_config_mismatch_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train_args(run, steps=4)) == 0
    cks = ckpt_io.list_checkpoints(run)
    assert len(cks) == 2
    newest = cks[-1] / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])  # truncate
    with pytest.warns(UserWarning, match="truncated or corrupt"):
        ck = ckpt_io.load(run)
    assert ck.path == cks[0]
    with pytest.raises(ckpt_io.CheckpointError, match="truncated or corrupt"):
        ckpt_io.load(cks[-1])
    capsys.readouterr()
    assert main(_train_args(run, steps=8, extra=["--lr", "0.5", "--resume"])) == 2
    err = capsys.readouterr().err
    assert "optim.lr" in err and "different config" in err
    # a fresh run into a folder that holds checkpoints is refused, nothing is overwritten
    assert main(_train_args(run, steps=8)) == 2
    assert "--resume" in capsys.readouterr().err


def test_user_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "imgs"
    (bad / "a").mkdir(parents=True)
    (bad / "a" / "x.png").write_bytes(b"not a png")
    cases = [
        (["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r1"), "--steps", "1"], "does not exist"),
        (["train", "--data", str(bad), "--out", str(tmp_path / "r2"), "--steps", "1"], "no readable images"),
        (["train", "--data", "digits", "--resolution", "12", "--out", str(tmp_path / "r3"), "--steps", "1"], "resolution"),
        (["sample", "--ckpt", str(tmp_path / "nothing"), "--out", str(tmp_path / "a.png")], "does not exist"),
        (["train", "--data", "digits", "--net", "channels", "--out", str(tmp_path / "r4"), "--steps", "1"], "KEY=VALUE"),
    ]
    for args, msg in cases:
        with pytest.warns(UserWarning) if "no readable" in msg else _nullcontext():
            assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_image_folder_training(tmp_path):
    from PIL import Image

    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for c in ("cats", "dogs"):
        (root / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    run = tmp_path / "run"
    assert main(["train", "--data", str(root), "--labels", "folders", "--resolution", "8", *NET, "--steps", "2", "--batch", "4",
                 "--out", str(run), "--quiet"]) == 0
    ck = ckpt_io.load(run)
    assert ck.state["meta"]["num_classes"] == 2 and ck.state["meta"]["class_names"] == ["cats", "dogs"]


@pytest.mark.skipif(sys.platform != "linux", reason="gloo on linux")
def test_ddp_two_processes_equal_one_process_with_accumulation(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r = _cli(_train_args(one, steps=4, extra=["--micro-batch", "4"]))
    assert r.returncode == 0, r.stderr
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pixdiff",
           *_train_args(two, steps=4)]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = _final_weights(one), _final_weights(two)
    assert a[0] == b[0]
    for k in a[1]:
        assert torch.allclose(a[1][k], b[1][k], rtol=1e-4, atol=1e-6), k


def test_toy_2d_training_and_sampling(tmp_path):
    run = tmp_path / "moons"
    assert main(["train", "--data", "moons", "--steps", "3", "--batch", "16", "--out", str(run), "--quiet"]) == 0
    ck = ckpt_io.load(run)
    assert ck.state["config"]["model"]["preset"] == "mlp" and ck.state["meta"]["data_shape"] == [2]
    out = tmp_path / "pts.npz"
    assert main(["sample", "--ckpt", str(run), "--n", "8", "--sampler", "ddim", "--steps", "4", "--out", str(out)]) == 0
    f = np.load(out)
    assert f["samples"].shape == (8, 2) and np.isfinite(f["samples"]).all()


def test_nonfinite_loss_is_skipped_then_stops_with_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    from pixdiff import losses

    run = tmp_path / "run"
    assert main(_train_args(run, steps=2)) == 0  # a good checkpoint at 16 images
    real = losses.loss_fn
    calls = {"n": 0}

    def flaky(*a, **k):
        out = real(*a, **k)
        calls["n"] += 1
        if calls["n"] > 1:  # first step fine, then NaN forever
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(losses, "loss_fn", flaky)
    capsys.readouterr()
    assert main(_train_args(run, steps=40, extra=["--resume"])) == 2
    err = capsys.readouterr().err.strip()
    assert "not finite for 10 steps" in err and "ckpt-" in err and len(err.splitlines()) == 1, err
    images, model, _ = _final_weights(run)
    assert images == 16 and all(torch.isfinite(v).all() for v in model.values() if v.is_floating_point())


def test_single_nan_step_is_skipped_and_counted(tmp_path, monkeypatch):
    from pixdiff import losses

    real = losses.loss_fn
    calls = {"n": 0}

    def once(*a, **k):
        out = real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 2:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(losses, "loss_fn", once)
    run = tmp_path / "run"
    assert main(_train_args(run, steps=4)) == 0
    ck = ckpt_io.load(run)
    assert ck.state["nan_total"] == 1 and ck.state["images"] == 32
    recs = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in recs)


def test_classifier_and_autoguidance_through_the_cli(tmp_path):
    """`pixdiff train-classifier`, then sampling with --classifier and with --guide-ckpt; w = 0 is
    exactly the unguided model for both."""
    run, weak, clf = tmp_path / "run", tmp_path / "weak", tmp_path / "clf"
    assert main(_train_args(run, steps=3, extra=["--warmup", "0"])) == 0
    assert main(_train_args(weak, steps=1, extra=["--warmup", "0"])) == 0
    assert main(["train-classifier", "--steps", "3", "--batch", "8", "--out", str(clf), "--quiet",
                 "--preset", "tiny-classifier"]) == 0
    base = ["sample", "--ckpt", str(run), "--n", "4", "--sampler", "ddim", "--steps", "3"]
    outs = {}
    for name, extra in {"plain": [], "clf0": ["--classifier", str(clf)], "clf": ["--classifier", str(clf), "--guidance", "3"],
                        "auto0": ["--guide-ckpt", str(weak)], "auto": ["--guide-ckpt", str(weak), "--guidance", "2"]}.items():
        out = tmp_path / f"{name}.npz"
        assert main(base + extra + ["--out", str(out)]) == 0, name
        outs[name] = np.load(out)["images"]
    assert np.array_equal(outs["clf0"], outs["plain"]) and np.array_equal(outs["auto0"], outs["plain"])
    assert not np.array_equal(outs["clf"], outs["plain"]) and not np.array_equal(outs["auto"], outs["plain"])
