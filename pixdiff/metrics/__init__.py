"""Evaluation metrics: feature networks, Fréchet distance, KID, precision/recall/density/coverage,
Inception Score, class accuracy, memorisation, cached reference statistics; `evaluate_images` is what
`pixdiff eval` calls.
Formulas, sources and the recorded protocol: docs/metrics.md."""

from .classify import AccuracyResult, ISResult, class_accuracy, inception_score
from .evaluate import METRICS, evaluate_images, read_images, resolve_reference
from .extractors import CLASS_NAMES, FEATURES, get_extractor
from .features import (
    DigitsNet,
    Extracted,
    FeatureExtractor,
    check_images,
    digits_extractor,
    module_extractor,
)
from .frechet import feature_statistics, frechet_distance, frechet_distance_from_features
from .inception import FIDInceptionV3, inception_extractor
from .kid import KIDResult, kernel_distance, mmd2_unbiased
from .memorization import MemorizationResult, memorization
from .photos_features import PhotosNet, photos_extractor
from .prdc import PRDCResult, precision_recall
from .reference import ReferenceStats, compute_reference, load_reference, save_reference

__all__ = [
    "METRICS",
    "evaluate_images",
    "read_images",
    "resolve_reference",
    "DigitsNet",
    "Extracted",
    "FeatureExtractor",
    "check_images",
    "digits_extractor",
    "get_extractor",
    "FEATURES",
    "CLASS_NAMES",
    "PhotosNet",
    "photos_extractor",
    "module_extractor",
    "FIDInceptionV3",
    "inception_extractor",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "KIDResult",
    "kernel_distance",
    "mmd2_unbiased",
    "PRDCResult",
    "precision_recall",
    "ISResult",
    "AccuracyResult",
    "inception_score",
    "class_accuracy",
    "MemorizationResult",
    "memorization",
    "ReferenceStats",
    "compute_reference",
    "load_reference",
    "save_reference",
]
