"""`ImageSet`: the one type of labeled uint8 images, for training (a torch Dataset) and evaluation alike.

A set holds its images in memory (uint8 [N, C, H, W], already at the model's input size) or as image files read
through `nst_core.images.EvalTransform` (timm's eval transform) when an item is asked for. Models take floats in
[0, 1] and normalise inside, so pixels stay uint8 until a batch reaches the model.

Training reads items through the Dataset protocol (`set[i]` -> (uint8 [C, H, W], int label)) or whole batches
(`batches`); evaluation also uses the dataset indices (`indices`, keys for per-image seeding and pairing), the
logit selection (`class_index`), the fingerprint of the images (`identity`, the `data_id` of every stored cell) and
in-memory decoding (`materialize`, `decoded_bytes`). Imports nothing heavier than torch and PIL.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nst_common.errors import DataError
from nst_core.images import EvalTransform, ImageError

SMALL_SET = 1024  # files: fewer are read in-process (starting worker processes would cost more than they save)


def default_workers(files: int) -> int:
    """DataLoader workers for `files` image files: the CPUs this process may use, at most 8; 0 for small sets."""
    if files < SMALL_SET:
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cpus))


@dataclass(eq=False)
class ImageSet(Dataset):
    """Labeled uint8 images (label -1 where unknown): in memory (`images`) or `files` read by `transform`.

    Give exactly one of `images` (uint8 [N, C, H, W]) and `files` (with the `transform` that reads them).
    `indices` are the dataset indices of the items (default 0..N-1; `subset` keeps them, so they stay keys for
    per-image seeding and pairing). `classes` names the labels (default "0".."K-1"); `class_index`, when set,
    selects and orders the model's logits before comparing with `labels` (ImageNet-A, -R). `info` is recorded
    with the results (root, transform settings...). `source_id` fingerprints where the images come from (file
    list, class mapping, transform; empty: the pixels of an in-memory set); `identity` adds the name and the
    subset: it is the `data_id` of every cell measured on the set.

    Raises ValueError for neither or both of images and files, or files without a transform; reading an unreadable
    file raises `DataError` (`nst_common.errors`) naming it.
    """

    labels: torch.Tensor
    num_classes: int
    name: str
    images: torch.Tensor | None = None
    files: list[Path] | None = None
    transform: EvalTransform | None = None
    indices: torch.Tensor = None  # type: ignore[assignment]  # None: 0..N-1 (set in __post_init__)
    classes: list[str] | None = None
    class_index: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    source_id: str = ""

    def __post_init__(self) -> None:
        if (self.images is None) == (self.files is None):
            raise ValueError(f"{self.name}: give either images or files")
        if self.files is not None and self.transform is None:
            raise ValueError(f"{self.name}: image files need the transform (EvalTransform) that reads them")
        self.labels = self.labels.long()
        if self.indices is None:
            self.indices = torch.arange(len(self.labels))
        if self.classes is None:
            self.classes = [str(i) for i in range(self.num_classes)]

    def __len__(self) -> int:
        return int(self.labels.numel())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Item `index` (a position in this set): (uint8 [C, H, W], its label)."""
        if self.images is not None:
            return self.images[index], int(self.labels[index])
        assert self.files is not None and self.transform is not None  # checked in __post_init__
        try:
            return self.transform(self.files[index]), int(self.labels[index])
        except ImageError as exc:
            raise DataError(str(exc)) from None

    @property
    def pixels(self) -> torch.Tensor:
        """The images in memory (uint8 [N, C, H, W]): those of a `materialize()`d set. ValueError on a file set."""
        if self.images is None:
            raise ValueError(f"{self.name}: the images are files, not in memory; materialize() the set first")
        return self.images

    def subset(self, positions: torch.Tensor | list[int]) -> "ImageSet":
        """The items at `positions` (positions in this set, not dataset indices), in that order."""
        pos = torch.as_tensor(positions, dtype=torch.long)
        return replace(self, labels=self.labels[pos], indices=self.indices[pos],
                       images=None if self.images is None else self.images[pos],
                       files=None if self.files is None else [self.files[i] for i in pos.tolist()])

    def batches(self, batch_size: int, workers: int | None = None,
                pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 [B, C, H, W], int64 [B]) in index order: memory slices, or files through a DataLoader.

        `workers`: DataLoader processes decoding files (None: `default_workers(len(self))`); `pin_memory` for
        fast, asynchronous copies to a GPU.
        """
        if self.images is not None:
            for start in range(0, len(self), batch_size):
                yield self.images[start:start + batch_size], self.labels[start:start + batch_size]
            return
        workers = default_workers(len(self)) if workers is None else workers
        loader = DataLoader(self, batch_size=batch_size, shuffle=False, num_workers=workers, persistent_workers=False,
                            pin_memory=pin_memory, prefetch_factor=4 if workers else None)
        yield from loader

    @property
    def decoded_bytes(self) -> int:
        """Bytes this set takes decoded in memory (uint8 at its images' or its transform's size)."""
        if self.images is not None:
            return self.images.numel()
        assert self.transform is not None  # files come with their transform
        return len(self) * int(np.prod(self.transform.input_size))

    def materialize(self, batch_size: int = 256, workers: int | None = None) -> "ImageSet":
        """The same set with every image in memory (uint8); `workers` as in `batches`."""
        if self.images is not None:
            return self
        images = torch.cat([x for x, _ in self.batches(batch_size, workers)]) if len(self) else torch.zeros(0)
        return replace(self, images=images, files=None)

    @property
    def identity(self) -> str:
        """The exact images and labels this set holds: sha1 over name, source_id, indices and labels (16 hex)."""
        if not self.source_id:
            self.source_id = self.content_digest()
        h = hashlib.sha1(f"{self.name}|{self.source_id}|".encode())
        h.update(self.indices.numpy().astype(np.int64).tobytes())
        h.update(self.labels.numpy().astype(np.int64).tobytes())
        return h.hexdigest()[:16]

    def content_digest(self) -> str:
        """sha1 over the images, labels and indices (16 hex; keys the corruption cache)."""
        data = self.materialize()
        h = hashlib.sha1()
        for t in (data.pixels, data.labels, data.indices):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


__all__ = ["ImageSet", "default_workers", "SMALL_SET"]
