"""uint8 image datasets (``torch.utils.data.Dataset``) over every source training reads.

Layout: each item is a uint8 array [H, W, C] — the layout of PIL, of the npz that `pixdiff sample`
writes, and of a prepared file — so nothing is converted per stored image. A batch is fetched with
``__getitems__`` (one fancy-index read of a memory map, or one decode per file) and is a dict of
tensors: ``images`` uint8 [B, H, W, C], ``labels`` int64 [B] (absent when unlabelled), ``index``.
Conversion to float [−1, 1] and augmentation happen per batch, on the training device
(``pixdiff.datasets.loader``).

Sources (``open_images``):

- an image folder: decoded lazily, one file per item (headers are read once, at open, to report
  unreadable files and mode conversions); nothing is held in memory but the file list;
- a prepared dataset (``pixdiff prepare-data``): memory-mapped, no decode at all;
- an ``.npz`` with ``images`` uint8 [N, H, W, C] and optional ``labels``: read into memory (npz
  members cannot be memory-mapped when compressed; prepare big ones);
- a Hugging Face ``datasets`` folder written by ``save_to_disk``: decoded lazily per item
  (needs ``pip install pixdiff[hf]``);
- ``photos``: the embedded photo crops (``pixdiff.datasets.photos``).

Sources with stored pixels (prepared, npz) must already be at the requested resolution and
channels; a mismatch is a one-line error naming the flags that fit.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from pixdiff.errors import PixdiffError

from .folder import check_labels_arg, decode_file, scan_folder

__all__ = ["UInt8Images", "ArrayImages", "FolderImages", "HFImages", "open_images", "source_kind"]

MANIFEST = "manifest.json"
ARRAY = "images.npy"
FORMAT = "pixdiff-prepared"


class UInt8Images(torch.utils.data.Dataset):
    """Base: ``ds[i]`` is uint8 [H, W, C]; ``ds.__getitems__(idx)`` a batch dict (see module docstring)."""

    name: str = "images"
    labels: np.ndarray | None = None
    class_names: list[str] = []
    skipped: list[str] = []  # "file (reason)"
    converted: dict[str, int] = {}  # "RGBA→RGB (alpha dropped)": count
    notes: list[str] = []
    labels_source: str = "none"

    def __init__(self, resolution: int, channels: int):
        self.resolution, self.channels = int(resolution), int(channels)

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def fill(self, out: np.ndarray, idx: np.ndarray) -> None:
        """Write the images at ``idx`` (in that order) into ``out`` [B, H, W, C]."""
        for k, i in enumerate(idx):
            out[k] = self[int(i)]

    def get_many(self, idx) -> np.ndarray:
        """uint8 [B, H, W, C] of the images at ``idx`` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), *self.hwc), np.uint8)
        self.fill(out, idx)
        return out

    def __getitems__(self, idx) -> dict:
        # Tensors allocated by torch, not wrapped numpy arrays: numpy-backed tensors sent from a
        # DataLoader worker made the main process's RSS grow by ~3 MB per batch (measured, torch 2.13).
        idx = np.asarray(idx, dtype=np.int64)
        images = torch.empty((len(idx), *self.hwc), dtype=torch.uint8)
        self.fill(images.numpy(), idx)
        out = {"images": images, "index": torch.tensor(idx.tolist(), dtype=torch.int64)}
        if self.labels is not None:
            out["labels"] = torch.tensor(self.labels[idx].tolist(), dtype=torch.int64)
        return out

    @property
    def hwc(self) -> tuple[int, int, int]:
        return (self.resolution, self.resolution, self.channels)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image as the network sees it."""
        return (self.channels, self.resolution, self.resolution)

    @property
    def num_classes(self) -> int:
        return 0 if self.labels is None else len(self.class_names)

    def to_memory(self):
        """All images as a ``pixdiff.data.ImageDataset`` (float [−1, 1]); decodes everything."""
        from pixdiff.data import ImageDataset, from_uint8

        x = from_uint8(self.get_many(np.arange(len(self))))
        y = None if self.labels is None else torch.from_numpy(self.labels.astype(np.int64))
        return ImageDataset(x, y, list(self.class_names) if y is not None else [], self.name)

    def summary(self) -> str:
        """What was loaded, in a few lines: count, classes with counts, skipped files, conversions."""
        c, r = self.channels, self.resolution
        lines = [f"data {self.name}: {len(self)} images, {r}×{r} {'RGB' if c == 3 else 'grayscale'}"]
        if self.labels is None:
            lines.append(f"  labels: none (unconditional; source {self.labels_source})")
        else:
            counts = np.bincount(self.labels, minlength=len(self.class_names))
            parts = [f"{n} {k}" for n, k in zip(self.class_names, counts)]
            lines.append(f"  labels: {len(self.class_names)} classes (source {self.labels_source}): "
                         + ", ".join(parts[:20]) + (" …" if len(parts) > 20 else ""))
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} unreadable file(s): " + ", ".join(self.skipped[:10])
                         + (" …" if len(self.skipped) > 10 else ""))
        if self.converted:
            lines.append("  converted: " + ", ".join(f"{k} ×{v}" for k, v in sorted(self.converted.items())))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


class ArrayImages(UInt8Images):
    """uint8 [N, H, W, C] in memory, or memory-mapped from a ``.npy`` path (opened per process, so
    worker processes share the page cache instead of pickling the array)."""

    def __init__(self, array: np.ndarray | None, labels: np.ndarray | None, class_names: list[str], name: str,
                 path: str | Path | None = None):
        self._array, self._path, self._pid = array, (str(path) if path else None), os.getpid()
        a = self.array
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[3] not in (1, 3) or a.shape[1] != a.shape[2]:
            raise PixdiffError(f"{name}: images must be uint8 [N, H, W, C] with square H = W and C = 1 or 3 "
                               f"(got {a.dtype} {tuple(a.shape)})")
        super().__init__(a.shape[1], a.shape[3])
        if labels is not None:
            labels = np.asarray(labels)
            integral = labels.dtype.kind in "iub" or (labels.dtype.kind == "f" and np.all(np.isfinite(labels))
                                                      and np.all(labels == np.round(labels)))
            if not integral:
                raise PixdiffError(f"{name}: labels must be integer class ids (got dtype {labels.dtype})")
            labels = labels.astype(np.int64).reshape(-1)
            if len(labels) != len(a):
                raise PixdiffError(f"{name}: {len(labels)} labels for {len(a)} images")
            if len(labels) and labels.min() < 0:
                raise PixdiffError(f"{name}: labels must be non-negative class ids")
            if not class_names:
                class_names = [str(i) for i in range(int(labels.max(initial=-1)) + 1)]
        self.labels, self.class_names, self.name = labels, list(class_names), name
        self.skipped, self.converted, self.notes = [], {}, []

    @property
    def array(self) -> np.ndarray:
        if self._path is not None and (self._array is None or self._pid != os.getpid()):
            self._array, self._pid = np.load(self._path, mmap_mode="r"), os.getpid()
        return self._array

    def __getstate__(self):
        d = dict(self.__dict__)
        if d["_path"] is not None:
            d["_array"] = None  # re-opened as a memory map in the receiving process
        return d

    def __len__(self) -> int:
        return self.array.shape[0]

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.array[i])

    def fill(self, out: np.ndarray, idx: np.ndarray) -> None:
        if len(idx):
            order = np.argsort(idx, kind="stable")  # read the map front to back, then restore the order
            out[order] = self.array[idx[order]]


class FolderImages(UInt8Images):
    """An image folder, decoded lazily per item (``pixdiff.datasets.folder`` says which files, which
    labels and how a file is decoded). Opening reads each file's header once: unreadable files are
    skipped and named, mode conversions counted."""

    def __init__(self, root: str | Path, resolution: int, channels: int = 3, labels: str = "none",
                 progress: bool = False):
        from PIL import Image

        if channels not in (1, 3):
            raise PixdiffError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        if resolution < 1:
            raise PixdiffError(f"resolution must be positive (got {resolution})")
        super().__init__(resolution, channels)
        scan = scan_folder(root, labels)
        target = "L" if channels == 1 else "RGB"
        files, labs, skipped, conv = [], [], [], Counter()
        from tqdm import tqdm

        for k, f in enumerate(tqdm(scan.files, desc="scan", unit="file", disable=not progress or len(scan.files) < 5000)):
            try:
                with Image.open(f) as im:
                    mode = im.mode
                    alpha = "A" in mode or "transparency" in im.info
                if mode == "F":
                    raise PixdiffError("floating-point image: no stated range")
            except Exception as e:  # noqa: BLE001 - any failure to read the header means "unreadable"
                skipped.append(f"{f} ({type(e).__name__})")
                continue
            files.append(str(f))
            if scan.labels is not None:
                labs.append(scan.labels[k])
            if mode != target:
                tag = " (16/32-bit scaled to 8-bit)" if mode.startswith("I") else " (alpha dropped)" if alpha else ""
                conv[f"{mode}→{target}{tag}"] += 1
        self.root = Path(root)
        self.name = f"folder:{self.root.name}"
        self.files = files
        self.labels = np.asarray(labs, np.int64) if scan.labels is not None else None
        self.class_names = scan.class_names if scan.labels is not None else []
        self.labels_source, self.notes = scan.labels_source, scan.notes
        self.skipped, self.converted = skipped, dict(conv)
        if skipped:
            warnings.warn(f"skipped {len(skipped)} unreadable image(s): {', '.join(skipped[:10])}"
                          + (" ..." if len(skipped) > 10 else ""), stacklevel=2)
        if not files:
            from pixdiff.data import IMAGE_SUFFIXES

            raise PixdiffError(f"no readable images in {root} (looked for {', '.join(IMAGE_SUFFIXES)})")
        if self.labels is not None:
            present = np.bincount(self.labels, minlength=len(self.class_names))
            gone = [n for n, c in zip(self.class_names, present) if c == 0]
            if gone:
                warnings.warn(f"class(es) with no readable image: {', '.join(gone[:10])}", stacklevel=2)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> np.ndarray:
        f = self.files[i]
        try:
            return decode_file(f, self.resolution, self.channels)[0]
        except Exception as e:  # noqa: BLE001
            raise PixdiffError(f"{f} could not be decoded ({type(e).__name__}: {e}); `pixdiff prepare-data` "
                               "decodes a folder once and skips (and names) such files") from None


class HFImages(UInt8Images):
    """A Hugging Face dataset saved with ``save_to_disk`` (split ``train`` of a DatasetDict): the first
    ``Image`` column, decoded lazily and fitted like a folder's files; a ``ClassLabel`` column, if any,
    gives the labels (names included)."""

    def __init__(self, path: str | Path, resolution: int, channels: int = 3, split: str = "train"):
        try:
            import datasets
        except ImportError:
            raise PixdiffError(f"{path} is a Hugging Face dataset; reading it needs the datasets package: "
                               "pip install pixdiff[hf]") from None
        super().__init__(resolution, channels)
        d = datasets.load_from_disk(str(path))
        if isinstance(d, datasets.DatasetDict):
            if split not in d:
                raise PixdiffError(f"{path} has splits {', '.join(d)}; no {split!r}")
            d = d[split]
        feats = d.features
        img = [k for k, f in feats.items() if isinstance(f, datasets.Image)]
        if not img:
            raise PixdiffError(f"{path}: no Image column (columns: {', '.join(feats)})")
        lab = [k for k, f in feats.items() if isinstance(f, datasets.ClassLabel)]
        self.hf, self.image_key = d, img[0]
        self.name = f"hf:{Path(path).name}"
        if lab:
            self.labels = np.asarray(d[lab[0]], np.int64)
            self.class_names = list(feats[lab[0]].names)
            self.labels_source = f"ClassLabel column {lab[0]!r}"
        self.skipped, self.converted, self.notes = [], {}, []

    def __len__(self) -> int:
        return len(self.hf)

    def __getitem__(self, i: int) -> np.ndarray:
        from .folder import fit_image

        return fit_image(self.hf[int(i)][self.image_key], self.resolution, self.channels, f"{self.name}[{i}]")[0]


def source_kind(spec: str | Path) -> str:
    """photos | prepared | npz | hf | folder | missing | file (something else)."""
    if str(spec) == "photos":
        return "photos"
    p = Path(spec)
    if p.is_dir():
        if (p / MANIFEST).is_file():
            return "prepared"
        if (p / "dataset_dict.json").is_file() or ((p / "state.json").is_file() and (p / "dataset_info.json").is_file()):
            return "hf"
        return "folder"
    if p.is_file():
        if p.name == MANIFEST:
            return "prepared"
        return "npz" if p.suffix == ".npz" else "file"
    return "missing"


def _check_fit(name: str, r: int, c: int, resolution: int, channels: int, hint: str) -> None:
    if (r, c) != (resolution, channels):
        raise PixdiffError(f"{name} holds {r}×{r} {'RGB' if c == 3 else 'grayscale'} images; pass --resolution {r} "
                           f"--channels {c} to use them as stored ({hint} for {resolution}×{resolution}×{channels})")


def open_images(spec: str | Path, resolution: int, channels: int = 3, labels: str = "none", split: str = "train",
                progress: bool = False, verify: bool = False) -> UInt8Images:
    """The uint8 dataset at ``spec`` (see the module docstring). ``labels`` applies to image folders
    (prepared files, npz and HF datasets carry their own); ``verify`` checks a prepared file's sha256."""
    kind = source_kind(spec)
    if kind == "photos":
        from .photos import photo_crops

        a, y, names = photo_crops(resolution, split, channels)
        ds = ArrayImages(a, y, names, f"photos{resolution}-{split}")
        ds.labels_source = "source photo"
        return ds
    if kind == "missing":
        raise PixdiffError(f"image folder {spec} does not exist")
    if kind == "folder":
        return FolderImages(spec, resolution, channels, labels, progress=progress)
    if labels not in ("none", "auto"):
        check_labels_arg(labels)
        raise PixdiffError(f"labels={labels!r} applies to image folders; {spec} ({kind}) carries its own labels")
    if kind == "prepared":
        ds = open_prepared(spec, verify=verify)
        _check_fit(str(spec), ds.resolution, ds.channels, resolution, channels, "or prepare the source again")
        return ds
    if kind == "npz":
        a, y = read_npz(spec)
        ds = ArrayImages(a, y, [], f"npz:{Path(spec).name}")
        ds.labels_source = "npz labels" if y is not None else "none"
        _check_fit(str(spec), ds.resolution, ds.channels, resolution, channels, "or `pixdiff prepare-data` it")
        return ds
    if kind == "hf":
        return HFImages(spec, resolution, channels, split)
    raise PixdiffError(f"{spec} is neither an image folder, a prepared dataset folder, an .npz nor a "
                       "Hugging Face dataset folder")


