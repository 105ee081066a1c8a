"""Sharded evaluation under torchrun: each rank scores its own whole batches of every set, results merged.

A set is cut into the batches one process would use (`batch_size` consecutive images); batch b goes to rank
b mod world_size, keeping its batch number (attacks seed by it), so every image is scored exactly as in one
process. `rank_batches` gives each rank its images and their positions in the set; the metrics merge themselves
across ranks with `Metric.sync(positions)` (`eval.metrics.base`: counts all-reduced, per-image values gathered back
into dataset order), so every rank holds the single-process numbers. Rank 0 alone writes the results store
(`rank_store`); `all_agree` lets ranks skip or compute a cell together. Single-process: no-ops.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from eval.store import ResultStore
from nst_common import distributed
from nst_core.imagesets import ImageSet


def rank_batches(data: ImageSet, batch_size: int) -> tuple[ImageSet, torch.Tensor, list[int]]:
    """This rank's part of `data`: (its images, their positions in `data`, the numbers of its batches)."""
    if not distributed.is_distributed():
        return data, torch.arange(len(data)), list(range(math.ceil(len(data) / batch_size)))
    n = len(data)
    numbers = distributed.shard_indices(math.ceil(n / batch_size), distributed.rank(), distributed.world_size(),
                                        pad=False).tolist()
    spans = [torch.arange(b * batch_size, min((b + 1) * batch_size, n)) for b in numbers]
    positions = torch.cat(spans) if spans else torch.empty(0, dtype=torch.long)
    return data.subset(positions), positions, numbers


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
