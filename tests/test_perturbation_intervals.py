"""mFR / mT5D 95 % intervals (issue 14): a seeded, paired percentile bootstrap over sequences, pinned on inputs
whose answer is known, and stored by the perturbation suite (read back on resume from the stored per-sequence
values)."""
from __future__ import annotations

import math

import pytest

from eval.corruptions.catalog import EVALUATED_PERTURBATIONS
from eval.metrics.perturbation import bootstrap_relative_mean
from eval.store import ResultStore
from eval.suites import SUITES
import torch
from torch import nn

from eval.context import EvalContext, EvalOptions
from test_perturbation_suite import clean, meta  # noqa: F401  (fixture and helpers)


def jittery(seed: int) -> nn.Module:
    """A linear model on raw pixels with large weights: its top-1 flips often along a sequence."""
    torch.manual_seed(seed)
    layer = nn.Linear(3 * 16 * 16, 5)
    layer.weight.data *= 100
    return nn.Sequential(nn.Flatten(), layer).eval()


def context(store, clean, tmp_path, names):  # noqa: F811
    options = EvalOptions(batch_size=64, cache_dir=tmp_path / "cache", progress=False, perturbations=names,
                          perturbation_limit=5)
    return EvalContext(jittery(1), meta("jitter1"), store, options=options, baseline=(jittery(2), meta("jitter2")),
                       clean=clean)


def test_bootstrap_is_exact_where_the_ratio_is_fixed_and_seeded_otherwise():
    base = {"a": [0.1, 0.3, 0.2, 0.4], "b": [0.5, 0.1, 0.2, 0.2]}
    assert bootstrap_relative_mean(base, base) == pytest.approx((100.0, 100.0))
    double = {p: [2 * v for v in values] for p, values in base.items()}
    assert bootstrap_relative_mean(double, base) == pytest.approx((200.0, 200.0))  # paired: every draw gives 200
    own = {"a": [0.2, 0.1, 0.0, 0.5], "b": [0.1, 0.4, 0.3, 0.1]}
    point = (100 * sum(own["a"]) / sum(base["a"]) + 100 * sum(own["b"]) / sum(base["b"])) / 2
    lo, hi = bootstrap_relative_mean(own, base, seed=3)
    assert lo < point < hi and hi - lo > 10  # four sequences: a wide interval
    assert bootstrap_relative_mean(own, base, seed=3) == (lo, hi)
    assert bootstrap_relative_mean(own, base, seed=4) != (lo, hi)
    with pytest.raises(ValueError, match="pairs"):
        bootstrap_relative_mean({"a": [0.1]}, {"a": [0.1, 0.2]})
    assert all(math.isnan(v) for v in bootstrap_relative_mean({"a": [0.1]}, {"a": [0.0]}))


def test_suite_stores_intervals_around_mfr_and_mt5d_and_resume_keeps_them(clean, tmp_path):  # noqa: F811
    store = ResultStore(None)
    names = list(EVALUATED_PERTURBATIONS)
    rows = SUITES["perturbation"].run(context(store, clean, tmp_path, names))
    agg = {r["metric"]: r["value"] for r in rows if r["corruption"] is None}
    for m in ("mfr", "mt5d"):
        assert agg[f"{m}_low"] < agg[m] < agg[f"{m}_high"], (m, agg)
    again = SUITES["perturbation"].run(context(store, clean, tmp_path, names))
    assert {r["metric"]: r["value"] for r in again if r["corruption"] is None} == agg
