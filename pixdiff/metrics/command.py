"""`pixdiff eval`: score images (or a checkpoint's samples) and print a table; ``--json`` keeps
every number with the protocol that produced it.

`add_parser(subparsers)` registers the subcommand (pixdiff.cli calls it); `run(args) -> int`
executes it. Also runnable alone: ``python -m pixdiff.metrics.command --images s.npz``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pixdiff.atomic import atomic_write_text

from .evaluate import METRICS, evaluate_images, read_images

__all__ = ["add_parser", "run", "format_table", "main"]

_EPILOG = """\
metrics (comma-separated, default: all that apply):
  fd    Fréchet distance of Gaussian fits to the features (FID with --features inception)
  kid   kernel distance: unbiased MMD² with k(x,y) = (x·y/d + 1)³, mean ± std over subsets
  pr    precision / recall (k-NN manifolds, k = --pr-k) and density / coverage
  is    Inception Score of the feature net's class probabilities
  acc   class accuracy: does each sample show the class it was sampled for? (needs labels)
  mem   memorisation: nearest / 2nd-nearest training image distance ratio (pixels), flagged < 1/3

examples:
  pixdiff eval --images samples.npz                         # vs the digits train split
  pixdiff eval --images samples.npz --metrics fd,acc --json scores.json
  pixdiff eval --images samples.npz --ref real.npz --features inception \\
               --inception-weights pt_inception-2015-12-05-6726825d.pth
  pixdiff eval --ckpt runs/digits --n 1000 --steps 50

The Inception weights are not downloaded: get pytorch-fid's file from
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
See docs/metrics.md for formulas, sources and the protocol recorded in --json.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="score images or a checkpoint's samples (FD, KID, precision/recall, IS, accuracy, memorisation)",
        description="Score generated images against a reference set under a recorded protocol.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    p.set_defaults(func=run)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="FILE.npz|DIR",
                     help="samples: an npz with images uint8 [N,H,W,C] (+ optional labels), or a folder of images")
    src.add_argument("--ckpt", metavar="DIR", help="a training run / checkpoint folder to sample from, then score")
    p.add_argument("--ref", default="digits", metavar="digits|FILE.npz|DIR|STATS.safetensors",
                   help="reference: the embedded digits (split --ref-split), real images, or cached statistics (default: digits)")
    p.add_argument("--ref-split", default="train", choices=("train", "test", "all"), help="digits split (default: train)")
    p.add_argument("--ref-cache", metavar="FILE.safetensors", help="read / write the reference statistics here")
    p.add_argument("--metrics", default=None, metavar="LIST", help=f"comma-separated subset of {','.join(METRICS)}")
    p.add_argument("--features", default="digits", choices=("digits", "inception"), help="feature network (default: digits)")
    p.add_argument("--inception-weights", metavar="PATH", help="pytorch-fid's pt_inception-2015-12-05 weights (.pth or .safetensors)")
    p.add_argument("--json", metavar="FILE", help="write numbers + protocol as JSON")
    p.add_argument("--seed", type=int, default=0, help="seed for KID subsets (and sampling with --ckpt)")
    p.add_argument("--kid-subsets", type=int, default=100, metavar="S", help="KID: number of random subsets (default 100)")
    p.add_argument("--kid-subset-size", type=int, default=1000, metavar="M",
                   help="KID: subset size, capped at the smaller set's N (default 1000)")
    p.add_argument("--pr-k", type=int, default=3, metavar="K", help="k of the k-NN balls (default 3, Kynkäänniemi et al.)")
    p.add_argument("--is-splits", type=int, default=10, metavar="S", help="Inception Score splits (default 10)")
    p.add_argument("--resolution", type=int, default=16, metavar="PX",
                   help="resize images read from a folder to this size (default 16)")
    p.add_argument("--channels", type=int, default=1, choices=(1, 3), help="channels of images read from a folder (default 1)")
    p.add_argument("--device", default="cpu", help="where the feature network runs (default cpu)")
    g = p.add_argument_group("sampling (with --ckpt)")
    g.add_argument("--n", type=int, default=1000, help="number of samples (default 1000)")
    g.add_argument("--sampler", default=None, help="sampler name (default: the checkpoint's)")
    g.add_argument("--steps", type=int, default=None, help="sampling steps (default: the sampler's)")
    g.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: none)")


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
    metrics = tuple(s.strip() for s in args.metrics.split(",") if s.strip()) if args.metrics else None
    try:
        if args.ckpt is not None:
            try:
                from pixdiff.cli_sample import sample_checkpoint
            except ImportError:
                print("pixdiff eval: --ckpt needs pixdiff.cli_sample.sample_checkpoint, which this version does not "
                      "have yet; sample with `pixdiff sample` and pass the npz with --images", file=sys.stderr)
                return 2
            images, labels = sample_checkpoint(args.ckpt, args.n, args.sampler, args.steps, args.guidance, args.seed)
            source = {"ckpt": str(args.ckpt), "n": args.n, "sampler": args.sampler, "steps": args.steps,
                      "guidance": args.guidance, "sampling_seed": args.seed}
        else:
            images, labels = read_images(args.images, args.resolution, args.channels)
            source = {"images": str(args.images)}
        if metrics is None:  # default: every metric that applies to what was given
            skip = set()
            if labels is None or args.features != "digits":
                skip.add("acc")  # needs labels and the digits classes
            if str(args.ref).endswith(".safetensors"):
                skip.add("mem")  # needs the training images, not their statistics
            metrics = tuple(m for m in METRICS if m not in skip)
        result = evaluate_images(images, labels, ref=args.ref, metrics=metrics, features=args.features, seed=args.seed,
                                 inception_weights=args.inception_weights, ref_split=args.ref_split,
                                 ref_cache=args.ref_cache, kid_subsets=args.kid_subsets,
                                 kid_subset_size=args.kid_subset_size, pr_k=args.pr_k, is_splits=args.is_splits,
                                 device=args.device)
    except (ValueError, FileNotFoundError) as e:
        print(f"pixdiff eval: error: {e}", file=sys.stderr)
        return 2
    result["protocol"]["source"] = source
    print(format_table(result))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pixdiff eval", description="Score generated images against a reference set.",
                                epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
