"""Training throughput on CPU: pixdiff `tiny` (ADM U-Net) and `tiny-uvit` (Residual U-ViT)
side by side with diffusers' UNet2DModel configured to about the same size (16×16, 1 channel,
10 classes + null, widths 32/64/64, attention at 8×8), each in fp32 and bf16 autocast.

One step = forward + MSE backward + AdamW step on random data. Each (model, precision) runs
in its own process so that peak memory (ru_maxrss) is its own: we report the peak RSS and
its growth over the model-ready RSS (≈ activations + gradients + optimizer state).

    python benchmarks/train_throughput.py --batch-size 64 --iters 8 [--markdown]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
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


def _run(model: str, precision: str, batch: int, iters: int, channels_last: bool, q) -> None:
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

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step()  # warm-up: allocator, oneDNN primitive caches
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in net.parameters())
    q.put((model, precision, params, batch * iters / dt, rss, rss - rss0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--precisions", nargs="*", default=["fp32", "bf16"])
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    rows = []
    for model in args.models:
        for precision in args.precisions:
            q = ctx.Queue()
            p = ctx.Process(
                target=_run, args=(model, precision, args.batch_size, args.iters, args.channels_last, q)
            )
            p.start()
            rows.append(q.get())
            p.join()
            print("  done:", rows[-1][:2], f"{rows[-1][3]:.1f} img/s", flush=True)

    best = {}
    for model, precision, _, ips, *_ in rows:
        best[model] = max(best.get(model, 0.0), ips)
    ref = best.get("diffusers UNet2DModel")
    print(
        f"\n| model | params | precision | images/s | peak RSS (MB) | RSS growth (MB) |"
        f"{' vs diffusers best |' if ref else ''}"
    )
    print(f"|---|---|---|---|---|---|{'---|' if ref else ''}")
    for model, precision, params, ips, rss, drss in rows:
        rel = f" {ips / ref:.2f}× |" if ref else ""
        print(
            f"| {model} | {params / 1e6:.2f}M | {precision} | {ips:.1f} | {rss:.0f} | {drss:.0f} |{rel}"
        )


if __name__ == "__main__":
    main()
