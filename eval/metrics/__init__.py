"""Evaluation metrics: streaming accumulators (torchmetrics shape) and the ImageNet-C/-P formulas.

- `Metric` (`eval.metrics.base`): the one way metrics keep and combine state: each state declared "sum" (integer
  counters, all-reduced) or "cat" (per-item values, gathered back into dataset order); `reset`, `state`, `merge`
  (local) and `sync(positions)` (across torchrun ranks) for every metric below.
- `TopKAccuracy`: top-1/top-5 accuracy, `update` / `compute` / `reset` / `merge` / `sync`, optional per-image
  correctness; `NonFiniteLogits`: which images got NaN/inf logits.
- `Calibration`: ECE (percent, 15 equal-width bins), NLL and Brier score, same shape (`eval.metrics.calibration`).
- `ZeroGradient`: percent of images with an all-zero input gradient (`eval.metrics.gradient`).
- `corruption_error`, `relative_corruption_error`, `mce`, `relative_mce`, `mean_corruption_accuracy`,
  `corruption_summary`, `alexnet_errors` (the published AlexNet table), `ALEXNET_CLEAN_ERROR` (0.4348).
- `PerturbationMetrics` (ImageNet-P: flip probability, top-5 distance, from `eval.metrics.perturbation`).
"""
from eval.metrics.base import REDUCTIONS, Metric
from eval.metrics.calibration import CALIBRATION_METRICS, Calibration, calibration
from eval.metrics.classification import NonFiniteLogits, TopKAccuracy, topk_accuracy
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
from eval.metrics.gradient import ZeroGradient
from eval.metrics.perturbation import PerturbationMetrics

__all__ = [
    "Metric", "REDUCTIONS", "NonFiniteLogits", "ZeroGradient",
    "TopKAccuracy", "topk_accuracy", "Calibration", "calibration", "CALIBRATION_METRICS",
    "ALEXNET_CLEAN_ERROR", "ALEXNET_NAME", "SEVERITIES",
    "alexnet_errors", "corruption_error", "relative_corruption_error", "mce", "mean_ce", "relative_mce",
    "mean_corruption_accuracy", "corruption_summary",
    "PerturbationMetrics",
]
