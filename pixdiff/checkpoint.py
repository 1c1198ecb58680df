"""Checkpoints that survive crashes: safetensors for tensors, JSON for everything else.

A run folder holds ``checkpoints/ckpt-<images>/`` folders, each complete on its own:

    model.safetensors   raw weights
    ema.safetensors     EMA weights
    optim.safetensors   optimizer state tensors (+ ``optim`` hyper-parameters in state.json)
    state.json          config, step, images seen, RNG states, counters, and the sha256 of each
                        tensor file — written last, so a folder without it is incomplete

A checkpoint is written into a hidden temporary folder and renamed into place (rename is atomic
on POSIX), so a crash leaves either the old set or the new one, never a half-written folder.
Loading verifies the hashes and falls back to the previous checkpoint, with a warning, when the
newest is truncated or corrupt. Nothing is unpickled: loading a checkpoint runs no code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pixdiff.errors import PixdiffError

__all__ = ["CheckpointError", "CheckpointWriteError", "Checkpoint", "save", "remove_stale_temporaries", "load", "list_checkpoints", "latest", "state_dict_to_flat",
           "optimizer_to_flat", "optimizer_from_flat"]

STATE = "state.json"
FILES = ("model.safetensors", "ema.safetensors", "optim.safetensors")


class CheckpointError(PixdiffError):
    """A checkpoint is missing, truncated, corrupt, or does not fit the model."""


class CheckpointWriteError(PixdiffError):
    """A checkpoint could not be written (disk full, no permission); nothing half-written is left
    and every older checkpoint is kept. The program exits with its own code, 3."""

    exit_code = 3


@dataclass
class Checkpoint:
    path: Path
    state: dict[str, Any]
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optim: dict[str, torch.Tensor]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_dict_to_flat(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; clone each tensor on its own.
    return {k: v.detach().cpu().contiguous().clone() for k, v in sd.items()}


def optimizer_to_flat(opt: torch.optim.Optimizer | dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer (or its state dict) into tensors (for safetensors) and JSON (hyper-parameters)."""
    sd = opt if isinstance(opt, dict) else opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    for key, v in meta.get("scalars", {}).items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save(run_dir: str | Path, images: int, state: dict, model: dict, ema: dict, optim: dict, keep: int = 3) -> Path:
    """Write checkpoint ``ckpt-<images>`` atomically; keep the newest ``keep``. Returns its path.

    A failed write (disk full, permission) removes its temporary folder, keeps every older
    checkpoint and raises ``CheckpointWriteError`` in one line."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"ckpt-{images:012d}"
    tmp = root / f".tmp-ckpt-{images:012d}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        hashes = {}
        for name, tensors in zip(FILES, (model, ema, optim)):
            save_file(state_dict_to_flat(tensors), str(tmp / name))
            hashes[name] = _sha256(tmp / name)
        doc = dict(state, images=images, files=hashes)
        with open(tmp / STATE, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # re-saving the same step (e.g. SIGTERM right after a periodic save)
            old = root / f".old-{final.name}-{os.getpid()}"
            final.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(final)
    except Exception as e:  # noqa: BLE001 - safetensors reports a full disk as its own error type
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (OSError,)) or type(e).__name__ == "SafetensorError":
            raise CheckpointWriteError(f"could not write checkpoint {final} ({type(e).__name__}: "
                                       f"{str(e).splitlines()[0] if str(e) else 'no detail'}); older checkpoints "
                                       "are kept") from None
        raise
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Remove ``.tmp-ckpt-*`` / ``.old-*`` folders left by processes that died mid-write. Call it
    only while holding the run's lock (``pixdiff.runlock``): then no live writer owns them."""
    root = Path(run_dir) / "checkpoints"
    gone = [p for pat in (".tmp-ckpt-*", ".old-*") for p in root.glob(pat)] if root.is_dir() else []
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete-looking checkpoint folders, oldest first (hidden temporary folders are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("ckpt-*") if p.is_dir())


def _load_one(path: Path) -> Checkpoint:
    sp = path / STATE
    if not sp.is_file():
        raise CheckpointError(f"{path} has no {STATE}: the checkpoint was not finished")
    try:
        state = json.loads(sp.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{sp} is not valid JSON ({e})") from None
    parts = []
    for name in FILES:
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{f} is missing")
        if state.get("files", {}).get(name) != _sha256(f):
            raise CheckpointError(f"{f} is truncated or corrupt (sha256 differs from {STATE})")
        try:
            parts.append(load_file(str(f)))
        except Exception as e:  # noqa: BLE001 - safetensors raises several types
            raise CheckpointError(f"{f} cannot be read ({e})") from None
    return Checkpoint(path, state, *parts)


def load(path: str | Path) -> Checkpoint:
    """Load a checkpoint folder, or the newest valid checkpoint of a run folder (falling back past
    corrupt ones with a warning)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint path {path} does not exist")
    if (path / STATE).exists() or path.name.startswith("ckpt-"):
        return _load_one(path)
    cands = list_checkpoints(path)
    if not cands:
        raise CheckpointError(f"no checkpoints in {path} (expected {path}/checkpoints/ckpt-*/)")
    errors = []
    for c in reversed(cands):
        try:
            ck = _load_one(c)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        if errors:
            warnings.warn(f"skipped {len(errors)} bad checkpoint(s): {'; '.join(errors)}; using {c.name}", stacklevel=2)
        return ck
    raise CheckpointError(f"every checkpoint in {path} is unusable: {'; '.join(errors)}")


def latest(run_dir: str | Path) -> Checkpoint | None:
    """The newest valid checkpoint, or None when the run has none yet."""
    if not list_checkpoints(run_dir):
        return None
    return load(run_dir)
