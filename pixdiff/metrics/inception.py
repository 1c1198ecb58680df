"""The FID Inception-v3 (TTUR / pytorch-fid), in pixdiff's own code: no torchvision.

Architecture: torchvision's Inception3 (Szegedy et al. 2016, "Rethinking the Inception
Architecture") as patched by pytorch-fid (`src/pytorch_fid/inception.py`, `fid_inception_v3`) to
match the TensorFlow graph `inception-2015-12-05` that the original FID code (Heusel et al. 2017,
TTUR) uses:
- FIDInceptionA / C / E_1: the pool branch averages with ``count_include_pad=False`` (TF's
  average pool ignores padded zeros);
- FIDInceptionE_2 (Mixed_7c): the pool branch is a *max* pool;
- 1008 output classes, no auxiliary head, no input transform.
Features are the 2048-d output of the final average pool ("pool3"); probabilities (for the
Inception Score) are the softmax of the 1008 logits pool3 · Wᵀ *without* the fc bias, as the
original Inception Score code computes them. Checked against torch-fidelity's pure-torch port of
the same graph on random weights (tests/test_metrics.py, when torch-fidelity is importable).

Input scaling as in pytorch-fid's `InceptionV3.forward`: images in [0, 1] are resized to 299×299
(bilinear, align_corners=False), then mapped to [-1, 1] by 2x − 1. Grayscale is repeated to RGB.

Weights are never downloaded: the user passes pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``
(or the same tensors as safetensors); the key names are those of that state dict.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pixdiff.errors import PixdiffError

from .features import FeatureExtractor, sha256_file

__all__ = ["FIDInceptionV3", "inception_extractor", "load_inception_state", "INCEPTION_URL", "INCEPTION_SHA256_PREFIX"]

INCEPTION_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
INCEPTION_SHA256_PREFIX = "6726825d"  # torch.hub convention: the file name carries its sha256 prefix
_GET = (f"download pytorch-fid's FID Inception weights from {INCEPTION_URL} "
        "and pass the file with --inception-weights PATH (or inception_weights=PATH)")


class _Conv(nn.Module):
    """torchvision's BasicConv2d: conv without bias, BN (eps 1e-3, TF's), ReLU."""

    def __init__(self, cin: int, cout: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x):
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)  # FID patch


class _A(nn.Module):  # FIDInceptionA
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _Conv(cin, 64, kernel_size=1)
        self.branch5x5_1 = _Conv(cin, 48, kernel_size=1)
        self.branch5x5_2 = _Conv(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = _Conv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, kernel_size=3, padding=1)
        self.branch_pool = _Conv(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool(x))], 1)


class _B(nn.Module):  # InceptionB (Mixed_6a), unpatched
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _Conv(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = _Conv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class _C(nn.Module):  # FIDInceptionC
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = _Conv(cin, 192, kernel_size=1)
        self.branch7x7_1 = _Conv(cin, c7, kernel_size=1)
        self.branch7x7_2 = _Conv(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = _Conv(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _Conv(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = _Conv(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _Conv(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _Conv(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _Conv(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = _Conv(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for m in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = m(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool(x))], 1)


class _D(nn.Module):  # InceptionD (Mixed_7a), unpatched
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = _Conv(cin, 192, kernel_size=1)
        self.branch3x3_2 = _Conv(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = _Conv(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = _Conv(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class _E(nn.Module):  # FIDInceptionE_1 (pool="avg") and FIDInceptionE_2 (pool="max")
    def __init__(self, cin: int, pool: Literal["avg", "max"]):
        super().__init__()
        self.pool = pool
        self.branch1x1 = _Conv(cin, 320, kernel_size=1)
        self.branch3x3_1 = _Conv(cin, 384, kernel_size=1)
        self.branch3x3_2a = _Conv(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = _Conv(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _Conv(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = _Conv(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = _Conv(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _Conv(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = _Conv(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        # Mixed_7c max-pools here: a quirk of the TF graph that FID scores depend on (pytorch-fid).
        p = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.pool == "max" else _avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(p)], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 as used for FID; forward maps prepared [N, 3, 299, 299] in [-1, 1] to
    (pool3 features [N, 2048], bias-free logits [N, 1008])."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = _Conv(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, kernel_size=3)
        self.Mixed_5b = _A(192, pool_features=32)
        self.Mixed_5c = _A(256, pool_features=64)
        self.Mixed_5d = _A(288, pool_features=64)
        self.Mixed_6a = _B(288)
        self.Mixed_6b = _C(768, c7=128)
        self.Mixed_6c = _C(768, c7=160)
        self.Mixed_6d = _C(768, c7=160)
        self.Mixed_6e = _C(768, c7=192)
        self.Mixed_7a = _D(768)
        self.Mixed_7b = _E(1280, pool="avg")
        self.Mixed_7c = _E(2048, pool="max")
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # [N, 64, 147, 147]
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # [N, 64, 73, 73]
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)  # [N, 192, 35, 35]
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        pool = x.mean(dim=(2, 3))  # [N, 2048], = AdaptiveAvgPool2d(1)
        # No bias: the reference IS code takes logits = pool3 · W of the softmax layer
        # (openai/improved-gan inception_score.py; torch-fidelity's "logits_unbiased").
        return pool, pool @ self.fc.weight.T


def prepare_inception_input(x: torch.Tensor) -> torch.Tensor:
    """[N, 1|3, H, W] in [-1, 1] → [N, 3, 299, 299] exactly as pytorch-fid feeds its network."""
    x = (x + 1.0) / 2.0  # pytorch-fid reads images as ToTensor() values in [0, 1]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    return 2.0 * x - 1.0


def load_inception_state(path: str | Path | None) -> dict[str, torch.Tensor]:
    """Read a pt_inception state dict from .pth (weights_only) or .safetensors, with clear errors."""
    if path is None:
        raise PixdiffError(f"the Inception features need a weights file: {_GET}")
    path = Path(path)
    if not path.is_file():
        raise PixdiffError(f"Inception weights {path} not found: {_GET}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated / foreign / pickled-code file all mean "wrong file"
        raise PixdiffError(f"could not read Inception weights from {path} ({type(e).__name__}: {e}); {_GET}") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PixdiffError(f"{path} is not a state dict of tensors; {_GET}")
    return state


def inception_extractor(path: str | Path | None, device: str | torch.device = "cpu", batch_size: int = 50) -> FeatureExtractor:
    """The FID Inception-v3 loaded from pytorch-fid's ``pt_inception-2015-12-05`` weights at ``path``."""
    state = load_inception_state(path)
    path = Path(path)
    net = FIDInceptionV3()
    # num_batches_tracked is training bookkeeping: the TF-ported file need not carry it.
    want = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    have = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing or extra:
        raise PixdiffError(f"{path} does not hold the FID Inception-v3 weights (missing {len(missing)} keys, e.g. "
                         f"{missing[:3]}; unexpected {len(extra)}, e.g. {extra[:3]}); {_GET}")
    bad = [k for k in want if want[k].shape != have[k].shape]
    if bad:
        raise PixdiffError(f"{path}: tensor shapes differ from the FID Inception-v3 (e.g. {bad[0]}: file "
                         f"{tuple(have[bad[0]].shape)}, expected {tuple(want[bad[0]].shape)}); {_GET}")
    net.load_state_dict(have, strict=False)
    sha = sha256_file(path)
    note = "pytorch-fid FID Inception-v3 (pt_inception-2015-12-05), 2048-d pool3, 299×299 bilinear"
    # The prefix identifies pytorch-fid's .pth file; a safetensors copy of it hashes differently.
    if path.suffix != ".safetensors" and not sha.startswith(INCEPTION_SHA256_PREFIX):
        warnings.warn(f"{path} has sha256 {sha[:8]}…, not pytorch-fid's {INCEPTION_SHA256_PREFIX}…: "
                      "scores will not be comparable with published FIDs", stacklevel=2)
        note += f"; NOT the official weights (sha256 prefix is not {INCEPTION_SHA256_PREFIX})"
    return FeatureExtractor("inception", net.to(device).eval(), sha, 2048, 1008, channels=(1, 3), sizes=None,
                            prepare=prepare_inception_input, batch_size=batch_size, notes=note)
