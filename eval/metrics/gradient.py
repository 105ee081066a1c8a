"""The share of attacked images whose input gradient is all zero (a sign of masked gradients), streamed.

`ZeroGradient` is an `eval.metrics.base.Metric` with two integer "sum" states (`zero`: images whose input gradient
of the loss is exactly zero, `total`: images looked at), so `sync()` all-reduces them across torchrun ranks. The
mask itself comes from `eval.attacks.zero_gradient_mask`.
"""
from __future__ import annotations

import torch

from eval.metrics.base import Metric


class ZeroGradient(Metric):
    """Percent of images whose input gradient is all zero, from per-batch bool masks."""

    zero: torch.Tensor  # "sum": images with an all-zero input gradient
    total: torch.Tensor  # "sum": images looked at

    def __init__(self) -> None:
        super().__init__()
        self.add_state("zero", torch.zeros((), dtype=torch.long), "sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), "sum")

    def update(self, mask: torch.Tensor) -> None:
        """Add a batch: `mask` bool [B], True where the image's input gradient is all zero."""
        self.zero += int(mask.sum())
        self.total += mask.numel()

    def compute(self) -> dict[str, float]:
        """{"zero_gradient": percent of the images looked at} (0 when none was)."""
        return {"zero_gradient": 100.0 * int(self.zero) / max(int(self.total), 1)}


__all__ = ["ZeroGradient"]
