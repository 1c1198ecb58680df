"""What every baseline family shares: the training loop, checkpoints, EMA, sampling pipeline.

A family is a module with

    NET_DEFAULTS     its network / method hyper-parameters (``model.overrides`` = ``--net K=V`` change them)
    TRAIN_DEFAULTS   its default budget: {"optim": {...}, "run": {...}} applied under the typed flags
    build(net, shape, num_classes) -> Model (an nn.Module) with
        train_step(x, y, g, opt, ctx) -> dict of floats (at least "loss"); calls ``ctx.optimize``
        ema_key(name) -> bool        is this state-dict entry averaged (else the EMA copies it)
        generate(labels, gens, steps=None) -> float images [n, C, H, W] in [-1, 1]
        bits_per_dim(x, y) -> [n]    only where the family has a likelihood (bound or exact)

The loop is pixdiff.train's, without what baselines do not need (DDP, FSDP, accumulation, mixed
precision): every random draw of step s comes from generators seeded by (run seed, s) exactly as
there (``pixdiff.train._shard_generator``), the data from ``pixdiff.datasets.StepBatches`` (the
batches of step s), so a run killed and resumed from its last checkpoint recomputes the lost
steps bit for bit on the CPU. Checkpoints are ``pixdiff.checkpoint`` folders with
``state["kind"]`` = the family, which ``pixdiff.load`` dispatches on (``pixdiff.generate.RUN_KINDS``).
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixdiff import checkpoint as ckpt_io
from pixdiff import data as data_mod
from pixdiff.atomic import atomic_write_text
from pixdiff.baselines import FAMILIES
from pixdiff.config import TrainConfig, diff_configs
from pixdiff.errors import PixdiffError

__all__ = ["family_module", "net_config", "apply_family_defaults", "train", "StepContext", "BaselinePipeline",
           "load_pipeline", "lr_at", "bits_per_dim"]


def family_module(name: str):
    if name not in FAMILIES:
        raise PixdiffError(f"unknown family {name!r} (choose from diffusion, {', '.join(FAMILIES)})")
    return importlib.import_module(f"pixdiff.baselines.{name}")


def net_config(family: str, overrides: dict) -> dict:
    """The family's network config: its defaults with ``--net KEY=VALUE`` applied (unknown keys refused)."""
    mod = family_module(family)
    bad = sorted(set(overrides) - set(mod.NET_DEFAULTS))
    if bad:
        raise PixdiffError(f"--net {', '.join(bad)}: not a field of the {family} network; "
                           f"valid: {', '.join(sorted(mod.NET_DEFAULTS))}")
    return {**mod.NET_DEFAULTS, **overrides}


def apply_family_defaults(family: str, d: dict) -> dict:
    """A config dict (TrainConfig's shape) with the family's default budget written in; the model
    preset names the family (that is how a resumed run knows it)."""
    mod = family_module(family)
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    for section, fields in mod.TRAIN_DEFAULTS.items():
        d[section].update(fields)
    d["model"]["preset"] = family
    return d


def lr_at(cfg: TrainConfig, images: int) -> float:
    from pixdiff.train import _lr

    return _lr(cfg, images)


@dataclass
class StepContext:
    """What a family's ``train_step`` gets besides the batch: the config, the images seen before
    this step, and ``optimize`` (one update of some of the parameters)."""

    cfg: TrainConfig
    images: int
    grad_clip: float

    def optimize(self, opt: torch.optim.Optimizer, loss: torch.Tensor, params: Sequence[torch.nn.Parameter]) -> bool:
        """Back-propagate ``loss`` into ``params`` only, clip, and step the optimizer (which skips
        every parameter without a gradient). A non-finite loss or gradient skips the update."""
        opt.zero_grad(set_to_none=True)
        params = list(params)
        if not bool(torch.isfinite(loss)):
            return False
        loss.backward(inputs=params)
        grads = [p.grad for p in params if p.grad is not None]
        if not all(bool(torch.isfinite(gr).all()) for gr in grads):
            opt.zero_grad(set_to_none=True)
            return False
        torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip > 0 else float("inf"))
        opt.step()
        return True


