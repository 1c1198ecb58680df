"""Shared by the benchmark scripts: how a result section names the machine and reaches
docs/benchmarks.md. (`make bench` skips files starting with "_".)"""

from __future__ import annotations

import os
import platform
import subprocess


def machine() -> str:
    """The CPU model (from lscpu) and core count, e.g. 'AMD EPYC, nproc 2'."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:  # noqa: BLE001 - no lscpu, or no model line: fall back
        name = platform.processor() or "unknown CPU"
    return f"{name}, nproc {os.cpu_count()}"


def append_section(path, section: str) -> None:
    """One append, so that concurrent writers to the same file do not clobber each other."""
    with open(path, "a") as fh:
        fh.write(section)
