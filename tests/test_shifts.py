"""The `shifts` suite (issue 14): ImageNet-R with timm's 200-class mask, ImageNet-Sketch (wnid folders) and an
ImageNetV2 variant (numeric folders, variant from the folder name), on tiny trees made here, scored by a model that
reads the class from the pixels; part of `robustness` when given, in summary.json; bad roots refused early."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import eval
from eval.cli import main as nst_eval
from eval.datasets import imagenet_r_mask, imagenet_r_synsets, imagenet_v2_variant, model_classes

SYNSETS = model_classes({"num_classes": 1000})
META = {"name": "pixel", "num_classes": 1000, "input_size": [3, 16, 16], "sha256": "a" * 64, "crop_pct": 0.875,
        "interpolation": "bilinear", "source": "test"}


def encode(index: int) -> np.ndarray:
    """A flat 40x30 image whose colour is its class index: R = index // 4, G = 64 * (index % 4)."""
    return np.broadcast_to(np.array([index // 4, 64 * (index % 4), 128], np.uint8), (30, 40, 3)).copy()


class PixelClass(nn.Module):
    """Reads the 1000-way class from the pixels (inverse of `encode`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, g = (x[:, :2].mean(dim=(2, 3)) * 255).round().unbind(1)
        index = (r * 4 + (g / 64).round()).long().clamp(0, 999)
        return nn.functional.one_hot(index, 1000).float() * 5


def tree(root: Path, folders: dict[str, int], per_class: int = 2) -> Path:
    for folder, index in folders.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            Image.fromarray(encode(index)).save(root / folder / f"{k}.png")
    return root


@pytest.fixture(scope="module")
def shift_trees(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shifts")
    r_syn, r_mask = imagenet_r_synsets(), imagenet_r_mask().tolist()
    # ImageNet-R: 3 of its 200 classes; the third folder's images show a class outside the mask (always wrong)
    r = tree(root / "imagenet-r", {r_syn[0]: r_mask[0], r_syn[50]: r_mask[50]})
    tree(r, {r_syn[199]: 0})  # class 0 (tench) is not an ImageNet-R class
    sketch = tree(root / "sketch", {SYNSETS[i]: i for i in (1, 300, 999)})
    v2 = tree(root / "imagenetv2-threshold0.7-format-val", {str(i): i for i in (2, 10, 512)})
    return {"r": r, "sketch": sketch, "v2": v2}


def test_shift_sets_are_scored_with_their_masks_and_recorded(shift_trees, tmp_path):
    data = eval.DataSources(imagenet_r=shift_trees["r"], imagenet_sketch=shift_trees["sketch"],
                            imagenet_v2=shift_trees["v2"])
    rows = eval.evaluate(PixelClass().eval(), META, "robustness", data=data, out=tmp_path, progress=False)
    top1 = {r["dataset"]: r["value"] for r in rows if r["suite"] == "shifts" and r["metric"] == "top1"}
    assert top1 == {"imagenet-r": pytest.approx(200 / 3), "imagenet-sketch": 100.0, "imagenet-v2": 100.0}
    n = {r["dataset"]: r["n"] for r in rows if r["suite"] == "shifts" and r["metric"] == "top1"}
    assert n == {"imagenet-r": 6, "imagenet-sketch": 6, "imagenet-v2": 6}
    v2 = [r for r in rows if r["dataset"] == "imagenet-v2" and r["metric"] == "top1"][0]
    assert json.loads(v2["settings"])["variant"] == "threshold0.7"
    assert {r["metric"] for r in rows if r["dataset"] == "imagenet-r"} >= {"top1", "top5", "ece", "nll", "brier"}
    summary = json.loads((tmp_path / "summary.json").read_text())["models"]["pixel"]
    assert summary["shifts"]["imagenet-sketch"]["top1"] == 100.0 and summary["shifts"]["imagenet-r"]["n"] == 6
    assert "shifts" not in summary["skipped"]
    from reports import tables
    from reports.load import load_stores

    long = tables.headline_long(load_stores([tmp_path / "results.sqlite"]), None)
    ece = {r.quantity: r.value for r in long.itertuples() if r.quantity.endswith("_ece")}
    stored = {r["dataset"]: r["value"] for r in rows if r["suite"] == "shifts" and r["metric"] == "ece"}
    assert ece["imagenet_r_ece"] == pytest.approx(stored["imagenet-r"]) and "imagenet_v2_ece" in ece


def test_v2_variant_names_and_bad_roots(tmp_path, capsys):
    assert imagenet_v2_variant(tmp_path / "imagenetv2-matched-frequency-format-val") == "matched-frequency"
    assert imagenet_v2_variant(tmp_path / "imagenetv2-top-images-format-val") == "top-images"
    assert imagenet_v2_variant(tmp_path / "my-v2") == "my-v2"
    assert nst_eval(["--model", "timm:resnet18", "--imagenet-r", str(tmp_path / "missing")]) == 2
    assert "--imagenet-r" in capsys.readouterr().err
    with pytest.raises(ValueError, match="shifts"):
        eval.evaluate(PixelClass().eval(), META, "shifts", progress=False)
