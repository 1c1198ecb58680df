"""Fréchet distance between Gaussians fitted to two feature sets (FID when the features are
Inception pool3; Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule", eq. 6):

    d² = ‖μ₁ − μ₂‖² + tr(Σ₁) + tr(Σ₂) − 2 tr((Σ₁ Σ₂)^{1/2})

The trace of the matrix square root is taken in its symmetric form: Σ₁Σ₂ is similar to the
symmetric PSD matrix M = Σ₁^{1/2} Σ₂ Σ₁^{1/2}, so tr((Σ₁Σ₂)^{1/2}) = Σᵢ √λᵢ(M). Two symmetric
eigendecompositions in float64 are stabler than scipy.linalg.sqrtm of the non-symmetric product
(which pytorch-fid must rescue with an ε·I offset and by dropping imaginary parts), and agree
with it to ~1e-9 on well-conditioned covariances (tests/test_metrics.py).
"""

from __future__ import annotations

import numpy as np
import torch

from pixdiff.errors import PixdiffError

__all__ = ["feature_statistics", "frechet_distance", "frechet_distance_from_features", "check_fd_samples"]


def _np64(x) -> np.ndarray:
    return (x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64))


def check_fd_samples(n: int, dim: int, who: str = "Fréchet distance") -> None:
    """A covariance of N samples has rank ≤ N − 1: below D + 1 samples it is singular in every
    direction the samples do not span, and the score mostly measures N, not the images."""
    if n < dim + 1:
        raise PixdiffError(
            f"{who} needs more samples than the feature dimension: got N = {n} for D = {dim}-d features "
            f"(need N ≥ {dim + 1} for a full-rank covariance; use N ≥ {10 * dim} for a stable score, "
            f"and the same N whenever scores are compared)")


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (ddof = 1, as pytorch-fid's np.cov) in float64."""
    f = _np64(features)
    if f.ndim != 2:
        raise PixdiffError(f"features must be [N, D] (got shape {f.shape})")
    check_fd_samples(f.shape[0], f.shape[1])
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """d² between N(mu1, sigma1) and N(mu2, sigma2), float64 (Heusel et al. 2017, eq. 6)."""
    mu1, mu2, s1, s2 = _np64(mu1), _np64(mu2), _np64(sigma1), _np64(sigma2)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0],) * 2:
        raise PixdiffError(f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape} "
                         "(were both computed with the same feature network?)")
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1  # symmetric PSD, same eigenvalues as s1 @ s2
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def frechet_distance_from_features(a, b) -> float:
    """Fréchet distance between the Gaussian fits of two feature sets [N, D], [M, D]."""
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))
