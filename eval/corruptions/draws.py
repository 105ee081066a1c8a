"""Per-image random numbers for the torch corruption engine, in two modes.

* ``reference``: each image's ``np.random.RandomState`` is seeded with ``catalog.image_seed(seed, corruption,
  severity, key)`` -- the seed the imagecorruptions backend puts into the global NumPy RNG -- and every quantity is
  drawn from it in the reference's order and shapes, so the draws equal the reference's. NumPy on the CPU, one image
  at a time; tensors are copied to the images' device.
* ``device``: each image gets a ``torch.Generator`` on the images' device (Philox on CUDA, Mersenne Twister on the
  CPU) seeded from (seed, corruption, severity, key) through ``np.random.SeedSequence`` with a stream tag, and its
  tensors are drawn there; the few scalars a corruption needs per image (angles, crop offsets, frost photo) come from
  words of the same SeedSequence. The same (seed, corruption, severity, key) gives the same numbers for any batch
  size, order or process on one kind of device; CPU and CUDA draw different (equally distributed) numbers, and the
  CUDA kernels' numbers can depend on the GPU model (torch maps elements to Philox subsequences by launch grid), so
  a cell's identity should name the device kind (``rng_tag``).

Device mode is statistically, not bitwise, equivalent to the reference: the same distributions with other numbers
(tests/test_corruptions_device.py checks per-cell noise statistics and a model's error against reference mode).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch

from nst_common.seeding import seed_sequence

from .catalog import image_seed

RNG_MODES: tuple[str, ...] = ("reference", "device")
_DEVICE_TAG = 0x64657669  # "devi": separates device-mode seeds from the reference's


def check_rng(rng: str | None, device: torch.device) -> str:
    """Resolve the random-number mode: None = 'device' on CUDA tensors, 'reference' elsewhere; ValueError if unknown."""
    if rng is None:
        return "device" if torch.device(device).type == "cuda" else "reference"
    if rng not in RNG_MODES:
        raise ValueError(f"unknown corruption rng mode {rng!r}; valid: {', '.join(RNG_MODES)}")
    return rng


def rng_tag(rng: str, device: torch.device | str) -> str:
    """A string naming the random stream, for cache keys and cell identities: 'reference' or 'device-cpu' /
    'device-cuda' (device mode's numbers differ between the CPU and CUDA generators)."""
    return rng if rng == "reference" else f"device-{torch.device(device).type}"


class ScalarStream:
    """A few uniform numbers per image from SeedSequence words (device mode's scalars), RandomState-like API."""

    def __init__(self, sequence: np.random.SeedSequence) -> None:
        self._seq = sequence
        self._words = self._seq.generate_state(8, np.uint64)
        self._next = 1  # word 0 seeds the tensor generator

    def random(self) -> float:
        """One uniform float in [0, 1) (53 bits)."""
        if self._next >= len(self._words):
            self._words = self._seq.generate_state(2 * len(self._words), np.uint64)
        word = int(self._words[self._next])
        self._next += 1
        return (word >> 11) / float(1 << 53)

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        """Uniform in [low, high)."""
        return low + (high - low) * self.random()

    def randint(self, low: int, high: int | None = None) -> int:
        """Uniform integer in [low, high) (or [0, low) when high is None), as RandomState.randint."""
        if high is None:
            low, high = 0, low
        if high <= low:
            raise ValueError(f"randint: empty range [{low}, {high})")
        return low + min(int(self.random() * (high - low)), high - low - 1)

    @property
    def tensor_seed(self) -> int:
        """The 64-bit seed of this image's tensor generator."""
        return int(self._words[0])


class Draws:
    """Random numbers for a batch of images, one independent stream per image (see the module docstring).

    Tensor methods return [N, *shape] on ``device``; ``scalars`` holds one RandomState-like object per image
    (``uniform``, ``randint``) for per-image scalars, drawn in the same per-image order as the reference.
    """

    def __init__(self, mode: str, scalars: list, generators: list[torch.Generator] | None,
                 device: torch.device) -> None:
        self.mode, self.scalars, self.generators, self.device = mode, scalars, generators, torch.device(device)

    @classmethod
    def create(cls, mode: str, seed: int, corruption: str, severity: int, keys: Sequence[int],
               device: torch.device) -> "Draws":
        """The draws of images ``keys`` for (seed, corruption, severity) in ``mode`` on ``device``."""
        device = torch.device(device)
        if mode == "reference":
            return cls(mode, [np.random.RandomState(image_seed(seed, corruption, severity, k)) for k in keys], None,
                       device)
        scalars = [ScalarStream(seed_sequence(seed, corruption, int(severity), int(k), _DEVICE_TAG)) for k in keys]
        gens = [torch.Generator(device=device).manual_seed(s.tensor_seed) for s in scalars]
        return cls(mode, scalars, gens, device)

    def __len__(self) -> int:
        return len(self.scalars)

    def __getitem__(self, index: slice) -> "Draws":
        gens = self.generators[index] if self.generators is not None else None
        return Draws(self.mode, self.scalars[index], gens, self.device)

    def _numpy(self, method: str, shape: tuple[int, ...], dtype: torch.dtype, **kwargs) -> torch.Tensor:
        arrays = [getattr(r, method)(size=shape, **kwargs) for r in self.scalars]
        return torch.from_numpy(np.stack(arrays)).to(device=self.device, dtype=dtype)

    def normal(self, shape: tuple[int, ...], loc: float = 0.0, scale: float = 1.0,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """N(loc, scale^2) draws [N, *shape] (reference: ``r.normal(size=shape, loc=loc, scale=scale)``)."""
        if self.mode == "reference":
            return self._numpy("normal", tuple(shape), dtype, loc=loc, scale=scale)
        assert self.generators is not None  # device mode always has its generators
        out = torch.empty((len(self), *shape), dtype=dtype, device=self.device)
        for row, g in zip(out, self.generators):
            row.normal_(loc, scale, generator=g)
        return out

    def uniform(self, low: float, high: float, shape: tuple[int, ...],
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Uniform [low, high) draws [N, *shape] (reference: ``r.uniform(low, high, size=shape)``)."""
        if self.mode == "reference":
            return self._numpy("uniform", tuple(shape), dtype, low=low, high=high)
        assert self.generators is not None  # device mode always has its generators
        out = torch.empty((len(self), *shape), dtype=dtype, device=self.device)
        for row, g in zip(out, self.generators):
            row.uniform_(low, high, generator=g)
        return out

    def random_sample(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Uniform [0, 1) draws [N, *shape] (reference: ``r.random_sample(shape)``)."""
        if self.mode == "reference":
            arrays = [r.random_sample(tuple(shape)) for r in self.scalars]
            return torch.from_numpy(np.stack(arrays)).to(device=self.device, dtype=dtype)
        return self.uniform(0.0, 1.0, shape, dtype)

    def randint(self, low: int, high: int, shape: tuple[int, ...]) -> torch.Tensor:
        """Integers uniform in [low, high), int64 [N, *shape] (reference: ``r.randint(low, high, size=shape)``).

        Device mode floors float32 uniforms times the span (the span is tiny here: at most 8 for glass blur), which
        is uniform up to the 2^-24 granularity of the float draws and ~8x faster than torch.randint on the CPU.
        """
        if self.mode == "reference":
            return self._numpy("randint", tuple(shape), torch.int64, low=low, high=high)
        span = high - low
        u = self.uniform(0.0, float(span), shape, torch.float32)
        return u.to(torch.int64).clamp_(max=span - 1).add_(low)

    def poisson_u8(self, u8: torch.Tensor, rate: float) -> torch.Tensor:
        """Poisson(u8 / 255 * rate) counts of uint8 images [N, C, H, W] -> float32 [N, C, H, W].

        Reference: ``r.poisson(hwc / 255 * rate)`` per image. Device: exact inverse-CDF sampling from per-value
        tables (``_poisson_tables``): a pixel takes only 256 values, so each value's Poisson CDF is tabulated once
        (float64) and a float64 uniform per pixel is mapped to the smallest k with CDF(k) >= u, found from a
        guide table and, for the few pixels it does not settle, a bisection. torch.poisson is not used: it takes
        one generator per call (batched draws would not be per-image) and is no faster than NumPy on the CPU
        (measured 10 ms per 224-px image).
        """
        if self.mode == "reference":
            lam = u8.cpu().permute(0, 2, 3, 1).numpy() / 255.0 * rate
            counts = [r.poisson(values) for r, values in zip(self.scalars, lam)]
            return torch.from_numpy(np.stack(counts)).permute(0, 3, 1, 2).to(device=u8.device, dtype=torch.float32)
        cdf, guide, k_max, bins = _poisson_tables(float(rate), u8.device)
        u = self.uniform(0.0, 1.0, tuple(u8.shape[1:]), torch.float64)
        index = (u * bins).floor_().add_(u8, alpha=bins + 1).to(torch.int64)  # value * (bins + 1) + bin
        k = guide.take(index)  # the answer where the bin is settled, -1 - (its first candidate) where not
        flat_k = k.view(-1)
        mixed = torch.nonzero(flat_k < 0).squeeze(1)
        if mixed.numel():  # the answer is the first k in [g_j, g_j+1] with cdf >= u: bisection
            flat_index = index.view(-1)[mixed]
            nxt = guide.take(flat_index + 1).to(torch.int64)
            hi = torch.where(nxt < 0, -1 - nxt, nxt)  # cdf[hi] >= (j + 1) / bins > u
            lo = -2 - flat_k[mixed].to(torch.int64)  # g_j - 1: cdf[lo] < j / bins <= u (or lo = -1)
            pu = u.view(-1)[mixed]
            base = torch.div(flat_index, bins + 1, rounding_mode="floor") * k_max
            while bool((hi - lo > 1).any()):
                mid = torch.div(lo + hi, 2, rounding_mode="floor")
                above = cdf.take(base + mid.clamp(min=0)) >= pu
                hi = torch.where(above, mid, hi)
                lo = torch.where(above, lo, mid)
            flat_k[mixed] = hi.to(flat_k.dtype)
        return k.to(torch.float32)


@functools.lru_cache(maxsize=32)
def _poisson_tables(rate: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Poisson CDF and guide tables for the 256 rates v / 255 * rate, flattened, on ``device``.

    cdf[v, k] = P(Poisson(v / 255 * rate) <= k) for k < k_max = rate + 12 sqrt(rate) + 12 (the last column set to
    1: the tail beyond has probability < 1e-20), float64 cumulative sums of the pmf. For j = 0..bins let g_j = the
    smallest k with cdf[v, k] >= j / bins: every u in [j / bins, (j + 1) / bins) maps to a k in [g_j, g_j+1].
    guide[v, j] holds g_j where g_j == g_j+1 (the bin is settled) and -1 - g_j where not (the sampler bisects).
    bins = min(16 k_max, 4096), so few pixels land in unsettled bins.
    """
    from scipy.special import gammaln

    k_max = int(np.ceil(rate + 12 * np.sqrt(rate) + 12))
    bins = int(min(16 * k_max, 4096))
    lam = np.arange(256)[:, None] / 255.0 * rate
    k = np.arange(k_max)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):  # row 0: 0 * log(0), replaced below
        log_pmf = k * np.log(lam) - lam - gammaln(k + 1)
    log_pmf[0] = np.where(k[0] == 0, 0.0, -np.inf)  # rate 0: all mass at 0
    cdf = np.minimum(np.cumsum(np.exp(log_pmf), axis=1), 1.0)
    cdf[:, -1] = 1.0
    edges = np.arange(bins + 2) / bins
    first = np.stack([np.minimum(np.searchsorted(row, edges, side="left"), k_max - 1) for row in cdf])
    guide = np.where(first[:, :-1] == first[:, 1:], first[:, :-1], -1 - first[:, :-1]).astype(np.int32)
    return (torch.as_tensor(cdf.ravel(), device=device), torch.as_tensor(guide.ravel(), device=device),
            k_max, bins)
