"""ImageNet-P stability metrics: flip probability (FP), top-5 distance (T5D), FR / mFR, mT5D, streamed per sequence.

Definitions (Hendrycks & Dietterich 2019 and their reference evaluation code):

* Frame pairs: for noise perturbations (name contains "noise") every frame is compared with frame 0; for the others
  each frame with the previous one. Difficulty d (non-noise only) splits the sequence into d interleaved
  sub-sequences (stride d) and compares consecutive frames within each.
* FP of a sequence: the fraction of its pairs whose top-1 prediction differs; averaged over sequences.
* T5D of a pair: ranks are ordinal ranks of -logits (1 = best, ties broken by class index). With sigma_i the rank in
  the later frame of the class ranked i-th in the earlier frame, d = sum_{i=1..5} |(i-1) - min(sigma_i - 1, 5)|.
  Averaged over the pairs of a sequence, then over sequences.
* FR_p = FP_p / FP_p(baseline); mFR = mean FR over the 10 evaluated perturbations; T5D likewise (mT5D).
  Both are reported in percent (x 100), like the published ResNet-50 mFR 58.0 and mT5D 78.4.

`PerturbationMetrics` is an `eval.metrics.base.Metric`: per-sequence FP and T5D are "cat" states (the bootstrap's
units, summed in sequence order by `compute`), the sequence and frame counts "sum" states, so `sync(positions)`
under torchrun gives every rank the one process's figures, bit for bit.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from eval.corruptions.catalog import EVALUATED_PERTURBATIONS
from eval.metrics.base import Metric

TOP_K = 5


def is_noise_perturbation(perturbation: str) -> bool:
    """True where frames are compared with frame 0 (the perturbation's name contains "noise")."""
    return "noise" in perturbation


def frame_pairs(num_frames: int, noise: bool, difficulty: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (earlier, later) of the compared frame pairs of one sequence, in the reference code's order."""
    if num_frames < 2:
        raise ValueError(f"a sequence needs at least 2 frames, got {num_frames}")
    if difficulty < 1:
        raise ValueError(f"difficulty must be >= 1, got {difficulty}")
    if noise:
        later = list(range(1, num_frames))
        return torch.zeros(len(later), dtype=torch.long), torch.tensor(later, dtype=torch.long)
    earlier, later = [], []
    for start in range(difficulty):
        sub = list(range(start, num_frames, difficulty))
        earlier += sub[:-1]
        later += sub[1:]
    if not earlier:
        raise ValueError(f"{num_frames} frames at difficulty {difficulty} give no frame pairs")
    return torch.tensor(earlier, dtype=torch.long), torch.tensor(later, dtype=torch.long)


def ordinal_ranks(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, ranks) over the last dim: order[..., r] = class at 0-based rank r; ranks[..., c] = rank of class c.

    Ordinal ranking of -logits: a higher logit ranks first, equal logits rank by class index.
    """
    if not torch.isfinite(logits).all():
        raise ValueError("logits contain NaN or infinite values; the model's outputs cannot be ranked")
    order = torch.argsort(-logits, dim=-1, stable=True)
    ranks = torch.empty_like(order)
    positions = torch.arange(order.shape[-1], device=order.device).expand_as(order)
    ranks.scatter_(-1, order, positions)
    return order, ranks


def sequence_flip_probability(logits: torch.Tensor, noise: bool, difficulty: int = 1) -> torch.Tensor:
    """Per-sequence flip probability of logits [B, T, K] -> float64 [B]."""
    order, _ = ordinal_ranks(logits)
    earlier, later = frame_pairs(logits.shape[1], noise, difficulty)
    top1 = order[..., 0]
    flips = top1[:, earlier.to(top1.device)] != top1[:, later.to(top1.device)]
    return flips.double().mean(dim=1)


def sequence_top5_distance(logits: torch.Tensor, noise: bool, difficulty: int = 1) -> torch.Tensor:
    """Per-sequence mean top-5 distance of logits [B, T, K] -> float64 [B]."""
    order, ranks = ordinal_ranks(logits)
    return _top5_distance(order, ranks, noise, difficulty)


def _top5_distance(order: torch.Tensor, ranks: torch.Tensor, noise: bool, difficulty: int) -> torch.Tensor:
    earlier, later = frame_pairs(order.shape[1], noise, difficulty)
    earlier, later = earlier.to(order.device), later.to(order.device)
    k = min(TOP_K, order.shape[-1])
    top_earlier = order[:, earlier, :k]  # [B, P, k]: the classes ranked 1..k in the earlier frame
    sigma0 = ranks[:, later, :].gather(-1, top_earlier)  # [B, P, k]: their 0-based ranks in the later frame
    expected = torch.arange(k, device=order.device)
    distance = (expected - sigma0.clamp(max=TOP_K)).abs().sum(-1)
    return distance.double().mean(dim=1)


class PerturbationMetrics(Metric):
    """Streaming FP, T5D and frame top-1 of one perturbation: `update` per batch of sequences, `compute`, `reset`.

    State: per-sequence `fp` and `t5d` (float64 [n], "cat"; 16 bytes per sequence) and the counters `sequences`,
    `correct`, `frames` ("sum"). Two accumulators over consecutive parts of the stream `merge` into the one of the
    whole stream.
    """

    sequences: torch.Tensor  # "sum": sequences seen
    correct: torch.Tensor  # "sum": labelled frames whose top-1 is the label
    frames: torch.Tensor  # "sum": labelled frames

    def __init__(self, perturbation: str, difficulty: int = 1) -> None:
        """Accumulate the perturbation named `perturbation` (its name picks the pairing rule) at `difficulty`."""
        super().__init__()
        self.perturbation = perturbation
        self.noise = is_noise_perturbation(perturbation)
        self.difficulty = difficulty
        for name in ("fp", "t5d"):
            self.add_state(name, torch.zeros(0, dtype=torch.float64), "cat")
        for name in ("sequences", "correct", "frames"):
            self.add_state(name, torch.zeros((), dtype=torch.long), "sum")

    def config(self) -> dict[str, Any]:
        """The perturbation and difficulty (they decide the frame pairs)."""
        return {"perturbation": self.perturbation, "difficulty": self.difficulty}

    def update(self, logits: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Add sequences: logits [B, T, K] (frames in order), labels [B] for the frame top-1 (optional)."""
        if logits.ndim != 3:
            raise ValueError(f"expected logits [sequences, frames, classes], got shape {tuple(logits.shape)}")
        logits = logits.detach().float().cpu()
        order, ranks = ordinal_ranks(logits)
        earlier, later = frame_pairs(logits.shape[1], self.noise, self.difficulty)
        top1 = order[..., 0]
        if labels is not None:
            labels = labels.detach().cpu().long().view(-1, 1)
            if labels.shape[0] != logits.shape[0]:
                raise ValueError(f"{labels.shape[0]} labels for {logits.shape[0]} sequences")
        self.append("fp", (top1[:, earlier] != top1[:, later]).double().mean(dim=1))
        self.append("t5d", _top5_distance(order, ranks, self.noise, self.difficulty))
        self.sequences += logits.shape[0]
        if labels is not None:
            self.correct += (top1 == labels).sum()
            self.frames += top1.numel()

    def per_sequence(self) -> dict[str, list[float]]:
        """Per-sequence fp and t5d in the order seen (after `sync`: sequence order); the bootstrap's units."""
        return {k: self.values(k).tolist() for k in ("fp", "t5d")}

    def compute(self) -> dict[str, float]:
        """{"fp": fraction, "t5d": mean distance, "top1": percent of frames (NaN without labels), "n": sequences}."""
        n = int(self.sequences)
        if n == 0:
            raise ValueError(f"no sequences accumulated for {self.perturbation}")
        frames = int(self.frames)
        return {"fp": float(self.values("fp").sum()) / n, "t5d": float(self.values("t5d").sum()) / n,
                "top1": 100.0 * int(self.correct) / frames if frames else math.nan, "n": n}


def bootstrap_relative_mean(own: Mapping[str, Sequence[float]], base: Mapping[str, Sequence[float]],
                            resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of mean_p 100 * mean(own_p) / mean(base_p) (mFR from per-sequence FP, mT5D
    from per-sequence T5D): per perturbation p the sequences are resampled with replacement, the same draw for the
    model and the baseline (paired: same sequences), `resamples` times from a generator seeded with `seed`
    (Efron & Tibshirani 1993, ch. 13). Resamples where a baseline mean is 0 are dropped; (nan, nan) when none
    is left. Raises ValueError when a perturbation's lists differ in length or are empty."""
    gen = torch.Generator().manual_seed(int(seed))
    total = torch.zeros(resamples, dtype=torch.float64)
    for p in own:
        a, b = torch.tensor(own[p], dtype=torch.float64), torch.tensor(base[p], dtype=torch.float64)
        if len(a) != len(b) or len(a) == 0:
            raise ValueError(f"{p}: {len(a)} model and {len(b)} baseline sequences; the bootstrap pairs them")
        idx = torch.randint(len(a), (resamples, len(a)), generator=gen)
        total += 100.0 * a[idx].mean(dim=1) / b[idx].mean(dim=1)
    values = total / len(own)
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        return math.nan, math.nan
    q = torch.tensor([(1 - level) / 2, 1 - (1 - level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(values, q).tolist()
    return lo, hi


def relative_to_baseline(value: float, baseline: float) -> float:
    """100 * value / baseline (FR from FP, relative T5D from T5D); NaN where the baseline is 0."""
    return 100.0 * value / baseline if baseline > 0 else math.nan


def mean_over_perturbations(values: Mapping[str, float],
                            perturbations: Sequence[str] = EVALUATED_PERTURBATIONS) -> float:
    """Mean of per-perturbation values (e.g. FR -> mFR) over `perturbations`; every one must be present."""
    missing = [p for p in perturbations if p not in values]
    if missing:
        raise KeyError(f"missing perturbations for the mean: {', '.join(missing)}")
    return sum(values[p] for p in perturbations) / len(perturbations)

