"""Corruption strength presets: the parameter tables of ImageNet-C, CIFAR-10-C and Tiny-ImageNet-C, severities 1..5.

* ``imagenet-c``: imagecorruptions 1.1.2 (the ImageNet-C tables, written for 224-px images; what the
  ``imagecorruptions`` backend computes).
* ``cifar-10-c``: the tables of Hendrycks' CIFAR-10-C generator (hendrycks/robustness,
  ``ImageNet-C/create_c/make_cifar_c.py``), written for 32-px images.
* ``tiny-imagenet-c``: the tables of Hendrycks' Tiny-ImageNet-C generator (same repository,
  ``ImageNet-C/create_c/make_tinyimagenet_c.py``), written for 64-px images.

Only the numbers are taken from those files (read 2026-12-01, commits ca36008 and 7a64e6a); the algorithms are the
torch engine's. Where Hendrycks' small-image generators differ in *algorithm*, not only in numbers, the engine
follows them as described in ``ALGORITHM_NOTES`` (each note says what is reproduced and what is not).
``default_preset(height, width)`` picks the preset written for the nearest size: <= 32 px cifar-10-c,
<= 64 px tiny-imagenet-c, else imagenet-c (the larger side decides).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

PRESETS: tuple[str, ...] = ("imagenet-c", "cifar-10-c", "tiny-imagenet-c")


@dataclass(frozen=True)
class Preset:
    """One preset: per-corruption parameter lists (index = severity - 1) and the size its tables were written for.

    ``frost_scale``: None = imagecorruptions' frost rescaling (the photo is only enlarged, x1.1 beyond the image);
    a number = Hendrycks' small-image frost, the photo shrunk by that factor at ``size`` px before the random crop.
    ``pixelate_upscale``: "nearest" (imagecorruptions) or "box" (Hendrycks' CIFAR / Tiny generators).
    ``elastic``: "imagecorruptions" (one amplitude per severity, displacement field scaled to the image) or
    "affine" (Hendrycks' small-image version: a random affine warp, then a smoothed displacement field; the
    parameters are (alpha, sigma, affine jitter) as fractions of the image size).
    """

    name: str
    size: int
    tables: dict[str, list[Any]] = field(repr=False)
    frost_scale: float | None = None
    pixelate_upscale: str = "nearest"
    elastic: str = "imagecorruptions"


_IMAGENET_C: dict[str, list[Any]] = {
    "gaussian_noise": [.08, .12, 0.18, 0.26, 0.38],
    "shot_noise": [60, 25, 12, 5, 3],
    "impulse_noise": [.03, .06, .09, 0.17, 0.27],
    "speckle_noise": [.15, .2, 0.35, 0.45, 0.6],
    "gaussian_blur": [1, 2, 3, 4, 6],
    "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],  # sigma, max_delta, iterations
    "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],  # radius, alias_blur
    "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],  # radius, sigma
    "zoom_blur": [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                  np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)],
    "fog": [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)],  # strength, wibble decay
    "frost": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],  # image weight, frost weight
    # loc, scale, zoom, threshold, blur radius, blur sigma, image mix
    "snow": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
             (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
    # loc, scale, sigma, threshold, intensity (water) / mud blur sigma, mud
    "spatter": [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)],
    "contrast": [0.4, .3, .2, .1, .05],
    "brightness": [.1, .2, .3, .4, .5],
    "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)],
    "jpeg_compression": [25, 18, 15, 10, 7],
    "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
    "elastic_transform": [250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12],  # alpha
}

_CIFAR_10_C: dict[str, list[Any]] = {
    "gaussian_noise": [0.04, 0.06, .08, .09, .10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [.01, .02, .03, .05, .07],
    "speckle_noise": [.06, .1, .12, .16, .2],
    "gaussian_blur": [.4, .6, 0.7, .8, 1],
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "zoom_blur": [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
                  np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)],
    "fog": [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
    "spatter": [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
                (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
    "contrast": [.75, .5, .4, .3, 0.15],
    "brightness": [.05, .1, .15, .2, .3],
    "saturate": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
    "jpeg_compression": [80, 65, 58, 50, 40],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    # (alpha, sigma, affine jitter) as fractions of the image size (Hendrycks: IMSIZE * fraction, IMSIZE = 32)
    "elastic_transform": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                          (0.1, 0.03, 0.03)],
}

_TINY_IMAGENET_C: dict[str, list[Any]] = {
    "gaussian_noise": [0.04, 0.08, .12, .15, .18],
    "shot_noise": [250, 100, 50, 30, 15],
    "impulse_noise": [.01, .02, .05, .08, .14],
    "speckle_noise": [.15, .2, 0.25, 0.3, 0.35],
    "gaussian_blur": [.5, .75, 1, 1.25, 1.5],
    "glass_blur": [(0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)],
    "defocus_blur": [(0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)],
    "motion_blur": [(10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)],
    "zoom_blur": [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
                  np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)],
    "fog": [(.4, 3), (.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)],
    "frost": [(1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)],
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.8), (0.1, 0.2, 1, 0.5, 10, 4, 0.8), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)],
    "spatter": [(0.62, 0.1, 0.7, 0.7, 0.6, 0), (0.65, 0.1, 0.8, 0.7, 0.6, 0), (0.65, 0.3, 1, 0.69, 0.6, 0),
                (0.65, 0.1, 0.7, 0.68, 0.6, 1), (0.65, 0.1, 0.5, 0.67, 0.6, 1)],
    "contrast": [.4, .3, .2, .1, 0.05],
    "brightness": [.1, .2, .3, .4, .5],
    "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)],
    "jpeg_compression": [65, 58, 50, 40, 25],
    "pixelate": [0.9, 0.8, 0.7, 0.6, 0.5],
    "elastic_transform": [(0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06), (0.1, 0.03, 0.03),
                          (0.16, 0.03, 0.02)],
}

PRESET_TABLES: dict[str, Preset] = {
    "imagenet-c": Preset("imagenet-c", 224, _IMAGENET_C),
    "cifar-10-c": Preset("cifar-10-c", 32, _CIFAR_10_C, frost_scale=0.2, pixelate_upscale="box", elastic="affine"),
    "tiny-imagenet-c": Preset("tiny-imagenet-c", 64, _TINY_IMAGENET_C, frost_scale=0.3, pixelate_upscale="box",
                              elastic="affine"),
}

# Where Hendrycks' 32- and 64-px generators differ from imagecorruptions in algorithm, and what the engine does.
ALGORITHM_NOTES: dict[str, str] = {
    "frost": "the frost photo is first shrunk (x0.2 at 32 px, x0.3 at 64 px; the engine scales that factor by "
             "the image's larger side / 32 or 64, never below what the crop needs) with cv2.resize's default "
             "bilinear filter, then a random window is cropped; imagecorruptions never shrinks the photo, so at "
             "32 px its crop is a nearly flat patch of a full-resolution photo.",
    "pixelate": "Hendrycks upsamples with Pillow BOX (imagecorruptions: NEAREST); reproduced exactly.",
    "elastic_transform": "Hendrycks' small-image version first warps by a random affine map (three points jittered "
                         "uniformly, cv2.getAffineTransform, cv2.warpAffine with BORDER_REFLECT_101 and bilinear "
                         "sampling), then displaces by Gaussian-smoothed uniform(-1, 1) fields times alpha "
                         "(scipy map_coordinates, order 1, mode 'reflect'). The engine composes the same two "
                         "warps with grid_sample: the affine step samples with mirror (reflect-101) borders, the "
                         "displacement step with half-sample reflection; both are bilinear, so outputs match "
                         "Hendrycks' up to float rounding.",
    "motion_blur / snow": "Hendrycks calls ImageMagick's MotionBlurImage; the engine uses imagecorruptions' "
                          "NumPy re-implementation of it (for all presets) with Hendrycks' radius and sigma.",
    "fog": "plasma fractal of side 32 (CIFAR) / 64 (Tiny) cropped to the image: the engine's map side is the "
           "image size rounded up to a power of two, which is the same at those sizes.",
}


def check_preset(preset: str) -> Preset:
    """The preset named ``preset``; ValueError naming the valid ones otherwise."""
    if preset not in PRESET_TABLES:
        raise ValueError(f"unknown corruption preset {preset!r}; valid: {', '.join(PRESETS)}")
    return PRESET_TABLES[preset]


def default_preset(height: int, width: int) -> str:
    """The preset written for the nearest image size: <= 32 px cifar-10-c, <= 64 px tiny-imagenet-c, else imagenet-c.

    The larger side decides (a 32x48 image gets tiny-imagenet-c). ValueError for non-positive sizes.
    """
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    side = max(height, width)
    if side <= 32:
        return "cifar-10-c"
    if side <= 64:
        return "tiny-imagenet-c"
    return "imagenet-c"


def parameter(preset: str, corruption: str, severity: int) -> Any:
    """The table entry of ``corruption`` at ``severity`` (1..5) in ``preset``."""
    return check_preset(preset).tables[corruption][severity - 1]
