"""GPU speed in one command: training throughput and MFU, pixdiff vs diffusers, train → sample.

On one GPU, within a time budget (default 440 s, so under 8 minutes with start-up), in this order:

1. ``adm-64`` at 64×64 (batch 128) and 2. ``sid2-s`` at 512×512 (batch 64): one training step =
   forward + MSE backward + fused AdamW step of the bare network under bf16 autocast (weights and
   Adam state fp32), random inputs, logSNR and labels; eager, then ``torch.compile``. Reported:
   step time (median), images/s, model TFLOP/s and MFU = 3 × ``pixdiff.nets.count_flops`` (forward)
   × batch / step time / the device's dense bf16 peak (backward ≈ 2 × forward; matmuls and
   convolutions only, as Hoogeboom et al. 2025 (SiD2), App. A.2, count them).
3. diffusers' ``UNet2DModel`` built with adm-64's layout (widths, blocks per level, attention
   levels, 64-channel heads, BigGAN resampling, scale-shift norm, 1001 class embeddings, 6 output
   channels): both parameter counts are printed (they agree within 0.1 %); the same step, precision
   and batch, eager and compiled; its FLOPs counted by ``torch.utils.flop_counter`` on the meta device.
4. ``pixdiff.train.train`` of the ``tiny`` preset on the embedded digits (16×16, batch 512,
   ``--precision bf16``), eager and with ``run.compile``, each stopped by SIGINT (the trainer
   checkpoints and returns) at its share of the budget; then ``pixdiff.load(run, device="cuda")``
   ``.sample(...)``: train images/s (median of the log records after the first), sampling images/s,
   and a check that the samples are uint8 (and the float draw finite).
5. The target: ≥ 40 % MFU for sid2-s with compile on an H100/H200-class GPU — met / not met.

Each section runs in its own process (``--inline``: in this one) with a hard time limit, its share
of what is left of the budget; within it the timed loops shorten themselves and a compile is
skipped when too little time is left. A failure prints one line and the next section runs.

    python benchmarks/gpu_throughput.py [--record [docs/benchmarks.md]] [--budget 440]
        [--sections adm-64 sid2-s diffusers train] [--batch adm-64=128 sid2-s=64 diffusers=128 train=512]
        [--sid2-resolution 512] [--iters 20] [--warmup 3] [--no-compile] [--peak-tflops X] [--inline]
    python benchmarks/gpu_throughput.py --cpu-smoke     # every code path at toy size on the CPU

Without a CUDA device (and without ``--cpu-smoke``) it prints "no CUDA device: skipped" and exits 0,
so ``make bench`` passes on CPU. ``--cpu-smoke`` (alias ``--device cpu``) runs the same sections with
the ``tiny``/``tiny-uvit`` presets shrunk further at 16×16, batch 2, 2 steps, compile with the
"eager" backend (the compiled training run is skipped), in-process (``--isolate``: one process per
section, as on a GPU), in seconds; tests/test_benchmark_gpu_script.py runs it.

A batch that does not fit is halved until it does (the table reports the batch used).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's data sheets, matched against
# torch.cuda.get_device_name() in this order (first substring that matches wins).
PEAK_BF16_TFLOPS = [
    ("H200 NVL", 835.5),
    ("H200", 989.4),  # H200 SXM (same tensor cores and clocks as H100 SXM); GH200 too
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),  # H100 SXM5 ("NVIDIA H100 80GB HBM3")
    ("B200", 2250.0),
    ("A100", 312.0),  # SXM4 and PCIe
    ("L40S", 362.05),
    ("L4", 121.0),
]
TARGET_MFU, TARGET_CLASS = 0.40, ("H100", "H200")  # issue 10: sid2-s, compiled, H100/H200-class

SECTIONS = ("adm-64", "sid2-s", "diffusers", "train")
TITLES = {"adm-64": "throughput: adm-64 (pixdiff ADM U-Net)", "sid2-s": "throughput: sid2-s (pixdiff U-ViT)",
          "diffusers": "throughput: diffusers UNet2DModel at adm-64's size",
          "train": "train → sample: pixdiff.train + pixdiff.load(...).sample"}
WEIGHT = {"adm-64": 100, "sid2-s": 130, "diffusers": 100, "train": 120}  # shares of the budget
GRACE_S = 10  # a child's hard limit is its share plus this (its own clock stops its loops at the share)

# What each section runs, on a GPU and in the CPU smoke test. Overrides shrink the tiny presets
# (as tests/test_train_speed.py does) so that every step takes milliseconds on a CPU.
_SMOKE_UNET = dict(channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), head_channels=8,
                   norm_groups=4)
_SMOKE_UVIT = dict(channels=(8, 16, 32), down_blocks=(1, 1), mid_blocks=1, head_channels=8, norm_groups=4)


@dataclass
class Plan:
    """Sizes of every section."""
    nets: dict = field(default_factory=dict)  # section -> (preset, overrides, resolution, batch)
    train_preset: str = "tiny"
    train_overrides: dict = field(default_factory=dict)
    train_batch: int = 512
    train_images: int = 10**9  # a time limit stops the GPU runs long before
    train_compile: bool = True
    sample_n: int = 2048
    sample_batch: int = 1024
    sample_steps: int = 18
    compile_backend: str = "inductor"
    min_compile_s: float = 20.0  # skip a compile with less time left


def make_plan(args) -> Plan:
    b = parse_batches(args.batch)
    if args.cpu_smoke:
        return Plan(nets={"adm-64": ("tiny", _SMOKE_UNET, 16, 2), "sid2-s": ("tiny-uvit", _SMOKE_UVIT, 16, 2)},
                    train_overrides=_SMOKE_UNET, train_batch=8, train_images=16, train_compile=False, sample_n=4,
                    sample_steps=2, sample_batch=4, compile_backend="eager", min_compile_s=0.0)
    return Plan(nets={"adm-64": ("adm-64", {}, 64, b.get("adm-64", 128)),
                      "sid2-s": ("sid2-s", {}, args.sid2_resolution, b.get("sid2-s", 64))},
                train_batch=b.get("train", 512), train_compile=not args.no_compile)


@dataclass
class Ctx:
    """What a section runs with."""
    args: argparse.Namespace
    plan: Plan
    device: torch.device
    peak: float | None
    deadline: float  # time.time() by which the section should be done
    compile: bool
    warmup: int
    iters: int

    def left(self) -> float:
        return max(self.deadline - time.time(), 0.0)


def parse_batches(items: list[str]) -> dict[str, int]:
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not v.isdigit() or k not in SECTIONS:
            raise SystemExit(f"--batch takes SECTION=N items with SECTION in {SECTIONS} (got {it!r})")
        out[k] = int(v)
    return out


def peak_tflops(name: str) -> float | None:
    for key, peak in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return peak
    return None


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke test)"


# --- results: printed by the section, collected by main ---------------------------------------------

RESULT_TAG = "@@result "
_results: list[dict] | None = None  # in-process collection (None: we are a child, print them tagged)


def emit(rec: dict) -> None:
    if _results is None:
        print(RESULT_TAG + json.dumps(rec), flush=True)
    else:
        _results.append(rec)


def fail(what: str, e: BaseException) -> None:
    msg = (str(e).strip().splitlines() or [""])[0][:300]
    print(f"  FAILED {what}: {type(e).__name__}: {msg}", flush=True)
    emit({"kind": "error", "what": what, "message": f"{type(e).__name__}: {msg}"})


# --- sections 1-3: training-step throughput ----------------------------------------------------------


@dataclass
class Bench:
    """A network to time: how to build it, call it, and its forward FLOPs per image."""
    label: str
    build: object  # () -> nn.Module
    call: object  # (module, x, t, cond) -> output [B, C_out, H, W]
    flops: int
    channels: int
    resolution: int
    num_classes: int


def pixdiff_bench(preset: str, overrides: dict, resolution: int) -> Bench:
    from pixdiff import nets

    cfg = nets.preset_config(preset, **overrides)
    return Bench(preset, lambda: nets.from_config(cfg), lambda m, x, t, c: m(x, t, c),
                 nets.count_flops(cfg, resolution), cfg.in_channels, resolution, cfg.num_classes or 0)


def diffusers_kwargs(cfg) -> dict:
    """UNet2DModel arguments with the layout of a pixdiff ADM ``UNetConfig``."""
    attn = [cfg.resolution // 2**i in cfg.attention_resolutions for i in range(len(cfg.channel_mult))]
    return dict(sample_size=cfg.resolution, in_channels=cfg.in_channels,
                out_channels=cfg.out_channels or cfg.in_channels * (2 if cfg.learn_sigma else 1),
                block_out_channels=tuple(cfg.channels * m for m in cfg.channel_mult), layers_per_block=cfg.num_res_blocks,
                down_block_types=tuple("AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in attn),
                up_block_types=tuple("AttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in reversed(attn)),
                downsample_type="resnet", upsample_type="resnet", attention_head_dim=cfg.head_channels,
                norm_num_groups=cfg.norm_groups, resnet_time_scale_shift="scale_shift", dropout=cfg.dropout,
                num_class_embeds=cfg.num_classes + 1 if cfg.num_classes else None)


def diffusers_bench(preset: str, overrides: dict, resolution: int) -> tuple[Bench, int, int]:
    """The diffusers twin of a pixdiff ADM preset, and both parameter counts (counted on meta)."""
    from diffusers.models.unets.unet_2d import UNet2DModel
    from torch.utils.flop_counter import FlopCounterMode

    from pixdiff import nets

    cfg = nets.preset_config(preset, **overrides)
    kw = diffusers_kwargs(cfg)
    with torch.device("meta"):
        ours, theirs = nets.from_config(cfg), UNet2DModel(**kw)
        x = torch.zeros(1, cfg.in_channels, resolution, resolution)
        with FlopCounterMode(display=False) as fc:
            theirs(x, torch.zeros(1), class_labels=torch.zeros(1, dtype=torch.long) if cfg.num_classes else None)
    n_ours, n_theirs = (sum(p.numel() for p in m.parameters()) for m in (ours, theirs))

    def call(m, x, t, c):  # diffusers takes a timestep in [0, 1000)
        return m(x, (t.sigmoid() * 1000).float(), class_labels=c, return_dict=False)[0]

    return (Bench("diffusers UNet2DModel", lambda: UNet2DModel(**kw), call, fc.get_total_flops(), cfg.in_channels,
                  resolution, cfg.num_classes or 0), n_ours, n_theirs)


def time_train_steps(b: Bench, batch: int, device, compiled: bool, backend: str, warmup: int, iters: int,
                     limit_s: float, deadline: float) -> dict:
    """Median seconds of one training step after ``warmup`` steps; the timed loop stops after
    ``iters`` steps, ``limit_s`` seconds or at ``deadline`` (time.time()), whichever comes first,
    but times at least one step."""
    torch.manual_seed(0)
    net = b.build().to(device).train()
    params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=device.type == "cuda")
    g = torch.Generator(device=device).manual_seed(0)
    c, r = b.channels, b.resolution
    x = torch.randn(batch, c, r, r, device=device, generator=g)
    t = torch.randn(batch, device=device, generator=g) * 4.0  # logSNR
    cond = torch.randint(0, b.num_classes + 1, (batch,), device=device, generator=g) if b.num_classes else None
    fwd = torch.compile(net, backend=backend) if compiled else net

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = b.call(fwd, x, t, cond)
        loss = (out[:, :c].float() - x).square().mean()
        loss.backward()
        opt.step()

    cuda = device.type == "cuda"
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    times, stop = [], time.perf_counter() + min(limit_s, deadline - time.time())
    while len(times) < iters and (not times or time.perf_counter() < stop):
        if cuda:
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            step()
            e1.record()
            e1.synchronize()
            times.append(e0.elapsed_time(e1) / 1e3)
        else:
            t1 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t1)
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
    return {"params": params, "step_s": statistics.median(times), "steps": len(times), "warm_s": warm_s,
            "mem_gib": mem}


def time_fitting(b: Bench, batch: int, device, compiled: bool, backend: str, warmup, iters, limit_s, deadline):
    """Halve the batch on out-of-memory until it fits; returns (batch, timings)."""
    while True:
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            return batch, time_train_steps(b, batch, device, compiled, backend, warmup, iters, limit_s, deadline)
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            print(f"  {b.label} batch {batch}: out of memory, trying {batch // 2}", flush=True)
            batch //= 2
        finally:
            torch._dynamo.reset()
            if device.type == "cuda":
                torch.cuda.empty_cache()


def throughput_rows(section: str, b: Bench, batch: int, ctx: Ctx) -> None:
    """Eager, then compiled (when time is left), one result each."""
    for compiled in (False, True) if ctx.compile else (False,):
        mode = "compile" if compiled else "eager"
        left = ctx.left()
        if compiled and left < ctx.plan.min_compile_s:
            print(f"  {b.label} compile: skipped ({left:.0f} s left of the budget)", flush=True)
            emit({"kind": "skipped", "section": section, "what": f"{b.label} compile", "left_s": left})
            continue
        limit = min(30.0, 0.3 * left) if compiled else min(10.0, 0.1 * left)  # eager leaves time to compile
        try:
            used, m = time_fitting(b, batch, ctx.device, compiled, ctx.plan.compile_backend,
                                   max(ctx.warmup, 3 if compiled else 1), ctx.iters, limit, ctx.deadline)
        except Exception as e:  # noqa: BLE001 - one line, then the next measurement
            fail(f"{b.label} {mode}", e)
            continue
        batch = used  # the compiled run starts from the batch that fitted eager
        img_s = used / m["step_s"]
        tflops = 3 * b.flops * used / m["step_s"] / 1e12
        mfu = tflops / ctx.peak if ctx.peak else None
        rec = {"kind": "throughput", "section": section, "model": b.label, "mode": mode, "params": m["params"],
               "gflops": b.flops / 1e9, "resolution": b.resolution, "batch": used, "step_ms": 1e3 * m["step_s"],
               "steps": m["steps"], "img_s": img_s, "tflops": tflops, "mfu": mfu, "mem_gib": m["mem_gib"],
               "warm_s": m["warm_s"]}
        emit(rec)
        print(f"  {b.label} {mode}: batch {used} at {b.resolution}², {rec['step_ms']:.1f} ms/step "
              f"(median of {m['steps']}), {img_s:.1f} img/s, {g3(tflops)} TFLOP/s, MFU {fmt_mfu(mfu)}, "
              f"peak mem {g3(m['mem_gib'])} GiB (warm-up {m['warm_s']:.0f} s)", flush=True)


def section_pixdiff(name: str, ctx: Ctx) -> None:
    preset, overrides, res, batch = ctx.plan.nets[name]
    throughput_rows(name, pixdiff_bench(preset, overrides, res), batch, ctx)


def section_diffusers(ctx: Ctx) -> None:
    preset, overrides, res, batch = ctx.plan.nets["adm-64"]
    batch = parse_batches(ctx.args.batch).get("diffusers", batch)
    b, n_ours, n_theirs = diffusers_bench(preset, overrides, res)
    rel = n_theirs / n_ours - 1
    print(f"  params: pixdiff {preset} {n_ours:,}, diffusers UNet2DModel {n_theirs:,} "
          f"({100 * rel:+.2f} %, {'within' if abs(rel) <= 0.10 else 'NOT within'} 10 %); forward "
          f"{g3(b.flops / 1e9)} GFLOPs/image (torch.utils.flop_counter)", flush=True)
    emit({"kind": "params", "section": "diffusers", "pixdiff": n_ours, "diffusers": n_theirs, "rel": rel})
    throughput_rows("diffusers", b, batch, ctx)


# --- section 4: pixdiff's own trainer, then load + sample ---------------------------------------------


@contextlib.contextmanager
def stop_training_after(seconds: float):
    """SIGINT the trainer after ``seconds``: pixdiff.train checkpoints and returns at the end of the
    step (its documented Ctrl-C). Sent only once its handler is installed, else retried shortly."""

    before = signal.getsignal(signal.SIGINT)

    def on_alarm(signum, frame):
        if signal.getsignal(signal.SIGINT) == before:  # the trainer's handler is not installed (yet / any more)
            signal.setitimer(signal.ITIMER_REAL, 0.2)
        else:
            os.kill(os.getpid(), signal.SIGINT)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def train_run(ctx: Ctx, out: Path, compiled: bool, seconds: float) -> dict:
    from pixdiff.config import TrainConfig
    from pixdiff.train import read_log, train

    p = ctx.plan
    cfg = TrainConfig()
    cfg.model.preset = p.train_preset
    cfg.model.overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in p.train_overrides.items()}
    cfg.optim.batch, cfg.optim.warmup_images, cfg.optim.decay = p.train_batch, 0, "constant"
    cfg.run.images, cfg.run.ckpt_every_images = p.train_images, 0
    cfg.run.log_every_images = p.train_batch * (1 if ctx.args.cpu_smoke else 20)
    cfg.run.precision, cfg.run.compile = "bf16", compiled
    t0 = time.perf_counter()
    with stop_training_after(seconds):
        train(cfg, out, progress=False, device=ctx.device)
    wall = time.perf_counter() - t0
    recs = read_log(out / "log.jsonl")
    steady = [r["img_per_s"] for r in recs[1:]]  # the first interval holds the set-up (and the compile)
    return {"images": recs[-1]["images"] if recs else 0, "wall_s": wall, "records": len(recs),
            "img_s": statistics.median(steady) if steady else None}


def sample_run(ctx: Ctx, run: Path) -> dict:
    import numpy as np

    import pixdiff

    p = ctx.plan
    pipe = pixdiff.load(run, device=ctx.device)
    pipe.sample(min(p.sample_n, 64), steps=2)  # warm-up (kernels, allocator)
    t0 = time.perf_counter()
    imgs, _ = pipe.sample(p.sample_n, sampler="heun", steps=p.sample_steps, batch=p.sample_batch)
    secs = time.perf_counter() - t0
    shape = (p.sample_n, *pipe.data_shape[1:], pipe.data_shape[0])
    x = pixdiff.sample(pipe.denoiser, (min(p.sample_n, 64), *pipe.data_shape), sampler="heun", steps=p.sample_steps,
                       device=ctx.device)  # the float draw, before quantisation
    ok_uint8 = isinstance(imgs, np.ndarray) and imgs.dtype == np.uint8 and imgs.shape == shape
    return {"n": p.sample_n, "steps": p.sample_steps, "seconds": secs, "img_s": p.sample_n / secs,
            "uint8": bool(ok_uint8), "finite": bool(torch.isfinite(x).all()), "std": float(imgs.std()),
            "shape": list(imgs.shape), "dtype": str(imgs.dtype)}


def section_train(ctx: Ctx) -> None:
    p = ctx.plan
    modes = (False, True) if p.train_compile and ctx.compile else (False,)
    if not (p.train_compile and ctx.compile):
        print("  train compile: skipped" + (" (CPU smoke)" if ctx.args.cpu_smoke else " (--no-compile)"), flush=True)
    shares = (0.35, 0.45) if len(modes) == 2 else (0.7,)  # of the section's time; sampling gets the rest
    total = ctx.left()
    with tempfile.TemporaryDirectory(prefix="pixdiff-bench-") as tmp:
        runs = {}  # run folder -> images trained
        for compiled, share in zip(modes, shares):
            mode = "compile" if compiled else "eager"
            seconds = max(total * share, 1.0)
            run = Path(tmp) / mode
            try:
                r = train_run(ctx, run, compiled, seconds)
            except Exception as e:  # noqa: BLE001
                fail(f"train {mode}", e)
                continue
            runs[run] = r["images"]
            emit({"kind": "train", "mode": mode, "preset": p.train_preset, "batch": p.train_batch, **r})
            print(f"  train {mode}: {fmt(r['img_s'])} img/s (median of {max(r['records'] - 1, 0)} log records after "
                  f"the first), {r['images']} images in {r['wall_s']:.1f} s with set-up"
                  f"{' and compile' if compiled else ''} ({p.train_preset}, digits 16², batch {p.train_batch}, bf16)",
                  flush=True)
        if not runs:
            return
        last_run = max(runs, key=runs.get)  # sample the run that trained longest
        try:
            s = sample_run(ctx, last_run)
        except Exception as e:  # noqa: BLE001
            fail("sample", e)
            return
        emit({"kind": "sample", "run": last_run.name, **s})
        ok = s["uint8"] and s["finite"]
        print(f"  sample ({last_run.name} run, EMA, heun {s['steps']} steps, fp32): {s['n']} images in "
              f"{s['seconds']:.2f} s = {s['img_s']:.1f} img/s; {s['dtype']} {tuple(s['shape'])}, float draw finite: "
              f"{s['finite']} -> {'OK' if ok else 'NOT OK'}", flush=True)


# --- sequencing -----------------------------------------------------------------------------------------


def run_section(name: str, ctx: Ctx) -> None:
    warnings.filterwarnings("ignore", message=".*functools.lru_cache.*")  # dynamo on diffusers' version checks
    if ctx.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    try:
        if name in ("adm-64", "sid2-s"):
            section_pixdiff(name, ctx)
        elif name == "diffusers":
            section_diffusers(ctx)
        else:
            section_train(ctx)
    except Exception as e:  # noqa: BLE001 - set-up errors (imports, configs): one line
        fail(name, e)


def make_ctx(args, deadline: float) -> Ctx:
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    peak = args.peak_tflops or (peak_tflops(device_name(device)) if device.type == "cuda" else None)
    return Ctx(args, make_plan(args), device, peak, deadline, not args.no_compile,
               1 if args.cpu_smoke else args.warmup, 2 if args.cpu_smoke else args.iters)


def run_isolated(name: str, budget: float) -> list[dict]:
    """The section in a child process (own CUDA context, own compile workers) killed, with its
    process group, at the budget; its result lines are collected, the rest is echoed."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], "--child", name,
           "--deadline", repr(time.time() + budget)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True)
    recs: list[dict] = []

    def pump():
        for line in proc.stdout:
            if line.startswith(RESULT_TAG):
                recs.append(json.loads(line[len(RESULT_TAG):]))
            else:
                print(line, end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=budget + GRACE_S)
    except subprocess.TimeoutExpired:
        rc = None
    finally:  # also on Ctrl-C here; and any compile workers the child left behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    reader.join(timeout=5)
    if rc is None:
        msg = f"section killed at its time limit ({budget:.0f} s + {GRACE_S} s); results so far kept"
        print(f"  TIMED OUT {name}: {msg}", flush=True)
        recs.append({"kind": "error", "what": name, "message": "timed out: " + msg})
    elif rc != 0:
        print(f"  FAILED {name}: section process exited with code {rc}", flush=True)
        recs.append({"kind": "error", "what": name, "message": f"exit code {rc}"})
    return recs


