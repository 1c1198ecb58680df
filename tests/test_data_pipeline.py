"""The real-data pipeline: folders, prepared files and npz give the bytes of direct decoding; the
batches of a step do not depend on workers or on where a run resumed; labels are never inferred
silently; prepared files are complete and verifiable; the embedded photos are fixed."""

import hashlib
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from pixdiff import data as data_mod
from pixdiff import datasets
from pixdiff.datasets import (
    FILTER,
    StepBatches,
    StepBatchSampler,
    augment_params,
    global_batch_indices,
    open_images,
    prepare_data,
    read_manifest,
    sample_images,
    verify_prepared,
)
from pixdiff.datasets.photos import SPLIT_COLUMN, crop_boxes, photo_crops
from pixdiff.errors import PixdiffError

R = 8


def _folder(root, classes=("cats", "dogs"), per=5, seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per):
            h, w = rng.integers(10, 30, size=2)
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _direct(path, r=R):
    """The stated filter, spelled out: centre crop to the short side, LANCZOS resize to r×r."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        return np.asarray(im.resize((r, r), Image.LANCZOS) if s != r else im)


def _all(ds):
    return ds.get_many(np.arange(len(ds)))


def test_folder_prepared_and_npz_give_the_bytes_of_direct_decoding(tmp_path):
    root = _folder(tmp_path / "f")
    files = sorted(root.rglob("*.png"), key=lambda p: p.relative_to(root).as_posix())
    expect = np.stack([_direct(f) for f in files])
    folder = open_images(root, R, 3)
    assert np.array_equal(_all(folder), expect)
    out = prepare_data(root, tmp_path / "DATA", R, workers=2, progress=False)
    prepared = open_images(out, R, 3)
    assert np.array_equal(_all(prepared), expect) and isinstance(prepared.array, np.memmap)
    np.savez(tmp_path / "x.npz", images=expect, labels=np.arange(len(expect)) % 3)
    npz = open_images(tmp_path / "x.npz", R, 3)
    assert np.array_equal(_all(npz), expect) and npz.labels.tolist() == (np.arange(len(expect)) % 3).tolist()
    # the in-memory path (pixdiff.data.load) and reference picks give the same images as floats
    assert torch.equal(datasets.load(str(out), R, 3).images, data_mod.from_uint8(expect))
    x, y = sample_images(prepared, 4, seed=1)
    assert y is None and any(torch.equal(x[0], data_mod.from_uint8(expect)[i]) for i in range(len(expect)))


def _batches(ds, steps, **kw):
    sb = StepBatches(ds, seed=3, batch=4, device="cpu", hflip=True, crop_pad=2, **kw)
    try:
        return [sb(s) for s in steps]
    finally:
        sb.close()


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and (ya is None and yb is None or torch.equal(ya, yb))


def test_workers_0_and_2_give_identical_batches(tmp_path):
    ds = open_images(_folder(tmp_path / "f"), R, 3, labels="folders")
    assert_same_batches(_batches(ds, range(6), workers=0), _batches(ds, range(6), workers=2))


def _spec_indices(n: int, seed: int, step: int, batch: int) -> torch.Tensor:
    """The definition the trainer follows: batch s is positions [s·B, (s+1)·B) of the endless
    concatenation of the per-epoch permutations."""
    epochs = (step + 1) * batch // n + 1
    return torch.cat([data_mod.epoch_order(n, seed, e) for e in range(epochs)])[step * batch:(step + 1) * batch]


def test_resume_from_step_s_gives_the_same_batches_and_ranks_split_them(tmp_path):
    ds = open_images(_folder(tmp_path / "f"), R, 3, labels="folders")
    whole = _batches(ds, range(8), workers=0)
    assert_same_batches(whole[5:], _batches(ds, range(5, 8), workers=0))  # a run resumed at step 5
    ranks = [_batches(ds, range(8), workers=0, rank=r, world=2) for r in (0, 1)]
    for s in range(8):  # 2 processes take the two halves of the same global batch
        assert torch.equal(torch.cat([ranks[0][s][0], ranks[1][s][0]]), whole[s][0])
    for s in range(8):  # the sampler yields exactly the trainer's indices (10 images, batch 4: epochs cross)
        assert StepBatchSampler(len(ds), 3, 4, start=s, stop=s + 1).indices(s) == _spec_indices(10, 3, s, 4).tolist()
    assert list(StepBatchSampler(10, 3, 4, start=2, stop=4)) == [global_batch_indices(10, 3, s, 4).tolist() for s in (2, 3)]
    # flips and crops did happen; each image's draws depend on (seed, epoch, index) only
    plain = StepBatches(ds, seed=3, batch=4, device="cpu")
    assert sum(not torch.equal(whole[s][0], plain(s)[0]) for s in range(8)) >= 4
    f, oy, ox = augment_params(3, [0, 1, 0, 1], [7, 7, 2, 2], hflip=True, crop_pad=2)
    for k, (e, i) in enumerate([(0, 7), (1, 7), (0, 2), (1, 2)]):
        assert [a[0] for a in augment_params(3, [e], [i], hflip=True, crop_pad=2)] == [f[k], oy[k], ox[k]]


def test_in_memory_batches_are_the_trainers_gather():
    ds = data_mod.load_digits(8)
    sb = StepBatches(ds, seed=0, batch=8, device="cpu")
    for s in (0, 1, 200):
        i = _spec_indices(len(ds), 0, s, 8)
        x, y = sb(s)
        assert torch.equal(x, ds.images[i]) and torch.equal(y, ds.labels[i])


def test_labels_default_to_none_and_numeric_shards_warn(tmp_path):
    root = _folder(tmp_path / "ffhq", classes=("00000", "01000"), per=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = open_images(root, R, 3)  # the default: unconditional, every image recursively
    assert ds.labels is None and len(ds) == 6 and "labels: none" in ds.summary()
    with pytest.warns(UserWarning, match="numeric names .* FFHQ"):
        ds = open_images(root, R, 3, labels="folders")
    assert ds.class_names == ["00000", "01000"] and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    named = open_images(_folder(tmp_path / "pets"), R, 3)
    assert named.labels is None and "labels=folders" in named.summary()  # says how to get classes


def test_root_images_of_a_class_tree_are_refused(tmp_path):
    root = _folder(tmp_path / "f")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "stray.png")
    with pytest.raises(PixdiffError, match="1 image.* sit directly in .*stray.png"):
        open_images(root, R, 3, labels="folders")
    assert len(open_images(root, R, 3)) == 11  # labels=none takes them all


def test_empty_class_folder_is_warned_and_not_a_class(tmp_path):
    root = _folder(tmp_path / "f")
    (root / "empty" / "sub").mkdir(parents=True)
    with pytest.warns(UserWarning, match="hold no images and are not classes: empty"):
        ds = open_images(root, R, 3, labels="folders")
    assert ds.class_names == ["cats", "dogs"] and ds.num_classes == 2


def test_labels_from_a_json_file(tmp_path):
    root = _folder(tmp_path / "f", per=2)
    rel = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    (tmp_path / "l.json").write_text(json.dumps({"labels": [[r, i % 3] for i, r in enumerate(rel)]}))
    ds = open_images(root, R, 3, labels=str(tmp_path / "l.json"))
    assert ds.labels.tolist() == [0, 1, 2, 0] and ds.class_names == ["0", "1", "2"]
    (tmp_path / "short.json").write_text(json.dumps({rel[0]: "a"}))
    with pytest.raises(PixdiffError, match="no label to 3 image"):
        open_images(root, R, 3, labels=str(tmp_path / "short.json"))


def test_16_bit_and_rgba_are_converted_and_reported(tmp_path):
    a16 = (np.arange(64).reshape(8, 8) * 1040).astype(np.uint16)
    Image.fromarray(a16).save(tmp_path / "deep.png")
    rgba = np.random.default_rng(0).integers(0, 255, (8, 8, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    ds = open_images(tmp_path, R, 3)
    imgs = _all(ds)  # sorted: alpha.png, deep.png
    assert np.array_equal(imgs[0], rgba[:, :, :3])
    gray = np.rint(a16 / 65535 * 255).astype(np.uint8)
    assert np.array_equal(imgs[1], np.repeat(gray[:, :, None], 3, 2))  # scaled, not clipped to white
    s = ds.summary()
    assert "RGBA→RGB (alpha dropped) ×1" in s and "16/32-bit scaled to 8-bit" in s
    out = prepare_data(tmp_path, tmp_path.parent / "P16", R, workers=0, progress=False)
    assert len(read_manifest(out)["converted"]) == 2


def test_manifest_fields_sha256_and_atomic_output(tmp_path, monkeypatch):
    root = _folder(tmp_path / "f")
    out = prepare_data(root, tmp_path / "DATA", R, labels="folders", workers=0, progress=False)
    m = read_manifest(out)
    assert sorted(os.listdir(out)) == ["images.npy", "manifest.json"]
    assert (m["count"], m["resolution"], m["channels"], m["class_names"]) == (10, R, 3, ["cats", "dogs"])
    assert m["labels"] == [0] * 5 + [1] * 5 and m["class_counts"] == {"cats": 5, "dogs": 5}
    assert m["filter"] == FILTER and m["skipped"] == [] and m["files"][0] == "cats/0.png"
    assert m["sha256"] == hashlib.sha256((out / "images.npy").read_bytes()).hexdigest()
    assert verify_prepared(out)["count"] == 10
    with pytest.raises(PixdiffError, match="already exists"):
        prepare_data(root, out, R, progress=False)
    raw = bytearray((out / "images.npy").read_bytes())
    raw[-1] ^= 0xFF
    (out / "images.npy").write_bytes(bytes(raw))
    with pytest.raises(PixdiffError, match="sha256 does not match"):
        verify_prepared(out)
    with pytest.raises(PixdiffError, match="--resolution 8 --channels 3"):
        open_images(out, 16, 3)
    # a prepare that dies half-way leaves neither DATA2 nor its partial folder
    import pixdiff.datasets.prepare as prep

    monkeypatch.setattr(prep, "_sha256", lambda p: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        prepare_data(root, tmp_path / "DATA2", R, workers=0, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DATA", "f"]


def test_corrupt_file_is_skipped_and_named(tmp_path):
    root = _folder(tmp_path / "f")
    (root / "dogs" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    with pytest.warns(UserWarning, match="skipped 1 unreadable.*2.png"):
        out = prepare_data(root, tmp_path / "DATA", R, labels="folders", workers=2, progress=False)
    m = read_manifest(out)
    assert m["count"] == 9 and [s["file"] for s in m["skipped"]] == ["dogs/2.png"]
    assert m["labels"] == [0] * 5 + [1] * 4 and np.load(out / "images.npy").shape == (9, R, R, 3)
    assert m["sha256"] == hashlib.sha256((out / "images.npy").read_bytes()).hexdigest()
    with pytest.warns(UserWarning, match="2.png"):
        ds = open_images(root, R, 3)
    assert len(ds) == 9 and "dogs/2.png" in ds.summary()


def test_tiny_dataset_warns_how_often_images_repeat(tmp_path):
    ds = open_images(_folder(tmp_path / "f", classes=("a",), per=3), R, 3)
    with pytest.warns(UserWarning, match=r"3 image\(s\) with batch 64: each image repeats ~21×"):
        x, _ = StepBatches(ds, seed=0, batch=64, device="cpu")(0)
    assert x.shape == (64, 3, R, R)


def test_photos_are_deterministic_with_a_spatial_held_out_split():
    a, y, names = photo_crops(32, "train")
    t, ty, _ = photo_crops(32, "test")
    assert a.shape == (3200, 32, 32, 3) and t.shape == (800, 32, 32, 3) and a.dtype == np.uint8
    assert names == ["china", "flower"] and np.bincount(y).tolist() == [1600, 1600] and np.bincount(ty).tolist() == [400, 400]
    again, _, _ = photo_crops.__wrapped__(32, "test")  # recomputed, not the cache
    assert np.array_equal(again, t)
    for p in (0, 1):  # test crops lie wholly right of the split column, train crops wholly left of it
        tr, te = crop_boxes(p, "train", 427, 640), crop_boxes(p, "test", 427, 640)
        assert (tr[:, 1] + tr[:, 2] <= SPLIT_COLUMN).all() and (te[:, 1] >= SPLIT_COLUMN).all()
        assert (te[:, 0] + te[:, 2] <= 427).all() and (te[:, 1] + te[:, 2] <= 640).all()
    ds = datasets.load("photos", 32)
    assert ds.shape == (3, 32, 32) and ds.num_classes == 2 and len(ds) == 3200
    assert photo_crops(64, "test")[0].shape == (800, 64, 64, 3)


def test_hf_folder_needs_the_extra_or_reads(tmp_path):
    try:
        import datasets
    except ImportError:
        (tmp_path / "hf").mkdir()
        for f in ("state.json", "dataset_info.json"):
            (tmp_path / "hf" / f).write_text("{}")
        with pytest.raises(PixdiffError, match=r"pip install pixdiff\[hf\]"):
            open_images(tmp_path / "hf", R, 3)
        return
    imgs = [Image.fromarray(np.full((12, 10, 3), i * 20, np.uint8)) for i in range(4)]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    datasets.Dataset.from_dict({"image": imgs, "label": [0, 1, 0, 1]}, features=feats).save_to_disk(tmp_path / "hf")
    ds = open_images(tmp_path / "hf", R, 3)
    assert len(ds) == 4 and ds.class_names == ["a", "b"] and _all(ds)[3].max() == 60


@pytest.mark.slow
def test_training_reads_a_large_folder_without_decoding_it_into_memory(tmp_path):
    """Anonymous RSS (heap) while reading 5500 images of a 64×64 folder through the loader (after a
    5-step warm-up) grows by far less than the decoded images take: 68 MB as uint8, 270 MB as the
    float32 tensor the old in-memory path held (measured growth: 0–26 MB, allocator noise)."""
    root = tmp_path / "big"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6000):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / f"{i:05d}.png", compress_level=0)
    code = f"""
