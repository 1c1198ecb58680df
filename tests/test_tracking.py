"""Tracking and evaluation during training: TensorBoard scalars and images, FD/accuracy records
in RUN/eval.jsonl that match an independent evaluation of the same EMA weights, and RUN/best."""

import json

import pytest
import torch
from helpers import NET

import pixdiff
from pixdiff.config import TrainConfig
from pixdiff.errors import PixdiffError
from pixdiff.metrics import class_accuracy, compute_reference, feature_statistics, frechet_distance, get_extractor
from pixdiff.train import train


def _cfg(**run):
    cfg = TrainConfig()
    cfg.model.overrides = dict(NET)
    cfg.optim.batch, cfg.optim.warmup_images = 8, 0
    cfg.run.images, cfg.run.ckpt_every_images, cfg.run.log_every_images = 32, 16, 8
    for k, v in run.items():
        setattr(cfg.run, k, v)
    return cfg


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("t") / "run"
    cfg = _cfg(log="tensorboard", eval_every_images=16, eval_n=100, keep_best=True, sample_every_images=32)
    train(cfg, run, progress=False)
    return run


def test_eval_records_equal_an_independent_evaluation_of_the_checkpoint(evaluated_run):
    recs = [json.loads(x) for x in (evaluated_run / "eval.jsonl").read_text().splitlines()]
    assert [r["images"] for r in recs] == [16, 32]
    last = recs[-1]
    # recompute the last record from the saved EMA weights with the metrics package directly
    pipe = pixdiff.load(evaluated_run, device="cpu")
    imgs, labels = pipe.sample(100, sampler="dpmpp_2m", steps=20, seed=0, batch=250)
    ext = get_extractor("digits")
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    f = ext(x)
    ref = compute_reference(pixdiff.data.load_digits(16, "train").images, ext, "digits16-train")
    fd = frechet_distance(*feature_statistics(f.features), ref.mu, ref.sigma)
    assert last["fd"] == pytest.approx(float(fd), rel=1e-6)
    assert last["accuracy"] == pytest.approx(class_accuracy(f.probs, torch.from_numpy(labels)).accuracy)


def test_best_checkpoint_is_the_lowest_fd_and_loads(evaluated_run):
    recs = [json.loads(x) for x in (evaluated_run / "eval.jsonl").read_text().splitlines()]
    best = min(recs, key=lambda r: r["fd"])
    pipe = pixdiff.load(evaluated_run / "best", device="cpu")
    assert int(pipe.checkpoint.name.split("-")[1]) == best["images"]


def test_tensorboard_gets_the_loss_the_eval_and_the_grid(evaluated_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(evaluated_run / "tensorboard"))
    ea.Reload()
    tags = ea.Tags()
    assert {"train/loss", "train/lr", "eval/fd", "eval/accuracy"} <= set(tags["scalars"])
    logged = [json.loads(x) for x in (evaluated_run / "log.jsonl").read_text().splitlines()]
    assert [e.value for e in ea.Scalars("train/loss")] == pytest.approx([r["loss"] for r in logged], rel=1e-6)
    assert [e.step for e in ea.Scalars("train/loss")] == [r["images"] for r in logged]
    assert "samples" in tags["images"]


def test_bad_tracking_settings_are_one_line_errors():
    with pytest.raises(PixdiffError, match="--log"):
        TrainConfig.from_dict({"run": {"log": "mlflow"}})
    with pytest.raises(PixdiffError, match="--keep-best needs --eval-every"):
        TrainConfig.from_dict({"run": {"keep_best": True}})
