"""One way to derive seeds: every seeded choice in training and evaluation is a function of the run's seed and
named parts, through NumPy's `SeedSequence` (O'Neill's seed_seq hashing, so nearby inputs give unrelated seeds).

    derive_seed(cfg.seed, "epoch", generation, epoch)      # a 32-bit seed
    derive_seed(seed, corruption, severity, key)           # one corrupted image (eval.corruptions.catalog)
    seed_sequence(seed, corruption, severity, key, tag)    # a stream of words (device-mode draws)

Parts are ints (any size >= 0) or strings (entered as their CRC-32). The same parts give the same seed on every
machine, process and NumPy version (SeedSequence's output is part of NumPy's stability promise). Imports NumPy only.
"""
from __future__ import annotations

import zlib

import numpy as np

__all__ = ["derive_seed", "seed_everything", "seed_sequence"]


def seed_sequence(seed: int, *parts: int | str) -> np.random.SeedSequence:
    """The SeedSequence of (seed, *parts); strings enter as their CRC-32. Raises ValueError on a negative int."""
    entropy = [int(seed)] + [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    if any(e < 0 for e in entropy):
        raise ValueError(f"seed parts must be >= 0, got {entropy}")
    return np.random.SeedSequence(entropy)


def derive_seed(seed: int, *parts: int | str, bits: int = 32) -> int:
    """A `bits`-bit (32 or 64) seed, a stable function of (seed, *parts). With no parts it is still hashed: use the
    plain `seed` where a single-process run must keep the user's number (e.g. rank 0 under torchrun)."""
    if bits not in (32, 64):
        raise ValueError(f"bits must be 32 or 64, got {bits}")
    words = seed_sequence(seed, *parts).generate_state(1, np.uint32 if bits == 32 else np.uint64)
    return int(words[0])


def seed_everything(seed: int) -> None:
    """Seed torch's global generators (CPU and every CUDA device), NumPy's global one (seed mod 2**32) and Python's
    `random` (timm's RandAugment draws from it) with `seed`."""
    import random

    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
