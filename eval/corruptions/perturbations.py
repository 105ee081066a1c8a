"""ImageNet-P-style perturbation sequences generated at the model's input size, seeded per image, cached as uint8.

Parameters follow the published ImageNet-P generation (Hendrycks & Dietterich 2019), frame index t:

* gaussian_noise: frame 0 clean, frames 1..30 x + N(0, s^2), s = 0.03 / 0.05 / 0.08 for difficulty 1 / 2 / 3.
* shot_noise: frame 0 clean, frames 1..30 Poisson(x * L) / L, L = 300 / 120 / 60.
* speckle_noise: frame 0 clean, frames 1..30 x + x * N(0, s^2), s = 0.05 / 0.10 / 0.15.
* motion_blur: ImageMagick-style one-sided Gaussian streak, radius 10, sigma 3, angle (t - 30) * 4 degrees.
* zoom_blur: frame t is the mean of the zooms 1 + 0.004 j for j = 0..t (frame 0 clean).
* gaussian_blur: sigma 0.25 + 0.035 t.
* snow: a fixed snow layer (N(0.05, 0.3^2), zoomed x3, < 0.5 cut) motion-blurred with radius 14, sigma 4,
  angle 4 t - 150 degrees, plus its 180-degree rotation, over the whitened image 0.85 x + 0.15 max(x, 1.5 g + 0.5).
* spatter: a fixed liquid layer (N(0.65, 0.27^2), Gaussian sigma 3.7, < 0.69 cut) that runs down one step per frame
  (column convolution with [0.05, 0.1, 0.15, 0.7]); pale-turquoise water drawn from its edges.
* brightness: HSV value + (t - 15) * 0.02 (frame 15 clean).
* translate (41 frames): horizontal shift t - 20 px; rotate: t - 15 degrees; shear: t - 15 degrees;
  tilt: 3-D rotation about x and y by t - 15 degrees, focal length f = sqrt(w^2 + h^2) (the reference's projection
  also shrinks every frame by f / (f + 1), kept); scale: (40 + 2.5 t) / 100.

Lengths in pixels are given at 224 px and scaled to the image size: the shift exactly (-20..+20 px at 224 is
-2.9..+2.9 px at 32); blur radii and sigmas (motion, Gaussian, snow, the spatter layer) by the same factor but never
below half their 224-px values, which is about what the authors chose for CIFAR-10-P at 32 px (motion radius 6 /
sigma 1.8, Gaussian sigma 0.3-0.75, spatter sigma 1.75); scaled down further, the blur sequences would not move.
The spatter layer is rendered at 224 px times that factor (112 px for small images) and resized to the image.
The benchmark warped a larger resized image and cropped it; here the image is all there is, so warps fill with
black (0). Frames are quantised to uint8 by rounding (the original truncated).

Generation is batched on the images' device (or ``device=``): every frame of every image in a few tensor ops per
frame, random numbers from one ``torch.Generator`` per image on that device (so a sequence depends only on (seed,
perturbation, difficulty, key), not on the batch; CPU and CUDA draw different numbers). shot_noise samples its
Poisson counts exactly from per-value CDF tables (``draws.Draws.poisson_u8``: one generator per image, all frames
in one batch; torch.poisson takes a single generator per call; on the CPU measured 1.3x faster than per-image
torch.poisson at 64 px, difficulty 3). Exception: spatter's water masks run OpenCV's edge / distance /
histogram steps on the CPU, per image and frame, as the reference does.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from eval.corruptions.catalog import image_seed
from eval.corruptions.catalog import ALL_PERTURBATIONS
from eval.metrics.perturbation import is_noise_perturbation
from nst_common.files import write_array

REFERENCE_SIZE = 224
# Bump when any sequence changes, so cached sequences are not reused. 2: shot_noise from the table sampler (issue 13).
GENERATOR_VERSION = 2
NOISE_LEVELS: dict[str, tuple[float, float, float]] = {
    "gaussian_noise": (0.03, 0.05, 0.08),
    "shot_noise": (300.0, 120.0, 60.0),
    "speckle_noise": (0.05, 0.10, 0.15),
}
_BILINEAR = TF.InterpolationMode.BILINEAR


def num_frames(perturbation: str) -> int:
    """Frames in a sequence: 41 for translate, 31 for the others."""
    check_perturbation(perturbation)
    return 41 if perturbation == "translate" else 31


def check_perturbation(perturbation: str, difficulty: int = 1) -> None:
    """Raise ValueError naming the bad perturbation or difficulty and the valid ones."""
    if perturbation not in ALL_PERTURBATIONS:
        raise ValueError(f"unknown perturbation {perturbation!r}; valid: {', '.join(ALL_PERTURBATIONS)}")
    if difficulty not in (1, 2, 3):
        raise ValueError(f"invalid difficulty {difficulty!r}; valid: 1, 2, 3")


def frame_parameters(perturbation: str, difficulty: int = 1) -> list[float]:
    """The per-frame parameter of a sequence (224-px units; noise: the noise level, 0 for the clean frame 0)."""
    check_perturbation(perturbation, difficulty)
    n = num_frames(perturbation)
    if is_noise_perturbation(perturbation):
        return [0.0] + [NOISE_LEVELS[perturbation][difficulty - 1]] * (n - 1)
    per_frame = {
        "motion_blur": lambda t: (t - 30) * 4.0,  # streak angle in degrees
        "zoom_blur": lambda t: 1 + 0.004 * t,  # largest zoom in the average
        "gaussian_blur": lambda t: 0.25 + 0.035 * t,  # sigma
        "snow": lambda t: 4.0 * t - 150,  # snowfall angle in degrees
        "spatter": lambda t: float(t),  # steps the liquid has run down
        "brightness": lambda t: (t - 15) * 0.02,  # added HSV value
        "translate": lambda t: float(t - 20),  # shift in px at 224
        "rotate": lambda t: float(t - 15),  # degrees
        "shear": lambda t: float(t - 15),  # degrees
        "tilt": lambda t: float(t - 15),  # degrees about x and y
        "scale": lambda t: (t * 2.5 + 40) / 100,  # zoom factor
    }[perturbation]
    return [per_frame(t) for t in range(n)]


def generate_sequences(images: torch.Tensor, perturbation: str, keys: Sequence[int], seed: int = 0,
                       difficulty: int = 1, device: torch.device | str | None = None) -> torch.Tensor:
    """Sequences of uint8 images [N, C, H, W] (C = 1 or 3) -> uint8 [N, T, C, H, W] on ``device``.

    Randomness per image is a function of (seed, perturbation, difficulty, key) only. `difficulty` selects the noise
    level of the noise perturbations; the others have one sequence (their difficulty is a stride when evaluating).
    ``device``: where to generate (None: the images' device); the result stays there.
    """
    check_perturbation(perturbation, difficulty)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 images [N, C, H, W] with C = 1 or 3, got {images.dtype} "
                         f"{tuple(images.shape)}")
    keys = [int(k) for k in keys]
    if len(keys) != images.shape[0]:
        raise ValueError(f"got {len(keys)} keys for {images.shape[0]} images; pass one key per image")
    level = difficulty if is_noise_perturbation(perturbation) else 1
    device = images.device if device is None else torch.device(device)
    generators = [torch.Generator(device=device).manual_seed(image_seed(seed, perturbation, level, k)) for k in keys]
    x = images.to(device).float() / 255.0
    params = frame_parameters(perturbation, level)
    frames = _RENDERERS[perturbation](x, params, generators)
    return frames.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def _blur_scale(x: torch.Tensor) -> float:
    return max(min(x.shape[-2:]) / REFERENCE_SIZE, 0.5)


def _standard_normal(shape: tuple[int, ...], generators: list[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    """N(0, 1) draws [N, *shape], row i from generator i (what torch.randn(shape, generator=g_i) gives)."""
    out = torch.empty((len(generators), *shape), dtype=like.dtype, device=like.device)
    for row, g in zip(out, generators):
        row.normal_(generator=g)
    return out


def _noise_frames(x: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    """The clean frame, then the noisy frames [N, T - 1, C, H, W] clamped to [0, 1] -> [N, T, C, H, W]."""
    return torch.cat([x[:, None], noisy.clamp(0, 1)], dim=1)


def _gaussian_noise(x, params, generators):
    noise = _standard_normal((len(params) - 1, *x.shape[1:]), generators, x)
    return _noise_frames(x, x[:, None] + params[1] * noise)


def _shot_noise(x, params, generators):
    from eval.corruptions.draws import Draws

    lam = params[1]
    u8 = torch.round(x * 255).to(torch.uint8)[:, None].expand(-1, len(params) - 1, -1, -1, -1)
    counts = Draws("device", [None] * len(generators), generators, x.device).poisson_u8(u8, lam)
    return _noise_frames(x, counts / lam)


def _speckle_noise(x, params, generators):
    noise = _standard_normal((len(params) - 1, *x.shape[1:]), generators, x)
    frames = x[:, None]
    return _noise_frames(x, frames + frames * params[1] * noise)


def _per_frame(x: torch.Tensor, params: list[float], warp) -> torch.Tensor:
    """Apply `warp(images, param)` once per frame to the whole batch -> [N, T, C, H, W]."""
    return torch.stack([warp(x, p) for p in params], dim=1)


def _affine(x: torch.Tensor, angle: float = 0.0, shift: float = 0.0, scale: float = 1.0,
            shear: float = 0.0) -> torch.Tensor:
    return TF.affine(x, angle=angle, translate=[shift, 0.0], scale=scale, shear=[shear, 0.0],
                     interpolation=_BILINEAR, fill=0.0)


def _translate(x, params, _):
    pixels = x.shape[-1] / REFERENCE_SIZE
    return _per_frame(x, params, lambda im, p: _affine(im, shift=p * pixels))


def _rotate(x, params, _):
    return _per_frame(x, params, lambda im, p: _affine(im, angle=p))


def _shear(x, params, _):
    return _per_frame(x, params, lambda im, p: _affine(im, shear=p))


def _scale_frames(x, params, _):
    return _per_frame(x, params, lambda im, p: _affine(im, scale=p))


def tilt_homography(width: int, height: int, degrees: float) -> np.ndarray:
    """3x3 source-to-destination homography of the benchmark's tilt: rotate about x and y, project back."""
    phi = theta = math.radians(degrees)
    f = math.hypot(width, height)
    p1 = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1], [0, 0, 1]])
    rx = np.array([[1, 0, 0, 0], [0, math.cos(theta), -math.sin(theta), 0],
                   [0, math.sin(theta), math.cos(theta), 0], [0, 0, 0, 1]])
    ry = np.array([[math.cos(phi), 0, -math.sin(phi), 0], [0, 1, 0, 0],
                   [math.sin(phi), 0, math.cos(phi), 0], [0, 0, 0, 1]])
    t = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]])
    p2 = np.array([[f, 0, width / 2, 0], [0, f, height / 2, 0], [0, 0, 1, 0]])
    return p2 @ t @ rx @ ry @ p1


