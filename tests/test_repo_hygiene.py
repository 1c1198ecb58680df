"""Repository hygiene: what a reader of the repository can follow.

- Citations name papers (authors, year, equation), never the internal spec transcriptions the
  project started from, which no reader has (docs/references.md lists the papers).
- README.md links only to files inside the repository.
- The licence is present and declared.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCANNED_DIRS = ("pixdiff", "docs", "tests", "benchmarks", "experiments", "scripts")
SCANNED_FILES = ("README.md", "CHANGELOG.md")
TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml"}
SKIPPED_PARTS = {"__pycache__", ".pytest_cache"}

# Built in two pieces so that this file does not contain the string it looks for.
INTERNAL_CITATION = "seed" + " 00"


def _text_files() -> list[Path]:
    files = [ROOT / name for name in SCANNED_FILES if (ROOT / name).is_file()]
    for d in SCANNED_DIRS:
        for path in sorted((ROOT / d).rglob("*")):
            if (path.is_file() and path.suffix in TEXT_SUFFIXES
                    and not SKIPPED_PARTS & set(path.parts)
                    and not any(p.endswith(".egg-info") for p in path.parts)):
                files.append(path)
    return files


def test_no_internal_spec_citations():
    hits = []
    for path in _text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), start=1):
            if INTERNAL_CITATION in line.lower():
                hits.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not hits, (
        f"{len(hits)} line(s) cite the internal spec transcriptions instead of the paper "
        "(cite authors, year and equation; list the paper in docs/references.md):\n" + "\n".join(hits))


_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)


def _readme_link_targets() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    # Fenced code blocks hold code, not links.
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return _INLINE_LINK.findall(text) + _REFERENCE_LINK.findall(text)


def test_readme_links_resolve_inside_the_repository():
    targets = _readme_link_targets()
    assert targets, "README.md has no links: the link pattern is probably broken"
    bad = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor on the page itself
        rel = target.split("#", 1)[0]
        if rel.startswith("/") or ".." in Path(rel).parts:
            bad.append(f"{target}: leaves the repository")
            continue
        path = (ROOT / rel).resolve()
        if ROOT not in path.parents and path != ROOT:
            bad.append(f"{target}: resolves outside the repository")
        elif not path.exists():
            bad.append(f"{target}: no such file")
    assert not bad, "README.md links that a reader of the repository cannot follow:\n" + "\n".join(bad)


def test_license_is_present_and_declared():
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text  # the full text, not just a notice
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        project = {
            "license": m.group(1) if (m := re.search(r'^license\s*=\s*"([^"]+)"', pyproject, re.M)) else None,
            "license-files": re.findall(r'"([^"]+)"', m.group(1))
            if (m := re.search(r"^license-files\s*=\s*\[([^\]]*)\]", pyproject, re.M)) else [],
        }
    else:
        project = tomllib.loads(pyproject)["project"]
    assert project.get("license") == "Apache-2.0"
    assert "LICENSE" in project.get("license-files", [])


def test_readme_python_examples_run(tmp_path):
    """Every ```python block of the README runs as written (the run folder it loads is made here)."""
    import re

    from pixdiff.config import TrainConfig
    from pixdiff.train import train

    cfg = TrainConfig()
    cfg.model.overrides = {"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [8],
                           "head_channels": 8, "norm_groups": 4}
    cfg.optim.batch, cfg.run.images = 8, 16
    train(cfg, tmp_path / "runs" / "digits", progress=False)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 2
    for code in blocks:
        code = code.replace('"runs/digits"', repr(str(tmp_path / "runs" / "digits")))
        exec(compile(code, "README.md", "exec"), {})
