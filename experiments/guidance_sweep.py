"""Issue 9: sweep the classifier-free guidance weight w on a trained class-conditional digits
model and record Fréchet distance (distribution quality/diversity) against class accuracy (how
recognisably each sample is its requested class), the trade-off of Ho & Salimans 2022, Table 1 (FID
vs IS as w grows).

    python experiments/guidance_sweep.py --ckpt runs/digits16 [--ws 0,0.5,1,2,4] [--n 1000]
        [--sampler heun --steps 18] [--interval LO,HI] [--out docs/guidance.md]

For each w it draws ``n`` images with labels cycling over all classes (image i from its own
generator seeded ``seed + i``, the same noise for every w), and scores them with the digits
feature network (``pixdiff.metrics.features.digits_extractor``):

- Fréchet distance between the samples' 64-d features and those of the held-out digits test
  split (``pixdiff.data.load_digits(split="test")``);
- class accuracy: the fraction of samples whose argmax digits-net class is the requested label.

It prints a JSON line per w and writes a markdown table between the ``guidance_sweep`` markers of
docs/guidance.md (and the plot docs/guidance_sweep.png if matplotlib is installed). The model
must be class-conditional and trained with label dropout (Ho & Salimans 2022, Alg. 1) so that its null
label gives the unconditional prediction.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from pixdiff import data, guidance, samplers
from pixdiff.metrics.features import digits_extractor

ROOT = Path(__file__).resolve().parents[1]


def frechet_distance(feat_a: torch.Tensor, feat_b: torch.Tensor) -> float:
    """‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2}) between Gaussian fits of two feature sets."""
    from pixdiff.metrics import frechet_distance_from_features

    return float(frechet_distance_from_features(feat_a, feat_b))


BEGIN, END = "<!-- guidance_sweep:begin -->", "<!-- guidance_sweep:end -->"


def write_results(path: Path, text: str) -> None:
    """Put ``text`` between the sweep markers of ``path`` (docs/guidance.md has them), or write the
    file whole if it has none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.is_file() else ""
    if BEGIN in old and END in old.split(BEGIN, 1)[1]:
        pre, rest = old.split(BEGIN, 1)
        new = pre + BEGIN + "\n" + text + rest[rest.index(END):]
    else:
        new = text
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    tmp.replace(path)


def load_model(ckpt: Path, weights: str):
    from pixdiff.generate import load_denoiser

    den, ck = load_denoiser(ckpt, weights)
    if not getattr(den, "num_classes", 0):
        raise ValueError(f"{ckpt}: the model is unconditional; a guidance sweep needs a class-conditional model")
    from pixdiff.config import TrainConfig

    cfg = TrainConfig.from_dict(ck.state["config"])
    return den, (cfg.data.channels, cfg.data.resolution, cfg.data.resolution)


@torch.no_grad()
def draw(model, shape, labels, sampler, steps, seed, batch):
    out = []
    for lo in range(0, labels.numel(), batch):
        hi = min(labels.numel(), lo + batch)
        gens = [torch.Generator().manual_seed(seed + i) for i in range(lo, hi)]
        x = samplers.sample(model, (hi - lo, *shape), sampler=sampler, steps=steps, cond=labels[lo:hi], generator=gens)
        out.append(x.float().clamp(-1, 1))
    return torch.cat(out)


def plot(rows, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: writing the table only", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([r["class_accuracy"] for r in rows], [r["frechet"] for r in rows], "o-")
    for r in rows:
        ax.annotate(f"w={r['w']:g}", (r["class_accuracy"], r["frechet"]), fontsize=7)
    ax.set_xlabel("class accuracy")
    ax.set_ylabel("Fréchet distance (digits features)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, required=True, help="run folder or checkpoint folder of a conditional model")
    p.add_argument("--ws", default="0,0.25,0.5,1,2,4",
                   help="comma-separated guidance weights w (ε̃ = (1+w)ε_c − wε_u)")
    p.add_argument("--interval", default=None, metavar="LO,HI", help="guide only for logSNR in (LO, HI) (Hoogeboom et al. 2025, App. A.4)")
    p.add_argument("--n", type=int, default=1000, help="samples per w (default 1000)")
    p.add_argument("--sampler", default="heun")
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--raw", action="store_true", help="use raw instead of EMA weights")
    p.add_argument("--features", type=Path, default=None, help="DigitsNet weights (default: the shipped ones)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "guidance.md",
                   help="markdown file: the table replaces the text between its sweep markers, else the whole file")
    a = p.parse_args(argv)

    ws = [float(w) for w in a.ws.split(",")]
    interval = tuple(float(v) for v in a.interval.split(",")) if a.interval else None
    den, shape = load_model(a.ckpt, "raw" if a.raw else "ema")
    labels = torch.arange(a.n) % den.num_classes
    extractor = digits_extractor(a.features)
    ref = data.load_digits(resolution=shape[-1], split="test")
    ref_ext = extractor(ref.images)
    ref_feats = ref_ext.features
    # what real digits score: the floor of the Fréchet distance and the ceiling of the accuracy
    train_feats = extractor(data.load_digits(resolution=shape[-1], split="train").images).features
    data_row = {"w": "data", "frechet": frechet_distance(train_feats, ref_feats),
                "class_accuracy": (ref_ext.probs.argmax(1) == ref.labels).double().mean().item()}
    print(json.dumps(data_row), flush=True)

    rows = []
    for w in ws:
        model = guidance.classifier_free(den, w, interval=interval)
        x = draw(model, shape, labels, a.sampler, a.steps, a.seed, a.batch)
        ext = extractor(x)
        acc = (ext.probs.argmax(1) == labels).double().mean().item()
        row = {"w": w, "frechet": frechet_distance(ext.features, ref_feats), "class_accuracy": acc,
               "nfe_per_call": model.nfe_per_call}
        rows.append(row)
        print(json.dumps(row), flush=True)

    head = (f"Guidance sweep: `{a.ckpt}` ({'raw' if a.raw else 'EMA'} weights), {a.sampler} {a.steps} steps, "
            f"{a.n} samples per w, interval {interval}, seed {a.seed}; features: digits net "
            f"sha256 {extractor.weights_sha256[:12]}…, reference: digits test split ({len(ref)} images).\n\n")
    table = "| w | scale 1+w | Fréchet distance ↓ | class accuracy ↑ |\n|---|---|---|---|\n" + "".join(
        f"| {r['w']:g} | {1 + r['w']:g} | {r['frechet']:.4g} | {r['class_accuracy']:.3f} |\n" for r in rows) + (
        f"| real digits (train vs test split) | – | {data_row['frechet']:.4g} | {data_row['class_accuracy']:.3f} |\n")
    png = a.out.with_name(f"{a.out.stem}_sweep.png")
    if plot(rows, png):
        table += f"\n![Fréchet distance vs class accuracy]({png.name})\n"
    write_results(a.out, head + table)
    print(json.dumps({"wrote": str(a.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
