"""Image folders: which files, which labels, and how one file becomes a uint8 image.

Labels are never inferred silently (``labels=``):

- ``"none"`` (the default): every image under the folder, recursively, unconditional;
- ``"folders"``: class = first-level sub-folder. Images at the root of such a tree are refused
  (they would otherwise be dropped or get no class); sub-folders without images are not classes
  (warned); all-numeric sub-folder names (FFHQ-style shards ``00000/``, ``01000/``) are warned
  about, since they are usually shards, not classes;
- a path to a JSON file: EDM's ``dataset.json`` form ``{"labels": [["rel/path.png", 3], ...]}`` or
  a plain ``{"rel/path.png": "cat", ...}``; every image must be listed, every listed file must exist.
  Integer labels are class ids (classes ``0 .. max``); string labels are class names (sorted).

Decoding (the one filter, as EDM's ``dataset_tool --transform=center-crop``): centre crop to the
square of the short side, then resize to R×R with PIL's LANCZOS filter (antialiased when shrinking;
skipped when the crop is already R×R). Modes: 16-bit and 32-bit integer images are scaled to 8 bits
(``pixdiff.data._to_8bit``; Pillow's own conversion would clip them white), alpha is dropped (no
compositing), palette / CMYK / 1-bit / grayscale become RGB (or luma ``L`` for ``channels=1``, ITU-R
601-2). Float images have no stated range and are refused (the file is reported as skipped).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixdiff.errors import PixdiffError

__all__ = ["FolderScan", "scan_folder", "fit_image", "decode_file", "FILTER", "LABEL_MODES", "check_labels_arg"]

FILTER = "centre crop to the short side, then PIL LANCZOS resize to R×R (EDM dataset_tool --transform=center-crop)"
LABEL_MODES = ("none", "folders")


def _suffixes() -> tuple[str, ...]:
    from pixdiff.data import IMAGE_SUFFIXES

    return IMAGE_SUFFIXES


def _list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (hidden files and folders skipped), sorted by relative path."""
    suf, out = _suffixes(), []
    if not recursive:
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                      and p.suffix.lower() in suf)
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in suf:
                out.append(Path(dirpath) / f)
    return sorted(out, key=lambda p: p.relative_to(folder).as_posix())


def check_labels_arg(labels: str) -> str:
    """``none`` | ``folders`` | an existing JSON file; anything else is a one-line error."""
    if labels in LABEL_MODES or labels == "auto":
        return labels
    p = Path(labels)
    if p.suffix.lower() != ".json" or not p.is_file():
        raise PixdiffError(f"labels must be none, folders or an existing JSON file of labels (got {labels!r})")
    return str(p)


@dataclass
class FolderScan:
    """The files of a folder in a fixed order, their labels (or None) and the class names."""

    root: Path
    files: list[Path]
    labels: list[int] | None
    class_names: list[str]
    labels_source: str
    notes: list[str] = field(default_factory=list)  # things the one-time summary should say


def scan_folder(root: str | Path, labels: str = "none") -> FolderScan:
    """List the images of ``root`` and label them per ``labels`` (see the module docstring).

    ``labels="auto"`` is the older convention kept for metric readers (``pixdiff.data.load_image_folder``):
    ``folders`` when the root holds sub-folders and no images of its own, else ``none``."""
    root = Path(root)
    if not root.exists():
        raise PixdiffError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise PixdiffError(f"{root} is not a folder of images")
    labels = check_labels_arg(labels)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if labels == "auto":
        labels = "folders" if subdirs and not _list_images(root, recursive=False) else "none"
    if labels == "none":
        files = _list_images(root)
        notes = []
        named = [d.name for d in subdirs if not d.name.isdigit()]
        if named and files:
            notes.append(f"sub-folders ({', '.join(named[:5])}{', …' if len(named) > 5 else ''}) are not used as "
                         "classes: pass labels=folders (--labels folders) for class-conditional training")
        return FolderScan(root, files, None, [], "none", notes)
    if labels == "folders":
        at_root = _list_images(root, recursive=False)
        if at_root:
            raise PixdiffError(f"{len(at_root)} image(s) sit directly in {root} (e.g. {at_root[0].name}), but "
                               "labels=folders takes each image's class from its first-level sub-folder; move them "
                               "into a class folder, or use labels=none (unconditional)")
        files, labs, names, empty = [], [], [], []
        for d in subdirs:
            fs = _list_images(d)
            if not fs:
                empty.append(d.name)
                continue
            names.append(d.name)
            files.extend(fs)
            labs.extend([len(names) - 1] * len(fs))
        if empty:
            warnings.warn(f"{root}: {len(empty)} class sub-folder(s) hold no images and are not classes: "
                          f"{', '.join(empty[:10])}{' …' if len(empty) > 10 else ''}", stacklevel=3)
        if not names:
            raise PixdiffError(f"no class sub-folders with images in {root} (labels=folders); "
                               f"looked for {', '.join(_suffixes())}")
        if len(names) > 1 and all(n.isdigit() for n in names):
            warnings.warn(f"{root}: the class sub-folders have numeric names ({', '.join(names[:3])}, …), like "
                          "FFHQ's shards; labels=folders makes each one a class. Use labels=none if they are "
                          "shards, not classes", stacklevel=3)
        return FolderScan(root, files, labs, names, "folders")
    return _scan_with_json(root, Path(labels))


