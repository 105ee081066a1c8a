"""Streaming top-k accuracy in the torchmetrics shape: `update`, `compute`, `reset`, `merge`.

State is a few integer tensors (`correct`, `total`), so ranks can all-reduce them (sum) and get the same result as
one process; per-image top-1 correctness is kept optionally (for paired tests between models on the same images).
"""
from __future__ import annotations

from typing import Sequence

import torch


class TopKAccuracy:
    """Top-k accuracy (percent) for several k at once, accumulated batch by batch without host syncs."""

    def __init__(self, topk: Sequence[int] = (1, 5), keep_per_image: bool = False) -> None:
        self.topk = tuple(int(k) for k in topk)
        self.keep_per_image = keep_per_image
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.correct = torch.zeros(len(self.topk), dtype=torch.long)
        self.total = torch.zeros((), dtype=torch.long)
        self._per_image: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: logits [B, K], integer targets [B] (k larger than K counts as K)."""
        kmax = min(max(self.topk), logits.shape[1])
        pred = logits.topk(kmax, dim=1).indices  # [B, kmax]
        hits = pred.eq(target.view(-1, 1).to(pred.device))  # [B, kmax]
        cum = hits.cumsum(dim=1)  # cum[:, j] > 0 iff target within top j+1
        cols = torch.tensor([min(k, kmax) - 1 for k in self.topk], device=pred.device)
        if self.correct.device != pred.device:  # state follows the data: no host sync per batch on a GPU
            self.correct, self.total = self.correct.to(pred.device), self.total.to(pred.device)
        self.correct += cum.index_select(1, cols).gt(0).sum(dim=0)
        self.total += target.numel()
        if self.keep_per_image:
            self._per_image.append(hits[:, 0])

    def merge(self, other: "TopKAccuracy") -> "TopKAccuracy":
        """Fold another accumulator (e.g. another rank's shard, later in index order) into this one."""
        if other.topk != self.topk:
            raise ValueError(f"cannot merge top-k {other.topk} into {self.topk}")
        self.correct += other.correct.to(self.correct.device)
        self.total += other.total.to(self.total.device)
        self._per_image.extend(other._per_image)
        return self

    def compute(self) -> dict[str, float]:
        """{'top1': percent, 'top5': percent, ...}; raises if nothing was seen."""
        n = int(self.total)
        if n == 0:
            raise ValueError("accuracy of an empty set: no image was evaluated")
        return {f"top{k}": 100.0 * float(c) / n for k, c in zip(self.topk, self.correct.tolist())}

    @property
    def n(self) -> int:
        """Number of images seen."""
        return int(self.total)

    def per_image(self) -> torch.Tensor:
        """Top-1 correctness per image (bool [n]) in the order seen; needs keep_per_image=True."""
        if not self.keep_per_image:
            raise RuntimeError("per-image correctness was not kept (keep_per_image=False)")
        return torch.cat([p.cpu() for p in self._per_image]) if self._per_image else torch.zeros(0, dtype=torch.bool)


def topk_accuracy(logits: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy (percent) of one batch of logits."""
    acc = TopKAccuracy(topk)
    acc.update(logits, target)
    return acc.compute()
