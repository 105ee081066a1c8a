"""Benchmark vocabulary the report needs: ImageNet-C corruption order and families, ImageNet-P perturbation order
(Hendrycks & Dietterich 2019), read from the evaluator's catalog (`eval.corruptions.catalog`, no torch), and the
report's sort keys over them."""

from eval.corruptions.catalog import (
    CORRUPTION_FAMILIES,
    CORRUPTIONS,
    EVALUATED_PERTURBATIONS,
    EXTRA_CORRUPTIONS,
    EXTRA_PERTURBATIONS,
)

COMMON = CORRUPTIONS
"""The 15 common corruptions, in the benchmark's order; mCE averages over these."""

EXTRA = EXTRA_CORRUPTIONS
"""The 4 extra ("validation") corruptions, reported on their own."""

FAMILIES = CORRUPTION_FAMILIES
"""The four families of the common corruptions."""

PERTURBATIONS = EVALUATED_PERTURBATIONS + EXTRA_PERTURBATIONS
"""The 10 evaluated ImageNet-P perturbations (mFR and mT5D average over these), then the 4 extras."""


def corruption_sort_key(name: str) -> tuple[int, str]:
    """Sort key putting the common corruptions first in benchmark order, then the extras, then anything else."""
    order = COMMON + EXTRA
    return (order.index(name), "") if name in order else (len(order), name)


def perturbation_sort_key(name: str) -> tuple[int, str]:
    """Sort key putting perturbations in benchmark order, then anything else by name."""
    return (PERTURBATIONS.index(name), "") if name in PERTURBATIONS else (len(PERTURBATIONS), name)
