"""Denoiser backbones: ADM U-Net, SiD2 Residual U-ViT, and the noisy classifier.

Every backbone is called as `net(x_in, logsnr, cond=None)` with x_in [B, C, H, W], logsnr
[B] and cond a LongTensor [B] of labels (index num_classes = the null label; None means the
null label) and returns the raw output [B, C_out, H, W]. Networks know nothing of samplers,
losses or parameterisations. Each exposes `net.config` (a frozen dataclass; save it with
`dataclasses.asdict`, rebuild with `build(net.config.kind, d)`).
"""

from .classifier import Classifier, ClassifierConfig
from .flops import count_flops, sid2_estimate
from .presets import (
    PRESETS,
    available,
    build,
    downsampling_factor,
    from_config,
    from_preset,
    preset_config,
)
from .unet import UNet, UNetConfig
from .uvit import UViT, UViTConfig

__all__ = [
    "PRESETS",
    "Classifier",
    "ClassifierConfig",
    "UNet",
    "UNetConfig",
    "UViT",
    "UViTConfig",
    "available",
    "build",
    "count_flops",
    "downsampling_factor",
    "from_config",
    "from_preset",
    "preset_config",
    "sid2_estimate",
]
