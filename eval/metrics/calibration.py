"""Streaming calibration metrics, an `eval.metrics.base.Metric` (`update`, `compute`, `reset`, `merge`, `sync`): ECE,
NLL, Brier.

Definitions (softmax probabilities p of the logits the accuracy is scored on, e.g. after ImageNet-A's 200-class
mask; confidence = max_k p_k, prediction = argmax_k p_k):

- `ece`: expected calibration error in percent, 15 equal-width bins of the top-1 confidence over [0, 1]
  (Guo et al. 2017, "On Calibration of Modern Neural Networks", eq. 3; Naeini et al. 2015):
  ECE = sum_b |B_b| / n * |acc(B_b) - conf(B_b)| = sum_b |sum_{i in B_b} (correct_i - conf_i)| / n.
  Bin b holds confidences in [b/15, (b+1)/15), a confidence of exactly 1 the last bin: torchmetrics'
  `MulticlassCalibrationError` convention (its `torch.bucketize(..., right=True) - 1`), pinned against it in the tests.
- `nll`: mean negative log-likelihood of the true class, -log p_y (nats), from `log_softmax` (no log of 0).
- `brier`: mean over images of sum_k (p_k - 1[k = y])^2 (Brier 1950, multi-class form; 0 best, 2 worst).

State is five float64 values per image ("cat" states `bin`, `confidence`, `correct`, `nll`, `brier`), summed in
image order by `compute`, so shards gathered back into dataset order by `sync(positions)` under torchrun give
bit-identical results to one process; memory is 40 bytes per image.
"""
from __future__ import annotations

from typing import Any

import torch

from eval.metrics.base import Metric

N_BINS = 15
CALIBRATION_METRICS = ("ece", "nll", "brier")


class Calibration(Metric):
    """ECE (percent, 15 equal-width bins), NLL and Brier score accumulated batch by batch without host syncs."""

    KEYS = ("bin", "confidence", "correct", "nll", "brier")

    def __init__(self, n_bins: int = N_BINS) -> None:
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        super().__init__()
        self.n_bins = int(n_bins)
        for key in self.KEYS:
            self.add_state(key, torch.zeros(0, dtype=torch.float64), "cat")

    def config(self) -> dict[str, Any]:
        """The number of bins."""
        return {"n_bins": self.n_bins}

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: logits [B, K] (any float dtype; computed in float32), integer targets [B] in 0..K-1."""
        if logits.ndim != 2 or target.shape != logits.shape[:1]:
            raise ValueError(f"expected logits [B, K] and targets [B], got {tuple(logits.shape)} and "
                             f"{tuple(target.shape)}")
        target = target.to(logits.device).long()
        logp = torch.log_softmax(logits.float(), dim=1)
        p = logp.exp()
        conf, pred = p.max(dim=1)
        boundaries = torch.linspace(0, 1, self.n_bins + 1, device=logits.device, dtype=conf.dtype)
        bins = (torch.bucketize(conf, boundaries, right=True) - 1).clamp_(0, self.n_bins - 1)
        onehot = torch.nn.functional.one_hot(target, logits.shape[1]).to(p.dtype)
        values = {"bin": bins.double(), "confidence": conf.double(), "correct": pred.eq(target).double(),
                  "nll": -logp.gather(1, target.view(-1, 1)).squeeze(1).double(),
                  "brier": (p - onehot).pow(2).sum(dim=1).double()}
        for key, value in values.items():
            self.append(key, value)

    def per_image(self) -> dict[str, torch.Tensor]:
        """The per-image values {bin, confidence, correct, nll, brier} (float64 [n] each) in the order seen (after
        `sync`: dataset order)."""
        return {k: self.values(k) for k in self.KEYS}

    def compute(self) -> dict[str, float]:
        """{'ece': percent, 'nll': nats, 'brier': 0..2}; raises if nothing was seen."""
        v = {k: t.cpu() for k, t in self.per_image().items()}  # on the CPU: CUDA's index_add_ adds in any order
        n = v["nll"].numel()
        if n == 0:
            raise ValueError("calibration of an empty set: no image was evaluated")
        gap = torch.zeros(self.n_bins, dtype=torch.float64)
        gap.index_add_(0, v["bin"].long(), v["correct"] - v["confidence"])
        return {"ece": 100.0 * float(gap.abs().sum()) / n, "nll": float(v["nll"].sum()) / n,
                "brier": float(v["brier"].sum()) / n}

    @property
    def n(self) -> int:
        """Number of images seen."""
        return int(self.values("nll").numel())


def calibration(logits: torch.Tensor, target: torch.Tensor, n_bins: int = N_BINS) -> dict[str, float]:
    """ECE (percent), NLL and Brier of one batch of logits [N, K] against targets [N]."""
    acc = Calibration(n_bins)
    acc.update(logits, target)
    return acc.compute()


__all__ = ["Calibration", "calibration", "CALIBRATION_METRICS", "N_BINS"]