def _build(family: str, net: dict, shape, num_classes: int):
    return family_module(family).build(net, tuple(shape), num_classes)


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True, device=None,
          vqvae: str | Path | None = None) -> Path:
    """Train the family ``cfg.model.preset`` into ``out`` (a run folder like a diffusion run's);
    returns the final checkpoint. ``vqvae``: for maskgit, a trained vqvae run whose autoencoder is
    used (frozen) instead of training one first."""
    import os

    from pixdiff.runlock import RunLock
    from pixdiff.train import _check_run_folder

    out = Path(out)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise PixdiffError("the baseline families train in one process; run them without torchrun")
    _check_run_folder(out, resume)
    try:
        lock = RunLock(out)
        lock.__enter__()
    except OSError as e:
        raise PixdiffError(f"cannot write to run folder {out} ({e.strerror or e})") from None
    try:
        ckpt_io.remove_stale_temporaries(out)
        return _train(cfg, out, resume, progress, device, vqvae)
    finally:
        lock.__exit__(None, None, None)


def _train(cfg: TrainConfig, out: Path, resume: bool, progress: bool, device, vqvae) -> Path:
    from pixdiff.datasets import StepBatches, open_training_data
    from pixdiff.train import (
        TrainingStopped,
        _progress,
        _shard_generator,
        _StopFlag,
        _truncate_log,
        ema_decay,
        plot_loss_curve,
    )

    family = cfg.model.preset
    family_module(family)  # an unknown family fails here
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = TrainConfig.from_dict(cfg.to_dict())
    existing = ckpt_io.list_checkpoints(out)
    ck = ckpt_io.load(out) if resume and existing else None
    if cfg.optim.decay_images is None:  # fixed once, when the run starts (as pixdiff.train does)
        cfg.optim.decay_images = ck.state["config"]["run"]["images"] if ck is not None else cfg.run.images
    if vqvae is not None and ck is None:  # maskgit on a trained tokeniser: its fields, no stage 1
        if family != "maskgit":
            raise PixdiffError(f"--vqvae is for maskgit, not {family}")
        from pixdiff.baselines.vqvae import TOKENIZER_FIELDS

        tok = ckpt_io.load(vqvae)
        if tok.state.get("kind") != "vqvae":
            raise PixdiffError(f"--vqvae {vqvae}: a {tok.state.get('kind', 'diffusion')} run, not a vqvae run")
        tnet = tok.state["meta"]["net_config"]
        cfg.model.overrides = {**cfg.model.overrides, **{k: tnet[k] for k in TOKENIZER_FIELDS}, "vq_images": 0}
    net = net_config(family, cfg.model.overrides)
    ds = open_training_data(cfg.data, "train", verbose=False)
    if len(ds.shape) != 3:
        raise PixdiffError(f"the {family} baseline models images, not data of shape {tuple(ds.shape)}")
    conditional = cfg.data.conditional and ds.labels is not None
    num_classes = ds.num_classes if conditional else 0
    torch.manual_seed(cfg.run.seed)  # initial weights
    model = _build(family, net, ds.shape, num_classes).to(device)
    o = cfg.optim
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    meta = {"num_classes": num_classes, "in_channels": ds.shape[0], "class_names": ds.class_names,
            "dataset": ds.name, "data_shape": list(ds.shape), "family": family, "net_config": net}
    images, seconds = 0, 0.0
    if ck is not None:
        if ck.state.get("kind") != family:
            raise PixdiffError(f"{out} holds a {ck.state.get('kind', 'diffusion')} run, not a {family} run")
        changed = diff_configs(ck.state["config"], cfg.to_dict())
        if changed:
            raise PixdiffError(f"cannot resume {out} with a different config; differing fields: {', '.join(changed)}")
        model.load_state_dict(ck.model)
        ckpt_io.optimizer_from_flat(opt, ck.optim, ck.state["optim"])
        ema = {k: v.float().to(device) for k, v in ck.ema.items()}
        images, seconds = ck.state["images"], ck.state.get("train_seconds", 0.0)
        meta = dict(ck.state["meta"])
        _truncate_log(out / "log.jsonl", images)
        if progress:
            print(f"resumed {ck.path} at {images} images", file=sys.stderr)
    else:
        if vqvae is not None:
            meta["vqvae"] = str(model.load_tokenizer(vqvae))
        ema = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
    batches = StepBatches(ds, seed=cfg.run.seed, batch=o.batch, device=device, conditional=conditional,
                          hflip=cfg.data.hflip, crop_pad=cfg.data.crop_pad, workers=cfg.data.workers)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", cfg.to_json() + "\n")
    ema_of = {k: model.ema_key(k) for k in ema}
    lr_fn = getattr(model, "lr_at", None) or (lambda c, i: lr_at(c, i))
    r = cfg.run

    def save():
        opt_tensors, opt_meta = ckpt_io.optimizer_to_flat(opt)
        state = {"kind": family, "config": cfg.to_dict(), "optim": opt_meta, "images": images,
                 "step": images // o.batch, "meta": meta, "train_seconds": seconds,
                 "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        return ckpt_io.save(out, images, state, model.state_dict(), ema, opt_tensors, r.keep)

    last, saved_at = None, None
    bar = _progress(r.images, images, enabled=progress)
    with open(out / "log.jsonl", "a") as log_f, _StopFlag() as stop:
        t0 = time.perf_counter()
        while images < r.images:
            step = images // o.batch
            lr = lr_fn(cfg, images)
            for gr in opt.param_groups:
                gr["lr"] = lr
            g = _shard_generator(r.seed, step, 0)
            torch.manual_seed(g.initial_seed())  # network dropout, as pixdiff.train
            x, y = batches(step)
            model.train()
            logs = model.train_step(x, y, g, opt, StepContext(cfg, images, o.grad_clip))
            if not math.isfinite(logs["loss"]):
                raise TrainingStopped(f"the {family} loss is not finite at {images} images; stopped. "
                                      f"Last checkpoint: {last or 'none'}. Try a lower --lr.")
            beta = ema_decay(o, images)
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    if v.dtype.is_floating_point and ema_of[k]:
                        ema[k].mul_(beta).add_(v.float(), alpha=1.0 - beta)
                    else:
                        ema[k].copy_(v)
            images += o.batch
            bar.update(o.batch)
            now = time.perf_counter()
            seconds, t0 = seconds + (now - t0), now
            if images // r.log_every_images > (images - o.batch) // r.log_every_images or images >= r.images:
                rec = {"images": images, "step": step + 1, "lr": lr, **{k: float(v) for k, v in logs.items()},
                       "seconds": round(seconds, 3)}
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()
            every = r.ckpt_every_images
            if every > 0 and images // every > (images - o.batch) // every:
                last, saved_at = save(), images
            if stop.signal is not None:
                break
            t0 = time.perf_counter()
    bar.close()
    if saved_at != images:
        last = save()
    plot_loss_curve(out / "log.jsonl", out / "loss.png")
    if stop.signal is None:
        write_grid(model, ema, num_classes, out / "samples.png", r.seed)
    return last


@torch.no_grad()
def write_grid(model, ema: dict, num_classes: int, path: Path, seed: int) -> None:
    """A 10×10 grid from the EMA weights (row c = class c when conditional), image i seeded seed + i."""
    import copy

    m = copy.deepcopy(model).eval()
    m.load_state_dict(ema)
    n = 100
    labels = torch.arange(n) // 10 % num_classes if num_classes else None
    x = _generate(m, labels, seed, 0, n, None, 100, next(m.parameters()).device)
    data_mod.save_png(path, data_mod.image_grid(x, nrow=10), scale=4)


def _generate(model, labels, seed: int, lo: int, hi: int, steps, batch: int, device) -> torch.Tensor:
    out = []
    for a in range(lo, hi, batch):
        b = min(hi, a + batch)
        gens = [torch.Generator().manual_seed(seed + i) for i in range(a, b)]
        lab = None if labels is None else labels[a:b].to(device)
        out.append(model.generate(lab, gens, steps=steps).float().clamp(-1, 1).cpu())
    return torch.cat(out) if out else torch.empty(0)


# --- sampling -----------------------------------------------------------------------------------


@dataclass
class BaselinePipeline:
    """A trained baseline run, ready to sample: ``sample`` is ``pixdiff.generate.Pipeline.sample``'s
    contract (uint8 N×H×W×C and labels; image i drawn from a generator seeded seed + i)."""

    model: Any
    config: TrainConfig
    checkpoint: Path
    weights: str
    device: torch.device
    meta: dict

    @property
    def family(self) -> str:
        return self.meta["family"]

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def class_names(self):
        return self.meta.get("class_names")

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["data_shape"])

    @property
    def default_sampler(self) -> tuple[str, int | None]:
        return self.family, None

    @torch.no_grad()
    def sample(self, n: int, classes: Sequence[int] | None = None, sampler: str | None = None,
               steps: int | None = None, guidance: float = 0.0, seed: int = 0, batch: int | None = None, *,
               progress: bool = False, **kw):
        from pixdiff.generate import _labels_for

        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise PixdiffError(f"n must be a positive integer (got {n!r})")
        batch = 256 if batch is None else batch
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise PixdiffError(f"batch must be a positive integer (got {batch!r})")
        if sampler not in (None, self.family):
            raise PixdiffError(f"a {self.family} run samples with its own procedure; give no --sampler "
                               f"(got {sampler!r})")
        if steps is not None and not getattr(self.model, "takes_steps", False):
            raise PixdiffError(f"a {self.family} run has no sampling steps to set (--steps is for diffusion and maskgit)")
        if guidance:
            raise PixdiffError(f"a {self.family} run has no guidance (--guidance is for diffusion runs)")
        given = sorted(k for k, v in kw.items() if v is not None and k != "distributed")
        if given:
            raise PixdiffError(f"a {self.family} run does not take {', '.join(given)}")
        labels = _labels_for(n, classes, self.num_classes)
        x = _generate(self.model, labels, seed, 0, n, steps, batch, self.device)
        return data_mod.to_uint8(x), (None if labels is None else labels.numpy())


