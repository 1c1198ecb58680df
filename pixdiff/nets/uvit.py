"""Residual U-ViT of SiD2 (Hoogeboom et al. 2025, §2.3, Fig. 4, eq. 5; settings in App. A.4).

The image is cut into p×p patches and linearly embedded (§2.2: a 512² image with 4×4
patching becomes a 128×128×48 input). Each level runs ResBlocks (high resolution) or
transformer blocks (low resolution); the coarsest level is a stack of "mid" transformer
blocks. There are no block-wise skip connections: each downsampling step has exactly one,

    f(x) = f_u( U( f_m(D(h)) − D(h) ) + h ),   h = f_d(x)          (SiD2 eq. 5)

applied recursively (f_m is the whole network below the level). D = 2×2 average pooling then
a linear map, U = a linear map then nearest-neighbour upsampling (§2.3). Every block ends in
a zero-initialised layer, so f_d, f_u and f_m are identities at initialisation, hence
f_m(D(h)) − D(h) = 0, U(0) = 0 (U has no bias) and the whole trunk is *exactly* the identity,
whatever D and U are. `UViT.trunk` exposes f so tests can check that. Because each level has
one skip, the encoder and decoder may have different numbers of blocks (§2.3 "Asymmetric
U-ViTs").

By default the transformer levels get no positional embedding: position reaches them only
through the zero-padded convolutions of the ResBlock levels above. Those blocks are identity at
init and a p×p patch embedding is per patch, so the attention starts blind to where its tokens
are, and a shallow ResBlock level can only tell tokens near the border apart. ``pos_emb=True``
adds a fixed 2-D sinusoidal code (``layers.position_code_2d``) through a zero-initialised linear
map to the tokens entering each transformer stack: position is available from the first step,
and the network is still exactly the identity at init.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from pixdiff.errors import PixdiffError

from .layers import (
    ClassEmbedding,
    LogSNREmbedding,
    ResBlock,
    TransformerBlock,
    check_input,
    embed_conditioning,
    num_attention_heads,
    position_code_2d,
    zero_init,
)
from .unet import _from_dict

__all__ = ["UViT", "UViTConfig"]

BlockType = Literal["res", "transformer"]


@dataclass(frozen=True)
class UViTConfig:
    """Residual U-ViT hyper-parameters. Per-level tuples run finest first; the last level is
    the middle stack. Defaults are the SiD2 small model at 512² (Hoogeboom et al. 2025,
    App. A.4)."""

    in_channels: int = 3
    out_channels: int | None = None  # predicted channels per pixel; None: = in_channels
    resolution: int = 512
    patch_size: int = 4  # §2.2: 4 at 512² (small), 2 for flop-heavy
    channels: tuple[int, ...] = (128, 256, 512, 1024)
    down_blocks: tuple[int, ...] = (3, 3, 3)  # encoder blocks per level (all but the last)
    up_blocks: tuple[int, ...] | None = None  # decoder blocks per level; None: = down_blocks
    mid_blocks: int = 16
    block_types: tuple[BlockType, ...] = ("res", "res", "transformer", "transformer")
    dropout: tuple[float, ...] = (0.0, 0.0, 0.1, 0.1)
    head_channels: int = 64  # channels per head (ADM's 64, Dhariwal & Nichol 2021, Table 2)
    mlp_ratio: int = 4  # 4: the "mlp in (4), mlp out (4)" of SiD2 App. A.2
    num_classes: int = 0  # 0: unconditional; else label num_classes is the null label
    learn_sigma: bool = False
    norm_groups: int = 32
    emb_channels: int | None = None  # embedding width; None: 4 * channels[0]
    pos_emb: bool = False  # a 2-D sinusoidal position code into every transformer stack (module docstring)

    kind: ClassVar[str] = "uvit"

    def __post_init__(self) -> None:
        levels = len(self.channels)
        if levels < 1 or min(self.channels) < 1 or self.in_channels < 1:
            raise PixdiffError("channels must be a non-empty tuple of positive widths")
        if self.patch_size < 1:
            raise PixdiffError(f"patch_size must be >= 1, got {self.patch_size}")
        if self.norm_groups < 1:
            raise PixdiffError(f"norm_groups must be >= 1, got {self.norm_groups}")
        ups = self.decoder_blocks
        if len(self.down_blocks) != levels - 1 or len(ups) != levels - 1:
            raise PixdiffError(
                f"down_blocks/up_blocks need one entry per level except the middle "
                f"({levels - 1}), got {self.down_blocks} / {ups}"
            )
        if min((*self.down_blocks, *ups, self.mid_blocks)) < 0:
            raise PixdiffError("block counts must be >= 0")
        if len(self.block_types) != levels or len(self.dropout) != levels:
            raise PixdiffError(f"block_types and dropout need one entry per level ({levels})")
        for kind, width in zip(self.block_types, self.channels):
            if kind not in ("res", "transformer"):
                raise PixdiffError(f"block type must be 'res' or 'transformer', got {kind!r}")
            if kind == "res" and width % self.norm_groups:
                raise PixdiffError(f"width {width} is not divisible by norm_groups={self.norm_groups}")
            if kind == "transformer":
                num_attention_heads(width, self.head_channels, None)
                if self.pos_emb and width % 4:
                    raise PixdiffError(f"pos_emb needs transformer widths divisible by 4, got {width}")
        if self.channels[0] % self.norm_groups:
            raise PixdiffError(f"width {self.channels[0]} not divisible by norm_groups")
        if any(not 0.0 <= p < 1.0 for p in self.dropout):
            raise PixdiffError(f"dropout rates must be in [0, 1), got {self.dropout}")
        if self.num_classes < 0:
            raise PixdiffError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.resolution < 1 or self.resolution % self.downsampling_factor:
            raise PixdiffError(
                f"resolution {self.resolution} must be positive and divisible by the downsampling factor "
                f"{self.downsampling_factor} (patch_size × 2^(levels-1)); resolutions that work: multiples of "
                f"{self.downsampling_factor}, e.g. {self.downsampling_factor} or {2 * self.downsampling_factor}"
            )

    @property
    def decoder_blocks(self) -> tuple[int, ...]:
        return self.down_blocks if self.up_blocks is None else self.up_blocks

    @property
    def downsampling_factor(self) -> int:
        return self.patch_size * 2 ** (len(self.channels) - 1)

    @property
    def output_channels(self) -> int:
        base = self.in_channels if self.out_channels is None else self.out_channels
        return base * (2 if self.learn_sigma else 1)

    @property
    def embedding_channels(self) -> int:
        return self.emb_channels or 4 * self.channels[0]


class _Stack(nn.Module):
    """n blocks of one type at one width. Transformer stacks flatten the map to tokens once
    for the whole stack rather than once per block."""

    def __init__(self, cfg: UViTConfig, level: int, n: int) -> None:
        super().__init__()
        width, emb_dim, p = cfg.channels[level], cfg.embedding_channels, cfg.dropout[level]
        self.tokens = cfg.block_types[level] == "transformer"
        self.pos = None
        if self.tokens:
            heads = num_attention_heads(width, cfg.head_channels, None)
            make = lambda: TransformerBlock(width, emb_dim, heads, mlp_ratio=cfg.mlp_ratio, dropout=p)  # noqa: E731
            # Zero-initialised, so the stack is still the identity at init (SiD2 eq. 5's argument).
            self.pos = zero_init(nn.Linear(width, width, bias=False)) if cfg.pos_emb and n else None
        else:
            make = lambda: ResBlock(width, width, emb_dim, dropout=p, groups=cfg.norm_groups)  # noqa: E731
        self.blocks = nn.ModuleList([make() for _ in range(n)])

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if not len(self.blocks):
            return x
        if not self.tokens:
            for block in self.blocks:
                x = block(x, emb)
            return x
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        if self.pos is not None:
            t = t + self.pos(position_code_2d(h, w, c, device=x.device).to(t.dtype))
        for block in self.blocks:
            t = block(t, emb)
        return t.transpose(1, 2).reshape(b, c, h, w)


class UViT(nn.Module):
    """Residual U-ViT denoiser backbone: net(x_in [B,C,H,W], logsnr [B], cond [B] | None)
    -> raw output [B, output_channels, H, W]."""

    def __init__(self, config: UViTConfig) -> None:
        super().__init__()
        self.config = cfg = config
        emb_dim, ch, p = cfg.embedding_channels, cfg.channels, cfg.patch_size
        self.noise_emb = LogSNREmbedding(ch[0], emb_dim)
        self.class_emb = ClassEmbedding(cfg.num_classes, emb_dim) if cfg.num_classes else None
        # Patching + linear embedding is one p×p conv with stride p.
        self.patch_in = nn.Conv2d(cfg.in_channels, ch[0], p, stride=p)
        n_inner = len(ch) - 1
        self.down_stacks = nn.ModuleList([_Stack(cfg, i, cfg.down_blocks[i]) for i in range(n_inner)])
        self.downs = nn.ModuleList([nn.Conv2d(ch[i], ch[i + 1], 1) for i in range(n_inner)])
        self.mid = _Stack(cfg, n_inner, cfg.mid_blocks)
        # No bias: U(0) must be 0 for the identity-at-init argument of Eq. 5.
        self.ups = nn.ModuleList([nn.Conv2d(ch[i + 1], ch[i], 1, bias=False) for i in range(n_inner)])
        self.up_stacks = nn.ModuleList(
            [_Stack(cfg, i, cfg.decoder_blocks[i]) for i in range(n_inner)]
        )
        self.out_norm = nn.GroupNorm(cfg.norm_groups, ch[0])
        self.out_proj = zero_init(nn.Conv2d(ch[0], cfg.output_channels * p * p, 1))

    @property
    def downsampling_factor(self) -> int:
        return self.config.downsampling_factor

    def embed(
        self, logsnr: torch.Tensor, cond: torch.Tensor | None, batch: int, device: torch.device
    ) -> torch.Tensor:
        return embed_conditioning(self.noise_emb, self.class_emb, logsnr, cond, batch, device)

    def trunk(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """f of SiD2 eq. 5 unrolled over all levels, on patch features [B, C0, H/p, W/p]."""
        skips = []
        for stack, down in zip(self.down_stacks, self.downs):
            h = stack(h, emb)  # h = f_d(x)
            d = down(F.avg_pool2d(h, 2))  # D(h)
            skips.append((h, d))
            h = d
        h = self.mid(h, emb)
        for i in reversed(range(len(skips))):
            skip, d = skips[i]
            u = F.interpolate(self.ups[i](h - d), scale_factor=2.0, mode="nearest")  # U(f_m(D(h)) − D(h))
            h = self.up_stacks[i](u + skip, emb)  # f_u(U(...) + h)
        return h

    def forward(
        self, x_in: torch.Tensor, logsnr: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_input(x_in, self.config.in_channels, self.downsampling_factor, "UViT")
        emb = self.embed(logsnr, cond, x_in.shape[0], x_in.device)
        h = self.trunk(self.patch_in(x_in), emb)
        out = self.out_proj(F.silu(self.out_norm(h)))  # [B, C_out·p², H/p, W/p]
        return F.pixel_shuffle(out, self.config.patch_size)  # [B, C_out, H, W]


def uvit_config_from_dict(d: dict) -> UViTConfig:
    return _from_dict(UViTConfig, d)
