"""GPU training throughput and model FLOP utilisation (MFU) of the paper-sized presets.

One training step = forward + MSE backward + AdamW step of the bare network under bf16 autocast
(weights and optimizer state fp32), on random inputs of the preset's shape with random logSNR and
class labels, eager and under ``torch.compile``. MFU = model FLOPs per step / step time / the
device's dense bf16 peak, with model FLOPs = 3 × ``pixdiff.nets.count_flops`` (forward) × batch
(backward ≈ 2 × forward; matmuls and convolutions only, as Hoogeboom et al. 2025 (SiD2), App. A.2,
count them).
Target (issue 10): ≥ 40 % MFU for the U-ViT preset (sid2-s).

Without a CUDA device it prints "no CUDA device: skipped" and exits 0 (so `make bench` passes on CPU);
``--device cpu`` forces a CPU smoke test of the code path (small presets only; no MFU).

    python benchmarks/gpu_throughput.py [--presets adm-64 sid2-s] [--batch adm-64=128 sid2-s=64]
        [--iters 20] [--warmup 5] [--no-compile] [--peak-tflops X] [--append docs/benchmarks.md | --no-append]

A batch that does not fit is halved until it does (the table reports the batch used).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

from pixdiff import nets

ROOT = Path(__file__).resolve().parents[1]

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's data sheets, matched against
# torch.cuda.get_device_name() in this order (first substring that matches wins).
PEAK_BF16_TFLOPS = [
    ("H200", 989.4),  # H200 SXM (same tensor cores and clocks as H100 SXM)
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),  # H100 SXM5 ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),  # SXM4 and PCIe
]
DEFAULT_BATCH = {"adm-64": 128, "sid2-s": 64, "sid2-flopheavy": 32, "small": 512, "tiny": 64, "tiny-uvit": 64}


def peak_tflops(name: str) -> float | None:
    for key, peak in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return peak
    return None


def make_step(net, opt, batch: int, device, compile_: bool):
    cfg = net.config
    c, r = cfg.in_channels, cfg.resolution
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, c, r, r, device=device, generator=g)
    logsnr = torch.randn(batch, device=device, generator=g) * 4.0
    ncls = getattr(cfg, "num_classes", 0) or 0
    cond = torch.randint(0, ncls + 1, (batch,), device=device, generator=g) if ncls else None
    fwd = torch.compile(net) if compile_ else net
    dtype = torch.bfloat16

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype):
            out = fwd(x, logsnr, cond)
        loss = (out[:, :c].float() - x).square().mean()
        loss.backward()
        opt.step()
        return loss

    return step


def measure(preset: str, batch: int, device, compile_: bool, warmup: int, iters: int) -> dict:
    torch.manual_seed(0)
    net = nets.from_preset(preset).to(device).train()
    params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=device.type == "cuda")
    step = make_step(net, opt, batch, device, compile_)
    cuda = device.type == "cuda"
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(iters):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            step()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
    del step, opt, net
    if cuda:
        torch.cuda.empty_cache()
    return {"params": params, "step_s": statistics.median(times), "warm_s": warm_s, "mem_gib": mem}


def measure_fitting(preset, batch, device, compile_, warmup, iters) -> tuple[int, dict]:
    """Halve the batch on out-of-memory until it fits."""
    while True:
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            return batch, measure(preset, batch, device, compile_, warmup, iters)
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            print(f"  {preset} batch {batch}: out of memory, trying {batch // 2}", flush=True)
            batch //= 2
            torch._dynamo.reset()
            if device.type == "cuda":
                torch.cuda.empty_cache()


def parse_batches(items: list[str]) -> dict[str, int]:
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not v.isdigit():
            raise SystemExit(f"--batch takes PRESET=N items (got {it!r})")
        out[k] = int(v)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["adm-64", "sid2-s"])
    ap.add_argument("--batch", nargs="*", default=[], metavar="PRESET=N",
                    help=f"batch per preset (defaults {DEFAULT_BATCH})")
    ap.add_argument("--iters", type=int, default=20, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compiled runs: at least 3)")
    ap.add_argument("--no-compile", action="store_true", help="eager only")
    ap.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak when the device is not in the table")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke test")
    ap.add_argument("--append", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown file to append the section to")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return 0
    device = torch.device(args.device)
    batches = {**DEFAULT_BATCH, **parse_batches(args.batch)}
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = "CPU (smoke test)"
    peak = args.peak_tflops or (peak_tflops(name) if device.type == "cuda" else None)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
    print(f"device: {name}; bf16 dense peak: {peak if peak else 'unknown (pass --peak-tflops)'} TFLOP/s", flush=True)
    rows = []
    for preset in args.presets:
        flops_img = nets.count_flops(nets.preset_config(preset))
        for compile_ in ([False] if args.no_compile else [False, True]):
            b, m = measure_fitting(preset, batches.get(preset, 32), device, compile_, max(args.warmup, 3 if compile_ else 1),
                                   args.iters)
            img_s = b / m["step_s"]
            achieved = 3 * flops_img * b / m["step_s"] / 1e12
            mfu = f"{100 * achieved / peak:.1f} %" if peak else "n/a"
            rows.append(f"| {preset} | {m['params'] / 1e6:.1f}M | {flops_img / 1e9:.1f} | {'compile' if compile_ else 'eager'} "
                        f"| {b} | {1e3 * m['step_s']:.1f} | {img_s:.1f} | {achieved:.1f} | {mfu} | {m['mem_gib']:.1f} |")
            print(rows[-1] + f"  (warm-up {m['warm_s']:.0f} s)", flush=True)
    head = ("| preset | params | fwd GFLOPs / image | mode | batch | step (ms, median) | images/s | "
            "model TFLOP/s (3× fwd) | MFU | peak mem (GiB) |\n|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    table = head + "\n" + "\n".join(rows)
    print("\n" + table)
    if not args.no_append and device.type == "cuda":
        cmd = "python benchmarks/gpu_throughput.py " + " ".join(sys.argv[1:])
        section = (f"\n## GPU training throughput and MFU (benchmarks/gpu_throughput.py)\n\n"
                   f"Date: {date}. Device: {name} (bf16 dense peak {peak} TFLOP/s), torch {torch.__version__}, "
                   f"CUDA {torch.version.cuda}.\n\nCommand: `{cmd.strip()}`\n\n"
                   f"Step = forward + MSE backward + fused AdamW of the bare network, bf16 autocast, random inputs; "
                   f"median of {args.iters} steps after warm-up. MFU = 3 × count_flops × batch / step time / peak. "
                   f"Target: ≥ 40 % MFU for sid2-s.\n\n{table}\n")
        with open(args.append, "a") as fh:  # one append: another writer may share the file
            fh.write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
