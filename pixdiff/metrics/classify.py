"""Metrics from a classifier's probabilities p(y | x): Inception Score and class accuracy.

Inception Score (Salimans et al. 2016, "Improved Techniques for Training GANs", §4):

    IS = exp( E_x KL( p(y | x) ‖ p(y) ) ),   p(y) = E_x p(y | x)

computed on ``splits`` equal chunks and reported as mean ± std over them, as the reference code
(openai/improved-gan, inception_score.py) does. It is 1 when every prediction is the same
distribution and C when predictions are confident and spread evenly over C classes.

Class accuracy of class-conditional samples: does the feature network's classifier see the class
that the sampler was asked for? (the "classification accuracy score" direction of Ravuri & Vinyals
2019 turned around: a fixed real-data classifier judges the samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pixdiff.errors import PixdiffError

__all__ = ["ISResult", "AccuracyResult", "inception_score", "class_accuracy"]


@dataclass
class ISResult:
    mean: float
    std: float
    splits: int


@dataclass
class AccuracyResult:
    accuracy: float
    per_class: dict[int, float]  # class → accuracy over the samples asked to show that class
    mean_confidence: float  # mean p(asked class | x): softer than accuracy, same direction


def _check_probs(probs: torch.Tensor) -> torch.Tensor:
    if probs.dim() != 2:
        raise PixdiffError(f"class probabilities must be [N, C] (got shape {tuple(probs.shape)})")
    probs = probs.double()
    if (probs < 0).any() or not torch.allclose(probs.sum(1), torch.ones(probs.shape[0], dtype=torch.float64), atol=1e-4):
        raise PixdiffError("class probabilities must be non-negative and sum to 1 per row (pass softmax outputs, not logits)")
    return probs


def inception_score(probs: torch.Tensor, splits: int = 10) -> ISResult:
    """IS of class probabilities [N, C] (Salimans et al. 2016, §4), mean ± std over ``splits``."""
    probs = _check_probs(probs)
    if not 1 <= splits <= probs.shape[0]:
        raise PixdiffError(f"splits must be in 1 .. N (got {splits} for N = {probs.shape[0]})")
    scores = []
    for part in torch.tensor_split(probs, splits):
        py = part.mean(0, keepdim=True)  # [1, C], the marginal p(y) of this split
        kl = (torch.xlogy(part, part) - torch.xlogy(part, py)).sum(1)  # xlogy: 0·log 0 = 0
        scores.append(kl.mean().exp())
    s = torch.stack(scores)
    return ISResult(s.mean().item(), s.std().item() if splits > 1 else 0.0, splits)


def class_accuracy(probs: torch.Tensor, labels: torch.Tensor) -> AccuracyResult:
    """Fraction of samples whose most probable class is the class they were sampled for."""
    probs = _check_probs(probs)
    labels = torch.as_tensor(labels).long().reshape(-1)
    if labels.shape[0] != probs.shape[0]:
        raise PixdiffError(f"got {labels.shape[0]} labels for {probs.shape[0]} samples")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise PixdiffError(f"labels must lie in 0 .. {probs.shape[1] - 1} (the classifier's classes); "
                         f"got {labels.min().item()} .. {labels.max().item()}")
    hit = (probs.argmax(1) == labels).double()
    per_class = {int(c): hit[labels == c].mean().item() for c in labels.unique()}
    conf = probs.gather(1, labels[:, None]).mean().item()
    return AccuracyResult(hit.mean().item(), per_class, conf)
