"""ImageNet-C corruptions for uint8 NCHW tensors: the imagecorruptions reference and a batched torch engine.

``corrupt(images, corruption, severity, keys, seed, backend, preset=None, rng=None)`` is the entry point; each
image's randomness is a function of (seed, corruption, severity, key) only, so results do not depend on batch size,
order or process. Backends: "torch" (``torch_engine``: batched, CPU or CUDA; the default) and "imagecorruptions"
(``reference``: the original NumPy code, one image at a time, made to run on current releases; imagenet-c strengths
and reference draws only).

Presets (``presets``): "imagenet-c" (imagecorruptions' tables), "cifar-10-c" and "tiny-imagenet-c" (Hendrycks'
32- and 64-px tables); None picks ``default_preset(H, W)``. Random-number modes (``draws``): "reference" (the
reference's NumPy draws, bit-identical images) and "device" (per-image torch generators on the images' device,
statistically equivalent); None = "device" on CUDA tensors, "reference" otherwise.
Gray [N, 1, H, W] images are replicated to RGB, corrupted, and the rounded channel mean is returned.

``ENGINE_VERSION`` changes whenever any output image changes; put it, the preset and ``draws.rng_tag(rng, device)``
into cache keys and cell identities.

Importing the package (or ``eval.corruptions.catalog``, the corruption names) does not import torch: ``draws``
(``RNG_MODES``, ``check_rng``, ``rng_tag``) loads on first use, the engines when ``corrupt`` runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Sequence

from .catalog import (ALL_CORRUPTIONS, CORRUPTION_FAMILIES, CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES,
                      check_corruption, image_seed)
from .presets import PRESETS, check_preset, default_preset

if TYPE_CHECKING:
    import torch

    from .draws import RNG_MODES, check_rng, rng_tag

# History: "1" the batched engine of issue 6 (imagenet-c tables only, NumPy draws);
# "2" presets, device random numbers, pixelate in Pillow's exact integer arithmetic (issue 13);
# "3" CPU speed work (issue 13): device mode's shot and impulse noise from 31-bit integer uniforms, fog's fused
# plasma levels, snow's fused compositing; defocus_blur (FFT at 5-smooth sizes that are multiples of 8, 255 units) and
# contrast (one fused step) in both modes, which moves a few values by one level (float rounding).
ENGINE_VERSION = "3"

BACKENDS: tuple[str, ...] = ("torch", "imagecorruptions")

__all__ = ["ALL_CORRUPTIONS", "BACKENDS", "CORRUPTION_FAMILIES", "CORRUPTIONS", "ENGINE_VERSION",
           "EXTRA_CORRUPTIONS", "PRESETS", "RNG_MODES", "SEVERITIES", "corrupt", "default_preset", "image_seed",
           "resolve_settings", "rng_tag"]
_LAZY = {"RNG_MODES": "draws", "check_rng": "draws", "rng_tag": "draws"}  # these import torch


def __getattr__(name: str) -> Any:
    """`RNG_MODES`, `check_rng`, `rng_tag` from `draws`, imported (with torch) on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_settings(images: torch.Tensor, backend: str = "torch", preset: str | None = None,
                     rng: str | None = None) -> tuple[str, str]:
    """The (preset, rng mode) ``corrupt`` would use for these images and arguments; ValueError for invalid ones.

    torch backend: preset None = ``default_preset(H, W)``, rng None = 'device' on CUDA, 'reference' elsewhere.
    imagecorruptions backend: only ('imagenet-c', 'reference') exist; None means those.
    """
    from .draws import check_rng

    if backend == "imagecorruptions":
        preset = "imagenet-c" if preset is None else preset
        rng = "reference" if rng is None else rng
        check_preset(preset)
        check_rng(rng, images.device)
        if (preset, rng) != ("imagenet-c", "reference"):
            raise ValueError(f"the imagecorruptions backend computes only preset 'imagenet-c' with rng 'reference' "
                             f"(got preset {preset!r}, rng {rng!r}); use backend 'torch' for other presets or modes")
        return preset, rng
    if backend == "torch":
        preset = default_preset(images.shape[-2], images.shape[-1]) if preset is None else preset
        check_preset(preset)
        return preset, check_rng(rng, images.device)
    raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")


def corrupt(images: torch.Tensor, corruption: str, severity: int, keys: Sequence[int], seed: int = 0,
            backend: str = "torch", preset: str | None = None, rng: str | None = None) -> torch.Tensor:
    """Corrupt uint8 [N, C, H, W] images (C = 1 or 3), one key per image; returns uint8 [N, C, H, W] on their device.

    ``preset``: "imagenet-c", "cifar-10-c", "tiny-imagenet-c" or None (``default_preset`` of H, W for the torch
    backend). ``rng``: "reference", "device" or None ("device" on CUDA, "reference" otherwise). ValueError names
    the bad argument and the valid values.
    """
    check_corruption(corruption, severity)
    preset, rng = resolve_settings(images, backend, preset, rng)
    if backend == "imagecorruptions":
        from .reference import corrupt_reference

        return corrupt_reference(images, corruption, severity, keys, seed)
    from .torch_engine import corrupt_torch

    return corrupt_torch(images, corruption, severity, keys, seed, preset=preset, rng=rng)
