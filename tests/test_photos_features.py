"""Specs for the shipped photos feature network (pixdiff.metrics.photos_features): its weights are
the ones its provenance file names, it reads held-out photo crops, its Fréchet distances see
content (and a randomly initialised net of the same shape does not pass the same checks), `acc`
and `pixdiff eval` work with it, and wrong inputs get one-line errors."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
import torch

from pixdiff.cli import main
from pixdiff.data import load_digits, to_uint8
from pixdiff.datasets import load_photos
from pixdiff.datasets.photos import PHOTO_NAMES
from pixdiff.errors import PixdiffError
from pixdiff.metrics import (
    CLASS_NAMES,
    FEATURES,
    PhotosNet,
    evaluate_images,
    feature_statistics,
    frechet_distance,
    get_extractor,
    module_extractor,
    photos_extractor,
)
from pixdiff.metrics.features import sha256_file

ASSETS = resources.files("pixdiff") / "assets"
HELD_OUT_BOUND = 0.96  # measured: 0.98 (784/800) at 32×32, 0.955 at 16×16, 0.966 at 64×64


@pytest.fixture(scope="module")
def info():
    return json.loads((ASSETS / "photos_features.json").read_text())


@pytest.fixture(scope="module")
def ext():
    return photos_extractor()


@pytest.fixture(scope="module")
def train32():
    return load_photos(32, "train")


@pytest.fixture(scope="module")
def held_out32():
    return load_photos(32, "test")


@pytest.fixture(scope="module")
def feats(ext, train32, held_out32):
    """The shipped net's features of the train and test crops (computed once)."""
    return ext(train32.images).features, ext(held_out32.images).features


def _fd(a: torch.Tensor, b: torch.Tensor) -> float:
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


# ---------------------------------------------------------------- the shipped weights


def test_shipped_weights_are_the_ones_their_provenance_names(ext, info):
    path = ASSETS / "photos_features.safetensors"
    assert sha256_file(str(path)) == info["sha256"] == ext.weights_sha256
    assert info["command"].startswith("python scripts/train_photos_features.py --seed 0 ")
    assert {"seed", "torch", "test_accuracy", "test_accuracy_fine"} <= set(info)
    assert (ext.name, ext.dim, ext.num_classes, ext.channels, ext.sizes) == ("photos", 64, 2, (3,), (16, 32, 64))
    assert 50_000 <= sum(p.numel() for p in PhotosNet().parameters()) <= 150_000
    # registered, with the dataset's own class names
    assert "photos" in FEATURES and get_extractor("photos").weights_sha256 == info["sha256"]
    assert CLASS_NAMES["photos"] == tuple(PHOTO_NAMES) == ("china", "flower")


def test_held_out_photos_are_classified(ext, info, held_out32):
    out = ext(held_out32.images)
    assert out.features.shape == (800, 64) and out.probs.shape == (800, 2)
    assert torch.allclose(out.probs.sum(1), torch.ones(800, dtype=torch.float64))
    hits = int((out.probs.argmax(1) == held_out32.labels).sum())
    assert hits == info["test_correct"] and info["test_count"] == 800  # the JSON's number is this one
    assert hits / 800 >= HELD_OUT_BOUND
    for r in (16, 64):  # resized to 32×32 by the extractor
        te = load_photos(r, "test")
        acc = (ext(te.images).probs.argmax(1) == te.labels).double().mean().item()
        assert acc >= 0.93, f"{r}×{r}: held-out accuracy {acc:.3f}"


# ---------------------------------------------------------------- Fréchet distances that see content


