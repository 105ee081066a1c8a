"""Batched torch implementation of the 19 ImageNet-C corruptions (CPU and CUDA, any image size, three presets).

Parameter tables per severity come from ``presets`` (imagenet-c = imagecorruptions 1.1.2; cifar-10-c and
tiny-imagenet-c = Hendrycks' 32- and 64-px generators); frost images are read from the installed imagecorruptions
package. Randomness comes from ``draws.Draws`` in one of two modes:

* ``reference``: each image gets its own ``np.random.RandomState`` seeded with ``catalog.image_seed(seed,
  corruption, severity, key)`` -- the seed the reference backend puts into the global NumPy RNG -- and every random
  quantity is drawn from it in the reference's order and shapes. The draws are therefore identical to the
  reference's and only the arithmetic (filters, zooms, colour conversions, warps, compositing) runs batched in
  torch. NumPy on the CPU, one image at a time, so the noise corruptions run at about NumPy's speed.
* ``device``: per-image ``torch.Generator`` streams on the images' device (see ``draws``): the same distributions,
  drawn where the images are, without NumPy; statistically (not bitwise) equivalent to the reference.

Results depend only on (seed, corruption, severity, key, preset, rng mode), never on batch size, order or process
(bitwise on one device and thread setting; CPU and CUDA may differ by float rounding, and in device mode by their
generators).

Exact where the reference's algorithm is sequential:
* glass_blur's "swap" loop: the reference's ``x[p], x[q] = x[q], x[p]`` on NumPy row views is in fact a copy
  ``x[p] = x[q]`` in reverse raster order, so each pixel ends up with the value at the end of a pointer chain through
  already-processed positions. The chains are resolved in parallel by pointer jumping (O(log length) gathers).
* pixelate: Pillow's BOX filter in its own fixed-point integer arithmetic (22-bit coefficients), from prefix sums.

Documented differences from the reference:
* Arithmetic is float32 (float64 for snow, fog, spatter and elastic_transform's random layers in reference mode;
  float32 in device mode); the final float -> uint8 step truncates like the reference, so a value that lies within
  float error of an integer can differ by one level.
* jpeg_compression runs Pillow per image on the CPU (the reference's codec, so identical); on CUDA it uses
  torchvision's nvJPEG batch codec, whose output can differ slightly from libjpeg's.
* spatter (severities 1-3): the liquid mask's edge/distance/histogram steps run in OpenCV on the CPU, per image, as in
  the reference; where the mask is empty the reference divides 0 by 0 and returns a black image, here the image is
  returned unchanged.
* cifar-10-c / tiny-imagenet-c: see ``presets.ALGORITHM_NOTES`` for where Hendrycks' small-image generators differ
  in algorithm (frost, pixelate, elastic_transform, snow's layer trim) and how the engine follows them.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.io
from PIL import Image

from . import kernels, poisson
from .catalog import check_corruption, check_keys
from .draws import Draws, check_rng
from .presets import PRESET_TABLES, Preset, check_preset, default_preset

# Pixels per engine call on the CPU (eight 224x224 images): chunks this small keep the float intermediates in cache
# and still amortise per-op overhead on small images. Images are independent, so chunking changes no output.
# CUDA takes the whole batch at once.
CPU_CHUNK_PIXELS = 8 * 224 * 224

# An engine: (uint8 RGB images [N, 3, H, W], the severity's table entry, the draws, the preset) -> float images in
# [0, 255] (truncated to uint8 by the caller) or uint8 images (returned as they are).
Engine = Callable[[torch.Tensor, Any, Draws, Preset], torch.Tensor]  # (u8, the table's parameter, draws, preset)

FROST_FILES = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg"]


def _unit(u8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1]."""
    return u8.to(torch.float32) / 255.0


def _image_shape(u8: torch.Tensor) -> tuple[int, int, int]:
    """The reference's HxWxC shape of one image of the batch."""
    return u8.shape[2], u8.shape[3], u8.shape[1]


def _layer_dtype(draws: Draws) -> torch.dtype:
    """Precision of the random layers (snow, fog, spatter, elastic fields): float64 as the reference's NumPy in
    reference mode; float32 in device mode (half the memory traffic; the numbers differ anyway)."""
    return torch.float64 if draws.mode == "reference" else torch.float32


def _hwc_normal(u8: torch.Tensor, draws: Draws, scale: float) -> torch.Tensor:
    """N(0, scale^2) per pixel and channel as [N, C, H, W] (reference: drawn HxWxC as the reference does)."""
    if draws.mode == "reference":
        return draws.normal(_image_shape(u8), scale=scale).permute(0, 3, 1, 2)
    return draws.normal(tuple(u8.shape[1:]), scale=scale)


# ---- noise ----
def _to_u8(values: torch.Tensor) -> torch.Tensor:
    """Float values in 255 units -> uint8 by clamping to [0, 255] and truncating (as the reference's np.uint8), in
    place: device mode's fused arithmetic ends here."""
    return values.clamp_(0, 255).to(torch.uint8)


