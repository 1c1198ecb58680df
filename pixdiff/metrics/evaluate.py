"""Score a set of images against a reference under a recorded protocol.

`evaluate_images` is the one entry point behind `pixdiff eval` (both its ``--images`` and its
``--ckpt`` mode): uint8 images [N, H, W, C] (the npz format of `pixdiff sample`) in, a dict of
numbers out, each with the protocol that produced it (N, reference, feature network and its
weights sha256, seeds, subset sizes), because a FID without its protocol cannot be compared.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from pixdiff.data import from_uint8, load_digits
from pixdiff.datasets import load_image_folder
from pixdiff.datasets.photos import photo_crops
from pixdiff.errors import PixdiffError

from .classify import class_accuracy, inception_score
from .extractors import CLASS_NAMES, get_extractor
from .features import FeatureExtractor
from .frechet import check_fd_samples, feature_statistics, frechet_distance
from .kid import kernel_distance
from .memorization import memorization
from .prdc import precision_recall
from .reference import ReferenceStats, compute_reference, load_reference, save_reference

__all__ = ["evaluate_images", "resolve_reference", "read_images", "read_samples", "reference_shape", "stored_shapes",
           "METRICS"]

METRICS = ("fd", "kid", "pr", "is", "acc", "mem")


def read_images(path: str | Path, resolution: int = 16, channels: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 images [N, H, W, C] and labels (or None) from an npz (``images``, optional ``labels``)
    or an image folder (class = sub-folder; resized to ``resolution``)."""
    path = Path(path)
    if not path.exists():
        raise PixdiffError(f"images {path} not found")
    if path.is_dir():
        ds = load_image_folder(path, resolution, channels)
        a = ((ds.images + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        y = None
        if ds.labels is not None:  # folders named 0..9 mean those classes, not their sorted position
            names = ds.class_names
            lut = [int(n) for n in names] if all(n.isdigit() for n in names) else list(range(len(names)))
            y = np.asarray(lut)[ds.labels.numpy()]
        return a, y
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise PixdiffError(f"{path} is a single .npy array, not an npz archive; expected the npz of "
                               "`pixdiff sample`: images uint8 [N, H, W, C], optional labels")
        with z:
            if "images" not in z:
                raise PixdiffError(f"{path} has no 'images' array (found {', '.join(z.files) or 'nothing'}); "
                                 "expected the npz of `pixdiff sample`: images uint8 [N, H, W, C], optional labels")
            return z["images"], (z["labels"] if "labels" in z else None)
    except ValueError as e:  # numpy's "pickled (object) data": a text file, or arrays of Python objects
        if isinstance(e, PixdiffError):
            raise
        raise PixdiffError(f"could not read {path} as an npz of plain arrays: it is not a numpy .npz archive, or "
                           "holds Python objects (pixdiff never unpickles files)") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise PixdiffError(f"could not read {path} as an npz ({e})") from None


_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def stored_shapes(path: str | Path) -> list[tuple[int, int, int]]:
    """The distinct (C, H, W) of the images at ``path`` as stored: an npz's ``images`` array, or
    every image of a folder (headers only; C = 1 for grayscale modes, else 3); [] if none."""
    from PIL import Image

    from pixdiff.data import IMAGE_SUFFIXES

    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        try:
            z = np.load(path, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):  # one .npy array: read_images says so
                return []
            with z:
                a = z["images"] if "images" in z else None
        except (OSError, EOFError, ValueError, zipfile.BadZipFile):
            return []
        return [] if a is None or a.ndim != 4 else [(int(a.shape[3]), int(a.shape[1]), int(a.shape[2]))]
    if not path.is_dir():
        return []
    files = [f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
             and not any(part.startswith(".") for part in f.relative_to(path).parts)]
    shapes = {}
    for f in sorted(files):
        try:
            with Image.open(f) as im:
                shapes[(1 if im.mode in _GRAY_MODES else 3, im.height, im.width)] = None
        except Exception:  # noqa: BLE001 - unreadable: load_image_folder skips it with a warning
            continue
    return list(shapes)


def _describe(shapes: list[tuple[int, int, int]]) -> str:
    def one(s):
        return f"{s[2]}×{s[1]} {'grayscale' if s[0] == 1 else 'RGB'}"

    return one(shapes[0]) if len(shapes) == 1 else f"{len(shapes)} sizes (e.g. {one(shapes[0])}, {one(shapes[1])})"


def reference_shape(ref: str | Path, prefer: int | None = None) -> tuple[int, int, str] | None:
    """(channels, resolution, why) that images compared with ``ref`` must have: the digits are
    grayscale at 8, 16 or 32 px (``prefer`` if it is one of these, else 16); an npz or folder
    reference has its own size; a statistics file records the size it was computed at. None
    when that cannot be told."""
    if str(ref) == "digits":
        r = prefer if prefer in (8, 16, 32) else 16
        return 1, r, f"the digits reference is grayscale {r}×{r}"
    if str(ref) == "photos":
        r = prefer if prefer is not None and 8 <= prefer <= 64 else 32
        return 3, r, f"the photos reference is RGB {r}×{r}"
    path = Path(ref)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = json.loads((f.metadata() or {}).get("pixdiff", "{}"))
        except Exception:  # noqa: BLE001 - load_reference gives the clear error later
            return None
        if "channels" in meta and "resolution" in meta:
            c, r = int(meta["channels"]), int(meta["resolution"])
            return c, r, f"the reference statistics {path.name} were computed on {c}×{r}×{r} images"
        return None
    shapes = stored_shapes(path)
    if len(shapes) == 1 and shapes[0][1] == shapes[0][2]:
        c, r, _ = shapes[0]
        return c, r, f"the reference {path.name} holds {_describe(shapes)} images"
    return None


def read_samples(path: str | Path, ref: str | Path = "digits", resolution: int | None = None,
                 channels: int | None = None) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """``read_images`` at the size the comparison with ``ref`` needs, and the conversion made (one
    sentence) or None. An npz is scored as stored. A folder is read at ``resolution`` /
    ``channels`` where given, else at the reference's size and channels (``reference_shape``),
    else at its own (when all its images share one square size)."""
    path = Path(path)
    if not path.exists():
        raise PixdiffError(f"images {path} not found")
    stored = stored_shapes(path)
    if path.is_file():
        a, y = read_images(path)
        if a.ndim == 4 and (resolution not in (None, a.shape[1]) or channels not in (None, a.shape[3])):
            raise PixdiffError(f"{path} holds {_describe([(a.shape[3], a.shape[1], a.shape[2])])} images and is "
                               "scored as stored; resolution / channels apply to image folders")
        return a, y, None
    own = stored[0] if len(stored) == 1 and stored[0][1] == stored[0][2] else None
    target = reference_shape(ref, prefer=own[1] if own else None)
    if target is None and own is not None:
        target = (own[0], own[1], "")  # the folder's own size: no conversion
    why = []
    if resolution is not None or channels is not None:
        why.append("as " + " and ".join(f for f, v in (("--resolution", resolution), ("--channels", channels))
                                         if v is not None) + " ask")
    if resolution is None or channels is None:
        if target is None:
            raise PixdiffError(f"the images in {path} differ in size ({_describe(stored)}) and the reference "
                               f"{ref} does not fix one; give --resolution and --channels")
        if target[2]:
            why.append(target[2])
    c = channels if channels is not None else target[0]
    r = resolution if resolution is not None else target[1]
    a, y = read_images(path, r, c)
    if stored == [(c, r, r)]:
        return a, y, None
    was = _describe(stored) if stored else "its"
    return a, y, f"read {path}: {was} images converted to {_describe([(c, r, r)])} ({'; '.join(why)})"


def _check_uint8(images, who: str) -> torch.Tensor:
    a = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if a.dtype != np.uint8:
        raise PixdiffError(f"{who} must be uint8 [N, H, W, C] in 0..255 (got dtype {a.dtype}); "
                         "convert float images in [-1, 1] with pixdiff.data.to_uint8")
    if a.ndim != 4 or a.shape[-1] not in (1, 3):
        raise PixdiffError(f"{who} must be [N, H, W, C] with C = 1 or 3 (got shape {a.shape}); note channels come last")
    if a.shape[0] == 0:
        raise PixdiffError(f"{who}: no images")
    return from_uint8(np.ascontiguousarray(a))


def _integer_labels(labels) -> torch.Tensor:
    """Class labels as int64 [N]: integers, or floats that are whole numbers; anything else (e.g.
    class names as strings) is refused in one line."""
    a = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise PixdiffError(f"labels must be integer class indices (got dtype {a.dtype}, e.g. "
                           f"{a.reshape(-1)[:3].tolist()}); map class names to 0..K-1 first")
    if np.issubdtype(a.dtype, np.floating):
        if not (np.isfinite(a).all() and (a == np.round(a)).all()):
            raise PixdiffError("labels must be integer class indices (got non-integer floats)")
    return torch.as_tensor(a.astype(np.int64)).reshape(-1)


def resolve_reference(ref: str | Path, extractor: FeatureExtractor, shape: tuple[int, int, int],
                      split: str = "train", cache: str | Path | None = None) -> tuple[ReferenceStats, torch.Tensor | None]:
    """``digits`` or ``photos`` (the embedded data's ``split`` at the samples' shape), an images npz or
    folder, or a reference-statistics .safetensors → (stats, reference images or None)."""
    c, h, w = shape
    images, name = None, str(ref)
    if str(ref) == "digits":
        if c != 1 or h != w or h not in (8, 16, 32):
            raise PixdiffError(f"the digits reference is 1×8×8, 1×16×16 or 1×32×32; the samples are {c}×{h}×{w}")
        images, name = load_digits(h, split).images, f"digits{h}-{split}"
    elif str(ref) == "photos":
        if c not in (1, 3) or h != w or not 8 <= h <= 64:
            raise PixdiffError(f"the photos reference is 3×R×R (or 1×R×R) with R in 8..64; the samples are {c}×{h}×{w}")
        images, name = from_uint8(np.array(photo_crops(h, split, c)[0])), f"photos{h}-{split}"
    elif Path(ref).suffix == ".safetensors":
        return load_reference(ref, expect=extractor), None
    else:
        a, _ = read_images(ref, resolution=h, channels=c)
        images = _check_uint8(a, f"reference {ref}")
        name = f"{Path(ref).name}"
    if cache is not None and Path(cache).is_file():
        stats = load_reference(cache, expect=extractor)
        if stats.dataset == name and stats.count == images.shape[0]:
            return stats, images
    stats = compute_reference(images, extractor, name, resolution=h, channels=c)
    if cache is not None:
        save_reference(cache, stats)
    return stats, images


def evaluate_images(images_uint8_nhwc, labels=None, ref: str | Path = "digits", metrics: Sequence[str] = METRICS,
                    features: str | FeatureExtractor = "digits", seed: int = 0,
                    inception_weights: str | Path | None = None, *, ref_split: str = "train",
                    ref_cache: str | Path | None = None, kid_subsets: int = 100, kid_subset_size: int = 1000,
                    pr_k: int = 3, is_splits: int = 10, device: str | torch.device = "cpu") -> dict:
    """Score uint8 images [N, H, W, C] (+ the labels they were sampled for) against ``ref``.

    Returns ``{"metrics": {name: {...}}, "protocol": {...}}``; ``metrics`` ⊆ fd, kid, pr, is, acc, mem."""
    metrics = tuple(dict.fromkeys(metrics))
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise PixdiffError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    x = _check_uint8(images_uint8_nhwc, "images")  # [N, C, H, W] in [-1, 1]
    if labels is not None:
        labels = _integer_labels(labels)
        if labels.shape[0] != x.shape[0]:
            raise PixdiffError(f"got {labels.shape[0]} labels for {x.shape[0]} images")
    if "acc" in metrics and labels is None:
        raise PixdiffError("metric 'acc' needs the class each image was sampled for (an npz 'labels' array); "
                         "drop 'acc' for unconditional samples")
    ext = features if isinstance(features, FeatureExtractor) else get_extractor(features, inception_weights, device)
    if ("acc" in metrics or "is" in metrics) and ext.num_classes == 0:
        raise PixdiffError(f"metrics 'is' and 'acc' need a feature network with a classifier head; {ext.name} has none")
    if "acc" in metrics:  # the classifier's classes must be the labels' own: a dataset's labels, all of them
        names = CLASS_NAMES.get(ext.name)
        if names is None or ext.num_classes != len(names):
            raise PixdiffError(f"'acc' compares labels with the {ext.name} classifier's classes; it is defined for "
                               f"--features {' or '.join(CLASS_NAMES)} (whose classes are that dataset's labels)")
        if labels.min() < 0 or labels.max() >= len(names):
            raise PixdiffError(f"'acc' with --features {ext.name} reads labels as its {len(names)} classes "
                               f"(0..{len(names) - 1}: {', '.join(names)}); got labels "
                               f"{labels.min().item()}..{labels.max().item()}")
    if "fd" in metrics:  # fail before any work, with the N to use
        check_fd_samples(x.shape[0], ext.dim, f"Fréchet distance with {ext.name} features")
    if "mem" in metrics and Path(str(ref)).suffix == ".safetensors":
        raise PixdiffError("metric 'mem' compares samples with the training images themselves; pass --ref digits, "
                         "an images npz or a folder, not a statistics file")
    needs_ref = {"fd", "kid", "pr", "mem"} & set(metrics)
    stats, ref_images = resolve_reference(ref, ext, tuple(x.shape[1:]), ref_split, ref_cache) if needs_ref else (None, None)
    out = ext(x) if set(metrics) - {"mem"} else None
    res: dict = {}
    proto: dict = {"pixdiff": _version(), "torch": torch.__version__, "seed": seed,
                   "samples": {"count": x.shape[0], "shape_chw": list(x.shape[1:])},
                   "features": ext.protocol(), "reference": stats.meta() if stats else None}
    if "fd" in metrics:
        res["fd"] = {"fd": frechet_distance(*feature_statistics(out.features), stats.mu, stats.sigma)}
        proto["fd"] = {"n_samples": x.shape[0], "n_reference": stats.count, "float": "float64", "cov_ddof": 1}
    if "kid" in metrics:
        k = kernel_distance(stats.features, out.features, torch.Generator().manual_seed(seed), kid_subsets, kid_subset_size)
        res["kid"] = {"mean": k.mean, "std": k.std}
        proto["kid"] = {"subsets": k.num_subsets, "subset_size": k.subset_size, "kernel": "(x.y/d + 1)^3", "seed": seed}
    if "pr" in metrics:
        pr = precision_recall(stats.features, out.features, k=pr_k)
        res["pr"] = {"precision": pr.precision, "recall": pr.recall, "density": pr.density, "coverage": pr.coverage}
        proto["pr"] = {"k": pr_k, "n_samples": x.shape[0], "n_reference": stats.count, "distance": "euclidean in feature space"}
    if "is" in metrics:
        s = inception_score(out.probs, min(is_splits, x.shape[0]))
        res["is"] = {"mean": s.mean, "std": s.std}
        proto["is"] = {"splits": s.splits, "classes": ext.num_classes}
    if "acc" in metrics:
        a = class_accuracy(out.probs, labels)
        res["acc"] = asdict(a)
        proto["acc"] = {"classifier": ext.name, "rule": "argmax p(y|x) == requested label"}
    if "mem" in metrics:
        m = memorization(x, ref_images)
        res["mem"] = m.summary()
        proto["mem"] = {"space": "pixels in [-1, 1]", "train": stats.dataset, "threshold": m.threshold,
                        "ratio": "nearest / second-nearest training image distance"}
    return {"metrics": res, "protocol": proto}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pixdiff")
    except Exception:  # noqa: BLE001 - not installed as a distribution (e.g. a source tree)
        return "unknown"
