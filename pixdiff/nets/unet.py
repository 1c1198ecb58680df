"""ADM U-Net: the "ablated diffusion model" backbone of Dhariwal & Nichol.

Dhariwal & Nichol 2021 ("Diffusion Models Beat GANs", §3) list the changes over the DDPM
U-Net that this module implements: variable width with several residual blocks per
resolution, multi-head attention at 32/16/8 with 64 channels per head (Table 2), BigGAN
residual up/down-sampling blocks, and AdaGN injection of the noise + class embedding
(Table 3); the 1/√2 residual rescaling was dropped by the ablation and is not offered.
Class information takes the same path as the noise level: its embedding is added to the
noise embedding (as in Nichol & Dhariwal 2021, §5).

The noise level is logSNR, never a discrete timestep (docs/architecture.md, "One language");
see `layers.fourier_features` for how it is scaled. `learn_sigma` doubles the output channels
for the IDDPM learned-variance interpolation (Nichol & Dhariwal 2021, §3.1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pixdiff.errors import PixdiffError

from .layers import (
    AttentionBlock,
    ClassEmbedding,
    Downsample,
    LogSNREmbedding,
    ResBlock,
    Upsample,
    check_input,
    embed_conditioning,
    num_attention_heads,
    zero_init,
)

__all__ = ["UNet", "UNetConfig"]


@dataclass(frozen=True)
class UNetConfig:
    """ADM U-Net hyper-parameters. Tuples are per resolution level, finest first."""

    in_channels: int = 3
    out_channels: int | None = None  # predicted channels per pixel; None: = in_channels
    resolution: int = 32  # training image side; fixes where attention sits
    channels: int = 128  # base width; level l has channels * channel_mult[l]
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2  # per level in the encoder (decoder has one more, ADM)
    attention_resolutions: tuple[int, ...] = (16,)  # feature-map sides with self-attention
    head_channels: int | None = 64  # fixed channels per head (Dhariwal & Nichol 2021, Table 2) ...
    num_heads: int | None = None  # ... or a fixed number of heads (set head_channels=None)
    dropout: float = 0.0
    resblock_updown: bool = True  # BigGAN residual up/down blocks vs plain resampling
    conv_resample: bool = True  # plain resampling: strided conv / conv after upsampling
    num_classes: int = 0  # 0: unconditional; else label num_classes is the null label
    learn_sigma: bool = False  # IDDPM: also predict the variance interpolation, 2× channels
    norm_groups: int = 32
    emb_channels: int | None = None  # embedding width; None: 4 * channels (ADM)

    kind: ClassVar[str] = "unet"

    def __post_init__(self) -> None:
        validate_adm(self)

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def output_channels(self) -> int:
        base = self.in_channels if self.out_channels is None else self.out_channels
        return base * (2 if self.learn_sigma else 1)

    @property
    def embedding_channels(self) -> int:
        return self.emb_channels or 4 * self.channels


def validate_adm(cfg: Any) -> None:
    """Checks shared by every config that builds an ADM encoder (U-Net, classifier)."""
    if cfg.in_channels < 1 or cfg.channels < 1 or not cfg.channel_mult or min(cfg.channel_mult) < 1:
        raise PixdiffError("in_channels, channels and channel_mult must be positive / non-empty")
    if cfg.norm_groups < 1:
        raise PixdiffError(f"norm_groups must be >= 1, got {cfg.norm_groups}")
    if cfg.num_res_blocks < 1:
        raise PixdiffError(f"num_res_blocks must be >= 1, got {cfg.num_res_blocks}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise PixdiffError(f"dropout must be in [0, 1), got {cfg.dropout}")
    if (cfg.head_channels is None) == (cfg.num_heads is None):
        raise PixdiffError("set exactly one of head_channels (fixed width) or num_heads")
    if cfg.num_classes < 0:
        raise PixdiffError(f"num_classes must be >= 0, got {cfg.num_classes}")
    factor = 2 ** (len(cfg.channel_mult) - 1)
    if cfg.resolution < 1 or cfg.resolution % factor:
        what = "positive" if cfg.resolution < 1 else f"divisible by the downsampling factor {factor}"
        raise PixdiffError(f"resolution {cfg.resolution} must be {what}; {_working_resolutions(cfg)}")
    sides = {cfg.resolution // 2**level for level in range(len(cfg.channel_mult))}
    if not set(cfg.attention_resolutions) <= sides:
        raise PixdiffError(
            f"attention_resolutions {cfg.attention_resolutions} must be feature-map sides "
            f"reached from resolution {cfg.resolution}: {sorted(sides)}; {_working_resolutions(cfg)}"
        )
    for mult in cfg.channel_mult:
        width = cfg.channels * mult
        if width % cfg.norm_groups:
            raise PixdiffError(f"width {width} is not divisible by norm_groups={cfg.norm_groups}")
        num_attention_heads(width, cfg.head_channels, cfg.num_heads)


def _working_resolutions(cfg: Any) -> str:
    """The image sides this ADM config accepts, in words (for the error of one it does not)."""
    levels, attn = len(cfg.channel_mult), sorted(set(cfg.attention_resolutions))
    factor = 2 ** (levels - 1)
    if not attn:
        return f"resolutions that work: multiples of {factor}"
    ok = [attn[-1] * 2**level for level in range(levels)]
    ok = [r for r in ok if r % factor == 0 and set(attn) <= {r // 2**level for level in range(levels)}]
    if not ok:
        return f"no resolution works with attention_resolutions {tuple(attn)} and {levels} levels"
    words = ", ".join(map(str, ok[:-1])) + (" or " if len(ok) > 1 else "") + str(ok[-1])
    return f"resolutions that work: {words} (or change attention_resolutions)"


class EmbSequential(nn.ModuleList):
    """Layers applied in order, each called as layer(x, emb)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb)
        return x