import re
from pixdiff.datasets import open_images, StepBatches
def anon():
    return int(re.search(r"RssAnon:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024
ds = open_images({str(root)!r}, 64, 3)
sb = StepBatches(ds, seed=0, batch=100, device="cpu", workers=0)
for s in range(5):
    sb(s)
base = anon()
for s in range(5, 60):
    sb(s)
print(base, anon())
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    base, end = map(int, r.stdout.split())
    assert end - base < 40, (base, end)


def test_training_on_a_prepared_file_resumes_bit_exactly_with_any_worker_count(tmp_path):
    """4 steps straight (2 loader workers, flips and crops) equal 2 steps + resume + 2 steps with
    the loader in the training process: the batches of a step depend on nothing else."""
    from pixdiff import checkpoint as ckpt_io
    from pixdiff.config import TrainConfig
    from pixdiff.train import train

    data = prepare_data(_folder(tmp_path / "f"), tmp_path / "DATA", R, labels="folders", workers=0, progress=False)

    def cfg(images, workers):
        c = TrainConfig()
        c.model.overrides = {"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [4],
                             "head_channels": 8, "norm_groups": 4}
        c.data.name, c.data.resolution, c.data.channels = str(data), R, 3
        c.data.hflip, c.data.crop_pad, c.data.workers = True, 1, workers
        c.optim.batch, c.optim.warmup_images, c.optim.decay_images = 4, 0, 16
        c.run.images, c.run.ckpt_every_images, c.run.log_every_images = images, 8, 4
        return c

    train(cfg(16, 2), tmp_path / "straight", progress=False)
    train(cfg(8, 0), tmp_path / "resumed", progress=False)
    train(cfg(16, 0), tmp_path / "resumed", resume=True, progress=False)
    a, b = ckpt_io.load(tmp_path / "straight"), ckpt_io.load(tmp_path / "resumed")
    assert a.state["images"] == b.state["images"] == 16 and a.state["meta"]["num_classes"] == 2
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k
