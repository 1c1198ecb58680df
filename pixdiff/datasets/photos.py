"""``photos``: an embedded RGB dataset of crops of the two photographs scikit-learn ships
(``sklearn.datasets.load_sample_images``: ``china.jpg`` and ``flower.jpg``, 427×640) — nothing is
downloaded.

- 4000 square crops, 2000 per photo, at seeded random positions and sizes (side 64–128 px, so no
  resolution up to 64 is ever upsampled), each fitted to R×R by the folder filter (LANCZOS);
  R = 32 by default, 64 (or any 8..64) on request. The crop boxes do not depend on R.
- Held-out split, fixed and spatial: the ``train`` crops (1600 per photo, 3200) lie wholly in the left
  512 columns of each photo, the ``test`` crops (400 per photo, 800) wholly in the right 128 columns —
  80/20 by count, and no test pixel was ever seen in training (random crops of two photos overlap
  too much for an index split to hold anything out).
- Labels: the source photo (0 = china, 1 = flower). Two visually distinct classes give RGB data on
  which class-conditional training and classifier-free guidance can be checked; ``--no-conditional``
  ignores them.
"""

from __future__ import annotations

import functools

import numpy as np

from pixdiff.errors import PixdiffError

__all__ = ["photo_crops", "crop_boxes", "PHOTO_NAMES", "SPLIT_COLUMN"]

PHOTO_NAMES = ["china", "flower"]
SPLIT_COLUMN = 512  # train crops lie in columns [0, 512), test crops in [512, 640)
_COUNTS = {"train": 1600, "test": 400}  # per photo
_SIDE = (64, 128)


def crop_boxes(photo: int, split: str, height: int, width: int) -> np.ndarray:
    """[n, 3] (top, left, side) of the crops of one photo and split; seeded by (photo, split)."""
    rng = np.random.default_rng([2024, photo, 0 if split == "train" else 1])
    n = _COUNTS[split]
    x0, x1 = (0, SPLIT_COLUMN) if split == "train" else (SPLIT_COLUMN, width)
    side = rng.integers(_SIDE[0], min(_SIDE[1], x1 - x0, height) + 1, size=n)
    top = (rng.random(n) * (height - side + 1)).astype(np.int64)
    left = x0 + (rng.random(n) * (x1 - x0 - side + 1)).astype(np.int64)
    return np.stack([top, left, side], 1)


@functools.lru_cache(maxsize=6)
def photo_crops(resolution: int = 32, split: str = "train", channels: int = 3) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """uint8 [N, R, R, C] crops, int64 labels (the source photo) and the class names; read-only
    arrays (cached). ``split``: train (3200) | test (800) | all (4000)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from .folder import fit_image

    if not 8 <= resolution <= _SIDE[0]:
        raise PixdiffError(f"photos come at resolutions 8..{_SIDE[0]} (default 32; got {resolution})")
    if split not in ("train", "test", "all"):
        raise PixdiffError(f"split must be train, test or all (got {split!r})")
    if channels not in (1, 3):
        raise PixdiffError(f"channels must be 1 or 3 (got {channels})")
    photos = load_sample_images().images
    out, lab = [], []
    for split_ in (("train", "test") if split == "all" else (split,)):
        for p, img in enumerate(photos):
            im = Image.fromarray(img)
            for top, left, side in crop_boxes(p, split_, img.shape[0], img.shape[1]):
                out.append(fit_image(im.crop((int(left), int(top), int(left + side), int(top + side))),
                                     resolution, channels)[0])
                lab.append(p)
    a, y = np.stack(out), np.asarray(lab, np.int64)
    a.flags.writeable = False
    y.flags.writeable = False
    return a, y, list(PHOTO_NAMES)
