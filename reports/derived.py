"""Bootstrap 95% CIs of mCE, relative mCE and mean corruption accuracy, computed from per-image bits by the definition
the evaluator stored with each value.

nst-eval records every derived row's definition in its settings (key "definition", written by
`eval.metrics.corruption.definition`): the formula's name, the corruptions and severities averaged, the baseline's
normalisers {corruption: denominator} and, for relative mCE, the clean cell whose error is subtracted. This module
reads that record and computes the statistic it describes; it never guesses a variant. A row without a definition
(a store written before nst-eval recorded them) gets "n/a (definition not recorded)"; a formula this module does not
know gets an n/a naming it. The baseline's normalisers are fixed numbers, so an interval reflects the model's
sampling error only. A CI is given only when the definition, applied to the per-image bits, reproduces the stored
value; otherwise it is n/a with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from reports.load import Store, cell_key, correctness
from reports.stats import bootstrap_ci

DERIVED = ("mce", "relative_mce", "mean_corruption_top1")
FORMULAS = {"mce": "hendrycks2019-mce", "relative_mce": "hendrycks2019-relative-mce",
            "mean_corruption_top1": "mean-top1"}
"""The formula each derived metric's stored definition must name (`eval.metrics.corruption.FORMULAS`)."""
NOT_RECORDED = "n/a (definition not recorded)"
Statistic = Callable[[np.ndarray], np.ndarray]
Column = tuple[tuple, int]  # (cell key, images n): one column of per-image bits


@dataclass
class Prepared:
    """One model's stored derived values, the bit columns their definitions read, and a statistic per metric."""

    stored: dict[str, float]
    columns: list[Column]
    bits: list[np.ndarray]
    statistics: dict[str, Statistic | str]  # a statistic over the columns' accuracies, or why there is none
    used: dict[str, list[Column]]  # the columns each metric's statistic reads
    itself: set[str]  # metrics whose CE baseline is this model (100 by definition: no interval of its own)


def derived_cis(store: Store, model: str) -> dict[str, tuple[float, float] | str]:
    """Bootstrap CI (percent) per derived metric of `model`, or a string saying why there is none."""
    prepared = _prepare(store, model)
    result: dict[str, tuple[float, float] | str] = {}
    for metric in prepared.stored:
        statistic = prepared.statistics[metric]
        if isinstance(statistic, str):
            result[metric] = statistic
        elif metric in prepared.itself:
            result[metric] = "n/a (the CE baseline itself: 100 by definition)"
        else:
            result[metric] = bootstrap_ci(prepared.bits, statistic)
    return result


def paired_delta_cis(store: Store, model: str, baseline: str) -> dict[str, tuple[float, float] | str]:
    """95% CI (percentage points) of `model` minus `baseline` per derived metric, or why there is none.

    A paired percentile bootstrap: the same resampled images in every cell of both models (each metric's
    definitions must read the same cells on the same n images), each model's value computed by its own stored
    definition as in `derived_cis` (the normalisers held fixed, also where `baseline` is the CE baseline itself).
    """
    ours, theirs = _prepare(store, model), _prepare(store, baseline)
    width = len(ours.bits)
    result: dict[str, tuple[float, float] | str] = {}
    for metric in ours.stored:
        mine, base = ours.statistics[metric], theirs.statistics.get(metric)
        if isinstance(mine, str):
            result[metric] = mine
        elif metric not in theirs.stored or base is None:
            result[metric] = "n/a (the baseline has no stored value)"
        elif isinstance(base, str):
            result[metric] = f"{base} (baseline)"
        elif ours.used[metric] != theirs.used[metric]:
            result[metric] = "n/a (not the same images)"
        else:
            def delta(accuracies: np.ndarray, mine: Statistic = mine, base: Statistic = base) -> np.ndarray:
                return mine(accuracies[:, :width]) - base(accuracies[:, width:])

            result[metric] = bootstrap_ci(ours.bits + theirs.bits, delta)
    return result


def stored_definition(row: pd.Series) -> dict[str, Any] | None:
    """The definition recorded in a row's settings (key "definition"), or None when the store has none."""
    settings = row["settings"] if isinstance(row["settings"], dict) else {}
    definition = settings.get("definition")
    return definition if isinstance(definition, dict) else None