def _fd_checks(ext, train32, held_out32, ftr: torch.Tensor, fte: torch.Tensor) -> dict[str, float]:
    """Ratios that an informative photos feature space makes large (``ftr``, ``fte``: the features
    of ``train32``, ``held_out32``). Measured with the shipped net: 168, 146 and 3.3; with a randomly
    initialised PhotosNet: 13, 30 and 1.05."""
    perm = torch.randperm(len(train32), generator=torch.Generator().manual_seed(0))
    a, b = perm[:1600], perm[1600:]
    floor = _fd(ftr[a], ftr[b])  # two halves of one distribution: the noise floor at N = 1600
    gray = train32.images[b].mean(1, keepdim=True).expand(-1, 3, -1, -1).contiguous()
    china = b[train32.labels[b] == 0]
    return {
        "grayscale / floor": _fd(ftr[a], ext(gray).features) / floor,
        "one photo only (mode collapse) / floor": _fd(ftr[a], ftr[china]) / floor,
        # the test crops (right 128 columns) differ in content from the train crops (left 512):
        # colour-shuffling them must still move them much further away than that
        "colour-shuffled test / test": _fd(ftr, ext(held_out32.images[:, [2, 0, 1]]).features) / _fd(ftr, fte),
    }


BARS = {"grayscale / floor": 60.0, "one photo only (mode collapse) / floor": 60.0, "colour-shuffled test / test": 2.0}


def test_frechet_distance_sees_content_and_random_features_do_not(ext, train32, held_out32, feats):
    got = _fd_checks(ext, train32, held_out32, *feats)
    assert all(got[k] >= BARS[k] for k in BARS), got
    # the same checks on a net of the same shape with random weights: every one fails
    net = PhotosNet()
    net.init_weights(torch.Generator().manual_seed(1))
    rand = module_extractor(net.eval(), 64, "random-photos", 2, (3,), (32,))
    control = _fd_checks(rand, train32, held_out32, rand(train32.images).features, rand(held_out32.images).features)
    assert all(control[k] < BARS[k] for k in BARS), control


# ---------------------------------------------------------------- acc and pixdiff eval


def test_acc_through_evaluate_images_is_the_held_out_accuracy(info, held_out32):
    order = torch.randperm(800, generator=torch.Generator().manual_seed(0))  # IS splits see both photos
    u8 = to_uint8(held_out32.images[order])
    r = evaluate_images(u8, held_out32.labels[order].numpy(), metrics=("acc", "is"), features="photos")
    assert r["metrics"]["acc"]["accuracy"] == pytest.approx(info["test_correct"] / 800, abs=1e-12)
    assert r["metrics"]["acc"]["accuracy"] == pytest.approx(info["test_accuracy"], abs=1e-4)
    assert r["protocol"]["acc"]["classifier"] == "photos" and r["protocol"]["is"]["classes"] == 2
    assert 1.5 < r["metrics"]["is"]["mean"] <= 2.0  # two confident, balanced classes


def test_eval_command_with_photos_features(tmp_path, info, train32, held_out32, capsys):
    ref, samples, out = tmp_path / "train.npz", tmp_path / "test.npz", tmp_path / "scores.json"
    every8 = slice(None, None, 8)  # 400 train crops: enough for a reference, cheaper to embed
    np.savez(ref, images=to_uint8(train32.images[every8]), labels=train32.labels[every8].numpy())
    np.savez(samples, images=to_uint8(held_out32.images), labels=held_out32.labels.numpy())
    assert main(["eval", "--images", str(samples), "--ref", str(ref), "--features", "photos",
                 "--metrics", "fd,kid,acc", "--kid-subsets", "10", "--json", str(out), "--device", "cpu"]) == 0
    assert "class accuracy" in capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["metrics"]["acc"]["accuracy"] == pytest.approx(info["test_accuracy"], abs=1e-4)
    assert r["protocol"]["features"]["name"] == "photos"
    assert r["protocol"]["features"]["weights_sha256"] == info["sha256"]
    assert r["protocol"]["reference"]["count"] == 400 and r["metrics"]["fd"]["fd"] > 0


# ---------------------------------------------------------------- bad inputs


