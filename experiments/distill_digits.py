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
    args = ap.parse_args()
    dev = pixdiff.generate.resolve_device(args.device)
    out_json = args.json or args.out / "results.json"
    res = {"teacher": str(args.teacher), "guidance": args.guidance, "n": args.n, "device": str(dev),
           "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None, "students": {}, "teacher_scores": {}}

    def dump():
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(res, indent=1) + "\n")

    clf = digits_classifier()
    classes = list(range(10))
    teacher = pixdiff.load(args.teacher, device=dev)
    for steps in () if args.skip_teacher else (20, 40):
        t = time.perf_counter()
        im, lab = teacher.sample(args.n, classes, "dpmpp_2m", steps, args.guidance, seed=0, batch=500)
        res["teacher_scores"][f"dpmpp_2m-{steps}"] = {**score(im, lab, clf, dev), "nfe": steps,
                                                      "seconds": time.perf_counter() - t}
        print("teacher", steps, res["teacher_scores"][f"dpmpp_2m-{steps}"], flush=True)
        dump()
    plans = {
        "progressive": (DistillConfig("progressive", str(args.teacher), steps=1, batch=256, lr=2e-4, ema=0.999,
                                      images=int(6 * 384_000 * args.scale), guidance=args.guidance,
                                      options={"start_steps": 64}), (4, 2, 1)),
        "cd": (DistillConfig("cd", str(args.teacher), steps=1, batch=256, lr=2e-4, ema=0.999,
                             images=int(768_000 * args.scale), guidance=args.guidance), (1, 2, 4)),
    }
    for name, (cfg, ks) in plans.items():
        if name not in args.only.split(","):
            continue
        run = args.out / name
        t = time.perf_counter()
        distill(cfg, run, progress=False, device=dev)
        secs = time.perf_counter() - t
        res["students"][name] = {"images": cfg.images, "train_seconds": secs, "lr": cfg.lr, "scores": {}}
        for k in ks:
            path = run / "students" / f"steps-{k:03d}" if name == "progressive" else run
            pipe = pixdiff.load(path, device=dev)
            im, lab = pipe.sample(args.n, classes, None, k, 0.0, seed=0, batch=500)
            res["students"][name]["scores"][k] = score(im, lab, clf, dev)
            print(name, k, res["students"][name]["scores"][k], flush=True)
            dump()
    dump()


if __name__ == "__main__":
    main()
