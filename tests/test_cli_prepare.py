"""`pixdiff prepare-data` end to end, and data settings that follow the data."""

import json

import numpy as np
import pytest
from helpers import NET_FLAGS as NET

from pixdiff.cli import main
from pixdiff.config import DataConfig


@pytest.fixture
def folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(6):
        d = tmp_path / "src" / "ab"[i % 2]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((40, 50, 3)) * 255).astype(np.uint8)).save(d / f"{i}.png")
    return tmp_path / "src"


def test_prepare_then_train_then_sample_from_the_prepared_file(folder, tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["prepare-data", str(folder), "--resolution", "16", "--labels", "folders", "--workers", "0",
                 "--out", str(data), "--quiet"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["count"] == 6 and rep["classes"] == ["a", "b"] and rep["resolution"] == 16
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["count"] == 6 and manifest["channels"] == 3
    cfg = DataConfig(name=str(data))  # resolution and channels come from the manifest
    assert (cfg.resolution, cfg.channels) == (16, 3)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--steps", "2", "--batch", "4", "--out", str(run), "--quiet",
                 "--workers", "0", *NET]) == 0
    out = tmp_path / "s.npz"
    assert main(["sample", "--ckpt", str(run), "--n", "2", "--sampler", "ddim", "--steps", "2", "--out", str(out)]) == 0
    f = np.load(out)
    assert f["images"].shape == (2, 16, 16, 3) and f["labels"].tolist() == [0, 1]


def test_prepare_refuses_an_existing_output_in_one_line(folder, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "keep.txt").write_text("mine")
    assert main(["prepare-data", str(folder), "--resolution", "16", "--workers", "0", "--out", str(data),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "prepare-data" in err
    assert (data / "keep.txt").read_text() == "mine"


def test_resolution_defaults_follow_the_data(tmp_path):
    assert DataConfig().resolution == 16 and DataConfig(name="photos").resolution == 32
    assert (DataConfig(name="photos").channels, DataConfig().channels) == (3, 1)
    np.savez(tmp_path / "x.npz", images=np.zeros((3, 8, 8, 1), np.uint8))
    c = DataConfig(name=str(tmp_path / "x.npz"))
    assert (c.resolution, c.channels) == (8, 1)
    assert DataConfig(name=str(tmp_path)).resolution == 64  # a folder: no stored size
    assert DataConfig(name="photos", resolution=64).resolution == 64  # a flag wins
