"""`pixdiff sample`: draw images from a trained run (``pixdiff.load(run).sample(...)``) and write them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pixdiff.cli._common import add_device, at_least, check_output, device, note, writing
from pixdiff.cli._common import seed as seed_type
from pixdiff.errors import PixdiffError

__all__ = ["add_parser", "run", "parse_classes", "parse_interval", "open_model"]

DESCRIPTION = """\
Draw images from a trained checkpoint (the same code as pixdiff.load(run).sample(n) in Python).

Each image i is drawn from its own generator seeded SEED + i (as NVlabs/edm's
StackedRandomGenerator does), so an image does not depend on the batch it was drawn in or on
how many others were drawn with it. Sampling uses the EMA weights unless --raw is given.
"""

SUFFIXES = (".png", ".npz")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("sample", help="draw images from a trained checkpoint", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", type=Path,
                     help="run folder (newest valid checkpoint), checkpoint folder, or exported weights file "
                          "(pixdiff export, .safetensors)")
    src.add_argument("--diffusers", type=Path, metavar="DIR",
                     help="a diffusers model folder instead: a pipeline or save_pretrained folder with unet/ "
                          "(UNet2DModel) and scheduler/ (DDPM family); read locally, nothing is downloaded")
    p.add_argument("--null-class", type=int, default=None, metavar="K",
                   help="with --diffusers: the class embedding K that a conditional UNet was trained to use for "
                        "'no class' (label dropout); needed for classifier-free guidance")
    p.add_argument("--out", type=Path, required=True,
                   help="FILE.png (a grid) or FILE.npz (images uint8 N×H×W×C + labels; 2-D runs: samples N×2)")
    p.add_argument("--n", "--num-images", dest="n", type=int, default=100,
                   help="number of images (default 100); under torchrun write --num-images, since torchrun's own "
                        "parser reads --n as an abbreviation of its --nnodes / --nproc-per-node")
    p.add_argument("--sampler", default=None,
                   help="sampler name (see `pixdiff info --samplers`; default: the run's own, heun for a diffusion "
                        "run, the method's sampler for a distilled one)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampler steps (default: the run's own with its sampler, 18 for a diffusion run; else the "
                        "named sampler's default)")
    p.add_argument("--guidance", type=float, default=0.0,
                   help="guidance weight w: classifier-free ε̃ = (1+w)ε_c − wε_u by default; the classifier scale "
                        "with --classifier; D + w(D − D_weak) with --guide-ckpt (default 0: unguided)")
    p.add_argument("--guidance-interval", default=None, metavar="LO,HI",
                   help="classifier-free guidance only for logSNR in (LO, HI) (SiD2; e.g. -2,4)")
    p.add_argument("--classifier", type=Path, default=None, help="noisy classifier checkpoint (classifier guidance)")
    p.add_argument("--guide-ckpt", type=Path, default=None, help="weaker model's run/checkpoint (autoguidance)")
    p.add_argument("--classes", default=None, metavar="C,C,...",
                   help="comma-separated class labels to cycle through (default: all)")
    p.add_argument("--seed", type=seed_type, default=0, help="image i uses seed + i (default 0)")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--batch", type=int, default=256, help="images per forward batch (default 256)")
    add_device(p, "sampling")
    p.set_defaults(func=run)
    return p


def parse_classes(s: str | None) -> list[int] | None:
    if not s:
        return None
    try:
        return [int(c) for c in s.split(",")]
    except ValueError:
        raise PixdiffError(f"--classes takes comma-separated integers (got {s!r})") from None


def parse_interval(s: str | None) -> tuple[float, float] | None:
    if not s:
        return None
    try:
        lo, hi = (float(v) for v in s.split(","))
    except ValueError:
        raise PixdiffError(f"--guidance-interval takes LO,HI: two numbers (got {s!r})") from None
    if not lo < hi:
        raise PixdiffError(f"--guidance-interval needs LO < HI (got {s!r}); use inf or -inf for an open end")
    return lo, hi


def run(args: argparse.Namespace) -> int:
    # Every check of the request comes before the checkpoint is loaded and sampling starts.
    out = check_output(args.out, SUFFIXES)
    at_least(args.n, 1, "--n")
    at_least(args.batch, 1, "--batch")
    if args.steps is not None:
        at_least(args.steps, 1, "--steps")
    classes = parse_classes(args.classes)
    interval = parse_interval(args.guidance_interval)
    if interval is not None and (args.classifier is not None or args.guide_ckpt is not None):
        raise PixdiffError("--guidance-interval applies to classifier-free guidance, not to --classifier / --guide-ckpt")
    from pixdiff import samplers

    if args.sampler is not None:
        samplers.get(args.sampler)  # an unknown name fails now, with the list of names
    weights = "raw" if args.raw else "ema"
    pipe = open_model(args, weights)
    weights = getattr(pipe, "weights", weights)
    imgs, labels = pipe.sample(args.n, classes, args.sampler, args.steps, args.guidance, args.seed, args.batch,
                               guidance_interval=interval, classifier=args.classifier, guide_ckpt=args.guide_ckpt,
                               progress=True)
    if imgs is None:  # a torchrun process other than rank 0: rank 0 gathered the images and writes them
        return 0
    how = f"sampler {args.sampler}" if args.sampler else "the run's sampler"
    note(f"sampled {args.n} images with the {weights} weights, {how}"
         + (f", {args.steps} steps" if args.steps else ""))
    with writing(out):
        _write(out, imgs, labels, args.n)
    print(json.dumps({"wrote": str(out), "n": args.n, "weights": weights}))
    return 0


def open_model(args: argparse.Namespace, weights: str = "ema"):
    """The Pipeline that --ckpt or --diffusers names (shared by `pixdiff sample` and `pixdiff eval`)."""
    if getattr(args, "diffusers", None) is not None:
        if weights == "raw":
            raise PixdiffError("--raw applies to pixdiff runs (raw vs EMA weights), not to --diffusers")
        from pixdiff.adapters import load_diffusers

        return load_diffusers(args.diffusers, device=device(args), null_label=args.null_class)
    if getattr(args, "null_class", None) is not None:
        raise PixdiffError("--null-class applies to --diffusers models (pixdiff runs know their null label)")
    from pixdiff.generate import load

    return load(args.ckpt, device=device(args), weights=weights)


def _write(out: Path, imgs, labels, n: int) -> None:
    import numpy as np

    from pixdiff import data as data_mod
    from pixdiff.atomic import atomic_write

    out.parent.mkdir(parents=True, exist_ok=True)
    if imgs.ndim == 2:  # 2-D toy data: points, not images
        if out.suffix.lower() == ".npz":
            payload = {"samples": imgs} if labels is None else {"samples": imgs, "labels": labels}
            atomic_write(out, lambda p: np.savez(p, **payload))
        else:
            _plot_points(out, imgs, labels)
    elif out.suffix.lower() == ".npz":
        payload = {"images": imgs} if labels is None else {"images": imgs, "labels": labels}
        atomic_write(out, lambda p: np.savez(p, **payload))
    else:
        nrow = 10 if labels is None else len(set(labels.tolist()))
        grid = data_mod.image_grid(data_mod.from_uint8(imgs), nrow=max(1, min(nrow, n)))
        data_mod.save_png(out, grid, scale=4)


def _plot_points(out: Path, x, labels) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pixdiff.atomic import atomic_write

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(x[:, 0], x[:, 1], s=2, c=None if labels is None else labels, cmap="tab10")
    ax.set_aspect("equal")
    fig.tight_layout()
    atomic_write(out, lambda p: fig.savefig(p, dpi=100))
    plt.close(fig)
