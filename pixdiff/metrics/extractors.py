"""The feature-network registry: a name → a ``FeatureExtractor``.

It sits above the two feature modules (``features``: the interface and the digits net;
``inception``: the FID Inception-v3, built on that interface), so the imports run one way,
features ← inception ← extractors, with no cycle and no import hidden inside a function.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from pixdiff.errors import PixdiffError

from .features import FeatureExtractor, digits_extractor
from .inception import inception_extractor

__all__ = ["FEATURES", "get_extractor"]

_REGISTRY: dict[str, Callable[[str | Path | None, str | torch.device], FeatureExtractor]] = {
    "digits": lambda weights, device: digits_extractor(device=device),
    "inception": lambda weights, device: inception_extractor(weights, device=device),
}
FEATURES = tuple(_REGISTRY)


def get_extractor(name: str, inception_weights: str | Path | None = None,
                  device: str | torch.device = "cpu") -> FeatureExtractor:
    """Registry: ``digits`` | ``inception`` (the latter needs ``inception_weights``)."""
    if name not in _REGISTRY:
        raise PixdiffError(f"unknown feature network {name!r}; choose from {', '.join(FEATURES)}")
    return _REGISTRY[name](inception_weights, device)
