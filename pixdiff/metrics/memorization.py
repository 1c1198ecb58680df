"""Memorisation: are samples copies of training images?

Distances are Euclidean between flattened images in [-1, 1] (pixel space, where a copy is a copy;
features may be passed instead). For each sample g let d₁(g), d₂(g) be the distances to its
nearest and second-nearest training image, and for each training image x let d_tr(x) be the
distance to its nearest *other* training image. Two statistics:

1. nearest-neighbour ratio r(g) = d₁(g) / d₂(g) ∈ [0, 1]. A sample is *memorised* when
   r(g) < 1/3, i.e. it is three times closer to one training image than to any other
   (Yoon et al. 2023, "Diffusion Probabilistic Models Generalize when They Fail to Memorize";
   Gu et al. 2023, "On Memorization in Diffusion Models", §3). We report the fraction below the
   threshold and quantiles of r. r = 0 when d₁ = 0 (an exact copy, even of a duplicated image).
2. closer-than-train fraction: the share of samples with d₁(g) < median_x d_tr(x), i.e. closer to
   some training image than a typical training image is to its own nearest neighbour. Fresh
   draws from the data distribution give ≈ 0.5 (a held-out image is placed like one more training
   image, so it falls below the median about half the time; 0.45 on the digits test split);
   copies give 1; samples off the data manifold give ≈ 0.

A fresh real image has r near 1 and d₁ near the training set's own spacing; a copy has r = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pixdiff.errors import PixdiffError

__all__ = ["MemorizationResult", "memorization", "MEMORIZED_RATIO"]

MEMORIZED_RATIO = 1.0 / 3.0  # Yoon et al. 2023 / Gu et al. 2023


@dataclass
class MemorizationResult:
    memorized_fraction: float  # share of samples with r < threshold
    closer_than_train_fraction: float  # share with d₁ < median training NN distance
    ratio_quantiles: dict[str, float]  # r at q = 0, 0.05, 0.5, 0.95
    train_nn_median: float
    threshold: float
    ratio: torch.Tensor  # [M] r(g) per sample
    nearest: torch.Tensor  # [M] d₁(g)
    nearest_index: torch.Tensor  # [M] index of the nearest training image

    def summary(self) -> dict:
        return {"memorized_fraction": self.memorized_fraction,
                "closer_than_train_fraction": self.closer_than_train_fraction,
                "ratio_quantiles": self.ratio_quantiles, "train_nn_median": self.train_nn_median,
                "threshold": self.threshold}


def _two_nearest(q: torch.Tensor, ref: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    vals, idx = [], []
    for i in range(0, q.shape[0], chunk):
        v, j = torch.cdist(q[i:i + chunk], ref).topk(2, dim=1, largest=False)  # [b, 2], ascending
        vals.append(v)
        idx.append(j)
    return torch.cat(vals), torch.cat(idx)


def memorization(samples: torch.Tensor, train: torch.Tensor, threshold: float = MEMORIZED_RATIO,
                 chunk: int = 512) -> MemorizationResult:
    """Nearest-training-image statistics of samples [M, ...] against training images [N, ...]."""
    if samples.shape[1:] != train.shape[1:]:
        raise PixdiffError(f"samples {tuple(samples.shape[1:])} and training images {tuple(train.shape[1:])} differ "
                         "in shape; memorisation compares like with like (same resolution and channels)")
    if train.shape[0] < 3:
        raise PixdiffError(f"memorisation needs at least 3 training images (got {train.shape[0]})")
    s, t = samples.reshape(samples.shape[0], -1).double(), train.reshape(train.shape[0], -1).double()
    d, idx = _two_nearest(s, t, chunk)
    ratio = torch.where(d[:, 0] == 0, torch.zeros_like(d[:, 0]), d[:, 0] / d[:, 1].clamp_min(1e-300))
    # each training image's nearest other one: the 2nd-nearest when querying the set with itself
    train_nn = _two_nearest(t, t, chunk)[0][:, 1]
    med = train_nn.median().item()
    qs = torch.quantile(ratio, torch.tensor([0.0, 0.05, 0.5, 0.95], dtype=torch.float64))
    return MemorizationResult(
        memorized_fraction=(ratio < threshold).double().mean().item(),
        closer_than_train_fraction=(d[:, 0] < med).double().mean().item(),
        ratio_quantiles={k: v.item() for k, v in zip(("min", "q05", "median", "q95"), qs)},
        train_nn_median=med,
        threshold=threshold,
        ratio=ratio,
        nearest=d[:, 0],
        nearest_index=idx[:, 0],
    )
