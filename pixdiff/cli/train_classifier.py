"""`pixdiff train-classifier`: the noisy classifier of classifier guidance
(``pixdiff.train_classifier.train_classifier``)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from pixdiff.cli._common import add_device, at_least, check_output_dir, device
from pixdiff.cli._common import seed as seed_type
from pixdiff.errors import PixdiffError

__all__ = ["add_parser", "run"]

DESCRIPTION = """\
Train the noisy classifier p(y | z_t) of classifier guidance (Dhariwal & Nichol 2021, §4): a
classifier trained on noised images, conditioned on the noise level. Each step draws t ~ U(0, 1)
per image on the training schedule, noises the batch and minimises the cross-entropy of the true
label. Use the checkpoint with `pixdiff sample --classifier OUT`. Short runs only: no resume.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train-classifier", help="train a noisy classifier for classifier guidance",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder (must not hold a checkpoint yet)")
    p.add_argument("--data", default="digits", help="digits (default) or a labelled image folder (class = sub-folder)")
    p.add_argument("--resolution", type=int, default=16, help="image size (default 16)")
    p.add_argument("--channels", type=int, default=None, choices=(1, 3),
                   help="1 or 3 (default: 1 for digits, else 3)")
    p.add_argument("--preset", default="tiny-classifier",
                   help="classifier preset (default tiny-classifier; see `pixdiff info --presets`)")
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    p.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 0.001)")
    p.add_argument("--schedule", default="cosine",
                   help="noise levels seen in training (default cosine; see `pixdiff info --schedules`)")
    p.add_argument("--seed", type=seed_type, default=0, help="seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device(p, "training")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pixdiff.train_classifier import train_classifier

    at_least(args.steps, 1, "--steps")
    at_least(args.batch, 1, "--batch")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise PixdiffError(f"--lr must be a finite number > 0 (got {args.lr})")
    check_output_dir(args.out)  # before the training, not when its checkpoint is written
    ch = args.channels or (1 if args.data == "digits" else 3)
    path = train_classifier(args.out, args.data, args.resolution, ch, args.preset, args.steps, args.batch,
                            args.lr, args.schedule, args.seed, progress=not args.quiet, device=device(args))
    print(json.dumps({"checkpoint": str(path)}))
    return 0
