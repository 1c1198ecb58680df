"""The module structure behind the program: the library never imports the CLI, pixdiff's modules
import each other without cycles (lazy imports inside functions included), and the low-level
data module imports nothing above it."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "pixdiff"


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        if "__pycache__" in p.parts:
            continue
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _is_cli(name: str) -> bool:
    return name == "pixdiff.cli" or name.startswith("pixdiff.cli.") or name == "pixdiff.__main__"


def _imports(mod: str, path: Path) -> set[str]:
    """Every pixdiff module ``mod`` imports anywhere in its source (top level or inside functions),
    ancestors of ``mod`` left out (Python imports a module's packages before the module anyway)."""
    deps = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        deps.update(n for n in names if n in MODULES and n != mod and not mod.startswith(n + "."))
    return deps


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_the_module_list_is_real():
    assert {"pixdiff.cli", "pixdiff.cli.train", "pixdiff.data", "pixdiff.metrics.features"} <= set(MODULES)
    assert "pixdiff.analytic" in GRAPH["pixdiff"]  # the import scanner sees imports


def test_no_library_module_imports_the_cli_even_lazily():
    bad = {m: sorted(d for d in deps if _is_cli(d)) for m, deps in GRAPH.items() if not _is_cli(m)}
    assert not {m: d for m, d in bad.items() if d}, bad


def test_importing_any_library_module_does_not_load_the_cli():
    """Each module imported with no pixdiff module loaded before it (one interpreter, purged of
    pixdiff between modules: a fresh interpreter per module would re-import torch 60 times)."""
    library = [m for m in MODULES if not _is_cli(m)]
    code = (
        "import importlib, json, sys\n"
        f"mods = {library!r}\n"
        "bad = {}\n"
        "for m in mods:\n"
        "    for k in [k for k in sys.modules if k == 'pixdiff' or k.startswith('pixdiff.')]:\n"
        "        del sys.modules[k]\n"
        "    importlib.import_module(m)\n"
        "    cli = sorted(k for k in sys.modules if k == 'pixdiff.cli' or k.startswith('pixdiff.cli.'))\n"
        "    if cli:\n"
        "        bad[m] = cli\n"
        "print(json.dumps({'checked': len(mods), 'bad': bad}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["checked"] == len(library) > 30 and res["bad"] == {}, res


def test_no_import_cycles():
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"modules that import each other (directly or around a loop): {cycles}"


def test_feature_networks_import_one_way():
    assert "pixdiff.metrics.inception" not in GRAPH["pixdiff.metrics.features"]
    assert "pixdiff.metrics.features" in GRAPH["pixdiff.metrics.inception"]


def test_the_data_module_imports_nothing_about_diffusion():
    """pixdiff.data (and the datasets package beside it) sit below everything that knows about
    noise, networks, training or evaluation: no import upwards, not even a lazy one."""
    above = {"pixdiff.analytic", "pixdiff.process", "pixdiff.schedules", "pixdiff.denoiser", "pixdiff.losses",
             "pixdiff.vlb", "pixdiff.weighting", "pixdiff.guidance", "pixdiff.likelihood", "pixdiff.train",
             "pixdiff.generate", "pixdiff.config", "pixdiff.nets", "pixdiff.samplers", "pixdiff.metrics",
             "pixdiff.checkpoint", "pixdiff.cli"}
    low = [m for m in GRAPH if m == "pixdiff.data" or m.startswith("pixdiff.datasets")]
    bad = {m: sorted(d for d in GRAPH[m] if any(d == a or d.startswith(a + ".") for a in above)) for m in low}
    assert "pixdiff.data" in low and not any(bad.values()), bad


def test_the_mixture_toy_is_exactly_the_oracles_mixture():
    """data.py samples the toy itself (without the oracle); same numbers, same draws."""
    from pixdiff.analytic import GaussianMixture
    from pixdiff.data import load_toy

    ds = load_toy("mixture", n=3000, seed=5)
    x, k = GaussianMixture.toy_2d().sample(3000, torch.Generator().manual_seed(5), return_components=True)
    assert torch.equal(ds.images, x.float()) and torch.equal(ds.labels, k)
    assert ds.class_names == ["0", "1", "2"] and ds.shape == (2,)
