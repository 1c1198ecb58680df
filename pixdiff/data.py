"""Datasets: the embedded digits and photos, image folders, and 2-D toys. All yield images in [−1, 1].

- ``digits``: scikit-learn's ``load_digits`` (1797 images, 8×8, 10 classes, values 0..16) — it
  ships with scikit-learn, so it works offline. Upsampled bilinearly to 16×16 (or 32×32) and
  scaled to [−1, 1]. A fixed, stratified held-out split (20 %, seed 0) is never trained on.
- ``photos``: 4000 RGB crops (32×32 by default, up to 64×64) of the two photographs scikit-learn
  ships, labelled by source photo, with a fixed spatial 80/20 held-out split
  (``pixdiff.datasets.photos``; ``pixdiff.datasets.load("photos")``).
- image folders, prepared datasets (``pixdiff prepare-data``), npz files: ``pixdiff.datasets``,
  which sits above this module (it imports the types and conversions here, never the other way);
  ``pixdiff.datasets.load`` decodes any source into memory — fine for evaluation and small data;
  training reads them lazily (``pixdiff.datasets.StepBatches``).
- 2-D toys: ``moons``, ``swissroll``, ``mixture`` (``GaussianMixture.toy_2d``), as [N, 2] tensors.

Nothing here knows about diffusion. Shuffling is a deterministic function of (seed, epoch) and
sharding by rank takes every world_size-th example, so DDP ranks see disjoint parts of the same
global order.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pixdiff.errors import PixdiffError

__all__ = [
    "ImageDataset",
    "load_digits",
    "load_toy",
    "epoch_order",
    "IMAGE_SUFFIXES",
    "TOYS",
    "TOY_MIXTURE",
    "flip_horizontal",
    "to_uint8",
    "from_uint8",
    "image_grid",
    "save_png",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
TOYS = ("moons", "swissroll", "mixture")


@dataclass
class ImageDataset:
    """Images [N, C, H, W] float32 in [−1, 1], labels [N] long (or None), class names."""

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: list[str]
    name: str

    def __post_init__(self):
        if self.images.dim() not in (2, 4):
            raise PixdiffError(f"images must be [N, C, H, W] (or [N, D] for toy data), got {tuple(self.images.shape)}")
        if self.labels is not None and self.labels.shape[0] != self.images.shape[0]:
            raise PixdiffError("labels and images differ in count")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return 0 if self.labels is None else len(self.class_names)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])


def load_digits(resolution: int = 16, split: str = "train") -> ImageDataset:
    """The embedded digits (``split`` = train | test | all); fixed stratified 80/20 split, seed 0."""
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    if resolution not in (8, 16, 32):
        raise PixdiffError(f"digits come at resolution 8, 16 or 32 (got {resolution})")
    d = _sk_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]  # [N, 1, 8, 8] in [0, 1]
    if resolution != 8:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x = (x * 2.0 - 1.0).clamp(-1.0, 1.0)
    y = torch.from_numpy(d.target.astype(np.int64))
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=0.2, random_state=0, stratify=d.target)
    pick = {"train": np.sort(tr), "test": np.sort(te), "all": idx}
    if split not in pick:
        raise PixdiffError(f"split must be train, test or all (got {split!r})")
    i = torch.from_numpy(pick[split])
    return ImageDataset(x[i].contiguous(), y[i], [str(c) for c in range(10)], f"digits{resolution}-{split}")


def _to_8bit(im, path: Path):
    """Integer modes wider than 8 bits (16-bit PNG opens as "I;16" or "I") are scaled to 8 bits;
    Pillow's own convert("L") would clip them at 255 and turn a 16-bit photo white. Float images
    have no stated range and are refused."""
    from PIL import Image

    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if a.max(initial=0) <= 65535 else float(a.max())
        return Image.fromarray(np.clip(np.rint(a / top * 255.0), 0, 255).astype(np.uint8), "L")
    if im.mode == "F":
        raise PixdiffError(f"{path}: floating-point images have no stated range; convert them to 8 or 16 bits")
    return im


def load_toy(name: str, n: int = 8192, seed: int = 0) -> ImageDataset:
    """2-D toy data [n, 2], standardised to roughly unit scale."""
    g = torch.Generator().manual_seed(seed)
    if name == "moons":
        from sklearn.datasets import make_moons

        x, y = make_moons(n, noise=0.05, random_state=seed)
        x = torch.from_numpy((x - x.mean(0)) / x.std(0)).float() * 0.5
        return ImageDataset(x, torch.from_numpy(y).long(), ["upper", "lower"], "moons")
    if name == "swissroll":
        from sklearn.datasets import make_swiss_roll

        x, _ = make_swiss_roll(n, noise=0.3, random_state=seed)
        x = torch.from_numpy(x[:, [0, 2]] / 10.0).float()
        return ImageDataset(x, None, [], "swissroll")
    if name == "mixture":
        x, k = _sample_mixture(TOY_MIXTURE, n, g)
        return ImageDataset(x.float(), k, ["0", "1", "2"], "mixture")
    raise PixdiffError(f"unknown toy data {name!r}; choose from {', '.join(TOYS)}")


# The 2-D mixture toy is a dataset first, so its numbers live here, in the low-level data module,
# as plain numbers: the exact oracle that models it (pixdiff.analytic.GaussianMixture.toy_2d) can
# read them from here, while this module never imports the oracle (data knows nothing of
# diffusion, and the oracle's module imports the process). A third module for five constants
# would only add an import for both. `_sample_mixture` draws exactly as GaussianMixture.sample
# does (same generator calls in the same order), so the data of existing runs is unchanged;
# tests/test_cli_imports.py checks that the two agree bit for bit.
TOY_MIXTURE = {
    "weights": [0.5, 0.3, 0.2],
    "means": [[-1.0, -0.5], [1.0, -0.5], [0.0, 0.9]],
    "covs": [[[0.06, 0.03], [0.03, 0.05]], [[0.04, -0.02], [-0.02, 0.07]], [[0.08, 0.0], [0.0, 0.02]]],
    "labels": [0, 1, 2],
}


def _sample_mixture(spec: dict, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n draws (float64 [n, D]) of Σ_k w_k N(μ_k, Σ_k) and their component labels."""
    w = torch.tensor(spec["weights"], dtype=torch.float64)
    mu = torch.tensor(spec["means"], dtype=torch.float64)
    d, U = torch.linalg.eigh(torch.tensor(spec["covs"], dtype=torch.float64))
    k = torch.multinomial((w / w.sum()).log().expand(n, -1).exp(), 1, generator=g).squeeze(1)
    eps = torch.randn(n, mu.shape[1], generator=g, dtype=torch.float64)
    root = U[k] * d.clamp(min=0.0)[k].sqrt()[:, None, :]  # U diag(√d): a square root of Σ_k
    return mu[k] + torch.einsum("nij,nj->ni", root, eps), torch.tensor(spec["labels"])[k]


