"""ImageNet-C metrics (Hendrycks & Dietterich 2019): error tables, CE, mCE, relative CE/mCE, mean corruption accuracy.

Errors are fractions in [0, 1] (as in the published AlexNet table); CE, relative CE, mCE and relative mCE are
percentages (ResNet-50: mCE 76.7). With E[s, c] the top-1 error at severity s of corruption c:

    CE_c          = 100 * sum_s E[s, c] / sum_s E_base[s, c]
    relative CE_c = 100 * sum_s (E[s, c] - E_clean) / sum_s (E_base[s, c] - E_base_clean)
    mCE           = mean of CE_c over the 15 common corruptions (never the plain mean of the errors)

The 4 extra corruptions get a CE of their own but never enter mCE. On ImageNet the baseline is AlexNet, whose
table ships as `eval/data/alexnet_imagenet_c.csv` with clean error `ALEXNET_CLEAN_ERROR` = 0.4348 (0.4345 is
also published; this project uses 0.4348).

Every derived row the evaluator stores carries its definition in its settings (key "definition", `definition`):
the formula's name and text, the corruptions and severities averaged, the baseline and its normalisers, whether the
clean error is subtracted, and the clean cell used. Readers (the report's bootstrap intervals) compute from that
record rather than guess which variant was used.
"""
from __future__ import annotations

import csv
import math
from importlib import resources
from typing import Any, Mapping, Sequence

from eval.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, EXTRA_CORRUPTIONS

SEVERITIES = (1, 2, 3, 4, 5)
ALEXNET_CLEAN_ERROR = 0.4348
"""AlexNet's clean top-1 error on ImageNet val used for relative CE (one published value; 0.4345 also appears)."""
ALEXNET_NAME = "alexnet (Hendrycks & Dietterich 2019 table)"

__all__ = [
    "SEVERITIES", "ALEXNET_CLEAN_ERROR", "ALEXNET_NAME", "CORRUPTIONS", "EXTRA_CORRUPTIONS", "ALL_CORRUPTIONS",
    "alexnet_errors", "corruption_error", "relative_corruption_error", "mean_ce",
    "mce", "relative_mce", "mean_corruption_accuracy", "corruption_summary", "FORMULAS", "definition",
]

FORMULAS: dict[str, tuple[str, str]] = {
    "ce": ("hendrycks2019-ce", "hendrycks2019 CE: CE_c = 100 * sum_s E[s,c] / normalisers[c], normalisers[c] = "
           "sum_s E_base[s,c]; E = top-1 error (fraction), s over `severities`"),
    "relative_ce": ("hendrycks2019-relative-ce", "hendrycks2019 relative CE: rCE_c = 100 * sum_s (E[s,c] - E_clean) "
                    "/ normalisers[c], normalisers[c] = sum_s (E_base[s,c] - E_base_clean); clean error subtracted; "
                    "E_clean from the `clean` cell"),
    "mce": ("hendrycks2019-mce", "hendrycks2019 mCE: sum_s E / sum_s E_base, mean over corruptions: mean over "
            "`corruptions` of CE_c = 100 * sum_s E[s,c] / normalisers[c], normalisers[c] = sum_s E_base[s,c]; "
            "E = top-1 error (fraction), s over `severities`"),
    "relative_mce": ("hendrycks2019-relative-mce", "hendrycks2019 relative mCE: sum_s (E - E_clean) / sum_s (E_base - "
                     "E_base_clean), mean over corruptions: mean over `corruptions` of rCE_c = 100 * sum_s (E[s,c] - "
                     "E_clean) / normalisers[c]; clean error subtracted; E_clean from the `clean` cell"),
    "mean_corruption_top1": ("mean-top1", "mean top-1 accuracy (%) over every (corruption, severity) cell of "
                             "`corruptions` x `severities`: 100 * (1 - mean E[s,c])"),
    "mean_corruption_cells": ("mean-over-cells", "plain mean of the cells' metric over the measured (corruption, "
                              "severity) cells of `corruptions` x `severities`"),
}
"""Derived metric -> (formula name, formula text) recorded in its rows' settings ("definition")."""