def gaussian_noise(u8: torch.Tensor, c: float, draws: Draws, preset: Preset) -> torch.Tensor:
    """x + N(0, c^2) per pixel and channel (device mode: x * 255 + N(0, (255 c)^2) in one buffer)."""
    if draws.mode == "device":
        return _to_u8(draws.normal(tuple(u8.shape[1:]), scale=255.0 * c).add_(u8))
    return (_unit(u8) + _hwc_normal(u8, draws, c)).clamp_(0, 1).mul_(255)


def shot_noise(u8: torch.Tensor, c: float, draws: Draws, preset: Preset) -> torch.Tensor:
    """Poisson(x * c) / c (reference: NumPy's Poisson per image; device: ``poisson.shot_noise_u8``, the output
    bytes tabulated per pixel value and 31-bit uniform)."""
    if draws.mode == "device":
        assert draws.generators is not None  # device mode always has its generators
        return poisson.shot_noise_u8(u8, c, draws.generators)
    return (draws.poisson_u8(u8, c) / float(c)).clamp_(0, 1).mul_(255)


def impulse_noise(u8: torch.Tensor, amount: float, draws: Draws, preset: Preset) -> torch.Tensor:
    """Salt-and-pepper noise as skimage.util.random_noise(mode='s&p'): a fraction ``amount`` of the values flipped,
    half to 1 and half to 0. Reference: skimage's two draws from a Generator seeded by the image's RandomState;
    device: one uniform 31-bit integer r per value (int32 ``random_``, the cheapest draw), salt where
    r < amount / 2 * 2^31, pepper where amount / 2 * 2^31 <= r < amount * 2^31 (the same distribution, to 2^-31)."""
    if draws.mode == "device":  # uint8 throughout: unflipped values come back unchanged, as in the reference
        assert draws.generators is not None  # device mode always has its generators
        bits = torch.empty(u8.shape, dtype=torch.int32, device=u8.device)
        for row, gen in zip(bits, draws.generators):
            row.random_(generator=gen)  # uniform on [0, 2^31)
        flip_below, salt_below = (int(round(a * 2.0**31)) for a in (amount, amount / 2))
        # arithmetic on 0/1 masks: several times faster than masked_fill / where on the CPU
        kept = u8 * (bits >= flip_below).view(torch.uint8)
        return kept.bitwise_or_((bits < salt_below).view(torch.uint8).mul_(255))
    shape = _image_shape(u8)
    flipped, salted = [], []
    for r in draws.scalars:
        g = np.random.default_rng(int(r.randint(0, 2**32, dtype=np.uint64)))
        flipped.append(g.random(shape) <= amount)
        salted.append(g.random(shape) <= 0.5)
    flip = torch.from_numpy(np.stack(flipped)).permute(0, 3, 1, 2).to(u8.device)
    salt = torch.from_numpy(np.stack(salted)).permute(0, 3, 1, 2).to(device=u8.device, dtype=torch.float32)
    return torch.where(flip, salt, _unit(u8)) * 255


def speckle_noise(u8: torch.Tensor, c: float, draws: Draws, preset: Preset) -> torch.Tensor:
    """x + x * N(0, c^2) (device mode: x * 255 * (1 + N(0, c^2)) in one buffer)."""
    if draws.mode == "device":
        return _to_u8(draws.normal(tuple(u8.shape[1:]), loc=1.0, scale=c).mul_(u8))
    x = _unit(u8)
    return (x + x * _hwc_normal(u8, draws, c)).clamp_(0, 1).mul_(255)


# ---- blur ----
def gaussian_blur(u8: torch.Tensor, sigma: float, draws: Draws, preset: Preset) -> torch.Tensor:
    """skimage Gaussian filter (edge mode 'nearest'), sigma from the table."""
    return kernels.gaussian_filter(_unit(u8), sigma).clamp_(0, 1).mul_(255)


