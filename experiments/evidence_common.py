"""What the evidence scripts (issue 16) share: train the digits model once per seed, score samples,
summarise over seeds, and write ``docs/evidence/<name>.md`` plus the index ``docs/evidence/README.md``.

Every number in a page is a mean over the training seeds with its spread (sample standard
deviation, and min–max); every comparison in one table is at equal training budget (the same runs)
and at the sampling cost stated in its row (network evaluations, NFE).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "evidence"


@dataclass
class Scale:
    """One setting of a study: ``cpu`` (2 CPU cores, ≲ 40 minutes), ``gpu`` (the same code path with
    a CIFAR-10-sized network and budget), ``smoke`` (seconds; the test suite runs it)."""

    name: str
    preset: str
    resolution: int
    images: int
    batch: int
    n: int  # samples per scored set (Fréchet distance needs more than the 64 feature dimensions)
    seeds: tuple[int, ...]


SCALES = {
    # 12k images (half the demo's budget) and n = 300 keep each study near the issue's ~40 minutes
    # on 2 CPU cores; n = 300 is still well above the 64 feature dimensions FD needs.
    "cpu": Scale("cpu", "tiny", 16, 12_000, 64, 300, (0, 1, 2)),
    "gpu": Scale("gpu", "small", 32, 4_000_000, 256, 10_000, (0, 1, 2)),
    "smoke": Scale("smoke", "tiny", 16, 128, 32, 70, (0,)),
}
SMOKE_NET = {"channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1, "attention_resolutions": (8,),
             "head_channels": 8, "norm_groups": 4}


def runs_root(runs: Path, scale: Scale) -> Path:
    """Where a scale's runs live; the budget is in the name so a changed budget never reuses a run."""
    return runs / f"{scale.name}-{scale.images}"


