"""Noisy classifier p_φ(y | z_t) for classifier guidance.

The classifier is the downsampling trunk of the U-Net with attention pooling at the 8×8
layer producing the output, trained on noisy images (Dhariwal & Nichol 2021, §4). It is
conditioned on the noise level exactly like the U-Net (logSNR Fourier features + MLP, AdaGN);
its gradient ∇_z log p_φ(y | z_t) is what guidance uses (Dhariwal & Nichol 2021, Alg. 1),
which lives in pixdiff.guidance, not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pixdiff.errors import PixdiffError

from .layers import LogSNREmbedding, check_input, check_logsnr, num_attention_heads
from .unet import _from_dict, build_encoder, validate_adm

__all__ = ["Classifier", "ClassifierConfig"]


@dataclass(frozen=True)
class ClassifierConfig:
    """Encoder half of an ADM U-Net (same field meanings as UNetConfig) + attention pooling.
    The pooling has a learned position embedding, so images must be `resolution` square."""

    in_channels: int = 3
    resolution: int = 64
    num_classes: int = 1000
    channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    head_channels: int | None = 64
    num_heads: int | None = None
    dropout: float = 0.0
    resblock_updown: bool = True
    conv_resample: bool = True
    norm_groups: int = 32
    emb_channels: int | None = None  # None: 4 * channels

    kind: ClassVar[str] = "classifier"

    def __post_init__(self) -> None:
        validate_adm(self)
        if self.num_classes < 1:
            raise PixdiffError(f"a classifier needs num_classes >= 1, got {self.num_classes}")

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def embedding_channels(self) -> int:
        return self.emb_channels or 4 * self.channels


class AttentionPool2d(nn.Module):
    """Attention pooling (CLIP/ADM): the spatial mean, plus a position embedding, queries all
    positions; only that one query token is computed since only it is read out."""

    def __init__(self, side: int, channels: int, heads: int, out_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.pos = nn.Parameter(torch.randn(side * side + 1, channels) / channels**0.5)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        tokens = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1) + self.pos
        q, k, v = self.qkv(tokens).view(b, -1, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # [B, h, 1, d]
        return self.proj(out.reshape(b, c))  # [B, num_classes]


class Classifier(nn.Module):
    """net(z [B,C,H,W], logsnr [B]) -> logits [B, num_classes]."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.noise_emb = LogSNREmbedding(cfg.channels, cfg.embedding_channels)
        self.input_blocks, self.middle, skips = build_encoder(cfg)
        ch = skips[-1]
        self.out_norm = nn.GroupNorm(cfg.norm_groups, ch)
        side = cfg.resolution // cfg.downsampling_factor
        heads = num_attention_heads(ch, cfg.head_channels, cfg.num_heads)
        self.pool = AttentionPool2d(side, ch, heads, cfg.num_classes)

    @property
    def downsampling_factor(self) -> int:
        return self.config.downsampling_factor

    def forward(
        self, x_in: torch.Tensor, logsnr: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`cond` is accepted for signature compatibility and must be None."""
        if cond is not None:
            raise PixdiffError("the noisy classifier predicts labels; call it with cond=None")
        res = self.config.resolution
        check_input(x_in, self.config.in_channels, self.downsampling_factor, "Classifier")
        if x_in.shape[-2:] != (res, res):
            raise PixdiffError(
                f"Classifier was built for {res}x{res} images (its attention pooling has a "
                f"fixed position embedding), got {tuple(x_in.shape[-2:])}"
            )
        check_logsnr(logsnr, x_in.shape[0])
        emb = F.silu(self.noise_emb(logsnr))
        h = x_in
        for block in self.input_blocks:
            h = block(h, emb)
        h = self.middle(h, emb)
        return self.pool(F.silu(self.out_norm(h)))


def classifier_config_from_dict(d: dict) -> ClassifierConfig:
    return _from_dict(ClassifierConfig, d)
