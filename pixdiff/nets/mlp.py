"""A residual MLP backbone for vector data (the 2-D toys): ``net(x_in [B, D], logsnr, cond)``.

Same contract as the image networks: Fourier features of logSNR and an optional class embedding
(with the null label) condition every block; the output layer is zero-initialised, so the
initial prediction is the parameterisation's default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from pixdiff.errors import PixdiffError

from .layers import ClassEmbedding, LogSNREmbedding, zero_init

__all__ = ["MLP", "MLPConfig", "mlp_config_from_dict"]


@dataclass(frozen=True)
class MLPConfig:
    in_channels: int = 2  # the data dimension D
    resolution: int = 1  # unused (vector data); kept so callers can pass it like for images
    hidden: int = 128
    blocks: int = 3
    num_classes: int = 0
    learn_sigma: bool = False
    dropout: float = 0.0

    kind: ClassVar[str] = "mlp"

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.hidden < 1 or self.blocks < 1:
            raise PixdiffError("MLPConfig needs in_channels, hidden and blocks >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise PixdiffError(f"dropout must lie in [0, 1) (got {self.dropout})")

    @property
    def downsampling_factor(self) -> int:
        return 1


class _Block(nn.Module):
    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.film = nn.Linear(hidden, 2 * hidden)  # scale and shift from the embedding (as AdaGN)
        self.ff = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Dropout(dropout), zero_init(nn.Linear(hidden, hidden)))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb).chunk(2, dim=-1)
        return h + self.ff(self.norm(h) * (1 + scale) + shift)


class MLP(nn.Module):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        c = self.config = config
        self.embed = LogSNREmbedding(64, c.hidden)
        self.label = ClassEmbedding(c.num_classes, c.hidden) if c.num_classes else None
        self.inp = nn.Linear(c.in_channels, c.hidden)
        self.blocks = nn.ModuleList(_Block(c.hidden, c.dropout) for _ in range(c.blocks))
        self.out = zero_init(nn.Linear(c.hidden, c.in_channels * (2 if c.learn_sigma else 1)))

    def forward(self, x: torch.Tensor, logsnr: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.config.in_channels:
            raise PixdiffError(f"MLP expects [B, {self.config.in_channels}] inputs, got {tuple(x.shape)}")
        emb = self.embed(logsnr)
        if self.label is not None:
            emb = emb + self.label(cond, x.shape[0], x.device)
        elif cond is not None:
            raise PixdiffError("cond given to an unconditional network (num_classes = 0)")
        emb = nn.functional.silu(emb)
        h = self.inp(x)
        for b in self.blocks:
            h = b(h, emb)
        return self.out(h)


def mlp_config_from_dict(d: dict[str, Any]) -> MLPConfig:
    names = set(MLPConfig.__dataclass_fields__)
    unknown = set(d) - names
    if unknown:
        raise PixdiffError(f"unknown MLPConfig fields {sorted(unknown)}")
    return MLPConfig(**d)