def _tilt(x, params, _):
    h, w = x.shape[-2:]
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], dtype=np.float64)

    def warp(im: torch.Tensor, degrees: float) -> torch.Tensor:
        mapped = corners @ tilt_homography(w, h, degrees).T
        ends = (mapped[:, :2] / mapped[:, 2:]).tolist()
        return TF.perspective(im, corners[:, :2].tolist(), ends, interpolation=_BILINEAR, fill=0.0)

    return _per_frame(x, params, warp)


def _zoom_blur(x, params, _):
    zooms = torch.stack([_affine(x, scale=p) for p in params[1:]], dim=1)  # [N, T-1, C, H, W]
    sums = torch.cat([x[:, None], zooms], dim=1).cumsum(dim=1)
    counts = torch.arange(1, len(params) + 1, dtype=x.dtype, device=x.device).view(1, -1, 1, 1, 1)
    return sums / counts


def _brightness(x, params, _):
    value = x.amax(dim=1, keepdim=True)  # HSV value; hue and saturation stay, so RGB scales with it
    frames = []
    for c in params:
        new_value = (value + c).clamp(0, 1)
        ratio = torch.where(value > 0, new_value / value.clamp_min(1e-12), torch.zeros_like(value))
        frames.append(torch.where(value > 0, x * ratio, new_value.expand_as(x)))
    return torch.stack(frames, dim=1)


