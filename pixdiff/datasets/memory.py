"""Any data source decoded into memory as an ``ImageDataset``: for evaluation, likelihoods and
small data (training streams instead, ``pixdiff.datasets.StepBatches``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pixdiff.data import TOYS, ImageDataset, from_uint8, load_digits, load_toy

__all__ = ["load", "load_photos", "load_image_folder"]


def load_photos(resolution: int = 32, split: str = "train", channels: int = 3) -> ImageDataset:
    """The embedded photo crops (``split`` = train | test | all; see ``pixdiff.datasets.photos``)."""
    from .photos import photo_crops

    a, y, names = photo_crops(resolution, split, channels)
    return ImageDataset(from_uint8(np.array(a)), torch.from_numpy(np.array(y)), names, f"photos{resolution}-{split}")


def load_image_folder(root: str | Path, resolution: int, channels: int = 3, labels: str = "auto") -> ImageDataset:
    """All images under ``root``, decoded into memory (``pixdiff.datasets.FILTER``). ``labels``:
    ``none`` | ``folders`` | a JSON file (``pixdiff.datasets.folder``), or ``auto`` — the convention of
    metric readers of sample folders: class = sub-folder when the root holds only sub-folders, else
    unconditional (images at the root of a class tree are refused, never dropped)."""
    from .sources import FolderImages

    return FolderImages(root, resolution, channels, labels).to_memory()


def load(spec: str, resolution: int = 16, channels: int = 3, split: str = "train", labels: str = "none") -> ImageDataset:
    """``digits`` | ``photos`` | a toy name | an image folder (``labels``: none, folders or a JSON
    file) | a prepared dataset | an npz — decoded into memory."""
    if spec == "digits":
        return load_digits(resolution, split)
    if spec == "photos":
        return load_photos(resolution, split, channels)
    if spec in TOYS:
        return load_toy(spec)
    from .sources import open_images

    return open_images(spec, resolution, channels, labels=labels).to_memory()
