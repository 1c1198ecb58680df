"""Building blocks shared by the ADM U-Net, the Residual U-ViT and the noisy classifier.

Every block whose output is added to a residual stream ends in a zero-initialised layer, so
that at initialisation the block is *exactly* the identity on its skip path. The Residual
U-ViT relies on this for its identity-at-init property (Hoogeboom et al. 2025 (SiD2), §2.3,
eq. 5); the U-Net uses it because it makes the initial network output exactly zero (ADM's
`zero_module`).

Conditioning convention: the networks compute one embedding per image, apply SiLU to it
*once*, and hand the activated vector `emb` [B, E] to every block. ADM applies SiLU inside
each block's embedding projection; hoisting it is the same function and saves work.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pixdiff.errors import PixdiffError

__all__ = [
    "AttentionBlock",
    "ClassEmbedding",
    "Downsample",
    "LogSNREmbedding",
    "ResBlock",
    "TransformerBlock",
    "Upsample",
    "fourier_features",
    "num_attention_heads",
    "position_code_2d",
    "check_input",
    "check_logsnr",
    "embed_conditioning",
    "zero_init",
]

# DDPM feeds its integer timestep t ∈ [0, 1000) to the sinusoidal embedding (Ho et al. 2020,
# §4: the Transformer sinusoidal position embedding). Practical logSNR ranges are about
# [-20, 20], so scaling by 25 gives the Fourier features the same input range and therefore
# the same useful band of frequencies: the fastest feature resolves Δλ ≈ 0.25, the slowest stays monotone over
# the whole range.
LOGSNR_SCALE = 25.0
MAX_PERIOD = 10_000.0


def zero_init(module: nn.Module) -> nn.Module:
    """Zero every parameter of `module` so a residual branch starts as exactly 0."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def num_attention_heads(channels: int, head_channels: int | None, num_heads: int | None) -> int:
    """Heads for a layer of width `channels`: fixed channels per head (ADM's choice, 64;
    Dhariwal & Nichol 2021, §3, Table 2) or a fixed number of heads."""
    if (head_channels if head_channels is not None else num_heads or 0) < 1:
        raise PixdiffError(f"head_channels / num_heads must be >= 1 (got {head_channels} / {num_heads})")
    if head_channels is not None:
        if channels % head_channels:
            raise PixdiffError(
                f"attention width {channels} is not divisible by head_channels={head_channels}"
            )
        return channels // head_channels
    assert num_heads is not None
    if channels % num_heads:
        raise PixdiffError(f"attention width {channels} is not divisible by num_heads={num_heads}")
    return num_heads


def fourier_features(logsnr: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of `LOGSNR_SCALE * logsnr`, [B] -> [B, dim].

    Transformer positional encoding applied to the noise level (Ho et al. 2020, §4,
    timestep embedding): frequencies 1, ..., 1/MAX_PERIOD spaced geometrically.
    Computed in float32 even under autocast: bf16 would round λ·25 ≈ 500 to steps of 2.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(MAX_PERIOD) * torch.arange(half, device=logsnr.device, dtype=torch.float32) / half
    )
    arg = (LOGSNR_SCALE * logsnr.float())[:, None] * freqs[None]  # [B, half]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)