def _glass_sources(height: int, width: int, delta: int, offsets: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Flat source index per pixel after one pass of the reference's local-shuffle loop, [N, H * W].

    The loop visits p = (h, w) for h = H-delta .. delta+1, w = W-delta .. delta+1 (reverse raster order) and copies
    x[p] = x[p + (dy, dx)] (the reference's tuple "swap" of NumPy row views is a copy). A source that was visited
    earlier (a larger raster index inside the visited area) already holds its own copied value, so the source of p
    is found by following the offsets until an unvisited position: resolved for all pixels by pointer jumping.
    ``offsets``: [N, nh, nw, 2] (dx, dy) in visiting order.
    """
    n = offsets.shape[0]
    off = torch.zeros(n, 2, height, width, dtype=torch.int64, device=device)
    region = (slice(None), slice(None), slice(delta + 1, height - delta + 1), slice(delta + 1, width - delta + 1))
    off[region] = torch.as_tensor(offsets, device=device).permute(0, 3, 1, 2).flip(2, 3)
    visited = torch.zeros(height, width, dtype=torch.bool, device=device)
    visited[region[2:]] = True
    visited = visited.reshape(-1)
    pos = torch.arange(height * width, device=device)
    nxt = pos + (off[:, 1] * width + off[:, 0]).reshape(n, -1)
    follow = visited & visited[nxt] & (nxt > pos)
    while bool(follow.any()):
        hop, hop_follows = nxt.gather(1, nxt), follow.gather(1, nxt)
        nxt = torch.where(follow, hop, nxt)
        follow = follow & hop_follows
    return nxt


def glass_blur(u8: torch.Tensor, p: tuple, draws: Draws, preset: Preset) -> torch.Tensor:
    """Gaussian blur, the reference's local pixel shuffle (exact, in parallel), Gaussian blur again."""
    sigma, delta, iterations = p
    n, c, h, w = u8.shape
    x = torch.floor(kernels.gaussian_filter(_unit(u8), sigma) * 255)
    nh, nw = max(h - 2 * delta, 0), max(w - 2 * delta, 0)
    draws_ = draws.randint(-delta, delta, (iterations, nh, nw, 2))
    flat = x.reshape(n, c, h * w)
    for it in range(iterations):
        if nh and nw:
            src = _glass_sources(h, w, delta, draws_[:, it], u8.device)
            flat = flat.gather(2, src[:, None, :].expand(n, c, h * w))
    x = flat.reshape(n, c, h, w) / 255.0
    return kernels.gaussian_filter(x, sigma).clamp_(0, 1).mul_(255)


@functools.lru_cache(maxsize=None)
def _defocus_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's anti-aliased disk kernel."""
    size, ksize = (8, (3, 3)) if radius <= 8 else (radius, (5, 5))
    grid = np.arange(-size, size + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    disk /= np.sum(disk)
    return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)


def defocus_blur(u8: torch.Tensor, p: tuple, draws: Draws, preset: Preset) -> torch.Tensor:
    """Convolution with an anti-aliased disk (cv2.filter2D, border reflect-101), by FFT, of the values in 255 units
    (the filter is linear, so the reference's / 255 and * 255 cancel up to float rounding)."""
    kernel = _defocus_kernel(*p)
    return kernels.filter2d(u8.to(torch.float32), kernel).clamp_(0, 255)


def motion_blur(u8: torch.Tensor, p: tuple, draws: Draws, preset: Preset) -> torch.Tensor:
    """Line blur along a random angle in [-45, 45] degrees, edge-replicated shifts."""
    radius, sigma = p
    x = u8.to(torch.float32)
    h, w = x.shape[-2:]
    taps = [kernels.motion_blur_taps(radius, sigma, r.uniform(-45, 45), h, w) for r in draws.scalars]
    return _blur_lines(x, taps).clamp_(0, 255)


def _batched(device: torch.device) -> bool:
    """Whether per-image loops run as whole-batch gathers on ``device``: not on the CPU, where per-image slices are
    faster (measured 13x for motion_blur at 224 px)."""
    return device.type != "cpu"


def _blur_lines(x: torch.Tensor, taps: list[list[tuple[int, int, float]]]) -> torch.Tensor:
    """Each image's motion blur: per image on the CPU (slices are cheap there), one gather per tap for the whole
    batch elsewhere (``kernels.motion_blur_batched``: the same sums, one kernel launch per tap, not per tap and
    image); per image whenever the images' tap lists differ in length."""
    if _batched(x.device) and len({len(t) for t in taps}) == 1:
        return kernels.motion_blur_batched(x, taps)
    return torch.stack([kernels.motion_blur(x[i], t) for i, t in enumerate(taps)])


def zoom_blur(u8: torch.Tensor, zooms: np.ndarray, draws: Draws, preset: Preset) -> torch.Tensor:
    """Mean of the image and its centre zooms by the table's factors."""
    x = _unit(u8)
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    for z in zooms:
        layer = kernels.clipped_zoom(x, float(z))[..., :h, :w]
        out[..., :layer.shape[-2], :layer.shape[-1]] += layer
    return ((x + out) / (len(zooms) + 1)).clamp_(0, 1).mul_(255)


# ---- weather ----
def snow(u8: torch.Tensor, p: tuple, draws: Draws, preset: Preset) -> torch.Tensor:
    """Zoomed, thresholded, motion-blurred Gaussian snow layer over a brightened image.

    imagenet-c (imagecorruptions): the zoomed layer is blurred whole and its top-left H x W kept; cifar-10-c /
    tiny-imagenet-c (Hendrycks): the zoomed layer is trimmed to its centre H x W first, then blurred.
    """
    loc, scale, zoom, threshold, radius, sigma, mix = p
    x = _unit(u8)
    h, w = x.shape[-2:]
    layers_all = draws.normal((h, w), loc=loc, scale=scale, dtype=_layer_dtype(draws))
    if not _batched(u8.device):
        per_image = []
        for layer, r in zip(layers_all, draws.scalars):
            layer = kernels.clipped_zoom(layer, zoom)
            if preset.name != "imagenet-c":
                top, left = (layer.shape[0] - h) // 2, (layer.shape[1] - w) // 2
                layer = layer[top:top + h, left:left + w]
            layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
            taps = kernels.motion_blur_taps(radius, sigma, r.uniform(-135, -45), *layer.shape)
            per_image.append(kernels.motion_blur(layer, taps)[:h, :w])
        layers = torch.stack(per_image)
    else:  # the same steps for the whole batch at once (one kernel per step, not per step and image)
        layers = kernels.clipped_zoom(layers_all, zoom)
        if preset.name != "imagenet-c":
            top, left = (layers.shape[-2] - h) // 2, (layers.shape[-1] - w) // 2
            layers = layers[..., top:top + h, left:left + w]
        layers = torch.where(layers < threshold, torch.zeros_like(layers), layers).clamp(0, 1)
        image_taps = [kernels.motion_blur_taps(radius, sigma, r.uniform(-135, -45), *layers.shape[-2:])
                      for r in draws.scalars]
        layers = _blur_lines(layers, image_taps)[..., :h, :w]
    if draws.mode == "device":  # the same compositing in 255 units, fused (float32 rounding aside)
        xf = u8.to(torch.float32)
        gray = xf[:, 0:1] * 0.299
        gray.add_(xf[:, 1:2], alpha=0.587).add_(xf[:, 2:3], alpha=0.114).mul_(1.5).add_(127.5)
        flakes255 = torch.round(layers.to(torch.float32) * 255)[:, None]
        out = torch.lerp(torch.maximum(xf, gray), xf, mix)  # mix * x + (1 - mix) * max(x, 1.5 gray + 0.5)
        return _to_u8(out.add_(flakes255 + flakes255.flip(-2, -1)))
    flakes = (torch.round(layers * 255) / 255).to(torch.float32)[:, None]
    gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    x = mix * x + (1 - mix) * torch.maximum(x, gray * 1.5 + 0.5)
    return (x + flakes + flakes.flip(-2, -1)).clamp_(0, 1).mul_(255)


def _frost_photo(index: int) -> np.ndarray:
    """Frost photo ``index`` (BGR uint8) from the installed imagecorruptions package."""
    spec = importlib.util.find_spec("imagecorruptions")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("frost needs the imagecorruptions package (its frost images) to be installed")
    path = Path(spec.submodule_search_locations[0]) / "frost" / FROST_FILES[index]
    frost = cv2.imread(str(path))
    if frost is None:
        raise FileNotFoundError(f"cannot read frost image {path}")
    return frost


@functools.lru_cache(maxsize=64)
def _frost_layer(index: int, height: int, width: int, device: torch.device,
                 shrink: float | None = None) -> torch.Tensor:
    """Frost photo ``index`` as RGB float [3, H', W'] on ``device``.

    ``shrink`` None: rescaled as imagecorruptions does (enlarged to cover the image, x1.1, bicubic). A number:
    Hendrycks' small-image frost, ``cv2.resize(photo, (0, 0), fx=shrink, fy=shrink)`` (bilinear), the factor raised
    where needed so that the photo stays larger than the image.
    """
    frost = _frost_photo(index)
    fh, fw = frost.shape[:2]
    if shrink is None:
        scale = 1.0
        if fh < height or fw < width:
            scale = max(height / fh if fh < height else 0.0, width / fw if fw < width else 0.0)
        scale *= 1.1
        size = (int(np.ceil(fw * scale)), int(np.ceil(fh * scale)))
        frost = cv2.resize(frost, dsize=size, interpolation=cv2.INTER_CUBIC)
    else:
        shrink = max(shrink, (height + 1.5) / fh, (width + 1.5) / fw)
        frost = cv2.resize(frost, (0, 0), fx=shrink, fy=shrink)
    frost = frost[..., [2, 1, 0]]
    return torch.from_numpy(np.ascontiguousarray(frost)).permute(2, 0, 1).to(device=device, dtype=torch.float32)


def frost(u8: torch.Tensor, p: tuple, draws: Draws, preset: Preset) -> torch.Tensor:
    """Weighted sum of the image and a random crop of a random frost photo (shrunk first for the small presets)."""
    a, b = p
    h, w = u8.shape[-2:]
    shrink = None
    if preset.frost_scale is not None:
        shrink = preset.frost_scale * max(h, w) / preset.size
    crops = []
    for r in draws.scalars:
        layer = _frost_layer(int(r.randint(5)), h, w, u8.device, shrink)
        top, left = r.randint(0, layer.shape[1] - h), r.randint(0, layer.shape[2] - w)
        crops.append(layer[:, top:top + h, left:left + w])
    return (a * u8.to(torch.float32) + b * torch.stack(crops)).clamp_(0, 255)


def _plasma_fractal(mapsize: int, decay: float, draws: Draws, device: torch.device,
                    normalize: bool = True) -> torch.Tensor:
    """Diamond-square height maps, [N, mapsize, mapsize] (float64; float32 in device mode): in [0, 1] (the
    reference's ``(m - min) / max(m - min)``) or, with ``normalize`` False, the raw map for the caller to scale.

    Reference mode does the reference's arithmetic in its order (bit-identical float64). Device mode draws the same
    uniforms and forms each level's random term wibble * U(-wibble, wibble) = wibble^2 (2u - 1) in one fused op for
    all levels, and adds it to the quarter sums in one op (equal in distribution, float32 rounding aside).
    """
    levels = []
    step, wibble = mapsize, 100.0
    while step >= 2:
        levels.append((step, wibble))
        step //= 2
        wibble /= decay
    counts = [3 * (mapsize // s) ** 2 for s, _ in levels]
    dtype = _layer_dtype(draws)
    u = draws.random_sample((sum(counts),), dtype)
    n = len(draws)
    device_mode = draws.mode == "device"
    if device_mode:  # u -> wibble^2 (2u - 1) per level, in place, one op: u * (2 w^2) + (-w^2)
        w2 = torch.cat([torch.full((count,), wb * wb, dtype=dtype, device=device)
                        for (_, wb), count in zip(levels, counts)])
        u = torch.addcmul(-w2, u, 2 * w2)
    # The map at the current level's resolution, kept contiguous: ``ul`` holds the points already set (the
    # reference's maparray[0::step, 0::step]); each level computes the square centres (maparray[half::step,
    # half::step]) and the two diamond sets, then interleaves the four into the next resolution. The same
    # arithmetic in the same order as the reference's strided updates, on contiguous tensors (rolls that the
    # reference computes twice are computed once: the same values).
    ul = torch.zeros(n, 1, 1, dtype=dtype, device=device)
    start = 0
    for (step, wibble), count in zip(levels, counts):
        k = mapsize // step
        chunk = u[:, start:start + count].reshape(n, 3, k, k)
        start += count
        # the next resolution [n, k, row parity, k, column parity]: (0, 0) ul, (1, 1) dr, (0, 1) lt, (1, 0) tt
        nxt = torch.empty(n, k, 2, k, 2, dtype=dtype, device=device)
        nxt[:, :, 0, :, 0] = ul
        vertical = ul + torch.roll(ul, -1, 1)  # ul + roll(ul, -1, 1): the squares' first sum and tt's last term
        acc = vertical + torch.roll(vertical, -1, 2)
        if device_mode:
            dr = torch.add(chunk[:, 0], acc, alpha=0.25)
            torch.add(chunk[:, 1], dr + torch.roll(dr, 1, 1) + (ul + torch.roll(ul, -1, 2)), alpha=0.25,
                      out=nxt[:, :, 0, :, 1])
            torch.add(chunk[:, 2], dr + torch.roll(dr, 1, 2) + vertical, alpha=0.25, out=nxt[:, :, 1, :, 0])
        else:
            noise = -wibble + (wibble - -wibble) * chunk
            dr = acc / 4 + wibble * noise[:, 0]
            lt = dr + torch.roll(dr, 1, 1) + (ul + torch.roll(ul, -1, 2))
            nxt[:, :, 0, :, 1] = lt / 4 + wibble * noise[:, 1]  # maparray[0::step, half::step]
            tt = dr + torch.roll(dr, 1, 2) + vertical
            nxt[:, :, 1, :, 0] = tt / 4 + wibble * noise[:, 2]  # maparray[half::step, 0::step]
        nxt[:, :, 1, :, 1] = dr
        ul = nxt.view(n, 2 * k, 2 * k)
    if not normalize:
        return ul
    m = ul - ul.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True)


def fog(u8: torch.Tensor, p: tuple, draws: Draws, preset: Preset) -> torch.Tensor:
    """Plasma-fractal fog added to the image, then contrast compressed: (x + s * map) * max / (max + s)."""
    strength, decay = p
    n, c, h, w = u8.shape
    mapsize = 1 << (max(h, w, c) - 1).bit_length()
    if draws.mode == "device":  # float32, 255 units: raw * a - low * a + u8 * scale / 255, per-image a and scale
        raw = _plasma_fractal(mapsize, decay, draws, u8.device, normalize=False)
        low = raw.amin((1, 2)).view(n, 1, 1, 1)
        span = raw.amax((1, 2)).view(n, 1, 1, 1) - low  # the map in [0, 1] is (raw - low) / span
        max_val = u8.amax((1, 2, 3), keepdim=True).to(torch.float32) / 255.0
        scale = 255.0 * max_val / (max_val + strength)  # [N, 1, 1, 1]
        a = strength * scale / span
        layer = torch.addcmul(-low * a, raw[:, None, :h, :w], a)  # s * map * scale, [N, 1, H, W]
        return _to_u8(torch.addcmul(layer, u8, scale / 255.0))
    fractal = _plasma_fractal(mapsize, decay, draws, u8.device)[:, None, :h, :w]
    x = u8.to(torch.float64) / 255.0
    max_val = x.amax((1, 2, 3), keepdim=True)
    x = x + strength * fractal
    return (x * max_val / (max_val + strength)).clamp(0, 1).to(torch.float32) * 255


def brightness(u8: torch.Tensor, c: float, draws: Draws, preset: Preset) -> torch.Tensor:
    """HSV value + c, in closed form: with hue and saturation fixed, RGB scales with V (black becomes gray V')."""
    x = _unit(u8)
    v = x.amax(1, keepdim=True)
    v_new = (v + c).clamp(0, 1)
    out = torch.where(v > 0, x * (v_new / torch.where(v > 0, v, torch.ones_like(v))), v_new)
    return out.clamp_(0, 1).mul_(255)


# ---- digital ----
def contrast(u8: torch.Tensor, c: float, draws: Draws, preset: Preset) -> torch.Tensor:
    """Pull every channel towards its mean by the table's factor: (x - mean) * c + mean, computed in 255 units as
    mean * (1 - c) + c * x in one fused op (the reference's / 255 and * 255 cancel up to float rounding)."""
    x = u8.to(torch.float32)
    h, w = x.shape[-2:]
    exact = h * w * 255 < 2**24  # sums of integers stay exact in float32 below 2^24
    sums = x.sum((2, 3), keepdim=True, dtype=torch.float32 if exact else torch.float64)
    means = sums.div_(h * w).to(torch.float32)
    return _to_u8(torch.add(means * (1 - c), x, alpha=c))


def _smoothed_fields(fields: torch.Tensor, sigma: tuple[float, float], alpha: float) -> torch.Tensor:
    """skimage gaussian(field, sigma, mode='reflect', truncate=3) * alpha on [N, 2, H, W] (sigma 0: no filter)."""
    if min(sigma) <= 0:
        return fields * alpha
    return kernels.gaussian_filter(fields, sigma, mode="reflect", truncate=3) * alpha


def _displace(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """map_coordinates(x, (y + dy, x + dx), order=1, mode='reflect') on [N, C, H, W] (bilinear, half-sample mirror)."""
    h, w = x.shape[-2:]
    ys = torch.arange(h, device=x.device, dtype=torch.float32)[:, None]
    xs = torch.arange(w, device=x.device, dtype=torch.float32)[None, :]
    grid = torch.stack([(2 * (xs + dx) + 1) / w - 1, (2 * (ys + dy) + 1) / h - 1], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _random_affine(x: torch.Tensor, jitter: float, draws: Draws) -> torch.Tensor:
    """Hendrycks' small-image affine step: three points jittered by U(-jitter, jitter), the affine map between them
    (cv2.getAffineTransform), the image warped by it (cv2.warpAffine: bilinear, BORDER_REFLECT_101)."""
    n, _, h, w = x.shape
    centre = np.array([h, w], dtype=np.float32) // 2  # (as the reference: built from (H, W), used as (x, y) points)
    side = min(h, w) // 3
    src = np.array([centre + side, [centre[0] + side, centre[1] - side], centre - side], dtype=np.float32)
    dst = src[None] + draws.uniform(-jitter, jitter, (3, 2), torch.float64).cpu().numpy().astype(np.float32)
    ones = np.ones((3, 1), dtype=np.float64)
    a = np.concatenate([src.astype(np.float64), ones], 1)  # [3, 3]: rows (x, y, 1)
    maps = np.stack([np.linalg.solve(a, d.astype(np.float64)).T for d in dst])  # [N, 2, 3]: dst = M @ (x, y, 1)
    full = np.concatenate([maps, np.broadcast_to(np.array([[[0.0, 0.0, 1.0]]]), (n, 1, 3))], 1)
    inverse = torch.as_tensor(np.linalg.inv(full)[:, :2], dtype=torch.float32, device=x.device)  # dst -> src
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=torch.float32),
                            torch.arange(w, device=x.device, dtype=torch.float32), indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], -1)  # [H, W, 3]
    srcs = torch.einsum("nij,hwj->nhwi", inverse, pts)  # [N, H, W, 2] source (x, y) in pixels
    grid = torch.stack([2 * srcs[..., 0] / max(w - 1, 1) - 1, 2 * srcs[..., 1] / max(h - 1, 1) - 1], -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def elastic_transform(u8: torch.Tensor, p: Any, draws: Draws, preset: Preset) -> torch.Tensor:
    """Bilinear warp by a smoothed uniform displacement field (scipy map_coordinates, mode 'reflect').

    imagenet-c (imagecorruptions): fields U(-0.005 H, 0.005 H) smoothed with sigma 0.01 (H, W), times alpha.
    cifar-10-c / tiny-imagenet-c (Hendrycks): a random affine warp first, then U(-1, 1) fields smoothed with sigma,
    times alpha; (alpha, sigma, jitter) are fractions of the image's smaller side.
    """
    n, c, h, w = u8.shape
    x = _unit(u8)
    if preset.elastic == "affine":
        size = min(h, w)
        alpha, sigma, jitter = (v * size for v in p)
        x = _random_affine(x, jitter, draws)
        fields = draws.uniform(-1.0, 1.0, (2, h, w), _layer_dtype(draws))
        fields = _smoothed_fields(fields, (sigma, sigma), alpha)
    else:
        max_d = h * 0.005
        fields = draws.uniform(-max_d, max_d, (2, h, w), _layer_dtype(draws))
        fields = _smoothed_fields(fields, (h * 0.01, w * 0.01), p)
    dx, dy = fields.to(torch.float32).unbind(1)
    return _displace(x, dx, dy).clamp_(0, 1).mul_(255)


def _hwc_numpy(u8: torch.Tensor) -> np.ndarray:
    """uint8 CPU images [N, C, H, W] -> one contiguous [N, H, W, C] NumPy array (for per-image Pillow calls)."""
    return u8.permute(0, 2, 3, 1).contiguous().numpy()


def _hwc_images(u8: torch.Tensor) -> list[np.ndarray]:
    """uint8 CPU RGB images [N, 3, H, W] -> N contiguous [H, W, 3] NumPy arrays by cv2.merge (the same bytes as
    ``_hwc_numpy``, ~8x faster than torch's permuting copy at 224 px)."""
    return [cv2.merge(list(image)) for image in u8.numpy()]


@functools.lru_cache(maxsize=256)
def _cv2_nearest_is_pillows(in_size: int, out_size: int) -> bool:
    """Whether cv2.resize(INTER_NEAREST_EXACT) from ``in_size`` to ``out_size`` samples the source indices of Pillow's
    NEAREST resize (``kernels.pil_nearest_index``), tested on an index ramp (true for every size tried)."""
    ramp = np.arange(in_size, dtype=np.float32)[None, :].repeat(2, 0)
    got = cv2.resize(ramp, (out_size, 2), interpolation=cv2.INTER_NEAREST_EXACT)[0].astype(np.int64)
    return bool(np.array_equal(got, kernels.pil_nearest_index(in_size, out_size)))


def pixelate(u8: torch.Tensor, factor: float, draws: Draws, preset: Preset) -> torch.Tensor:
    """Pillow BOX downscale by the table's factor, then upscale: NEAREST (imagecorruptions) or BOX (Hendrycks'
    small-image generators). On the CPU Pillow itself runs per image (the reference's code, ~0.2 ms at 224 px); on
    other devices ``kernels.pil_box_resize`` reproduces Pillow's integer arithmetic exactly. uint8 out."""
    h, w = u8.shape[-2:]
    sh, sw = int(h * factor), int(w * factor)
    up = Image.Resampling.BOX if preset.pixelate_upscale == "box" else Image.Resampling.NEAREST
    if u8.device.type == "cpu":
        if up == Image.Resampling.NEAREST and _cv2_nearest_is_pillows(sh, h) and _cv2_nearest_is_pillows(sw, w):
            # OpenCV's INTER_NEAREST_EXACT picks Pillow's NEAREST source pixels (checked for these sizes) and
            # cv2.split writes the planes of the [N, 3, H, W] result: ~15 % faster than Pillow's upscale + permute
            planes = np.empty((u8.shape[0], 3, h, w), dtype=np.uint8)
            for i, image in enumerate(_hwc_images(u8)):
                small = np.asarray(Image.fromarray(image).resize((sw, sh), Image.Resampling.BOX))
                cv2.split(cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST_EXACT), list(planes[i]))
            return torch.from_numpy(planes)
        out = np.empty((u8.shape[0], h, w, 3), dtype=np.uint8)
        for i, image in enumerate(_hwc_images(u8)):
            out[i] = np.asarray(Image.fromarray(image).resize((sw, sh), Image.Resampling.BOX).resize((w, h), up))
        return torch.from_numpy(out).permute(0, 3, 1, 2)
    x = kernels.pil_box_resize(u8, sh, sw)
    if up == Image.Resampling.BOX:
        return kernels.pil_box_resize(x, h, w)
    x = x.index_select(-2, torch.as_tensor(kernels.pil_nearest_index(sh, h), device=u8.device))
    return x.index_select(-1, torch.as_tensor(kernels.pil_nearest_index(sw, w), device=u8.device))


def jpeg_compression(u8: torch.Tensor, quality: int, draws: Draws, preset: Preset) -> torch.Tensor:
    """JPEG encode and decode at the table's quality.

    CPU, reference mode: Pillow per image (the reference's codec). CPU, device mode: torchvision's libjpeg-turbo
    batch codec, which gave Pillow's bytes exactly on all 360 images tried (sizes 32, 64, 224; the 10 qualities of
    the three presets) at ~0.6x its cost. CUDA: torchvision's nvJPEG batch codec, whose output can differ slightly.
    """
    if u8.device.type == "cpu" and draws.mode == "device":
        # the codec takes CHW tensors and copies them to HWC: CHW views of cv2.merge's HWC arrays spare that copy
        hwc = [torch.from_numpy(image).permute(2, 0, 1) for image in _hwc_images(u8)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.stack(torchvision.io.decode_jpeg(torchvision.io.encode_jpeg(hwc, quality=quality)))
    if u8.device.type == "cuda":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision.io codecs, still the CUDA path
            encoded = torchvision.io.encode_jpeg(list(u8), quality=quality)
            decoded = torchvision.io.decode_jpeg([e.cpu() for e in encoded], device=u8.device)
        return torch.stack(decoded)
    images = _hwc_numpy(u8)
    out = np.empty_like(images)
    for i, image in enumerate(images):
        buffer = BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        out[i] = np.asarray(Image.open(buffer))
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def spatter(u8: torch.Tensor, p: tuple, draws: Draws, preset: Preset) -> torch.Tensor:
    """Water splashes (severities 1-3) or mud (4-5) from a thresholded, smoothed Gaussian liquid layer."""
    loc, scale, sigma, threshold, strength, mud = p
    n, c, h, w = u8.shape
    x = _unit(u8)
    liquid = draws.normal((h, w), loc=loc, scale=scale, dtype=_layer_dtype(draws))[:, None]
    liquid = kernels.gaussian_filter(liquid, sigma)
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if mud:
        m = kernels.gaussian_filter((liquid > threshold).to(torch.float32), strength)
        m = torch.where(m < 0.8, torch.zeros_like(m), m)
        color = torch.tensor([63, 42, 20], dtype=torch.float32, device=u8.device).view(1, 3, 1, 1) / 255.0
        return (x * (1 - m) + color * m).clamp_(0, 1).mul_(255)
    layers = liquid[:, 0].cpu().numpy()
    if _batched(u8.device) and len(layers) > 1:  # OpenCV releases the GIL: the CPU cores work while the GPU waits
        with ThreadPoolExecutor(max_workers=min(len(layers), os.cpu_count() or 1, 16)) as pool:
            masks = list(pool.map(_water_mask, layers))
    else:
        masks = [_water_mask(layer) for layer in layers]
    m = torch.from_numpy(np.stack(masks))[:, None].to(u8.device)
    peak = m.amax((2, 3), keepdim=True)
    m = torch.where(peak > 0, m / torch.where(peak > 0, peak, torch.ones_like(peak)), m) * strength
    color = torch.tensor([175, 238, 238], dtype=torch.float32, device=u8.device).view(1, 3, 1, 1) / 255.0
    return (x + m * color).clamp_(0, 1).mul_(255)


def _water_mask(liquid: np.ndarray) -> np.ndarray:
    """The reference's OpenCV edge / distance / histogram pipeline giving spatter's unnormalised water mask."""
    layer = (liquid * 255).astype(np.uint8)
    dist = 255 - cv2.Canny(layer, 50, 150)
    dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
    dist = cv2.blur(dist, (3, 3)).astype(np.float32)
    return layer * dist


def saturate(u8: torch.Tensor, p: tuple, draws: Draws, preset: Preset) -> torch.Tensor:
    """HSV saturation * a + b, in closed form: with hue and V fixed, each channel is V - S * V * w(hue).

    Gray pixels (S = 0, hue 0 in skimage) become (V, V (1 - S'), V (1 - S')).
    """
    a, b = p
    x = _unit(u8)
    v = x.amax(1, keepdim=True)
    delta = v - x.amin(1, keepdim=True)
    colored = delta > 0
    s = torch.where(colored, delta / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    s_new = (s * a + b).clamp(0, 1)
    out = v - s_new * v * (v - x) / torch.where(colored, delta, torch.ones_like(delta))
    gray = torch.cat([v, v * (1 - s_new), v * (1 - s_new)], 1)
    return torch.where(colored, out, gray).clamp_(0, 1).mul_(255)


ENGINES: dict[str, Engine] = {f.__name__: f for f in (
    gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur, motion_blur, zoom_blur, snow, frost, fog,
    brightness, contrast, elastic_transform, pixelate, jpeg_compression, speckle_noise, gaussian_blur, spatter,
    saturate)}


def resolve(images: torch.Tensor, preset: str | None, rng: str | None) -> tuple[str, str]:
    """(preset, rng mode) for ``images``: None = ``default_preset(H, W)`` / 'device' on CUDA, 'reference' elsewhere."""
    preset = default_preset(images.shape[-2], images.shape[-1]) if preset is None else preset
    check_preset(preset)
    return preset, check_rng(rng, images.device)


def corrupt_torch(images: torch.Tensor, corruption: str, severity: int, keys: Sequence[int], seed: int = 0,
                  preset: str | None = None, rng: str | None = None) -> torch.Tensor:
    """Corrupt uint8 [N, C, H, W] images (C = 1 or 3) on their device; uint8 [N, C, H, W].

    ``preset``: a name from ``presets.PRESETS`` (None: ``default_preset`` of the image size); ``rng``: 'reference'
    or 'device' (None: 'device' on CUDA tensors, 'reference' otherwise). Gray images are replicated to RGB,
    corrupted, and the rounded channel mean is returned (as the reference backend). ValueError for bad arguments.
    """
    check_corruption(corruption, severity)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 [N, 1 or 3, H, W] images, got {images.dtype} {tuple(images.shape)}")
    keys = check_keys(keys, images.shape[0], seed)
    preset, rng = resolve(images, preset, rng)
    if images.shape[0] == 0:
        return images.clone()
    table = PRESET_TABLES[preset]
    param = table.tables[corruption][severity - 1]
    rgb = images.expand(-1, 3, -1, -1).contiguous() if images.shape[1] == 1 else images.contiguous()
    draws = Draws.create(rng, seed, corruption, severity, keys, images.device)
    chunk = len(keys)
    if images.device.type == "cpu":
        chunk = max(1, CPU_CHUNK_PIXELS // (images.shape[2] * images.shape[3]))
    result = torch.empty_like(images, memory_format=torch.contiguous_format)
    with torch.no_grad():
        for start in range(0, len(keys), chunk):
            out = ENGINES[corruption](rgb[start:start + chunk], param, draws[start:start + chunk], table)
            if out.dtype != torch.uint8:  # the copy into uint8 truncates, i.e. floors these non-negative values
                out = out.clamp_(0, 255)
                if images.shape[1] == 1:
                    out = out.floor_()
            if images.shape[1] == 1:
                out = torch.round(out.to(torch.float32).mean(1, keepdim=True))
            result[start:start + chunk] = out
    return result
