"""Sampler overhead: the time a sampler spends outside the network per step, as a fraction of one
forward of a tiny network at batch 256 (target < 2 %).

The network is a 4-layer, 64-channel conv net on 1×16×16 images (ε-prediction through
``pixdiff.denoiser.Denoiser``). Each sampler runs with a timer around every denoiser call; overhead
= (wall time of the whole sample − time inside the denoiser) / NFE, median over repeats.

    python benchmarks/sampler_overhead.py [--batch 256] [--steps 20] [--repeats 3] [--threads N]
        [--append docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

import torch
from _report import append_section, machine  # noqa: E402 - benchmarks/ is on sys.path
from torch import nn

from pixdiff import samplers as S
from pixdiff.denoiser import Denoiser


class TinyNet(nn.Module):
    def __init__(self, ch: int = 64):
        super().__init__()
        self.inp = nn.Conv2d(1, ch, 3, padding=1)
        self.mid = nn.Sequential(nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
                                 nn.SiLU())
        self.out = nn.Conv2d(ch, 1, 3, padding=1)
        self.emb = nn.Linear(1, ch)

    def forward(self, x, logsnr, cond=None):
        h = self.inp(x) + self.emb(logsnr[:, None].float() / 10)[:, :, None, None]
        return self.out(self.mid(h))


class Timed:
    """Wraps a denoiser and accumulates the seconds spent inside it."""

    def __init__(self, den):
        self.den, self.seconds = den, 0.0

    def __call__(self, z, logsnr, cond=None):
        t = time.perf_counter()
        out = self.den(z, logsnr, cond)
        self.seconds += time.perf_counter() - t
        return out


CASES = {  # sampler: options (steps come from --steps, except where noted)
    "ddpm": {}, "ddim": {"eta": 0.5}, "sid2_ddpm": {}, "euler": {}, "heun": {}, "edm": {},
    "dpm_solver": {"order": 3}, "dpmpp_2m": {}, "euler_maruyama": {}, "pc": {},
    "langevin": {"steps_per_level": 4}, "consistency": {},
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--append", default=None, help="append a markdown section to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    den = Denoiser(TinyNet(), parameterization="eps").eval()
    shape = (args.batch, 1, 16, 16)
    with torch.no_grad():
        z = torch.randn(shape)
        lam = torch.zeros(args.batch)
        for _ in range(3):
            den(z, lam)
        fwd = []
        for _ in range(10):
            t = time.perf_counter()
            den(z, lam)
            fwd.append(time.perf_counter() - t)
    fwd_ms = statistics.median(fwd) * 1e3
    rows = []
    for name, opts in CASES.items():
        steps = min(args.steps, 5) if name == "langevin" else (2 if name == "consistency" else args.steps)
        over, nfes = [], 0
        for r in range(args.repeats):
            timed = Timed(den)
            t = time.perf_counter()
            _, nfes = S.sample(timed, shape, name, steps=steps, generator=torch.Generator().manual_seed(r),
                               return_nfe=True, **opts)
            wall = time.perf_counter() - t
            over.append((wall - timed.seconds) / nfes)
        o = statistics.median(over) * 1e3
        rows.append((name, steps, nfes, o, 100.0 * o / fwd_ms))
    lines = [f"| sampler | steps | NFE | overhead per NFE (ms) | % of one forward ({fwd_ms:.2f} ms) |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {n} | {s} | {f} | {o:.3f} | {p:.2f} % |" for n, s, f, o, p in rows]
    table = "\n".join(lines)
    print(table)
    if args.append:
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
        cmd = "python benchmarks/sampler_overhead.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items() if v is not None and k != "append")
        section = (f"\n## Sampler overhead (benchmarks/sampler_overhead.py)\n\n"
                   f"Date: {date}. Machine: {machine()}, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} intra-op threads.\n\n"
                   f"Command: `{cmd}`\n\n"
                   f"Network: 4 conv layers, 64 channels, on 1×16×16 at batch {args.batch} (ε-prediction through "
                   f"`Denoiser`); one forward = {fwd_ms:.2f} ms (median of 10). Overhead = (wall time − time inside "
                   f"the denoiser) / NFE, median of {args.repeats} runs. Target: < 2 % of a forward.\n\n{table}\n")
        append_section(args.append, section)


if __name__ == "__main__":
    main()
