"""Confidence intervals and paired tests used by the report.

- Accuracies (clean top-1, ImageNet-A top-1, robust accuracy): exact Clopper-Pearson 95% interval from the stored
  value and n (k = round(value / 100 * n) correct images).
- Derived metrics (mCE, relative mCE, mean corruption accuracy): percentile bootstrap over images (resampling the
  same image indices in every cell when the cells share their images), from the per-image correctness bits.
- Change against the baseline on the same images: McNemar's exact test (two-sided binomial test on the discordant
  pairs, p = 0.5).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest
from scipy.stats import t as student_t

LEVEL = 0.95
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test on paired per-image correctness."""

    only_model: int
    only_baseline: int
    p_value: float
    test: str = "McNemar exact (two-sided binomial on discordant pairs)"


def clopper_pearson(correct: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval of a binomial proportion, as fractions."""
    interval = binomtest(int(correct), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(interval.low), float(interval.high)


def accuracy_ci(value_percent: float, n: float | None, level: float = LEVEL) -> tuple[float, float]:
    """Clopper-Pearson interval (percent) of an accuracy stored in percent over n images; NaNs without n."""
    if n is None or not np.isfinite(n) or n <= 0 or not np.isfinite(value_percent):
        return float("nan"), float("nan")
    low, high = clopper_pearson(round(value_percent / 100 * n), int(n), level)
    return 100 * low, 100 * high


def t_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float, float, float]:
    """(mean, sample sd, low, high): Student's t interval of the mean of `values` (k >= 2 values, e.g. seeds)."""
    k = len(values)
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    half = float(student_t.ppf((1 + level) / 2, k - 1)) * sd / math.sqrt(k)
    return mean, sd, mean - half, mean + half


def decimals(n: object) -> int:
    """Decimals an accuracy in percent over n images carries (one image is 100 / n %): 0 for n <= 100, 1 for n up to
    1000, 2 up to 10,000 (3 at most); 1 when n is unknown."""
    if isinstance(n, bool) or not isinstance(n, (int, float, np.integer, np.floating)) or not math.isfinite(n) \
            or n <= 0:
        return 1
    return int(max(0, min(3, math.ceil(math.log10(n)) - 2)))


def mcnemar_exact(model: np.ndarray, baseline: np.ndarray) -> McNemar:
    """McNemar's exact test between two boolean correctness vectors over the same images."""
    if model.shape != baseline.shape:
        raise ValueError(f"paired test needs the same images: {model.shape} vs {baseline.shape}")
    only_model = int(np.sum(model & ~baseline))
    only_baseline = int(np.sum(~model & baseline))
    discordant = only_model + only_baseline
    p_value = 1.0 if discordant == 0 else float(binomtest(only_model, discordant, 0.5).pvalue)
    return McNemar(only_model, only_baseline, p_value)


def bootstrap_ci(cells: list[np.ndarray], statistic: Callable[[np.ndarray], np.ndarray],
                 samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                 level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap CI of `statistic`, a function of per-cell accuracies in percent [B, cells] -> [B]."""
    accuracies = resampled_accuracies(cells, samples, np.random.default_rng(seed))
    values = statistic(accuracies)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def resampled_accuracies(cells: list[np.ndarray], samples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap accuracies in percent [samples, cells]; cells of equal length share their resampled images."""
    sizes = {len(c) for c in cells}
    if len(sizes) != 1:
        return np.stack([100 * rng.binomial(len(c), c.mean(), size=samples) / len(c) for c in cells], axis=1)
    n = sizes.pop()
    matrix = np.stack(cells, axis=1).astype(np.float64)
    chunks = []
    for start in range(0, samples, 100):
        weights = rng.multinomial(n, np.full(n, 1 / n), size=min(100, samples - start))
        chunks.append(100 * (weights @ matrix) / n)
    return np.concatenate(chunks)