def train_digits(out: Path, seed: int, scale: Scale, **loss_and_model) -> Path:
    """Train (or reuse a finished) class-conditional digits run with label dropout 0.1 at the demo's
    optimiser settings; ``loss_and_model`` overrides ``loss.*`` / ``model.*`` fields by name."""
    from pixdiff import checkpoint as ckpt_io
    from pixdiff.config import TrainConfig
    from pixdiff.train import train

    done = ckpt_io.latest(out) if out.is_dir() else None
    if done is not None and done.state["images"] >= scale.images:
        return out
    cfg = TrainConfig()
    cfg.data.name, cfg.data.resolution = "digits", scale.resolution
    cfg.model.preset = scale.preset
    if scale.name == "smoke":
        cfg.model.overrides = dict(SMOKE_NET)
    for k, v in loss_and_model.items():
        section, field = k.split("__")
        setattr(getattr(cfg, section), field, v)
    cfg.optim.batch = scale.batch
    cfg.optim.warmup_images = min(5_000, scale.images // 10)
    cfg.optim.ema_halflife_images = max(scale.images / 10, 1.0)
    cfg.run.images, cfg.run.seed = scale.images, seed
    cfg.run.ckpt_every_images = max(scale.images // 4, scale.batch)  # a stopped study loses at most a quarter run
    cfg.run.log_every_images = max(scale.images // 20, scale.batch)
    cfg.run.final_grid = False  # every study samples its runs itself
    train(cfg, out, resume=done is not None, progress=False)
    return out


def cached_score(run: Path, key: str, draw, *args, **kwargs) -> dict:
    """``score(*draw(*args, **kwargs))``, remembered in ``run/evidence_scores.json`` under ``key`` so an interrupted
    study resumes where it stopped (the key must name everything that changes the samples)."""
    path = run / "evidence_scores.json"
    cache = json.loads(path.read_text()) if path.is_file() else {}
    if key not in cache:
        cache[key] = score(*draw(*args, **kwargs))
        save_json(path, cache)
    return cache[key]


def score(images: np.ndarray, labels: np.ndarray | None, seed: int = 0) -> dict:
    """Fréchet distance (digits-classifier features, vs the digits training split), precision /
    recall (k = 3) and, with labels, class accuracy by that classifier."""
    from pixdiff.metrics.evaluate import evaluate_images

    metrics = ("fd", "pr") + (("acc",) if labels is not None else ())
    m = evaluate_images(images, labels, ref="digits", metrics=metrics, features="digits", seed=seed)["metrics"]
    out = {"fd": m["fd"]["fd"], "precision": m["pr"]["precision"], "recall": m["pr"]["recall"]}
    if "acc" in m:
        out["acc"] = m["acc"]["accuracy"]
    return out


def summary(values) -> dict:
    v = [float(x) for x in values]
    return {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
            "min": min(v), "max": max(v), "n": len(v)}


def fmt(s: dict, digits: int = 3) -> str:
    """mean ± std (min–max) over seeds."""
    if s["n"] == 1:
        return f"{s['mean']:.{digits}g}"
    return f"{s['mean']:.{digits}g} ± {s['std']:.2g} ({s['min']:.{digits}g}–{s['max']:.{digits}g})"


def separated(a: dict, b: dict) -> bool:
    """Is mean a below mean b by more than both spreads (a conservative 'better' over seeds)?"""
    return a["mean"] + a["std"] < b["mean"] - b["std"] and a["max"] < b["min"]


def write_page(name: str, title: str, claim: str, source: str, protocol: list[str], table: str,
               verdict: str, reason: str, scale: Scale, plot: str | None = None, out_dir: Path = DOCS,
               extra: str = "") -> Path:
    """docs/evidence/<name>.md, then the index README.md rebuilt from every page's header."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", f"**Claim** ({source}): {claim}", "",
             f"**Verdict: {verdict}.** {reason}", "",
             f"Scale: `{scale.name}` (page written on {time.strftime('%Y-%m-%d')}; each run keeps its scores in "
             "`evidence_scores.json`, so a rewrite reuses them).", "", "## Protocol", ""]
    lines += [f"- {p}" for p in protocol] + ["", "## Results", "", table, ""]
    if plot:
        lines += [f"![{name}]({plot})", ""]
    if extra:
        lines += [extra, ""]
    path = out_dir / f"{name}.md"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    write_index(out_dir)
    return path


def write_index(out_dir: Path = DOCS) -> Path:
    rows = []
    for page in sorted(out_dir.glob("*.md")):
        if page.name == "README.md":
            continue
        text = page.read_text()
        title = text.splitlines()[0].lstrip("# ").strip()
        verdict = re.search(r"\*\*Verdict: ([^.]*)\.\*\*", text)
        scale = re.search(r"Scale: `(\w+)`", text)
        rows.append(f"| [{title}]({page.name}) | {verdict.group(1) if verdict else '?'} | "
                    f"{scale.group(1) if scale else '?'} |")
    text = "\n".join(["# Evidence: the papers' claims, reproduced at small scale", "",
                      "Each page states a claim with its source, the protocol, a table over ≥ 3 training seeds "
                      "(mean ± std, min–max) and a verdict. The scripts are in `experiments/` (`--scale cpu` "
                      "wrote these; `--scale gpu` reruns the same study at CIFAR-10 size).", "",
                      "| claim | verdict | scale |", "|---|---|---|", *rows, ""])
    path = out_dir / "README.md"
    tmp = path.with_name(".README.md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def save_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    tmp.replace(path)


def isfinite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def parser(doc: str) -> argparse.ArgumentParser:
    """The flags every study takes: --scale, --runs, --out-dir (a script adds its own)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--scale", default="cpu", choices=sorted(SCALES))
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "evidence", help="where the trained runs live")
    ap.add_argument("--out-dir", type=Path, default=DOCS, help="where the pages go (default docs/evidence)")
    ap.add_argument("--seeds", default=None,
                    help="comma-separated training seeds instead of the scale's (e.g. split a study over two processes, "
                         "then rerun without --seeds: finished runs and scores are reused)")
    return ap


def scale_and_runs(args: argparse.Namespace) -> tuple[Scale, Path]:
    scale = SCALES[args.scale]
    if args.seeds:
        try:
            seeds = tuple(int(v) for v in args.seeds.split(","))
        except ValueError:
            raise SystemExit(f"--seeds takes comma-separated integers, got {args.seeds!r}") from None
        scale = dataclasses.replace(scale, seeds=seeds)  # same runs folder: the budget, not the seeds, names it
    return scale, runs_root(args.runs, scale)


def main(doc: str, study, argv=None) -> int:
    """Parse the common flags and run ``study(scale, runs, out_dir)``."""
    args = parser(doc).parse_args(argv)
    study(*scale_and_runs(args), args.out_dir)
    print(f"wrote {args.out_dir}")
    return 0


def plot(path: Path, series: dict, xlabel: str, ylabel: str, logx: bool = False, annotate: bool = False) -> str | None:
    """{label: (xs, means, stds)} as error bars; returns the file name (for the page) or None
    without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(5.4, 3.6))
    for label, (xs, means, stds) in series.items():
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
        if annotate:
            for x, y in zip(xs, means):
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if not annotate:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
