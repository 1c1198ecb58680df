"""`pixdiff eval`: score images or a run's samples (``pixdiff.metrics.evaluate_images``), print a
table, and with ``--json`` keep every number with the protocol that produced it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pixdiff.cli._common import add_device, at_least, check_output, device, note, writing
from pixdiff.cli._common import seed as seed_type
from pixdiff.errors import PixdiffError
from pixdiff.metrics.evaluate import METRICS
from pixdiff.metrics.extractors import CLASS_NAMES, FEATURES

__all__ = ["add_parser", "run", "format_table"]

EPILOG = """\
metrics (comma-separated, default: all that apply):
  fd    Fréchet distance of Gaussian fits to the features (FID with --features inception)
  kid   kernel distance: unbiased MMD² with k(x,y) = (x·y/d + 1)³, mean ± std over subsets
  pr    precision / recall (k-NN manifolds, k = --pr-k) and density / coverage
  is    Inception Score of the feature net's class probabilities
  acc   class accuracy: does each sample show the class it was sampled for? (needs labels;
        with --features digits the 10 digits, with --features photos the source photo)
  mem   memorisation: nearest / 2nd-nearest training image distance ratio (pixels), flagged < 1/3

A folder of images is read at the reference's size and channels (the digits: grayscale 16×16,
or 8 / 32 when the images are that size; the photos: RGB 32×32, or the images' size in 8..64; an
npz or folder reference: its own size), or at
--resolution / --channels; any conversion is stated on stderr and in the --json protocol.

examples:
  pixdiff eval --images samples.npz                         # vs the digits train split
  pixdiff eval --images samples.npz --metrics fd,acc --json scores.json
  pixdiff eval --images photos_samples.npz --ref photos     # photos features by default
  pixdiff eval --images samples/ --ref real/ --features inception \\
               --inception-weights pt_inception-2015-12-05-6726825d.pth
  pixdiff eval --ckpt runs/digits --n 1000 --steps 50       # a run is scored against its own data

