"""`pixdiff nll`: a run's negative log-likelihood in bits/dim (``pixdiff.likelihood.checkpoint_nll``)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from pixdiff.cli._common import add_device, at_least, check_output, device, writing
from pixdiff.cli._common import seed as seed_type
from pixdiff.likelihood import NLL_METHODS

__all__ = ["add_parser", "run"]

DESCRIPTION = """\
Negative log-likelihood of a checkpoint on a dataset, in bits/dim with a 95 % confidence interval.

The images are first quantised to 8 bits (as they would be stored), then, for the density-based
estimators (elbo, ode), uniformly dequantised, so the number bounds the discrete NLL in
expectation and is comparable across papers (see pixdiff/likelihood.py). vlb needs a model
trained on a discrete chain and uses IDDPM's discretised decoder instead.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("nll", help="negative log-likelihood of a checkpoint in bits/dim (with a 95%% CI)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, type=Path, help="run folder or checkpoint folder")
    p.add_argument("--data", default=None, help="dataset (default: the one the model was trained on)")
    p.add_argument("--split", default="test", choices=("test", "train", "all"), help="digits split (default test)")
    p.add_argument("--n", type=int, default=100, help="number of images (default 100)")
    p.add_argument("--method", default="elbo", choices=NLL_METHODS,
                   help="elbo: continuous-time ELBO (a bound; default); ode: probability-flow ODE (slow); "
                        "vlb: IDDPM discrete VLB")
    p.add_argument("--num-t", type=int, default=64, help="elbo: noise levels per image (default 64)")
    p.add_argument("--batch", type=int, default=16, help="images per batch (default 16)")
    p.add_argument("--seed", type=seed_type, default=0, help="seed of the noise and the dequantisation (default 0)")
    p.add_argument("--raw", action="store_true", help="use the raw instead of the EMA weights")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    add_device(p, "the model")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pixdiff.likelihood import checkpoint_nll

    at_least(args.n, 2, "--n")
    at_least(args.num_t, 1, "--num-t")
    at_least(args.batch, 1, "--batch")
    if args.json is not None:
        check_output(args.json, (), "--json")
    res = checkpoint_nll(args.ckpt, args.data, args.split, args.n, args.method, args.seed,
                         "raw" if args.raw else "ema", batch=args.batch, num_t=args.num_t, progress=True,
                         device=device(args))
    print(f"{res['bits_per_dim']:.4f} ± {res['ci95']:.4f} bits/dim ({res['method']}, n = {res['n']}, 95% CI)")
    if args.json is not None:
        from pixdiff.atomic import atomic_write_text

        with writing(args.json, "--json"):
            args.json.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.json, json.dumps(res, indent=2) + "\n")
    return 0 if math.isfinite(res["bits_per_dim"]) else 1
