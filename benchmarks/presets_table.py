"""Print the markdown table of network presets (params, forward GFLOPs, resolution) that
docs/networks.md shows. Networks are built on the meta device: shapes only, no memory.

    python benchmarks/presets_table.py
"""

from __future__ import annotations

import torch

import pixdiff.nets as nets
from pixdiff.nets import UViTConfig


def rows() -> list[str]:
    out = [
        "| preset | kind | resolution | in ch | downsampling | params | GFLOPs / image "
        "| SiD2 App. A.2 estimate ×2 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in nets.available():
        cfg = nets.preset_config(name)
        with torch.device("meta"):
            net = nets.from_config(cfg)
        params = sum(p.numel() for p in net.parameters())
        gflops = nets.count_flops(cfg) / 1e9
        seed = f"{2 * nets.sid2_estimate(cfg):.4g}" if isinstance(cfg, UViTConfig) else "–"
        out.append(
            f"| `{name}` | {cfg.kind} | {cfg.resolution}² | {cfg.in_channels} "
            f"| {cfg.downsampling_factor} | {params / 1e6:.2f} M | {gflops:.4g} | {seed} |"
        )
    return out


if __name__ == "__main__":
    print("\n".join(rows()))
