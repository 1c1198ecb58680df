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

from pixdiff.errors import PixdiffError

import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from pixdiff import checkpoint as ckpt_io
from pixdiff.atomic import atomic_write, atomic_write_text
from pixdiff import data as data_mod
from pixdiff import losses, nets
from pixdiff.config import TrainConfig, diff_configs
from pixdiff.denoiser import Denoiser

__all__ = ["train", "build_denoiser", "TrainingStopped"]


class TrainingStopped(PixdiffError):
    """Training cannot go on (e.g. the loss stayed non-finite); the last good checkpoint is kept."""


# --- pieces --------------------------------------------------------------------------------------


def build_denoiser(cfg: TrainConfig, in_channels: int, num_classes: int) -> Denoiser:
    net = nets.from_preset(cfg.model.preset, **_net_overrides(cfg, in_channels, num_classes))
    return Denoiser(net, cfg.model.parameterization, cfg.model.sigma_data, learn_sigma=cfg.model.learn_sigma)


def _net_overrides(cfg: TrainConfig, in_channels: int, num_classes: int) -> dict:
    o = dict(cfg.model.overrides)
    o.setdefault("in_channels", in_channels)
    o.setdefault("resolution", cfg.data.resolution)
    o.setdefault("num_classes", num_classes)
    if cfg.model.learn_sigma:
        o.setdefault("learn_sigma", True)
    return o


def _shard_generator(seed: int, step: int, shard: int) -> torch.Generator:
    # A fixed affine hash: distinct (seed, step, shard) give distinct 63-bit seeds.
    return torch.Generator().manual_seed((seed * 0x9E3779B1 + step * 0x85EBCA77 + shard * 0xC2B2AE3D) % (2**63 - 1))


def _global_batch_indices(n: int, seed: int, step: int, batch: int) -> torch.Tensor:
    """Example indices of global batch ``step``: positions [step·B, (step+1)·B) of the endless
    concatenation of per-epoch permutations."""
    start, out = step * batch, []
    while len(out) < batch:
        epoch, pos = divmod(start + len(out), n)
        order = data_mod.epoch_order(n, seed, epoch)
        out.extend(order[pos : pos + batch - len(out)].tolist())
    return torch.tensor(out)


def _lr(cfg: TrainConfig, images: int) -> float:
    o = cfg.optim
    warm = min(1.0, (images + o.batch) / o.warmup_images) if o.warmup_images > 0 else 1.0
    if o.decay == "constant" or images < o.warmup_images:
        return o.lr * warm
    progress = min(1.0, (images - o.warmup_images) / max(1, cfg.run.images - o.warmup_images))
    return o.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _dist_env() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)


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


