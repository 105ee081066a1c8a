"""ImageNet readers on tiny trees made here: ImageNet-C per-cell errors and CE, ImageNet-A's timm mask, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torch import nn

import eval
from eval.context import EvaluationError
from eval.corruptions import ALL_CORRUPTIONS, CORRUPTIONS
from eval.datasets import DataError, imagenet_a_mask, imagenet_a_synsets
from eval.metrics import ALEXNET_CLEAN_ERROR, alexnet_errors
from eval.store import ResultStore

WNIDS = ["n01440764", "n01443537"]  # class 0 = dark images, class 1 = bright images
PER_CLASS = 3


class Brightness(nn.Module):
    """Predicts class 1 when the mean pixel is above 0.5, else class 0 (logits: [0.5 - m, m - 0.5])."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([0.5 - m, m - 0.5], dim=1)


META = {"name": "brightness", "num_classes": 2, "input_size": [3, 8, 8], "sha256": None, "crop_pct": 0.875,
        "interpolation": "bilinear", "source": "test", "classes": WNIDS}


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path, quality=85)


def _dark_framed() -> np.ndarray:
    """12x12: black 6x6 centre, white 3-px frame. Center crop to 8 -> 44 % white (dark); Resize(9) + crop 8 as
    for val images -> about 68 % white (bright): a reader that resizes -C images gets these wrong."""
    a = np.full((12, 12, 3), 255)
    a[3:9, 3:9] = 0
    return a


def wrong_count(ci: int, severity: int) -> int:
    """Dark (class 0) images replaced by bright ones in cell (corruption index, severity): 0..3 of 6."""
    return (ci + severity) % (PER_CLASS + 1)


