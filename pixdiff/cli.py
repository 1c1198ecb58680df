"""The `pixdiff` program: train | sample | eval | nll | info.

Every mistake a user can make (bad path, wrong shape, missing weights, config mismatch on
resume, non-finite loss) ends in one line on stderr and exit code 2, not a traceback; set
PIXDIFF_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

from pixdiff.errors import PixdiffError

import argparse
import json
import os
import sys
from pathlib import Path

from pixdiff.errors import PixdiffError

__all__ = ["main", "build_parser"]


def _add_train(sub) -> None:
    from pixdiff.config import DataConfig, ModelConfig, OptimConfig, RunConfig

    d, m, o, r = DataConfig(), ModelConfig(), OptimConfig(), RunConfig()
    p = sub.add_parser(
        "train", help="train a diffusion model",
        description="Train a diffusion model. Checkpoints (safetensors + JSON) go to OUT/checkpoints; "
                    "the log to OUT/log.jsonl and OUT/loss.png. Ctrl-C (or SIGTERM) saves a checkpoint and exits; "
                    "--resume continues exactly where the last checkpoint left off. Under torchrun, uses all ranks.")
    p.add_argument("--data", default=d.name, help="digits (embedded), moons | swissroll | mixture (2-D), or an image folder (class = sub-folder)")
    p.add_argument("--resolution", type=int, default=d.resolution, help=f"image size (default {d.resolution})")
    p.add_argument("--channels", type=int, default=None, help="1 or 3 (default: 1 for digits, 3 for folders)")
    p.add_argument("--hflip", action="store_true", help="random horizontal flips")
    p.add_argument("--unconditional", action="store_true", help="ignore class labels")
    p.add_argument("--p-uncond", type=float, default=d.p_uncond, help=f"label dropout for guidance (default {d.p_uncond})")
    p.add_argument("--preset", default=m.preset, help=f"network preset (default {m.preset}; see `pixdiff info --presets`)")
    p.add_argument("--param", dest="parameterization", default=m.parameterization, choices=["eps", "x", "v", "edm"],
                   help=f"what the network predicts (default {m.parameterization})")
    p.add_argument("--steps", type=int, default=None, help="training length in optimizer steps (images = steps × batch)")
    p.add_argument("--images", type=int, default=None, help=f"training length in images seen (default {r.images})")
    p.add_argument("--batch", type=int, default=o.batch, help=f"global batch size (default {o.batch})")
    p.add_argument("--micro-batch", type=int, default=0, help="gradient-accumulation micro-batch (default: none)")
    p.add_argument("--lr", type=float, default=o.lr, help=f"peak learning rate (default {o.lr})")
    p.add_argument("--warmup", type=int, default=None, help=f"learning-rate warm-up in images (default {o.warmup_images})")
    p.add_argument("--weighting", default=None, help="loss weighting (see docs/losses.md), e.g. sigmoid, eps_mse, edm")
    p.add_argument("--seed", type=int, default=r.seed, help="run seed")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the network (default: fp32)")
    p.add_argument("--net", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset field, VALUE as JSON (e.g. --net channels=16 --net 'channel_mult=[1,2]')")
    p.add_argument("--ckpt-every", type=int, default=None, help="checkpoint interval in images")
    p.add_argument("--log-every", type=int, default=None, help="log interval in images")
    p.add_argument("--config", type=Path, default=None, help="JSON config (same shape as OUT/config.json); flags given override it")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest valid checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_train)


def config_from_args(args):
    from pixdiff.config import TrainConfig

    given = {a.split("=")[0] for a in args.argv if a.startswith("--")}

    def flag(name):  # was the flag typed (or is there no config file to defer to)?
        return args.config is None or f"--{name}" in given

    cfg = TrainConfig.load(args.config) if args.config else TrainConfig()
    if args.resume and args.config is None and (args.out / "config.json").exists():
        cfg = TrainConfig.load(args.out / "config.json")
        flag = lambda name: f"--{name}" in given  # noqa: E731 - resume keeps the saved config unless told
    if flag("data"):
        cfg.data.name = args.data
    if flag("resolution"):
        cfg.data.resolution = args.resolution
    if args.channels is not None:
        cfg.data.channels = args.channels
    elif flag("data"):
        cfg.data.channels = 1 if args.data in ("digits", "moons", "swissroll", "mixture") else 3
    if args.hflip:
        cfg.data.hflip = True
    if args.unconditional:
        cfg.data.conditional = False
    if flag("p-uncond"):
        cfg.data.p_uncond = args.p_uncond
    if flag("preset"):
        cfg.model.preset = args.preset
    if flag("param"):
        cfg.model.parameterization = args.parameterization
    if flag("batch"):
        cfg.optim.batch = args.batch
    if args.micro_batch:
        cfg.optim.micro_batch = args.micro_batch
    if flag("lr"):
        cfg.optim.lr = args.lr
    if args.warmup is not None:
        cfg.optim.warmup_images = args.warmup
    if args.weighting:
        cfg.loss.weighting = args.weighting
    if cfg.data.name in ("moons", "swissroll", "mixture"):
        cfg.loss.bias = 0.0 if cfg.loss.bias is None else cfg.loss.bias  # SiD2's bias is set per image resolution; none for 2-D points
        if not flag("preset") or args.preset == "tiny":
            cfg.model.preset = "mlp"
    if flag("seed"):
        cfg.run.seed = args.seed
    if args.bf16:
        cfg.run.bf16 = True
    for kv in args.net:
        key, sep, val = kv.partition("=")
        if not sep or not key:
            raise PixdiffError(f"--net takes KEY=VALUE (got {kv!r})")
        try:
            cfg.model.overrides[key] = json.loads(val)
        except json.JSONDecodeError:
            cfg.model.overrides[key] = val
    if args.steps is not None and args.images is not None:
        raise PixdiffError("give --steps or --images, not both")
    if args.steps is not None:
        cfg.run.images = args.steps * cfg.optim.batch
    if args.images is not None:
        cfg.run.images = args.images
    if args.ckpt_every is not None:
        cfg.run.ckpt_every_images = args.ckpt_every
    if args.log_every is not None:
        cfg.run.log_every_images = args.log_every
    if cfg.run.images < 1:
        raise PixdiffError("training length must be at least one image (--steps / --images)")
    # re-validate after edits
    return TrainConfig.from_dict(cfg.to_dict())


def _run_train(args) -> int:
    from pixdiff.train import train

    cfg = config_from_args(args)
    path = train(cfg, args.out, resume=args.resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"checkpoint": str(path), "log": str(args.out / "log.jsonl"), "loss_curve": str(args.out / "loss.png")}))
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="summarise a checkpoint, a network preset, or what is available")
    p.add_argument("--ckpt", type=Path, help="run or checkpoint folder")
    p.add_argument("--preset", help="network preset name: parameters and GFLOPs")
    p.add_argument("--resolution", type=int, default=None, help="resolution for --preset FLOPs")
    p.set_defaults(func=_run_info)


def _run_info(args) -> int:
    from pixdiff import nets, schedules

    if args.ckpt:
        from pixdiff import checkpoint as ckpt_io

        ck = ckpt_io.load(args.ckpt)
        n = sum(v.numel() for v in ck.model.values())
        print(json.dumps({"path": str(ck.path), "images": ck.state["images"], "parameters": n,
                          "meta": {k: v for k, v in ck.state["meta"].items() if k != "net_config"},
                          "config": ck.state["config"]}, indent=2))
        return 0
    if args.preset:
        net = nets.from_preset(args.preset, **({"resolution": args.resolution} if args.resolution else {}))
        res = args.resolution or net.config.resolution
        params = sum(p.numel() for p in net.parameters())
        print(json.dumps({"preset": args.preset, "parameters": params, "resolution": res,
                          "gflops_per_image": nets.count_flops(net, res) / 1e9}, indent=2))
        return 0
    out = {"presets": nets.available(), "schedules": schedules.available()}
    try:
        from pixdiff import samplers

        out["samplers"] = samplers.available()
    except ImportError:
        pass
    print(json.dumps(out, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from pixdiff import __version__

    ap = argparse.ArgumentParser(prog="pixdiff", description="Pixel-space diffusion models: train, sample, evaluate.")
    ap.add_argument("--version", action="version", version=f"pixdiff {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    from pixdiff import cli_sample

    cli_sample.add_parser(sub)
    for mod in ("pixdiff.metrics.command", "pixdiff.cli_nll", "pixdiff.train_classifier"):
        try:
            __import__(mod, fromlist=["add_parser"]).add_parser(sub)
        except ImportError:
            pass
    _add_info(sub)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    args.argv = argv
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("pixdiff: interrupted", file=sys.stderr)
        return 130
    except PixdiffError as e:
        if os.environ.get("PIXDIFF_DEBUG"):
            raise
        print(f"pixdiff {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
