"""Specs for pixdiff.metrics: closed forms, constructed cases, cross-checks with peers
(torchmetrics, torch-fidelity where importable), the shipped digits feature net, bad inputs and
`pixdiff eval` end to end."""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from pixdiff.cli import main
from pixdiff.data import from_uint8, load_digits, to_uint8
from pixdiff.errors import PixdiffError
from pixdiff.metrics import (
    DigitsNet,
    FIDInceptionV3,
    class_accuracy,
    compute_reference,
    digits_extractor,
    evaluate_images,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    inception_extractor,
    inception_score,
    kernel_distance,
    load_reference,
    memorization,
    mmd2_unbiased,
    module_extractor,
    precision_recall,
    save_reference,
)
from pixdiff.metrics.inception import INCEPTION_URL


@pytest.fixture(scope="module")
def digits_ext():
    return digits_extractor()


@pytest.fixture(scope="module")
def digits_test():
    return load_digits(16, "test")


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------- Fréchet distance


def test_fd_of_a_set_with_itself_is_zero():
    f = _randn(400, 16)
    assert abs(frechet_distance_from_features(f, f)) < 1e-9


def test_fd_equals_closed_form_for_commuting_covariances():
    # Σ₁ = Q diag(a) Qᵀ, Σ₂ = Q diag(b) Qᵀ commute, so tr((Σ₁Σ₂)^½) = Σ √(aᵢbᵢ) and
    # d² = ‖Δμ‖² + Σ (√aᵢ − √bᵢ)².
    d = 12
    q, _ = torch.linalg.qr(_randn(d, d, seed=1))
    a, b = _randn(d, seed=2).abs() + 0.1, _randn(d, seed=3).abs() + 0.1
    mu1, mu2 = _randn(d, seed=4), _randn(d, seed=5)
    s1, s2 = q @ torch.diag(a) @ q.T, q @ torch.diag(b) @ q.T
    want = ((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want.item(), abs=1e-9)
    # the diagonal case, written out
    assert frechet_distance(np.zeros(2), np.diag([4.0, 1.0]), np.array([1.0, 0.0]), np.diag([1.0, 9.0])) == pytest.approx(
        1.0 + (2 - 1) ** 2 + (1 - 3) ** 2, abs=1e-12)


def test_fd_matches_the_sqrtm_formula_of_pytorch_fid():
    f1, f2 = _randn(300, 20, seed=6), _randn(300, 20, seed=7) * 1.3 + 0.2
    mu1, s1 = feature_statistics(f1)
    mu2, s2 = feature_statistics(f2)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real  # pytorch-fid's calculate_frechet_distance
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, abs=1e-6)


def test_fd_matches_torchmetrics():
    fid = pytest.importorskip("torchmetrics.image.fid")
    f1, f2 = _randn(300, 20, seed=8), _randn(300, 20, seed=9) + 0.5
    mu1, s1 = feature_statistics(f1)
    mu2, s2 = feature_statistics(f2)
    theirs = fid._compute_fid(*(torch.from_numpy(t) for t in (mu1, s1, mu2, s2))).item()
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(theirs, rel=1e-6)


def test_fd_says_how_many_samples_it_needs():
    with pytest.raises(ValueError, match=r"N = 30 for D = 64.*N ≥ 65.*N ≥ 640"):
        feature_statistics(_randn(30, 64))


# ---------------------------------------------------------------- KID


def test_kid_is_unbiased_and_detects_a_shift():
    # E[MMD²_u] = 0 for one distribution: the mean over 300 independent pairs of sets must lie within
    # 4 standard errors of 0; a 0.5σ shift in every dimension must sit far above that.
    vals = torch.tensor([mmd2_unbiased(_randn(40, 8, seed=2 * i), _randn(40, 8, seed=2 * i + 1)) for i in range(300)])
    se = vals.std() / len(vals) ** 0.5
    assert abs(vals.mean()) < 4 * se
    shifted = torch.tensor([mmd2_unbiased(_randn(40, 8, seed=2 * i), _randn(40, 8, seed=2 * i + 1) + 0.5) for i in range(50)])
    assert shifted.mean() > 20 * se and (shifted > 0).float().mean() > 0.95


