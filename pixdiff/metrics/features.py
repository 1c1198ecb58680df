"""Feature networks: the images → (features [N, D], class probabilities [N, K] or None) step
that every distribution metric starts from.

Three kinds, one interface (`FeatureExtractor`):

- ``digits``: a small CNN classifier on 1×16×16 digits (`DigitsNet`), trained by
  ``scripts/train_digits_features.py`` on the embedded digits *train* split (seed 0); its weights
  ship in ``pixdiff/assets/digits_features.safetensors``. Features are the 64-d penultimate
  layer *before* its ReLU (dense, no dead units, closer to the Gaussian that the Fréchet distance
  assumes); probabilities are the softmax of its 10 logits. 8×8 and 32×32 inputs are resized to
  16×16 first (8→16 by the same bilinear upsampling that `pixdiff.data.load_digits` uses).
- ``inception``: the FID Inception-v3 of pytorch-fid / TTUR (see `pixdiff.metrics.inception`),
  from a weights file the user provides.
- any ``nn.Module`` returning features [N, D] (`module_extractor`).

Every extractor records the sha256 of its weights, so a score can name exactly what measured it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pixdiff.errors import PixdiffError

__all__ = [
    "DigitsNet",
    "Extracted",
    "FeatureExtractor",
    "check_images",
    "digits_extractor",
    "module_extractor",
    "sha256_file",
    "load_feature_net",
    "seeded_default_init",
    "write_feature_net",
    "DIGITS_WEIGHTS",
]

DIGITS_WEIGHTS = "digits_features.safetensors"  # inside the pixdiff/assets package folder


def seeded_default_init(net: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default init of every Conv2d / Linear in ``net``, but drawn from an explicit
    generator (the feature networks' training is a function of its seed)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=5**0.5, generator=generator)
            bound = 1.0 / m.weight[0].numel() ** 0.5
            nn.init.uniform_(m.bias, -bound, bound, generator=generator)


class DigitsNet(nn.Module):
    """Two conv stages (16→8→4 px) + a 64-d penultimate layer + 10 logits. ~47 k parameters."""

    feature_dim = 64
    num_classes = 10

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv4 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, self.feature_dim)
        self.fc2 = nn.Linear(self.feature_dim, self.num_classes)
        self.dropout = nn.Dropout(0.2)

    def init_weights(self, generator: torch.Generator) -> None:
        seeded_default_init(self, generator)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)  # [N, 16, 8, 8]
        h = F.max_pool2d(F.relu(self.conv4(F.relu(self.conv3(h)))), 2)  # [N, 32, 4, 4]
        feats = self.fc1(h.flatten(1))  # [N, 64], pre-activation
        return feats, self.fc2(self.dropout(F.relu(feats)))


@dataclass
class Extracted:
    """Features [N, D] float64 and class probabilities [N, K] float64 (None if the net has no head)."""

    features: torch.Tensor
    probs: torch.Tensor | None


def check_images(x: torch.Tensor, channels: tuple[int, ...] | None, sizes: tuple[int, ...] | None, who: str) -> None:
    """One clear message per way a user can hand over the wrong images."""
    if not isinstance(x, torch.Tensor):
        raise PixdiffError(f"{who}: images must be a torch.Tensor [N, C, H, W] in [-1, 1] (got {type(x).__name__})")
    if x.dtype == torch.uint8:
        raise PixdiffError(f"{who}: images are uint8; convert with pixdiff.data.from_uint8 (NHWC uint8 → NCHW float in [-1, 1])")
    if not x.is_floating_point():
        raise PixdiffError(f"{who}: images must be floating point in [-1, 1] (got {x.dtype})")
    if x.dim() != 4:
        raise PixdiffError(f"{who}: images must be [N, C, H, W] (got shape {tuple(x.shape)})")
    n, c, h, w = x.shape
    if n == 0:
        raise PixdiffError(f"{who}: no images given")
    if channels is not None and c not in channels:
        want = " or ".join(map(str, channels))
        raise PixdiffError(f"{who}: images must have {want} channel(s) (got {c}, shape {tuple(x.shape)})")
    if sizes is not None and (h != w or h not in sizes):
        want = ", ".join(f"{s}×{s}" for s in sizes)
        raise PixdiffError(f"{who}: images must be {want} (got {h}×{w}); use --features inception for other sizes")
    if not torch.isfinite(x).all():
        raise PixdiffError(f"{who}: images contain NaN or inf")
    lo, hi = x.min().item(), x.max().item()
    if lo < -1.0 - 1e-3 or hi > 1.0 + 1e-3:
        hint = " (they look like 0..255 pixel values: divide by 127.5 and subtract 1)" if hi > 2.0 else ""
        raise PixdiffError(f"{who}: images must lie in [-1, 1] (got min {lo:.3g}, max {hi:.3g}){hint}")


@dataclass
class FeatureExtractor:
    """A feature network with the facts a score's protocol needs.

    ``prepare`` maps checked images in [-1, 1] to the net's input; ``module`` maps that to
    features [N, D] or (features, logits)."""

    name: str
    module: nn.Module
    weights_sha256: str
    dim: int
    num_classes: int = 0
    channels: tuple[int, ...] | None = None
    sizes: tuple[int, ...] | None = None
    prepare: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda x: x)
    batch_size: int = 256
    notes: str = ""

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> Extracted:
        check_images(images, self.channels, self.sizes, f"{self.name} features")
        self.module.eval()
        device = next(self.module.parameters(), torch.empty(0)).device
        feats, probs = [], []
        for i in range(0, images.shape[0], self.batch_size):
            out = self.module(self.prepare(images[i:i + self.batch_size].float().to(device)))
            f, logits = out if isinstance(out, tuple) else (out, None)
            if f.dim() != 2 or f.shape[1] != self.dim:
                raise PixdiffError(f"{self.name}: the feature network must return [N, {self.dim}] (got {tuple(f.shape)})")
            feats.append(f.double().cpu())
            if logits is not None:
                probs.append(torch.softmax(logits.double(), dim=1).cpu())
        return Extracted(torch.cat(feats), torch.cat(probs) if probs else None)

    def protocol(self) -> dict:
        return {"name": self.name, "dim": self.dim, "num_classes": self.num_classes,
                "weights_sha256": self.weights_sha256, "notes": self.notes}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _to_digits_input(x: torch.Tensor) -> torch.Tensor:
    s = x.shape[-1]
    if s == 16:
        return x
    # 8 → 16 upsampling repeats load_digits exactly; 32 → 16 needs antialiasing, not point samples.
    return F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=s > 16)


def load_feature_net(net: nn.Module, weights: str | Path | None, asset: str, what: str, script: str) -> Path:
    """Load a shipped feature network's weights (``asset`` in pixdiff/assets, or the file ``weights``)
    into ``net``; one clear error for a missing file and for a file that is not ``what``'s."""
    from safetensors.torch import load_file

    path = Path(weights) if weights is not None else Path(str(resources.files("pixdiff") / "assets" / asset))
    if not path.is_file():
        raise PixdiffError(f"{what} weights {path} not found; rebuild them with `python {script}`")
    try:
        net.load_state_dict(load_file(str(path)))
    except Exception as e:  # noqa: BLE001 - any decode / key / shape failure is "not this file"
        raise PixdiffError(f"{path} is not a {type(net).__name__} weights file ({type(e).__name__}: {e})") from e
    return path


