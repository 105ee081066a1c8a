"""Comparison reports from results stores: headline, corruption and ablation tables, figures, md/html/tex.

Public API: `reports.build(stores, out, baseline=None) -> {relative path: Path}`; CLI: `nst-report`.
"""

from reports.assemble import build

__all__ = ["build"]
