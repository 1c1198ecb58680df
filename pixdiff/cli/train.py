"""`pixdiff train`: parse the flags into a ``TrainConfig``, call ``pixdiff.train.train``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from pixdiff.cli._common import add_device, at_least, check_output_dir, device
from pixdiff.cli.flags import add_config_flags, config_flags, typed_overrides
from pixdiff.errors import PixdiffError

__all__ = ["add_parser", "run", "config_from_args"]

DESCRIPTION = """\
Train a diffusion model. Checkpoints (safetensors + JSON) go to OUT/checkpoints, the log to
OUT/log.jsonl and OUT/loss.png. Ctrl-C (or SIGTERM) saves a checkpoint and exits; --resume
continues exactly where the last checkpoint left off. Under torchrun, uses all ranks.

Every field of the run's config (OUT/config.json) is a flag below. The base is the defaults, or
--config FILE, or (with --resume and no --config) the run's own OUT/config.json; the flags typed
change it. A resumed run may change only its length, logging / checkpoint intervals and
optim.decay_images. `pixdiff train ... --print-config` shows the result without training.
"""

EXAMPLES = """\
examples:
  pixdiff train --data digits --preset tiny --steps 2000 --batch 64 --out runs/digits
  pixdiff train --out runs/digits --resume                  # after a crash or Ctrl-C
  pixdiff train --out runs/digits --resume --images 400000  # train a resumed run longer
  pixdiff train --data moons --steps 3000 --out runs/moons  # 2-D points: preset mlp, bias 0
  pixdiff train --config my.json --lr 3e-4 --out runs/x     # a config file, one field changed
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a diffusion model", description=DESCRIPTION, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="run folder (required unless --print-config)")
    p.add_argument("--config", type=Path, default=None,
                   help="JSON config of the shape of OUT/config.json; flags typed override it")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest valid checkpoint (its config.json is the base)")
    p.add_argument("--print-config", action="store_true", help="print the resulting config as JSON and exit")
    add_device(p, "training")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from pixdiff.baselines import FAMILIES

    p.add_argument("--family", choices=("diffusion", *FAMILIES), default=None,
                   help="generative family (default: diffusion; a resumed run keeps its own). The baselines "
                        "(docs/baselines.md) use the data, optim and run flags and their own default budget; "
                        "--net KEY=VALUE sets their network fields")
    p.add_argument("--vqvae", type=Path, default=None, metavar="RUN",
                   help="maskgit: a trained vqvae run whose autoencoder tokenises the images (default: train one first)")
    groups = add_config_flags(p)
    groups["data"].add_argument("--unconditional", dest="config:data.conditional", action="store_false",
                                default=argparse.SUPPRESS, help="ignore class labels (same as --no-conditional)")
    if "bf16" not in {c.flag for c in config_flags()}:  # the flag before run.precision existed
        groups["run"].add_argument("--bf16", dest="config:run.precision", action="store_const", const="bf16",
                                   default=argparse.SUPPRESS, help="same as --precision bf16")
    groups["run"].add_argument("--steps", type=int, default=None, metavar="N",
                               help="training length in optimizer steps: sets --images to N × --batch")
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace):
    """The ``TrainConfig`` of the base (defaults, ``--config`` or the resumed run's config.json)
    with the typed flags applied."""
    from pixdiff import nets
    from pixdiff.config import TrainConfig
    from pixdiff.data import TOYS

    typed = typed_overrides(args)
    family = _family(args)
    if args.config is not None:
        base = TrainConfig.load(args.config)
    elif args.resume and args.out is not None and (args.out / "config.json").is_file():
        base = TrainConfig.load(args.out / "config.json")
    else:
        base = TrainConfig()
    d = base.to_dict()
    if family != "diffusion" and d["model"]["preset"] != family:  # a new baseline run: its default budget
        from pixdiff.baselines.common import apply_family_defaults

        d = apply_family_defaults(family, d)
    for section, fields in typed.items():
        for name, value in fields.items():
            d[section][name] = {**d[section][name], **value} if isinstance(value, dict) else value
    if family != "diffusion":
        if typed.get("model", {}).get("preset", family) != family:
            raise PixdiffError(f"--preset names a diffusion network; a {family} run sets its network with --net KEY=VALUE")
        d["model"]["preset"] = family
    data_typed, model_typed = typed.get("data", {}), typed.get("model", {})
    if "name" in data_typed:  # shape fields not given follow the new data (DataConfig's defaults)
        for k in ("resolution", "channels"):
            if k not in data_typed:
                d["data"][k] = None  # resolution: photos 32, a folder 64, a prepared set its own; channels: 1 or 3
    if d["data"]["name"] in TOYS:  # 2-D points: an MLP, and no per-resolution sigmoid bias
        if "preset" not in model_typed and nets.preset_config(d["model"]["preset"]).kind != "mlp":
            d["model"]["preset"] = "mlp"
        if d["loss"]["bias"] is None:
            d["loss"]["bias"] = 0.0
    if args.steps is not None:
        if "images" in typed.get("run", {}):
            raise PixdiffError("give --steps or --images, not both")
        d["run"]["images"] = at_least(args.steps, 1, "--steps") * d["optim"]["batch"]
    return TrainConfig.from_dict(d)


def _family(args: argparse.Namespace) -> str:
    """--family, else the family of the run being resumed (its config's preset), else diffusion."""
    from pixdiff.baselines import FAMILIES

    if getattr(args, "family", None):
        return args.family
    if args.resume and args.out is not None and (args.out / "config.json").is_file():
        try:
            preset = json.loads((args.out / "config.json").read_text())["model"]["preset"]
        except (ValueError, KeyError, TypeError):
            return "diffusion"
        return preset if preset in FAMILIES else "diffusion"
    return "diffusion"


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.print_config:
        print(cfg.to_json())
        return 0
    if args.out is None:
        raise PixdiffError("--out is required: the run folder")
    check_output_dir(args.out)  # a file in the way or a read-only place: refused before any work
    family = _family(args)
    if getattr(args, "vqvae", None) is not None and family != "maskgit":
        raise PixdiffError("--vqvae RUN is for --family maskgit")
    if family != "diffusion":
        from pixdiff.baselines.common import train as train_baseline

        path = train_baseline(cfg, args.out, resume=args.resume, progress=not args.quiet, device=device(args),
                              vqvae=args.vqvae)
        print(json.dumps({"checkpoint": str(path), "log": str(args.out / "log.jsonl"),
                          "loss_curve": str(args.out / "loss.png")}))
        return 0
    from pixdiff.train import train

    path = train(cfg, args.out, resume=args.resume, progress=not args.quiet, device=device(args))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"checkpoint": str(path), "log": str(args.out / "log.jsonl"),
                          "loss_curve": str(args.out / "loss.png")}))
    return 0
