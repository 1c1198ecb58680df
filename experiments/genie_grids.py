"""GENIE's TTM-2 on the exact 2-D mixture under different time grids and with its analytical first
step (docs/distillation.md, "GENIE: grids and the analytical first step").

The head is the `genie` student of experiments/distill_mixture.py (trained here if ``--run`` does not
hold one: same settings, 256 000 images). Each variant is scored with the head (``Pipeline.points``
with the grid options) and with the exact derivative d_s ε by a JVP through the exact teacher (the
best any head can do on that grid), at K = 1, 2, 4, 8 steps; sliced W1 to the true mixture, N = 10 000
points, mean over 2 seeds, as distill_mixture.py. Teacher evaluations per sample: K (K − 1 with AFS),
plus as many head evaluations.

    .venv/bin/python experiments/genie_grids.py [--run /tmp/pixdiff_distill_mixture/genie]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pixdiff  # noqa: E402
from pixdiff.distill import DistillConfig, distill  # noqa: E402
from pixdiff.distill.common import SlicedW1, sigma_denoiser, toy_mixture  # noqa: E402
from pixdiff.distill.genie import genie_sample, ode_derivative  # noqa: E402

KS = (1, 2, 4, 8)
VARIANTS = {  # label: genie_sample options
    "edm (ρ = 7, σ_min 0.002; the default)": {"grid": "edm"},
    "edm + AFS": {"grid": "edm", "afs": True},
    "exponential, σ_min 0.002": {"grid": "exponential", "sigma_min": 0.002},
    "exponential, σ_min 0.05": {"grid": "exponential", "sigma_min": 0.05},
    "exponential, σ_min 0.05 + AFS": {"grid": "exponential", "sigma_min": 0.05, "afs": True},
}


class _ExactHead(torch.nn.Module):
    """A 'head' returning u = s · d_s ε computed exactly (JVP through the exact teacher): TTM-2's ceiling."""

    def __init__(self, teacher):
        super().__init__()
        self.D = sigma_denoiser(teacher, None)
        self.anchor = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, z, lam, cond=None):
        s = torch.exp(-0.5 * lam)
        x_sigma = z * torch.sqrt(1.0 + s * s)[:, None]
        with torch.enable_grad():
            _, k = ode_derivative(self.D, x_sigma, s)
        return k * s[:, None]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("/tmp/pixdiff_distill_mixture/genie"))
    ap.add_argument("--json", type=Path, default=ROOT / "experiments" / "genie_grids_results.json")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if not (args.run / "checkpoints").is_dir():
        distill(DistillConfig("genie", "mixture", steps=4, images=256_000, batch=256, lr=1e-3), args.run, progress=False)
    gm = toy_mixture("mixture")
    score = SlicedW1(gm, args.n)
    pipe = pixdiff.load(args.run, device="cpu")
    exact = _ExactHead(gm.denoise)
    rows = {}
    for label, opts in VARIANTS.items():
        rows[label] = {"options": opts, "head": {}, "exact": {}}
        for k in KS:
            if k == 1 and opts.get("afs"):
                continue  # one AFS step is the Gaussian's ODE step alone: no network at all
            head = [score(pipe.points(args.n, k, seed=sd * args.n, **opts)) for sd in range(args.seeds)]
            ideal = []
            for sd in range(args.seeds):
                noise = torch.cat([torch.randn((1, 2), generator=torch.Generator().manual_seed(sd * args.n + i))
                                   for i in range(args.n)]).double()
                ideal.append(score(genie_sample(gm.denoise, exact, noise, k, None, **opts)))
            rows[label]["head"][k] = sum(head) / len(head)
            rows[label]["exact"][k] = sum(ideal) / len(ideal)
            rows[label].setdefault("teacher_evals", {})[k] = k - 1 if opts.get("afs") else k
        print(label, {k: (round(rows[label]["head"][k], 4), round(rows[label]["exact"][k], 4)) for k in rows[label]["head"]},
              flush=True)
    result = {"run": str(args.run), "n": args.n, "seeds": args.seeds, "rows": rows,
              "seconds": time.perf_counter() - t0, "torch": torch.__version__}
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print("seconds", round(result["seconds"], 1))


if __name__ == "__main__":
    main()
