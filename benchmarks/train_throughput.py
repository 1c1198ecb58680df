"""Training throughput on CPU: pixdiff `tiny` (ADM U-Net) and `tiny-uvit` (Residual U-ViT)
side by side with diffusers' UNet2DModel configured to about the same size (16×16, 1 channel,
10 classes + null, widths 32/64/64, attention at 8×8), each in fp32 and bf16 autocast.

One step = forward + MSE backward + AdamW step on random data. Throughput: the steps of all
(model, precision) runs are interleaved in one process and the median step time is reported,
so that a shared, loaded machine slows every run alike. Memory: each run does two steps in
its own process; we report its peak RSS (ru_maxrss) and the growth over the model-ready RSS
(≈ activations + gradients + optimizer state).

    python benchmarks/train_throughput.py --batch-size 64 --iters 8 [--markdown]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time
import warnings

import torch

MODELS = ["pixdiff tiny", "pixdiff tiny-uvit", "diffusers UNet2DModel"]


def _make(model: str, channels_last: bool) -> tuple[torch.nn.Module, object]:
    if model.startswith("pixdiff"):
        import pixdiff.nets as nets

        net = nets.from_preset(model.split()[1])
        call = lambda x, logsnr, cond: net(x, logsnr, cond)  # noqa: E731
    else:
        warnings.filterwarnings("ignore")
        from diffusers import UNet2DModel

        net = UNet2DModel(
            sample_size=16, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64),
            layers_per_block=2, norm_num_groups=8, attention_head_dim=32, num_class_embeds=11,
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
            resnet_time_scale_shift="scale_shift",
        )
        call = lambda x, logsnr, cond: net(x, logsnr, class_labels=cond).sample  # noqa: E731
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net, call


def _setup(model: str, precision: str, batch: int, channels_last: bool):
    """A closure running one training step of `model` at `precision`."""
    torch.manual_seed(0)
    net, call = _make(model, channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 16, 16, generator=g)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    logsnr = torch.randn(batch, generator=g) * 4
    cond = torch.randint(0, 11, (batch,), generator=g)
    target = torch.randn(batch, 1, 16, 16, generator=g)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = call(x, logsnr, cond)
        loss = (out.float() - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, sum(p.numel() for p in net.parameters())


def _peak_memory(model: str, precision: str, batch: int, channels_last: bool, q) -> None:
    """Child process: RSS peak of two training steps, and its growth over model-ready RSS."""
    step, _ = _setup(model, precision, batch, channels_last)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step()
    step()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    q.put((rss, rss - rss0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--precisions", nargs="*", default=["fp32", "bf16"])
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()
    runs = [(m, p) for m in args.models for p in args.precisions]

    ctx = mp.get_context("spawn")
    memory = {}
    for run in runs:
        q = ctx.Queue()
        child = ctx.Process(target=_peak_memory, args=(*run, args.batch_size, args.channels_last, q))
        child.start()
        memory[run] = q.get()
        child.join()

    # Throughput: all runs live in this process and their steps are interleaved round-robin,
    # so load from other processes on a shared machine hits every run alike; median step time.
    steps = {run: _setup(*run, args.batch_size, args.channels_last) for run in runs}
    times: dict = {run: [] for run in runs}
    for run in runs:
        steps[run][0]()  # warm-up: allocator, oneDNN primitive caches
    for _ in range(args.iters):
        for run in runs:
            t0 = time.perf_counter()
            steps[run][0]()
            times[run].append(time.perf_counter() - t0)
    ips = {run: args.batch_size / statistics.median(times[run]) for run in runs}

    ref = max((v for (m, _), v in ips.items() if m.startswith("diffusers")), default=None)
    print(
        f"| model | params | precision | images/s (median step) | peak RSS (MB) | RSS growth (MB) |"
        f"{' vs diffusers best |' if ref else ''}"
    )
    print(f"|---|---|---|---|---|---|{'---|' if ref else ''}")
    for run in runs:
        rel = f" {ips[run] / ref:.2f}× |" if ref else ""
        rss, drss = memory[run]
        print(
            f"| {run[0]} | {steps[run][1] / 1e6:.2f}M | {run[1]} | {ips[run]:.1f} | {rss:.0f} "
            f"| {drss:.0f} |{rel}"
        )


if __name__ == "__main__":
    main()
