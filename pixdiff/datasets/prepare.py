"""``pixdiff prepare-data``: decode a dataset once into one memory-mapped uint8 file.

Format — a folder ``DATA/`` with

- ``images.npy``: uint8 [N, R, R, C], a plain NumPy ``.npy`` (readable by any NumPy, no pixdiff);
- ``manifest.json``: count, resolution, channels, class names, the label of every image (or null),
  the source file of every image, the sha256 of ``images.npy``, the filter, the mode conversions
  made and the skipped (unreadable) files by name.

Why ``.npy`` and not a zip of PNGs (EDM's ``dataset_tool`` choice): training reads random images at
every step. A memory-mapped ``.npy`` gives image i at byte offset ``header + i·R²·C`` — no decode, no
per-file lookup, no Python object per image — so the first batch is ready as soon as the header is
read, the OS page cache is shared by the DataLoader workers and DDP ranks, and RSS stays flat however
large the file. A zip of PNGs is 2–3× smaller on disk but costs a PNG decode per image per epoch:
the work this step exists to do once. Disk cost: N·R²·C bytes (70 k images at 64² RGB: 0.86 GB).

Decoding runs in worker processes (``multiprocessing``, ordered ``imap``) with a tqdm bar; the
parent writes each image into the memory-mapped output in source order, so the result does not
depend on the number of workers. The filter is ``pixdiff.datasets.folder.FILTER``.

Never a half-written prepared dataset: everything is written into a hidden sibling folder
``.DATA.partial-PID/`` and renamed to ``DATA`` at the end (atomic on POSIX), so ``DATA`` is either
absent or complete; ``verify_prepared`` re-hashes ``images.npy`` against the manifest.
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np

from pixdiff.atomic import atomic_write_text
from pixdiff.errors import PixdiffError

from .folder import FILTER, check_labels_arg, decode_or_reason, fit_image, scan_folder
from .sources import ARRAY, FORMAT, MANIFEST, ArrayImages, _sha256, open_prepared, read_manifest, read_npz, source_kind

__all__ = ["prepare_data", "open_prepared", "read_manifest", "verify_prepared", "FORMAT"]



def _data_offset(path: Path) -> int:
    """Where the array data of an .npy file start (after its header)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(f)
        return f.tell()


def _shrink_npy(path: Path, count: int) -> None:
    """Cut a uint8 .npy to its first ``count`` rows in place (the header keeps its length: NumPy pads it
    so the first axis can change), or by a copy if the header would not fit."""
    with open(path, "r+b") as f:
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                 else np.lib.format.read_array_header_2_0(f))
        offset = f.tell()
        buf = io.BytesIO()
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran, "shape": (count, *shape[1:])}
        (np.lib.format.write_array_header_1_0 if version == (1, 0) else np.lib.format.write_array_header_2_0)(buf, header)
        if len(buf.getvalue()) == offset:
            f.seek(0)
            f.write(buf.getvalue())
            f.truncate(offset + count * int(np.prod(shape[1:])))
            return
    old = np.load(path, mmap_mode="r")
    tmp = path.with_name(path.stem + ".shrink.npy")
    new = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(count, *old.shape[1:]))
    for i in range(0, count, 4096):
        new[i : i + 4096] = old[i : i + 4096]
    new.flush()
    del new, old
    tmp.replace(path)


