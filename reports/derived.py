"""Recompute mCE, relative mCE and mean corruption accuracy from per-image bits and bootstrap their 95% CIs.

The baseline's error sums are taken as fixed: they are recovered from the stored CE rows
(sum_s E_base = 100 * sum_s E_model / CE), so the interval reflects the model's sampling error only. A CI is given
only when the recomputation from the per-image bits reproduces the stored value; otherwise it is n/a with the reason.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from reports.corruptions import COMMON
from reports.load import Store, cell_key, correctness
from reports.stats import bootstrap_ci

DERIVED = ("mce", "relative_mce", "mean_corruption_top1")
Statistic = Callable[[np.ndarray], np.ndarray]


def derived_cis(store: Store, model: str) -> dict[str, tuple[float, float] | str]:
    """Bootstrap CI (percent) per derived metric of `model`, or a string saying why there is none."""
    prepared = _prepare(store, model)
    if isinstance(prepared, dict):
        return dict(prepared)
    stored, columns, bits, statistics = prepared
    rows = store.results[store.results["model"] == model]
    normalisers = {s.get("baseline") for s in rows.loc[rows["metric"].isin(["ce", "relative_ce"]), "settings"]}
    itself = "n/a (the CE baseline itself: 100 by definition)" if model in normalisers else None
    result: dict[str, tuple[float, float] | str] = {}
    for metric in stored:
        statistic = statistics[metric]
        if itself and metric != "mean_corruption_top1":
            result[metric] = itself
        elif isinstance(statistic, str):
            result[metric] = statistic
        else:
            result[metric] = bootstrap_ci(bits, statistic)
    return result


def paired_delta_cis(store: Store, model: str, baseline: str) -> dict[str, tuple[float, float] | str]:
    """95% CI (percentage points) of `model` minus `baseline` per derived metric, or why there is none.

    A paired percentile bootstrap: the same resampled images in every cell of both models (their cells must hold the
    same images), each model's value recomputed as in `derived_cis` (CE normaliser's error sums held fixed).
    """
    ours, theirs = _prepare(store, model), _prepare(store, baseline)
    if isinstance(ours, dict):
        return dict(ours)
    if isinstance(theirs, dict):
        return {m: f"{reason} (baseline)" for m, reason in theirs.items() if m in ours[0]}
    if [cell_key(r) for _, r in ours[1].iterrows()] != [cell_key(r) for _, r in theirs[1].iterrows()] or \
            list(ours[1]["n"]) != list(theirs[1]["n"]):
        return {m: "n/a (not the same images)" for m in ours[0]}
    width = len(ours[2])
    result: dict[str, tuple[float, float] | str] = {}
    for metric in ours[0]:
        mine, base = ours[3].get(metric), theirs[3].get(metric)
        if metric not in theirs[0]:
            result[metric] = "n/a (the baseline has no stored value)"
        elif isinstance(mine, str) or isinstance(base, str):
            result[metric] = mine if isinstance(mine, str) else f"{base} (baseline)"
        else:
            assert mine is not None and base is not None  # every stored metric has a statistic or a reason
            def delta(accuracies: np.ndarray, mine: Statistic = mine, base: Statistic = base) -> np.ndarray:
                return mine(accuracies[:, :width]) - base(accuracies[:, width:])

            result[metric] = bootstrap_ci(ours[2] + theirs[2], delta)
    return result


def _prepare(store: Store, model: str) -> dict[str, str] | tuple[dict[str, float], pd.DataFrame, list[np.ndarray],
                                                                  dict[str, Statistic | str]]:
    """The stored derived values of `model`, its cell rows (sorted by cell), their per-image bits and a statistic
    per metric that reproduces the stored value (or why not); a dict of reasons when no interval is possible."""
    rows = store.results[store.results["model"] == model]
    stored = {m: rows.loc[rows["metric"] == m, "value"] for m in DERIVED}
    stored = {m: float(v.iloc[0]) for m, v in stored.items() if len(v)}
    if not stored:
        return {}
    cells = rows[(rows["suite"] == "corruption") & (rows["metric"] == "top1") & rows["corruption"].notna()
                 & rows["severity"].notna()]
    cells = cells.iloc[sorted(range(len(cells)), key=lambda i: str(cell_key(cells.iloc[i])))]
    clean = rows[(rows["suite"] == "clean") & (rows["metric"] == "top1")].head(1)
    columns = pd.concat([cells, clean])
    found = [correctness(store, model, cell_key(r), r["n"]) for _, r in columns.iterrows()]
    if not len(columns) or any(b is None for b in found):
        return {m: "n/a (no per-image data)" for m in stored}
    bits = [b for b in found if b is not None]  # every one
    if any(abs(100 * b.mean() - v) > 50 / len(b) for b, v in zip(bits, columns["value"])):
        return {m: "n/a (per-image bits disagree with stored top-1)" for m in stored}
    candidates = {
        "mce": _mce_statistic(rows, cells, "ce", None),
        "relative_mce": _mce_statistic(rows, cells, "relative_ce", len(cells) if len(clean) else None),
        "mean_corruption_top1": _mean_accuracy_statistic(cells, stored.get("mean_corruption_top1")),
    }
    point = 100 * np.array([[b.mean() for b in bits]])
    statistics: dict[str, Statistic | str] = {}
    for metric, value in stored.items():
        statistic = candidates[metric]
        if statistic is None or not np.isclose(statistic(point)[0], value, rtol=1e-6, atol=1e-6):
            statistics[metric] = "n/a (stored value not reproducible from per-image data)"
        else:
            statistics[metric] = statistic
    return stored, columns, bits, statistics


def _mce_statistic(rows: pd.DataFrame, cells: pd.DataFrame, metric: str, clean_column: int | None
                   ) -> Statistic | None:
    """mCE (metric 'ce') or relative mCE (metric 'relative_ce', needs the clean column) over the stored CE rows."""
    if metric == "relative_ce" and clean_column is None:
        return None
    ce_rows = rows[(rows["metric"] == metric) & rows["corruption"].notna()]
    common = ce_rows[ce_rows["corruption"].isin(COMMON)]
    ce_rows = common if len(common) else ce_rows
    clean_error = 0.0 if clean_column is None else 100 - float(rows.loc[
        (rows["suite"] == "clean") & (rows["metric"] == "top1"), "value"].iloc[0])
    groups = []
    for _, ce_row in ce_rows.iterrows():
        positions = np.flatnonzero((cells["corruption"] == ce_row["corruption"]).to_numpy())
        errors = 100 - cells["value"].to_numpy()[positions]
        numerator = float(np.sum(errors - clean_error))
        if not len(positions) or ce_row["value"] == 0 or numerator == 0:
            return None
        groups.append((positions, 100 * numerator / float(ce_row["value"])))
    if not groups:
        return None

    def statistic(accuracies: np.ndarray) -> np.ndarray:
        clean = 0.0 if clean_column is None else (100 - accuracies[:, clean_column])[:, None]
        ces = [100 * np.sum((100 - accuracies[:, p]) - clean, axis=1) / d for p, d in groups]
        return np.mean(ces, axis=0)

    return statistic


def _mean_accuracy_statistic(cells: pd.DataFrame, stored: float | None) -> Statistic | None:
    """Mean top-1 over the corruption cells: the common 15 or all of them, whichever gives the stored value."""
    if stored is None:
        return None
    values = cells["value"].to_numpy()
    for mask in (cells["corruption"].isin(COMMON).to_numpy(), np.ones(len(cells), bool)):
        if mask.any() and np.isclose(values[mask].mean(), stored, rtol=1e-6, atol=1e-6):
            positions = np.flatnonzero(mask)
            return lambda accuracies: accuracies[:, positions].mean(axis=1)
    return None
