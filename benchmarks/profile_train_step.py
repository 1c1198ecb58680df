"""Where a training step's time goes: wall time of ``pixdiff.train.train_step`` by part, and
torch.profiler's top operators.

    python benchmarks/profile_train_step.py [--device cuda] [--preset tiny] [--batch 256]
        [--precision bf16] [--steps 30] [--data digits]

Prints the median wall time of a whole step (synchronised), of the data call alone, and of the
EMA update alone, then the profiler's table of the 25 operators with the most self CPU time and
the kernel-launch count per step. A small network on a fast GPU is launch-bound: the table says
whether the host (Python, launches, synchronisations) or the device is the limit.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from pixdiff import train as train_mod
from pixdiff.config import TrainConfig


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn, dev, n):
    ts = []
    for _ in range(n):
        _sync(dev)
        t = time.perf_counter()
        fn()
        _sync(dev)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--precision", default=None, help="default: bf16 on CUDA, fp32 on the CPU")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    cfg = TrainConfig()
    cfg.data.name, cfg.model.preset, cfg.optim.batch = args.data, args.preset, args.batch
    cfg.run.precision = args.precision or ("bf16" if dev.type == "cuda" else "fp32")
    cfg.run.images = args.batch * 10**6
    st, _, _ = train_mod._setup(cfg, __import__("pathlib").Path(tempfile.mkdtemp()), False, dev, False)

    def step():
        train_mod.train_step(st)

    for _ in range(5):
        step()
    whole = _timed(step, dev, args.steps)
    data = _timed(lambda: st.data(st.step), dev, args.steps)
    ema = _timed(lambda: train_mod.ema_update(st), dev, args.steps)
    print(f"device {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}), preset {args.preset}, "
          f"batch {args.batch}, {cfg.run.precision}")
    print(f"step {whole * 1e3:.2f} ms ({args.batch / whole:.0f} img/s); data {data * 1e3:.2f} ms; ema {ema * 1e3:.2f} ms")
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(10):
            step()
        _sync(dev)
    ka = prof.key_averages()
    print(ka.table(sort_by="self_cpu_time_total", row_limit=25))
    launches = sum(e.count for e in ka if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    print(f"kernel launches per step: {launches / 10:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