def target_line(recs: list[dict], name: str, smoke: bool) -> str:
    row = next((r for r in recs if r["kind"] == "throughput" and r["section"] == "sid2-s" and r["mode"] == "compile"),
               None)
    goal = f"target: ≥ {100 * TARGET_MFU:.0f} % MFU for sid2-s with compile on an H100/H200-class GPU"
    if row is None:
        return f"{goal}: not measured (no compiled sid2-s result)"
    got = f"{fmt_mfu(row['mfu'])} at batch {row['batch']}, {row['resolution']}²"
    if smoke or not any(k in name for k in TARGET_CLASS):
        return f"{goal}: n/a on {name} (measured {got})"
    if row["mfu"] is None:
        return f"{goal}: unknown peak for {name} (pass --peak-tflops); {row['tflops']:.1f} TFLOP/s"
    return f"{goal}: {'MET' if row['mfu'] >= TARGET_MFU else 'NOT MET'} ({got})"


def tables(recs: list[dict]) -> str:
    rows = [r for r in recs if r["kind"] == "throughput"]
    out = ["| section | model | params | fwd GFLOPs / image | mode | resolution | batch | step (ms, median) | "
           "images/s | model TFLOP/s (3× fwd) | MFU | peak mem (GiB) | warm-up (s) |",
           "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {r['section']} | {r['model']} | {g3(r['params'] / 1e6)}M | {g3(r['gflops'])} | {r['mode']} | "
            f"{r['resolution']}² | {r['batch']} | {r['step_ms']:.1f} | {r['img_s']:.1f} | {g3(r['tflops'])} | "
            f"{fmt_mfu(r['mfu'])} | {g3(r['mem_gib'])} | {r['warm_s']:.0f} |" for r in rows]
    tr = [r for r in recs if r["kind"] in ("train", "sample")]
    if tr:
        out += ["", "| train → sample | mode | images/s | detail |", "|---|---|---:|---|"]
        for r in tr:
            if r["kind"] == "train":
                out.append(f"| train ({r['preset']}, digits 16², batch {r['batch']}, bf16) | {r['mode']} | "
                           f"{fmt(r['img_s'])} | {r['images']} images in {r['wall_s']:.0f} s with set-up |")
            else:
                out.append(f"| sample (EMA of the {r['run']} run, heun {r['steps']} steps) | fp32 | {r['img_s']:.1f} | "
                           f"{r['n']} images {r['dtype']}, finite: {r['finite']} |")
    errs = [r for r in recs if r["kind"] in ("error", "skipped")]
    out += [""] + [f"- {r['what']}: " + (r["message"] if r["kind"] == "error" else f"skipped ({r['left_s']:.0f} s left)")
                   for r in errs]
    return "\n".join(out).rstrip()


