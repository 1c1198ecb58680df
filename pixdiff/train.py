"""The training loop: read top to bottom, it is the whole job.

Reproducibility is by construction rather than by saved generator state: every random draw of a
step (which examples, the noise level, the noise, label dropout, network dropout) comes from a
generator seeded by (run seed, step, shard), where the global batch is cut into
``world_size × accumulation`` shards. So a run killed at any point and resumed from its last
checkpoint recomputes the lost steps bit for bit (on CPU), and a 2-process DDP run equals a
1-process run with 2 accumulation micro-batches, up to the order of the gradient sum.

Distributed: launched by ``torchrun``, each rank computes its shards and the gradients are
averaged with one flat ``all_reduce`` per step (torch.distributed, gloo on CPU, NCCL on GPU).
We all-reduce by hand rather than wrap in ``DistributedDataParallel`` because the losses call
``denoiser.predict`` (not ``forward``), which DDP's hooks would not see. Only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from pixdiff import checkpoint as ckpt_io
from pixdiff import data as data_mod
from pixdiff import distributed, losses, nets, posthoc_ema, sharding
from pixdiff.atomic import atomic_write, atomic_write_text
from pixdiff.config import TrainConfig, diff_configs, warn_if_past_decay
from pixdiff.datasets import StepBatches, open_training_data
from pixdiff.denoiser import Denoiser
from pixdiff.errors import PixdiffError
from pixdiff.generate import build_denoiser
from pixdiff.runlock import RunLock
from pixdiff.tracking import Tracker, make_tracker

__all__ = ["train", "train_step", "TrainState", "StepResult", "build_denoiser", "ema_decay", "TrainingStopped"]


class TrainingStopped(PixdiffError):
    """Training cannot go on (e.g. the loss stayed non-finite); the last good checkpoint is kept."""


# --- pieces --------------------------------------------------------------------------------------


def _shard_generator(seed: int, step: int, shard: int) -> torch.Generator:
    # A fixed affine hash: distinct (seed, step, shard) give distinct 63-bit seeds.
    return torch.Generator().manual_seed((seed * 0x9E3779B1 + step * 0x85EBCA77 + shard * 0xC2B2AE3D) % (2**63 - 1))


class _StopFlag:
    """SIGINT / SIGTERM ask the loop to checkpoint and exit 0 at the end of the current step."""

    def __init__(self):
        self.signal = None
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


# --- the state of a run and one step ----------------------------------------------------------------


@dataclass
class TrainState:
    """Everything a step reads or changes. ``images`` (images seen) is the whole RNG state: each
    step's draws come from generators seeded by (seed, step, shard)."""

    cfg: TrainConfig
    loss_cfg: losses.LossConfig
    denoiser: Denoiser
    opt: torch.optim.Optimizer
    ema: dict[str, torch.Tensor]
    t_sampler: Any
    data: Any  # pixdiff.datasets.StepBatches: data(step) = this rank's (x, labels or None) of batch step
    num_classes: int
    vector_data: bool
    device: torch.device
    rank: int
    world: int
    micro: int
    accum: int
    model: Any = None  # what the step calls: the denoiser, or DistributedDataParallel around it
    scaler: Any = None  # fp16's gradient scaler (None in fp32 / bf16)
    images: int = 0
    nan_run: int = 0
    nan_total: int = 0
    posthoc: list = field(default_factory=list)  # a pixdiff.posthoc_ema.PowerEMA per optim.posthoc_ema σ_rel

    @property
    def step(self) -> int:
        return self.images // self.cfg.optim.batch

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return [p for p in self.denoiser.parameters() if p.requires_grad]


@dataclass
class StepResult:
    loss: float | None  # mean loss of the global batch; None when the step was skipped
    lr: float
    grad_norm: float | None
    finite: bool


