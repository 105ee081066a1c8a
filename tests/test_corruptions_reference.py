"""The imagecorruptions reference, made to run on current NumPy, scikit-image and setuptools."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from eval.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, EXTRA_CORRUPTIONS, corrupt
from eval.corruptions.reference import corrupt_image


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(n: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Smooth random uint8 images (gradients plus noise), [n, channels, size, size]."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    base = (ramp[:, None] * ramp[None, :])[None, None] * torch.rand(n, channels, 1, 1, generator=g)
    noise = torch.rand(n, channels, size, size, generator=g) * 0.3
    return ((base + noise).clamp(0, 1) * 255).to(torch.uint8)


def test_names_follow_the_benchmark_order() -> None:
    assert CORRUPTIONS == ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                           "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
                           "elastic_transform", "pixelate", "jpeg_compression")
    assert EXTRA_CORRUPTIONS == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert ALL_CORRUPTIONS == CORRUPTIONS + EXTRA_CORRUPTIONS


def test_compatibility_fixes_leave_global_modules_alone() -> None:
    import eval.corruptions.reference as reference

    assert not hasattr(np, "float_")  # the np.float_ fix lives in a proxy inside imagecorruptions only
    assert reference.reference_function("fog").__module__ == "imagecorruptions.corruptions"
    if "pkg_resources" in sys.modules:  # only a real setuptools pkg_resources may remain, never the stand-in
        assert hasattr(sys.modules["pkg_resources"], "working_set")


@pytest.mark.parametrize("corruption", ALL_CORRUPTIONS)
@pytest.mark.parametrize("size", [28, 32])
def test_all_corruptions_run_on_small_images(corruption: str, size: int) -> None:
    for channels in (1, 3):
        x = _images(2, size, channels)
        for severity in (1, 5):
            y = corrupt(x, corruption, severity, [0, 1], backend="imagecorruptions")
            assert y.shape == x.shape and y.dtype == torch.uint8


def test_all_corruptions_run_at_224() -> None:
    x = _images(1, 224)
    for corruption in ALL_CORRUPTIONS:
        for channels in (1, 3):
            y = corrupt(x[:, :channels], corruption, 2, [7], backend="imagecorruptions")
            assert y.shape == (1, channels, 224, 224) and y.dtype == torch.uint8
            if channels == 3:  # (saturate leaves gray images gray at severities 1-3)
                assert not torch.equal(y, x), corruption


def test_per_image_seeding_is_reproducible_and_restores_the_global_rng() -> None:
    x = _images(3, 32)
    np.random.seed(123)
    state = np.random.get_state()
    for corruption in ("gaussian_noise", "impulse_noise", "glass_blur", "frost", "spatter"):
        a = corrupt(x, corruption, 3, [0, 1, 2], backend="imagecorruptions")
        b = corrupt(x[[2, 0]], corruption, 3, [2, 0], backend="imagecorruptions")
        assert torch.equal(a[[2, 0]], b), corruption
        c = corrupt(x, corruption, 3, [0, 1, 2], seed=1, backend="imagecorruptions")
        assert not torch.equal(a, c), corruption
    after = np.random.get_state()
    assert all(np.array_equal(u, v) for u, v in zip(state, after))


def test_gray_images_are_corrupted_as_rgb_and_averaged() -> None:
    x = _images(1, 32, channels=1)
    gray = corrupt(x, "contrast", 3, [0], backend="imagecorruptions")
    rgb = corrupt_image(np.repeat(x[0].permute(1, 2, 0).numpy(), 3, axis=2), "contrast", 3, 0)
    assert torch.equal(gray[0, 0], torch.from_numpy(np.rint(rgb.mean(axis=2)).astype(np.uint8)))


@pytest.mark.parametrize("backend", ["imagecorruptions", "torch"])
def test_bad_arguments_name_the_valid_values(backend: str) -> None:
    x = _images(1, 32)
    with pytest.raises(ValueError, match="fog"):
        corrupt(x, "fogg", 1, [0], backend=backend)
    with pytest.raises(ValueError, match=r"\[1, 2, 3, 4, 5\]"):
        corrupt(x, "fog", 6, [0], backend=backend)
    with pytest.raises(ValueError, match="one key per image"):
        corrupt(x, "fog", 1, [0, 1], backend=backend)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(x.float(), "fog", 1, [0], backend=backend)
    with pytest.raises(ValueError, match="imagecorruptions"):
        corrupt(x, "fog", 1, [0], backend="numpy")
