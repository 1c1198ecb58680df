"""`pixdiff prepare-data`: decode a dataset once into a memory-mapped file that training reads
(``pixdiff.datasets.prepare_data``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pixdiff.cli._common import at_least, check_output_dir

__all__ = ["add_parser", "run"]

DESCRIPTION = """\
Decode SRC once — centre crop to the short side, then a Lanczos resize to RESOLUTION×RESOLUTION,
as EDM's dataset_tool does — in parallel worker processes, into DATA/images.npy (uint8 N×R×R×C,
memory-mapped by training: no decoding per epoch, one page cache shared by all loader workers and
processes) and DATA/manifest.json (count, resolution, channels, class names and counts, labels,
source files, sha256, filter, conversions made, skipped files by name). Written atomically: an
interrupted run leaves no DATA. Train with `pixdiff train --data DATA`.

SRC: an image folder, an npz (images uint8 N×H×W×C, optional labels), a Hugging Face dataset
saved with save_to_disk, or `photos`. Labels of a folder are never guessed: --labels none (the
default: every image, recursively, unconditional), folders (class = first-level sub-folder), or a
JSON file (EDM's dataset.json, or {path: label}).

example:
  pixdiff prepare-data ~/ffhq --resolution 64 --out data/ffhq64
  pixdiff prepare-data ~/imagenet/train --resolution 64 --labels folders --out data/in64
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("prepare-data", help="decode a dataset once into a memory-mapped file for training",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="image folder, npz, Hugging Face save_to_disk folder, or photos")
    p.add_argument("--resolution", type=int, required=True, help="side length of the square images")
    p.add_argument("--channels", type=int, choices=(1, 3), default=3, help="1 (grayscale) or 3 (RGB; default)")
    p.add_argument("--labels", default="none", metavar="none|folders|FILE.json",
                   help="labels of an image folder (default none: unconditional)")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes (default: the CPU count, at most 8; 0 = this process)")
    p.add_argument("--out", type=Path, required=True, help="the prepared dataset's folder (must not exist)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing prepared dataset at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pixdiff.datasets import prepare_data, read_manifest

    at_least(args.resolution, 1, "--resolution")
    if args.workers is not None:
        at_least(args.workers, 0, "--workers")
    check_output_dir(args.out)  # a file in the way or a read-only place: refused before the decoding
    out = prepare_data(args.src, args.out, args.resolution, args.channels, args.labels, args.workers,
                       progress=not args.quiet, overwrite=args.overwrite)
    m = read_manifest(out)
    print(json.dumps({"out": str(out), "count": m["count"], "resolution": m["resolution"], "channels": m["channels"],
                      "classes": m["class_names"], "skipped": len(m["skipped"]), "sha256": m["sha256"]}))
    return 0
