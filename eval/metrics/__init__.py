"""Evaluation metrics: streaming accumulators (torchmetrics shape) and the ImageNet-C/-P formulas.

- `TopKAccuracy`: top-1/top-5 accuracy, `update` / `compute` / `reset` / `merge`, optional per-image correctness.
- `Calibration`: ECE (percent, 15 equal-width bins), NLL and Brier score, same shape (`eval.metrics.calibration`).
- `corruption_error`, `relative_corruption_error`, `mce`, `relative_mce`, `mean_corruption_accuracy`,
  `corruption_summary`, `alexnet_errors` (the published AlexNet table), `ALEXNET_CLEAN_ERROR` (0.4348).
- `PerturbationMetrics` (ImageNet-P: flip probability, top-5 distance, from `eval.metrics.perturbation`).
"""
from eval.metrics.calibration import CALIBRATION_METRICS, Calibration, calibration
from eval.metrics.classification import TopKAccuracy, topk_accuracy
from eval.metrics.corruption import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_NAME,
    SEVERITIES,
    alexnet_errors,
    corruption_error,
    corruption_summary,
    mce,
    mean_ce,
    mean_corruption_accuracy,
    relative_corruption_error,
    relative_mce,
)
from eval.metrics.perturbation import ALL_PERTURBATIONS, EVALUATED_PERTURBATIONS, PerturbationMetrics

__all__ = [
    "TopKAccuracy", "topk_accuracy", "Calibration", "calibration", "CALIBRATION_METRICS", "ALEXNET_CLEAN_ERROR", "ALEXNET_NAME", "SEVERITIES",
    "alexnet_errors", "corruption_error", "relative_corruption_error", "mce", "mean_ce", "relative_mce",
    "mean_corruption_accuracy", "corruption_summary",
    "ALL_PERTURBATIONS", "EVALUATED_PERTURBATIONS", "PerturbationMetrics",
]
