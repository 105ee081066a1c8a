"""The device-mode samplers and fast kernels of the torch corruption engine (issue 13's CPU speed work): exact
against brute force or the reference's own code, so the speed-ups change no distribution."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy.stats import poisson as scipy_poisson

from eval.corruptions import catalog, kernels, poisson, torch_engine
from eval.corruptions.draws import Draws
from eval.corruptions.presets import PRESET_TABLES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("rate", [60.0, 3.0, 0.7, 500.0])
def test_shot_table_sampler_is_the_inverse_cdf(rate: float) -> None:
    """The binned byte table plus bisection gives exactly the byte of k = #{j : T[v, j] <= r} for the same 31-bit
    uniforms (rate 500: every byte is a possible output, so the int16 table is used)."""
    table, mark, thresholds, per_k, k_cap = poisson.shot_tables(rate, torch.device("cpu"))
    assert table.dtype == (torch.int16 if rate >= 255 else torch.uint8)
    u8 = torch.arange(256, dtype=torch.uint8).repeat(120).view(2, 3, 64, 80)
    out = poisson.shot_noise_u8(u8, rate, [torch.Generator().manual_seed(k) for k in (1, 2)])
    r = torch.stack([torch.empty(3, 64, 80, dtype=torch.int32).random_(generator=torch.Generator().manual_seed(k))
                     for k in (1, 2)]).to(torch.int64).view(-1)
    v = u8.reshape(-1).to(torch.int64)
    k = (thresholds.view(256, k_cap)[v] <= r[:, None]).sum(1)
    assert torch.equal(out.view(-1), per_k[k])
    assert int((table == mark).sum()) > 0  # some bins are unsettled, so the bisection ran


@pytest.mark.parametrize("rate", [60.0, 12.0, 500.0])
def test_shot_thresholds_are_the_poisson_cdf(rate: float) -> None:
    """Each k's probability (threshold steps / 2^31) is the Poisson pmf to within 2^-31 (k_cap: the tail)."""
    _, _, thresholds, _, k_cap = poisson.shot_tables(rate, torch.device("cpu"))
    for v in (0, 1, 77, 128, 255):
        lam = v / 255.0 * rate
        steps = np.diff(np.concatenate([[0], thresholds.view(256, k_cap)[v].numpy(), [2**31]])) / 2.0**31
        expected = scipy_poisson.pmf(np.arange(k_cap + 1), lam)
        expected[-1] = scipy_poisson.sf(k_cap - 1, lam)
        assert np.abs(steps - expected).max() <= 2.0**-31, (rate, v)


def test_shot_bytes_are_the_reference_arithmetic() -> None:
    """The tabulated bytes per count are uint8(clamp(k / c, 0, 1) * 255), counts past c giving 255."""
    for rate in (60.0, 5.0, 0.7):
        per_k = poisson.shot_tables(rate, torch.device("cpu"))[3]
        k = np.arange(len(per_k), dtype=np.float64)
        assert per_k.tolist() == np.uint8(np.clip(k / rate, 0, 1) * 255).tolist()
        assert int(per_k[-1]) == 255


def test_shot_sampler_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rate must be > 0"):
        poisson.shot_tables(0.0, torch.device("cpu"))
    with pytest.raises(ValueError, match="one generator per image"):
        poisson.shot_noise_u8(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), 5.0, [torch.Generator()])


def test_impulse_noise_device_mode_flips_the_right_fractions() -> None:
    """Salt (255) at amount / 2 and pepper (0) at amount / 2 of the values, the rest unchanged (gray 128 images:
    only flipped values change), within 5 binomial standard errors."""
    x = torch.full((4, 3, 96, 96), 128, dtype=torch.uint8)
    amount = 0.27
    out = torch_engine.corrupt_torch(x, "impulse_noise", 5, [0, 1, 2, 3], rng="device", preset="imagenet-c")
    n = out.numel()
    assert set(torch.unique(out).tolist()) == {0, 128, 255}
    for value in (0, 255):
        frac = float((out == value).float().mean())
        assert abs(frac - amount / 2) <= 5 * np.sqrt(amount / 2 * (1 - amount / 2) / n), (value, frac)


def test_fft_size_is_5_smooth_and_a_multiple_of_8() -> None:
    assert [kernels.fft_size(n) for n in (240, 244, 61, 1, 7, 9, 33)] == [240, 256, 64, 1, 8, 16, 40]


