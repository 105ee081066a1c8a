"""Batched torch implementation of the 19 ImageNet-C corruptions (CPU and CUDA, any image size).

Parameter tables per severity are those of imagecorruptions 1.1.2; frost images are read from the installed
package. Randomness: each image gets its own ``np.random.RandomState`` seeded with
``catalog.image_seed(seed, corruption, severity, key)`` -- the same seed the reference backend puts into the global
NumPy RNG -- and every random quantity is drawn from it in the reference's order and shapes. The draws are therefore
identical to the reference's and the arithmetic (filters, zooms, colour conversions, warps, compositing) runs batched
in torch. Results depend only on (seed, corruption, severity, key), never on batch size, order or process (bitwise
on one device and thread setting; CPU and CUDA may differ by float rounding). The cost of exact draws: the random
numbers come from NumPy on the CPU, one image at a time, so the noise corruptions (shot_noise above all, whose
Poisson draws dominate) run at about the reference's speed; everything else is batched.

Exact where the reference's algorithm is sequential:
* glass_blur's "swap" loop: the reference's ``x[p], x[q] = x[q], x[p]`` on NumPy row views is in fact a copy
  ``x[p] = x[q]`` in reverse raster order, so each pixel ends up with the value at the end of a pointer chain through
  already-processed positions. The chains are resolved in parallel by pointer jumping (O(log length) gathers).

Documented differences from the reference:
* Arithmetic is float32 (float64 for snow, fog and spatter's random layers); the final float -> uint8 step truncates
  like the reference, so a value that lies within float error of an integer can differ by one level.
* jpeg_compression runs Pillow per image on the CPU (the reference's codec, so identical); on CUDA it uses
  torchvision's nvJPEG batch codec, whose output can differ slightly from libjpeg's.
* spatter (severities 1-3): the liquid mask's edge/distance/histogram steps run in OpenCV on the CPU, per image, as in
  the reference; where the mask is empty the reference divides 0 by 0 and returns a black image, here the image is
  returned unchanged.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from io import BytesIO
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.io
from PIL import Image

from . import kernels
from .catalog import check_corruption, check_keys, image_seed

# Pixels per engine call on the CPU (eight 224x224 images): chunks this small keep the float intermediates in cache
# and still amortise per-op overhead on small images. Images are independent, so chunking changes no output.
# CUDA takes the whole batch at once.
CPU_CHUNK_PIXELS = 8 * 224 * 224

Engine = Callable[[torch.Tensor, int, list[np.random.RandomState]], torch.Tensor]

# ---- imagecorruptions 1.1.2 parameter tables, severities 1..5 ----
GAUSSIAN_NOISE = [.08, .12, 0.18, 0.26, 0.38]
SHOT_NOISE = [60, 25, 12, 5, 3]
IMPULSE_NOISE = [.03, .06, .09, 0.17, 0.27]
SPECKLE_NOISE = [.15, .2, 0.35, 0.45, 0.6]
GAUSSIAN_BLUR = [1, 2, 3, 4, 6]
GLASS_BLUR = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)]  # sigma, max_delta, iterations
DEFOCUS_BLUR = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)]  # radius, alias_blur
MOTION_BLUR = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)]  # radius, sigma
ZOOM_BLUR = [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
             np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)]
FOG = [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)]  # strength, wibble decay
FROST = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)]  # image weight, frost weight
FROST_FILES = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg"]
SNOW = [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)]
SPATTER = [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
           (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)]
CONTRAST = [0.4, .3, .2, .1, .05]
BRIGHTNESS = [.1, .2, .3, .4, .5]
SATURATE = [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)]
JPEG_QUALITY = [25, 18, 15, 10, 7]
PIXELATE = [0.6, 0.5, 0.4, 0.3, 0.25]
ELASTIC_ALPHA = [250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12]


def _unit(u8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1]."""
    return u8.to(torch.float32) / 255.0


