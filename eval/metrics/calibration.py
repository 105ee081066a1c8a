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

State is four float64 values per image (its bin, top-1 hit, NLL, Brier), summed in image order by `compute`, so
shards gathered back into dataset order (`per_image` / `set_per_image`, as `eval.sharding.gather_ordered` does
under torchrun) give bit-identical results to one process; memory is 32 bytes per image.
"""
from __future__ import annotations

import torch

N_BINS = 15
CALIBRATION_METRICS = ("ece", "nll", "brier")


class Calibration:
    """ECE (percent, 15 equal-width bins), NLL and Brier score accumulated batch by batch without host syncs."""

    KEYS = ("bin", "confidence", "correct", "nll", "brier")

    def __init__(self, n_bins: int = N_BINS) -> None:
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.n_bins = int(n_bins)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._parts: dict[str, list[torch.Tensor]] = {k: [] for k in self.KEYS}

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
            self._parts[key].append(value)

    def per_image(self) -> dict[str, torch.Tensor]:
        """The per-image values {bin, confidence, correct, nll, brier} (float64 [n] each) in the order seen."""
        return {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.float64) for k, v in self._parts.items()}

    def set_per_image(self, values: dict[str, torch.Tensor]) -> None:
        """Replace the state by per-image values (e.g. every rank's, gathered back into dataset order)."""
        self._parts = {k: [values[k].to(torch.float64)] for k in self.KEYS}

    def merge(self, other: "Calibration") -> "Calibration":
        """Fold another accumulator (e.g. another rank's shard, later in index order) into this one."""
        if other.n_bins != self.n_bins:
            raise ValueError(f"cannot merge {other.n_bins} bins into {self.n_bins}")
        for key in self.KEYS:
            self._parts[key].extend(other._parts[key])
        return self

    def compute(self) -> dict[str, float]:
        """{'ece': percent, 'nll': nats, 'brier': 0..2}; raises if nothing was seen."""
        v = self.per_image()
        n = v["nll"].numel()
        if n == 0:
            raise ValueError("calibration of an empty set: no image was evaluated")
        gap = torch.zeros(self.n_bins, dtype=torch.float64, device=v["nll"].device)
        gap.index_add_(0, v["bin"].long(), v["correct"] - v["confidence"])
        return {"ece": 100.0 * float(gap.abs().sum()) / n, "nll": float(v["nll"].sum()) / n,
                "brier": float(v["brier"].sum()) / n}

    @property
    def n(self) -> int:
        """Number of images seen."""
        return sum(int(t.numel()) for t in self._parts["nll"])


def calibration(logits: torch.Tensor, target: torch.Tensor, n_bins: int = N_BINS) -> dict[str, float]:
    """ECE (percent), NLL and Brier of one batch of logits [N, K] against targets [N]."""
    acc = Calibration(n_bins)
    acc.update(logits, target)
    return acc.compute()


__all__ = ["Calibration", "calibration", "CALIBRATION_METRICS", "N_BINS"]
