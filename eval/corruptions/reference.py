"""imagecorruptions 1.1.2, made to run on current NumPy / scikit-image / setuptools without editing site-packages.

Three compatibility fixes, all confined to the ``imagecorruptions.corruptions`` module namespace:

* ``pkg_resources`` (gone from setuptools >= 81): while the module is imported, a stand-in module offering only
  ``resource_filename`` (via ``importlib.resources``) sits in ``sys.modules``; it is removed again afterwards.
* ``skimage.filters.gaussian(..., multichannel=True)`` (removed in scikit-image 0.19): the module's ``gaussian`` name is
  rebound to a wrapper that translates ``multichannel`` into ``channel_axis=-1``.
* ``np.float_`` (removed in NumPy 2, used by fog): the module's ``np`` name is rebound to a proxy of NumPy that also
  offers ``float_`` = ``float64``; the real ``numpy`` module is not touched.

Seeding: imagecorruptions draws from the global NumPy RNG only, so every image is corrupted under the lock
``GLOBAL_RNG_LOCK`` with the global RNG seeded from ``catalog.image_seed(seed, corruption, severity, key)`` and its
previous state restored afterwards. scikit-image's ``random_noise`` (impulse_noise) now ignores the global RNG and
takes ``rng=``; the wrapper installed here passes it a seed drawn from the global RNG, so impulse_noise is
reproducible too.

Sizes: the reference functions are called directly, not through ``imagecorruptions.corrupt`` (which refuses images
under 32 px); all 19 run unchanged at 28, 32, 224 and 475 px (tested), square or not. Frost crops a random window of
a frost photo that the reference itself rescales (x1.1 beyond the image size) first, so no padding or resizing of
the image is needed at any size.
Output is converted to uint8 as ``imagecorruptions.corrupt`` does (``np.uint8`` of the clipped float, i.e. truncation).
Gray (1-channel) images are replicated to 3 channels, corrupted, and the channel mean (rounded) is returned.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import sys
import threading
import types
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence, cast

import numpy as np
import skimage
import skimage.filters
import skimage.util
import torch
from PIL import Image

from .catalog import check_corruption, check_keys, image_seed

GLOBAL_RNG_LOCK = threading.RLock()


def _resource_filename(package_or_requirement: str, resource_name: str) -> str:
    """Stand-in for ``pkg_resources.resource_filename`` for modules and packages on the file system."""
    spec = importlib.util.find_spec(package_or_requirement)
    anchor = package_or_requirement
    if spec is not None and spec.submodule_search_locations is None:  # a plain module: use its package
        anchor = package_or_requirement.rpartition(".")[0]
    return str(importlib.resources.files(anchor).joinpath(resource_name.removeprefix("./")))


def _gaussian(image: np.ndarray, *args: Any, multichannel: bool | None = None, **kwargs: Any) -> np.ndarray:
    """``skimage.filters.gaussian`` accepting the removed ``multichannel=`` keyword."""
    if multichannel is not None:
        kwargs.setdefault("channel_axis", -1 if multichannel else None)
    return skimage.filters.gaussian(image, *args, **kwargs)


def _random_noise(image: np.ndarray, mode: str = "gaussian", rng: Any = None, **kwargs: Any) -> np.ndarray:
    """``skimage.util.random_noise`` seeded from the global NumPy RNG when no ``rng`` is given."""
    if rng is None:
        rng = int(np.random.randint(0, 2**32, dtype=np.uint64))
    return skimage.util.random_noise(image, mode=mode, rng=rng, **kwargs)


class _ProxyModule(types.ModuleType):
    """A module that serves a few overridden names and forwards every other attribute to a real module."""

    def __init__(self, real: types.ModuleType, **overrides: Any) -> None:
        super().__init__(real.__name__)
        self.__dict__.update(overrides)
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _import_imagecorruptions() -> types.ModuleType:
    """Import ``imagecorruptions.corruptions`` with the compatibility fixes applied to its namespace."""
    shim = None
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")
        setattr(shim, "resource_filename", _resource_filename)
        sys.modules["pkg_resources"] = shim
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # scipy.ndimage.interpolation
            module: Any = importlib.import_module("imagecorruptions.corruptions")
    finally:
        if shim is not None and sys.modules.get("pkg_resources") is shim:
            del sys.modules["pkg_resources"]
    module.gaussian = _gaussian
    module.np = _ProxyModule(np, float_=np.float64)
    module.sk = _ProxyModule(skimage, util=_ProxyModule(skimage.util, random_noise=_random_noise))
    return module


_MODULE = _import_imagecorruptions()


def reference_function(corruption: str) -> Callable[[Image.Image, int], Any]:
    """The (patched) imagecorruptions function for ``corruption``."""
    check_corruption(corruption, 1)
    return getattr(_MODULE, corruption)


@contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed the global NumPy RNG under a lock and restore its previous state afterwards."""
    with GLOBAL_RNG_LOCK:
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


def corrupt_image(image: np.ndarray, corruption: str, severity: int, rng_seed: int) -> np.ndarray:
    """Corrupt one uint8 HxWx3 image with the reference, the global RNG seeded with ``rng_seed``; uint8 HxWx3."""
    check_corruption(corruption, severity)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 array, got {image.dtype} {image.shape}")
    with seeded_global_rng(rng_seed):
        out = getattr(_MODULE, corruption)(Image.fromarray(image), severity)
    return cast(np.ndarray, np.uint8(out))  # an array in, an array out (NumPy's stubs type np.uint8(...) a scalar)


def corrupt_reference(images: torch.Tensor, corruption: str, severity: int, keys: Sequence[int],
                      seed: int = 0) -> torch.Tensor:
    """Corrupt uint8 [N, C, H, W] images (C = 1 or 3) one at a time with imagecorruptions; uint8 [N, C, H, W]."""
    check_corruption(corruption, severity)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 [N, 1 or 3, H, W] images, got {images.dtype} {tuple(images.shape)}")
    keys = check_keys(keys, images.shape[0], seed)
    arrays = images.detach().cpu().permute(0, 2, 3, 1).numpy()
    out = np.empty_like(arrays)
    for i, (array, key) in enumerate(zip(arrays, keys)):
        rgb = np.repeat(array, 3, axis=2) if array.shape[2] == 1 else np.ascontiguousarray(array)
        result = corrupt_image(rgb, corruption, severity, image_seed(seed, corruption, severity, key))
        out[i] = np.rint(result.mean(axis=2, keepdims=True)) if array.shape[2] == 1 else result
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(images.device)