def definition(metric: str, corruptions: Sequence[str], baseline_name: str | None = None,
               baseline: Mapping[str, Sequence[float]] | None = None, baseline_clean_error: float | None = None,
               clean: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The complete definition of one derived row, to store in its settings under "definition".

    `metric`: a key of `FORMULAS` ("ce", "relative_ce", "mce", "relative_mce", "mean_corruption_top1", or
    "mean_corruption_cells" for the calibration means). For the CE family, `baseline` ({corruption: [s1..s5] errors,
    fractions}) gives `normalisers` {corruption: denominator} (relative ones subtract `baseline_clean_error`) and
    `baseline_name` names it; relative ones record `clean` (the clean cell: suite, dataset, n, data_id) whose error
    is subtracted. Raises KeyError for an unknown metric or a corruption missing from the baseline.
    """
    formula, text = FORMULAS[metric]
    record: dict[str, Any] = {"formula": formula, "text": text, "corruptions": list(corruptions),
                              "severities": list(SEVERITIES)}
    if metric in ("ce", "relative_ce", "mce", "relative_mce"):
        relative = metric.startswith("relative")
        if baseline is None or (relative and baseline_clean_error is None):
            raise ValueError(f"the definition of {metric} needs the baseline's errors"
                             f"{' and clean error' if relative else ''}")
        subtract = float(baseline_clean_error) if relative and baseline_clean_error is not None else 0.0
        record.update(baseline=baseline_name, clean_error_subtracted=relative,
                      normalisers={c: math.fsum(e - subtract for e in baseline[c]) for c in corruptions})
        if relative:
            record.update(baseline_clean_error=baseline_clean_error, clean=dict(clean or {}))
    return record


def alexnet_errors() -> dict[str, list[float]]:
    """AlexNet's published ImageNet-C top-1 errors {corruption: [s1..s5]} (fractions), from the shipped CSV."""
    text = resources.files("eval").joinpath("data/alexnet_imagenet_c.csv").read_text()
    rows = csv.DictReader(text.splitlines())
    return {r["corruption"]: [float(r[f"s{s}"]) for s in SEVERITIES] for r in rows}


def _check(name: str, errors: Sequence[float], what: str) -> None:
    if len(errors) != len(SEVERITIES):
        raise ValueError(f"{what} for {name!r} has {len(errors)} severities, expected {len(SEVERITIES)}")


def corruption_error(errors: Sequence[float], baseline_errors: Sequence[float]) -> float:
    """CE_c (percent): 100 * sum of the model's errors over severities / the baseline's sum."""
    _check("corruption", errors, "errors")
    _check("corruption", baseline_errors, "baseline errors")
    denom = math.fsum(baseline_errors)
    if denom <= 0:
        return math.nan
    return 100.0 * math.fsum(errors) / denom


def relative_corruption_error(errors: Sequence[float], clean_error: float, baseline_errors: Sequence[float],
                              baseline_clean_error: float) -> float:
    """Relative CE_c (percent): error increase over clean, normalised by the baseline's increase (NaN if <= 0)."""
    _check("corruption", errors, "errors")
    _check("corruption", baseline_errors, "baseline errors")
    denom = math.fsum(e - baseline_clean_error for e in baseline_errors)
    if denom <= 0:
        return math.nan
    return 100.0 * math.fsum(e - clean_error for e in errors) / denom


def mean_ce(ce: Mapping[str, float], corruptions: Sequence[str] = CORRUPTIONS) -> float:
    """Mean of per-corruption CE values over `corruptions`; every one of them must be present."""
    missing = [c for c in corruptions if c not in ce]
    if missing:
        raise KeyError(f"mean over {len(corruptions)} corruptions needs all of them; missing {missing}")
    return math.fsum(ce[c] for c in corruptions) / len(corruptions)


def mce(errors: Mapping[str, Sequence[float]], baseline: Mapping[str, Sequence[float]] | None = None) -> float:
    """mCE (percent) over the 15 common corruptions; baseline defaults to AlexNet's table."""
    base = alexnet_errors() if baseline is None else baseline
    return mean_ce({c: corruption_error(errors[c], base[c]) for c in CORRUPTIONS if c in errors})


def relative_mce(errors: Mapping[str, Sequence[float]], clean_error: float,
                 baseline: Mapping[str, Sequence[float]] | None = None,
                 baseline_clean_error: float = ALEXNET_CLEAN_ERROR) -> float:
    """Relative mCE (percent) over the 15 common corruptions; baseline defaults to AlexNet (clean error 0.4348)."""
    base = alexnet_errors() if baseline is None else baseline
    return mean_ce({c: relative_corruption_error(errors[c], clean_error, base[c], baseline_clean_error)
                    for c in CORRUPTIONS if c in errors})


def mean_corruption_accuracy(errors: Mapping[str, Sequence[float]], corruptions: Sequence[str] = CORRUPTIONS) -> float:
    """Mean top-1 accuracy (percent) over all severities of `corruptions` (RobustBench's 'corruptions' accuracy)."""
    missing = [c for c in corruptions if c not in errors]
    if missing:
        raise KeyError(f"mean corruption accuracy needs all of {len(corruptions)} corruptions; missing {missing}")
    cells = [e for c in corruptions for e in errors[c]]
    return 100.0 * (1.0 - math.fsum(cells) / len(cells))


def corruption_summary(errors: Mapping[str, Sequence[float]], clean_error: float | None,
                       baseline: Mapping[str, Sequence[float]] | None = None,
                       baseline_clean_error: float | None = ALEXNET_CLEAN_ERROR) -> dict[str, Any]:
    """Every derived figure at once: per-corruption CE / relative CE (all present) and the 15-corruption means.

    Means are None when a common corruption is missing; relative figures are None without clean errors.
    """
    base = alexnet_errors() if baseline is None else baseline
    present = [c for c in ALL_CORRUPTIONS if c in errors and c in base] + \
        [c for c in errors if c not in ALL_CORRUPTIONS and c in base]
    ce = {c: corruption_error(errors[c], base[c]) for c in present}
    rel = None
    if clean_error is not None and baseline_clean_error is not None:
        rel = {c: relative_corruption_error(errors[c], clean_error, base[c], baseline_clean_error) for c in present}
    complete = all(c in ce for c in CORRUPTIONS)
    return {
        "ce": ce,
        "relative_ce": rel,
        "mce": mean_ce(ce) if complete else None,
        "relative_mce": mean_ce(rel) if complete and rel is not None else None,
        "mean_corruption_top1": mean_corruption_accuracy(errors) if all(c in errors for c in CORRUPTIONS) else None,
        "extra_mean_ce": (math.fsum(ce[c] for c in EXTRA_CORRUPTIONS) / len(EXTRA_CORRUPTIONS)
                          if all(c in ce for c in EXTRA_CORRUPTIONS) else None),
    }
