"""The evaluator's generated -C sets carry the engine's preset and random stream (cache folder, info, CLI flags)."""

from __future__ import annotations

import torch

from eval.corruptions import ENGINE_VERSION, corrupt
from eval.datasets import corrupted_set
from nst_core.imagesets import ImageSet


def _toy(size: int) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(4, 3, size, size, generator=g) * 255).to(torch.uint8)
    return ImageSet(name="toy", labels=torch.tensor([0, 1, 2, 3]), num_classes=4, indices=torch.arange(10, 14),
                   images=images)


def test_generated_sets_name_preset_rng_and_engine(tmp_path) -> None:
    clean = _toy(32)
    default = corrupted_set(clean, "contrast", 5, cache_dir=tmp_path, progress=False)
    assert default.info["preset"] == "cifar-10-c" and default.info["rng"] == "reference"
    assert default.info["engine_version"] == ENGINE_VERSION
    assert f"torch-v{ENGINE_VERSION}-cifar-10-c-reference-seed0" in default.info["cache"]
    assert torch.equal(default.images, corrupt(clean.images, "contrast", 5, [10, 11, 12, 13], preset="cifar-10-c"))
    other = corrupted_set(clean, "contrast", 5, cache_dir=tmp_path, progress=False, preset="imagenet-c",
                          rng="device")
    assert "imagenet-c-device-cpu" in other.info["cache"] and other.info["cache"] != default.info["cache"]
    assert not torch.equal(other.images, default.images)
    again = corrupted_set(clean, "contrast", 5, cache_dir=tmp_path, progress=False, preset="imagenet-c", rng="device")
    assert torch.equal(again.images, other.images)  # read back from its own cache file
    reference = corrupted_set(clean, "contrast", 5, backend="imagecorruptions", cache_dir=tmp_path, progress=False)
    assert reference.info["preset"] == "imagenet-c" and "imagecorruptions-v" in reference.info["cache"]


def test_cli_accepts_the_preset_and_rng_flags() -> None:
    from eval.cli import build_parser

    args = build_parser().parse_args(["--checkpoint", "x", "--corruption-preset", "tiny-imagenet-c",
                                      "--corruption-rng", "device"])
    assert args.corruption_preset == "tiny-imagenet-c" and args.corruption_rng == "device"
    defaults = build_parser().parse_args(["--checkpoint", "x"])
    assert defaults.corruption_preset is None and defaults.corruption_rng is None
