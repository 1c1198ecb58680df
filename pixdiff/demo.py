"""`make demo`: train a class-conditional model on the embedded digits, sample it, score it.

Writes into ``--out`` (default runs/demo/):

    samples.png      10×10 grid, row c = class c, classifier-free guidance w = ``--guidance``
    loss.png         the training loss curve
    metrics.json     class accuracy of the samples by an independent classifier (an SVM that
                     scikit-learn fits on the real digits; it shares no code with pixdiff), the
                     same classifier's accuracy on held-out real digits for reference, timings
    mixture.png      the analytic warm-up: a 2-D Gaussian mixture sampled with its exact denoiser

The run folder (checkpoints, log) is ``--out``/run; ``--resume`` continues it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["main", "digits_classifier", "classify_digits"]


def digits_classifier():
    """An SVM fitted on scikit-learn's real 8×8 digits, train split only (independent of pixdiff)."""
    from sklearn.svm import SVC

    from pixdiff.data import load_digits

    tr = load_digits(8, "train")
    x = ((tr.images[:, 0] + 1) * 8).reshape(len(tr), -1).numpy()  # back to the 0..16 scale
    return SVC(gamma=0.001, C=10.0).fit(x, tr.labels.numpy())


def classify_digits(clf, images_uint8_nhwc: np.ndarray) -> np.ndarray:
    """Predicted classes of uint8 [N, H, W, 1] digit images (any H = W multiple of 8)."""
    x = torch.from_numpy(images_uint8_nhwc[..., 0]).float()[:, None] / 255.0 * 16.0
    x = torch.nn.functional.adaptive_avg_pool2d(x, 8)
    return clf.predict(x.reshape(len(x), -1).numpy())


def mixture_demo(out: Path, n: int = 4000, steps: int = 50) -> dict:
    """Sample a 2-D mixture with its exact denoiser: the library working with no training."""
    from pixdiff import samplers
    from pixdiff.analytic import GaussianMixture

    gm = GaussianMixture.toy_2d()
    x = samplers.sample(gm.denoise, (n, 2), sampler="dpmpp_2m", steps=steps, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
    ref = gm.sample(n, torch.Generator().manual_seed(1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
    ax[0].scatter(*ref.T, s=1, alpha=0.3)
    ax[0].set_title("data")
    ax[1].scatter(*x.T, s=1, alpha=0.3, color="C1")
    ax[1].set_title(f"DPM-Solver++(2M), {steps} steps, exact denoiser")
    fig.tight_layout()
    fig.savefig(out / "mixture.png", dpi=90)
    plt.close(fig)
    return {"mixture_mean_err": float((x.mean(0) - gm.mean()).norm()),
            "mixture_cov_err": float((torch.cov(x.T) - gm.cov()).norm())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pixdiff.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    ap.add_argument("--images", type=int, default=24_000, help="training length in images seen (default 24000)")
    ap.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    ap.add_argument("--preset", default="tiny", help="network preset (default tiny)")
    ap.add_argument("--sampler", default="dpmpp_2m", help="sampler for the grid (default dpmpp_2m)")
    ap.add_argument("--steps", type=int, default=20, help="sampler steps (default 20)")
    ap.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance weight w (default 1)")
    ap.add_argument("--n-eval", type=int, default=300, help="samples scored for class accuracy (default 300)")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted demo run")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from pixdiff import data as data_mod
    from pixdiff.config import TrainConfig
    from pixdiff.generate import load
    from pixdiff.train import train

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict = {}
    metrics.update(mixture_demo(out))

    cfg = TrainConfig()
    cfg.model.preset = args.preset
    cfg.optim.batch = args.batch
    cfg.optim.warmup_images = min(5_000, args.images // 10)
    cfg.optim.ema_halflife_images = max(args.images / 10, 1.0)
    cfg.run.images = args.images
    cfg.run.seed = args.seed
    cfg.run.ckpt_every_images = max(args.images // 4, args.batch)
    cfg.run.log_every_images = max(args.images // 100, args.batch)
    t0 = time.perf_counter()
    ckpt = train(cfg, out / "run", resume=args.resume)
    metrics["train_seconds"] = time.perf_counter() - t0
    from pixdiff import checkpoint as ckpt_io

    done = ckpt_io.load(ckpt).state["images"]
    if done < args.images:  # Ctrl-C / SIGTERM: the trainer saved a checkpoint and returned
        print(f"training stopped at {done} of {args.images} images; run `make demo` (or this command with "
              f"--resume) to continue", file=sys.stderr)
        return 130
    metrics["train_images"] = args.images

    t0 = time.perf_counter()
    pipe = load(ckpt, device="cpu")
    grid, labels = pipe.sample(100, [c for c in range(10) for _ in range(10)], args.sampler, args.steps,
                               args.guidance, args.seed)
    data_mod.save_png(out / "samples.png", data_mod.image_grid(data_mod.from_uint8(grid), nrow=10), scale=4)
    imgs, labels = pipe.sample(args.n_eval, None, args.sampler, args.steps, args.guidance, args.seed + 1000)
    metrics["sample_seconds"] = time.perf_counter() - t0

    clf = digits_classifier()
    test = data_mod.load_digits(8, "test")
    real_acc = float((clf.predict(((test.images[:, 0] + 1) * 8).reshape(len(test), -1).numpy()) == test.labels.numpy()).mean())
    metrics.update({
        "class_accuracy": float((classify_digits(clf, imgs) == labels).mean()),
        "classifier_accuracy_on_real_test_digits": real_acc,
        "n_eval": args.n_eval, "sampler": args.sampler, "steps": args.steps, "guidance": args.guidance,
        "weights": "ema", "checkpoint": str(ckpt),
    })
    (out / "loss.png").write_bytes((out / "run" / "loss.png").read_bytes())
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    print(f"\nwrote {out / 'samples.png'}, {out / 'loss.png'}, {out / 'metrics.json'}, {out / 'mixture.png'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