def _gaussian_kernel(sigma: float, truncate: float) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def _gaussian_blur_image(x: torch.Tensor, sigma: float, truncate: float = 6.0) -> torch.Tensor:
    kernel = _gaussian_kernel(sigma, truncate).to(x.device)
    r = kernel.numel() // 2
    if r == 0:
        return x
    c = x.shape[1]
    padded = F.pad(x, (r, r, r, r), mode="replicate")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)


def _gaussian_blur(x, params, _):
    s = _blur_scale(x)
    return _per_frame(x, params, lambda im, sigma: _gaussian_blur_image(im, sigma * s))


def _motion_blur_image(x: torch.Tensor, degrees: float, radius: float, sigma: float, pixels: float) -> torch.Tensor:
    """One-sided Gaussian streak along `degrees` (radius, sigma in 224-px units; `pixels` px per unit)."""
    taps = torch.arange(int(2 * radius + 1), dtype=torch.float32)
    weights = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    keep = weights >= 1e-3 * weights[0]
    taps, weights = taps[keep], weights[keep] / weights[keep].sum()
    n, _, h, w = x.shape
    ys = (2 * torch.arange(h, dtype=torch.float32, device=x.device) + 1) / h - 1
    xs = (2 * torch.arange(w, dtype=torch.float32, device=x.device) + 1) / w - 1
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [H, W, 2] as (x, y)
    direction = torch.tensor([math.cos(math.radians(degrees)) * 2 / w, math.sin(math.radians(degrees)) * 2 / h],
                             device=x.device)
    out = torch.zeros_like(x)
    for tap, weight in zip(taps.tolist(), weights.tolist()):
        grid = (base + tap * pixels * direction).expand(n, h, w, 2)
        out += weight * F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out


