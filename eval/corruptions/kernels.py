"""Batched torch building blocks that reproduce the SciPy / OpenCV / scikit-image / Pillow operations of ImageNet-C."""

from __future__ import annotations

import functools
import math
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

# Border modes, named after the library conventions they reproduce:
# "nearest" (scipy) = edge replicate; "reflect" (scipy) = half-sample symmetric (d c b a | a b c d);
# "reflect101" (OpenCV default, scipy "mirror") = whole-sample symmetric (d c b | a b c d).
BORDER_MODES = ("nearest", "reflect", "reflect101")


def border_index(n: int, before: int, after: int, mode: str, device: torch.device) -> torch.Tensor:
    """Source indices of a length-``n`` axis padded by ``before``/``after`` samples with border ``mode``."""
    i = torch.arange(-before, n + after, device=device)
    if mode == "nearest" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "reflect":
        i = i.remainder(2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    if mode == "reflect101":
        i = i.remainder(2 * n - 2)
        return torch.where(i >= n, 2 * n - 2 - i, i)
    raise ValueError(f"unknown border mode {mode!r}; valid: {BORDER_MODES}")


def pad2d(x: torch.Tensor, pad_h: int, pad_w: int, mode: str) -> torch.Tensor:
    """Pad the last two axes of ``x`` symmetrically by (pad_h, pad_w) with border ``mode`` (any pad size)."""
    h, w = x.shape[-2:]
    if x.ndim >= 2 and ((mode == "nearest") or (mode == "reflect101" and pad_h < h and pad_w < w)) \
            and x.dtype in (torch.float32, torch.float64):  # torch's own pads: the same copies, several times faster
        flat = x.reshape(-1, h, w)
        out = F.pad(flat, (pad_w, pad_w, pad_h, pad_h), mode="replicate" if mode == "nearest" else "reflect")
        return out.reshape(*x.shape[:-2], h + 2 * pad_h, w + 2 * pad_w)
    x = x.index_select(-2, border_index(h, pad_h, pad_h, mode, x.device))
    return x.index_select(-1, border_index(w, pad_w, pad_w, mode, x.device))


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian kernel (radius ``int(truncate * sigma + 0.5)``), normalised, float64."""
    radius = int(truncate * float(sigma) + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / float(sigma) ** 2 * t**2)
    return phi / phi.sum()


@functools.lru_cache(maxsize=256)
def _filter_matrix(n: int, kernel: tuple[float, ...], mode: str) -> np.ndarray:
    """[n, n] matrix M with (M @ v)[o] = sum_j kernel[j] * v[border(o - r + j)]: 1-D correlation with borders."""
    r = len(kernel) // 2
    src = border_index(n, r, r, mode, torch.device("cpu")).numpy()
    m = np.zeros((n, n), dtype=np.float64)
    rows = np.arange(n)
    for j, weight in enumerate(kernel):
        np.add.at(m, (rows, src[j:j + n]), weight)
    return m


def separable_filter(x: torch.Tensor, kernel_h: np.ndarray, kernel_w: np.ndarray, mode: str) -> torch.Tensor:
    """Correlate the last two axes of ``x`` [..., H, W] with a separable kernel, borders by ``mode``.

    Implemented as two dense banded-matrix products, which BLAS runs far faster than a one-channel convolution.
    """
    h, w = x.shape[-2:]
    mh = torch.as_tensor(_filter_matrix(h, tuple(kernel_h), mode), dtype=x.dtype, device=x.device)
    mw = torch.as_tensor(_filter_matrix(w, tuple(kernel_w), mode), dtype=x.dtype, device=x.device)
    return torch.matmul(mh, torch.matmul(x, mw.T))


def gaussian_filter(x: torch.Tensor, sigma: float | tuple[float, float], mode: str = "nearest",
                    truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter over the last two axes (what skimage.filters.gaussian calls)."""
    sh, sw = cast("tuple[float, float]", (sigma, sigma) if np.isscalar(sigma) else sigma)
    return separable_filter(x, gaussian_kernel1d(sh, truncate), gaussian_kernel1d(sw, truncate), mode)


@functools.lru_cache(maxsize=256)
def fft_size(n: int) -> int:
    """The smallest 5-smooth integer >= n (a product of 2s, 3s and 5s: sizes FFT libraries transform fastest; a
    prime factor such as 61 in 244 makes pocketfft ~2x slower), a multiple of 8 from n = 8 on (measured at 24 planes:
    240 and 256 transform ~10 % faster than 250 and 2x faster than 243 = 3^5)."""
    m = n
    while True:
        rest = m if n < 8 or m % 8 == 0 else 7
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return m
        m += 1


def filter2d(x: torch.Tensor, kernel: np.ndarray, mode: str = "reflect101") -> torch.Tensor:
    """Correlate the last two axes of ``x`` with a 2-D kernel (cv2.filter2D with its default border), via FFT.

    The padded planes are transformed at a fast size (``fft_size``), zero-filled: the circular
    convolution wraps only into rows and columns that are cropped away, so the result is the linear one.
    """
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    padded = pad2d(x, ph, pw, mode)
    size = (fft_size(padded.shape[-2]), fft_size(padded.shape[-1]))
    k = torch.zeros(size, dtype=x.dtype, device=x.device)
    k[:kh, :kw] = torch.as_tensor(kernel[::-1, ::-1].copy(), dtype=x.dtype, device=x.device)
    k = torch.roll(k, shifts=(-ph, -pw), dims=(0, 1))
    out = torch.fft.irfft2(torch.fft.rfft2(padded, s=size) * torch.fft.rfft2(k), s=size)
    return out[..., ph:ph + x.shape[-2], pw:pw + x.shape[-1]]


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """ImageNet-C's clipped_zoom on the last two axes, uncropped: [..., round(ceil(H/z)*z), round(ceil(W/z)*z)].

    It crops the centre ``ceil(n / zoom)`` samples of each axis and resizes them with scipy.ndimage.zoom(order=1),
    i.e. linear interpolation at corner-aligned coordinates: what ``align_corners=True`` computes.
    """
    h, w = x.shape[-2:]
    ch, cw = int(np.ceil(h / float(zoom))), int(np.ceil(w / float(zoom)))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top:top + ch, left:left + cw]
    size = (int(round(ch * zoom)), int(round(cw * zoom)))
    lead = crop.shape[:-2]
    out = F.interpolate(crop.reshape(-1, 1, ch, cw), size=size, mode="bilinear", align_corners=True)
    return out.reshape(*lead, *size)