def _prepare(store: Store, model: str) -> Prepared:
    """The stored derived values of `model` (the first row per metric with a value, as the headline reads), the
    per-image bit columns their definitions need and a statistic per metric that reproduces the stored value (or
    why there is none)."""
    rows = store.results[(store.results["model"] == model) & store.results["value"].notna()]
    found: dict[str, pd.Series] = {}
    for metric in DERIVED:
        matching = rows[rows["metric"] == metric]
        if len(matching):
            found[metric] = matching.iloc[0]
    plans: dict[str, tuple[list[Column], Callable[[list[int]], Statistic]] | str] = {
        metric: _plan(metric, row) for metric, row in found.items()}
    needed = sorted({c for plan in plans.values() if not isinstance(plan, str) for c in plan[0]},
                    key=lambda c: (c[0][0] == "clean", str(c)))  # corruption cells in order, then the clean cell
    found_bits = {c: correctness(store, model, c[0], c[1]) for c in needed}
    bits = {c: b for c, b in found_bits.items() if b is not None}
    columns = list(bits)
    index = {c: i for i, c in enumerate(columns)}
    point = np.array([[100 * bits[c].mean() for c in columns]])
    statistics: dict[str, Statistic | str] = {}
    used: dict[str, list[Column]] = {}
    for metric, plan in plans.items():
        if isinstance(plan, str):
            statistics[metric] = plan
            continue
        wanted, build = plan
        used[metric] = wanted
        if any(c not in bits for c in wanted):
            statistics[metric] = "n/a (no per-image data)"
            continue
        statistic = build([index[c] for c in wanted])
        if not np.isclose(statistic(point)[0], float(found[metric]["value"]), rtol=1e-6, atol=1e-6):
            statistics[metric] = "n/a (stored value not reproducible from per-image data)"
        else:
            statistics[metric] = statistic
    return Prepared({m: float(r["value"]) for m, r in found.items()}, columns, [bits[c] for c in columns],
                    statistics, used, {m for m, r in found.items() if m in ("mce", "relative_mce")
                                       and (stored_definition(r) or {}).get("baseline") == model})


def _plan(metric: str, row: pd.Series) -> tuple[list[Column], Callable[[list[int]], Statistic]] | str:
    """The bit columns `metric`'s stored definition reads and a builder of its statistic over their positions, or
    why there is none (no definition, an unknown formula, an incomplete record)."""
    definition = stored_definition(row)
    if definition is None:
        return NOT_RECORDED
    formula = definition.get("formula")
    if formula != FORMULAS[metric]:
        return f"n/a (definition {formula!r} is not one this report computes; {FORMULAS[metric]!r} is)"
    corruptions, severities = definition.get("corruptions"), definition.get("severities")
    if not isinstance(corruptions, list) or not isinstance(severities, list) or not corruptions or not severities:
        return "n/a (definition incomplete: no corruptions or severities)"
    n = None if pd.isna(row["n"]) else int(row["n"])
    if n is None:
        return "n/a (n not recorded)"
    cells = [[(cell_key({"suite": row["suite"], "dataset": row["dataset"], "corruption": c, "severity": s,
                         "attack": None, "eps": None}), n) for s in severities] for c in corruptions]
    flat = [column for group in cells for column in group]
    if metric == "mean_corruption_top1":
        return flat, lambda positions: (lambda accuracies: accuracies[:, positions].mean(axis=1))
    normalisers = definition.get("normalisers")
    if not isinstance(normalisers, Mapping) or any(not _positive(normalisers.get(c)) for c in corruptions):
        return "n/a (definition incomplete: a corruption's normaliser is missing or not positive)"
    denominators = np.array([float(normalisers[c]) for c in corruptions])
    groups = len(corruptions), len(severities)
    if metric == "mce":
        if definition.get("clean_error_subtracted") is not False:
            return "n/a (mCE definition subtracts a clean error: not hendrycks2019 mCE)"

        def build_mce(positions: list[int]) -> Statistic:
            def statistic(accuracies: np.ndarray) -> np.ndarray:
                errors = (100 - accuracies[:, positions]).reshape(-1, *groups)  # percent [B, corruptions, severities]
                return (errors.sum(axis=2) / denominators).mean(axis=1)  # 100 * sum_s E / normaliser, fractions
            return statistic

        return flat, build_mce
    clean = definition.get("clean")
    if definition.get("clean_error_subtracted") is not True or not isinstance(clean, Mapping) or \
            clean.get("dataset") is None or clean.get("n") is None:
        return "n/a (definition incomplete: no clean cell recorded for the subtracted clean error)"
    clean_column = (cell_key({"suite": clean.get("suite") or "clean", "dataset": clean["dataset"], "corruption": None,
                              "severity": None, "attack": None, "eps": None}), int(clean["n"]))

    def build_relative(positions: list[int]) -> Statistic:
        cell_positions, clean_position = positions[:-1], positions[-1]

        def statistic(accuracies: np.ndarray) -> np.ndarray:
            increase = (accuracies[:, [clean_position]] - accuracies[:, cell_positions]).reshape(-1, *groups)
            return (increase.sum(axis=2) / denominators).mean(axis=1)  # 100 * sum_s (E - E_clean) / normaliser
        return statistic

    return [*flat, clean_column], build_relative


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value) > 0
