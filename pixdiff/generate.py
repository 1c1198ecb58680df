"""Sampling a trained run from Python: ``pixdiff.load(run).sample(n)``.

    pipe = pixdiff.load("runs/digits")                    # newest valid checkpoint, EMA weights
    images, labels = pipe.sample(100, classes=[3], sampler="heun", steps=18, seed=0)

``images`` is uint8 N×H×W×C, bit-identical to ``pixdiff sample --ckpt runs/digits --n 100
--classes 3 --seed 0 --out x.npz`` (the program calls this code). Image i is drawn from its own
generator seeded ``seed + i`` (as EDM's StackedRandomGenerator does), so it does not depend on
the batch it was drawn in or on how many others were drawn with it.

The network is rebuilt from the network config saved in the checkpoint, never from the preset's
current definition: editing a preset does not change what an old checkpoint loads into.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixdiff import checkpoint as ckpt_io
from pixdiff import data as data_mod
from pixdiff import nets
from pixdiff.config import TrainConfig
from pixdiff.denoiser import Denoiser
from pixdiff.errors import PixdiffError

__all__ = ["Pipeline", "load", "load_denoiser", "build_denoiser", "resolve_device", "RUN_KINDS"]

WEIGHTS = ("ema", "raw")

# Runs that are not plain diffusion runs (distilled students, the other generative families) write
# ``state["kind"]`` into their checkpoints and register a loader here as "module:function". The
# function takes ``(checkpoint, device, weights)`` and returns an object with Pipeline's
# ``sample(n, classes, sampler, steps, guidance, seed, batch, ...)``, so ``pixdiff sample`` and
# ``pixdiff eval`` work on every kind of run unchanged.
RUN_KINDS: dict[str, str] = {
    "vae": "pixdiff.baselines.common:load_pipeline",
    "gan": "pixdiff.baselines.common:load_pipeline",
    "pixelcnn": "pixdiff.baselines.common:load_pipeline",
    "vqvae": "pixdiff.baselines.common:load_pipeline",
    "maskgit": "pixdiff.baselines.common:load_pipeline",
    "distilled": "pixdiff.distill.common:load_student",
    "genie": "pixdiff.distill.genie:load_genie",
}

# Kinds of run whose weights are a pixdiff Denoiser (usable as a teacher, a guide, for `pixdiff nll`).
DENOISER_KINDS = ("diffusion", "distilled")

# A diffusion run samples with these unless its checkpoint's meta names its own
# ("sampler", "steps"): a distilled run knows the sampler and step count it was distilled for.
DEFAULT_SAMPLER, DEFAULT_STEPS = "heun", 18


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means the GPU when there is one, else the CPU; a named device must exist."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise PixdiffError(f"unknown device {device!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PixdiffError(f"device {device!r} asked for, but this machine has no CUDA GPU")
    if dev.type == "meta":
        raise PixdiffError(f"device {device!r} holds no data (use cpu, cuda or cuda:N)")
    try:  # a device torch knows but cannot use here (mps on Linux, cuda:7 on a 1-GPU machine)
        torch.empty(1, device=dev)
    except (RuntimeError, AssertionError) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0][:160]
        raise PixdiffError(f"device {device!r} cannot be used on this machine ({why})") from None
    return dev


def build_denoiser(cfg: TrainConfig, in_channels: int, num_classes: int, net_config: dict | None = None,
                   net_kind: str | None = None) -> Denoiser:
    """The denoiser of a run: from the saved network config when given, else from the preset."""
    if net_config is not None:
        net = nets.build(net_kind or net_config.get("kind"), net_config)
    else:
        o = dict(cfg.model.overrides)
        o.setdefault("in_channels", in_channels)
        o.setdefault("resolution", cfg.data.resolution)
        o.setdefault("num_classes", num_classes)
        if cfg.model.learn_sigma:
            o.setdefault("learn_sigma", True)
        net = nets.from_preset(cfg.model.preset, **o)
    return Denoiser(net, cfg.model.parameterization, cfg.loss.sigma_data, learn_sigma=cfg.model.learn_sigma)


def read_checkpoint(path: str | Path) -> ckpt_io.Checkpoint:
    """A run folder's newest valid checkpoint, one checkpoint folder, or a weights file written by
    ``pixdiff export --format safetensors-ema`` (``pixdiff.export``)."""
    p = Path(path)
    if p.is_file() and p.suffix == ".safetensors":
        from pixdiff.export import read_weights_file

        return read_weights_file(p)
    return ckpt_io.load(p)


def load_denoiser(path: str | Path, weights: str = "ema", device: str | torch.device | None = "cpu",
                  checkpoint: ckpt_io.Checkpoint | None = None):
    """``(denoiser, checkpoint)`` from a run folder or a checkpoint folder; ``weights`` = ema | raw."""
    if weights not in WEIGHTS:
        raise PixdiffError(f"weights must be 'ema' or 'raw' (got {weights!r})")
    ck = checkpoint if checkpoint is not None else read_checkpoint(path)
    if ck.state.get("kind", "diffusion") not in DENOISER_KINDS and ck.state.get("kind") in RUN_KINDS \
            and checkpoint is None:
        raise PixdiffError(f"{ck.path} is a {ck.state['kind']} run, not a diffusion run: this needs a diffusion "
                           "model (pixdiff sample / eval / pixdiff.load read every kind)")
    if ck.state.get("kind") == "classifier":
        raise PixdiffError(f"{ck.path} is a noisy classifier (pixdiff train-classifier), not a diffusion run")
    cfg = TrainConfig.from_dict(ck.state["config"])
    meta = ck.state["meta"]
    den = build_denoiser(cfg, meta["in_channels"], meta["num_classes"], meta.get("net_config"), meta.get("net_kind"))
    try:
        den.load_state_dict(ck.ema if weights == "ema" else ck.model)
    except RuntimeError as e:
        raise ckpt_io.CheckpointError(f"{ck.path}: weights do not fit the saved config ({str(e).splitlines()[0]})") from None
    den.eval().to(resolve_device(device))
    den.num_classes = meta["num_classes"]
    den.null_label = meta["num_classes"] if meta["num_classes"] else None
    return den, ck


def _labels_for(n: int, classes: Sequence[int] | None, num_classes: int) -> torch.Tensor | None:
    if num_classes == 0:
        if classes:
            raise PixdiffError("this model is unconditional; give no classes")
        return None
    cl = list(classes) if classes else list(range(num_classes))
    bad = [c for c in cl if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < num_classes]
    if bad:
        raise PixdiffError(f"class(es) {bad} out of range: the model has classes 0..{num_classes - 1}")
    return torch.tensor([int(cl[i % len(cl)]) for i in range(n)])


@dataclass
class Pipeline:
    """A trained run, ready to sample. ``denoiser(z, logsnr, cond) -> x̂`` is the EMA (or raw) model."""

    denoiser: Denoiser
    config: TrainConfig
    checkpoint: Path
    weights: str
    device: torch.device
    meta: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def class_names(self) -> list[str] | None:
        return self.meta.get("class_names")

    @property
    def default_sampler(self) -> tuple[str, int | None]:
        """``(sampler, steps)`` this run samples with when none is named (heun, 18 for a diffusion run)."""
        return self.meta.get("sampler", DEFAULT_SAMPLER), self.meta.get("steps", DEFAULT_STEPS)

    @property
    def data_shape(self) -> tuple[int, ...]:
        c = self.config.data
        return tuple(self.meta.get("data_shape") or (c.channels, c.resolution, c.resolution))

    @property
    def training_chain(self):
        """The discrete chain the run trained on (a ``schedules.DiscreteSchedule``), or None for a
        continuous-time run. ``ddpm`` and ``ddim`` sample on it unless told otherwise: a respaced
        sub-sequence of the training chain, as IDDPM samples (Nichol & Dhariwal 2021, §4), which a
        learned variance needs (its interpolation is between that chain's β and β̃)."""
        from pixdiff import schedules

        try:
            chain = self.config.loss.build_schedule()
        except PixdiffError:
            return None
        return chain if isinstance(chain, schedules.DiscreteSchedule) else None

    def guided(self, guidance: float = 0.0, guidance_interval=None, classifier=None, guide_ckpt=None,
               conditional: bool = True):
        """The denoiser with the one guidance method asked for (w = 0: the unguided model).

        ``guidance`` is the weight w of classifier-free guidance x̃ = (1 + w) x̂_c − w x̂_u
        (Ho & Salimans 2022) by default; the classifier scale s with ``classifier`` (a noisy
        classifier checkpoint, Dhariwal & Nichol 2021); with ``guide_ckpt`` autoguidance by that
        weaker run, D + w (D − D_weak) (Karras et al. 2024)."""
        from pixdiff import guidance as guidance_mod

        w = float(guidance or 0.0)
        if classifier is not None and guide_ckpt is not None:
            raise PixdiffError("choose one of classifier guidance and autoguidance, not both")
        if classifier is not None:
            from pixdiff.train_classifier import load_classifier

            clf = load_classifier(classifier, device=self.device)
            return guidance_mod.classifier(self.denoiser, clf, w, conditional=self.num_classes > 0), clf.num_classes
        if guide_ckpt is not None:
            weak, _ = load_denoiser(guide_ckpt, self.weights, self.device)
            return guidance_mod.autoguidance(self.denoiser, weak, w, convention="cfg"), self.num_classes
        if w and self.meta.get("no_guidance"):  # a model that says why it cannot be guided
            raise PixdiffError(self.meta["no_guidance"])
        if w and not (conditional and self.num_classes):
            raise PixdiffError("guidance needs a class-conditional model (or a classifier / a guide checkpoint)")
        if w:
            return guidance_mod.classifier_free(self.denoiser, w, interval=guidance_interval), self.num_classes
        return self.denoiser, self.num_classes

    @torch.no_grad()
    def sample(self, n: int, classes: Sequence[int] | None = None, sampler: str | None = None, steps: int | None = None,
               guidance: float = 0.0, seed: int = 0, batch: int | None = None, *, guidance_interval=None,
               classifier=None, guide_ckpt=None, progress: bool = False, distributed: bool | None = None,
               **options):
        """Draw ``n`` images: ``(images uint8 [n, H, W, C], labels int64 [n] or None)``.

        ``classes`` are cycled through (default: every class); ``sampler=None`` is the run's own
        (``default_sampler``: heun with 18 steps for a diffusion run, the method's own for a
        distilled one) and ``steps=None`` then its step count; with a named sampler,
        ``steps=None`` is that sampler's default; ``batch`` images go through the network at once (default 256). 2-D toy runs
        return float points [n, 2] instead of images. ``options`` go to ``pixdiff.sample``
        (the sampler's own options, e.g. ``eta`` for ddim; ``schedule``, ``grid``). ``ddpm`` and
        ``ddim`` run on the run's own discrete chain when it trained on one (``training_chain``).

        Under ``torchrun`` (``distributed=None`` detects it) each process draws a contiguous share
        of the n images and rank 0 returns them all, identical to one process (image i always
        comes from seed + i); the other ranks return ``(None, None)``."""
        from tqdm import tqdm

        from pixdiff import samplers

        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise PixdiffError(f"n must be a positive integer (got {n!r})")
        batch = 256 if batch is None else batch
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise PixdiffError(f"batch must be a positive integer (got {batch!r})")
        if sampler is None:
            sampler, run_steps = self.default_sampler
            steps = run_steps if steps is None else steps
        spec = samplers.get(sampler)  # a bad name fails before any work
        if isinstance(spec.schedule, str) and "schedule" not in options and "grid" not in options:
            chain = self.training_chain  # ddpm / ddim: the run's own chain, not the sampler's default
            if chain is not None:
                options["schedule"] = chain
        model, label_classes = self.guided(guidance, guidance_interval, classifier, guide_ckpt)
        labels = _labels_for(n, classes, label_classes)
        shape = self.data_shape
        from pixdiff import distributed as dist_mod

        rank, world = dist_mod.init() if distributed in (None, True) else (0, 1)
        first, last = dist_mod.shard_range(n, rank, world)
        out = []
        for lo in tqdm(range(first, last, batch), desc="sample", disable=not progress or rank != 0, unit="batch"):
            hi = min(last, lo + batch)
            gens = [torch.Generator().manual_seed(seed + i) for i in range(lo, hi)]
            cond = None if labels is None else labels[lo:hi].to(self.device)
            x = samplers.sample(model, (hi - lo, *shape), sampler=sampler, steps=steps, cond=cond, generator=gens,
                                device=self.device, **options)
            x = x.float()
            out.append((x.clamp(-1, 1) if len(shape) > 1 else x).cpu())  # 2-D toy points are not clipped
        x = torch.cat(out) if out else torch.empty((0, *shape))
        if world > 1:
            import torch.distributed as dist

            parts = [None] * world if rank == 0 else None
            dist.gather_object(x, parts, dst=0)
            if rank != 0:
                return None, None
            x = torch.cat(parts)
        lab = None if labels is None else labels.numpy()
        if len(shape) == 1:  # vector (2-D toy) data: no pixels to quantise
            return x.numpy(), lab
        return data_mod.to_uint8(x), lab


def load(run_or_checkpoint: str | Path, device: str | torch.device | None = None, weights: str = "ema") -> Pipeline:
    """A trained run (its newest valid checkpoint), one checkpoint folder, or an exported weights
    file (``.safetensors``, ``pixdiff export``), ready to sample.

    ``device=None`` picks the GPU when there is one; ``weights`` is ``ema`` (default) or ``raw``."""
    dev = resolve_device(device)
    if weights not in WEIGHTS:
        raise PixdiffError(f"weights must be 'ema' or 'raw' (got {weights!r})")
    ck = read_checkpoint(run_or_checkpoint)
    if "weights" in ck.state:  # an exported weights file holds one set: the one it was written with
        if weights == "raw" and ck.state["weights"] != "raw":
            raise PixdiffError(f"{ck.path} holds the {ck.state['weights']} weights only")
        weights = ck.state["weights"]
    kind = ck.state.get("kind", "diffusion")
    if kind in RUN_KINDS:
        import importlib

        module, fn = RUN_KINDS[kind].split(":")
        return getattr(importlib.import_module(module), fn)(ck, dev, weights)
    den, ck = load_denoiser(run_or_checkpoint, weights, dev, checkpoint=ck)
    return Pipeline(den, TrainConfig.from_dict(ck.state["config"]), ck.path, weights, dev, dict(ck.state["meta"]))
