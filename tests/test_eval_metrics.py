"""eval.metrics against hand-computed values: top-k, CE / mCE / relative mCE with AlexNet."""
from __future__ import annotations

import math

import pytest
import torch

from eval.corruptions import CORRUPTIONS, EXTRA_CORRUPTIONS
from eval.metrics import (
    ALEXNET_CLEAN_ERROR,
    TopKAccuracy,
    alexnet_errors,
    corruption_error,
    corruption_summary,
    mce,
    mean_corruption_accuracy,
    relative_corruption_error,
    relative_mce,
)


def test_topk_accuracy_streams_merges_and_keeps_per_image():
    logits = torch.tensor([[5., 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5], [1, .5, .4, .3, .2, .1], [0, 1, 2, 3, 4, 9]])
    target = torch.tensor([0, 4, 1, 0])  # target ranks 1, 2, 2, 6: top-1 hits 1 of 4, top-5 hits 3 of 4
    acc = TopKAccuracy(keep_per_image=True)
    acc.update(logits[:2], target[:2])
    other = TopKAccuracy(keep_per_image=True)
    other.update(logits[2:], target[2:])
    out = acc.merge(other).compute()
    assert out == {"top1": 25.0, "top5": 75.0}
    assert acc.n == 4
    assert acc.per_image().tolist() == [True, False, False, False]
    acc.reset()
    with pytest.raises(ValueError, match="empty"):
        acc.compute()


def test_alexnet_table_is_the_published_one():
    table = alexnet_errors()
    assert list(table) == [*CORRUPTIONS, *EXTRA_CORRUPTIONS]
    assert table["gaussian_noise"] == [0.69528, 0.82542, 0.93554, 0.98138, 0.99452]
    assert table["saturate"] == [0.59342, 0.65514, 0.51174, 0.70834, 0.82260]
    assert table["elastic_transform"][2] == 0.55686
    assert ALEXNET_CLEAN_ERROR == 0.4348
    # the shipped mean column agrees with the severities (the doc's "mean" column)
    import csv
    from importlib import resources
    rows = csv.DictReader(resources.files("eval").joinpath("data/alexnet_imagenet_c.csv").read_text().splitlines())
    for r in rows:
        assert float(r["mean"]) == pytest.approx(sum(table[r["corruption"]]) / 5, abs=1e-6)


def test_corruption_error_against_alexnet_by_hand():
    base = alexnet_errors()["gaussian_noise"]  # sum = 4.43214
    assert corruption_error([0.5] * 5, base) == pytest.approx(100 * 2.5 / 4.43214)  # 56.40616
    assert corruption_error([0.5] * 5, base) == pytest.approx(56.40616, abs=1e-4)
    # relative: (5 * (0.5 - 0.2)) / (4.43214 - 5 * 0.4348) = 1.5 / 2.25814
    rel = relative_corruption_error([0.5] * 5, 0.2, base, ALEXNET_CLEAN_ERROR)
    assert rel == pytest.approx(66.42635, abs=1e-4)
    assert math.isnan(relative_corruption_error([0.5] * 5, 0.2, [0.1] * 5, 0.3))  # baseline got no worse
    with pytest.raises(ValueError, match="severities"):
        corruption_error([0.5] * 4, base)


def test_mce_is_not_the_mean_error_and_ignores_extras():
    table = alexnet_errors()
    errors = {c: list(table[c]) for c in CORRUPTIONS}
    errors["brightness"] = [e / 2 for e in table["brightness"]]  # CE 50 on one corruption, 100 on 14
    assert mce(errors) == pytest.approx((14 * 100 + 50) / 15)  # 96.6667
    mean_error = 100 * sum(sum(v) for v in errors.values()) / 75
    # from the table's mean column: (sum of the 15 means 11.835 - 0.564592 / 2) / 15
    assert mean_error == pytest.approx(100 * (11.834896 - 0.282296) / 15, abs=1e-6)  # 77.0173
    assert abs(mce(errors) - mean_error) > 15  # the classic mistake gives a different number
    with_extras = {**errors, **{c: [1.0] * 5 for c in EXTRA_CORRUPTIONS}}
    assert mce(with_extras) == pytest.approx(mce(errors))
    missing = dict(errors)
    del missing["fog"]
    with pytest.raises(KeyError, match="fog"):
        mce(missing)


def test_relative_mce_and_mean_corruption_accuracy_by_hand():
    # model: error 0.3 everywhere, clean 0.1; baseline: error 0.6 everywhere, clean 0.2
    errors = {c: [0.3] * 5 for c in CORRUPTIONS}
    base = {c: [0.6] * 5 for c in CORRUPTIONS}
    assert mce(errors, base) == pytest.approx(50.0)
    assert relative_mce(errors, 0.1, base, 0.2) == pytest.approx(100 * 1.0 / 2.0)  # (0.3-0.1)/(0.6-0.2)
    assert mean_corruption_accuracy(errors) == pytest.approx(70.0)
    summary = corruption_summary({**errors, "saturate": [0.9] * 5}, 0.1, {**base, "saturate": [0.6] * 5}, 0.2)
    assert summary["mce"] == pytest.approx(50.0)
    assert summary["ce"]["saturate"] == pytest.approx(150.0)  # reported on its own...
    assert summary["relative_mce"] == pytest.approx(50.0)  # ...never inside the means
    assert summary["extra_mean_ce"] is None  # only one of the four extras present
    assert summary["mean_corruption_top1"] == pytest.approx(70.0)