def _motion_blur(x, params, _):
    s = _blur_scale(x)
    return _per_frame(x, params, lambda im, angle: _motion_blur_image(im, angle, 10, 3, s))


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _snow(x, params, generators):
    n, _, h, w = x.shape
    s = _blur_scale(x)
    layers = 0.05 + 0.3 * _standard_normal((1, h, w), generators, x)  # [N, 1, H, W]
    ch, cw = math.ceil(h / 3), math.ceil(w / 3)
    top, left = (h - ch) // 2, (w - cw) // 2
    zoomed = F.interpolate(layers[..., top:top + ch, left:left + cw], scale_factor=3, mode="bilinear",
                           align_corners=False)
    trim_h, trim_w = (zoomed.shape[-2] - h) // 2, (zoomed.shape[-1] - w) // 2
    layers = zoomed[..., trim_h:trim_h + h, trim_w:trim_w + w]
    layers = torch.where(layers < 0.5, torch.zeros_like(layers), layers).clamp(0, 1)
    whitened = 0.85 * x + 0.15 * torch.maximum(x, _gray(x) * 1.5 + 0.5)
    frames = []
    for angle in params:
        moving = _motion_blur_image(layers, angle, 14, 4, s)
        frames.append((whitened + moving + moving.flip(-2, -1)).clamp(0, 1))
    return torch.stack(frames, dim=1)


_SPATTER_COLOR = (238 / 255, 238 / 255, 175 / 255)  # pale turquoise, RGB


