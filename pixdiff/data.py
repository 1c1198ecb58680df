"""Datasets: the embedded digits, image folders, and 2-D toys. All yield images in [−1, 1].

- ``digits``: scikit-learn's ``load_digits`` (1797 images, 8×8, 10 classes, values 0..16) — it
  ships with scikit-learn, so it works offline. Upsampled bilinearly to 16×16 (or 32×32) and
  scaled to [−1, 1]. A fixed, stratified held-out split (20 %, seed 0) is never trained on.
- image folders: PNG/JPEG/BMP/WebP files; class = sub-folder (or unconditional when the images
  sit directly in the folder); resized (shorter side) and centre-cropped to the resolution; RGB or
  grayscale. Unreadable files are skipped with a warning naming them; an empty folder is an error.
- 2-D toys: ``moons``, ``swissroll``, ``mixture`` (``GaussianMixture.toy_2d``), as [N, 2] tensors.

Nothing here knows about diffusion. Shuffling is a deterministic function of (seed, epoch) and
sharding by rank takes every world_size-th example, so DDP ranks see disjoint parts of the same
global order.
"""

from __future__ import annotations

from pixdiff.errors import PixdiffError

import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ImageDataset",
    "load_digits",
    "load_image_folder",
    "load_toy",
    "load",
    "epoch_order",
    "IMAGE_SUFFIXES",
    "TOYS",
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


def _read_image(path: Path, resolution: int, channels: int) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        im = _to_8bit(im, path)
        im = im.convert("L" if channels == 1 else "RGB")
        w, h = im.size
        scale = resolution / min(w, h)
        im = im.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.BICUBIC)
        w, h = im.size
        left, top = (w - resolution) // 2, (h - resolution) // 2
        im = im.crop((left, top, left + resolution, top + resolution))
        a = np.asarray(im, dtype=np.float32)
    a = a[:, :, None] if a.ndim == 2 else a
    return torch.from_numpy(a).permute(2, 0, 1) / 127.5 - 1.0


def load_image_folder(root: str | Path, resolution: int, channels: int = 3) -> ImageDataset:
    """Images under ``root``: class = sub-folder, or unconditional if the files sit in ``root``."""
    root = Path(root)
    if not root.exists():
        raise PixdiffError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise PixdiffError(f"{root} is not a folder; pass a folder of images (class = sub-folder)")
    if channels not in (1, 3):
        raise PixdiffError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if resolution < 1:
        raise PixdiffError(f"resolution must be positive (got {resolution})")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    groups = [(d.name, d) for d in subdirs] if subdirs else [("", root)]
    images, labels, names, bad = [], [], [], []
    for label, (name, folder) in enumerate(groups):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        names.append(name)
        for f in files:
            try:
                images.append(_read_image(f, resolution, channels))
                labels.append(label)
            except Exception as e:  # noqa: BLE001 - any decoder failure means "unreadable"
                bad.append(f"{f} ({type(e).__name__})")
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s): {', '.join(bad[:10])}" + (" ..." if len(bad) > 10 else ""))
    if not images:
        raise PixdiffError(f"no readable images in {root} (looked for {', '.join(IMAGE_SUFFIXES)})")
    y = torch.tensor(labels) if subdirs else None
    return ImageDataset(torch.stack(images), y, names if subdirs else [], f"folder:{root.name}")


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
        from pixdiff.analytic import GaussianMixture

        x, k = GaussianMixture.toy_2d().sample(n, g, return_components=True)
        return ImageDataset(x.float(), k, ["0", "1", "2"], "mixture")
    raise PixdiffError(f"unknown toy data {name!r}; choose from {', '.join(TOYS)}")


def load(spec: str, resolution: int = 16, channels: int = 3, split: str = "train") -> ImageDataset:
    """``digits`` | a toy name | a folder path."""
    if spec == "digits":
        return load_digits(resolution, split)
    if spec in TOYS:
        return load_toy(spec)
    return load_image_folder(spec, resolution, channels)


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
