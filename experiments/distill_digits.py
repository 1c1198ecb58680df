"""Few-step students of the demo digits teacher (docs/distillation.md, "Digits").

Teacher: the `make demo` run (runs/demo/run, class-conditional 16×16 digits, preset tiny, v-pred),
EMA weights, guided by classifier-free guidance at w = ``--guidance`` (the demo's w = 1). Students
distil the *guided* teacher (``DistillConfig.guidance``) and sample unguided:

  progressive   64 → 1 teacher steps, a student per round (4, 2 and 1 steps scored)
  cd            consistency distillation, scored at 1, 2 and 4 steps

Scores of N samples (classes cycled 0…9, sample i from seed i): class accuracy by the demo's
independent classifier (scikit-learn SVM on the real 8×8 digits, ``pixdiff.demo``) and the Fréchet
distance in the digits feature space (``pixdiff.metrics``) to the train split; the teacher with
dpmpp_2m at 20 and 40 NFE for reference. Training cost: images and seconds of each run.

    python experiments/distill_digits.py --teacher runs/demo/run --out OUT_DIR [--scale 1.0]
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
from pixdiff.demo import classify_digits, digits_classifier  # noqa: E402
from pixdiff.distill import DistillConfig, distill  # noqa: E402
from pixdiff.distill.common import cosine_t_grid  # noqa: E402
from pixdiff.metrics.evaluate import evaluate_images  # noqa: E402


def score(images, labels, clf, device) -> dict:
    acc = float((classify_digits(clf, images) == labels).mean())
    ev = evaluate_images(images, labels, ref="digits", metrics=("fd",), features="digits", device=device)
    return {"accuracy": acc, "fd": float(ev["metrics"]["fd"]["fd"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, default=ROOT / "runs" / "demo" / "run")
    ap.add_argument("--out", type=Path, required=True, help="student runs and results.json go here")
    ap.add_argument("--json", type=Path, default=None, help="results (default OUT/results.json)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--guidance", type=float, default=1.0)
    ap.add_argument("--scale", type=float, default=1.0, help="training lengths × this (0.01 for a CPU smoke run)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--only", default="progressive,cd", help="comma-separated students to train")
    ap.add_argument("--skip-teacher", action="store_true", help="do not score the teacher")
    ap.add_argument("--teacher-steps", default="1,2,4,20,40",
                    help="the teacher's reference step counts to score (comma-separated)")
    ap.add_argument("--start-steps", type=int, default=64, help="progressive: the first teacher's DDIM steps")
    ap.add_argument("--progressive-images", type=int, default=6 * 384_000, help="progressive: images, all rounds")
    ap.add_argument("--cd-images", type=int, default=768_000, help="cd: training images")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--ema", type=float, default=0.999, help="per-step EMA decay of the students")
    ap.add_argument("--figures", type=Path, default=None,
                    help="instead of training: from OUT's runs and results, write FIGURES.png (FD and accuracy "
                         "vs steps) and FIGURES-<model>.png sample grids (row = digit)")
    args = ap.parse_args()
    if args.figures is not None:
        return figures(args)
    args.teacher_steps = {int(k) for k in args.teacher_steps.split(",") if k.strip()}
    dev = pixdiff.generate.resolve_device(args.device)
    out_json = args.json or args.out / "results.json"
    res = {"teacher": str(args.teacher), "guidance": args.guidance, "n": args.n, "device": str(dev),
           "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None, "students": {}, "teacher_scores": {}}
    if out_json.is_file():  # a stopped study resumes: scores already there are kept, not recomputed
        old = json.loads(out_json.read_text())
        if (old.get("n"), old.get("guidance")) == (args.n, args.guidance):
            res["teacher_scores"] = old.get("teacher_scores", {})
            res["students"] = old.get("students", {})

    def dump():
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(res, indent=1) + "\n")

    clf = digits_classifier()
    classes = list(range(10))
    teacher = pixdiff.load(args.teacher, device=dev)
    # the teacher at the students' step counts (DDIM on the students' cosine-t grid; dpmpp_2m at 4) and at
    # 20-40 steps; a guided step is 2 network passes (conditional and unconditional)
    refs = [("ddim", k, {"grid": cosine_t_grid(k)}) for k in (1, 2, 4)] + [("dpmpp_2m", k, {}) for k in (4, 20, 40)]
    for sampler, steps, opts in () if args.skip_teacher else refs:
        if steps not in args.teacher_steps or f"{sampler}-{steps}" + ("-cosine_t" if opts else "") in \
                res["teacher_scores"]:
            continue
        t = time.perf_counter()
        im, lab = teacher.sample(args.n, classes, sampler, None if opts else steps, args.guidance, seed=0, batch=500,
                                 **opts)
        key = f"{sampler}-{steps}" + ("-cosine_t" if opts else "")
        res["teacher_scores"][key] = {**score(im, lab, clf, dev), "steps": steps,
                                      "passes": steps * (2 if args.guidance else 1), "seconds": time.perf_counter() - t}
        print("teacher", key, res["teacher_scores"][key], flush=True)
        dump()
    plans = {
        "progressive": (DistillConfig("progressive", str(args.teacher), steps=1, batch=args.batch, lr=args.lr,
                                      ema=args.ema, images=int(args.progressive_images * args.scale),
                                      guidance=args.guidance, options={"start_steps": args.start_steps}), (4, 2, 1)),
        "cd": (DistillConfig("cd", str(args.teacher), steps=1, batch=args.batch, lr=args.lr, ema=args.ema,
                             images=int(args.cd_images * args.scale), guidance=args.guidance), (1, 2, 4)),
    }
    for name, (cfg, ks) in plans.items():
        if name not in args.only.split(",") or name in res["students"]:
            continue
        run = args.out / name
        t = time.perf_counter()
        distill(cfg, run, progress=False, device=dev)
        secs = time.perf_counter() - t
        res["students"][name] = {"images": cfg.images, "batch": cfg.batch, "train_seconds": secs, "lr": cfg.lr,
                                 "ema": cfg.ema, "options": cfg.options, "scores": {}}
        for k in ks:
            path = run / "students" / f"steps-{k:03d}" if name == "progressive" else run
            pipe = pixdiff.load(path, device=dev)
            im, lab = pipe.sample(args.n, classes, None, k, 0.0, seed=0, batch=500)
            res["students"][name]["scores"][k] = score(im, lab, clf, dev)
            print(name, k, res["students"][name]["scores"][k], flush=True)
            dump()
    dump()


def figures(args) -> None:
    """The plot and sample grids of docs/distillation.md's digits section, from a finished study."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pixdiff import data as data_mod

    res = json.loads((args.json or args.out / "results.json").read_text())
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in zip(axes, ("fd", "accuracy"), ("Fréchet distance (digits features) ↓", "class accuracy ↑")):
        t = res["teacher_scores"]
        ks = [k for k in (1, 2, 4) if f"ddim-{k}-cosine_t" in t]
        ax.plot(ks, [t[f"ddim-{k}-cosine_t"][key] for k in ks], "k--o", label="teacher, DDIM (same grid)")
        if "dpmpp_2m-20" in t:
            ax.axhline(t["dpmpp_2m-20"][key], color="gray", lw=1, label="teacher, dpmpp_2m 20 steps")
        for name, st in res["students"].items():
            kk = sorted(int(k) for k in st["scores"])
            ax.plot(kk, [st["scores"][str(k)][key] for k in kk], "-o", label=f"{name} student")
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4], ["1", "2", "4"])
        ax.set_xlabel("sampling steps")
        ax.set_title(label)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"few-step students of the digits demo teacher (guidance w = {res['guidance']:g}, N = {res['n']})")
    fig.tight_layout()
    fig.savefig(args.figures.with_suffix(".png"), dpi=110)
    classes = list(range(10))
    models = [("teacher-ddim-4", args.teacher, "ddim", 4, {"grid": cosine_t_grid(4)}, args.guidance)]
    models += [(f"{name}-{k}", (args.out / name / "students" / f"steps-{k:03d}") if name == "progressive"
                else args.out / name, None, k, {}, 0.0) for name in res["students"] for k in (1, 4)]
    for label, path, sampler, k, opts, w in models:
        pipe = pixdiff.load(path, device="cpu")
        im, lab = pipe.sample(100, classes, sampler, None if opts else k, w, seed=0, **opts)
        order = sorted(range(100), key=lambda i: (int(lab[i]), i))
        grid = data_mod.image_grid(data_mod.from_uint8(im[order]), nrow=10)
        data_mod.save_png(args.figures.with_name(f"{args.figures.stem}-{label}.png"), grid, scale=3)


if __name__ == "__main__":
    main()
