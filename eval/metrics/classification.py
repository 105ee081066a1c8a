"""Streaming top-k accuracy (`TopKAccuracy`) and the per-image non-finite-logits check (`NonFiniteLogits`).

Both are `eval.metrics.base.Metric`s: `update`, `compute`, `reset`, `merge`, `sync`. Top-k accuracy's state is
integer counters ("sum": `correct` per k, `total`), so ranks all-reduce them and get the one process's result;
per-image top-1 correctness ("cat": `hit`) is kept optionally (for paired tests between models on the same images)
and gathered back into dataset order by `sync(positions)`.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from eval.metrics.base import Metric


class TopKAccuracy(Metric):
    """Top-k accuracy (percent) for several k at once, accumulated batch by batch without host syncs."""

    correct: torch.Tensor  # "sum": images right, per k
    total: torch.Tensor  # "sum": images seen

    def __init__(self, topk: Sequence[int] = (1, 5), keep_per_image: bool = False) -> None:
        super().__init__()
        self.topk = tuple(int(k) for k in topk)
        self.keep_per_image = keep_per_image
        self.add_state("correct", torch.zeros(len(self.topk), dtype=torch.long), "sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), "sum")
        if keep_per_image:
            self.add_state("hit", torch.zeros(0, dtype=torch.bool), "cat")  # top-1 correct, per image

    def config(self) -> dict[str, Any]:
        """The k and whether per-image correctness is kept."""
        return {"topk": self.topk, "keep_per_image": self.keep_per_image}

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
            self.append("hit", hits[:, 0])

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
        """Top-1 correctness per image (bool [n], CPU) in the order seen (after `sync`: dataset order); needs
        keep_per_image=True (RuntimeError otherwise)."""
        if not self.keep_per_image:
            raise RuntimeError("per-image correctness was not kept (keep_per_image=False)")
        return self.values("hit").cpu()


class NonFiniteLogits(Metric):
    """Which images got NaN or infinite logits: one bool per image ("cat" state `bad`)."""


    def __init__(self) -> None:
        super().__init__()
        self.add_state("bad", torch.zeros(0, dtype=torch.bool), "cat")

    @torch.no_grad()
    def update(self, logits: torch.Tensor) -> None:
        """Add a batch of logits [B, K]."""
        self.append("bad", ~torch.isfinite(logits).all(dim=1))

    def compute(self) -> torch.Tensor:
        """Positions (int [m], CPU, ascending) of the images with a non-finite logit, in the order seen."""
        return self.values("bad").cpu().nonzero().flatten()


def topk_accuracy(logits: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy (percent) of one batch of logits."""
    acc = TopKAccuracy(topk)
    acc.update(logits, target)
    return acc.compute()