def _stack_draws(arrays: list[np.ndarray], device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-image NumPy draws [H, W(, C)] -> a [N, C, H, W] tensor (C = 1 for 2-D draws)."""
    t = torch.from_numpy(np.stack(arrays))
    t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    return t.to(device=device, dtype=dtype)


def _image_shape(u8: torch.Tensor) -> tuple[int, int, int]:
    """The reference's HxWxC shape of one image of the batch."""
    return u8.shape[2], u8.shape[3], u8.shape[1]


# ---- noise ----
def gaussian_noise(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """x + N(0, c^2) per pixel and channel."""
    c = GAUSSIAN_NOISE[severity - 1]
    noise = _stack_draws([r.normal(size=_image_shape(u8), scale=c) for r in rngs], u8.device)
    return (_unit(u8) + noise).clamp(0, 1) * 255


def shot_noise(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """Poisson(x * c) / c; the Poisson draws need the per-pixel rates, so they are drawn on the CPU."""
    c = SHOT_NOISE[severity - 1]
    lam = u8.cpu().permute(0, 2, 3, 1).numpy() / 255.0 * c
    counts = _stack_draws([r.poisson(l) for r, l in zip(rngs, lam)], u8.device)
    return (counts / float(c)).clamp(0, 1) * 255


def impulse_noise(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """Salt-and-pepper noise as skimage.util.random_noise(mode='s&p') with the reference's seeded Generator."""
    amount = IMPULSE_NOISE[severity - 1]
    shape = _image_shape(u8)
    flipped, salted = [], []
    for r in rngs:
        g = np.random.default_rng(int(r.randint(0, 2**32, dtype=np.uint64)))
        flipped.append(g.random(shape) <= amount)
        salted.append(g.random(shape) <= 0.5)
    flip = _stack_draws(flipped, u8.device, torch.bool)
    salt = _stack_draws(salted, u8.device, torch.float32)
    return torch.where(flip, salt, _unit(u8)) * 255


def speckle_noise(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """x + x * N(0, c^2)."""
    c = SPECKLE_NOISE[severity - 1]
    noise = _stack_draws([r.normal(size=_image_shape(u8), scale=c) for r in rngs], u8.device)
    x = _unit(u8)
    return (x + x * noise).clamp(0, 1) * 255


# ---- blur ----
def gaussian_blur(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """skimage Gaussian filter (edge mode 'nearest'), sigma from the table."""
    return kernels.gaussian_filter(_unit(u8), GAUSSIAN_BLUR[severity - 1]).clamp(0, 1) * 255


def _glass_sources(height: int, width: int, delta: int, offsets: np.ndarray, device: torch.device) -> torch.Tensor:
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


def glass_blur(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """Gaussian blur, the reference's local pixel shuffle (exact, in parallel), Gaussian blur again."""
    sigma, delta, iterations = GLASS_BLUR[severity - 1]
    n, c, h, w = u8.shape
    x = torch.floor(kernels.gaussian_filter(_unit(u8), sigma) * 255)
    nh, nw = max(h - 2 * delta, 0), max(w - 2 * delta, 0)
    draws = np.stack([r.randint(-delta, delta, size=(iterations, nh, nw, 2)) for r in rngs])
    flat = x.reshape(n, c, h * w)
    for it in range(iterations):
        if nh and nw:
            src = _glass_sources(h, w, delta, draws[:, it], u8.device)
            flat = flat.gather(2, src[:, None, :].expand(n, c, h * w))
    x = flat.reshape(n, c, h, w) / 255.0
    return kernels.gaussian_filter(x, sigma).clamp(0, 1) * 255


@functools.lru_cache(maxsize=None)
def _defocus_kernel(radius: int, alias_blur: float) -> np.ndarray:
    """The reference's anti-aliased disk kernel."""
    size, ksize = (8, (3, 3)) if radius <= 8 else (radius, (5, 5))
    grid = np.arange(-size, size + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    disk /= np.sum(disk)
    return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)


def defocus_blur(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """Convolution with an anti-aliased disk (cv2.filter2D, border reflect-101)."""
    kernel = _defocus_kernel(*DEFOCUS_BLUR[severity - 1])
    return kernels.filter2d(_unit(u8), kernel).clamp(0, 1) * 255


def motion_blur(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """Line blur along a random angle in [-45, 45] degrees, edge-replicated shifts."""
    radius, sigma = MOTION_BLUR[severity - 1]
    x = u8.to(torch.float32)
    h, w = x.shape[-2:]
    out = torch.stack([kernels.motion_blur(x[i], kernels.motion_blur_taps(radius, sigma, r.uniform(-45, 45), h, w))
                       for i, r in enumerate(rngs)])
    return out.clamp(0, 255)


def zoom_blur(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """Mean of the image and its centre zooms by the table's factors."""
    zooms = ZOOM_BLUR[severity - 1]
    x = _unit(u8)
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    for z in zooms:
        layer = kernels.clipped_zoom(x, float(z))[..., :h, :w]
        out[..., :layer.shape[-2], :layer.shape[-1]] += layer
    return ((x + out) / (len(zooms) + 1)).clamp(0, 1) * 255


# ---- weather ----
def snow(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """Zoomed, thresholded, motion-blurred Gaussian snow layer over a brightened image."""
    loc, scale, zoom, threshold, radius, sigma, mix = SNOW[severity - 1]
    x = _unit(u8)
    h, w = x.shape[-2:]
    layers = []
    for r in rngs:
        layer = torch.from_numpy(r.normal(size=(h, w), loc=loc, scale=scale)).to(u8.device)
        layer = kernels.clipped_zoom(layer, zoom)
        layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
        taps = kernels.motion_blur_taps(radius, sigma, r.uniform(-135, -45), *layer.shape)
        layers.append(kernels.motion_blur(layer, taps)[:h, :w])
    flakes = (torch.round(torch.stack(layers) * 255) / 255).to(torch.float32)[:, None]
    gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    x = mix * x + (1 - mix) * torch.maximum(x, gray * 1.5 + 0.5)
    return (x + flakes + flakes.flip(-2, -1)).clamp(0, 1) * 255


@functools.lru_cache(maxsize=64)
def _frost_layer(index: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """Frost photo ``index`` from the installed imagecorruptions package, rescaled as the reference does, RGB."""
    spec = importlib.util.find_spec("imagecorruptions")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("frost needs the imagecorruptions package (its frost images) to be installed")
    path = Path(spec.submodule_search_locations[0]) / "frost" / FROST_FILES[index]
    frost = cv2.imread(str(path))
    if frost is None:
        raise FileNotFoundError(f"cannot read frost image {path}")
    fh, fw = frost.shape[:2]
    scale = 1.0
    if fh < height or fw < width:
        scale = max(height / fh if fh < height else 0.0, width / fw if fw < width else 0.0)
    scale *= 1.1
    size = (int(np.ceil(fw * scale)), int(np.ceil(fh * scale)))
    frost = cv2.resize(frost, dsize=size, interpolation=cv2.INTER_CUBIC)[..., [2, 1, 0]]
    return torch.from_numpy(np.ascontiguousarray(frost)).permute(2, 0, 1).to(device=device, dtype=torch.float32)


def frost(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """Weighted sum of the image and a random crop of a random frost photo."""
    a, b = FROST[severity - 1]
    h, w = u8.shape[-2:]
    crops = []
    for r in rngs:
        layer = _frost_layer(int(r.randint(5)), h, w, u8.device)
        top, left = r.randint(0, layer.shape[1] - h), r.randint(0, layer.shape[2] - w)
        crops.append(layer[:, top:top + h, left:left + w])
    return (a * u8.to(torch.float32) + b * torch.stack(crops)).clamp(0, 255)


def _plasma_fractal(mapsize: int, decay: float, rngs: list[np.random.RandomState],
                    device: torch.device) -> torch.Tensor:
    """Diamond-square height maps in [0, 1], [N, mapsize, mapsize] float64, with the reference's draws."""
    levels = []
    step, wibble = mapsize, 100.0
    while step >= 2:
        levels.append((step, wibble))
        step //= 2
        wibble /= decay
    counts = [3 * (mapsize // s) ** 2 for s, _ in levels]
    u = torch.from_numpy(np.stack([r.random_sample(sum(counts)) for r in rngs])).to(device)
    n = len(rngs)
    m = torch.zeros(n, mapsize, mapsize, dtype=torch.float64, device=device)
    start = 0
    for (step, wibble), count in zip(levels, counts):
        k = mapsize // step
        draws = (-wibble + (wibble - -wibble) * u[:, start:start + count]).reshape(n, 3, k, k)
        start += count
        half = step // 2
        corner = m[:, 0::step, 0::step]
        acc = corner + torch.roll(corner, -1, 1)
        acc = acc + torch.roll(acc, -1, 2)
        m[:, half::step, half::step] = acc / 4 + wibble * draws[:, 0]
        dr = m[:, half::step, half::step]
        ul = m[:, 0::step, 0::step]
        lt = dr + torch.roll(dr, 1, 1) + (ul + torch.roll(ul, -1, 2))
        m[:, 0::step, half::step] = lt / 4 + wibble * draws[:, 1]
        tt = dr + torch.roll(dr, 1, 2) + (ul + torch.roll(ul, -1, 1))
        m[:, half::step, 0::step] = tt / 4 + wibble * draws[:, 2]
    m = m - m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True)


def fog(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """Plasma-fractal fog added to the image, then contrast compressed."""
    strength, decay = FOG[severity - 1]
    n, c, h, w = u8.shape
    mapsize = 1 << (max(h, w, c) - 1).bit_length()
    x = u8.to(torch.float64) / 255.0
    max_val = x.amax((1, 2, 3), keepdim=True)
    x = x + strength * _plasma_fractal(mapsize, decay, rngs, u8.device)[:, None, :h, :w]
    return (x * max_val / (max_val + strength)).clamp(0, 1).to(torch.float32) * 255


def brightness(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """HSV value + c, in closed form: with hue and saturation fixed, RGB scales with V (black becomes gray V')."""
    x = _unit(u8)
    v = x.amax(1, keepdim=True)
    v_new = (v + BRIGHTNESS[severity - 1]).clamp(0, 1)
    out = torch.where(v > 0, x * (v_new / torch.where(v > 0, v, torch.ones_like(v))), v_new)
    return out.clamp(0, 1) * 255


# ---- digital ----
def contrast(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """Pull every channel towards its mean by the table's factor."""
    x = _unit(u8)
    means = x.to(torch.float64).mean((2, 3), keepdim=True).to(torch.float32)
    return ((x - means) * CONTRAST[severity - 1] + means).clamp(0, 1) * 255


def elastic_transform(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """Bilinear warp by a smoothed uniform displacement field (scipy map_coordinates, mode 'reflect')."""
    alpha = ELASTIC_ALPHA[severity - 1]
    n, c, h, w = u8.shape
    max_d = h * 0.005
    fields = _stack_draws([np.stack([r.uniform(-max_d, max_d, size=(h, w)), r.uniform(-max_d, max_d, size=(h, w))])
                           .transpose(1, 2, 0) for r in rngs], u8.device, torch.float64)
    fields = (kernels.gaussian_filter(fields, (h * 0.01, w * 0.01), mode="reflect", truncate=3) * alpha)
    dx, dy = fields.to(torch.float32).unbind(1)
    ys = torch.arange(h, device=u8.device, dtype=torch.float32)[:, None]
    xs = torch.arange(w, device=u8.device, dtype=torch.float32)[None, :]
    grid = torch.stack([(2 * (xs + dx) + 1) / w - 1, (2 * (ys + dy) + 1) / h - 1], dim=-1)
    out = F.grid_sample(_unit(u8), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.clamp(0, 1) * 255


def pixelate(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """Pillow BOX downscale by the table's factor (horizontal pass first, 8-bit between passes), NEAREST upscale."""
    factor = PIXELATE[severity - 1]
    h, w = u8.shape[-2:]
    sh, sw = int(h * factor), int(w * factor)
    wh = torch.as_tensor(kernels.pil_box_weights(h, sh), dtype=torch.float32, device=u8.device)
    ww = torch.as_tensor(kernels.pil_box_weights(w, sw), dtype=torch.float32, device=u8.device)
    x = torch.floor(u8.to(torch.float32) @ ww.T + 0.5).clamp(0, 255)
    x = torch.floor(wh @ x + 0.5).clamp(0, 255)
    x = x.index_select(-2, torch.as_tensor(kernels.pil_nearest_index(sh, h), device=u8.device))
    return x.index_select(-1, torch.as_tensor(kernels.pil_nearest_index(sw, w), device=u8.device))


def jpeg_compression(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """JPEG encode and decode at the table's quality: Pillow on the CPU (the reference's codec), nvJPEG on CUDA."""
    quality = JPEG_QUALITY[severity - 1]
    if u8.device.type == "cuda":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision.io codecs, still the CUDA path
            encoded = torchvision.io.encode_jpeg(list(u8), quality=quality)
            decoded = torchvision.io.decode_jpeg([e.cpu() for e in encoded], device=u8.device)
        return torch.stack(decoded).to(torch.float32)
    out = []
    for image in u8.permute(0, 2, 3, 1).numpy():
        buffer = BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        out.append(np.asarray(Image.open(buffer)))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(torch.float32)


def spatter(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """Water splashes (severities 1-3) or mud (4-5) from a thresholded, smoothed Gaussian liquid layer."""
    loc, scale, sigma, threshold, strength, mud = SPATTER[severity - 1]
    n, c, h, w = u8.shape
    x = _unit(u8)
    liquid = _stack_draws([r.normal(size=(h, w), loc=loc, scale=scale) for r in rngs], u8.device, torch.float64)
    liquid = kernels.gaussian_filter(liquid, sigma)
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if mud:
        m = kernels.gaussian_filter((liquid > threshold).to(torch.float32), strength)
        m = torch.where(m < 0.8, torch.zeros_like(m), m)
        color = torch.tensor([63, 42, 20], dtype=torch.float32, device=u8.device).view(1, 3, 1, 1) / 255.0
        return (x * (1 - m) + color * m).clamp(0, 1) * 255
    masks = [_water_mask(layer) for layer in liquid[:, 0].cpu().numpy()]
    m = torch.from_numpy(np.stack(masks))[:, None].to(u8.device)
    peak = m.amax((2, 3), keepdim=True)
    m = torch.where(peak > 0, m / torch.where(peak > 0, peak, torch.ones_like(peak)), m) * strength
    color = torch.tensor([175, 238, 238], dtype=torch.float32, device=u8.device).view(1, 3, 1, 1) / 255.0
    return (x + m * color).clamp(0, 1) * 255


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


def saturate(u8: torch.Tensor, severity: int, rngs: list[np.random.RandomState]) -> torch.Tensor:
    """HSV saturation * a + b, in closed form: with hue and V fixed, each channel is V - S * V * w(hue).

    Gray pixels (S = 0, hue 0 in skimage) become (V, V (1 - S'), V (1 - S')).
    """
    a, b = SATURATE[severity - 1]
    x = _unit(u8)
    v = x.amax(1, keepdim=True)
    delta = v - x.amin(1, keepdim=True)
    colored = delta > 0
    s = torch.where(colored, delta / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    s_new = (s * a + b).clamp(0, 1)
    out = v - s_new * v * (v - x) / torch.where(colored, delta, torch.ones_like(delta))
    gray = torch.cat([v, v * (1 - s_new), v * (1 - s_new)], 1)
    return torch.where(colored, out, gray).clamp(0, 1) * 255


ENGINES: dict[str, Engine] = {f.__name__: f for f in (
    gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur, motion_blur, zoom_blur, snow, frost, fog,
    brightness, contrast, elastic_transform, pixelate, jpeg_compression, speckle_noise, gaussian_blur, spatter,
    saturate)}


def corrupt_torch(images: torch.Tensor, corruption: str, severity: int, keys: Sequence[int],
                  seed: int = 0) -> torch.Tensor:
    """Corrupt uint8 [N, C, H, W] images (C = 1 or 3) on their device; uint8 [N, C, H, W].

    Gray images are replicated to RGB, corrupted, and the rounded channel mean is returned (as the reference backend).
    """
    check_corruption(corruption, severity)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 [N, 1 or 3, H, W] images, got {images.dtype} {tuple(images.shape)}")
    keys = check_keys(keys, images.shape[0], seed)
    if images.shape[0] == 0:
        return images.clone()
    rgb = images.expand(-1, 3, -1, -1).contiguous() if images.shape[1] == 1 else images.contiguous()
    rngs = [np.random.RandomState(image_seed(seed, corruption, severity, k)) for k in keys]
    chunk = len(keys)
    if images.device.type == "cpu":
        chunk = max(1, CPU_CHUNK_PIXELS // (images.shape[2] * images.shape[3]))
    outs = []
    with torch.no_grad():
        for start in range(0, len(keys), chunk):
            out = ENGINES[corruption](rgb[start:start + chunk], severity, rngs[start:start + chunk])
            out = torch.floor(out.clamp(0, 255))
            if images.shape[1] == 1:
                out = torch.round(out.mean(1, keepdim=True))
            outs.append(out.to(torch.uint8))
    return torch.cat(outs)
