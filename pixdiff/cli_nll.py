"""`pixdiff nll`: negative log-likelihood of a checkpoint on a dataset, in bits/dim with a 95 % CI.

The images are first quantised to 8 bits (as they would be stored), then, for the density-based
estimators (``elbo``, ``ode``), uniformly dequantised, so the number bounds the discrete NLL in
expectation and is comparable across papers (see pixdiff/likelihood.py). ``vlb`` needs a model
trained on a discrete chain and uses IDDPM's discretised decoder instead.
"""

from __future__ import annotations

from pixdiff.errors import PixdiffError

import argparse
import json
import math
from pathlib import Path

import torch

__all__ = ["add_parser", "run", "checkpoint_nll"]

METHODS = ("elbo", "ode", "vlb")


def checkpoint_nll(path, data: str | None = None, split: str = "test", n: int = 100, method: str = "elbo",
                   seed: int = 0, weights: str = "ema", batch: int = 16, num_t: int = 64, progress: bool = False) -> dict:
    from tqdm import tqdm

    from pixdiff import data as data_mod
    from pixdiff import likelihood, losses
    from pixdiff.generate import load_denoiser
    from pixdiff.config import TrainConfig

    if method not in METHODS:
        raise PixdiffError(f"--method must be one of {', '.join(METHODS)} (got {method!r})")
    if n < 2:
        raise PixdiffError("--n must be at least 2 for a confidence interval")
    den, ck = load_denoiser(path, weights)
    cfg = TrainConfig.from_dict(ck.state["config"])
    ds = data_mod.load(data or cfg.data.name, cfg.data.resolution, cfg.data.channels, split=split)
    if len(ds.shape) != 3 or ds.shape != (cfg.data.channels, cfg.data.resolution, cfg.data.resolution):
        raise PixdiffError(f"data of shape {ds.shape} does not fit the model's {cfg.data.channels}×"
                         f"{cfg.data.resolution}×{cfg.data.resolution} images")
    n = min(n, len(ds))
    x = data_mod.from_uint8(data_mod.to_uint8(ds.images[:n]))  # the 8-bit images
    cond = ds.labels[:n] if (ds.labels is not None and den.num_classes) else None
    g = torch.Generator().manual_seed(seed)
    vals = []
    for lo in tqdm(range(0, n, batch), desc=f"nll ({method})", disable=not progress):
        xb, cb = x[lo:lo + batch], None if cond is None else cond[lo:lo + batch]
        if method == "elbo":
            r = likelihood.elbo_bpd(den, xb, g, cb, num_t=num_t, dequantize="uniform")
        elif method == "ode":
            r = likelihood.ode_nll(den, xb, g, cb, dequantize="uniform")
        else:
            sch = cfg.loss.build_schedule()
            r = likelihood.vlb_bpd(den, xb, sch, g, cb)
        vals.append(r.bpd.detach().cpu())
    bpd = torch.cat(vals)
    mean, half = likelihood.mean_ci(bpd)
    return {"bits_per_dim": mean, "ci95": half, "n": n, "method": method, "data": ds.name, "weights": weights,
            "seed": seed, "dequantization": "8-bit quantise + uniform" if method != "vlb" else "discretised decoder",
            "checkpoint": str(ck.path), "conditional": cond is not None}


def add_parser(sub) -> None:
    p = sub.add_parser("nll", help="negative log-likelihood of a checkpoint in bits/dim (with a 95% CI)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, type=Path, help="run folder or checkpoint folder")
    p.add_argument("--data", default=None, help="dataset (default: the one the model was trained on)")
    p.add_argument("--split", default="test", help="digits split: test (default), train or all")
    p.add_argument("--n", type=int, default=100, help="number of images (default 100)")
    p.add_argument("--method", default="elbo", choices=METHODS,
                   help="elbo: continuous-time ELBO (bound); ode: probability-flow ODE (slow); vlb: IDDPM discrete VLB")
    p.add_argument("--num-t", type=int, default=64, help="ELBO: noise levels per image (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw", action="store_true", help="use the raw instead of the EMA weights")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    p.set_defaults(func=run)


def run(args) -> int:
    res = checkpoint_nll(args.ckpt, args.data, args.split, args.n, args.method, args.seed,
                         "raw" if args.raw else "ema", num_t=args.num_t, progress=True)
    print(f"{res['bits_per_dim']:.4f} ± {res['ci95']:.4f} bits/dim ({res['method']}, n = {res['n']}, 95% CI)")
    if args.json:
        from pixdiff.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(res, indent=2) + "\n")
    return 0 if math.isfinite(res["bits_per_dim"]) else 1