@pytest.fixture(scope="module")
def imagenet_trees(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("imagenet")
    bright = np.full((12, 12, 3), 255)
    for ci, corruption in enumerate(ALL_CORRUPTIONS):
        for s in range(1, 6):
            cell = root / "c" / corruption / str(s)
            for k in range(PER_CLASS):
                _save(cell / WNIDS[0] / f"img{k}.JPEG", bright if k < wrong_count(ci, s) else _dark_framed())
                _save(cell / WNIDS[1] / f"img{k}.JPEG", bright)
    for k in range(PER_CLASS):  # val: 2 of 3 dark images right, all bright ones right -> clean error 1/6
        _save(root / "val" / WNIDS[0] / f"v{k}.JPEG", np.zeros((16, 16, 3)) if k else np.full((16, 16, 3), 255))
        _save(root / "val" / WNIDS[1] / f"v{k}.JPEG", np.full((16, 16, 3), 255))
    return {"c": root / "c", "val": root / "val"}


def test_imagenet_c_reader_gives_the_right_cells_and_ce(imagenet_trees, tmp_path):
    data = eval.DataSources(val=imagenet_trees["val"], imagenet_c=imagenet_trees["c"])
    rows = eval.evaluate(Brightness().eval(), META, "clean,corruption", data=data, out=tmp_path, progress=False,
                         imagenet_c_method="crop")  # the stand-in files are 12 px: crop as for 224-px files
    top1 = {(r["corruption"], r["severity"]): r["value"] for r in rows
            if r["metric"] == "top1" and r["suite"] == "corruption"}
    assert len(top1) == 95
    for ci, c in enumerate(ALL_CORRUPTIONS):
        for s in range(1, 6):
            assert top1[c, s] == pytest.approx(100 * (1 - wrong_count(ci, s) / 6)), (c, s)
    clean = [r for r in rows if r["suite"] == "clean" and r["metric"] == "top1"][0]
    assert clean["value"] == pytest.approx(100 * 5 / 6) and clean["n"] == 6
    ce = {r["corruption"]: r["value"] for r in rows if r["metric"] == "ce"}
    table = alexnet_errors()
    errs = {c: [wrong_count(ci, s) / 6 for s in range(1, 6)] for ci, c in enumerate(ALL_CORRUPTIONS)}
    # gaussian_noise (index 0): wrong 1,2,3,0,1 of 6 -> sum 7/6; CE = 100 * (7/6) / 4.43214
    assert ce["gaussian_noise"] == pytest.approx(100 * (7 / 6) / 4.43214)
    expected_mce = sum(100 * sum(errs[c]) / sum(table[c]) for c in CORRUPTIONS) / 15
    summary = eval.summarize(rows)
    assert summary["mce"] == pytest.approx(expected_mce)
    rel = sum(100 * sum(e - 1 / 6 for e in errs[c]) / sum(e - ALEXNET_CLEAN_ERROR for e in table[c])
              for c in CORRUPTIONS) / 15
    assert summary["relative_mce"] == pytest.approx(rel)
    assert summary["baseline"].startswith("alexnet") and summary["baseline_clean_error"] == 0.4348
    assert summary["ce"]["saturate"] == pytest.approx(100 * sum(errs["saturate"]) / sum(table["saturate"]))
    assert (tmp_path / "summary.json").exists()
    # the report computes its intervals from the definition stored with each derived row (no guessing)
    from reports.derived import derived_cis
    from reports.load import load_stores

    store = load_stores([tmp_path / "results.sqlite"])
    mce_row = store.results[store.results["metric"] == "mce"].iloc[0]
    assert mce_row["settings"]["definition"]["corruptions"] == list(CORRUPTIONS)
    assert mce_row["settings"]["definition"]["normalisers"]["gaussian_noise"] == pytest.approx(4.43214)
    cis = derived_cis(store, mce_row["model"])
    assert set(cis) == {"mce", "relative_mce", "mean_corruption_top1"}
    assert all(isinstance(ci, tuple) and ci[0] <= ci[1] for ci in cis.values()), cis
    amp = eval.evaluate(Brightness().eval(), {**META, "name": "amp"}, "clean", data=data, amp=True, progress=False)
    assert [r["value"] for r in amp if r["metric"] == "top1"] == [pytest.approx(100 * 5 / 6)]  # bf16 path runs


def test_missing_severity_is_an_error_naming_it_and_keeps_stored_cells(imagenet_trees, tmp_path):
    import shutil

    tree = tmp_path / "c"
    shutil.copytree(imagenet_trees["c"], tree)
    shutil.rmtree(tree / "fog" / "3")
    data = eval.DataSources(val=imagenet_trees["val"], imagenet_c=tree)
    with pytest.raises(DataError, match=r"fog/3"):
        eval.evaluate(Brightness().eval(), META, "corruption", data=data, out=tmp_path / "out", progress=False,
                      imagenet_c_method="crop")
    with ResultStore(tmp_path / "out" / "results.sqlite") as store:
        stored = {(r["corruption"], r["severity"]) for r in store.rows(suite="corruption", metric="top1")}
    assert ("frost", 5) in stored and ("fog", 2) in stored and ("fog", 3) not in stored
    shutil.rmtree(tree / "fog")
    with pytest.raises(DataError, match=r"folder missing: .*fog"):
        eval.evaluate(Brightness().eval(), META, "corruption", data=data, store=ResultStore(None), progress=False,
                      imagenet_c_method="crop")


def test_imagenet_c_is_center_cropped_never_resized(imagenet_trees):
    from eval.datasets import imagenet_c_set

    cell = imagenet_c_set(imagenet_trees["c"], "fog", 4, META)  # fog index 9, severity 4: 1 dark image swapped
    x = torch.cat([b for b, _ in cell.batches(16)])
    assert x.shape == (6, 3, 8, 8)
    dark = x[cell.labels == 0].float().mean(dim=(1, 2, 3))
    assert sorted((dark > 127).tolist()) == [False, False, True]  # the framed ones stay dark: no resize


def test_imagenet_a_mask_is_timms_list():
    info = Path(timm.__file__).parent / "data" / "_info"
    indices = [int(v) for v in (info / "imagenet_a_indices.txt").read_text().split()]
    synsets = (info / "imagenet_a_synsets.txt").read_text().split()
    assert imagenet_a_mask().tolist() == indices and len(indices) == 200
    assert imagenet_a_synsets() == synsets
    in1k = (info / "imagenet_synsets.txt").read_text().split()
    assert [in1k[i] for i in indices] == synsets  # each kept logit is the class of that label


class PeakAt(nn.Module):
    """1000-way logits: peak at `dark` for dark images, `bright` for bright ones, and a decoy above both at 0."""

    def __init__(self, dark: int, bright: int) -> None:
        super().__init__()
        self.dark, self.bright = dark, bright

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 1000)
        is_bright = x.mean(dim=(1, 2, 3)) > 0.5
        out[:, 0] = 10.0  # class 0 (tench) is not an ImageNet-A class: the mask must drop it
        out[torch.arange(x.shape[0]), torch.where(is_bright, self.bright, self.dark)] = 5.0
        return out


