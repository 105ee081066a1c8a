"""Robustness evaluation of classifiers on [0, 1] images: clean, ImageNet-C (mCE), ImageNet-A, FGSM / PGD.

Public API (RobustBench style): `eval.evaluate(model, meta, suite="robustness", ...) -> rows`, with
`eval.metrics` (accumulators and formulas), `eval.datasets` (readers and generated sets), `eval.attacks`,
`eval.store` (the SQLite results store) and `eval.suites` (the suite registry). The CLI `nst-eval` wraps these.
"""
from __future__ import annotations

from typing import Any

__all__ = ["evaluate", "summarize", "EvalOptions", "DataSources", "EvalContext"]


def __getattr__(name: str) -> Any:  # lazy: `import eval.corruptions` must not pull in torch models and suites
    if name in __all__:
        from eval import api

        return getattr(api, name)
    raise AttributeError(f"module 'eval' has no attribute {name!r}")
