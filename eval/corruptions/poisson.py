"""Device mode's shot noise: Poisson(x * c) / c for uint8 images, sampled by inverse CDF from integer uniforms.

Shot noise turns a pixel value v (0..255) into uint8(clamp(k / c, 0, 1) * 255) with k ~ Poisson(v / 255 * c)
(imagecorruptions' ``np.random.poisson(x * c) / c``). Two facts make a table sampler cheap and exact:

* a pixel takes only 256 values, so the 256 Poisson CDFs are tabulated once per rate c;
* every k >= c gives 255, so only the CDF below k = ceil(c) matters (the reference's Poisson tail is clipped away).

Each value gets a 31-bit uniform integer r (``torch.Tensor.random_`` on int32 draws [0, 2^31) from the image's own
generator: the cheapest draw torch has on the CPU) and k = #{j < ceil(c) : T[v, j] <= r}, where
T[v, j] = round(P(Poisson(v / 255 * c) <= j) * 2^31): each k's probability is the Poisson probability to within
2^-31 (the CDF is float64). The top bits of r pick one of 2^12 bins; for a bin whose whole r range maps to one output
byte, that byte is read from a [256, 2^12] table at once; the few values in bins that straddle a CDF step (under 1 %
of the bins at ImageNet-C's rates) are settled by bisection on T. No float arithmetic per value: the output bytes
themselves are tabulated per k, with the float32 operations of the reference-mode path (k / c, clamp, * 255, truncate).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

BIN_BITS = 12  # 2^12 bins per pixel value: a 1 MiB table (2 MiB for rates >= 255), < 1 % of bins unsettled
_UNIFORM_BITS = 31  # int32 random_() draws uniformly from [0, 2^31)


def output_bytes(k: torch.Tensor, rate: float) -> torch.Tensor:
    """uint8(clamp(k / rate, 0, 1) * 255) of float32 counts, in place (the reference's float -> uint8 truncation)."""
    return k.div_(float(rate)).clamp_(0, 1).mul_(255).clamp_(0, 255).to(torch.uint8)


@functools.lru_cache(maxsize=32)
def shot_tables(rate: float, device: torch.device) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor, int]:
    """(byte table, its mark for unsettled bins, thresholds, bytes per k, k_cap) of shot noise at ``rate`` on
    ``device``.

    k_cap = ceil(rate): counts >= k_cap all give 255. thresholds: int64 [256 * k_cap], T[v, j] (see the module
    docstring), row-major. bytes per k: uint8 [k_cap + 1]. byte table [256 * 2^BIN_BITS]: for value v and bin b
    (r >> (31 - BIN_BITS)) the output byte if every r in the bin gives the same byte, else the mark: uint8 with a
    byte no count gives as the mark (rates below 255 leave most bytes unused: the cheaper lookup), else int16 and
    -1. ValueError for a rate <= 0.
    """
    if not rate > 0:
        raise ValueError(f"shot noise rate must be > 0, got {rate}")
    from scipy.special import gammaln

    k_cap = max(1, math.ceil(rate))
    lam = np.arange(256)[:, None] / 255.0 * rate
    k = np.arange(k_cap)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):  # row 0: 0 * log(0), replaced below
        log_pmf = k * np.log(lam) - lam - gammaln(k + 1)
    log_pmf[0] = np.where(k[0] == 0, 0.0, -np.inf)  # value 0 (rate 0): all mass at k = 0
    cdf = np.minimum(np.cumsum(np.exp(log_pmf), axis=1), 1.0)
    scale = float(1 << _UNIFORM_BITS)
    thresholds = np.round(cdf * scale).astype(np.int64)  # non-decreasing along each row
    per_k = output_bytes(torch.arange(k_cap + 1, dtype=torch.float32), rate)
    shift = _UNIFORM_BITS - BIN_BITS
    starts = np.arange(1 << BIN_BITS, dtype=np.int64) << shift
    ends = starts + (1 << shift) - 1
    first = np.stack([np.searchsorted(row, starts, side="right") for row in thresholds])  # k of the bin's lowest r
    last = np.stack([np.searchsorted(row, ends, side="right") for row in thresholds])  # ... and of its highest r
    per_k_np = per_k.numpy().astype(np.int16)
    unused = sorted(set(range(256)) - set(per_k_np.tolist()))
    mark, dtype = (unused[-1], np.uint8) if unused else (-1, np.int16)
    table = np.where(per_k_np[first] == per_k_np[last], per_k_np[first], np.int16(mark)).astype(dtype)
    return (torch.as_tensor(table.ravel(), device=device), mark,
            torch.as_tensor(thresholds.ravel(), device=device), per_k.to(device), k_cap)


def shot_noise_u8(u8: torch.Tensor, rate: float, generators: list[torch.Generator]) -> torch.Tensor:
    """Shot noise of uint8 images [N, C, H, W] at ``rate`` (ImageNet-C's c), uint8 [N, C, H, W].

    Image i's uniforms come from ``generators[i]`` (on the images' device), so an image's result does not depend on
    the batch. Exact inverse-CDF sampling to within 2^-31 per probability (module docstring).
    """
    if len(generators) != u8.shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} for {u8.shape[0]} images")
    table, mark, thresholds, per_k, k_cap = shot_tables(float(rate), u8.device)
    r = torch.empty(u8.shape, dtype=torch.int32, device=u8.device)
    for row, g in zip(r, generators):
        row.random_(generator=g)
    index = torch.bitwise_right_shift(r, _UNIFORM_BITS - BIN_BITS).add_(u8, alpha=1 << BIN_BITS)
    out = table.index_select(0, index.view(-1))
    mixed = torch.nonzero(out == mark).squeeze(1)
    if mixed.numel():  # the smallest k in [0, k_cap] with T[v, k] > r (T[v, k_cap] = infinity): bisection
        base = u8.reshape(-1)[mixed].to(torch.int64) * k_cap
        pr = r.view(-1)[mixed].to(torch.int64)
        lo = torch.full_like(pr, -1)
        hi = torch.full_like(pr, k_cap)
        for _ in range(max(1, k_cap).bit_length()):  # hi - lo <= k_cap + 1 halves each step
            mid = torch.div(lo + hi, 2, rounding_mode="floor")
            above = thresholds.take(base + mid.clamp(0, k_cap - 1)) > pr
            hi = torch.where(above & (hi - lo > 1), mid, hi)
            lo = torch.where(~above & (hi - lo > 1), mid, lo)
        out[mixed] = per_k[hi].to(out.dtype)
    return out.view(u8.shape).to(torch.uint8)
