"""Analytic forward FLOPs per image (one multiply-add = 2 FLOPs).

Like Hoogeboom et al. 2025 (SiD2), App. A.2, we count only matrix products: convolutions,
linear layers and the two attention products (QKᵀ and AV); norms, activations and resampling
are negligible. The paper's `transformer_gflops` / `resblock_gflops` count
multiply-*accumulates* (12·C² per token for qkv + out + 4× MLP in/out; 2·N²·C for attention;
2 × 3²·C² per pixel for a ResBlock's two 3×3 convs), so they are half of the FLOPs returned
here; `sid2_estimate` reproduces them.

The counts walk each config the way the corresponding module is built, so they need no
network instance (paper-sized presets are counted without allocating them) and match
`torch.utils.flop_counter.FlopCounterMode` (tests/test_nets.py).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from pixdiff.errors import PixdiffError

from .classifier import ClassifierConfig
from .unet import UNetConfig
from .uvit import UViTConfig

__all__ = ["count_flops", "sid2_estimate"]


def _conv(k: int, c_in: int, c_out: int, side_out: int) -> int:
    return 2 * k * k * c_in * c_out * side_out * side_out


def _linear(n_in: int, n_out: int, tokens: int = 1) -> int:
    return 2 * n_in * n_out * tokens


def _attention_products(n_q: int, n_kv: int, channels: int) -> int:
    # QKᵀ and AV, each n_q·n_kv·C multiply-adds summed over heads (SiD2 App. A.2: 2·N²·C MACs)
    return 2 * 2 * n_q * n_kv * channels


def _resblock(c_in: int, c_out: int, emb: int, side: int, resample: str | None = None) -> int:
    side_out = {"up": 2 * side, "down": side // 2, None: side}[resample]
    skip = _conv(1, c_in, c_out, side_out) if c_in != c_out else 0
    return (
        _conv(3, c_in, c_out, side_out) + _linear(emb, 2 * c_out) + _conv(3, c_out, c_out, side_out)
        + skip
    )


def _self_attention(channels: int, side: int) -> int:
    n = side * side
    return _linear(channels, 4 * channels, n) + _attention_products(n, n, channels)


def _transformer(channels: int, emb: int, side: int, mlp_ratio: int) -> int:
    n = side * side
    mlp = 2 * _linear(channels, mlp_ratio * channels, n)
    return _linear(emb, 4 * channels) + _self_attention(channels, side) + mlp


def _adm_encoder(cfg: Any, resolution: int) -> tuple[int, list[int], int, int, int]:
    """FLOPs of build_encoder's blocks + middle; returns (flops, skips, ch, side, cfg_side)."""
    e = cfg.embedding_channels
    ch = cfg.channels * cfg.channel_mult[0]
    flops = _linear(cfg.channels, e) + _linear(e, e) + _conv(3, cfg.in_channels, ch, resolution)
    skips, side, cfg_side = [ch], resolution, cfg.resolution
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            flops += _resblock(ch, cfg.channels * mult, e, side)
            ch = cfg.channels * mult
            if cfg_side in cfg.attention_resolutions:
                flops += _self_attention(ch, side)
            skips.append(ch)
        if level < len(cfg.channel_mult) - 1:
            if cfg.resblock_updown:
                flops += _resblock(ch, ch, e, side, "down")
            elif cfg.conv_resample:
                flops += _conv(3, ch, ch, side // 2)
            skips.append(ch)
            side, cfg_side = side // 2, cfg_side // 2
    flops += 2 * _resblock(ch, ch, e, side) + _self_attention(ch, side)
    return flops, skips, ch, side, cfg_side


def _unet(cfg: UNetConfig, resolution: int) -> int:
    e = cfg.embedding_channels
    flops, skips, ch, side, cfg_side = _adm_encoder(cfg, resolution)
    for level, mult in reversed(list(enumerate(cfg.channel_mult))):
        for i in range(cfg.num_res_blocks + 1):
            flops += _resblock(ch + skips.pop(), cfg.channels * mult, e, side)
            ch = cfg.channels * mult
            if cfg_side in cfg.attention_resolutions:
                flops += _self_attention(ch, side)
            if level and i == cfg.num_res_blocks:
                if cfg.resblock_updown:
                    flops += _resblock(ch, ch, e, side, "up")
                elif cfg.conv_resample:
                    flops += _conv(3, ch, ch, 2 * side)
                side, cfg_side = 2 * side, 2 * cfg_side
    return flops + _conv(3, ch, cfg.output_channels, resolution)


def _uvit_stack(cfg: UViTConfig, level: int, n: int, side: int) -> int:
    c, e = cfg.channels[level], cfg.embedding_channels
    if cfg.block_types[level] == "transformer":
        return n * _transformer(c, e, side, cfg.mlp_ratio)
    return n * _resblock(c, c, e, side)


def _uvit_position_code(cfg: UViTConfig, level: int, stacks: tuple[int, ...], side: int) -> int:
    # pos_emb projects one code per forward pass, whatever the batch: counted as at batch 1
    if not cfg.pos_emb or cfg.block_types[level] != "transformer":
        return 0
    return sum(1 for n in stacks if n) * _linear(cfg.channels[level], cfg.channels[level], side * side)


def _uvit(cfg: UViTConfig, resolution: int) -> int:
    ch, e, p = cfg.channels, cfg.embedding_channels, cfg.patch_size
    side = resolution // p
    flops = _linear(ch[0], e) + _linear(e, e) + _conv(p, cfg.in_channels, ch[0], side)
    flops += _conv(1, ch[0], cfg.output_channels * p * p, side)
    for i in range(len(ch) - 1):
        down, up = cfg.down_blocks[i], cfg.decoder_blocks[i]
        flops += _uvit_stack(cfg, i, down + up, side) + _uvit_position_code(cfg, i, (down, up), side)
        flops += _conv(1, ch[i], ch[i + 1], side // 2) + _conv(1, ch[i + 1], ch[i], side // 2)
        side //= 2
    mid = len(ch) - 1
    return flops + _uvit_stack(cfg, mid, cfg.mid_blocks, side) + _uvit_position_code(cfg, mid, (cfg.mid_blocks,), side)


def _classifier(cfg: ClassifierConfig, resolution: int) -> int:
    flops, _, ch, side, _ = _adm_encoder(cfg, resolution)
    n = side * side + 1  # the mean token plus every position
    pool = _linear(ch, 3 * ch, n) + _attention_products(1, n, ch) + _linear(ch, cfg.num_classes)
    return flops + pool


_COUNTERS = {UNetConfig: _unet, UViTConfig: _uvit, ClassifierConfig: _classifier}


def count_flops(net: nn.Module | Any, resolution: int | None = None) -> int:
    """Forward FLOPs per image of `net` (a pixdiff network or its config) on
    resolution×resolution inputs (default: the config's resolution)."""
    cfg = getattr(net, "config", net)
    counter = _COUNTERS.get(type(cfg))
    if counter is None:
        raise PixdiffError(f"count_flops knows {[c.__name__ for c in _COUNTERS]}, got {type(cfg)}")
    res = cfg.resolution if resolution is None else resolution
    if res % cfg.downsampling_factor:
        raise PixdiffError(
            f"resolution {res} must be divisible by the downsampling factor {cfg.downsampling_factor}"
        )
    return counter(cfg, res)


def sid2_estimate(cfg: UViTConfig, resolution: int | None = None) -> float:
    """SiD2's estimate (Hoogeboom et al. 2025, App. A.2) in GFLOPs (multiply-accumulates, as the
    paper counts them)."""

    def transformer_gflops(size: int, c: int, blocks: int) -> float:
        return (12 * c**2 * blocks * size**2 + 2 * size**4 * blocks * c) / 1000**3

    def resblock_gflops(size: int, c: int, blocks: int) -> float:
        return (2 * 3**2) * c**2 * blocks * size**2 / 1000**3

    side = (cfg.resolution if resolution is None else resolution) // cfg.patch_size
    total = 0.0
    counts = [d + u for d, u in zip(cfg.down_blocks, cfg.decoder_blocks)] + [cfg.mid_blocks]
    for c, kind, blocks in zip(cfg.channels, cfg.block_types, counts):
        f = transformer_gflops if kind == "transformer" else resblock_gflops
        total += f(side, c, blocks)
        side //= 2
    return total
