"""ImageNet-C corruptions for uint8 NCHW tensors: the imagecorruptions reference and a batched torch engine.

``corrupt(images, corruption, severity, keys, seed, backend)`` is the entry point; each image's randomness is a
function of (seed, corruption, severity, key) only, so results do not depend on batch size, order or process.
Backends: "torch" (``torch_engine``: batched, CPU or CUDA, same random draws as the reference; the default) and
"imagecorruptions" (``reference``: the original NumPy code, one image at a time, made to run on current releases).
Gray [N, 1, H, W] images are replicated to RGB, corrupted, and the rounded channel mean is returned.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .catalog import ALL_CORRUPTIONS, CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES, check_corruption, image_seed

BACKENDS: tuple[str, ...] = ("torch", "imagecorruptions")
ENGINE_VERSION = "1"  # bump whenever generated images change: it is part of cache keys and of every cell's identity

__all__ = ["ALL_CORRUPTIONS", "BACKENDS", "ENGINE_VERSION", "CORRUPTIONS", "EXTRA_CORRUPTIONS", "SEVERITIES", "corrupt", "image_seed"]


def corrupt(images: torch.Tensor, corruption: str, severity: int, keys: Sequence[int], seed: int = 0,
            backend: str = "torch") -> torch.Tensor:
    """Corrupt uint8 [N, C, H, W] images (C = 1 or 3), one key per image; returns uint8 [N, C, H, W]."""
    check_corruption(corruption, severity)
    if backend == "imagecorruptions":
        from .reference import corrupt_reference

        return corrupt_reference(images, corruption, severity, keys, seed)
    if backend == "torch":
        from .torch_engine import corrupt_torch

        return corrupt_torch(images, corruption, severity, keys, seed)
    raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