def _spatter_masks(generator: torch.Generator, num: int, size: int) -> np.ndarray:
    """Water masks [T, size, size] (0..0.6) of one image: the liquid layer running down a step per frame."""
    import cv2
    from scipy.ndimage import convolve1d, gaussian_filter

    noise = 0.65 + 0.27 * torch.randn(size, size, generator=generator, dtype=torch.float64, device=generator.device)
    layer = noise.cpu().numpy()
    layer = gaussian_filter(layer, sigma=3.7 * size / REFERENCE_SIZE, mode="nearest", truncate=4.0)
    layer[layer < 0.69] = 0
    run_down = np.array([0.05, 0.1, 0.15, 0.7])  # with origin -1: numpy's convolve(..., mode="same") per column
    edge_kernel = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    masks = np.empty((num, size, size), dtype=np.float32)
    for t in range(num):
        liquid = (layer * 255).astype(np.uint8)
        dist = cv2.distanceTransform(255 - cv2.Canny(liquid, 50, 150), cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
        dist = cv2.blur(cv2.filter2D(dist, cv2.CV_8U, edge_kernel), (3, 3)).astype(np.float32)
        mask = liquid * dist
        peak = mask.max()
        masks[t] = 0.6 * mask / peak if peak > 0 else 0.0
        layer = convolve1d(layer, run_down, axis=0, mode="constant", origin=-1)
    return masks


def _spatter(x, params, generators):
    n, c, h, w = x.shape
    size = round(REFERENCE_SIZE * _blur_scale(x))
    masks = torch.from_numpy(np.stack([_spatter_masks(g, len(params), size) for g in generators]))  # [N, T, S, S]
    masks = masks.to(x.device)
    if (size, size) != (h, w):
        masks = F.interpolate(masks, size=(h, w), mode="area" if size > max(h, w) else "bilinear")
    color = torch.tensor(_SPATTER_COLOR, dtype=x.dtype, device=x.device).view(1, 1, 3, 1, 1)
    if c == 1:
        color = _gray(color.view(1, 3, 1, 1)).view(1, 1, 1, 1, 1)
    return (x[:, None] + masks[:, :, None] * color).clamp(0, 1)


_RENDERERS = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "speckle_noise": _speckle_noise,
    "motion_blur": _motion_blur, "zoom_blur": _zoom_blur, "gaussian_blur": _gaussian_blur,
    "snow": _snow, "spatter": _spatter, "brightness": _brightness,
    "translate": _translate, "rotate": _rotate, "shear": _shear, "tilt": _tilt, "scale": _scale_frames,
}


def sequence_cache_path(cache_dir: str | Path, images: torch.Tensor, perturbation: str, keys: Sequence[int],
                        seed: int, difficulty: int, device: torch.device | str | None = None) -> Path:
    """Cache file of these sequences: named by a hash of the images, keys, seed, perturbation, generator version and
    the generating device's kind (CPU and CUDA generators draw different numbers)."""
    level = difficulty if is_noise_perturbation(perturbation) else 1
    kind = (images.device if device is None else torch.device(device)).type
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"v{GENERATOR_VERSION}|{perturbation}|{level}|{seed}|{tuple(images.shape)}".encode())
    if kind != "cpu":
        digest.update(f"|{kind}".encode())
    digest.update(np.asarray([int(k) for k in keys], dtype=np.int64).tobytes())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    return Path(cache_dir) / "perturbation_sequences" / f"{perturbation}_{level}_{digest.hexdigest()}.npy"


def cached_sequences(images: torch.Tensor, perturbation: str, keys: Sequence[int], seed: int = 0,
                     difficulty: int = 1, cache_dir: str | Path | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """`generate_sequences` (on ``device``, None: the images'), read from / written atomically to an .npy cache under
    `cache_dir` (None: no cache). The result is on the images' device."""
    if cache_dir is None:
        return generate_sequences(images, perturbation, keys, seed, difficulty, device).to(images.device)
    path = sequence_cache_path(cache_dir, images, perturbation, keys, seed, difficulty, device)
    if path.exists():
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False)).to(images.device)
        except (ValueError, OSError):
            pass  # a damaged cache file is regenerated and replaced
    frames = generate_sequences(images, perturbation, keys, seed, difficulty, device)
    write_array(path, frames.cpu().numpy())
    return frames.to(images.device)


def example_frames(image: torch.Tensor, perturbations: Sequence[str] = ALL_PERTURBATIONS, columns: int = 8,
                   key: int = 0, seed: int = 0) -> tuple[torch.Tensor, list[list[int]]]:
    """`columns` frames, evenly spaced from first to last, of each perturbation's sequence of one uint8 [C, H, W] image.

    Returns uint8 [P, columns, C, H, W] (perturbations in the order given) and each row's frame indices; the
    report draws them as one image's strip per perturbation.
    """
    rows, indices = [], []
    for perturbation in perturbations:
        frames = generate_sequences(image[None], perturbation, [key], seed)[0]  # [T, C, H, W]
        picks = np.linspace(0, frames.shape[0] - 1, columns).round().astype(int)
        rows.append(frames[picks])
        indices.append([int(i) for i in picks])
    return torch.stack(rows), indices