def position_code_2d(height: int, width: int, dim: int, device=None) -> torch.Tensor:
    """Fixed sinusoidal code of each token's (row, column), [height·width, dim], row-major as
    ``x.flatten(2)``: the sinusoidal position encoding of Vaswani et al. 2017, §3.5, with a
    quarter of the channels per (axis, sin/cos), sin(p·ω_k), cos(p·ω_k), ω_k = MAX_PERIOD^(−k/(dim/4))."""
    if dim % 4:
        raise PixdiffError(f"a 2-D position code needs a width divisible by 4 (got {dim})")
    quarter = dim // 4
    omega = torch.exp(-math.log(MAX_PERIOD) * torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    rows, cols = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                                torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    ry, rx = rows.reshape(-1, 1) * omega, cols.reshape(-1, 1) * omega  # [HW, dim/4] each
    return torch.cat([torch.sin(ry), torch.cos(ry), torch.sin(rx), torch.cos(rx)], dim=1)


class LogSNREmbedding(nn.Module):
    """Fourier features of logSNR followed by a two-layer MLP (Ho et al. 2020, §4; Dhariwal &
    Nichol 2021)."""

    def __init__(self, feature_dim: int, emb_dim: int) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.mlp = nn.Sequential(
            nn.Linear(feature_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )

    def forward(self, logsnr: torch.Tensor) -> torch.Tensor:
        return self.mlp(fourier_features(logsnr, self.feature_dim))  # [B, E]


class ClassEmbedding(nn.Module):
    """Label embedding with one extra row, index `num_classes`, for the null label that
    classifier-free guidance trains with and samples from (Ho & Salimans 2022). It is
    added to the noise embedding (Nichol & Dhariwal 2021, §5, which adds a class embedding to
    the timestep embedding)."""

    def __init__(self, num_classes: int, emb_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, emb_dim)

    def forward(self, cond: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        if cond is None:
            cond = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        else:
            if cond.shape != (batch,) or cond.dtype not in (torch.int64, torch.int32):
                raise PixdiffError(
                    f"cond must be an integer tensor of shape [{batch}], got "
                    f"{tuple(cond.shape)} {cond.dtype}"
                )
            # The range check reads the labels on the host: free on the CPU, a device sync (and a
            # graph break under torch.compile) on a GPU, where the trainer and pixdiff.load have
            # already validated the labels they pass. So it runs on CPU tensors only.
            if (cond.device.type == "cpu" and not torch.compiler.is_compiling()
                    and (bool((cond < 0).any()) or bool((cond > self.num_classes).any()))):
                raise PixdiffError(
                    f"class labels must lie in [0, {self.num_classes}] (num_classes="
                    f"{self.num_classes}, index {self.num_classes} is the null label); got "
                    f"min {int(cond.min())}, max {int(cond.max())}"
                )
        return self.table(cond)  # [B, E]


class Downsample(nn.Module):
    """Halve H and W by a stride-2 3×3 conv or by 2×2 average pooling."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x) if self.conv is not None else F.avg_pool2d(x, 2)


class Upsample(nn.Module):
    """Double H and W by nearest-neighbour repetition, optionally followed by a 3×3 conv."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.conv is not None else x


class ResBlock(nn.Module):
    """ADM residual block with AdaGN and optional BigGAN-style resampling.

    AdaGN(h, y) = y_s · GroupNorm(h) + y_b with [y_s, y_b] a linear projection of the
    embedding (Dhariwal & Nichol 2021, §3.1, Table 3). We write y_s = 1 + s so
    that a zero projection leaves GroupNorm untouched. With `resample` the block itself
    halves/doubles the resolution, resampling both branches (BigGAN up/down blocks,
    Dhariwal & Nichol 2021, §3), using parameter-free average pooling / nearest upsampling.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_dim: int,
        *,
        dropout: float = 0.0,
        groups: int = 32,
        resample: Literal["up", "down"] | None = None,
    ) -> None:
        super().__init__()
        self.resample = resample
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, affine=False)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = (
            nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        )

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(x))
        h = self.conv1(self._resample(h))
        x = self._resample(x)
        scale, shift = self.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)  # [B, C, 1, 1]
        h = self.norm2(h) * (1 + scale) + shift  # AdaGN (Dhariwal & Nichol 2021, Table 3)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


def _attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head self-attention over tokens: qkv [B, N, 3C] -> [B, N, C]."""
    b, n, three_c = qkv.shape
    c = three_c // 3
    q, k, v = qkv.view(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)  # 3 × [B, h, N, d]
    out = F.scaled_dot_product_attention(q, k, v)  # [B, h, N, d]
    return out.transpose(1, 2).reshape(b, n, c)


class AttentionBlock(nn.Module):
    """Global multi-head self-attention on a feature map (ADM; Dhariwal & Nichol 2021, Table 2),
    with a zero-initialised output projection so the block starts as the identity."""

    def __init__(self, channels: int, heads: int, groups: int = 32) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        out = self.proj(_attention(self.qkv(tokens), self.heads))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block on tokens [B, N, C] for the U-ViT's low-resolution levels
    (Hoogeboom et al. 2025 (SiD2), §2.3, after the U-ViT of Hoogeboom et al. 2023). The
    noise/class embedding enters as a scale and shift after each LayerNorm (the AdaGN idea of
    Dhariwal & Nichol 2021 applied to LayerNorm). Both residual branches end in
    zero-initialised linears, so the block is the identity at init. Per token it costs
    12·C² multiply-adds in its linears (Hoogeboom et al. 2025 (SiD2), App. A.2)."""

    def __init__(
        self, channels: int, emb_dim: int, heads: int, *, mlp_ratio: int = 4, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.heads = heads
        self.emb_proj = nn.Linear(emb_dim, 4 * channels)
        self.norm1 = nn.LayerNorm(channels, elementwise_affine=False)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.attn_out = zero_init(nn.Linear(channels, channels))
        self.norm2 = nn.LayerNorm(channels, elementwise_affine=False)
        self.mlp_in = nn.Linear(channels, mlp_ratio * channels)
        self.mlp_out = zero_init(nn.Linear(mlp_ratio * channels, channels))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        s1, b1, s2, b2 = self.emb_proj(emb)[:, None, :].chunk(4, dim=2)  # 4 × [B, 1, C]
        h = self.norm1(x) * (1 + s1) + b1
        x = x + self.dropout(self.attn_out(_attention(self.qkv(h), self.heads)))
        h = self.norm2(x) * (1 + s2) + b2
        return x + self.dropout(self.mlp_out(F.gelu(self.mlp_in(h))))


def check_input(x: torch.Tensor, in_channels: int, factor: int, name: str) -> None:
    """Raise one clear ValueError for inputs a user can get wrong (docs/architecture.md, "Errors")."""
    if x.ndim != 4:
        raise PixdiffError(f"{name} expects x of shape [B, C, H, W], got {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise PixdiffError(
            f"{name} was built for in_channels={in_channels} but x has {x.shape[1]} channels; "
            f"rebuild it with in_channels={x.shape[1]}"
        )
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise PixdiffError(
            f"{name}: image size {h}x{w} must be divisible by the total downsampling factor "
            f"{factor}; pad, crop or resize the images"
        )


def check_logsnr(logsnr: torch.Tensor, batch: int) -> None:
    if logsnr.shape != (batch,):
        raise PixdiffError(f"logsnr must have shape [{batch}], got {tuple(logsnr.shape)}")


def embed_conditioning(
    noise_emb: LogSNREmbedding,
    class_emb: ClassEmbedding | None,
    logsnr: torch.Tensor,
    cond: torch.Tensor | None,
    batch: int,
    device: torch.device,
) -> torch.Tensor:
    """SiLU(noise embedding + class embedding) [B, E], the vector every block reads."""
    check_logsnr(logsnr, batch)
    emb = noise_emb(logsnr)
    if class_emb is not None:
        emb = emb + class_emb(cond, batch, device)
    elif cond is not None:
        raise PixdiffError("this network is unconditional (num_classes=0); pass cond=None")
    return F.silu(emb)
