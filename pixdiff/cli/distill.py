"""`pixdiff distill`: train a few-step student (``pixdiff.distill.distill``) into a run folder that
`pixdiff sample` and `pixdiff eval` read like any run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pixdiff.cli._common import add_device, at_least, check_output_dir, device
from pixdiff.cli._common import seed as seed_type
from pixdiff.cli.flags import key_values
from pixdiff.errors import PixdiffError

__all__ = ["add_parser", "run"]

DESCRIPTION = """\
Distil a diffusion model into a few-step student, or train a consistency model without a teacher.

  ct            consistency training, improved CT (Song et al. 2023 Alg. 3; Song & Dhariwal 2023)
  cd            consistency distillation (Song et al. 2023, Alg. 2)
  progressive   progressive distillation, halving the steps each round (Salimans & Ho 2022, Alg. 2)
  moment        moment-matching distillation, alternating (Salimans et al. 2024, Alg. 2)
  genie         GENIE's distilled derivative head and TTM-2 sampler (Dockhorn et al. 2022)

--teacher is a run folder, or a 2-D toy (mixture, moons, swissroll) whose exact denoiser is the
teacher (the student is then a small MLP trained in seconds). The student run samples with its
method's own sampler and step count: `pixdiff sample --ckpt OUT --out x.npz`. --resume continues
a run bit for bit. docs/distillation.md has the formulas and measured numbers.
"""

EPILOG = """\
examples:
  pixdiff distill --method cd --teacher mixture --out runs/cd-mixture --images 256000
  pixdiff distill --method progressive --teacher runs/digits --steps 4 --option start_steps=64 --out runs/pd
  pixdiff distill --method ct --data mixture --out runs/ct-mixture
"""


def add_parser(sub) -> argparse.ArgumentParser:
    from pixdiff.distill import METHODS

    p = sub.add_parser("distill", help="distil a few-step student (consistency, progressive, moment matching, GENIE)",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, choices=tuple(METHODS), help="the distillation method")
    p.add_argument("--teacher", default=None, metavar="RUN|mixture|moons|swissroll",
                   help="a run folder (EMA weights) or a 2-D toy's exact denoiser (ct needs none)")
    p.add_argument("--data", default=None,
                   help="training data (default: the teacher's; a 2-D toy for ct without a teacher)")
    p.add_argument("--out", type=Path, required=True, help="the student's run folder")
    p.add_argument("--steps", type=int, default=None,
                   help="the student's sampling steps, its default when sampled (default: 1; progressive: 4)")
    p.add_argument("--images", type=int, default=256_000, help="training length in examples seen (default 256000)")
    p.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--ema", type=float, default=0.999, help="per-step decay of the sampling EMA (default 0.999)")
    p.add_argument("--guidance", type=float, default=0.0,
                   help="distil a class-conditional teacher run guided by classifier-free guidance at weight w "
                        "(the student samples the guided distribution unguided; default 0)")
    p.add_argument("--seed", type=seed_type, default=0, help="seed of the initial weights and every draw (default 0)")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="IMAGES",
                   help="images between checkpoints (default 0: at the end only)")
    p.add_argument("--net", action="append", default=[], metavar="KEY=VALUE",
                   help="MLP fields of a toy student (e.g. hidden=256 blocks=4)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="the method's own options, VALUE as JSON (e.g. N=18, mu=0.95, start_steps=64); "
                        "an unknown key is refused with the list")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device(p, "distillation")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pixdiff.distill import DistillConfig, distill

    check_output_dir(args.out)
    steps = args.steps if args.steps is not None else (4 if args.method == "progressive" else 1)
    at_least(steps, 1, "--steps")
    at_least(args.batch, 1, "--batch")
    at_least(args.images, args.batch, "--images")
    if not args.lr > 0:
        raise PixdiffError(f"--lr must be positive (got {args.lr})")
    if not 0.0 <= args.ema < 1.0:
        raise PixdiffError(f"--ema must lie in [0, 1) (got {args.ema})")
    cfg = DistillConfig(args.method, args.teacher, args.data, steps, args.images, args.batch, args.lr, args.seed,
                        args.ema, args.checkpoint_every, keep=2, guidance=args.guidance, net=key_values("net", args.net),
                        options=key_values("option", args.option))
    path = distill(cfg, args.out, resume=args.resume, progress=not args.quiet, device=device(args))
    print(json.dumps({"checkpoint": str(path), "log": str(args.out / "log.jsonl")}))
    return 0