# --- the loop -------------------------------------------------------------------------------------


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True,
          device: str | torch.device | None = None) -> Path:
    """Train per ``cfg`` into ``out_dir``; returns the path of the final checkpoint."""
    out = Path(out_dir)
    rank, world = _dist_env()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)

    ds = data_mod.load(cfg.data.name, cfg.data.resolution, cfg.data.channels, split="train")
    conditional = cfg.data.conditional and ds.labels is not None
    num_classes = ds.num_classes if conditional else 0
    o, r = cfg.optim, cfg.run
    if o.batch % world:
        raise PixdiffError(f"global batch {o.batch} is not divisible by the {world} processes")
    local = o.batch // world
    micro = o.micro_batch or local
    if local % micro:
        raise PixdiffError(f"micro_batch {micro} does not divide the per-process batch {local}")
    accum = local // micro

    vector_data = len(ds.shape) == 1
    if vector_data != (nets.preset_config(cfg.model.preset).kind == "mlp"):
        raise PixdiffError(f"data {cfg.data.name!r} of shape {ds.shape} needs "
                         + ("--preset mlp" if vector_data else f"an image network, not --preset {cfg.model.preset}"))
    torch.manual_seed(r.seed)  # initial weights
    denoiser = build_denoiser(cfg, ds.shape[0], num_classes).to(device)
    loss_cfg = losses.LossConfig(**cfg.loss)
    t_sampler = losses.make_sampler(loss_cfg)  # IDDPM importance sampling keeps state; else None
    params = [p for p in denoiser.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    ema = {k: v.detach().clone().float() for k, v in denoiser.state_dict().items()}
    images, nan_run, nan_total = 0, 0, 0
    meta = {"num_classes": num_classes, "in_channels": ds.shape[0], "class_names": ds.class_names,
            "net_kind": denoiser.net.config.kind if hasattr(denoiser.net, "config") else None,
            "net_config": asdict(denoiser.net.config) if hasattr(denoiser.net, "config") else None,
            "dataset": ds.name, "data_shape": list(ds.shape)}

    existing = ckpt_io.list_checkpoints(out)
    if existing and not resume:
        raise PixdiffError(f"{out} already holds checkpoints; pass --resume to continue it, or choose another --out")
    if resume and existing:
        ck = ckpt_io.load(out)
        changed = diff_configs(ck.state["config"], cfg.to_dict())
        if changed:
            raise PixdiffError(f"cannot resume {out} with a different config; differing fields: {', '.join(changed)}")
        denoiser.load_state_dict(ck.model)
        ema = {k: v.float() for k, v in ck.ema.items()}
        ckpt_io.optimizer_from_flat(opt, ck.optim, ck.state["optim"])
        images, nan_total = ck.state["images"], ck.state.get("nan_total", 0)
        if t_sampler is not None:
            t_sampler.load_state_dict(ck.state["t_sampler"])
        _truncate_log(out / "log.jsonl", images)
        if rank == 0 and progress:
            print(f"resumed {ck.path} at {images} images", file=sys.stderr)

    def save_checkpoint():
        if rank != 0:
            return None
        opt_tensors, opt_meta = ckpt_io.optimizer_to_flat(opt)
        state = {"config": cfg.to_dict(), "optim": opt_meta, "images": images,
                 "step": images // o.batch, "nan_total": nan_total, "t_sampler": t_sampler.state_dict() if t_sampler else None,
                 "meta": meta, "rng": _rng_states(r.seed, images // o.batch),
                 "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        return ckpt_io.save(out, images, state, denoiser.state_dict(), ema, opt_tensors, r.keep)

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", cfg.to_json() + "\n")
    log_f = open(out / "log.jsonl", "a") if rank == 0 else None
    if o.ema_decay is not None:
        ema_decay = o.ema_decay
    else:  # half-life h images: after h/B steps the old weights count one half
        ema_decay = 0.5 ** (o.batch / o.ema_halflife_images) if o.ema_halflife_images > 0 else 0.0
    bar = _progress(r.images, images, enabled=progress and rank == 0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=r.bf16)
    last_ckpt, t_log, img_log = None, time.perf_counter(), images
    x_all = ds.images.to(device)
    y_all = ds.labels.to(device) if conditional else None

    with _StopFlag() as stop:
        while images < r.images:
            step = images // o.batch
            lr = _lr(cfg, images)
            for gr in opt.param_groups:
                gr["lr"] = lr
            opt.zero_grad(set_to_none=False)
            idx = _global_batch_indices(len(ds), r.seed, step, o.batch).to(device)
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            for m in range(accum):
                shard = rank * accum + m
                sl = idx[shard * micro : (shard + 1) * micro]
                g = _shard_generator(r.seed, step, shard)
                torch.manual_seed(g.initial_seed())  # network dropout
                x = x_all[sl]
                if cfg.data.hflip:
                    x = data_mod.flip_horizontal(x, g)
                cond = None
                if conditional:
                    cond = y_all[sl].clone()
                    drop = torch.rand(cond.shape[0], generator=g).to(device) < cfg.data.p_uncond
                    cond[drop] = num_classes  # the null label (seed 001: drop the label with p_uncond)
                with autocast:
                    per_example = losses.loss_fn(denoiser, x, cond, g, loss_cfg, step, sampler=t_sampler,
                                                 check_range=not vector_data).loss
                loss = per_example.float().mean() / accum
                loss.backward()
                loss_sum += loss.detach().double()
            finite = _all_finite(loss_sum, params, world)
            if not finite:
                nan_run, nan_total = nan_run + 1, nan_total + 1
                if nan_run >= r.max_nan_steps:
                    kept = ckpt_io.list_checkpoints(out)
                    raise TrainingStopped(
                        f"loss was not finite for {nan_run} steps in a row (at {images} images); stopped. "
                        f"Last good checkpoint: {kept[-1] if kept else 'none'}. Try a lower --lr or bf16 off.")
                images += o.batch
                continue
            nan_run = 0
            if world > 1:
                _all_reduce_grads(params, world)
                dist.all_reduce(loss_sum)
                loss_sum /= world
            gnorm = torch.nn.utils.clip_grad_norm_(params, o.grad_clip if o.grad_clip > 0 else float("inf"))
            opt.step()
            with torch.no_grad():
                for k, v in denoiser.state_dict().items():
                    if v.dtype.is_floating_point:
                        ema[k].mul_(ema_decay).add_(v.float(), alpha=1.0 - ema_decay)
                    else:
                        ema[k].copy_(v)
            images += o.batch
            bar.update(o.batch)
            if rank == 0 and (images // r.log_every_images > (images - o.batch) // r.log_every_images or images >= r.images):
                now = time.perf_counter()
                rec = {"step": step + 1, "images": images, "loss": float(loss_sum), "lr": lr,
                       "grad_norm": float(gnorm), "img_per_s": (images - img_log) / max(now - t_log, 1e-9),
                       "nan_total": nan_total}
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()
                bar.set_postfix(loss=f"{rec['loss']:.4f}", img_s=f"{rec['img_per_s']:.0f}")
                t_log, img_log = now, images
            if r.ckpt_every_images and images // r.ckpt_every_images > (images - o.batch) // r.ckpt_every_images:
                last_ckpt = save_checkpoint()
            if rank == 0 and r.sample_every_images and images // r.sample_every_images > (images - o.batch) // r.sample_every_images:
                write_sample_grid(denoiser, ema, ds, num_classes, out / "samples" / f"{images:012d}.png", r.seed)
            if stop.signal is not None:
                break
    bar.close()
    if log_f:
        log_f.close()
    if last_ckpt is None or last_ckpt.name != f"ckpt-{images:012d}":
        last_ckpt = save_checkpoint()
    if world > 1:
        dist.barrier()
    if rank == 0:
        plot_loss_curve(out / "log.jsonl", out / "loss.png")
        if len(ds.shape) == 3 and stop.signal is None:
            write_sample_grid(denoiser, ema, ds, num_classes, out / "samples.png", r.seed)
    return last_ckpt if last_ckpt is not None else out


@torch.no_grad()
def write_sample_grid(denoiser: Denoiser, ema: dict, ds, num_classes: int, path: Path, seed: int,
                      sampler: str = "dpmpp_2m", steps: int = 20) -> None:
    """A 10×10 grid from the EMA weights (row c = class c when conditional), per-sample seeds."""
    import copy

    from pixdiff import samplers

    model = copy.deepcopy(denoiser).eval()
    model.load_state_dict(ema)
    n = 100
    cond = torch.arange(n, device=ds.images.device) // 10 % num_classes if num_classes else None
    gens = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    dev = next(model.parameters()).device
    x = samplers.sample(model, (n, *ds.shape), sampler=sampler, steps=steps, generator=gens,
                        cond=None if cond is None else cond.to(dev), device=dev)
    data_mod.save_png(path, data_mod.image_grid(x.float().cpu(), nrow=10), scale=4)


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


def _truncate_log(path: Path, images: int) -> None:
    """Drop log records past the checkpoint we resume from: those steps are recomputed."""
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["images"] <= images]
        path.write_text("".join(ln + "\n" for ln in keep))


def _all_finite(loss_sum: torch.Tensor, params, world: int) -> bool:
    ok = torch.isfinite(loss_sum) & torch.stack([torch.isfinite(p.grad).all() for p in params if p.grad is not None]).all()
    flag = ok.to(torch.float32).reshape(1)
    if world > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


def _all_reduce_grads(params, world: int) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    off = 0
    for g in grads:
        g.copy_(flat[off : off + g.numel()].view_as(g))
        off += g.numel()


def _progress(total: int, start: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="img", unit_scale=True, disable=not enabled, dynamic_ncols=True,
                desc="train")


def plot_loss_curve(log_path: Path, png_path: Path) -> None:
    """The JSONL log's loss against images seen, as a PNG (written atomically)."""
    if not log_path.exists():
        return
    recs = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
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
