"""Helpers shared by the evidence scripts of claims 2, 7 and 8 (evidence_variance.py,
evidence_sigmoid.py, evidence_architecture.py) on top of evidence_common.py: a cache for numbers
that are not sample scores (bits/dim), the three-way verdict rule, and the FD plot.

The verdict rule of these pages, for a claim "A is better (lower) than B" over training seeds:

- **reproduced**: A's mean is below B's by more than both seed spreads and the min–max ranges do
  not overlap (``evidence_common.separated``);
- **not reproduced**: A's mean is not below B's (the claim's direction is not even seen on average);
- **inconclusive**: A's mean is lower, but within the seed spread.

A claim made of several such comparisons is reproduced when every one is, not reproduced when any
one is not, and inconclusive otherwise. A smoke run is always inconclusive.
"""

from __future__ import annotations

import json
from pathlib import Path

import evidence_common as ec

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
RULE = ("each comparison 'A better than B' counts as reproduced when A's mean is below B's beyond both seed "
        "spreads with no overlap of the min–max ranges, as not reproduced when A's mean is not below B's, and as "
        "inconclusive in between; the claim is reproduced when every comparison is, not reproduced when any is not")


def compare(better: dict, worse: dict) -> str:
    """The verdict of "``better`` is lower than ``worse``" (two ``ec.summary`` dicts)."""
    if ec.separated(better, worse):
        return REPRODUCED
    if better["mean"] >= worse["mean"]:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def combine(parts: list[str]) -> str:
    if any(p == NOT_REPRODUCED for p in parts):
        return NOT_REPRODUCED
    if parts and all(p == REPRODUCED for p in parts):
        return REPRODUCED
    return INCONCLUSIVE


def summarise(res: dict) -> dict:
    """{setting: {metric: [value per seed]}} or {setting: [score dict per seed]} → {setting: {metric: summary}}."""
    out = {}
    for k, v in res.items():
        if isinstance(v, list):
            v = {m: [r[m] for r in v] for m in v[0]}
        out[k] = {m: ec.summary(vals) for m, vals in v.items()}
    return out


def cached_value(run: Path, key: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` (a JSON value), remembered in ``run/evidence_values.json`` under ``key``
    so that an interrupted study resumes (as ``ec.cached_score`` does for sample scores)."""
    path = run / "evidence_values.json"
    cache = json.loads(path.read_text()) if path.is_file() else {}
    if key not in cache:
        cache[key] = fn(*args, **kwargs)
        ec.save_json(path, cache)
    return cache[key]


def heun_score(run: Path, scale: ec.Scale, steps: int) -> dict:
    """Unguided Heun samples of a run, scored (the cache key of evidence_training.py, so a run
    shared with it is not sampled twice)."""
    import pixdiff

    pipe = pixdiff.load(run, device="cpu")
    return ec.cached_score(run, f"heun/{steps}/w=0/interval=None/n={scale.n}/seed=10000",
                           pipe.sample, scale.n, None, "heun", steps, seed=10_000)


def protocol(scale: ec.Scale, data: str, network: str, how: str, script: str, rule: str = RULE) -> list[str]:
    return [f"data: {data}, class-conditional, label dropout 0.1",
            f"network: {network}; {scale.images:,} images per run (batch {scale.batch}), EMA weights; {how}",
            f"training seeds: {', '.join(map(str, scale.seeds))} (every number: mean ± std (min–max) over them)",
            f"samples: n = {scale.n} per setting and seed, image i from generator 10000 + i, classes cycling 0–9",
            "features: the shipped digits classifier's 64-d features (images resized to 16×16); FD vs the digits "
            "training split at the samples' resolution; precision / recall k = 3; class accuracy",
            f"verdict rule: {rule}",
            f"command: `python experiments/{script} --scale {scale.name}`"]
