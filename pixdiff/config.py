"""The configuration of a training run, as dataclasses saved beside every checkpoint as JSON.

One source of truth: the ``pixdiff train`` flags are generated from these fields (their
``help`` metadata is the flag's help), ``--config FILE`` loads a JSON of the same shape, and
resume compares the saved config with the new one field by field. Each quantity is stored once:
EDM's σ_data and the log-normal training distribution live in the loss config
(``loss.sigma_data``, ``loss.p_mean``, ``loss.p_std``), and the denoiser reads σ_data from there.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pixdiff.errors import PixdiffError
from pixdiff.losses import LossConfig

__all__ = ["ModelConfig", "DataConfig", "LossConfig", "OptimConfig", "RunConfig", "TrainConfig", "diff_configs",
           "RESUME_MAY_CHANGE"]


def _f(default, help: str, **kw):
    """A dataclass field whose ``help`` becomes the CLI flag's help text."""
    if default in (dict, list):
        return field(default_factory=default, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ModelConfig:
    preset: str = _f("tiny", "network preset (see `pixdiff info --presets`)")
    parameterization: Literal["eps", "x", "v", "edm"] = _f(
        "v", "what the network predicts: eps, x, v (SiD2's choice) or edm (Karras et al. 2022 preconditioning)",
        flag="param")
    learn_sigma: bool = _f(False, "IDDPM learned variance (Nichol & Dhariwal 2021): 2x output channels; "
                                  "needs --vlb-weight > 0")
    overrides: dict[str, Any] = _f(dict, "network fields to change, KEY=VALUE with VALUE as JSON "
                                         "(e.g. --net channels=16 --net 'channel_mult=[1,2]')", flag="net")

    def __post_init__(self):
        if self.parameterization not in ("eps", "x", "v", "edm"):
            raise PixdiffError(f"parameterization must be eps, x, v or edm (got {self.parameterization!r})")


@dataclass
class DataConfig:
    name: str = _f("digits", "digits or photos (embedded), moons | swissroll | mixture (2-D points), an image "
                             "folder, a prepared dataset (`pixdiff prepare-data`), an .npz (images uint8 NHWC, "
                             "optional labels) or a Hugging Face save_to_disk folder", flag="data")
    resolution: int | None = _f(None, "image side length; images are centre-cropped and resized to it (default: "
                                      "16 for digits, 32 for photos, a prepared dataset's or an npz's own size; "
                                      "64 for an image folder)")
    channels: int | None = _f(None, "1 or 3 (default: 1 for digits and 2-D data, a prepared dataset's or an npz's "
                                    "own, else 3)")
    hflip: bool = _f(False, "random horizontal flips (not for digits: a flipped 2 is not a 2)")
    conditional: bool = _f(True, "class-conditional when the data has labels (--no-conditional: ignore labels)")
    p_uncond: float = _f(0.1, "label dropout for classifier-free guidance (Ho & Salimans 2022 use 0.1-0.2)")
    labels: str = _f("none", "labels of an image folder: none (unconditional, all images recursively), folders "
                             "(class = first-level sub-folder) or FILE.json; other data carry their own")
    workers: int = _f(2, "data-loader worker processes for folders / prepared / npz data (0 = in the training "
                         "process); the batches do not depend on it")
    crop_pad: int = _f(0, "random-crop augmentation: reflect-pad by this many pixels, crop back at a random "
                          "offset (0 = off)")

    def __post_init__(self):
        if self.resolution is None or self.channels is None:
            native = _native_shape(self.name)  # (resolution, channels) stored with the data, if any
            if self.resolution is None:
                self.resolution = native[0] if native else DEFAULT_RESOLUTION.get(self.name, 64)
            if self.channels is None:
                self.channels = native[1] if native else (1 if self.name in ("digits", *POINTS) else 3)
        if not 0.0 <= self.p_uncond < 1.0:
            raise PixdiffError(f"p_uncond must lie in [0, 1) (got {self.p_uncond})")
        if self.channels not in (1, 3):
            raise PixdiffError(f"channels must be 1 or 3 (got {self.channels})")
        if self.resolution < 1:
            raise PixdiffError(f"resolution must be positive (got {self.resolution})")

    @property
    def is_points(self) -> bool:
        return self.name in POINTS


POINTS = ("moons", "swissroll", "mixture")
DEFAULT_RESOLUTION = {"digits": 16, "photos": 32, **{n: 16 for n in POINTS}}


def _native_shape(name: str) -> tuple[int, int] | None:
    """(side, channels) of a prepared dataset (its manifest) or an npz (its array header), read
    without loading images; None for anything else or anything unreadable (the loader says why)."""
    import zipfile

    p = Path(name)
    try:
        if (p / "manifest.json").is_file():
            m = json.loads((p / "manifest.json").read_text())
            return int(m["resolution"]), int(m["channels"])
        if p.suffix == ".npz" and p.is_file():
            import numpy as np

            with zipfile.ZipFile(p) as z, z.open("images.npy") as f:
                major, _ = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape = read(f)[0]
            if len(shape) == 4 and shape[1] == shape[2] and shape[3] in (1, 3):
                return int(shape[1]), int(shape[3])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return None


@dataclass
class OptimConfig:
    lr: float = _f(1e-3, "peak learning rate (SiD2 uses 1e-4 at scale; tiny CPU models like more)")
    betas: tuple[float, float] = _f((0.9, 0.99), "Adam beta1, beta2 (SiD2: beta2 = 0.99)")
    eps: float = _f(1e-12, "Adam epsilon (SiD2: 1e-12)")
    weight_decay: float = _f(0.0, "AdamW decoupled weight decay (0 = Adam)")
    warmup_images: int = _f(5_000, "linear learning-rate warm-up, in images seen", flag="warmup")
    decay: Literal["constant", "cosine"] = _f("cosine", "learning-rate decay after the warm-up")
    decay_images: int | None = _f(None, "length of the cosine decay in images (default: the training length "
                                        "at the run's start; kept when a resumed run changes --images)")
    grad_clip: float = _f(1.0, "max global gradient norm (0 = off)")
    batch: int = _f(64, "global batch size (over all processes)")
    micro_batch: int = _f(0, "per-forward size for gradient accumulation (0 = the whole local batch)")
    ema_halflife_images: float = _f(20_000.0, "EMA half-life in images seen (Karras et al. 2024 measure EMA "
                                              "length in images)", flag="ema-halflife")
    ema_decay: float | None = _f(None, "per-step EMA decay (e.g. SiD2's 0.9999); replaces the half-life")
    ema_rampup: float | None = _f(0.05, "EMA ramp-up: the half-life is at most this fraction of the images "
                                        "seen so far (Karras et al. 2022, ema_rampup_ratio); 0 = off")
    posthoc_ema: tuple[float, ...] = _f((), "post-hoc EMA (Karras et al. 2024, §3): also track a power-function EMA "
                                            "per σ_rel given (EDM2: 0.05 0.1) and write snapshots to RUN/posthoc, "
                                            "from which pixdiff.posthoc_ema reconstructs any σ_rel after training "
                                            "(default: none, off)")
    posthoc_every_images: int = _f(10_000, "post-hoc EMA snapshot interval in images (default: 10000)",
                                   flag="posthoc-every")

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if not (math.isfinite(self.lr) and 0 < self.lr <= _F32_MAX):
            raise PixdiffError(f"--lr must be a finite number > 0 (got {self.lr})")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise PixdiffError(f"--betas takes two numbers in [0, 1) (got {' '.join(map(str, self.betas))})")
        for flag, v in (("--eps", self.eps), ("--weight-decay", self.weight_decay), ("--grad-clip", self.grad_clip),
                        ("--ema-halflife", self.ema_halflife_images)):
            if not 0 <= v <= _F32_MAX:  # also refuses nan; Adam keeps its state in float32
                raise PixdiffError(f"{flag} must be a finite number >= 0 (got {v})")
        if self.batch < 1 or self.micro_batch < 0:
            raise PixdiffError(f"--batch must be >= 1 and --micro-batch >= 0 (got {self.batch}, {self.micro_batch})")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise PixdiffError(f"ema_decay must lie in [0, 1) (got {self.ema_decay})")
        if self.ema_rampup is not None and not self.ema_rampup >= 0:
            raise PixdiffError(f"ema_rampup must be >= 0 (got {self.ema_rampup})")
        if self.decay not in ("constant", "cosine"):
            raise PixdiffError(f"decay must be constant or cosine (got {self.decay!r})")
        if self.warmup_images < 0:
            raise PixdiffError(f"warmup_images must be >= 0 (got {self.warmup_images})")
        if self.decay_images is not None and self.decay_images < 1:
            raise PixdiffError(f"decay_images must be positive (got {self.decay_images})")
        try:
            self.posthoc_ema = tuple(float(v) for v in self.posthoc_ema)
        except (TypeError, ValueError):
            raise PixdiffError(f"posthoc_ema takes a list of σ_rel numbers (got {self.posthoc_ema!r:.60})") from None
        if not all(0.0 < v <= _SIGMA_REL_MAX for v in self.posthoc_ema):  # also refuses nan
            raise PixdiffError(f"posthoc_ema takes σ_rel values in (0, {_SIGMA_REL_MAX:.5f}], 1/√12 being the plain "
                               f"average of the run (EDM2: 0.05 0.1) (got {' '.join(map(str, self.posthoc_ema))})")
        if len(set(self.posthoc_ema)) != len(self.posthoc_ema):
            raise PixdiffError(f"posthoc_ema lists a σ_rel twice ({' '.join(map(str, self.posthoc_ema))})")
        if self.posthoc_every_images < 1:
            raise PixdiffError(f"posthoc_every_images must be at least 1 (got {self.posthoc_every_images})")


@dataclass
class RunConfig:
    images: int = _f(200_000, "training length in images seen")
    seed: int = _f(0, "one seed reproduces the run: initial weights, data order, noise, dropout")
    precision: Literal["fp32", "bf16", "fp16"] = _f(
        "fp32", "autocast precision of the network: fp32, bf16, or fp16 with a gradient scaler (weights, Adam "
                "and EMA stay fp32); bf16/fp16 are for GPUs (slower than fp32 on CPUs without bf16 units)")
    compile: bool = _f(False, "torch.compile the network (slow first steps, faster after; GPUs)")
    fsdp: bool = _f(False, "shard weights, gradients and Adam state over the torchrun processes (FSDP2) instead "
                           "of replicating them (DDP); for networks that do not fit one device")
    log_every_images: int = _f(2_000, "log interval in images", flag="log-every")
    ckpt_every_images: int = _f(20_000, "checkpoint interval in images (0 = only at the end)", flag="ckpt-every")
    sample_every_images: int = _f(0, "sample-grid interval in images (0 = only at the end)", flag="sample-every")
    final_grid: bool = _f(True, "write OUT/samples.png, a 10×10 grid from the EMA weights, when training ends "
                                "(--no-final-grid: skip it, e.g. in sweeps that sample the run themselves)")
    keep: int = _f(3, "checkpoints kept")
    log: Literal["none", "tensorboard", "wandb"] = _f("none", "experiment tracking beside RUN/log.jsonl: "
                                                              "tensorboard (RUN/tensorboard) or wandb (offline)")
    eval_every_images: int = _f(0, "evaluate the EMA model every this many images (0 = never): Fréchet "
                                   "distance of --eval-n samples against the training data (and class accuracy "
                                   "with labels), into RUN/eval.jsonl", flag="eval-every")
    eval_n: int = _f(500, "samples per evaluation")
    eval_features: str = _f("digits", "feature network of the evaluation: digits (shipped) or inception "
                                      "(needs --eval-inception-weights)")
    eval_inception_weights: str | None = _f(None, "pytorch-fid's Inception weights file, for --eval-features inception")
    keep_best: bool = _f(False, "also keep the checkpoint with the lowest evaluation FD in RUN/best")
    max_nan_steps: int = _f(10, "stop after this many non-finite steps in a row")

    def __post_init__(self):
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise PixdiffError(f"--precision must be fp32, bf16 or fp16 (got {self.precision!r})")
        if self.images < 1:
            raise PixdiffError("training length must be at least one image (--steps / --images)")
        if not 0 <= self.seed < 2**63:
            raise PixdiffError(f"--seed must be an integer from 0 to 2**63 - 1 (got {self.seed})")
        if self.log_every_images < 1:
            raise PixdiffError(f"--log-every must be at least 1 image (got {self.log_every_images})")
        if self.ckpt_every_images < 0 or self.sample_every_images < 0:
            raise PixdiffError("--ckpt-every and --sample-every must be >= 0 (0 = only at the end)")
        if self.log not in ("none", "tensorboard", "wandb"):
            raise PixdiffError(f"--log must be none, tensorboard or wandb (got {self.log!r})")
        if self.eval_every_images < 0 or self.eval_n < 2:
            raise PixdiffError("--eval-every must be >= 0 and --eval-n >= 2")
        if self.keep_best and not self.eval_every_images:
            raise PixdiffError("--keep-best needs --eval-every")
        if self.keep < 1:
            raise PixdiffError(f"--keep must be at least 1 (got {self.keep})")
        if self.max_nan_steps < 1:
            raise PixdiffError(f"--max-nan-steps must be at least 1 (got {self.max_nan_steps})")


_F32_MAX = 3.4028234663852886e38  # the largest float32: optimizer state and weights are float32
_SIGMA_REL_MAX = 1.0 / math.sqrt(12.0)  # pixdiff.posthoc_ema.SIGMA_REL_MAX (γ = 0); that module sits above this one

_SECTIONS = {"model": ModelConfig, "data": DataConfig, "loss": LossConfig, "optim": OptimConfig, "run": RunConfig}


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self):
        for name, kls in _SECTIONS.items():
            v = getattr(self, name)
            if isinstance(v, dict):
                setattr(self, name, _section(name, kls, v))
        if self.model.learn_sigma and self.loss.vlb_weight <= 0 and self.loss.weighting != "vlb":
            raise PixdiffError("learn_sigma trains the variance through L_vlb only: set loss.vlb_weight > 0 "
                               "(IDDPM: 0.001) or weighting='vlb'")

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        if not isinstance(d, dict):
            raise PixdiffError(f"a config is a JSON object of sections {', '.join(_SECTIONS)} (got {type(d).__name__})")
        for name, sub in d.items():
            if name in _SECTIONS and not isinstance(sub, dict):
                raise PixdiffError(f"config section [{name}] must be a JSON object of fields (got {sub!r:.60})")
        d = _migrate(d)
        unknown = set(d) - set(_SECTIONS)
        if unknown:
            raise PixdiffError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        return cls(**{name: _section(name, kls, d.get(name, {})) for name, kls in _SECTIONS.items()})

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        p = Path(path)
        if not p.is_file():
            raise PixdiffError(f"config file {p} does not exist")
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except json.JSONDecodeError as e:
            raise PixdiffError(f"config file {p} is not valid JSON: {e}") from None
        except UnicodeDecodeError:
            raise PixdiffError(f"config file {p} is not text (a JSON config is UTF-8 text)") from None


