"""DDP scaling on CPU: training images/s of 1 vs 2 processes (gloo) at a fixed global batch.

Each run is a real `pixdiff train` launched by torchrun,

    python -m torch.distributed.run --standalone --nproc_per_node=N -m pixdiff train --preset tiny
        --data digits --batch B --steps S --log-every B ...

with OMP_NUM_THREADS = T threads per process. The default configurations N×T are 1×cores and
2×(cores/2) (every configuration uses all cores: the ratio asked for), plus 1×(cores/2), which
separates DDP's own scaling (1×1 → 2×1, same threads per process) from the cost of intra-op threads
(1×2 → 1×1). images/s is read from the
run's log.jsonl (one record per optimizer step: images since the last record / wall time), skipping
the first records as warm-up (allocator, oneDNN kernel selection, gloo's first all-reduce), and
summarised by the median. The global batch (and therefore the arithmetic per step) is the same for
every N; N = 2 runs half the batch per process and adds one all-reduce of the 1.9 M gradients per step.

    python benchmarks/ddp_scaling.py [--configs 1x2 2x1 1x1] [--batch 32] [--steps 10] [--warmup 3] [--repeats 1]
        [--preset tiny] [--cores N] [--append docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import append_section, machine  # noqa: E402 - benchmarks/ is on sys.path


def run_once(nproc: int, threads: int, args, workdir: Path) -> dict:
    out = workdir / f"run-{nproc}-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "pixdiff", "train", "--data", "digits", "--preset", args.preset, "--batch", str(args.batch),
           "--steps", str(args.steps), "--log-every", str(args.batch), "--ckpt-every", str(10 ** 12),
           "--out", str(out), "--quiet"] + args.train_args
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-4000:] + p.stderr[-4000:])
        raise SystemExit(f"torchrun with {nproc} process(es) failed (exit {p.returncode})")
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["img_per_s"] for r in recs[args.warmup:]]
    if not rates:
        raise SystemExit(f"only {len(recs)} log records; use --steps > --warmup ({args.warmup})")
    return {"nproc": nproc, "threads": threads, "median": statistics.median(rates), "rates": rates, "wall": wall,
            "cmd": f"OMP_NUM_THREADS={threads} python " + " ".join(shlex.quote(c) for c in cmd[1:]).replace(str(out), "OUT")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=None, metavar="NxT",
                    help="processes x OMP threads per process (default: 1xC 2x(C/2) 1x(C/2) for C = --cores)")
    ap.add_argument("--batch", type=int, default=32, help="global batch, fixed across process counts")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    ap.add_argument("--warmup", type=int, default=3, help="log records (steps) skipped as warm-up")
    ap.add_argument("--repeats", type=int, default=1, help="runs per configuration, interleaved")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--cores", type=int, default=os.cpu_count(), help="cores to share out (default: all)")
    ap.add_argument("--train-args", nargs=argparse.REMAINDER, default=[],
                    help="extra `pixdiff train` flags (must come last)")
    ap.add_argument("--append", default=None, help="append a markdown section to this file (e.g. docs/benchmarks.md)")
    args = ap.parse_args()
    half = max(1, args.cores // 2)
    specs = args.configs or [f"1x{args.cores}", f"2x{half}", f"1x{half}"]
    try:
        configs = list(dict.fromkeys(tuple(int(v) for v in c.lower().split("x")) for c in specs))
    except ValueError:
        raise SystemExit(f"--configs takes NxT pairs such as 2x1 (got {specs})") from None
    for n, t in configs:
        if n < 1 or t < 1 or args.batch % n:
            raise SystemExit(f"bad configuration {n}x{t}: need N, T >= 1 and --batch {args.batch} divisible by N")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results: dict[tuple[int, int], list[dict]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="pixdiff-ddp-") as tmp:
        for rep in range(args.repeats):
            for n, t in configs:
                r = run_once(n, t, args, Path(tmp))
                results[(n, t)].append(r)
                print(f"{n} process(es) x {t} thread(s), rep {rep}: median {r['median']:.2f} img/s (steps after "
                      f"warm-up: {', '.join(f'{v:.1f}' for v in r['rates'])}); wall {r['wall']:.0f} s", flush=True)
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    med = {c: statistics.median([r["median"] for r in rs]) for c, rs in results.items()}
    base = configs[0]
    lines = [f"| processes × OMP threads | per-process batch | images/s (median) | vs {base[0]}×{base[1]} |",
             "|---|---:|---:|---:|"]
    for n, t in configs:
        lines.append(f"| {n} × {t} | {args.batch // n} | {med[(n, t)]:.2f} | {med[(n, t)] / med[base]:.2f}× |")
    table = "\n".join(lines)
    print("\n" + table)
    if (1, half) in med and (2, half) in med:
        print(f"DDP at equal threads per process (2×{half} vs 1×{half}): {med[(2, half)] / med[(1, half)]:.2f}×")
    if args.append:
        argv = " ".join(shlex.quote(a) for a in sys.argv[1:])
        runs = "\n".join(f"    {results[c][0]['cmd']}" for c in configs)
        section = (f"\n## DDP scaling on CPU (benchmarks/ddp_scaling.py)\n\n"
                   f"Date: {date}. Machine: {machine()}; load average {load0:.1f} before, {load1:.1f} after "
                   f"(1-min).\n\n"
                   f"Command: `HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ddp_scaling.py {argv}`, which runs\n\n"
                   f"{runs}\n\n"
                   f"`{args.preset}` preset, fp32, global batch {args.batch} for every configuration, {args.steps} "
                   f"steps per run, the first {args.warmup} log records (steps) skipped, median of the rest "
                   f"({args.repeats} run(s) per configuration, interleaved).\n\n{table}\n")
        append_section(args.append, section)


if __name__ == "__main__":
    main()
