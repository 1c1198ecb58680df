"""Score a set of images against a reference under a recorded protocol.

`evaluate_images` is the one entry point behind `pixdiff eval` (both its ``--images`` and its
``--ckpt`` mode): uint8 images [N, H, W, C] (the npz format of `pixdiff sample`) in, a dict of
numbers out, each with the protocol that produced it (N, reference, feature network and its
weights sha256, seeds, subset sizes), because a FID without its protocol cannot be compared.
"""

from __future__ import annotations

from pixdiff.errors import PixdiffError

from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pixdiff.data import from_uint8, load_digits, load_image_folder

from .classify import class_accuracy, inception_score
from .features import FeatureExtractor, get_extractor
from .frechet import check_fd_samples, feature_statistics, frechet_distance
from .kid import kernel_distance
from .memorization import memorization
from .prdc import precision_recall
from .reference import ReferenceStats, compute_reference, load_reference, save_reference

__all__ = ["evaluate_images", "resolve_reference", "read_images", "METRICS"]

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
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z:
                raise PixdiffError(f"{path} has no 'images' array (found {', '.join(z.files) or 'nothing'}); "
                                 "expected the npz of `pixdiff sample`: images uint8 [N, H, W, C], optional labels")
            return z["images"], (z["labels"] if "labels" in z else None)
    except (OSError, EOFError) as e:
        raise PixdiffError(f"could not read {path} as an npz ({e})") from e


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


def resolve_reference(ref: str | Path, extractor: FeatureExtractor, shape: tuple[int, int, int],
                      split: str = "train", cache: str | Path | None = None) -> tuple[ReferenceStats, torch.Tensor | None]:
    """``digits`` (the embedded digits ``split`` at the samples' resolution), an images npz or
    folder, or a reference-statistics .safetensors → (stats, reference images or None)."""
    c, h, w = shape
    images, name = None, str(ref)
    if str(ref) == "digits":
        if c != 1 or h != w or h not in (8, 16, 32):
            raise PixdiffError(f"the digits reference is 1×8×8, 1×16×16 or 1×32×32; the samples are {c}×{h}×{w}")
        images, name = load_digits(h, split).images, f"digits{h}-{split}"
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
        labels = torch.as_tensor(np.asarray(labels)).long().reshape(-1)
        if labels.shape[0] != x.shape[0]:
            raise PixdiffError(f"got {labels.shape[0]} labels for {x.shape[0]} images")
    if "acc" in metrics and labels is None:
        raise PixdiffError("metric 'acc' needs the class each image was sampled for (an npz 'labels' array); "
                         "drop 'acc' for unconditional samples")
    ext = features if isinstance(features, FeatureExtractor) else get_extractor(features, inception_weights, device)
    if ("acc" in metrics or "is" in metrics) and ext.num_classes == 0:
        raise PixdiffError(f"metrics 'is' and 'acc' need a feature network with a classifier head; {ext.name} has none")
    if "acc" in metrics and ext.name != "digits":
        raise PixdiffError(f"'acc' compares labels with the {ext.name} classifier's classes; it is defined for --features digits")
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
