"""Calibration (issue 14): ECE / NLL / Brier pinned on a model of fixed confidence, cross-checked against
torchmetrics' implementation, merged across shards, stored with every cell and averaged over corruption cells."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from eval.context import EvalContext, EvalOptions
from nst_core.imagesets import ImageSet
from eval.metrics import Calibration, calibration
from eval.store import ResultStore
from eval.suites import SUITES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FixedConfidence(nn.Module):
    """Ignores its input: p = (0.8, 0.2) for every image, so it predicts class 0 with confidence 0.8."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.tensor([0.8, 0.2])).expand(x.shape[0], 2).clone()


LABELS = torch.tensor([0] * 6 + [1] * 4)  # 60 % right at confidence 0.8: ECE = 20 %
EXPECTED = {"ece": 20.0, "nll": -(6 * math.log(0.8) + 4 * math.log(0.2)) / 10,
            "brier": (6 * (0.2 ** 2 + 0.2 ** 2) + 4 * (0.8 ** 2 + 0.8 ** 2)) / 10}


def test_fixed_confidence_gives_the_known_ece_nll_and_brier():
    logits = FixedConfidence()(torch.zeros(10, 1))
    got = calibration(logits, LABELS)
    assert got == pytest.approx(EXPECTED, abs=1e-5)
    perfect = calibration(torch.tensor([[0.0, 50.0], [50.0, 0.0]]), torch.tensor([1, 0]))
    assert perfect["ece"] == pytest.approx(0.0, abs=1e-9) and perfect["brier"] == pytest.approx(0.0, abs=1e-9)


def _numpy_ece(logits: np.ndarray, target: np.ndarray, bins: int = 15) -> float:
    """Guo et al.'s ECE written the other way round: per bin |accuracy - mean confidence| weighted by its share."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for b in range(bins):
        inside = (conf >= edges[b]) & ((conf < edges[b + 1]) if b < bins - 1 else (conf <= 1))
        if inside.any():
            total += inside.mean() * abs((pred[inside] == target[inside]).mean() - conf[inside].mean())
    return 100 * total


def test_streaming_ece_matches_torchmetrics_and_numpy_and_shards_merge():
    torchmetrics = pytest.importorskip("torchmetrics")
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 7, generator=gen) * 3
    target = torch.randint(0, 7, (500,), generator=gen)
    whole = Calibration()
    for start in range(0, 500, 64):  # streamed in uneven batches
        whole.update(logits[start:start + 64], target[start:start + 64])
    left, right = Calibration(), Calibration()
    left.update(logits[:123], target[:123])
    right.update(logits[123:], target[123:])
    merged = left.merge(right).compute()
    got = whole.compute()
    reference = torchmetrics.classification.MulticlassCalibrationError(num_classes=7, n_bins=15, norm="l1")
    assert got["ece"] == pytest.approx(100 * float(reference(logits.softmax(1), target)), abs=1e-4)
    assert got["ece"] == pytest.approx(_numpy_ece(logits.double().numpy(), target.numpy()), abs=1e-4)
    assert got["nll"] == pytest.approx(float(nn.functional.cross_entropy(logits, target)), abs=1e-5)
    onehot = nn.functional.one_hot(target, 7).float()
    assert got["brier"] == pytest.approx(float(((logits.softmax(1) - onehot) ** 2).sum(1).mean()), abs=1e-5)
    assert merged == pytest.approx(got, abs=1e-9)
    assert whole.n == 500 and got["ece"] > 1.0  # random logits are miscalibrated: the test can fail


def _tiny_set() -> ImageSet:
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return ImageSet(name="tiny", labels=LABELS.clone(), num_classes=2, indices=torch.arange(10), images=images)


META = {"name": "fixed", "num_classes": 2, "input_size": [3, 8, 8], "sha256": "f" * 64}


def test_every_cell_stores_calibration_and_corruption_means_them():
    store = ResultStore(None)
    ctx = EvalContext(FixedConfidence().eval(), META, store, clean=_tiny_set(),
                      options=EvalOptions(progress=False, corruptions=["gaussian_noise", "brightness"]))
    clean = {r["metric"]: r["value"] for r in SUITES["clean"].run(ctx)}
    assert {k: clean[k] for k in EXPECTED} == pytest.approx(EXPECTED, abs=1e-5)
    rows = SUITES["corruption"].run(ctx)
    cells = [r for r in rows if r["metric"] == "ece" and r["severity"] is not None]
    assert len(cells) == 10 and all(r["value"] == pytest.approx(20.0, abs=1e-5) for r in cells)
    means = {r["metric"]: r for r in rows if r["metric"].startswith("mean_corruption_")}
    assert means["mean_corruption_ece"]["value"] == pytest.approx(20.0, abs=1e-5)
    assert means["mean_corruption_nll"]["value"] == pytest.approx(EXPECTED["nll"], abs=1e-5)
    assert means["mean_corruption_brier"]["value"] == pytest.approx(EXPECTED["brier"], abs=1e-5)
    assert len(store.rows(metric="ece")) == 11  # clean + 10 corruption cells, stored with the cell

    import eval
    summary = eval.summarize(rows + SUITES["clean"].run(ctx))
    assert summary["clean_ece"] == pytest.approx(20.0, abs=1e-5)
    assert summary["mean_corruption_ece"] == pytest.approx(20.0, abs=1e-5)