@functools.lru_cache(maxsize=4)  # the trainer asks for the same epoch at every step
def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """The example order of one epoch for one rank: a permutation that depends only on
    (seed, epoch), of which rank r takes positions r, r + W, r + 2W, … (trimmed so ranks are equal)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    per_rank = n // world_size
    return perm[: per_rank * world_size][rank::world_size]  # cached: callers read, never write


def flip_horizontal(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Random horizontal flip per image."""
    m = torch.rand(x.shape[0], generator=generator) < p
    return torch.where(m[:, None, None, None], x.flip(-1), x)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [−1, 1] → uint8 [N, H, W, C] (the npz format of `pixdiff sample`)."""
    a = ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return a.permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(a: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, C] → float32 [N, C, H, W] in [−1, 1]."""
    if a.dtype != np.uint8 or a.ndim != 4:
        raise PixdiffError(f"images must be uint8 [N, H, W, C] (got {a.dtype} {a.shape})")
    return torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def image_grid(x: torch.Tensor, nrow: int) -> np.ndarray:
    """[N, C, H, W] in [−1, 1] → one uint8 image [rows·(H+1)+1, nrow·(W+1)+1, C] with 1-px borders."""
    n, c, h, w = x.shape
    rows = math.ceil(n / nrow)
    out = np.full((rows * (h + 1) + 1, nrow * (w + 1) + 1, c), 255, np.uint8)
    imgs = to_uint8(x)
    for i in range(n):
        r, col = divmod(i, nrow)
        out[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + col * (w + 1): 1 + col * (w + 1) + w] = imgs[i]
    return out


def save_png(path: str | Path, grid: np.ndarray, scale: int = 1) -> None:
    from PIL import Image

    im = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    from pixdiff.atomic import atomic_write

    atomic_write(path, lambda p: im.save(p, format="PNG"))
