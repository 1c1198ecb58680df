"""experiments/evidence_ema.py (issue 16, claim 9: EMA length by post-hoc EMA) keeps working: its
``--scale smoke`` setting (seconds of training) writes the page with a verdict, one table row per
reconstructed σ_rel, a plot, and the index."""

from __future__ import annotations

import re
import sys
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))


def test_ema_length_evidence_smoke(tmp_path):
    import evidence_ema

    out, runs = tmp_path / "evidence", tmp_path / "runs"
    assert evidence_ema.main(["--scale", "smoke", "--runs", str(runs), "--out-dir", str(out)]) == 0
    text = (out / "ema_length.md").read_text()
    assert "**Verdict: inconclusive.**" in text  # a smoke run never claims a result
    assert "Scale: `smoke`" in text and "## Protocol" in text and "Karras et al. 2024" in text
    for s in evidence_ema.SIGMA_RELS:  # one row per σ_rel, with numbers in the FD column
        row = re.search(rf"^\| post-hoc, (stored|reconstructed) \| {s:g} \| .*$", text, flags=re.M)
        assert row, s
        assert re.fullmatch(r"\d[\d.e+-]*", row.group(0).split("|")[6].strip()), row.group(0)
    assert re.search(r"^\| the run's own EMA .*\| \d", text, flags=re.M)
    assert "![ema_length](ema_length.png)" in text and (out / "ema_length.png").stat().st_size > 0
    assert "(ema_length.md)" in (out / "README.md").read_text()
    # the run stored two EMAs as snapshots, and the reconstructions were written beside them
    run = next(runs.glob("*/posthoc-seed0"))
    assert len(list((run / "posthoc").glob("snap-*.safetensors"))) == 4  # 128 images, every 32
    assert len(list((run / "posthoc-recon").glob("*.safetensors"))) == len(evidence_ema.SIGMA_RELS)
