"""Corruption names (ImageNet-C order), families, severities, validation and per-image seeds shared by both backends;
the ImageNet-P perturbation names (`eval.metrics.perturbation` and the generator read them from here).

Imports NumPy only (no torch): the report reads the names from here (`reports.corruptions`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nst_common.seeding import derive_seed

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS: tuple[str, ...] = CORRUPTIONS + EXTRA_CORRUPTIONS
CORRUPTION_FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": CORRUPTIONS[0:3], "blur": CORRUPTIONS[3:7], "weather": CORRUPTIONS[7:11], "digital": CORRUPTIONS[11:15],
}
"""The four families of the 15 common corruptions (Hendrycks & Dietterich 2019, Figure 1)."""
EVALUATED_PERTURBATIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "spatter",
    "brightness", "translate", "rotate", "tilt", "scale",
)
"""The 10 ImageNet-P perturbations mFR and mT5D average over, in the benchmark's order."""
EXTRA_PERTURBATIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "snow", "shear")
ALL_PERTURBATIONS: tuple[str, ...] = EVALUATED_PERTURBATIONS + EXTRA_PERTURBATIONS
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


def check_corruption(corruption: str, severity: int) -> None:
    """Raise ValueError naming the bad value and the valid ones."""
    if corruption not in ALL_CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; valid: {', '.join(ALL_CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ValueError(f"invalid severity {severity!r} for {corruption!r}; valid: {list(SEVERITIES)}")


def check_keys(keys: Sequence[int], n: int, seed: int) -> list[int]:
    """Validate per-image keys (one non-negative int per image) and the seed; return keys as ints."""
    keys = [int(k) for k in keys]
    if len(keys) != n:
        raise ValueError(f"got {len(keys)} keys for {n} images; pass one key per image")
    if any(k < 0 for k in keys) or int(seed) < 0:
        raise ValueError("keys and seed must be non-negative integers")
    return keys


def image_seed(seed: int, corruption: str, severity: int, key: int) -> int:
    """32-bit NumPy seed of one image, a stable function of (seed, corruption, severity, key) (`derive_seed`)."""
    return derive_seed(seed, corruption, int(severity), int(key))