def _section(name: str, kls, sub: dict):
    names = {f.name for f in dataclasses.fields(kls)}
    bad = set(sub) - names
    if bad:
        raise PixdiffError(f"unknown field(s) in [{name}]: {', '.join(sorted(bad))}; valid: {', '.join(sorted(names))}")
    try:
        return kls(**sub)
    except TypeError as e:
        raise PixdiffError(f"bad [{name}] config: {e}") from None


def _migrate(d: dict) -> dict:
    """Older configs: σ_data kept a copy in [model] (moved to [loss]); run.bf16 was a bool
    (now run.precision)."""
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    run = d.get("run", {})
    if "bf16" in run:  # before --precision: a bool
        run.setdefault("precision", "bf16" if run.pop("bf16") else "fp32")
    model, loss = d.get("model", {}), d.setdefault("loss", {})
    if "sigma_data" in model:
        sd = model.pop("sigma_data")
        if "sigma_data" in loss and loss["sigma_data"] != sd:
            raise PixdiffError(f"config gives two σ_data: model {sd} and loss {loss['sigma_data']}; keep one "
                               "(loss.sigma_data)")
        loss["sigma_data"] = sd
    return d


# Fields that may change when resuming. All but one do not change what a step computes: the cosine
# decay length is optim.decay_images, fixed when the run starts, so a longer or shorter run keeps
# its learning rate at every step it shares with the original. optim.decay_images itself may be
# changed on purpose, to re-plan the decay of an extended run from the resume step on.
RESUME_MAY_CHANGE = {"run.images", "run.log_every_images", "run.ckpt_every_images", "run.sample_every_images",
                     "run.keep", "run.max_nan_steps", "optim.decay_images", "run.log", "run.eval_every_images",
                     "run.eval_n", "run.eval_features", "run.eval_inception_weights", "run.keep_best", "run.fsdp",
                     "data.workers", "optim.posthoc_every_images", "run.final_grid"}


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ("overrides", "schedule_options"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def diff_configs(old: dict, new: dict, ignore: set[str] = RESUME_MAY_CHANGE) -> list[str]:
    """Dotted names of the fields that differ (``ignore``d ones aside), after both are read as
    ``TrainConfig`` (so a config saved with defaults left out equals one that spells them)."""
    try:
        old, new = TrainConfig.from_dict(old).to_dict(), TrainConfig.from_dict(new).to_dict()
    except PixdiffError:
        pass
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if k not in ignore and a.get(k) != b.get(k))


def warn_if_past_decay(cfg: TrainConfig) -> None:
    o = cfg.optim
    if o.decay == "cosine" and o.decay_images is not None and cfg.run.images > o.decay_images:
        warnings.warn(f"training runs to {cfg.run.images} images but the cosine decay ends at {o.decay_images}: "
                      "the steps past it have learning rate 0 (set optim.decay_images to re-plan the decay)",
                      stacklevel=2)