def _scan_with_json(root: Path, path: Path) -> FolderScan:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PixdiffError(f"labels file {path} is not readable JSON ({e})") from None
    pairs = doc.get("labels") if isinstance(doc, dict) and isinstance(doc.get("labels"), list) else doc
    if isinstance(pairs, dict):
        pairs = list(pairs.items())
    if not isinstance(pairs, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs):
        raise PixdiffError(f"labels file {path}: expected {{\"labels\": [[\"rel/path.png\", label], ...]}} "
                           "(EDM's dataset.json) or {\"rel/path.png\": label, ...}")
    table = {str(Path(f).as_posix()): lab for f, lab in pairs}
    vals = list(table.values())
    if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in vals):
        names = [str(i) for i in range(max(vals, default=-1) + 1)]
        lut = {v: v for v in vals}
    elif all(isinstance(v, str) for v in vals):
        names = sorted(set(vals))
        lut = {n: i for i, n in enumerate(names)}
    else:
        raise PixdiffError(f"labels file {path}: labels must be all non-negative integers or all strings")
    files = _list_images(root)
    rel = [f.relative_to(root).as_posix() for f in files]
    missing = [r for r in rel if r not in table]
    if missing:
        raise PixdiffError(f"labels file {path} gives no label to {len(missing)} image(s) of {root} "
                           f"(e.g. {missing[0]}); every image needs one")
    extra = sorted(set(table) - set(rel))
    if extra:
        raise PixdiffError(f"labels file {path} names {len(extra)} file(s) not in {root} (e.g. {extra[0]})")
    return FolderScan(root, files, [lut[table[r]] for r in rel], names, f"file:{path}")


def fit_image(im, resolution: int, channels: int, path: str | Path = "image") -> tuple[np.ndarray, str | None]:
    """A PIL image → uint8 [R, R, C] by ``FILTER``; also the mode conversion made (e.g. "RGBA→RGB"), or None."""
    from PIL import Image

    from pixdiff.data import _to_8bit

    mode0 = im.mode
    alpha = "A" in mode0 or "transparency" in im.info
    im = _to_8bit(im, Path(path))
    target = "L" if channels == 1 else "RGB"
    if im.mode != target:
        im = im.convert(target)
    note = None
    if mode0 != target:
        note = f"{mode0}→{target}"
        if mode0 in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
            note += " (16/32-bit scaled to 8-bit)"
        elif alpha:
            note += " (alpha dropped)"
    w, h = im.size
    s = min(w, h)
    if (w, h) != (s, s):
        left, top = (w - s) // 2, (h - s) // 2
        im = im.crop((left, top, left + s, top + s))
    if s != resolution:
        im = im.resize((resolution, resolution), Image.LANCZOS)
    a = np.asarray(im, dtype=np.uint8)
    return np.ascontiguousarray(a[:, :, None] if a.ndim == 2 else a), note


def decode_file(path: str | Path, resolution: int, channels: int) -> tuple[np.ndarray, str | None]:
    """Open, decode and fit one file (raises on an unreadable one)."""
    from PIL import Image

    with Image.open(path) as im:
        return fit_image(im, resolution, channels, path)


def decode_or_reason(job: tuple[str, int, int]) -> tuple[np.ndarray | None, str | None]:
    """For worker pools: (image, conversion note) or (None, "why it was skipped")."""
    path, resolution, channels = job
    try:
        return decode_file(path, resolution, channels)
    except Exception as e:  # noqa: BLE001 - any decoder failure means "unreadable": reported by name
        msg = str(e).replace(f"'{path}'", "").replace(str(path), "").strip().splitlines()
        msg = msg[0][:120] if msg else ""
        return None, f"{type(e).__name__}{': ' + msg if msg else ''}"