The Inception weights are not downloaded: get pytorch-fid's file from
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
See docs/metrics.md for formulas, sources and the protocol recorded in --json.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval", help="score images or a checkpoint's samples (FD, KID, precision/recall, IS, accuracy, memorisation)",
        description="Score generated images against a reference set under a recorded protocol.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, metavar="FILE.npz|DIR",
                     help="samples: an npz with images uint8 [N,H,W,C] (+ optional labels), or a folder of images")
    src.add_argument("--ckpt", type=Path, metavar="DIR",
                     help="a training run / checkpoint folder / exported weights file to sample from, then score")
    src.add_argument("--diffusers", type=Path, metavar="DIR",
                     help="a diffusers model folder (unet/ + scheduler/) to sample from with pixdiff's samplers, "
                          "then score")
    p.add_argument("--ref", default=None, metavar="digits|photos|FILE.npz|DIR|STATS.safetensors",
                   help="reference: the embedded digits or photos (split --ref-split), real images, or cached "
                        "statistics (default: the --ckpt run's own embedded data, else digits)")
    p.add_argument("--ref-split", default="train", choices=("train", "test", "all"),
                   help="split of the embedded digits / photos (default: train)")
    p.add_argument("--ref-cache", metavar="FILE.safetensors", help="read / write the reference statistics here")
    p.add_argument("--metrics", default=None, metavar="LIST", help=f"comma-separated subset of {','.join(METRICS)}")
    p.add_argument("--features", default=None, choices=FEATURES,
                   help="feature network (default: photos with --ref photos, else digits)")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="pytorch-fid's pt_inception-2015-12-05 weights (.pth or .safetensors)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write numbers + protocol as JSON")
    p.add_argument("--seed", type=seed_type, default=0, help="seed for KID subsets (and sampling with --ckpt)")
    p.add_argument("--kid-subsets", type=int, default=100, metavar="S", help="KID: number of random subsets (default 100)")
    p.add_argument("--kid-subset-size", type=int, default=1000, metavar="M",
                   help="KID: subset size, capped at the smaller set's N (default 1000)")
    p.add_argument("--pr-k", type=int, default=3, metavar="K", help="k of the k-NN balls (default 3, Kynkäänniemi et al.)")
    p.add_argument("--is-splits", type=int, default=10, metavar="S", help="Inception Score splits (default 10)")
    p.add_argument("--resolution", type=int, default=None, metavar="PX",
                   help="read a folder of images at this size (default: the reference's size)")
    p.add_argument("--channels", type=int, default=None, choices=(1, 3),
                   help="read a folder of images with this many channels (default: the reference's)")
    add_device(p, "the feature network (and sampling with --ckpt)")
    g = p.add_argument_group("sampling (with --ckpt)")
    g.add_argument("--n", type=int, default=1000, help="number of samples (default 1000)")
    g.add_argument("--sampler", default=None,
                   help="sampler name (default: the run's own, heun with 18 steps for a diffusion run; see "
                        "`pixdiff info --samplers`)")
    g.add_argument("--steps", type=int, default=None,
                   help="sampling steps (default: the run's with its own sampler, else the named sampler's)")
    g.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance weight (default 0: none)")
    g.add_argument("--null-class", type=int, default=None, metavar="K",
                   help="with --diffusers: the UNet's 'no class' embedding (for guidance)")
    p.set_defaults(func=run)
    return p


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def format_table(result: dict) -> str:
    m, pr = result["metrics"], result["protocol"]
    rows = []
    if "fd" in m:
        rows.append(("Fréchet distance", _fmt(m["fd"]["fd"])))
    if "kid" in m:
        rows.append(("KID (mean ± std)", f"{m['kid']['mean']:.3e} ± {m['kid']['std']:.1e}"))
    if "pr" in m:
        rows.append(("precision / recall", f"{m['pr']['precision']:.3f} / {m['pr']['recall']:.3f}"))
        rows.append(("density / coverage", f"{m['pr']['density']:.3f} / {m['pr']['coverage']:.3f}"))
    if "is" in m:
        rows.append(("Inception Score", f"{m['is']['mean']:.3f} ± {m['is']['std']:.3f}"))
    if "acc" in m:
        rows.append(("class accuracy", f"{m['acc']['accuracy']:.3f} (mean p(asked class) {m['acc']['mean_confidence']:.3f})"))
    if "mem" in m:
        mm = m["mem"]
        rows.append(("memorised (ratio < 1/3)", f"{mm['memorized_fraction']:.3f}"))
        rows.append(("closer than train NN median", f"{mm['closer_than_train_fraction']:.3f}"))
        rows.append(("NN ratio median", f"{mm['ratio_quantiles']['median']:.3f}"))
    width = max((len(r[0]) for r in rows), default=10)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    f, ref = pr["features"], pr["reference"]
    lines.append(f"-- N = {pr['samples']['count']} samples"
                 + (f" vs {ref['dataset']} (N = {ref['count']})" if ref else "")
                 + f"; features {f['name']} (weights sha256 {f['weights_sha256'][:12]}); seed {pr['seed']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from pixdiff.metrics.evaluate import evaluate_images, read_samples

    metrics = tuple(s.strip() for s in args.metrics.split(",") if s.strip()) if args.metrics else None
    if args.json is not None:
        check_output(args.json, (), "--json")
    if args.ref_cache is not None and not Path(args.ref_cache).is_file():  # read if there, else written
        check_output(Path(args.ref_cache), (), "--ref-cache")
    dev = device(args)
    conversion = None
    if args.ckpt is not None or args.diffusers is not None:
        from pixdiff.cli.sample import open_model

        at_least(args.n, 1, "--n")
        model = open_model(args)
        images, labels = model.sample(args.n, None, args.sampler, args.steps, args.guidance, args.seed, progress=True)
        if getattr(images, "ndim", 4) == 2:
            raise PixdiffError(f"{args.ckpt} is a 2-D toy run: its samples are points, not images. Write them with "
                               "`pixdiff sample --out x.npz` and score them against the known mixture with "
                               "pixdiff.metrics.sliced.SlicedW1")
        origin = {"ckpt": str(args.ckpt)} if args.ckpt is not None else {"diffusers": str(args.diffusers)}
        source = {**origin, "n": args.n, "sampler": args.sampler, "steps": args.steps,
                  "guidance": args.guidance, "sampling_seed": args.seed}
        if args.ref is None:  # a run on embedded data is compared with that data
            data = getattr(getattr(getattr(model, "config", None), "data", None), "name", None)
            args.ref = data if data in ("digits", "photos") else "digits"
    else:
        args.ref = "digits" if args.ref is None else args.ref
        images, labels, conversion = read_samples(args.images, args.ref, args.resolution, args.channels)
        source = {"images": str(args.images)}
        if conversion:
            note(f"pixdiff eval: {conversion}")
    if args.features is None:
        args.features = "photos" if str(args.ref) == "photos" else "digits"
    if metrics is None:  # default: every metric that applies to what was given
        skip = set()
        if labels is None or args.features not in CLASS_NAMES:
            skip.add("acc")  # needs labels and a classifier over a dataset's own labels (digits, photos)
        if str(args.ref).endswith(".safetensors"):
            skip.add("mem")  # needs the training images, not their statistics
        metrics = tuple(m for m in METRICS if m not in skip)
    result = evaluate_images(images, labels, ref=args.ref, metrics=metrics, features=args.features, seed=args.seed,
                             inception_weights=args.inception_weights, ref_split=args.ref_split,
                             ref_cache=args.ref_cache, kid_subsets=args.kid_subsets,
                             kid_subset_size=args.kid_subset_size, pr_k=args.pr_k, is_splits=args.is_splits,
                             device=dev)
    result["protocol"]["source"] = source
    result["protocol"]["conversion"] = conversion
    print(format_table(result))
    if args.json is not None:
        from pixdiff.atomic import atomic_write_text

        with writing(args.json, "--json"):
            args.json.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.json, json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    return 0