def _attention_block(cfg: Any, width: int) -> AttentionBlock:
    heads = num_attention_heads(width, cfg.head_channels, cfg.num_heads)
    return AttentionBlock(width, heads, cfg.norm_groups)


def build_encoder(cfg: Any) -> tuple[nn.ModuleList, EmbSequential, list[int]]:
    """ADM encoder trunk and middle block; returns (blocks, middle, skip widths)."""
    emb_dim, groups = cfg.embedding_channels, cfg.norm_groups
    ch = cfg.channels * cfg.channel_mult[0]
    blocks = nn.ModuleList([EmbSequential([_Stem(cfg.in_channels, ch)])])
    skips = [ch]
    side = cfg.resolution
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            width = cfg.channels * mult
            layers: list[nn.Module] = [
                ResBlock(ch, width, emb_dim, dropout=cfg.dropout, groups=groups)
            ]
            ch = width
            if side in cfg.attention_resolutions:
                layers.append(_attention_block(cfg, ch))
            blocks.append(EmbSequential(layers))
            skips.append(ch)
        if level < len(cfg.channel_mult) - 1:
            down = (
                ResBlock(ch, ch, emb_dim, dropout=cfg.dropout, groups=groups, resample="down")
                if cfg.resblock_updown
                else Downsample(ch, cfg.conv_resample)
            )
            blocks.append(EmbSequential([down]))
            skips.append(ch)
            side //= 2
    middle = EmbSequential(
        [
            ResBlock(ch, ch, emb_dim, dropout=cfg.dropout, groups=groups),
            _attention_block(cfg, ch),
            ResBlock(ch, ch, emb_dim, dropout=cfg.dropout, groups=groups),
        ]
    )
    return blocks, middle, skips


class _Stem(nn.Conv2d):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)


class UNet(nn.Module):
    """ADM U-Net denoiser backbone: net(x_in [B,C,H,W], logsnr [B], cond [B] | None) ->
    raw output [B, output_channels, H, W]. The parameterisation lives in pixdiff.denoiser."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        cfg, emb_dim = config, config.embedding_channels
        self.noise_emb = LogSNREmbedding(cfg.channels, emb_dim)
        self.class_emb = ClassEmbedding(cfg.num_classes, emb_dim) if cfg.num_classes else None
        self.input_blocks, self.middle, skips = build_encoder(cfg)

        ch = skips[-1]
        side = cfg.resolution // cfg.downsampling_factor
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                width = cfg.channels * mult
                layers: list[nn.Module] = [
                    ResBlock(
                        ch + skips.pop(), width, emb_dim, dropout=cfg.dropout, groups=cfg.norm_groups
                    )
                ]
                ch = width
                if side in cfg.attention_resolutions:
                    layers.append(_attention_block(cfg, ch))
                if level and i == cfg.num_res_blocks:
                    layers.append(
                        ResBlock(ch, ch, emb_dim, dropout=cfg.dropout, groups=cfg.norm_groups,
                                 resample="up")
                        if cfg.resblock_updown
                        else Upsample(ch, cfg.conv_resample)
                    )
                    side *= 2
                self.output_blocks.append(EmbSequential(layers))
        self.out_norm = nn.GroupNorm(cfg.norm_groups, ch)
        self.out_conv = zero_init(nn.Conv2d(ch, cfg.output_channels, 3, padding=1))

    @property
    def downsampling_factor(self) -> int:
        return self.config.downsampling_factor

    def embed(
        self, logsnr: torch.Tensor, cond: torch.Tensor | None, batch: int, device: torch.device
    ) -> torch.Tensor:
        return embed_conditioning(self.noise_emb, self.class_emb, logsnr, cond, batch, device)

    def forward(
        self, x_in: torch.Tensor, logsnr: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_input(x_in, self.config.in_channels, self.downsampling_factor, "UNet")
        emb = self.embed(logsnr, cond, x_in.shape[0], x_in.device)
        h, hs = x_in, []
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out_conv(F.silu(self.out_norm(h)))  # [B, C_out, H, W]


def unet_config_from_dict(d: dict[str, Any]) -> UNetConfig:
    return _from_dict(UNetConfig, d)


def _from_dict(cls: Any, d: dict[str, Any]) -> Any:
    """Rebuild a frozen config from `dataclasses.asdict` output (JSON turns tuples into
    lists; unknown keys mean the checkpoint and the code disagree, so they raise)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise PixdiffError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