def _lr(cfg: TrainConfig, images: int) -> float:
    """Linear warm-up, then constant or a cosine decay over ``optim.decay_images`` (fixed when the
    run starts, so changing the training length on resume does not move the learning rate)."""
    o = cfg.optim
    warm = min(1.0, (images + o.batch) / o.warmup_images) if o.warmup_images > 0 else 1.0
    if o.decay == "constant" or images < o.warmup_images:
        return o.lr * warm
    horizon = o.decay_images if o.decay_images is not None else cfg.run.images
    progress = min(1.0, (images - o.warmup_images) / max(1, horizon - o.warmup_images))
    return o.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def ema_decay(o, images: int) -> float:
    """The EMA decay of the step that starts at ``images`` images seen.

    Half-life form: after h images the old weights count one half, so β = 0.5^(B/h). With the
    ramp-up the half-life is at most ``ema_rampup`` × the images seen so far (Karras et al. 2022,
    training_loop ``ema_rampup_ratio``), so a short run does not average mostly initial weights.
    Per-step decay form (e.g. SiD2's 0.9999): the ramp-up is min(β, (1 + n)/(10 + n)) at step n,
    the ramp of TensorFlow's ExponentialMovingAverage that ADM and Imagen-style code use."""
    rampup = o.ema_rampup or 0.0
    if o.ema_decay is not None:
        if rampup > 0:
            n = images // o.batch
            return min(o.ema_decay, (1.0 + n) / (10.0 + n))
        return o.ema_decay
    h = o.ema_halflife_images
    if rampup > 0:
        h = min(h, images * rampup)
    return 0.5 ** (o.batch / h) if h > 0 else 0.0


class _ViaForward:
    """The losses call ``denoiser.predict``; this routes it through ``module(..., full=True)`` so
    DistributedDataParallel's hooks (gradient buckets overlapped with backward) see the forward."""

    def __init__(self, module):
        self.module = module

    def predict(self, z, logsnr, cond=None):
        return self.module(z, logsnr, cond, full=True)


AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def train_step(st: TrainState) -> StepResult:
    """One optimizer step on global batch ``st.step``: forward/backward over this rank's shards
    (DDP all-reduces the gradients during the last backward), clip, Adam, EMA. A step whose loss or
    gradients are not finite is skipped (the images still count, so the data order does not
    shift). Under fp16 a gradient overflow with a finite loss only lowers the loss scale."""
    cfg, o = st.cfg, st.cfg.optim
    step, lr = st.step, _lr(cfg, st.images)
    for gr in st.opt.param_groups:
        gr["lr"] = lr
    st.opt.zero_grad(set_to_none=False)
    x_local, y_local = st.data(step)  # this rank's part of global batch `step`, augmented (pixdiff.datasets)
    loss_sum = torch.zeros((), device=st.device, dtype=torch.float64)
    dtype = AUTOCAST[cfg.run.precision]
    autocast = torch.autocast(st.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
    model = st.model if st.model is not None else st.denoiser
    fwd = _ViaForward(model)
    for m in range(st.accum):
        shard = st.rank * st.accum + m
        sl = slice(m * st.micro, (m + 1) * st.micro)  # = global shard rank·accum + m
        g = _shard_generator(cfg.run.seed, step, shard)
        torch.manual_seed(g.initial_seed())  # network dropout
        x = x_local[sl]
        cond = None
        if y_local is not None:
            cond = y_local[sl].clone()
            drop = torch.rand(cond.shape[0], generator=g).to(st.device) < cfg.data.p_uncond
            cond[drop] = st.num_classes  # the null label: label dropout of Ho & Salimans 2022, Alg. 1
        noise = None
        if st.device.type != "cpu":  # draw the noise where it is used, from the same (seed, step, shard)
            gd = torch.Generator(st.device).manual_seed(g.initial_seed())
            noise = torch.randn(x.shape, generator=gd, device=st.device, dtype=x.dtype)
        sync = st.world == 1 or m == st.accum - 1 or not hasattr(model, "no_sync")
        with (contextlib.nullcontext() if sync else model.no_sync()), autocast:
            per_example = losses.loss_fn(fwd, x, cond, g, st.loss_cfg, step, sampler=st.t_sampler,
                                         check_range=not st.vector_data, noise=noise).loss
            loss = per_example.float().mean() / st.accum
        (st.scaler.scale(loss) if st.scaler is not None else loss).backward()
        loss_sum += loss.detach().double()
    params = st.params
    if st.scaler is not None:
        st.scaler.unscale_(st.opt)
    # The global gradient norm is computed anyway (for clipping and the log) with a few fused
    # kernels; it is finite exactly when every gradient is (barring a sum of squares past 3e38,
    # which is divergence too). Checking each parameter instead costs ~8 launches per tensor,
    # half of a small network's step on a GPU (benchmarks/profile_train_step.py).
    gnorm = torch.nn.utils.clip_grad_norm_(params, o.grad_clip if o.grad_clip > 0 else float("inf"))
    gnorm = gnorm.full_tensor() if sharding.is_sharded(gnorm) else gnorm
    if not _all_finite(loss_sum, gnorm, st.world):
        st.images += o.batch
        if st.scaler is not None and bool(torch.isfinite(loss_sum)):
            st.scaler.update()  # an fp16 overflow: lower the scale, do not count it as a bad step
            return StepResult(None, lr, None, False)
        st.nan_run, st.nan_total = st.nan_run + 1, st.nan_total + 1
        if st.scaler is not None:
            st.scaler.update()
        return StepResult(None, lr, None, False)
    st.nan_run = 0
    if st.world > 1:
        dist.all_reduce(loss_sum)
        loss_sum /= st.world
    if st.scaler is not None:
        st.scaler.step(st.opt)
        st.scaler.update()
    else:
        st.opt.step()
    ema_update(st)
    if st.posthoc:  # t counts optimizer steps from 1 (Karras et al. 2024, eq. 127); a skipped step keeps its number
        sd = st.denoiser.state_dict()
        for p in st.posthoc:
            p.update(sd, t=step + 1)
    st.images += o.batch
    return StepResult(float(loss_sum), lr, float(gnorm), True)


@torch.no_grad()
def ema_update(st: TrainState) -> None:
    """EMA ← β·EMA + (1 − β)·θ with β for the images seen before this step (``ema_decay``).

    One fused multiply and one fused add over all floating tensors (``torch._foreach_*``, as
    torch.optim's foreach Adam does) instead of two kernels per tensor: the arithmetic and its
    rounding are those of ``e.mul_(β).add_(θ, alpha=1 − β)`` per tensor, with far fewer launches,
    which is what bounds a small network's step on a GPU."""
    beta = ema_decay(st.cfg.optim, st.images)
    ema, model = [], []
    for k, v in st.denoiser.state_dict().items():
        if v.dtype.is_floating_point:
            ema.append(st.ema[k])
            model.append(v if v.dtype == st.ema[k].dtype else v.float())
        else:
            st.ema[k].copy_(v)
    if ema:
        torch._foreach_mul_(ema, beta)
        torch._foreach_add_(ema, model, alpha=1.0 - beta)


# --- the loop -------------------------------------------------------------------------------------


def _crossed(images: int, batch: int, every: int) -> bool:
    """Did the step that ended at ``images`` cross a multiple of ``every``?"""
    return every > 0 and images // every > (images - batch) // every


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True,
          device: str | torch.device | None = None) -> Path:
    """Train per ``cfg`` into ``out_dir``; returns the path of the final checkpoint.

    The run folder is locked for the life of the process (``pixdiff.runlock``): a second trainer
    on it is refused. ``resume=True`` needs a run in the folder; a new run refuses a folder that
    holds another run's files."""
    out = Path(out_dir)
    _check_run_folder(out, resume)
    rank = int(os.environ.get("RANK", "0"))
    try:
        lock = RunLock(out) if rank == 0 else contextlib.nullcontext()
        lock.__enter__()
    except OSError as e:
        raise PixdiffError(f"cannot write to run folder {out} ({e.strerror or e})") from None
    try:
        if rank == 0:
            ckpt_io.remove_stale_temporaries(out)
        return _train(cfg, out, resume, progress, device)
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            raise
        kept = ckpt_io.list_checkpoints(out)
        raise ckpt_io.CheckpointWriteError(f"could not write in {out} ({e.strerror}: {e.filename}); stopped. "
                                           f"Last checkpoint: {kept[-1] if kept else 'none'}") from None
    finally:
        lock.__exit__(None, None, None)