def fmt(v) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def g3(v) -> str:
    """Three significant digits (0.000123, 1.23, 296), n/a for NaN (no peak memory on the CPU)."""
    return "n/a" if v is None or not math.isfinite(v) else f"{v:#.3g}".rstrip(".")


def fmt_mfu(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.1f} %"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    ap.add_argument("--budget", type=float, default=440.0, help="seconds for all sections together (default 440)")
    ap.add_argument("--batch", nargs="*", default=[], metavar="SECTION=N",
                    help="batch per section (defaults adm-64=128 sid2-s=64 diffusers=adm-64's train=512)")
    ap.add_argument("--sid2-resolution", type=int, default=512)
    ap.add_argument("--iters", type=int, default=20, help="timed steps at most (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compiled runs: at least 3)")
    ap.add_argument("--no-compile", action="store_true", help="eager only")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="bf16 dense peak when the device is not in the table")
    ap.add_argument("--record", nargs="?", const=str(DOCS), default=None, metavar="FILE",
                    help=f"append the results as a section to FILE (default {DOCS.relative_to(ROOT)})")
    ap.add_argument("--inline", action="store_true", help="run the sections in this process (no hard time limits)")
    ap.add_argument("--isolate", action="store_true",
                    help="one process per section (the default on a GPU; with --cpu-smoke, to test it)")
    ap.add_argument("--cpu-smoke", action="store_true", help="every code path at toy size on the CPU, in seconds")
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu means --cpu-smoke")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.cpu_smoke = args.cpu_smoke or args.device == "cpu"
    parse_batches(args.batch)  # a bad item fails before any work
    return args