def motion_blur_taps(radius: int, sigma: float, angle: float, height: int, width: int) -> list[tuple[int, int, float]]:
    """(dy, dx, weight) taps of ImageNet-C's _motion_blur for one angle; stops where the reference stops."""
    size = radius * 2 + 1
    k = np.exp(-np.arange(size) ** 2 / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    k = k / k.sum()
    point = (size * np.sin(np.deg2rad(angle)), size * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(point[0], point[1])
    taps = []
    for i in range(size):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        if abs(dy) >= height or abs(dx) >= width:
            break
        taps.append((dy, dx, float(k[i])))
    return taps


def motion_blur(x: torch.Tensor, taps: list[tuple[int, int, float]]) -> torch.Tensor:
    """Sum of edge-replicated shifts of ``x`` [..., H, W]: out[y, x] = sum_k w_k x[clamp(y-dy_k), clamp(x-dx_k)]."""
    h, w = x.shape[-2:]
    p = max([1] + [max(abs(dy), abs(dx)) for dy, dx, _ in taps])
    padded = pad2d(x, p, p, "nearest")
    out = torch.zeros_like(x)
    for dy, dx, weight in taps:
        out.add_(padded[..., p - dy:p - dy + h, p - dx:p - dx + w], alpha=weight)
    return out


def pil_box_weights(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] weight matrix of Pillow's BOX resampling filter (its precompute_coeffs), rows normalised."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        for x in range(xmin, xmax):
            t = (x - center + 0.5) / filterscale
            weights[xx, x] = 1.0 if -0.5 < t <= 0.5 else 0.0
        weights[xx] /= weights[xx].sum()
    return weights


def pil_nearest_index(in_size: int, out_size: int) -> np.ndarray:
    """Source index per output sample of Pillow's NEAREST resize (ImagingScaleAffine: float steps accumulated)."""
    step = in_size / out_size
    coords = np.cumsum(np.concatenate([[step * 0.5], np.full(out_size - 1, step)]))
    return np.minimum(coords.astype(np.int64), in_size - 1)


@functools.lru_cache(maxsize=256)
def _pil_box_plan(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first input, one past the last input, 22-bit fixed-point coefficient) per output of Pillow's BOX filter.

    A BOX output is the plain mean of a contiguous run of inputs (``pil_box_weights``); Pillow's 8-bit path turns the
    normalised weight 1/count into the integer int(2^22 / count + 0.5) (its normalize_coeffs_8bpc).
    """
    weights = pil_box_weights(in_size, out_size)
    start, stop, coef = [], [], []
    for row in weights:
        taps = np.nonzero(row)[0]
        if len(taps) == 0:
            raise ValueError(f"Pillow BOX {in_size} -> {out_size}: an output has no inputs")
        start.append(taps[0])
        stop.append(taps[-1] + 1)
        coef.append(int(1.0 / len(taps) * (1 << 22) + 0.5))
    return np.asarray(start), np.asarray(stop), np.asarray(coef)


def _pil_box_axis(x: torch.Tensor, out_size: int, dim: int) -> torch.Tensor:
    """One Pillow BOX pass along ``dim`` of int32 values 0..255, in Pillow's integer arithmetic (exact)."""
    in_size = x.shape[dim]
    if in_size == out_size:
        return x
    start, stop, coef = (torch.as_tensor(a, device=x.device) for a in _pil_box_plan(in_size, out_size))
    zero = torch.zeros_like(x.narrow(dim, 0, 1))
    sums = torch.cat([zero, x.cumsum(dim, dtype=torch.int32)], dim)
    s = sums.index_select(dim, stop) - sums.index_select(dim, start)
    shape = [1] * x.ndim
    shape[dim] = out_size
    out = (s * coef.to(torch.int32).view(shape) + (1 << 21)) >> 22
    return out.clamp_(0, 255)


def pil_box_resize(u8: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``Image.resize((width, height), Image.BOX)`` of uint8 images [..., H, W]: horizontal pass first, 8-bit between
    passes, 22-bit fixed-point weights (Pillow's ImagingResample); uint8 [..., height, width].

    Bit-exact when one axis changes or both change by the same factor (square images: pixelate). When both axes of
    a non-square image change by different factors, Pillow sometimes runs the vertical pass first (a rule not
    reproduced here), and single values can then differ by one level.
    """
    x = _pil_box_axis(u8.to(torch.int32), width, u8.ndim - 1)
    x = _pil_box_axis(x, height, u8.ndim - 2)
    return x.to(torch.uint8)


def motion_blur_batched(x: torch.Tensor, taps: list[list[tuple[int, int, float]]]) -> torch.Tensor:
    """``motion_blur`` of each image x[n] ([N, ..., H, W]) with its own taps, in one gather per tap index.

    Every image must have the same number of taps with the same weights (true for one radius and sigma unless the
    reference's early stop cuts a line short on tiny images; the caller falls back to ``motion_blur`` then). The
    same additions in the same order as ``motion_blur``, so the results are equal; one kernel per tap instead of
    one per tap and image (for CUDA, where per-image launches dominate).
    """
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    if len({len(t) for t in taps}) != 1 or len({tuple(wt for _, _, wt in t) for t in taps}) != 1:
        raise ValueError("motion_blur_batched needs the same tap count and weights for every image")
    p = max([1] + [max(abs(dy), abs(dx)) for t in taps for dy, dx, _ in t])
    padded = pad2d(x, p, p, "nearest")
    lead = padded.shape[1:-2]
    offsets = torch.tensor([[(dy, dx) for dy, dx, _ in t] for t in taps], dtype=torch.int64, device=x.device)
    rows_base = torch.arange(h, device=x.device) + p
    cols_base = torch.arange(w, device=x.device) + p
    view = (n,) + (1,) * len(lead)
    out = torch.zeros_like(x)
    for i, (_, _, weight) in enumerate(taps[0]):
        rows = (rows_base[None, :] - offsets[:, i, 0:1]).view(*view, h, 1).expand(n, *lead, h, w + 2 * p)
        cols = (cols_base[None, :] - offsets[:, i, 1:2]).view(*view, 1, w).expand(n, *lead, h, w)
        out.add_(padded.gather(-2, rows).gather(-1, cols), alpha=weight)
    return out