def print_summary(ds, file=None) -> None:
    print(ds.summary(), file=file or sys.stderr)


# --- prepared datasets (written by pixdiff.datasets.prepare; read here, so reading never imports the writer)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_manifest(path: str | Path) -> dict:
    """The manifest of a prepared dataset (its folder or its manifest.json)."""
    p = Path(path)
    m = p if p.name == MANIFEST else p / MANIFEST
    try:
        d = json.loads(m.read_text())
    except FileNotFoundError:
        raise PixdiffError(f"{p} is not a prepared dataset (no {MANIFEST}); make one with `pixdiff prepare-data`") from None
    except ValueError as e:
        raise PixdiffError(f"{m} is not valid JSON ({e})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise PixdiffError(f"{m} is not a pixdiff prepared-dataset manifest (format {d.get('format') if isinstance(d, dict) else None!r})")
    return d


def open_prepared(path: str | Path, verify: bool = False) -> ArrayImages:
    """A prepared dataset, memory-mapped. The array's shape and dtype are checked against the
    manifest always, its sha256 when ``verify``."""
    p = Path(path)
    folder = p.parent if p.name == MANIFEST else p
    m = read_manifest(folder)
    arr = folder / m["array"]
    if not arr.is_file():
        raise PixdiffError(f"{arr} is missing (named by {folder / MANIFEST})")
    try:
        a = np.load(arr, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise PixdiffError(f"{arr} is not a readable .npy ({e})") from None
    want = (m["count"], m["resolution"], m["resolution"], m["channels"])
    if a.dtype != np.uint8 or tuple(a.shape) != want:
        raise PixdiffError(f"{arr} is {a.dtype} {tuple(a.shape)} but its manifest says uint8 {want}; prepare it again")
    if verify and _sha256(arr) != m["sha256"]:
        raise PixdiffError(f"{arr}: sha256 does not match {folder / MANIFEST}; the file changed or is damaged")
    del a
    ds = ArrayImages(None, None if m["labels"] is None else np.asarray(m["labels"], np.int64), m["class_names"],
                     f"prepared:{folder.name}", path=arr)
    ds.labels_source = m.get("labels_source", "none")
    ds.skipped = [f"{s['file']} ({s['reason']})" for s in m.get("skipped", [])]
    ds.converted = dict(m.get("converted", {}))
    return ds


def read_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, labels or None) of an npz as ``pixdiff sample`` writes it, with one-line errors for
    every file that is not one (pixdiff never unpickles: object arrays are refused)."""
    import zipfile

    what = "expected an npz with images uint8 [N, H, W, C] and optional labels"
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise PixdiffError(f"{path} is not a readable .npz ({type(e).__name__}); {what}; pixdiff never "
                           "unpickles files") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise PixdiffError(f"{path} holds a single .npy array, not an npz; {what}")
    try:
        with z:
            if "images" not in z.files:
                raise PixdiffError(f"{path} has no 'images' array (found {', '.join(z.files) or 'nothing'}); {what}")
            return z["images"], (z["labels"] if "labels" in z.files else None)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise PixdiffError(f"{path} is damaged or holds objects ({type(e).__name__}); {what}; pixdiff never "
                           "unpickles files") from None