def main() -> int:
    global _results
    args = parse_args()
    if args.child:  # one section, in a process of its own
        run_section(args.child, make_ctx(args, args.deadline))
        return 0
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return 0
    start = time.time()
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    name = device_name(device)
    peak = args.peak_tflops or (peak_tflops(name) if device.type == "cuda" else None)
    isolate = args.isolate or not (args.inline or args.cpu_smoke)
    cuda = f", CUDA {torch.version.cuda}" if device.type == "cuda" else ""
    print(f"device: {name}; bf16 dense peak: {peak if peak else 'unknown (pass --peak-tflops)'} TFLOP/s; "
          f"torch {torch.__version__}{cuda}; budget {args.budget:.0f} s; "
          f"{'one process per section' if isolate else 'in-process'}", flush=True)
    recs: list[dict] = []
    todo = [s for s in SECTIONS if s in args.sections]
    for i, sec in enumerate(todo):
        left = args.budget - (time.time() - start)
        budget = max(left * WEIGHT[sec] / sum(WEIGHT[s] for s in todo[i:]), 0.0)
        print(f"\n== {TITLES[sec]} (budget {budget:.0f} s)", flush=True)
        if budget < 5 and not args.cpu_smoke:
            print(f"  skipped: {budget:.0f} s left", flush=True)
            recs.append({"kind": "error", "what": sec, "message": "no time left in the budget"})
            continue
        if isolate:
            recs += run_isolated(sec, budget)
        else:
            _results = recs
            run_section(sec, make_ctx(args, time.time() + budget))
    print("\n== target", flush=True)
    target = target_line(recs, name, args.cpu_smoke)
    print(target)
    table = tables(recs)
    print(f"\n== summary ({time.time() - start:.0f} s)\n\n{table}", flush=True)
    if args.record and args.cpu_smoke:
        print("not recorded: a CPU smoke test measures nothing worth keeping")
    elif args.record:
        from _report import append_section  # benchmarks/ is on sys.path when run as a script

        date = datetime.datetime.now(datetime.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
        cmd = " ".join(["python benchmarks/gpu_throughput.py", *sys.argv[1:]])
        append_section(args.record, (
            f"\n## GPU speed: throughput, MFU, diffusers, train → sample (benchmarks/gpu_throughput.py)\n\n"
            f"Date: {date}. Device: {name} (bf16 dense peak {peak} TFLOP/s), torch {torch.__version__}{cuda}.\n\n"
            f"Command: `{cmd}`\n\n"
            f"Step = forward + MSE backward + fused AdamW, bf16 autocast, random inputs; median step time after "
            f"warm-up. MFU = 3 × forward FLOPs × batch / step time / peak. diffusers' UNet2DModel is built with "
            f"adm-64's layout. Training through `pixdiff.train.train` (eager and `run.compile`), sampling through "
            f"`pixdiff.load(run).sample`.\n\n{target}\n\n{table}\n"))
        print(f"recorded in {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
