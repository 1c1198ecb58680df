"""The ``photos`` feature network: a small CNN on the embedded RGB photo crops.

`PhotosNet` reads 3×32×32 crops in [-1, 1] (see `pixdiff.datasets.photos`). It is trained by
``scripts/train_photos_features.py`` on the photos *train* split only, on a finer task than the
dataset's two labels, so that its features see more than "which photo": 16 classes = source photo
(2) × vertical band of the crop's centre in the photo (4 rows of equal height) × crop scale (side
64–95 px or 96–128 px, i.e. how much of the scene a 32-px crop shows). Both factors are defined the
same way on the train crops (left 512 columns) and the test crops (right 128 columns), so the fine
task has a held-out accuracy too. Its weights ship in ``pixdiff/assets/photos_features.safetensors``.

Features are the 64-d penultimate layer *before* its ReLU, as for `DigitsNet`. The extractor's
classes are the dataset's own labels, the source photo (0 = china, 1 = flower): their logits are
the log-sum-exp of the fine logits of each photo, so p(photo | x) = Σ p(fine class | x) over that
photo's 8 fine classes. 16×16 and 64×64 inputs are resized to 32×32 first (bilinear, antialiased
when shrinking); 16×16 inputs, upsampled, are blurrier than the crops it learnt from (see
docs/metrics.md for the accuracies at each size).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .features import FeatureExtractor, load_feature_net, seeded_default_init, sha256_file

__all__ = ["PhotosNet", "photos_extractor", "PHOTOS_WEIGHTS"]

PHOTOS_WEIGHTS = "photos_features.safetensors"  # inside the pixdiff/assets package folder


class PhotosNet(nn.Module):
    """Conv stages at 32, 16 and 8 px (24 → 32-32 → 64 channels, max-pooled to 4×4) + a 64-d
    penultimate layer + 16 fine logits (photo × row band × scale). ~102 k parameters.

    ``forward`` returns (features, logits over the 2 source photos); ``fine`` returns
    (features, the 16 fine logits), the head it is trained with."""

    feature_dim = 64
    num_classes = 2  # the dataset's labels: the source photo
    positions = 8  # fine classes per photo: 4 row bands × 2 scale bins
    num_fine = num_classes * positions

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 3, padding=1)
        self.conv2 = nn.Conv2d(24, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.conv4 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 4 * 4, self.feature_dim)
        self.fc2 = nn.Linear(self.feature_dim, self.num_fine)
        self.dropout = nn.Dropout(0.2)

    def init_weights(self, generator: torch.Generator) -> None:
        seeded_default_init(self, generator)

    def fine(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)  # [N, 24, 16, 16]
        h = F.max_pool2d(F.relu(self.conv3(F.relu(self.conv2(h)))), 2)  # [N, 32, 8, 8]
        h = F.max_pool2d(F.relu(self.conv4(h)), 2)  # [N, 64, 4, 4]
        feats = self.fc1(h.flatten(1))  # [N, 64], pre-activation
        return feats, self.fc2(self.dropout(F.relu(feats)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, fine = self.fine(x)
        return feats, fine.unflatten(1, (self.num_classes, self.positions)).logsumexp(2)


def _to_photos_input(x: torch.Tensor) -> torch.Tensor:
    s = x.shape[-1]
    if s == 32:
        return x
    return F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=s > 32)


def photos_extractor(weights: str | Path | None = None, device: str | torch.device = "cpu") -> FeatureExtractor:
    """The shipped photos feature network (or the PhotosNet weights at ``weights``)."""
    net = PhotosNet()
    path = load_feature_net(net, weights, PHOTOS_WEIGHTS, "photos feature", "scripts/train_photos_features.py")
    return FeatureExtractor(
        "photos", net.to(device).eval(), sha256_file(path), PhotosNet.feature_dim, PhotosNet.num_classes,
        channels=(3,), sizes=(16, 32, 64), prepare=_to_photos_input,
        notes="pixdiff PhotosNet, 64-d pre-ReLU penultimate features, 2-class (source photo) softmax "
              "summed from 16 photo×position classes; inputs resized to 32×32")
