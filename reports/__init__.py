"""Comparison reports from results stores: a one-screen summary, headline, training, corruption, perturbation and
ablation sections with intervals and paired tests, figures (heatmaps, curves), report.html (jinja2), report.md,
CSV and LaTeX tables. Importing it changes no global matplotlib state.

Public API: `reports.build(stores, out, baseline=None) -> {relative path: Path}`; CLI: `nst-report`;
`scripts/check_report.py` checks a report.html in headless Chromium.
"""

from reports.assemble import build

__all__ = ["build"]
