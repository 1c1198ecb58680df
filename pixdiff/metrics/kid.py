"""Kernel (Inception) Distance: the unbiased MMD² with the cubic polynomial kernel, averaged over
random subsets (Bińkowski et al. 2018, "Demystifying MMD GANs", §4 and App. D):

    k(x, y) = (xᵀy / d + 1)³
    MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(xᵢ, xⱼ) + 1/(m(m−1)) Σ_{i≠j} k(yᵢ, yⱼ) − 2/m² Σ_{i,j} k(xᵢ, yⱼ)

The estimator is unbiased (its expectation is 0 when both sets come from one distribution, so it
can be negative), unlike FID, whose bias depends on N. Reported as mean ± std over subsets, as
their reference code and clean-fid do (100 subsets of 1000 by default, fewer when N is smaller).
Subsets are drawn without replacement within a subset, from an explicit generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pixdiff.errors import PixdiffError

__all__ = ["KIDResult", "kernel_distance", "mmd2_unbiased"]


@dataclass
class KIDResult:
    mean: float
    std: float
    num_subsets: int
    subset_size: int


def _kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """MMD²_u of two equal-size feature sets [m, d] (Bińkowski et al. 2018, eq. 3 with the poly kernel)."""
    m = x.shape[0]
    kxx, kyy, kxy = _kernel(x, x), _kernel(y, y), _kernel(x, y)
    off = m * (m - 1)
    return float((kxx.sum() - kxx.diagonal().sum()) / off + (kyy.sum() - kyy.diagonal().sum()) / off
                 - 2.0 * kxy.sum() / m**2)


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator,
                    num_subsets: int = 100, subset_size: int = 1000) -> KIDResult:
    """KID between features [N, D] and [M, D]: mean and std of MMD²_u over random subsets of
    size min(subset_size, N, M)."""
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise PixdiffError(f"KID needs two feature sets [N, D] of equal D (got {tuple(real.shape)}, {tuple(fake.shape)})")
    m = min(subset_size, real.shape[0], fake.shape[0])
    if m < 2:
        raise PixdiffError(f"KID needs at least 2 samples per set (got {real.shape[0]} and {fake.shape[0]})")
    if num_subsets < 1:
        raise PixdiffError(f"num_subsets must be ≥ 1 (got {num_subsets})")
    real, fake = real.double(), fake.double()
    vals = torch.tensor([
        mmd2_unbiased(real[torch.randperm(real.shape[0], generator=generator)[:m]],
                      fake[torch.randperm(fake.shape[0], generator=generator)[:m]])
        for _ in range(num_subsets)
    ], dtype=torch.float64)
    std = vals.std().item() if num_subsets > 1 else 0.0
    return KIDResult(vals.mean().item(), std, num_subsets, m)