def test_kid_subsets_follow_the_generator():
    x, y = _randn(300, 8, seed=1), _randn(250, 8, seed=2) + 0.3
    r1 = kernel_distance(x, y, torch.Generator().manual_seed(5), num_subsets=20, subset_size=100)
    r2 = kernel_distance(x, y, torch.Generator().manual_seed(5), num_subsets=20, subset_size=100)
    assert r1 == r2 and r1.subset_size == 100 and r1.mean > 0 and r1.std > 0
    assert kernel_distance(x, y, torch.Generator().manual_seed(0), 5, 1000).subset_size == 250  # capped by N


def test_kid_matches_torchmetrics_poly_mmd():
    kid = pytest.importorskip("torchmetrics.image.kid")
    x, y = _randn(60, 8, seed=3), _randn(60, 8, seed=4) + 0.2
    assert mmd2_unbiased(x, y) == pytest.approx(kid.poly_mmd(x, y).item(), rel=1e-9)


# ---------------------------------------------------------------- precision / recall / density / coverage


def test_precision_recall_identical_sets():
    x = _randn(300, 5)
    r = precision_recall(x, x.clone(), k=3)
    assert (r.precision, r.recall, r.coverage) == (1.0, 1.0, 1.0)


def test_precision_recall_disjoint_far_sets():
    x = _randn(300, 5)
    r = precision_recall(x, _randn(300, 5, seed=1) + 100.0, k=3)
    assert (r.precision, r.recall, r.density, r.coverage) == (0.0, 0.0, 0.0, 0.0)


def test_precision_recall_subset_case():
    # real = two far-apart blobs; fake = fresh draws from one of them: every fake is realistic
    # (precision ≈ 1) but only half of the real data is produced (recall ≈ coverage ≈ 0.5).
    blob_a, blob_b = _randn(400, 4, seed=1), _randn(400, 4, seed=2) + 50.0
    fake = _randn(400, 4, seed=3)
    r = precision_recall(torch.cat([blob_a, blob_b]), fake, k=3)
    assert r.precision > 0.9  # k = 3 balls miss a few fresh draws even from the same blob
    assert 0.4 < r.recall <= 0.5 and 0.4 < r.coverage <= 0.5
    assert 0.8 < r.density < 1.2  # ≈ 1 when fake and real match where they overlap (Naeem et al.)


# ---------------------------------------------------------------- Inception Score, accuracy


def test_inception_score_extremes():
    c, n = 10, 500
    assert inception_score(torch.full((n, c), 1.0 / c), splits=10).mean == pytest.approx(1.0, abs=1e-12)
    onehot = torch.eye(c)[torch.arange(n) % c]  # each split of 50 holds every class 5 times
    r = inception_score(onehot, splits=10)
    assert r.mean == pytest.approx(c, abs=1e-9) and r.std == pytest.approx(0.0, abs=1e-9)


def test_class_accuracy():
    probs = torch.eye(3)[torch.tensor([0, 1, 2, 2])]
    r = class_accuracy(probs, torch.tensor([0, 1, 2, 0]))
    assert r.accuracy == 0.75 and r.per_class == {0: 0.5, 1: 1.0, 2: 1.0}
    with pytest.raises(ValueError, match="sum to 1"):
        class_accuracy(torch.randn(4, 3), torch.zeros(4))


# ---------------------------------------------------------------- feature networks


def test_digits_features_classify_held_out_digits(digits_ext):
    for res in (8, 16, 32):
        te = load_digits(res, "test")
        out = digits_ext(te.images)
        assert out.features.shape == (len(te), DigitsNet.feature_dim)
        acc = (out.probs.argmax(1) == te.labels).double().mean().item()
        assert acc >= 0.95, f"{res}×{res}: held-out accuracy {acc:.3f}"