@pytest.mark.parametrize("size", [(224, 224), (37, 50)])
def test_filter2d_matches_opencv(size: tuple[int, int]) -> None:
    """FFT correlation at the padded 5-smooth size equals cv2.filter2D (reflect-101) to float32 rounding, for a
    21x21 disk (224 + 20 = 244 = 4 * 61, not 5-smooth) and a small odd image."""
    rs = np.random.default_rng(0)
    x = rs.integers(0, 256, (2, 3, *size)).astype(np.float32)
    kernel = torch_engine._defocus_kernel(10, 0.5)
    got = kernels.filter2d(torch.from_numpy(x), kernel).numpy()
    expected = np.stack([[cv2.filter2D(p.astype(np.float64), -1, kernel, borderType=cv2.BORDER_REFLECT_101)
                          for p in image] for image in x])
    assert np.abs(got - expected).max() <= 2e-3  # 255-unit values: float32 FFT rounding


@pytest.mark.parametrize("decay", [3.0, 1.7])
def test_plasma_fractal_reference_mode_is_the_reference(decay: float) -> None:
    """Reference mode's contiguous diamond-square gives the reference's plasma_fractal bit for bit (same seed)."""
    from eval.corruptions.reference import _MODULE

    seed = catalog.image_seed(0, "fog", 2, 7)
    np.random.seed(seed)
    expected = _MODULE.plasma_fractal(mapsize=256, wibbledecay=decay)
    draws = Draws.create("reference", 0, "fog", 2, [7], torch.device("cpu"))
    got = torch_engine._plasma_fractal(256, decay, draws, torch.device("cpu"))[0].numpy()
    assert np.array_equal(got, expected)


def test_plasma_fractal_device_mode_is_the_reference_on_its_uniforms(monkeypatch) -> None:
    """Device mode's fused levels (wibble^2 (2u - 1) in one op, quarter sums added in one op, float32) give the
    reference's plasma_fractal fed with the same uniforms, to float32 rounding."""
    from eval.corruptions.reference import _MODULE

    cpu = torch.device("cpu")
    mapsize, decay = 64, 1.7
    total = 3 * sum((mapsize // (1 << i)) ** 2 for i in range(1, mapsize.bit_length()))
    u = Draws.create("device", 0, "fog", 3, [5], cpu).random_sample((total,), torch.float32)[0].double().numpy()
    used = [0]

    def uniform(low: float, high: float, size: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(size))
        chunk = u[used[0]:used[0] + count].reshape(size)
        used[0] += count
        return low + (high - low) * chunk

    monkeypatch.setattr(np.random, "uniform", uniform)
    expected = _MODULE.plasma_fractal(mapsize=mapsize, wibbledecay=decay)
    assert used[0] == total
    got = torch_engine._plasma_fractal(mapsize, decay, Draws.create("device", 0, "fog", 3, [5], cpu), cpu)[0]
    assert np.abs(got.double().numpy() - expected).max() < 1e-5


@pytest.mark.parametrize("size", [(224, 224), (61, 48), (32, 32)])
def test_pixelate_cpu_is_pillow(size: tuple[int, int]) -> None:
    """The CPU pixelate (Pillow BOX down, OpenCV's exact nearest up, planes split by OpenCV) gives Pillow's
    BOX-then-NEAREST images byte for byte, at every imagenet-c severity."""
    from PIL import Image

    rs = np.random.default_rng(1)
    x = torch.from_numpy(rs.integers(0, 256, (3, 3, *size), dtype=np.uint8))
    h, w = size
    for severity in range(1, 6):
        got = torch_engine.corrupt_torch(x, "pixelate", severity, [0, 1, 2], preset="imagenet-c", rng="device")
        factor = PRESET_TABLES["imagenet-c"].tables["pixelate"][severity - 1]
        for image, out in zip(x, got):
            pil = Image.fromarray(image.permute(1, 2, 0).numpy())
            pil = pil.resize((int(w * factor), int(h * factor)), Image.Resampling.BOX)
            expected = np.asarray(pil.resize((w, h), Image.Resampling.NEAREST))
            assert np.array_equal(out.permute(1, 2, 0).numpy(), expected), (size, severity)
