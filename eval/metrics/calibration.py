"""Streaming calibration metrics in the torchmetrics shape (`update`, `compute`, `reset`, `merge`): ECE, NLL, Brier.

Definitions (softmax probabilities p of the logits the accuracy is scored on, e.g. after ImageNet-A's 200-class
mask; confidence = max_k p_k, prediction = argmax_k p_k):

- `ece`: expected calibration error in percent, 15 equal-width bins of the top-1 confidence over [0, 1]
  (Guo et al. 2017, "On Calibration of Modern Neural Networks", eq. 3; Naeini et al. 2015):
  ECE = sum_b |B_b| / n * |acc(B_b) - conf(B_b)| = sum_b |sum_{i in B_b} (correct_i - conf_i)| / n.
  Bin b holds confidences in [b/15, (b+1)/15), a confidence of exactly 1 the last bin: torchmetrics'
  `MulticlassCalibrationError` convention (its `torch.bucketize(..., right=True) - 1`), pinned against it in the tests.
- `nll`: mean negative log-likelihood of the true class, -log p_y (nats), from `log_softmax` (no log of 0).
- `brier`: mean over images of sum_k (p_k - 1[k = y])^2 (Brier 1950, multi-class form; 0 best, 2 worst).

State is float64 sums per bin plus the image count, so shards can be summed (`merge`, or an all-reduce of
`state()`) and give the single-process result up to float64 rounding.
"""
from __future__ import annotations

import torch

N_BINS = 15
CALIBRATION_METRICS = ("ece", "nll", "brier")


class Calibration:
    """ECE (percent, 15 equal-width bins), NLL and Brier score accumulated batch by batch without host syncs."""

    def __init__(self, n_bins: int = N_BINS) -> None:
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.n_bins = int(n_bins)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.bin_count = torch.zeros(self.n_bins, dtype=torch.float64)
        self.bin_confidence = torch.zeros(self.n_bins, dtype=torch.float64)  # sum of top-1 confidences per bin
        self.bin_correct = torch.zeros(self.n_bins, dtype=torch.float64)  # top-1 hits per bin
        self.nll_sum = torch.zeros((), dtype=torch.float64)
        self.brier_sum = torch.zeros((), dtype=torch.float64)
        self.total = torch.zeros((), dtype=torch.float64)

    def _to(self, device: torch.device) -> None:
        if self.total.device != device:  # state follows the data: no host sync per batch on a GPU
            for name, value in self.state().items():
                setattr(self, name, value.to(device))

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: logits [B, K] (any float dtype; computed in float32), integer targets [B] in 0..K-1."""
        if logits.ndim != 2 or target.shape != logits.shape[:1]:
            raise ValueError(f"expected logits [B, K] and targets [B], got {tuple(logits.shape)} and "
                             f"{tuple(target.shape)}")
        self._to(logits.device)
        target = target.to(logits.device).long()
        logp = torch.log_softmax(logits.float(), dim=1)
        p = logp.exp()
        conf, pred = p.max(dim=1)
        correct = pred.eq(target).double()
        boundaries = torch.linspace(0, 1, self.n_bins + 1, device=logits.device, dtype=conf.dtype)
        bins = (torch.bucketize(conf, boundaries, right=True) - 1).clamp_(0, self.n_bins - 1)
        ones = torch.ones_like(correct)
        self.bin_count.index_add_(0, bins, ones)
        self.bin_confidence.index_add_(0, bins, conf.double())
        self.bin_correct.index_add_(0, bins, correct)
        self.nll_sum += -logp.gather(1, target.view(-1, 1)).double().sum()
        onehot = torch.nn.functional.one_hot(target, logits.shape[1]).to(p.dtype)
        self.brier_sum += (p - onehot).pow(2).sum(dim=1).double().sum()
        self.total += target.numel()

    def state(self) -> dict[str, torch.Tensor]:
        """The summable state tensors by name (for an all-reduce under torchrun)."""
        return {name: getattr(self, name) for name in ("bin_count", "bin_confidence", "bin_correct", "nll_sum",
                                                        "brier_sum", "total")}

    def merge(self, other: "Calibration") -> "Calibration":
        """Fold another accumulator (e.g. another rank's shard) into this one."""
        if other.n_bins != self.n_bins:
            raise ValueError(f"cannot merge {other.n_bins} bins into {self.n_bins}")
        for name, value in other.state().items():
            setattr(self, name, getattr(self, name) + value.to(getattr(self, name).device))
        return self

    def compute(self) -> dict[str, float]:
        """{'ece': percent, 'nll': nats, 'brier': 0..2}; raises if nothing was seen."""
        n = float(self.total)
        if n == 0:
            raise ValueError("calibration of an empty set: no image was evaluated")
        gap = (self.bin_correct - self.bin_confidence).abs().sum()
        return {"ece": 100.0 * float(gap) / n, "nll": float(self.nll_sum) / n, "brier": float(self.brier_sum) / n}

    @property
    def n(self) -> int:
        """Number of images seen."""
        return int(self.total)


def calibration(logits: torch.Tensor, target: torch.Tensor, n_bins: int = N_BINS) -> dict[str, float]:
    """ECE (percent), NLL and Brier of one batch of logits [N, K] against targets [N]."""
    acc = Calibration(n_bins)
    acc.update(logits, target)
    return acc.compute()


__all__ = ["Calibration", "calibration", "CALIBRATION_METRICS", "N_BINS"]