def test_user_module_as_feature_network(digits_test):
    net = nn.Sequential(nn.Flatten(), nn.Linear(256, 6))
    torch.nn.init.normal_(net[1].weight, generator=torch.Generator().manual_seed(0))
    ext = module_extractor(net, dim=6, name="linear6")
    out = ext(digits_test.images)
    assert out.features.shape == (len(digits_test), 6) and out.probs is None
    r = evaluate_images(to_uint8(digits_test.images), None, metrics=("fd", "kid"), features=ext)
    assert r["protocol"]["features"]["name"] == "linear6" and r["metrics"]["fd"]["fd"] >= 0
    with pytest.raises(ValueError, match="classifier head"):
        evaluate_images(to_uint8(digits_test.images), None, metrics=("is",), features=ext)


@pytest.fixture(scope="module")
def inception_files(tmp_path_factory):
    """Random FID-Inception weights as safetensors and as a .pth state dict."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    net = FIDInceptionV3()
    state = {}
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue  # the TF-ported file has no BN step counters
        if k.endswith("running_var") or k.endswith("bn.weight"):
            v = 0.5 + torch.rand(v.shape, generator=g)
        elif v.dim() > 1:
            v = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
        else:
            v = 0.1 * torch.randn(v.shape, generator=g)
        state[k] = v.contiguous()
    d = tmp_path_factory.mktemp("inception")
    save_file(state, str(d / "inc.safetensors"))
    torch.save(state, d / "inc.pth")
    return d / "inc.safetensors", d / "inc.pth", state


def test_inception_loads_pytorch_fid_state_dicts(inception_files):
    st, pth, _ = inception_files
    ext = inception_extractor(st)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    a = ext(x)
    assert a.features.shape == (2, 2048) and a.probs.shape == (2, 1008) and torch.isfinite(a.features).all()
    with pytest.warns(UserWarning, match="not be comparable"):  # random weights are not pytorch-fid's file
        ext2 = inception_extractor(pth)
    assert torch.equal(ext2(x).features, a.features)
    assert "NOT the official" in ext2.protocol()["notes"]


@pytest.mark.slow
def test_inception_matches_torch_fidelity(inception_files):
    """torch-fidelity ports the same TF graph in plain torch; load its module without its package
    __init__ (which wants torchvision). Skipped unless torch-fidelity is installed."""
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None:
        pytest.skip("torch-fidelity not installed")
    saved = {k: v for k, v in sys.modules.items() if k.startswith("torch_fidelity")}
    pkg = types.ModuleType("torch_fidelity")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["torch_fidelity"] = pkg
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as e:
        pytest.skip(f"torch-fidelity's Inception module does not import here ({e})")
    finally:
        for k in [k for k in sys.modules if k.startswith("torch_fidelity")]:
            del sys.modules[k]
        sys.modules.update(saved)
    _, pth, state = inception_files
    theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(pth))
    ours = FIDInceptionV3()
    ours.load_state_dict(state, strict=False)
    ours.eval()
    x = torch.randint(0, 256, (2, 3, 299, 299), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    with torch.no_grad():
        f, logits = ours((x.float() - 128) / 128)  # torch-fidelity's input scaling, at 299 (no resize)
        tf, tl = theirs(x)
    torch.testing.assert_close(f, tf, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, tl, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------- memorisation


def test_memorisation_flags_training_images_not_noise(digits_test):
    tr = load_digits(16, "train")
    copies = memorization(tr.images[:200], tr.images)
    assert copies.memorized_fraction == 1.0 and copies.closer_than_train_fraction == 1.0
    assert torch.equal(copies.nearest_index, torch.arange(200))
    noise = torch.rand(200, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fresh = memorization(noise, tr.images)
    assert fresh.memorized_fraction == 0.0 and fresh.closer_than_train_fraction == 0.0
    held_out = memorization(digits_test.images, tr.images)  # real, never seen: not copies
    assert held_out.memorized_fraction < 0.05 and 0.2 < held_out.closer_than_train_fraction < 0.8


# ---------------------------------------------------------------- bad inputs


def test_bad_images_give_clear_errors(digits_ext, digits_test):
    x = digits_test.images[:20]
    with pytest.raises(ValueError, match=r"8×8, 16×16, 32×32 \(got 20×20\)"):
        digits_ext(torch.zeros(4, 1, 20, 20))
    with pytest.raises(ValueError, match="1 channel"):
        digits_ext(x.expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match="uint8; convert with pixdiff.data.from_uint8"):
        digits_ext(torch.zeros(4, 1, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[-1, 1\].*0\.\.255"):
        digits_ext((x + 1) * 127.5)
    u8 = to_uint8(x)
    with pytest.raises(ValueError, match="must be uint8"):
        evaluate_images(u8.astype(np.float32), None, metrics=("fd",))
    with pytest.raises(ValueError, match="channels come last"):
        evaluate_images(u8.transpose(0, 3, 1, 2).copy(), None, metrics=("fd",))
    with pytest.raises(ValueError, match=r"N = 20 for D = 64.*use N ≥ 640"):
        evaluate_images(u8, None, metrics=("fd",))
    with pytest.raises(ValueError, match="needs the class each image was sampled for"):
        evaluate_images(u8, None, metrics=("acc",))
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_images(u8, None, metrics=("fid",))


def test_missing_or_wrong_inception_weights(tmp_path):
    with pytest.raises(PixdiffError, match="pt_inception-2015-12-05-6726825d.pth"):
        inception_extractor(tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="--inception-weights"):
        inception_extractor(None)
    from importlib import resources

    digits_file = str(resources.files("pixdiff") / "assets" / "digits_features.safetensors")
    with pytest.raises(ValueError, match="does not hold the FID Inception-v3 weights.*" + INCEPTION_URL.split("/")[-1]):
        inception_extractor(digits_file)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read Inception weights"):
        inception_extractor(tmp_path / "junk.pth")
    torch.save({"net": nn.Linear(2, 2)}, tmp_path / "pickled.pth")  # code objects: weights_only refuses
    with pytest.raises(ValueError, match="could not read Inception weights"):
        inception_extractor(tmp_path / "pickled.pth")
    with pytest.raises(PixdiffError, match="train_digits_features.py"):
        digits_extractor(tmp_path / "none.safetensors")


# ---------------------------------------------------------------- reference statistics


def test_reference_stats_round_trip_and_guard(tmp_path, digits_ext, digits_test):
    u8 = to_uint8(digits_test.images)
    ref = compute_reference(from_uint8(u8), digits_ext, "digits16-test", resolution=16)
    p = tmp_path / "ref.safetensors"
    save_reference(p, ref)
    back = load_reference(p, expect=digits_ext)
    assert np.array_equal(back.mu, ref.mu) and np.array_equal(back.sigma, ref.sigma)
    assert back.meta() == ref.meta() and back.count == len(digits_test)
    other = module_extractor(nn.Sequential(nn.Flatten(), nn.Linear(256, 4)), dim=4)
    with pytest.raises(ValueError, match="computed with feature net digits"):
        load_reference(p, expect=other)
    # stats files serve fd/kid/pr, and a cache is written once and reused
    r1 = evaluate_images(u8, None, ref=p, metrics=("fd", "kid"))
    assert r1["metrics"]["fd"]["fd"] == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="'mem' compares samples with the training images"):
        evaluate_images(u8, None, ref=p, metrics=("mem",))
    cache = tmp_path / "cache" / "digits16-train.safetensors"
    a = evaluate_images(u8, None, metrics=("fd",), ref_cache=cache)
    assert cache.is_file() and load_reference(cache).dataset == "digits16-train"
    b = evaluate_images(u8, None, metrics=("fd",), ref_cache=cache)
    assert a["metrics"] == b["metrics"]


# ---------------------------------------------------------------- pixdiff eval


def test_eval_command_end_to_end(tmp_path, digits_test, capsys):
    samples = tmp_path / "samples.npz"
    np.savez(samples, images=to_uint8(digits_test.images), labels=digits_test.labels.numpy())
    out = tmp_path / "scores.json"
    assert main(["eval", "--images", str(samples), "--json", str(out), "--kid-subsets", "20", "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "Fréchet distance" in table and "class accuracy" in table
    r = json.loads(out.read_text())
    m, proto = r["metrics"], r["protocol"]
    assert m["fd"]["fd"] < 10.0  # real held-out digits vs the train split (noise scores ~280)
    assert m["acc"]["accuracy"] >= 0.95
    assert m["pr"]["precision"] > 0.7 and m["pr"]["recall"] > 0.7
    assert m["mem"]["memorized_fraction"] < 0.05
    assert proto["samples"]["count"] == len(digits_test)
    assert proto["reference"]["dataset"] == "digits16-train" and proto["reference"]["count"] == 1437
    assert len(proto["features"]["weights_sha256"]) == 64 and proto["seed"] == 0
    assert proto["kid"]["subsets"] == 20 and proto["pr"]["k"] == 3

    noise = tmp_path / "noise.npz"
    g = torch.Generator().manual_seed(0)
    np.savez(noise, images=to_uint8(torch.rand(400, 1, 16, 16, generator=g) * 2 - 1))
    out2 = tmp_path / "noise.json"
    assert main(["eval", "--images", str(noise), "--metrics", "fd,is", "--json", str(out2), "--device", "cpu"]) == 0
    assert json.loads(out2.read_text())["metrics"]["fd"]["fd"] > 100.0


def test_eval_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", "--images", str(tmp_path / "missing.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not found" in err and err.startswith("pixdiff eval: error:") and len(err.splitlines()) == 1
    assert main(["eval"]) == 2  # --images or --ckpt is required
    err = capsys.readouterr().err.strip()
    assert "--images" in err and "--ckpt" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_digits_feature_weights_are_reproducible_from_the_script():
    """Retrain with the shipped recipe (~1 min on one core): same held-out accuracy bar, and on
    the torch build and thread count recorded in the JSON, the same weights bit for bit."""
    import importlib.util as iu
    from importlib import resources
    from pathlib import Path

    from safetensors.torch import load_file

    script = Path(__file__).resolve().parents[1] / "scripts" / "train_digits_features.py"
    spec = iu.spec_from_file_location("train_digits_features", script)
    mod = iu.module_from_spec(spec)
    spec.loader.exec_module(mod)
    info = json.loads((resources.files("pixdiff") / "assets" / "digits_features.json").read_text())
    torch.set_num_threads(info["threads"])
    torch.use_deterministic_algorithms(True)  # as the script's main() does
    try:
        net, _, acc = mod.train(info["seed"], info["epochs"], info["batch"], info["lr"], verbose=False)
    finally:
        torch.use_deterministic_algorithms(False)
    assert acc >= 0.95
    if info["torch"] == torch.__version__:
        shipped = load_file(str(resources.files("pixdiff") / "assets" / "digits_features.safetensors"))
        for k, v in net.state_dict().items():
            assert torch.equal(v, shipped[k]), k


def test_read_images_from_a_class_folder(tmp_path, digits_test):
    from pixdiff.data import save_png
    from pixdiff.metrics import read_images

    u8 = to_uint8(digits_test.images[:6])
    for i, cls in enumerate([3, 3, 7, 7, 10, 10]):  # folder names are classes, not sorted positions
        save_png(tmp_path / str(cls) / f"{i}.png", u8[i])
    images, labels = read_images(tmp_path, resolution=16, channels=1)
    assert images.shape == (6, 16, 16, 1) and images.dtype == np.uint8
    assert sorted(labels.tolist()) == [3, 3, 7, 7, 10, 10]
