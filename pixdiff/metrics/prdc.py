"""Precision / recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for
Assessing Generative Models", eq. 1–3) and density / coverage (Naeem et al. 2020, "Reliable
Fidelity and Diversity Metrics for Generative Models", eq. 3–4), from k-NN manifolds in
feature space.

Each real feature Xᵢ owns a ball B(Xᵢ, NND_k(Xᵢ)) whose radius is the distance to its k-th nearest
*other* real feature; likewise each fake Yⱼ for recall. With 1[·] the indicator:

    precision = 1/M Σⱼ 1[Yⱼ ∈ ∪ᵢ B(Xᵢ, NND_k(Xᵢ))]      recall   = 1/N Σᵢ 1[Xᵢ ∈ ∪ⱼ B(Yⱼ, NND_k(Yⱼ))]
    density   = 1/(kM) Σⱼ Σᵢ 1[Yⱼ ∈ B(Xᵢ, NND_k(Xᵢ))]     coverage = 1/N Σᵢ 1[∃ j: Yⱼ ∈ B(Xᵢ, NND_k(Xᵢ))]

"∈" is ‖·‖ ≤ radius as in Kynkäänniemi et al. eq. 1 (clovaai/prdc uses <; they differ only on
ties). Distances are Euclidean, in float64, in row chunks so memory stays O(chunk · N).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pixdiff.errors import PixdiffError

__all__ = ["PRDCResult", "precision_recall", "knn_radii"]


@dataclass
class PRDCResult:
    precision: float
    recall: float
    density: float
    coverage: float
    k: int


def knn_radii(x: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance from each row of x [N, D] to its k-th nearest other row → [N]."""
    out = []
    for i in range(0, x.shape[0], chunk):
        d = torch.cdist(x[i:i + chunk], x)  # [b, N]; the self-distance 0 is the 1st smallest
        out.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, chunk: int = 1024) -> PRDCResult:
    """Precision, recall, density and coverage of fake features [M, D] against real [N, D]."""
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise PixdiffError(f"precision/recall needs two feature sets [N, D] of equal D (got {tuple(real.shape)}, {tuple(fake.shape)})")
    if k < 1 or k >= min(real.shape[0], fake.shape[0]):
        raise PixdiffError(f"k must be in 1 .. min(N, M) − 1 (got k = {k}, N = {real.shape[0]}, M = {fake.shape[0]})")
    real, fake = real.double(), fake.double()
    r_real, r_fake = knn_radii(real, k, chunk), knn_radii(fake, k, chunk)
    in_real = torch.zeros(fake.shape[0], dtype=torch.bool)
    in_count = torch.zeros(fake.shape[0], dtype=torch.float64)
    covered = torch.zeros(real.shape[0], dtype=torch.bool)
    for j in range(0, fake.shape[0], chunk):
        inside = torch.cdist(fake[j:j + chunk], real) <= r_real[None]  # [b, N]: fake j in real ball i
        in_real[j:j + chunk] = inside.any(dim=1)
        in_count[j:j + chunk] = inside.sum(dim=1)
        covered |= inside.any(dim=0)
    in_fake = torch.cat([(torch.cdist(real[i:i + chunk], fake) <= r_fake[None]).any(dim=1)
                         for i in range(0, real.shape[0], chunk)])
    return PRDCResult(
        precision=in_real.double().mean().item(),
        recall=in_fake.double().mean().item(),
        density=(in_count.sum() / (k * fake.shape[0])).item(),
        coverage=covered.double().mean().item(),
        k=k,
    )
