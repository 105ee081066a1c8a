"""Comparison reports from results stores: a one-screen summary, headline, training, corruption, perturbation and
ablation sections with intervals and paired tests, figures (heatmaps, curves), report.html (jinja2), report.md,
CSV and LaTeX tables. Importing it changes no global matplotlib state.

Public API: `reports.build(stores, out, baseline=None) -> {relative path: Path}`; CLI: `nst-report`;
`scripts/check_report.py` checks a report.html in headless Chromium.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build"]


def __getattr__(name: str) -> Any:  # lazy: `nst-report --help` must not pull in pandas and matplotlib
    if name == "build":
        from reports.assemble import build

        return build
    raise AttributeError(f"module 'reports' has no attribute {name!r}")
