"""The evidence scripts (experiments/evidence_*.py) keep working as the library changes: each runs
its ``--scale smoke`` setting (seconds of training) into a temporary folder and must write its
pages, with a verdict, a table row per setting and a plot, plus the index."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))


def test_summary_and_separation_rules():
    import evidence_common as ec

    s = ec.summary([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0) and (s["min"], s["max"], s["n"]) == (1.0, 3.0, 3)
    # 'better over seeds' needs the means apart by both spreads and no overlap of the ranges
    assert ec.separated(ec.summary([1.0, 1.1, 1.2]), ec.summary([2.0, 2.1, 2.2]))
    assert not ec.separated(ec.summary([1.0, 1.1, 2.5]), ec.summary([2.0, 2.1, 2.2]))
    assert not ec.separated(ec.summary([2.0, 2.1, 2.2]), ec.summary([1.0, 1.1, 1.2]))


def test_seeds_flag_splits_a_study_without_moving_its_runs(tmp_path):
    import evidence_common as ec

    ap = ec.parser("doc")
    whole = ec.scale_and_runs(ap.parse_args(["--runs", str(tmp_path)]))
    part = ec.scale_and_runs(ap.parse_args(["--runs", str(tmp_path), "--seeds", "2,0"]))
    assert whole[0].seeds == (0, 1, 2) and part[0].seeds == (2, 0)
    assert part[1] == whole[1]  # a split study trains into the same folders, so the full rerun reuses them
    with pytest.raises(SystemExit, match="--seeds"):
        ec.scale_and_runs(ap.parse_args(["--seeds", "one"]))


def test_samplers_evidence_smoke(tmp_path):
    import evidence_samplers

    out = tmp_path / "evidence"
    assert evidence_samplers.main(["--scale", "smoke", "--runs", str(tmp_path / "runs"), "--out-dir", str(out)]) == 0
    pages = {p.stem: p.read_text() for p in out.glob("*.md")}
    assert set(pages) == {"README", "ddim_vs_ddpm", "heun_vs_euler", "guidance_tradeoff"}
    for name in ("ddim_vs_ddpm", "heun_vs_euler", "guidance_tradeoff"):
        text = pages[name]
        assert re.search(r"\*\*Verdict: (reproduced|not reproduced|inconclusive)\.\*\*", text), name
        assert "Scale: `smoke`" in text and "## Protocol" in text
        assert (out / f"{name}.png").is_file()
        # every table row holds numbers (FD of a 128-image model is far from 0)
        rows = [r for r in text.splitlines() if r.startswith("| ") and not r.startswith("| -") and "FD" not in r]
        assert rows and all(re.search(r"\d", r) for r in rows)
    assert all(f"({n}.md)" in pages["README"] for n in ("ddim_vs_ddpm", "heun_vs_euler", "guidance_tradeoff"))


def test_training_evidence_smoke(tmp_path):
    import evidence_training

    out = tmp_path / "evidence"
    assert evidence_training.main(["--scale", "smoke", "--runs", str(tmp_path / "runs"), "--out-dir", str(out)]) == 0
    sched = (out / "schedule_cosine_vs_linear.md").read_text()
    # one row per (schedule, x̂ clipped or not, t_max): linear and cosine, each from t_max = 1 and 0.8
    assert len(re.findall(r"^\| (linear|cosine) \| (yes \(IDDPM\)|no) \| (1|0\.8) \| \d", sched, flags=re.M)) == 8
    param = (out / "parameterisation.md").read_text()
    assert re.search(r"^\| ε \(sigmoid weighting\) \| \d", param, flags=re.M)
    assert re.search(r"^\| EDM preconditioning \+ EDM loss \| \d", param, flags=re.M)
    assert "**Verdict: inconclusive.**" in param  # a smoke run never claims a result
    for name in ("schedule_cosine_vs_linear", "parameterisation"):
        assert (out / f"{name}.png").is_file() and f"]({name}.png)" in (out / f"{name}.md").read_text()