def test_imagenet_a_evaluation_uses_the_mask(tmp_path):
    synsets, mask = imagenet_a_synsets(), imagenet_a_mask().tolist()
    assert 0 not in mask
    for k in range(2):
        _save(tmp_path / "a" / synsets[3] / f"a{k}.jpg", np.zeros((10, 10, 3)))
        _save(tmp_path / "a" / synsets[7] / f"b{k}.jpg", np.full((10, 10, 3), 255))
    meta = {**META, "name": "peak", "num_classes": 1000}
    rows = eval.evaluate(PeakAt(mask[3], mask[7]).eval(), meta, "natural-adversarial",
                         data=eval.DataSources(imagenet_a=tmp_path / "a"), progress=False)
    top1 = [r for r in rows if r["metric"] == "top1"][0]
    assert top1["value"] == 100.0 and top1["n"] == 4 and top1["dataset"] == "imagenet-a"
    swapped = eval.evaluate(PeakAt(mask[7], mask[3]).eval(), {**meta, "name": "swapped"}, "natural-adversarial",
                            data=eval.DataSources(imagenet_a=tmp_path / "a"), progress=False)
    assert [r["value"] for r in swapped if r["metric"] == "top1"] == [0.0]
    with pytest.raises(EvaluationError, match="1000 classes"):
        eval.evaluate(Brightness().eval(), META, "natural-adversarial",
                      data=eval.DataSources(imagenet_a=tmp_path / "a"), progress=False)


def test_class_count_mismatch_unreadable_image_and_nan_logits(imagenet_trees, tmp_path):
    import shutil

    val = tmp_path / "val"
    shutil.copytree(imagenet_trees["val"], val)
    data = eval.DataSources(val=val)
    with pytest.raises(DataError, match=r"class folders \['n01440764', 'n01443537'\] are not among the model's"):
        eval.evaluate(Brightness().eval(), {**META, "classes": ["cat", "dog"]}, "clean", data=data, progress=False)

    class NaNModel(Brightness):
        def forward(self, x):
            return super().forward(x) * float("nan")

    store = ResultStore(tmp_path / "r.sqlite")
    eval.evaluate(Brightness().eval(), META, "clean", data=data, store=store, progress=False)
    with pytest.raises(EvaluationError, match=r"nan-model .*NaN/inf logits for 6 images"):
        eval.evaluate(NaNModel().eval(), {**META, "name": "nan-model"}, "clean", data=data, store=store,
                      progress=False)
    assert [r["model"] for r in store.rows(metric="top1")] == ["brightness"]  # what was stored stays

    bad = val / WNIDS[1] / "broken.JPEG"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.JPEG"):
        eval.evaluate(Brightness().eval(), {**META, "name": "other"}, "clean", data=data, progress=False)
    with pytest.raises(ValueError, match="needs --val"):
        eval.evaluate(Brightness().eval(), META, "clean", data=eval.DataSources(imagenet_c=tmp_path),
                      progress=False)
