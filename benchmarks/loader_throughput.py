"""Data-loader throughput: an image folder (decoded per item) vs a prepared file (memory-mapped),
the same worker count, in one run.

Generates a folder of N synthetic 64×64 RGB PNGs (smooth gradients plus noise, so PNG compression is
neither trivial nor absent), then measures, each in its own process so that peak RSS belongs to one
phase: (a) ``prepare_data`` time; (b) time to the first batch (open the dataset, start the
DataLoader workers, fetch step 0) for the prepared file and for the folder; (c) loader images/s over
one epoch of steps (uint8 → float on the CPU included, flips on) for the folder, the prepared file,
and torchvision's ``ImageFolder`` + ``DataLoader`` when torchvision is installed; (d) peak RSS
(``ru_maxrss``) of the main process and of its worker processes. Also the old path for reference:
``pixdiff.data.load`` decoding the whole folder into a float tensor.

    python benchmarks/loader_throughput.py [--n 2000 | --n 40000] [--workers 2] [--batch 64] \
        [--append docs/benchmarks.md]

Caveat: the prepared file was just written, so it sits in the page cache (as it would after the
first epoch of a real run); a cold disk would lower the first epoch's prepared-file rate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import append_section, machine  # noqa: E402 - benchmarks/ is on sys.path

_BASE = [0.0]


def _rss() -> dict:
    """Peak RSS of this process, its growth over the RSS after imports, and the peak of its
    reaped children (the worker processes; call after they exit)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"rss_mb": round(own, 1), "rss_growth_mb": round(own - _BASE[0], 1), "rss_workers_mb": round(kids, 1)}


def _current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def make_folder(root: Path, n: int, size: int = 64) -> None:
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        a, b, c = rng.random(3)
        base = np.stack([a * yy + (1 - a) * xx, b * xx, c * (1 - yy)], -1) * 200
        img = np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"{i:06d}.png")


def phase(args) -> dict:
    """One measurement, in this process."""
    import torch

    import pixdiff.data  # noqa: F401 - imports before the RSS baseline
    import pixdiff.datasets  # noqa: F401

    torch.set_num_threads(1)
    _BASE[0] = _current_rss_mb()
    if args.phase == "prepare":
        from pixdiff.datasets import prepare_data

        t0 = time.perf_counter()
        prepare_data(args.folder, args.prepared, 64, workers=args.workers, progress=False)
        return {"seconds": time.perf_counter() - t0, **_rss()}
    if args.phase == "eager":
        from pixdiff import datasets

        t0 = time.perf_counter()
        ds = datasets.load(args.folder, 64, 3)
        return {"seconds": time.perf_counter() - t0, "images": len(ds), **_rss()}
    if args.phase == "torchvision":
        try:
            import torchvision
            from torchvision import transforms
        except ImportError:
            return {"skipped": "torchvision not installed"}
        from torch.utils.data import DataLoader

        t0 = time.perf_counter()
        tf = transforms.Compose([transforms.CenterCrop(64), transforms.PILToTensor()])
        ds = torchvision.datasets.ImageFolder(str(Path(args.folder).parent), transform=tf)
        dl = DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                        persistent_workers=args.workers > 0, generator=torch.Generator().manual_seed(0))
        it = iter(dl)
        next(it)
        first = time.perf_counter() - t0
        t1, k = time.perf_counter(), 0
        for _ in range(args.steps):
            try:
                x, _ = next(it)
            except StopIteration:
                it = iter(dl)
                x, _ = next(it)
            x = x.float() / 127.5 - 1
            k += x.shape[0]
        rate = k / (time.perf_counter() - t1)
        del it, dl
        import gc

        gc.collect()
        return {"first_batch_s": first, "img_per_s": rate, **_rss()}
    from pixdiff.datasets import StepBatches, open_images

    src = args.prepared if args.phase == "prepared" else args.folder
    t0 = time.perf_counter()
    ds = open_images(src, 64, 3)
    sb = StepBatches(ds, seed=0, batch=args.batch, device="cpu", hflip=True, workers=args.workers, prefetch=4)
    sb(0)
    first = time.perf_counter() - t0
    t1 = time.perf_counter()
    for s in range(1, args.steps + 1):
        sb(s)
    rate = args.steps * args.batch / (time.perf_counter() - t1)
    sb.close()  # reaps the workers, so that RUSAGE_CHILDREN counts them
    return {"first_batch_s": first, "img_per_s": rate, **_rss()}


