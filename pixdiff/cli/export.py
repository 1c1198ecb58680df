"""`pixdiff export`: a run's weights as one safetensors file, or its noise schedule as a diffusers
scheduler config (``pixdiff.export``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pixdiff.cli._common import check_output, check_output_dir, writing
from pixdiff.errors import PixdiffError

__all__ = ["add_parser", "run", "FORMATS"]

FORMATS = ("safetensors-ema", "safetensors-raw", "safetensors-posthoc", "diffusers-scheduler")

DESCRIPTION = """\
Write a trained run in a format other tools read.

  safetensors-ema      --out FILE.safetensors: the EMA weights (safetensors-raw: the raw ones) with
                       the run's config as JSON in the file's metadata. The file alone is a model:
                       `pixdiff sample --ckpt FILE.safetensors` and pixdiff.load("FILE.safetensors")
                       read it (bit-identical samples to the run). No optimizer state.
  safetensors-posthoc  --sigma-rel S --out FILE.safetensors: the EMA of relative width S
                       reconstructed after training from the run's post-hoc EMA snapshots
                       (train with --posthoc-ema 0.05 0.1; Karras et al. 2024, docs/posthoc_ema.md).
  diffusers-scheduler  --out DIR: DIR/scheduler_config.json, a diffusers DDPMScheduler with the
                       run's discrete training chain (linear β, squaredcos_cap_v2, or trained_betas)
                       and its prediction type. A continuous-time schedule needs --timesteps T.
                       Drive the pixdiff network from a diffusers loop with
                       pixdiff.adapters.to_diffusers_model(pipe.denoiser, scheduler).

Not exportable: the networks as diffusers classes. pixdiff's ADM U-Net and U-ViT take a
continuous logSNR and are not diffusers UNet2DModel blocks; docs/interop.md has the details.

  pixdiff export --ckpt runs/digits --format safetensors-ema --out digits.safetensors
  pixdiff export --ckpt runs/digits --format safetensors-posthoc --sigma-rel 0.08 --out ema-0.08.safetensors
  pixdiff export --ckpt runs/ddpm --format diffusers-scheduler --out exported/scheduler
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="write a run's weights (safetensors) or schedule (diffusers config)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, type=Path, help="run folder (newest valid checkpoint) or checkpoint folder")
    p.add_argument("--format", required=True, choices=FORMATS, help="what to write (see above)")
    p.add_argument("--out", required=True, type=Path, help="FILE.safetensors, or a folder for diffusers-scheduler")
    p.add_argument("--timesteps", type=int, default=None, metavar="T",
                   help="diffusers-scheduler of a continuous-time schedule: tabulate ᾱ at t = i/T, i = 1..T")
    p.add_argument("--sigma-rel", type=float, default=None, metavar="S",
                   help="safetensors-posthoc: the EMA width σ_rel to reconstruct (EDM2's range: 0.01-0.25)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pixdiff import export

    if (args.sigma_rel is None) == (args.format == "safetensors-posthoc"):
        raise PixdiffError("--format safetensors-posthoc needs --sigma-rel, and --sigma-rel needs that format")
    if args.format.startswith("safetensors"):
        if args.timesteps is not None:
            raise PixdiffError("--timesteps applies to --format diffusers-scheduler only")
        out = check_output(args.out, (".safetensors",))
        with writing(out):
            if args.format == "safetensors-posthoc":
                from pixdiff import posthoc_ema

                posthoc_ema.export_posthoc(args.ckpt, args.sigma_rel, out)
            else:
                export.export_weights(args.ckpt, out, weights=args.format.split("-")[1])
    else:
        out_dir = check_output_dir(args.out)
        with writing(out_dir):
            out = export.export_diffusers_scheduler(args.ckpt, out_dir, timesteps=args.timesteps)
    print(json.dumps({"wrote": str(out), "format": args.format}))
    return 0
