"""experiments/distill_digits.py (docs/distillation.md, "Digits") end to end on a tiny teacher, so the
script keeps working as the library changes. Slow (~1 min on 2 cores): `make test-all` runs it."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "distill_digits.py"
sys.path.insert(0, str(ROOT / "experiments"))


@pytest.mark.slow
def test_distill_digits_trains_scores_resumes_and_draws_its_figures(tmp_path):
    from evidence_common import SMOKE_NET  # the evidence scripts' smoke-sized U-Net

    from pixdiff.config import TrainConfig
    from pixdiff.train import train

    cfg = TrainConfig()
    cfg.data.name, cfg.data.resolution, cfg.data.p_uncond = "digits", 16, 0.1
    cfg.model.preset, cfg.model.overrides, cfg.model.parameterization = "tiny", dict(SMOKE_NET), "v"
    cfg.optim.batch, cfg.run.images, cfg.run.final_grid = 32, 128, False
    train(cfg, tmp_path / "teacher", progress=False)
    out = tmp_path / "study"
    args = [sys.executable, str(SCRIPT), "--teacher", str(tmp_path / "teacher"), "--out", str(out), "--n", "70",
            "--batch", "16", "--start-steps", "8", "--progressive-images", "96", "--cd-images", "32",
            "--teacher-steps", "1,4", "--device", "cpu"]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    subprocess.run(args, check=True, cwd=ROOT, env=env, capture_output=True, timeout=600)
    res = json.loads((out / "results.json").read_text())
    assert sorted(res["teacher_scores"]) == ["ddim-1-cosine_t", "ddim-4-cosine_t", "dpmpp_2m-4"]
    assert res["teacher_scores"]["ddim-4-cosine_t"]["passes"] == 8  # guided: two network passes a step
    assert {k: sorted(v["scores"]) for k, v in res["students"].items()} == {"progressive": ["1", "2", "4"],
                                                                             "cd": ["1", "2", "4"]}
    scores = [*res["teacher_scores"].values(), *(s for v in res["students"].values() for s in v["scores"].values())]
    assert all(0.0 <= s["accuracy"] <= 1.0 and math.isfinite(s["fd"]) and s["fd"] >= 0 for s in scores)
    # a rerun keeps every score instead of training again
    before = (out / "results.json").read_text()
    subprocess.run(args, check=True, cwd=ROOT, env=env, capture_output=True, timeout=600)
    assert (out / "results.json").read_text() == before
    subprocess.run([*args, "--figures", str(tmp_path / "fig")], check=True, cwd=ROOT, env=env, capture_output=True,
                   timeout=600)
    names = {p.name for p in tmp_path.glob("fig*.png")}
    assert names == {"fig.png", "fig-teacher-ddim-4.png", *(f"fig-{m}-{k}.png" for m in ("progressive", "cd")
                                                              for k in (1, 4))}
