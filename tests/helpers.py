"""What several test files share: a very small U-Net (a training step takes milliseconds) as
preset overrides and as `pixdiff train` flags, and the program's subcommand parsers."""

from __future__ import annotations

import argparse
import json

# channels 8, widths 8/16, one residual block per level, attention at 8×8
NET = {"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [8],
       "head_channels": 8, "norm_groups": 4}
NET_FLAGS = [arg for k, v in NET.items() for arg in ("--net", f"{k}={json.dumps(v).replace(' ', '')}")]


def subparsers() -> dict[str, argparse.ArgumentParser]:
    """``{command: its parser}`` as `pixdiff` builds them."""
    from pixdiff.cli import build_parser

    ap = build_parser()
    action = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)