def _pool_map(jobs: list, workers: int, progress: bool, desc: str):
    """Ordered results of ``decode_or_reason`` over ``jobs``, in ``workers`` processes (0/1: here)."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1 or len(jobs) < 2:
            for j in jobs:
                yield decode_or_reason(j)
                bar.update(1)
            return
        chunk = max(1, min(64, len(jobs) // (workers * 8)))
        with mp.get_context().Pool(workers) as pool:
            for r in pool.imap(decode_or_reason, jobs, chunksize=chunk):
                yield r
                bar.update(1)
    finally:
        bar.close()


def _items_of(src: str, kind: str, resolution: int, channels: int):
    """(names, labels or None, class names, labels_source, iterator of (image | None, note)) of a
    stored source (npz, Hugging Face dataset, prepared dataset, photos), fitted in this process."""
    from PIL import Image

    if kind == "npz":
        a, y = read_npz(src)
        ds = ArrayImages(a, y, [], Path(src).name)  # validates dtype and shape
        ds.labels_source = "npz labels" if y is not None else "none"
    elif kind == "hf":
        from .sources import HFImages

        ds = HFImages(src, resolution, channels)
    elif kind == "prepared":
        ds = open_prepared(src)
    elif kind == "photos":
        from .sources import open_images

        ds = open_images("photos", resolution, channels)
    else:
        raise PixdiffError(f"cannot prepare {src}: not an image folder, .npz, prepared or Hugging Face dataset")

    def it():
        for i in range(len(ds)):
            try:
                if isinstance(ds, ArrayImages):
                    a = ds[i]
                    yield fit_image(Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a), resolution, channels, f"{src}[{i}]")
                else:
                    yield ds[i], None
            except Exception as e:  # noqa: BLE001 - reported by name as skipped
                yield None, f"{type(e).__name__}: {e}"

    names = [f"{Path(src).name}[{i}]" for i in range(len(ds))]
    return names, (None if ds.labels is None else ds.labels.tolist()), list(ds.class_names), ds.labels_source, it()


def prepare_data(src: str | Path, out: str | Path, resolution: int, channels: int = 3, labels: str = "none",
                 workers: int | None = None, progress: bool = True, overwrite: bool = False) -> Path:
    """Decode ``src`` (an image folder — or an npz, a Hugging Face dataset folder, a prepared dataset,
    ``photos``) once into ``out/images.npy`` + ``out/manifest.json``; returns ``out``.

    ``labels`` (image folders): ``none`` | ``folders`` | a JSON file (``pixdiff.datasets.folder``).
    ``workers``: decoding processes (default: the CPU count, at most 8; 0 = this process).
    Unreadable files are skipped and named in the manifest (and a warning); none readable is an error.
    ``out`` must not exist (or be an empty folder) unless ``overwrite``."""
    import warnings

    out, src_s = Path(out), str(src)
    if channels not in (1, 3):
        raise PixdiffError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if not isinstance(resolution, int) or resolution < 1:
        raise PixdiffError(f"resolution must be a positive integer (got {resolution})")
    labels = check_labels_arg(labels)
    workers = min(8, os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 0:
        raise PixdiffError(f"workers must be >= 0 (got {workers})")
    if out.exists() and not overwrite and (out.is_file() or any(out.iterdir())):
        raise PixdiffError(f"{out} already exists; remove it, choose another --out, or pass overwrite")
    kind = source_kind(src_s)
    if kind == "missing":
        raise PixdiffError(f"{src} does not exist")
    t0 = time.perf_counter()
    if kind == "folder":
        scan = scan_folder(src_s, labels)
        names = [f.relative_to(scan.root).as_posix() for f in scan.files]
        lab_all, class_names, lab_src = scan.labels, scan.class_names, scan.labels_source
        results = _pool_map([(str(f), resolution, channels) for f in scan.files], workers, progress, "prepare")
    else:
        if labels != "none":
            raise PixdiffError(f"labels={labels!r} applies to image folders; {src} ({kind}) carries its own labels")
        names, lab_all, class_names, lab_src, results = _items_of(src_s, kind, resolution, channels)
    if not names:
        raise PixdiffError(f"no images in {src}")

    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        npy = tmp / ARRAY
        # NumPy writes the header (and sizes the file); the images are then appended with plain
        # sequential writes, so the output's pages never sit in this process's RSS as a mapping would
        mm = np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=(len(names), resolution, resolution, channels))
        del mm
        kept, skipped, conv = [], [], Counter()
        with open(npy, "r+b") as f:
            f.seek(_data_offset(npy))
            for j, (a, note) in enumerate(results):
                if a is None:
                    skipped.append({"file": names[j], "reason": note})
                    continue
                f.write(np.ascontiguousarray(a, dtype=np.uint8).tobytes())
                kept.append(j)
                if note:
                    conv[note] += 1
        if not kept:
            raise PixdiffError(f"no readable images in {src} ({len(skipped)} unreadable, e.g. {skipped[0]['file']}: "
                               f"{skipped[0]['reason']})")
        if len(kept) < len(names):
            _shrink_npy(npy, len(kept))
        lab = None if lab_all is None else [int(lab_all[j]) for j in kept]
        manifest = {
            "format": FORMAT, "version": 1, "array": ARRAY, "layout": "NHWC", "dtype": "uint8",
            "count": len(kept), "resolution": resolution, "channels": channels,
            "class_names": class_names if lab is not None else [],
            "class_counts": (dict(zip(class_names, np.bincount(lab, minlength=len(class_names)).tolist()))
                             if lab is not None else {}),
            "labels_source": lab_src, "labels": lab,
            "sha256": _sha256(npy), "filter": FILTER,
            "converted": dict(sorted(conv.items())), "skipped": skipped,
            "source": os.path.abspath(src_s) if kind != "photos" else "photos",
            "files": [names[j] for j in kept],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(time.perf_counter() - t0, 2),
        }
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s) (named in {out / MANIFEST}): "
                      + ", ".join(f"{s['file']} ({s['reason']})" for s in skipped[:10])
                      + (" ..." if len(skipped) > 10 else ""), stacklevel=2)
    return out


def verify_prepared(path: str | Path) -> dict:
    """Re-hash ``images.npy`` and check it (and its shape) against the manifest; returns the manifest."""
    open_prepared(path, verify=True)
    return read_manifest(Path(path).parent if Path(path).name == MANIFEST else path)
