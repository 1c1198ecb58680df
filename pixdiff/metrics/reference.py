"""Reference statistics: the real side of every distribution metric, computed once and cached.

A `ReferenceStats` holds μ, Σ (float64, for the Fréchet distance) and the raw features (float32,
for KID and precision/recall, which need samples, not moments), plus the facts that decide
whether a cached file may be reused: dataset name, count, feature network and its weights
sha256, and the sha256 of the features. It is one safetensors file whose metadata carries that
JSON; written through a temporary file and renamed, so a crash never leaves half a cache.
`load_reference(path, expect=...)` refuses a file made by another feature network.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pixdiff.errors import PixdiffError

from .features import FeatureExtractor
from .frechet import feature_statistics

__all__ = ["ReferenceStats", "compute_reference", "save_reference", "load_reference"]

_FORMAT = "pixdiff-reference-stats/1"


@dataclass
class ReferenceStats:
    mu: np.ndarray  # [D] float64
    sigma: np.ndarray  # [D, D] float64
    features: torch.Tensor  # [N, D] float32
    dataset: str
    count: int
    feature_net: str
    weights_sha256: str
    features_sha256: str = ""
    extra: dict = field(default_factory=dict)  # e.g. resolution, split

    def __post_init__(self):
        if not self.features_sha256:
            self.features_sha256 = _sha(self.features)

    def meta(self) -> dict:
        return {"format": _FORMAT, "dataset": self.dataset, "count": self.count, "feature_net": self.feature_net,
                "weights_sha256": self.weights_sha256, "features_sha256": self.features_sha256,
                "dim": int(self.mu.shape[0]), **self.extra}


def _sha(features: torch.Tensor) -> str:
    return hashlib.sha256(features.float().contiguous().numpy().tobytes()).hexdigest()


def compute_reference(images: torch.Tensor, extractor: FeatureExtractor, dataset: str, **extra) -> ReferenceStats:
    """Features and their Gaussian fit for reference images [N, C, H, W] in [-1, 1]."""
    f = extractor(images).features
    mu, sigma = feature_statistics(f)
    return ReferenceStats(mu, sigma, f.float(), dataset, f.shape[0], extractor.name, extractor.weights_sha256, extra=extra)


def save_reference(path: str | Path, ref: ReferenceStats) -> None:
    from safetensors.torch import save_file

    from pixdiff.atomic import atomic_write

    tensors = {"mu": torch.from_numpy(ref.mu), "sigma": torch.from_numpy(ref.sigma), "features": ref.features.contiguous()}
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata={"pixdiff": json.dumps(ref.meta(), sort_keys=True)}))


def load_reference(path: str | Path, expect: FeatureExtractor | None = None) -> ReferenceStats:
    """Read a reference-statistics file; with ``expect``, insist it was made by that feature net."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise PixdiffError(f"reference statistics {path} not found")
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("pixdiff", "{}"))
            t = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - any decode failure means "not a stats file"
        raise PixdiffError(f"{path} is not a pixdiff reference-statistics file ({type(e).__name__}: {e})") from e
    if meta.get("format") != _FORMAT or set(t) != {"mu", "sigma", "features"}:
        raise PixdiffError(f"{path} is not a pixdiff reference-statistics file (format {meta.get('format')!r})")
    if expect is not None and (meta["feature_net"], meta["weights_sha256"]) != (expect.name, expect.weights_sha256):
        raise PixdiffError(f"{path} was computed with feature net {meta['feature_net']} (weights {meta['weights_sha256'][:12]}…), "
                         f"not {expect.name} ({expect.weights_sha256[:12]}…); recompute it with the same features")
    known = {"format", "dataset", "count", "feature_net", "weights_sha256", "features_sha256", "dim"}
    ref = ReferenceStats(t["mu"].double().numpy(), t["sigma"].double().numpy(), t["features"].float(), meta["dataset"],
                         int(meta["count"]), meta["feature_net"], meta["weights_sha256"], meta["features_sha256"],
                         extra={k: v for k, v in meta.items() if k not in known})
    if _sha(ref.features) != ref.features_sha256:
        raise PixdiffError(f"{path}: its features do not match their recorded sha256 (corrupt file); delete it to recompute")
    return ref
