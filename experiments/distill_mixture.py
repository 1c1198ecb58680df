"""Few-step students on the exact 2-D mixture against the teacher's samplers (docs/distillation.md).

Teacher: the exact denoiser of ``GaussianMixture.toy_2d`` (``--teacher mixture``). Score: sliced W1
to the *true* mixture (64 directions, exact projected quantiles; ``pixdiff.distill.common.SlicedW1``,
the score of docs/benchmarks.md) of N samples (sample i from seed i), mean over ``--seeds`` runs.

Students (``pixdiff.distill``), each at 1, 2, 4 and 8 steps:
  cd, ct         one run each, sampled by multistep consistency sampling at K steps (K NFE)
  progressive    one run from 64 teacher steps down to 1; the round's students at 8, 4, 2, 1
  moment         one run per K (the generator is tied to its K-step grid), ancestral, K NFE
  genie          one head; TTM-2 on the EDM grid: K teacher + K head evaluations
Teacher: every registered pixdiff sampler (default grid) and dpmpp_2m on a λ-uniform grid over
[−10, 8], at the largest step count with NFE ≤ 1, 2, 4, 8 and at 250; "best" is the lowest score.

    .venv/bin/python experiments/distill_mixture.py        # students in /tmp, numbers in the .json beside
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pixdiff  # noqa: E402
from pixdiff import samplers as S  # noqa: E402
from pixdiff import schedules  # noqa: E402
from pixdiff.distill import DistillConfig, distill  # noqa: E402
from pixdiff.distill.common import SlicedW1, toy_mixture  # noqa: E402

KS = (1, 2, 4, 8)
NFES = (1, 2, 4, 8, 250)
SKIP = {"consistency", "langevin"}  # consistency sampling calls a consistency function; langevin needs many levels

STUDENTS = {  # name: (method, steps, images, lr, options); images / lr chosen for a CPU budget of minutes
    "cd": ("cd", 1, 512_000, 1e-3, {}),
    "ct": ("ct", 1, 1_024_000, 1e-3, {}),
    "progressive": ("progressive", 1, 896_000, 1e-3, {"start_steps": 64}),
    "moment-1": ("moment", 1, 256_000, 2e-4, {}),
    "moment-2": ("moment", 2, 256_000, 2e-4, {}),
    "moment-4": ("moment", 4, 256_000, 2e-4, {}),
    "moment-8": ("moment", 8, 256_000, 2e-4, {}),
    "genie": ("genie", 4, 256_000, 1e-3, {}),
}


def teacher_table(gm, score, n, seeds):
    variants = {name: (name, {}) for name in S.available() if name not in SKIP}
    variants["dpmpp_2m-uniform_logsnr"] = ("dpmpp_2m", {"grid": "uniform_logsnr",
                                                        "schedule": schedules.CosineSchedule(-10.0, 8.0)})
    rows = {}
    for label, (name, opts) in variants.items():
        rows[label] = {}
        for budget in NFES:
            steps = None
            for k in range(budget, 0, -1):  # the largest steps whose NFE fits the budget (probed on 2 samples)
                try:
                    _, nfe = S.sample(gm.denoise, (2, 2), sampler=name, steps=k, return_nfe=True,
                                      generator=torch.Generator().manual_seed(0), **opts)
                except Exception:  # noqa: BLE001 - a sampler that needs more steps than the budget allows
                    continue
                if nfe <= budget:
                    steps = (k, nfe)
                    break
            if steps is None:
                continue
            vals = []
            for sd in seeds:
                x = S.sample(gm.denoise, (n, 2), sampler=name, steps=steps[0],
                             generator=torch.Generator().manual_seed(sd), **opts)
                vals.append(score(x))
            rows[label][budget] = {"steps": steps[0], "nfe": steps[1], "sw": sum(vals) / len(vals)}
        print(label, {b: round(r["sw"], 4) for b, r in rows[label].items()}, flush=True)
    return rows


def train_students(out: Path, fresh: bool):
    runs = {}
    for name, (method, steps, images, lr, opts) in STUDENTS.items():
        run = out / name
        if fresh and run.exists():
            shutil.rmtree(run)
        t = time.perf_counter()
        if not (run / "checkpoints").is_dir():
            distill(DistillConfig(method, "mixture", steps=steps, images=images, lr=lr, options=opts), run,
                    progress=False)
            secs = time.perf_counter() - t
        else:
            secs = None
        runs[name] = {"run": str(run), "images": images, "seconds": secs, "lr": lr, "options": opts}
        print(name, "trained", secs, flush=True)
    return runs


def student_table(out: Path, score, n, seeds):
    def mean_score(pipe, k, sampler=None):
        return sum(score(pipe.points(n, k, seed=sd * n, sampler=sampler)) for sd in seeds) / len(seeds)

    rows = {}
    for name in ("cd", "ct", "genie"):
        pipe = pixdiff.load(out / name, device="cpu")
        rows[name] = {k: mean_score(pipe, k) for k in KS}
    rows["progressive"] = {}
    for k in KS:
        pipe = pixdiff.load(out / "progressive" / "students" / f"steps-{k:03d}", device="cpu")
        rows["progressive"][k] = mean_score(pipe, k)
    rows["moment"] = {k: mean_score(pixdiff.load(out / f"moment-{k}", device="cpu"), k) for k in KS}
    for name, r in rows.items():
        print(name, {k: round(v, 4) for k, v in r.items()}, flush=True)
    return rows


def plot(students, teacher, floor, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, r in students.items():
        ax.plot(KS, [r[k] for k in KS], "o-", label=f"{name} student" + (" (K teacher + K head evals)" if name == "genie" else ""))
    best = [min(v[b]["sw"] for v in teacher.values() if b in v) for b in KS]
    ax.plot(KS, best, "k--s", label="teacher, best sampler at NFE ≤ K")
    t250 = min(v[250]["sw"] for v in teacher.values() if 250 in v)
    ax.axhline(t250, color="gray", lw=1, label=f"teacher, best at 250 NFE ({t250:.4f})")
    ax.axhline(floor, color="gray", lw=1, ls=":", label=f"noise floor of N samples ({floor:.4f})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(KS, [str(k) for k in KS])
    ax.set_xlabel("steps K (network evaluations)")
    ax.set_ylabel("sliced W1 to the true mixture")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/pixdiff_distill_mixture"), help="the student runs")
    ap.add_argument("--json", type=Path, default=ROOT / "experiments" / "distill_mixture_results.json")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--fresh", action="store_true", help="retrain the students")
    ap.add_argument("--png", type=Path, default=ROOT / "docs" / "distillation_mixture.png")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    gm = toy_mixture("mixture")
    score = SlicedW1(gm, args.n)
    seeds = list(range(args.seeds))
    floor = sum(score(gm.sample(args.n, torch.Generator().manual_seed(100 + s))) for s in seeds) / len(seeds)
    runs = train_students(args.out, args.fresh)
    students = student_table(args.out, score, args.n, seeds)
    teacher = teacher_table(gm, score, args.n, seeds)
    result = {"n": args.n, "seeds": seeds, "floor": floor, "runs": runs, "students": students, "teacher": teacher,
              "seconds": time.perf_counter() - t0, "torch": torch.__version__}
    args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    plot(students, teacher, floor, args.png)
    best = {b: min(((v[b]["sw"], k) for k, v in teacher.items() if b in v)) for b in NFES}
    print("floor", round(floor, 4))
    for b in NFES:
        print(f"teacher best at NFE<={b}: {best[b][1]} {best[b][0]:.4f}")
    b4 = best[4][0]
    for name, r in students.items():
        print(f"{name}: 4-step {r[4]:.4f} {'beats' if r[4] < b4 else 'does not beat'} teacher-4 {b4:.4f}; "
              f"1-step {r[1]:.4f} = {r[1] / b4:.2f}x teacher-4 ({'within' if r[1] <= 2 * b4 else 'not within'} 2x)")
    print("seconds", round(time.perf_counter() - t0, 1))


if __name__ == "__main__":
    main()
