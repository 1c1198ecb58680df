"""The feature-network registry: a name → a ``FeatureExtractor``.

It sits above the feature modules (``features``: the interface and the digits net;
``inception``: the FID Inception-v3; ``photos_features``: the photos net — the last two built on
that interface), so the imports run one way, features ← inception, photos_features ← extractors,
with no cycle and no import hidden inside a function.

``CLASS_NAMES`` says which registered networks classify into a dataset's own labels (the
classes `acc` compares sample labels with): digits 0..9, photos 0 = china, 1 = flower.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from pixdiff.datasets.photos import PHOTO_NAMES
from pixdiff.errors import PixdiffError

from .features import FeatureExtractor, digits_extractor
from .inception import inception_extractor
from .photos_features import photos_extractor

__all__ = ["CLASS_NAMES", "FEATURES", "get_extractor"]

_REGISTRY: dict[str, Callable[[str | Path | None, str | torch.device], FeatureExtractor]] = {
    "digits": lambda weights, device: digits_extractor(device=device),
    "inception": lambda weights, device: inception_extractor(weights, device=device),
    "photos": lambda weights, device: photos_extractor(device=device),
}
FEATURES = tuple(_REGISTRY)
# the label each class index means, for the networks whose classes are a dataset's own labels
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "digits": tuple(str(d) for d in range(10)),
    "photos": tuple(PHOTO_NAMES),  # the source photo: china, flower
}


def get_extractor(name: str, inception_weights: str | Path | None = None,
                  device: str | torch.device = "cpu") -> FeatureExtractor:
    """Registry: ``digits`` | ``inception`` (needs ``inception_weights``) | ``photos``."""
    if name not in _REGISTRY:
        raise PixdiffError(f"unknown feature network {name!r}; choose from {', '.join(FEATURES)}")
    return _REGISTRY[name](inception_weights, device)
