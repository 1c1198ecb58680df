"""`pixdiff sample`: draw images from a trained checkpoint, and the Python functions behind it.

Each image i is drawn from its own generator seeded ``seed + i`` (as NVlabs/edm's
StackedRandomGenerator does), so an image does not depend on the batch it was drawn in or on
how many others were drawn with it. Sampling uses the EMA weights unless ``--raw`` is given, and
says which.
"""

from __future__ import annotations

from pixdiff.errors import PixdiffError

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from pixdiff import checkpoint as ckpt_io
from pixdiff import data as data_mod
from pixdiff.atomic import atomic_write
from pixdiff.config import TrainConfig

__all__ = ["sample_checkpoint", "add_parser", "run"]


def sample_checkpoint(path, n: int = 100, sampler: str | None = "heun", steps: int | None = 18,
                      guidance: float | None = 0.0, seed: int = 0, classes=None, weights: str = "ema",
                      batch: int = 256, guidance_interval=None, progress: bool = False, classifier=None,
                      guide_ckpt=None, device=None, **options):
    """Sample ``n`` images of a run: ``pixdiff.load(path, device, weights).sample(...)``."""
    from pixdiff.generate import load

    return load(path, device=device, weights=weights).sample(
        n, classes, sampler or "heun", steps, guidance or 0.0, seed, batch, guidance_interval=guidance_interval,
        classifier=classifier, guide_ckpt=guide_ckpt, progress=progress, **options)


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="draw images from a trained checkpoint",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, type=Path, help="run folder (newest valid checkpoint) or checkpoint folder")
    p.add_argument("--n", type=int, default=100, help="number of images (default 100)")
    p.add_argument("--sampler", default="heun", help="sampler name (see `pixdiff info --samplers`; default heun)")
    p.add_argument("--steps", type=int, default=18, help="sampler steps (default 18)")
    p.add_argument("--guidance", type=float, default=0.0,
                   help="guidance weight w: classifier-free ε̃ = (1+w)ε_c − wε_u by default; the classifier scale "
                        "with --classifier; D + w(D − D_weak) with --guide-ckpt (0 = unguided)")
    p.add_argument("--guidance-interval", type=str, default=None, metavar="LO,HI",
                   help="apply guidance only for logSNR in (LO, HI) (SiD2)")
    p.add_argument("--classifier", type=Path, default=None, help="noisy classifier checkpoint (classifier guidance)")
    p.add_argument("--guide-ckpt", type=Path, default=None, help="weaker model's run/checkpoint (autoguidance)")
    p.add_argument("--classes", type=str, default=None, help="comma-separated class labels to cycle through (default all)")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--batch", type=int, default=256, help="images per forward batch")
    p.add_argument("--out", type=Path, required=True, help="FILE.png (a grid) or FILE.npz (images uint8 N×H×W×C, labels)")
    p.set_defaults(func=run)


def _save_points(out: Path, x: np.ndarray, labels) -> None:
    if out.suffix.lower() == ".npz":
        atomic_write(out, lambda p: np.savez(p, **({"samples": x} if labels is None else {"samples": x, "labels": labels})))
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(x[:, 0], x[:, 1], s=2, c=None if labels is None else labels, cmap="tab10")
    ax.set_aspect("equal")
    fig.tight_layout()
    atomic_write(out, lambda p: fig.savefig(p, dpi=100))
    plt.close(fig)


def parse_interval(s: str | None):
    if not s:
        return None
    try:
        lo, hi = (float(v) for v in s.split(","))
    except ValueError:
        raise PixdiffError(f"--guidance-interval must be LO,HI (two numbers), got {s!r}") from None
    return (lo, hi)


def run(args) -> int:
    if args.out.suffix.lower() not in (".png", ".npz"):
        raise PixdiffError(f"--out must end in .png or .npz (got {args.out})")
    if args.n < 1:
        raise PixdiffError("--n must be at least 1")
    classes = [int(c) for c in args.classes.split(",")] if args.classes else None
    weights = "raw" if args.raw else "ema"
    imgs, labels = sample_checkpoint(args.ckpt, args.n, args.sampler, args.steps, args.guidance, args.seed, classes,
                                     weights, args.batch, parse_interval(args.guidance_interval), progress=True,
                                     classifier=args.classifier, guide_ckpt=args.guide_ckpt)
    print(f"sampled {args.n} images with the {weights} weights, sampler {args.sampler}, {args.steps} steps",
          file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if imgs.ndim == 2:  # 2-D toy data: points, not images
        _save_points(args.out, imgs, labels)
    elif args.out.suffix.lower() == ".npz":
        payload = {"images": imgs} if labels is None else {"images": imgs, "labels": labels}
        atomic_write(args.out, lambda p: np.savez(p, **payload))
    else:
        x = data_mod.from_uint8(imgs)
        nrow = 10 if labels is None else len(set(labels.tolist()))
        data_mod.save_png(args.out, data_mod.image_grid(x, nrow=max(1, min(nrow, args.n))), scale=4)
    print(json.dumps({"wrote": str(args.out), "n": args.n, "weights": weights}))
    return 0
