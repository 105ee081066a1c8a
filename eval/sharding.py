"""Sharded evaluation under torchrun: each rank scores its own whole batches of every set, results merged.

A set is cut into the batches one process would use (`batch_size` consecutive images); batch b goes to rank
b mod world_size, keeping its batch number (attacks seed by it), so every image is scored exactly as in one
process. Counts are all-reduced and per-image results all-gathered back into dataset order, so every rank holds
the single-process numbers; rank 0 alone writes the results store (`rank_store`). Single-process: no-ops.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from eval.datasets import EvalSet
from eval.metrics import TopKAccuracy
from eval.store import ResultStore
from nst_core import distributed


def rank_batches(data: EvalSet, batch_size: int) -> tuple[EvalSet, torch.Tensor, list[int]]:
    """This rank's part of `data`: (its images, their positions in `data`, the numbers of its batches)."""
    if not distributed.is_distributed():
        return data, torch.arange(len(data)), list(range(math.ceil(len(data) / batch_size)))
    n = len(data)
    numbers = distributed.shard_indices(math.ceil(n / batch_size), distributed.rank(), distributed.world_size(),
                                        pad=False).tolist()
    spans = [torch.arange(b * batch_size, min((b + 1) * batch_size, n)) for b in numbers]
    positions = torch.cat(spans) if spans else torch.empty(0, dtype=torch.long)
    return data.subset(positions), positions, numbers


def gather_ordered(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Every rank's `values` (one per image at `positions`) gathered and put back in dataset order."""
    if not distributed.is_distributed():
        return values
    dtype = values.dtype
    gathered = distributed.all_gather(values.to(torch.uint8) if dtype == torch.bool else values)
    order = distributed.all_gather(positions.to(values.device)).argsort()
    return gathered[order].to(dtype)


def merge_accuracy(acc: TopKAccuracy, positions: torch.Tensor) -> TopKAccuracy:
    """The accumulator of the whole set from each rank's: counts summed, per-image correctness in dataset order."""
    if not distributed.is_distributed():
        return acc
    merged = TopKAccuracy(acc.topk, keep_per_image=acc.keep_per_image)
    merged.correct, merged.total = distributed.all_reduce(acc.correct), distributed.all_reduce(acc.total)
    if acc.keep_per_image:
        merged._per_image = [gather_ordered(acc.per_image(), positions)]  # one block, already in dataset order
    return merged


def merge_steps(acc: Any, steps: list[tuple[int, Any]]) -> None:
    """Fold every rank's per-step accumulators (`state()` of scalar tensors) into `acc`, in step order.

    Adding the steps' sums one by one in the order one process would gives bit-identical float sums.
    """
    names = list(acc.state())
    local = torch.tensor([[float(part.state()[name]) for name in names] for _, part in steps],
                         dtype=torch.float64).reshape(-1, len(names))
    numbers = distributed.all_gather(torch.tensor([number for number, _ in steps], dtype=torch.long))
    values = distributed.all_gather(local)
    for row in values[numbers.argsort()]:
        for name, value in zip(names, row):
            current = getattr(acc, name)
            setattr(acc, name, current + value.to(current.dtype))


def all_agree(flag: bool) -> bool:
    """True when `flag` is true on every rank (so ranks skip or compute a cell together)."""
    return bool(distributed.all_reduce(torch.tensor([int(flag)]), op=torch.distributed.ReduceOp.MIN)) \
        if distributed.is_distributed() else flag


class FollowerStore:
    """A non-zero rank's view of the results store: it reads rank 0's file and writes nothing."""

    def __init__(self, store: ResultStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def write(self, *args: Any, **kwargs: Any) -> None:
        """Rank 0 writes."""

    def add_model(self, *args: Any, **kwargs: Any) -> None:
        """Rank 0 writes."""


def rank_store(store: ResultStore) -> ResultStore | FollowerStore:
    """The store itself on rank 0, a read-only follower elsewhere."""
    return store if distributed.is_main() else FollowerStore(store)
