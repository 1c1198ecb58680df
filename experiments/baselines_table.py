"""Score trained runs for docs/baselines.md: FD, KID, precision/recall, class accuracy (the run's
data's own feature network and classifier — digits or photos — pixdiff.metrics), bits/dim where the family has a likelihood, training
time (the trainer's own clock, RUN's checkpoint state / log) and sampling time per image, plus a
10×10 grid (row = class).

    python experiments/baselines_table.py --run runs/base/gan --n 500 --json gan.json --grid gan.png
    python experiments/baselines_table.py --run runs/base/diffusion --n 500 --sampler dpmpp_2m --steps 20 ...
    python experiments/baselines_table.py --markdown vae.json gan.json ...   # the table's rows

Run it with the thread count the timing should describe (e.g. OMP_NUM_THREADS=2 taskset -c 0,1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def markdown(paths) -> str:
    """docs/baselines.md's table from the JSON files this script wrote."""
    rows = ["| family | params | images seen | train time (s) | sampling (s / image) | FD ↓ | KID ↓ | precision | "
            "recall | class accuracy | bits/dim ↓ |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in paths:
        r = json.loads(Path(p).read_text())
        bpd = "—"
        if r.get("bits_per_dim") is not None:
            bpd = f"{r['bits_per_dim']:.2f}" + (f" ± {r['bits_per_dim_ci95']:.2f}" if r.get("bits_per_dim_ci95") else "")
            bpd += f" ({r['bits_per_dim_method'].split(' (')[0]})"
        name = r["family"] + (f" ({r['sampler']}, {r['steps']} steps)" if r.get("sampler") else "")
        rows.append(f"| {name} | {r['params'] / 1e6:.2f} M | {r['images']:,} | {r['train_seconds']:.0f} | "
                    f"{r['sample_seconds_per_image']:.4f} | {r['fd']:.2f} | {r['kid']:.2f} ± {r['kid_std']:.2f} | "
                    f"{r['precision']:.3f} | {r['recall']:.3f} | {r['accuracy']:.3f} | {bpd} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--markdown":
        print(markdown(sys.argv[2:]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--sampler", default=None, help="diffusion runs: sampler (default: the run's)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--nll-n", type=int, default=100, help="diffusion: test images for the ELBO bits/dim")
    ap.add_argument("--train-seconds", type=float, default=None,
                    help="training wall time measured outside (diffusion runs do not store it)")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--grid", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", torch.get_num_threads())))

    from pixdiff import checkpoint as ckpt_io
    from pixdiff import data as data_mod
    from pixdiff.generate import load
    from pixdiff.metrics import evaluate_images
    from pixdiff.train import read_log

    ck = ckpt_io.load(args.run)
    kind = ck.state.get("kind", "diffusion")
    logs = read_log(args.run / "log.jsonl")
    res = {"family": kind, "run": str(args.run), "images": ck.state["images"], "threads": torch.get_num_threads()}
    res["train_seconds"] = ck.state.get("train_seconds") if args.train_seconds is None else args.train_seconds
    res["log_last"] = logs[-1] if logs else None
    pipe = load(args.run, device="cpu")
    res["params"] = sum(p.numel() for p in (pipe.model if kind != "diffusion" else pipe.denoiser).parameters())
    t0 = time.perf_counter()
    images, labels = pipe.sample(args.n, None, args.sampler, args.steps, 0.0, args.seed)
    res["sample_seconds_per_image"] = (time.perf_counter() - t0) / args.n
    res["sampler"], res["steps"] = args.sampler, args.steps
    # each embedded dataset is scored with its own shipped feature network and classifier
    data = str(ck.state["config"]["data"]["name"])
    res["data"] = data
    ev = evaluate_images(images, labels, ref=data, metrics=("fd", "kid", "pr", "acc"), features=data, seed=0)
    m = ev["metrics"]
    res.update({"n": args.n, "fd": m["fd"]["fd"], "kid": m["kid"]["mean"], "kid_std": m["kid"]["std"],
                "precision": m["pr"]["precision"], "recall": m["pr"]["recall"], "accuracy": m["acc"]["accuracy"]})
    if kind in ("vae", "pixelcnn"):
        from pixdiff.baselines.common import bits_per_dim

        res["bits_per_dim"] = bits_per_dim(args.run, "test")
        res["bits_per_dim_method"] = "ELBO bound" if kind == "vae" else "exact"
    elif kind == "diffusion":
        from pixdiff.likelihood import checkpoint_nll

        r = checkpoint_nll(args.run, None, "test", args.nll_n, "elbo", 0, "ema", batch=50, num_t=32)
        res["bits_per_dim"], res["bits_per_dim_ci95"] = r["bits_per_dim"], r["ci95"]
        res["bits_per_dim_method"] = f"continuous-time ELBO (n = {args.nll_n}, 32 levels, dequantised)"
    if args.grid is not None:  # the first 100 samples (classes cycled), sorted by class: one row per digit
        k = min(100, len(images))
        order = sorted(range(k), key=lambda i: (int(labels[i]), i)) if labels is not None else list(range(k))
        g = images[order]
        data_mod.save_png(args.grid, data_mod.image_grid(data_mod.from_uint8(g), nrow=10), scale=4)
    args.json.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