# A full disk, a quota, a read-only or forbidden place: the run cannot write, which is not a bug.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


RUN_FILES = ("config.json", "log.jsonl", "checkpoints")


def _check_run_folder(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise PixdiffError(f"--out {out} is a file; the run needs a folder")
    found = [n for n in RUN_FILES if (out / n).exists()]
    if resume and not ((out / "config.json").is_file() or ckpt_io.list_checkpoints(out)):
        raise PixdiffError(f"--resume: {out} holds no run (looked for {out / 'config.json'} and "
                           f"{out / 'checkpoints'}/ckpt-*/); drop --resume to start a new run there")
    if not resume and found:
        raise PixdiffError(f"{out} already holds a run ({', '.join(found)}); pass --resume to continue it, "
                           "or choose another --out")


def _train(cfg: TrainConfig, out: Path, resume: bool, progress: bool, device) -> Path:
    st, ds, meta = _setup(cfg, out, resume, device, progress)
    cfg, o, r = st.cfg, st.cfg.optim, st.cfg.run

    def save_checkpoint():
        if r.fsdp:  # gather full tensors on every process; rank 0 writes them
            model_sd, ema_sd = sharding.full_tensors(st.denoiser.state_dict()), sharding.full_tensors(st.ema)
            opt_sd = sharding.full_optimizer_state(st.denoiser, st.opt)
        else:
            model_sd, ema_sd, opt_sd = st.denoiser.state_dict(), st.ema, st.opt
        if st.rank != 0:
            return None
        if not _weights_finite(model_sd, ema_sd):  # never write non-finite weights as a good checkpoint
            kept = ckpt_io.list_checkpoints(out)
            raise TrainingStopped(f"the weights are not finite at {st.images} images (not saved); stopped. "
                                  f"Last good checkpoint: {kept[-1] if kept else 'none'}. Try a lower --lr.")
        opt_tensors, opt_meta = ckpt_io.optimizer_to_flat(opt_sd)
        state = {"config": cfg.to_dict(), "optim": opt_meta, "images": st.images, "step": st.step,
                 "nan_total": st.nan_total, "t_sampler": st.t_sampler.state_dict() if st.t_sampler else None,
                 "meta": meta, "rng": _rng_states(r.seed, st.step), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "grad_scaler": st.scaler.state_dict() if st.scaler is not None else None}
        if st.posthoc:  # beside the optimizer's tensors, under their own prefix (pixdiff.posthoc_ema.to_flat)
            ph_tensors, state["posthoc_ema"] = posthoc_ema.to_flat(st.posthoc)
            opt_tensors = {**opt_tensors, **ph_tensors}
        return ckpt_io.save(out, st.images, state, model_sd, ema_sd, opt_tensors, r.keep)

    def save_posthoc_snapshot():
        posthoc_ema.write_snapshot(posthoc_ema.snapshot_path(out, st.images), st.posthoc, st.images,
                                   {"batch": o.batch, "config": cfg.to_dict(), "meta": meta})

    log_f = open(out / "log.jsonl", "a") if st.rank == 0 else None
    tracker = make_tracker(r.log, out, cfg.to_dict()) if st.rank == 0 else Tracker()
    evaluator = Evaluator(cfg, ds, st.num_classes) if st.rank == 0 and r.eval_every_images else None
    best_fd = _best_fd(out / "eval.jsonl")
    bar = _progress(r.images, st.images, enabled=progress and st.rank == 0)
    last_ckpt, saved_at, t_log, img_log = None, None, time.perf_counter(), st.images
    snap_at = None
    with _StopFlag() as stop:
        while st.images < r.images:
            res = train_step(st)
            if not res.finite:
                if st.nan_run >= r.max_nan_steps:
                    kept = ckpt_io.list_checkpoints(out)
                    raise TrainingStopped(
                        f"loss was not finite for {st.nan_run} steps in a row (at {st.images} images); stopped. "
                        f"Last good checkpoint: {kept[-1] if kept else 'none'}. Try a lower --lr or --precision fp32.")
                continue
            bar.update(o.batch)
            if st.rank == 0 and (_crossed(st.images, o.batch, r.log_every_images) or st.images >= r.images):
                now = time.perf_counter()
                rec = {"step": st.step, "images": st.images, "loss": res.loss, "lr": res.lr,
                       "grad_norm": res.grad_norm, "img_per_s": (st.images - img_log) / max(now - t_log, 1e-9),
                       "nan_total": st.nan_total}
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()
                tracker.scalars(st.images, rec)
                bar.set_postfix(loss=f"{res.loss:.4f}", img_s=f"{rec['img_per_s']:.0f}")
                t_log, img_log = now, st.images
            if _crossed(st.images, o.batch, r.ckpt_every_images):
                last_ckpt, saved_at = save_checkpoint(), st.images
            if st.posthoc and st.rank == 0 and _crossed(st.images, o.batch, o.posthoc_every_images):
                save_posthoc_snapshot()
                snap_at = st.images
            if _crossed(st.images, o.batch, r.sample_every_images) and (st.rank == 0 or r.fsdp):
                model = _ema_for_sampling(st, meta)
                if st.rank == 0:
                    grid = write_sample_grid(model, None, ds, st.num_classes,
                                             out / "samples" / f"{st.images:012d}.png", r.seed)
                    tracker.image(st.images, "samples", grid)
            if r.eval_every_images and _crossed(st.images, o.batch, r.eval_every_images) and (st.rank == 0 or r.fsdp):
                model = _ema_for_sampling(st, meta)
            if evaluator is not None and _crossed(st.images, o.batch, r.eval_every_images):
                res = evaluator(model, None, st.images)
                _append_jsonl(out / "eval.jsonl", res)
                tracker.scalars(st.images, {k: v for k, v in res.items() if k != "images"}, prefix="eval")
                if r.keep_best and res["fd"] < best_fd:
                    best_fd = res["fd"]
                    _save_best(out, st, res, meta)
            if stop.signal is not None:
                break
    bar.close()
    tracker.close()
    if log_f:
        log_f.close()
    if saved_at != st.images:  # the same decision on every process (FSDP gathers collectively)
        last_ckpt = save_checkpoint()
    if st.posthoc and st.rank == 0 and snap_at != st.images and st.posthoc[0].t > 0:  # so the run's end can be reconstructed
        save_posthoc_snapshot()
    if st.world > 1:
        dist.barrier()
    if st.rank == 0:
        plot_loss_curve(out / "log.jsonl", out / "loss.png")
        if r.final_grid and len(ds.shape) == 3 and stop.signal is None and not r.fsdp:
            write_sample_grid(st.denoiser, st.ema, ds, st.num_classes, out / "samples.png", r.seed)
    return last_ckpt if last_ckpt is not None else out


def _setup(cfg: TrainConfig, out: Path, resume: bool, device, progress: bool):
    """Data, network, optimizer and EMA of a new run, or of the run in ``out`` resumed from its
    newest valid checkpoint; writes config.json."""
    rank, world = distributed.init()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    cfg = TrainConfig.from_dict(cfg.to_dict())  # our own copy: the decay horizon is resolved below
    existing = ckpt_io.list_checkpoints(out)
    if existing and not resume:
        raise PixdiffError(f"{out} already holds checkpoints; pass --resume to continue it, or choose another --out")
    ck = ckpt_io.load(out) if resume and existing else None
    if cfg.optim.decay_images is None:  # fixed once, when the run starts
        cfg.optim.decay_images = (ck.state["config"]["run"]["images"] if ck is not None else cfg.run.images)
    warn_if_past_decay(cfg)

    ds = open_training_data(cfg.data, "train", verbose=progress and rank == 0)  # digits/photos/toys in memory, else lazy
    conditional = cfg.data.conditional and ds.labels is not None
    num_classes = ds.num_classes if conditional else 0
    o = cfg.optim
    if o.batch % world:
        raise PixdiffError(f"global batch {o.batch} is not divisible by the {world} processes")
    local = o.batch // world
    micro = o.micro_batch or local
    if local % micro:
        raise PixdiffError(f"micro_batch {micro} does not divide the per-process batch {local}")
    vector_data = len(ds.shape) == 1
    if nets.preset_config(cfg.model.preset).kind == "classifier":
        raise PixdiffError(f"--preset {cfg.model.preset} is a noisy classifier; train it with "
                           "`pixdiff train-classifier`, and a diffusion model with a U-Net or U-ViT preset")
    if vector_data != (nets.preset_config(cfg.model.preset).kind == "mlp"):
        raise PixdiffError(f"data {cfg.data.name!r} of shape {ds.shape} needs "
                           + ("--preset mlp" if vector_data else f"an image network, not --preset {cfg.model.preset}"))
    torch.manual_seed(cfg.run.seed)  # initial weights
    denoiser = build_denoiser(cfg, ds.shape[0], num_classes).to(device)
    loss_cfg = cfg.loss
    params = [p for p in denoiser.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    if cfg.run.compile:
        denoiser.net.compile()  # in place: the state-dict keys stay those of the plain network
    st = TrainState(cfg, loss_cfg, denoiser, opt, {k: v.detach().clone().float() for k, v in denoiser.state_dict().items()},
                    losses.make_sampler(loss_cfg),
                    StepBatches(ds, seed=cfg.run.seed, batch=o.batch, device=device, conditional=conditional, rank=rank,
                                world=world, hflip=cfg.data.hflip, crop_pad=cfg.data.crop_pad, workers=cfg.data.workers),
                    num_classes, vector_data, device, rank, world, micro, local // micro)
    meta = {"num_classes": num_classes, "in_channels": ds.shape[0], "class_names": ds.class_names,
            "net_kind": denoiser.net.config.kind if hasattr(denoiser.net, "config") else None,
            "net_config": asdict(denoiser.net.config) if hasattr(denoiser.net, "config") else None,
            "dataset": ds.name, "data_shape": list(ds.shape)}
    if ck is not None:
        changed = diff_configs(ck.state["config"], cfg.to_dict())
        if changed:
            raise PixdiffError(f"cannot resume {out} with a different config; differing fields: {', '.join(changed)}")
        denoiser.load_state_dict(ck.model)
        st.ema = {k: v.float().to(device) for k, v in ck.ema.items()}
        ckpt_io.optimizer_from_flat(opt, {k: v for k, v in ck.optim.items() if not k.startswith(posthoc_ema.FLAT_PREFIX)},
                                    ck.state["optim"])
        st.images, st.nan_total = ck.state["images"], ck.state.get("nan_total", 0)
        if st.t_sampler is not None:
            st.t_sampler.load_state_dict(ck.state["t_sampler"])
        _truncate_log(out / "log.jsonl", st.images)
        if rank == 0 and progress:
            print(f"resumed {ck.path} at {st.images} images", file=sys.stderr)
    if o.posthoc_ema:  # Karras et al. 2024 post-hoc EMA: one power-function EMA per σ_rel, from the initial weights
        if cfg.run.fsdp:
            raise PixdiffError("optim.posthoc_ema is not supported with --fsdp (its EMAs are not sharded)")
        st.posthoc = [posthoc_ema.PowerEMA(denoiser.state_dict(), sigma_rel=s) for s in o.posthoc_ema]
        if ck is not None:
            if "posthoc_ema" not in ck.state:
                raise PixdiffError(f"{ck.path} has no post-hoc EMA state; resume it without optim.posthoc_ema")
            posthoc_ema.load_flat(st.posthoc, ck.optim, ck.state["posthoc_ema"])
    if cfg.run.fsdp:  # after loading the full weights: each process keeps its shard of them
        if world < 2:
            raise PixdiffError("--fsdp shards over processes: launch with torchrun --nproc_per_node >= 2")
        opt_state = opt.state_dict()
        sharding.shard(denoiser)
        st.opt = opt = torch.optim.AdamW(st.params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        if opt_state["state"]:
            sharding.load_optimizer_state(denoiser, opt, opt_state)
        st.ema = sharding.shard_like(st.ema, denoiser)
        st.model = denoiser
    elif world > 1:  # after loading, so every rank starts from the same (resumed) weights
        from torch.nn.parallel import DistributedDataParallel

        st.model = DistributedDataParallel(denoiser, device_ids=[device] if device.type == "cuda" else None)
    if cfg.run.precision == "fp16":
        st.scaler = torch.amp.GradScaler(device.type)
        if ck is not None and ck.state.get("grad_scaler"):
            st.scaler.load_state_dict(ck.state["grad_scaler"])
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", cfg.to_json() + "\n")
    return st, ds, meta


@torch.no_grad()
def write_sample_grid(denoiser: Denoiser, ema: dict, ds, num_classes: int, path: Path, seed: int,
                      sampler: str = "dpmpp_2m", steps: int = 20) -> None:
    """A 10×10 grid from the EMA weights (row c = class c when conditional), per-sample seeds."""

    from pixdiff import samplers

    model = _ema_model(denoiser, ema) if ema is not None else denoiser
    n = 100
    cond = torch.arange(n) // 10 % num_classes if num_classes else None  # moved to the model's device below
    gens = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    dev = next(model.parameters()).device
    x = samplers.sample(model, (n, *ds.shape), sampler=sampler, steps=steps, generator=gens,
                        cond=None if cond is None else cond.to(dev), device=dev)
    grid = data_mod.image_grid(x.float().cpu(), nrow=10)
    data_mod.save_png(path, grid, scale=4)
    return grid


def _ema_model(denoiser: Denoiser, ema: dict) -> Denoiser:
    import copy

    model = copy.deepcopy(denoiser).eval()
    model.load_state_dict(ema)
    return model


def _ema_for_sampling(st: TrainState, meta: dict) -> Denoiser | None:
    """A plain (unsharded) denoiser with the EMA weights. Under FSDP every process must call it
    (the EMA is gathered); the model is built on rank 0 only (None elsewhere)."""
    if not st.cfg.run.fsdp:
        return _ema_model(st.denoiser, st.ema)
    full = sharding.full_tensors(st.ema)
    if st.rank != 0:
        return None
    model = build_denoiser(st.cfg, meta["in_channels"], st.num_classes, meta.get("net_config"), meta.get("net_kind"))
    model.load_state_dict(full)
    return model.to(st.device).eval()


class Evaluator:
    """Fréchet distance (and class accuracy with labels and the digits classifier) of ``eval_n``
    EMA samples against the training images, during training. Samples use dpmpp_2m with 20 steps
    and per-sample seeds seed + i, so successive evaluations differ only by the weights; the
    reference statistics are computed once."""

    def __init__(self, cfg: TrainConfig, ds, num_classes: int, sampler: str = "dpmpp_2m", steps: int = 20):
        from pixdiff.metrics import compute_reference, get_extractor
        from pixdiff.metrics.frechet import check_fd_samples

        if len(ds.shape) != 3:
            raise PixdiffError("--eval-every evaluates images; 2-D point data has no feature network")
        r = cfg.run
        self.features = get_extractor(r.eval_features, r.eval_inception_weights, "cpu")
        check_fd_samples(r.eval_n, self.features.dim, "--eval-n (Fréchet distance)")  # at the start, not at the first eval
        c, h, _ = ds.shape
        from pixdiff.datasets import sample_images

        ref_images, _ = sample_images(ds, max(r.eval_n, 10_000), seed=r.seed)  # any source, in memory or not
        self.ref = compute_reference(ref_images, self.features, ds.name, resolution=h, channels=c)
        self.cfg, self.shape, self.num_classes, self.sampler, self.steps = cfg, ds.shape, num_classes, sampler, steps
        self.with_acc = num_classes > 0 and r.eval_features == "digits" and cfg.data.name == "digits"

    @torch.no_grad()
    def __call__(self, denoiser: Denoiser, ema: dict, images: int) -> dict:
        from pixdiff import samplers
        from pixdiff.metrics import class_accuracy, feature_statistics, frechet_distance

        model, n = (_ema_model(denoiser, ema) if ema is not None else denoiser), self.cfg.run.eval_n
        dev = next(model.parameters()).device
        labels = torch.arange(n) % self.num_classes if self.num_classes else None
        out = []
        for lo in range(0, n, 250):
            hi = min(n, lo + 250)
            gens = [torch.Generator().manual_seed(self.cfg.run.seed + i) for i in range(lo, hi)]
            x = samplers.sample(model, (hi - lo, *self.shape), sampler=self.sampler, steps=self.steps,
                                generator=gens, cond=None if labels is None else labels[lo:hi].to(dev), device=dev)
            out.append(x.float().clamp(-1, 1).cpu())
        x = data_mod.from_uint8(data_mod.to_uint8(torch.cat(out)))  # score the 8-bit images a user would get
        feats = self.features(x)
        rec = {"images": images, "fd": float(frechet_distance(*feature_statistics(feats.features), self.ref.mu,
                                                              self.ref.sigma)),
               "n": n, "sampler": self.sampler, "steps": self.steps, "features": self.features.name}
        if self.with_acc:
            rec["accuracy"] = float(class_accuracy(feats.probs, labels).accuracy)
        return rec


def _append_jsonl(path: Path, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _best_fd(path: Path) -> float:
    recs = read_log(path)
    return min((r["fd"] for r in recs if "fd" in r), default=float("inf"))


def _save_best(out: Path, st: TrainState, res: dict, meta: dict) -> None:
    """RUN/best holds one complete checkpoint (the lowest FD so far), loadable by pixdiff.load."""
    opt_tensors, opt_meta = ckpt_io.optimizer_to_flat(st.opt)
    state = {"config": st.cfg.to_dict(), "optim": opt_meta, "images": st.images, "step": st.step, "meta": meta,
             "eval": res}
    ckpt_io.save(out / "best", st.images, state, st.denoiser.state_dict(), st.ema, opt_tensors, keep=1)


def _rng_states(seed: int, step: int) -> dict:
    """Every generator's state, for the record. Resume does not need them: each step's draws come
    from generators seeded by (seed, step, shard), so the step number is the whole RNG state."""
    import base64
    import random

    import numpy as np

    np_state = np.random.get_state()
    return {"scheme": "per-step generators seeded by (seed, step, shard)", "seed": seed, "next_step": step,
            "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
            "numpy": {"key": base64.b64encode(np_state[1].tobytes()).decode(), "pos": int(np_state[2])},
            "python": list(random.getstate()[1])}


def read_log(path: Path) -> list[dict]:
    """The records of a run's ``log.jsonl``. Each record is written with one ``write`` and a flush,
    so a kill leaves at most one torn last line: it is dropped with a warning naming the file."""
    if not path.exists():
        return []
    recs, torn = [], []
    for i, ln in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
            if not isinstance(rec, dict) or "images" not in rec:
                raise ValueError
            recs.append(rec)
        except ValueError:
            torn.append(i)
    if torn:
        warnings.warn(f"{path}: dropped {len(torn)} unreadable line(s) ({', '.join(map(str, torn[:5]))}), "
                      "e.g. one torn by a kill", stacklevel=2)
    return recs


def _truncate_log(path: Path, images: int) -> None:
    """Drop log records past the checkpoint we resume from (those steps are recomputed), and any
    torn line; rewritten atomically."""
    if path.exists():
        keep = [r for r in read_log(path) if r["images"] <= images]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def _weights_finite(model_sd: dict, ema_sd: dict) -> bool:
    """One host sync: are every raw and EMA floating-point tensor finite?"""
    flags = [torch.isfinite(v).all() for sd in (model_sd, ema_sd) for v in sd.values() if v.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def _all_finite(loss_sum: torch.Tensor, grad_norm: torch.Tensor, world: int) -> bool:
    """Are the loss and the gradients finite on every process?"""
    ok = torch.isfinite(loss_sum) & torch.isfinite(grad_norm)
    flag = ok.to(torch.float32).reshape(1)
    if world > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


def _progress(total: int, start: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="img", unit_scale=True, disable=not enabled, dynamic_ncols=True,
                desc="train")


def plot_loss_curve(log_path: Path, png_path: Path) -> None:
    """The JSONL log's loss against images seen, as a PNG (written atomically)."""
    recs = read_log(log_path)
    if not recs:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["images"] for r in recs], [r["loss"] for r in recs], lw=1)
    ax.set_xlabel("images seen")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(png_path, lambda p: fig.savefig(p, dpi=100))
    plt.close(fig)