def load_model(ck: ckpt_io.Checkpoint, device, weights: str = "ema"):
    meta = ck.state["meta"]
    model = _build(ck.state["kind"], meta["net_config"], meta["data_shape"], meta["num_classes"])
    try:
        model.load_state_dict(ck.ema if weights == "ema" else ck.model)
    except RuntimeError as e:
        raise ckpt_io.CheckpointError(f"{ck.path}: weights do not fit the saved config ({str(e).splitlines()[0]})") from None
    return model.eval().to(device)


def load_pipeline(ck: ckpt_io.Checkpoint, device, weights: str = "ema") -> BaselinePipeline:
    """``pixdiff.load``'s loader for every baseline family (``pixdiff.generate.RUN_KINDS``)."""
    model = load_model(ck, device, weights)
    return BaselinePipeline(model, TrainConfig.from_dict(ck.state["config"]), ck.path, weights, torch.device(device),
                            dict(ck.state["meta"]))


@torch.no_grad()
def bits_per_dim(run: str | Path, split: str = "test", device="cpu", batch: int = 256) -> float:
    """Mean negative log-likelihood (or its bound) of the run's data split in bits per dimension,
    for the 8-bit images (the families with a likelihood: vae bound, pixelcnn exact)."""
    from pixdiff.datasets import open_training_data

    ck = ckpt_io.load(run)
    model = load_model(ck, device)
    if not hasattr(model, "bits_per_dim"):
        raise PixdiffError(f"a {ck.state['kind']} run has no likelihood")
    cfg = TrainConfig.from_dict(ck.state["config"])
    ds = open_training_data(cfg.data, split)
    x = data_mod.from_uint8(data_mod.to_uint8(ds.images))  # the 8-bit images
    y = ds.labels if ck.state["meta"]["num_classes"] else None
    torch.manual_seed(0)  # the VAE's bound draws z
    vals = [model.bits_per_dim(x[i:i + batch].to(device), None if y is None else y[i:i + batch].to(device)).cpu()
            for i in range(0, len(x), batch)]
    return float(torch.cat(vals).double().mean())
