"""Named network configurations (one registry, as edm2's preset table) and (re)building.

`from_preset(name, **overrides)` builds a backbone; `build(kind, config_dict)` rebuilds one
from the `dataclasses.asdict(net.config)` saved beside a checkpoint.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

from torch import nn

from pixdiff.errors import PixdiffError

from .classifier import Classifier, ClassifierConfig, classifier_config_from_dict
from .mlp import MLP, MLPConfig, mlp_config_from_dict
from .unet import UNet, UNetConfig, unet_config_from_dict
from .uvit import UViT, UViTConfig, uvit_config_from_dict

__all__ = [
    "PRESETS", "available", "build", "downsampling_factor", "from_config", "from_preset",
    "preset_config",
]

NetConfig = UNetConfig | UViTConfig | ClassifierConfig | MLPConfig

PRESETS: dict[str, NetConfig] = {
    # CPU-sized ADM U-Net for the embedded 16×16 one-channel digits.
    "tiny": UNetConfig(
        in_channels=1, resolution=16, channels=32, channel_mult=(1, 2, 2), num_res_blocks=2,
        attention_resolutions=(8,), head_channels=32, norm_groups=8, num_classes=10,
    ),
    # Residual U-ViT of similar size for the same data: ResBlocks at 16², transformers at 8², 4².
    "tiny-uvit": UViTConfig(
        in_channels=1, resolution=16, patch_size=1, channels=(32, 64, 128), down_blocks=(2, 2),
        mid_blocks=6, block_types=("res", "transformer", "transformer"), dropout=(0.0, 0.0, 0.0),
        head_channels=32, norm_groups=8, num_classes=10,
    ),
    # Noisy classifier for the digits (classifier guidance, Dhariwal & Nichol 2021, §4).
    "tiny-classifier": ClassifierConfig(
        in_channels=1, resolution=16, num_classes=10, channels=32, channel_mult=(1, 2, 2),
        num_res_blocks=1, attention_resolutions=(4,), head_channels=32, norm_groups=8,
    ),
    # CIFAR-sized ADM (DDPM's 32² layout at half width).
    "small": UNetConfig(
        in_channels=3, resolution=32, channels=64, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
        attention_resolutions=(16,), head_channels=64, dropout=0.1,
    ),
    # ADM ImageNet 64×64 (Dhariwal & Nichol 2021, App. Table 11): width 192, 3 blocks,
    # attention at 32/16/8 with 64 ch/head, BigGAN up/down, dropout 0.1, learned sigma.
    "adm-64": UNetConfig(
        in_channels=3, resolution=64, channels=192, channel_mult=(1, 2, 3, 4), num_res_blocks=3,
        attention_resolutions=(32, 16, 8), head_channels=64, dropout=0.1, num_classes=1000,
        learn_sigma=True,
    ),
    # SiD2 small model at 512² (Hoogeboom et al. 2025, App. A.4): 4×4 patching.
    "sid2-s": UViTConfig(resolution=512, patch_size=4, num_classes=1000),
    # SiD2 flop-heavy at 512² (Hoogeboom et al. 2025, §2.2, App. A.4): 2×2 patching, else same.
    "sid2-flopheavy": UViTConfig(resolution=512, patch_size=2, num_classes=1000),
    # Residual MLP for the 2-D toy data (moons, swiss roll, mixture).
    "mlp": MLPConfig(in_channels=2, hidden=128, blocks=3),
}

_KINDS: dict[str, tuple[Callable[[dict], Any], Callable[[Any], nn.Module]]] = {
    UNetConfig.kind: (unet_config_from_dict, UNet),
    UViTConfig.kind: (uvit_config_from_dict, UViT),
    ClassifierConfig.kind: (classifier_config_from_dict, Classifier),
    MLPConfig.kind: (mlp_config_from_dict, MLP),
}


def available() -> list[str]:
    """Preset names accepted by `from_preset`."""
    return list(PRESETS)


def preset_config(name: str, **overrides: Any) -> NetConfig:
    """The config of preset `name` with fields replaced (and re-validated) by `overrides`."""
    if name not in PRESETS:
        raise PixdiffError(f"unknown network preset {name!r}; available: {available()}")
    cfg = PRESETS[name]
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = set(overrides) - fields
    if unknown:
        raise PixdiffError(f"preset {name!r} ({type(cfg).__name__}) has no fields {sorted(unknown)}")
    hints = typing.get_type_hints(type(cfg))
    for key, value in overrides.items():  # a wrong type would fail inside validation, with a traceback
        if not _fits(value, hints[key]):
            raise PixdiffError(f"network field {key} must be {_type_name(hints[key])} (got {value!r})")
    return dataclasses.replace(cfg, **overrides)


def _fits(value: Any, tp: Any) -> bool:
    """Does a JSON-ish value (lists for tuples) fit the annotation ``tp``?"""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is typing.Literal:
        return value in args
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    return True  # an annotation this check does not know: the config's own validation decides


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if tp is type(None):
        return "null"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is tuple:
        plural = {bool: "true / false", int: "integers", float: "numbers", str: "strings"}
        return f"a list of {plural.get(args[0], _type_name(args[0]))}" if args else "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def from_config(config: NetConfig) -> nn.Module:
    return _KINDS[config.kind][1](config)


def from_preset(name: str, **overrides: Any) -> nn.Module:
    """Build preset `name`, e.g. from_preset("tiny", num_classes=0, learn_sigma=True)."""
    return from_config(preset_config(name, **overrides))


def build(kind: str, config_dict: dict[str, Any]) -> nn.Module:
    """Rebuild a network from its kind (`net.config.kind`) and `dataclasses.asdict(net.config)`."""
    if kind not in _KINDS:
        raise PixdiffError(f"unknown network kind {kind!r}; expected one of {list(_KINDS)}")
    make_config, make_net = _KINDS[kind]
    return make_net(make_config(dict(config_dict)))


def downsampling_factor(net_or_config: nn.Module | NetConfig | str) -> int:
    """Total downsampling factor (image sides must be multiples of it); accepts a network,
    a config or a preset name, and builds nothing."""
    if isinstance(net_or_config, str):
        net_or_config = preset_config(net_or_config)
    cfg = getattr(net_or_config, "config", net_or_config)
    return cfg.downsampling_factor
