"""The report's one-screen summary: per model the key headline quantities, which way is better, the change against
the baseline and whether a paired test resolves it."""

from __future__ import annotations

import pandas as pd

from reports.render import Summary, name
from reports.stats import decimals

LEVEL = 0.05
"""A change counts as resolved when its paired test gives p < LEVEL or its 95% CI excludes 0."""
LOWER_IS_BETTER = ("mce", "relative_mce", "mfr", "mt5d")
PERTURBATION_KEYS = ("mfr", "mt5d")
SUMMARY_QUANTITIES = ("clean_top1", "mce", "relative_mce", "mfr", "mt5d", "imagenet_a_top1")
"""Quantities shown in the summary (with every ImageNet-P difficulty), then each attack at its largest eps."""
MARKS = {"better": "✓", "worse": "✗", "unresolved": "~", "untested": "?", "baseline": ""}


def lower_is_better(quantity: str) -> bool:
    """Whether a smaller value of the headline quantity (key as in `tables.quantities`) is the better one: the
    error ratios (mCE, relative mCE, mFR, mT5D, per difficulty) and every calibration error (`*_ece`)."""
    key = quantity.split("_d")[0]
    return (key in LOWER_IS_BETTER and not quantity.startswith("mean_")) or quantity.endswith("_ece")


def summary_quantities(long: pd.DataFrame) -> list[str]:
    """The summary's quantity keys, in headline order."""
    keys = list(dict.fromkeys(long["quantity"]))
    chosen = [k for k in keys if k.split("_d")[0] in SUMMARY_QUANTITIES and not k.startswith("mean_")]
    robust = long[long["attack"].notna()]
    for _, group in robust.groupby("attack", sort=False):
        chosen.append(group.loc[group["eps"].idxmax(), "quantity"])
    return chosen


def build_summary(long: pd.DataFrame, baseline: str | None) -> Summary:
    """The summary from `tables.headline_long`: a row per model (report order), a column per summary quantity."""
    if long.empty:
        return Summary("The stores hold no headline metrics.")
    keys = summary_quantities(long)
    labels = dict(zip(long["quantity"], long["label"]))
    columns = [{"label": labels[k].replace(" (%)", ""),
                "direction": "lower is better" if lower_is_better(k) else "higher is better"} for k in keys]
    indexed = long.set_index(["model", "quantity"])
    rows = []
    for model in dict.fromkeys(long["model"]):
        cells = [_cell(indexed.loc[(model, k)], k) if (model, k) in indexed.index else None for k in keys]
        rows.append({"model": model, "cells": cells})
    caption = (f"Value in % with its 95% CI; below it the change against the baseline {name(baseline)} "
               "(percentage points) and whether a paired test on the same images resolves it. Robust accuracy "
               "at each attack's largest eps; every quantity and eps is in the Headline section.")
    untested = {key.split("_d")[0] for row in rows for key, cell in zip(keys, row["cells"])
                if cell and cell["verdict"] == "untested"}
    reasons = []
    if untested & set(PERTURBATION_KEYS):
        reasons.append("mFR and mT5D of stores written without per-sequence values")
    if untested - set(PERTURBATION_KEYS):
        reasons.append("no per-image data on the same images")
    legend = ("✓ better, ✗ worse: the change is resolved (McNemar's exact p < 0.05 for accuracies; for derived "
              "metrics a paired bootstrap 95% CI of the change that excludes 0). ~ not resolved at that level."
              + (f" ? no paired test possible ({'; '.join(reasons)})." if reasons else "")
              + " No correction for multiple comparisons.")
    return Summary(caption, legend, columns, rows)


def _cell(row: pd.Series, key: str) -> dict:
    places = decimals(row["n"]) if row["ci_method"].startswith("Clopper") else 1
    value = f"{row['value']:.{places}f}"
    ci = f"[{row['ci_low']:.{places}f}, {row['ci_high']:.{places}f}]" if pd.notna(row["ci_low"]) else ""
    test = str(row["test"])
    if test == "baseline":
        return {"value": value, "ci": ci, "change": "baseline", "verdict": "baseline", "title": "the baseline"}
    if pd.isna(row["delta"]):
        return {"value": value, "ci": ci, "change": "", "verdict": "untested", "title": test}
    change = f"{row['delta']:+.{places}f} pp"
    resolved: bool | None = None
    if pd.notna(row.get("p_value")):
        change += f", p = {_p(row['p_value'])}"
        resolved = row["p_value"] < LEVEL
    elif pd.notna(row.get("delta_low")):
        change += f" [{row['delta_low']:+.{places}f}, {row['delta_high']:+.{places}f}]"
        resolved = row["delta_low"] > 0 or row["delta_high"] < 0
    if resolved is None:
        verdict = "untested"
    elif not resolved:
        verdict = "unresolved"
    else:
        verdict = "better" if (row["delta"] < 0) == lower_is_better(key) else "worse"
    return {"value": value, "ci": ci, "change": f"{change} {MARKS[verdict]}", "verdict": verdict, "title": test}


def _p(value: float) -> str:
    return "< 0.001" if value < 0.001 else f"{value:.2g}" if value < 0.1 else f"{value:.2f}"