def test_wrong_inputs_give_one_line_errors(ext, held_out32, tmp_path, capsys):
    def one_line(exc_info):
        assert "\n" not in str(exc_info.value)

    with pytest.raises(PixdiffError, match="3 channel") as e:
        ext(torch.zeros(4, 1, 32, 32))
    one_line(e)
    with pytest.raises(PixdiffError, match=r"16×16, 32×32, 64×64 \(got 20×20\)") as e:
        ext(torch.zeros(4, 3, 20, 20))
    one_line(e)
    u8 = to_uint8(held_out32.images[:100])
    with pytest.raises(PixdiffError, match=r"'acc' with --features photos reads labels as its 2 classes \(0\.\.1: "
                                           r"china, flower\); got labels 0\.\.9") as e:
        evaluate_images(u8, np.arange(100) % 10, metrics=("acc",), features="photos")
    one_line(e)
    other = module_extractor(PhotosNet().eval(), 64, "custom", 2, (3,), (32,))
    with pytest.raises(PixdiffError, match="defined for --features digits or photos") as e:
        evaluate_images(u8, np.zeros(100, np.int64), metrics=("acc",), features=other)
    one_line(e)
    with pytest.raises(PixdiffError, match="train_photos_features.py"):
        photos_extractor(tmp_path / "none.safetensors")
    with pytest.raises(PixdiffError, match="is not a PhotosNet weights file"):
        photos_extractor(ASSETS / "digits_features.safetensors")
    digits = tmp_path / "digits.npz"
    np.savez(digits, images=to_uint8(load_digits(16, "test").images[:80]))
    assert main(["eval", "--images", str(digits), "--features", "photos", "--metrics", "is"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pixdiff eval: error:") and "3 channel" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_photos_feature_weights_are_reproducible_from_the_script(info):
    """Retrain with the shipped recipe (~2 min on one core): same held-out accuracy bar, and on
    the torch build recorded in the JSON, the same weights bit for bit."""
    import importlib.util as iu
    from pathlib import Path

    from safetensors.torch import load_file

    script = Path(__file__).resolve().parents[1] / "scripts" / "train_photos_features.py"
    spec = iu.spec_from_file_location("train_photos_features", script)
    mod = iu.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.set_num_threads(info["threads"])
    torch.use_deterministic_algorithms(True)  # as the script's main() does
    try:
        net, acc = mod.train(info["seed"], info["epochs"], info["batch"], info["lr"], info["noise"], verbose=False)
    finally:
        torch.use_deterministic_algorithms(False)
    assert acc["test_accuracy"] >= HELD_OUT_BOUND
    if info["torch"] == torch.__version__:
        shipped = load_file(str(ASSETS / "photos_features.safetensors"))
        for k, v in net.state_dict().items():
            assert torch.equal(v, shipped[k]), k


def test_ref_photos_is_the_embedded_split_and_brings_its_features(tmp_path, info, held_out32):
    """`--ref photos` needs no npz: the held-out split scored against itself is FD 0 with the photos
    features chosen without `--features`, and acc is the classifier's held-out accuracy."""
    samples, out = tmp_path / "test.npz", tmp_path / "scores.json"
    np.savez(samples, images=to_uint8(held_out32.images), labels=held_out32.labels.numpy())
    assert main(["eval", "--images", str(samples), "--ref", "photos", "--ref-split", "test",
                 "--metrics", "fd,acc", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["protocol"]["features"]["name"] == "photos"
    assert r["protocol"]["reference"]["dataset"] == "photos32-test" and r["protocol"]["reference"]["count"] == 800
    assert abs(r["metrics"]["fd"]["fd"]) < 1e-6
    assert r["metrics"]["acc"]["accuracy"] == pytest.approx(info["test_accuracy"], abs=1e-4)


def test_eval_of_a_photos_run_compares_with_photos(tmp_path):
    run, out = tmp_path / "gan", tmp_path / "scores.json"
    assert main(["train", "--family", "gan", "--data", "photos", "--images", "16", "--batch", "8", "--out", str(run),
                 "--quiet"]) == 0
    assert main(["eval", "--ckpt", str(run), "--n", "70", "--metrics", "fd,acc", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["protocol"]["features"]["name"] == "photos"
    assert r["protocol"]["reference"]["dataset"] == "photos32-train"