def write_feature_net(net: nn.Module, out: str | Path) -> str:
    """Write ``net``'s weights to ``out`` atomically and reproducibly; returns the file's sha256.

    No metadata in the file: safetensors writes its metadata map in hash order, which would make the
    file's sha256 differ run to run; the provenance goes to a JSON beside it instead."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
    tmp.chmod(0o644)
    tmp.replace(out)
    return sha256_file(out)


def digits_extractor(weights: str | Path | None = None, device: str | torch.device = "cpu") -> FeatureExtractor:
    """The shipped digits feature network (or the DigitsNet weights at ``weights``)."""
    net = DigitsNet()
    path = load_feature_net(net, weights, DIGITS_WEIGHTS, "digits feature", "scripts/train_digits_features.py")
    return FeatureExtractor(
        "digits", net.to(device).eval(), sha256_file(path), DigitsNet.feature_dim, DigitsNet.num_classes,
        channels=(1,), sizes=(8, 16, 32), prepare=_to_digits_input,
        notes="pixdiff DigitsNet, 64-d pre-ReLU penultimate features, 10-class softmax; inputs resized to 16×16")


def module_extractor(module: nn.Module, dim: int, name: str = "custom", num_classes: int = 0,
                     channels: tuple[int, ...] | None = None, sizes: tuple[int, ...] | None = None) -> FeatureExtractor:
    """Wrap any module mapping images in [-1, 1] to features [N, dim] (or (features, logits))."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return FeatureExtractor(name, module, h.hexdigest(), dim, num_classes, channels, sizes,
                            notes=f"user module {type(module).__name__}")
