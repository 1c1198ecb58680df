"""The configuration of a training run, as dataclasses saved beside every checkpoint as JSON.

One source of truth: the CLI's flags and defaults are read from these fields (``pixdiff train
--help`` shows the comments' gist), ``--config FILE`` loads a JSON of the same shape, and resume
compares the saved config with the new one field by field.
"""

from __future__ import annotations

from pixdiff.errors import PixdiffError

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["ModelConfig", "DataConfig", "OptimConfig", "RunConfig", "TrainConfig", "diff_configs",
           "RESUME_MAY_CHANGE"]


@dataclass
class ModelConfig:
    preset: str = "tiny"  # a name from pixdiff.nets.available()
    parameterization: Literal["eps", "x", "v", "edm"] = "v"  # what the backbone predicts (SiD2: v)
    sigma_data: float = 0.5  # EDM's σ_data, only used by parameterization="edm"
    learn_sigma: bool = False  # IDDPM learned variance: 2× output channels; needs loss vlb_weight > 0
    overrides: dict[str, Any] = field(default_factory=dict)  # preset fields to change, e.g. {"channels": 32}

    def __post_init__(self):
        if self.parameterization not in ("eps", "x", "v", "edm"):
            raise PixdiffError(f"parameterization must be eps, x, v or edm (got {self.parameterization!r})")


@dataclass
class DataConfig:
    name: str = "digits"  # digits | moons | swissroll | mixture | path to an image folder
    resolution: int = 16  # images are resized / centre-cropped to this size
    channels: int = 1  # 1 (grayscale) or 3 (RGB); digits are 1
    hflip: bool = False  # random horizontal flips (not for digits: a flipped 2 is not a 2)
    conditional: bool = True  # train class-conditional when the data has labels
    p_uncond: float = 0.1  # label dropout for classifier-free guidance (seed 001: 0.1–0.2)

    def __post_init__(self):
        if not 0.0 <= self.p_uncond < 1.0:
            raise PixdiffError(f"p_uncond must lie in [0, 1) (got {self.p_uncond})")
        if self.channels not in (1, 3):
            raise PixdiffError(f"channels must be 1 or 3 (got {self.channels})")


@dataclass
class OptimConfig:
    lr: float = 1e-3  # peak learning rate (SiD2 uses 1e-4 at scale; tiny CPU models like more)
    betas: tuple[float, float] = (0.9, 0.99)  # Adam β1, β2 (SiD2: β2 = 0.99)
    eps: float = 1e-12  # Adam ε (SiD2: 1e-12)
    weight_decay: float = 0.0  # AdamW decoupled weight decay (0 = Adam)
    warmup_images: int = 5_000  # linear learning-rate warm-up length, in images seen
    decay: Literal["constant", "cosine"] = "cosine"  # after warm-up
    grad_clip: float = 1.0  # max global gradient norm (0 = off)
    batch: int = 64  # global batch size (over all DDP ranks)
    micro_batch: int = 0  # per-forward size for gradient accumulation (0 = the whole local batch)
    ema_halflife_images: float = 20_000.0  # EMA half-life in images seen (SiD2 decay 0.9999 at batch 2048 ≈ 14M)
    ema_decay: float | None = None  # per-step EMA decay (e.g. SiD2's 0.9999); overrides the half-life when set

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.lr <= 0 or self.batch < 1 or self.micro_batch < 0:
            raise PixdiffError("lr must be positive, batch >= 1 and micro_batch >= 0")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise PixdiffError(f"ema_decay must lie in [0, 1) (got {self.ema_decay})")
        if self.decay not in ("constant", "cosine"):
            raise PixdiffError(f"decay must be constant or cosine (got {self.decay!r})")


@dataclass
class RunConfig:
    images: int = 200_000  # training length in images seen
    seed: int = 0  # one seed reproduces the run: data order, noise, dropout
    bf16: bool = False  # bf16 autocast for the network (weights and optimizer stay fp32); measured
    # slower than fp32 for the tiny U-Net on CPU here (see docs/benchmarks.md), so off by default
    log_every_images: int = 2_000  # JSONL log interval
    ckpt_every_images: int = 20_000  # checkpoint interval
    sample_every_images: int = 0  # sample-grid interval (0 = only at the end)
    keep: int = 3  # checkpoints kept
    max_nan_steps: int = 10  # stop after this many non-finite losses in a row


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: dict[str, Any] = field(default_factory=dict)  # fields of pixdiff.losses.LossConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        parts = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "run": RunConfig}
        unknown = set(d) - set(parts) - {"loss"}
        if unknown:
            raise PixdiffError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        kw = {}
        for name, kls in parts.items():
            sub = dict(d.get(name, {}))
            names = {f.name for f in dataclasses.fields(kls)}
            bad = set(sub) - names
            if bad:
                raise PixdiffError(f"unknown field(s) in [{name}]: {', '.join(sorted(bad))}; valid: {', '.join(sorted(names))}")
            kw[name] = kls(**sub)
        return cls(loss=dict(d.get("loss", {})), **kw)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        p = Path(path)
        if not p.is_file():
            raise PixdiffError(f"config file {p} does not exist")
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except json.JSONDecodeError as e:
            raise PixdiffError(f"config file {p} is not valid JSON: {e}") from None


# Fields that may change when resuming: they do not change what a step computes.
RESUME_MAY_CHANGE = {"run.images", "run.log_every_images", "run.ckpt_every_images", "run.sample_every_images",
                     "run.keep", "run.max_nan_steps"}


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k != "overrides":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def diff_configs(old: dict, new: dict, ignore: set[str] = RESUME_MAY_CHANGE) -> list[str]:
    """Dotted names of the fields that differ (``ignore``d ones aside)."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if k not in ignore and a.get(k) != b.get(k))
