"""benchmarks/gpu_throughput.py cannot rot without a GPU: its --cpu-smoke path runs every section
(pixdiff throughput, diffusers twin, train → sample, target) at toy size on the CPU, and the pieces
the GPU run leans on (peak table, target verdict, diffusers layout match, one-process-per-section
plumbing) are checked here."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_throughput.py"
NUM = r"(\d+(?:\.\d+)?)"


def _load():
    if "gpu_throughput" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["gpu_throughput"] = mod  # dataclasses look their module up there
        spec.loader.exec_module(mod)
    return sys.modules["gpu_throughput"]


def _run(*args: str, timeout: float = 120) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                       env=env, cwd=ROOT)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    return p.stdout


def test_cpu_smoke_prints_every_section_with_numbers():
    out = _run("--cpu-smoke", "--peak-tflops", "0.1")
    for header in ("== throughput: adm-64", "== throughput: sid2-s", "== throughput: diffusers UNet2DModel",
                   "== train → sample", "== target", "== summary"):
        assert header in out, f"missing {header!r}:\n{out}"
    assert "FAILED" not in out and "TIMED OUT" not in out, out
    for model in ("tiny", "tiny-uvit", "diffusers UNet2DModel"):
        for mode in ("eager", "compile"):
            m = re.search(rf"^  {re.escape(model)} {mode}: batch \d+ .* {NUM} img/s, .* MFU {NUM} %", out, re.M)
            assert m and float(m.group(1)) > 0, f"no {model} {mode} throughput:\n{out}"
    assert re.search(r"params: pixdiff tiny [\d,]+, diffusers UNet2DModel [\d,]+ \([+-]\d+\.\d+ %, within 10 %\)", out)
    m = re.search(rf"^  train eager: {NUM} img/s", out, re.M)
    assert m and float(m.group(1)) > 0, out
    m = re.search(rf"^  sample .* = {NUM} img/s; uint8 \(4, 16, 16, 1\), float draw finite: True -> OK", out, re.M)
    assert m and float(m.group(1)) > 0, out
    assert re.search(r"^target: .*sid2-s.*: n/a on CPU", out, re.M), out
    assert out.count("| adm-64 | tiny |") == 2 and out.count("| diffusers | diffusers UNet2DModel |") == 2


def test_one_process_per_section_collects_the_child_results():
    # the GPU default: each section in a child process whose tagged result lines reach the summary
    out = _run("--cpu-smoke", "--isolate", "--sections", "sid2-s", "--no-compile")
    assert "one process per section" in out and "@@result" not in out
    assert re.search(rf"^\| sid2-s \| tiny-uvit \| .* \| eager \| 16² \| 2 \| {NUM} \| {NUM} \|", out, re.M), out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour of `make bench`")
def test_without_a_gpu_it_skips_and_exits_zero():
    assert _run(timeout=60).strip() == "no CUDA device: skipped"


def test_peak_table_and_target_verdict():
    g = _load()
    assert g.peak_tflops("NVIDIA H100 80GB HBM3") == g.peak_tflops("NVIDIA H200") == 989.4
    assert g.peak_tflops("NVIDIA GH200 480GB") == 989.4
    assert g.peak_tflops("NVIDIA H100 PCIe") == 756.0 and g.peak_tflops("NVIDIA H200 NVL") == 835.5
    assert g.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0 and g.peak_tflops("Tesla T4") is None
    row = {"kind": "throughput", "section": "sid2-s", "mode": "compile", "batch": 64, "resolution": 512,
           "tflops": 420.0}
    assert "MET (42.4 %" in g.target_line([{**row, "mfu": 0.424}], "NVIDIA H200", smoke=False)
    assert "NOT MET (31.0 %" in g.target_line([{**row, "mfu": 0.31}], "NVIDIA H100 80GB HBM3", smoke=False)
    assert "n/a on NVIDIA A100" in g.target_line([{**row, "mfu": 0.5}], "NVIDIA A100", smoke=False)
    assert "not measured" in g.target_line([{**row, "mode": "eager", "mfu": 0.2}], "NVIDIA H200", smoke=False)


def test_diffusers_twin_of_adm64_matches_parameters_and_flops():
    pytest.importorskip("diffusers")
    g = _load()
    b, ours, theirs = g.diffusers_bench("adm-64", {}, 64)  # built on the meta device: no memory, no download
    assert abs(theirs / ours - 1) < 0.10
    from pixdiff import nets

    assert b.flops == pytest.approx(nets.count_flops(nets.preset_config("adm-64")), rel=0.02)