def run_phase(name: str, args, folder: Path, prepared: Path) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--folder", str(folder), "--prepared", str(prepared),
           "--workers", str(args.workers), "--batch", str(args.batch), "--steps", str(args.steps)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if r.returncode != 0:
        sys.stderr.write(r.stderr[-3000:])
        raise SystemExit(f"phase {name} failed")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="synthetic images (e.g. 40000 for the large run)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: one epoch)")
    p.add_argument("--append", default=None, help="append a section to this markdown file")
    p.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    p.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    p.add_argument("--prepared", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase:
        print(json.dumps(phase(args)))
        return
    args.steps = args.steps or max(1, args.n // args.batch)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder, prepared = Path(tmp) / "imgs" / "all", Path(tmp) / "DATA"
        t0 = time.perf_counter()
        make_folder(folder, args.n)
        gen = time.perf_counter() - t0
        mb = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
        print(f"generated {args.n} PNGs ({mb:.0f} MB) in {gen:.1f} s", flush=True)
        res = {}
        for name in ("prepare", "prepared", "folder", "torchvision", "eager"):
            res[name] = run_phase(name, args, folder, prepared)
            print(name, res[name], flush=True)
        npy_mb = (prepared / "images.npy").stat().st_size / 2**20
    load1 = os.getloadavg()[0]
    f_rate = res["folder"]["img_per_s"]

    def row(label, r):
        if "skipped" in r:
            return f"| {label} | skipped ({r['skipped']}) | | | |"
        return (f"| {label} | {r['first_batch_s']:.2f} s | {r['img_per_s']:.0f} | {r['img_per_s'] / f_rate:.2f}× | "
                f"{r['rss_mb']:.0f} (+{r['rss_growth_mb']:.0f}) / {r['rss_workers_mb']:.0f} MB |")

    table = "\n".join([
        "| loader | time to first batch | images/s | vs folder | peak RSS main (+ over imports) / a worker |",
        "|---|---:|---:|---:|---:|",
        row("image folder (decode per item)", res["folder"]),
        row("prepared file (memory-mapped .npy)", res["prepared"]),
        row("torchvision ImageFolder + DataLoader", res["torchvision"]),
    ])
    pr, eg = res["prepare"], res["eager"]
    extra = (f"- prepare ({args.workers} worker processes): **{pr['seconds']:.1f} s** for {args.n} images "
             f"({args.n / pr['seconds']:.0f} img/s), peak RSS {pr['rss_mb']:.0f} MB main (+{pr['rss_growth_mb']:.0f} over imports) / "
             f"{pr['rss_workers_mb']:.0f} MB a worker; {mb:.0f} MB of PNGs → {npy_mb:.0f} MB .npy\n"
             f"- old path, `pixdiff.data.load` of the folder into a float tensor: {eg['seconds']:.1f} s, "
             f"peak RSS {eg['rss_mb']:.0f} MB (+{eg['rss_growth_mb']:.0f} over imports; grows with N: 48 KB of float32 per 64×64 RGB image)\n")
    print("\n" + table + "\n" + extra)
    if args.append:
        argv = " ".join(shlex.quote(a) for a in sys.argv[1:])
        section = (f"\n## Data loader: image folder vs prepared file (benchmarks/loader_throughput.py)\n\n"
                   f"Date: {time.strftime('%Y-%m-%d')}. Machine: {machine()}; load average {load0:.1f} before, "
                   f"{load1:.1f} after (1-min).\n\n"
                   f"Command: `.venv/bin/python benchmarks/loader_throughput.py {argv}`. {args.n} synthetic 64×64 RGB "
                   f"PNGs, batch {args.batch}, {args.workers} DataLoader workers for every loader, {args.steps} timed "
                   f"steps after the first batch (uint8 → float [−1, 1] and flips included for pixdiff; "
                   f"torchvision: CenterCrop + PILToTensor + the same float conversion). Each row runs in its "
                   f"own process; RSS is `ru_maxrss` of the main process (its growth over the RSS after imports in brackets; file-backed pages of the memory map count in it) and the largest worker's (RUSAGE_CHILDREN).\n\n"
                   f"{table}\n\n{extra}")
        append_section(args.append, section)


if __name__ == "__main__":
    main()
