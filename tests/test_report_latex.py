"""The report's LaTeX tables compile with pdflatex on an A4 page and none is wider than the text (no overfull
hbox); skipped where pdflatex is not installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import reports
from test_reports import BASELINE, write_store

pytestmark = pytest.mark.skipif(
    shutil.which("pdflatex") is None,
    reason="pdflatex is not installed (Debian: texlive-latex-base texlive-latex-recommended); the check compiles "
           "every tables/*.tex")


def test_every_latex_table_fits_the_page(tmp_path: Path) -> None:
    store = write_store(tmp_path / "store.sqlite", ["fmnist/gen0", "fmnist/gen1", "fmnist/gen2", "fmnist_nodrop/gen0",
                                                    "fmnist_nodrop/gen1", "timm:resnet18"])
    paths = reports.build([store], tmp_path / "report", baseline=BASELINE)
    names = sorted(p for p in paths if p.endswith(".tex"))
    assert "tables/headline.tex" in names and "tables/corruption_errors.tex" in names
    body = "\n\\clearpage\n".join(f"\\input{{{paths[n].as_posix()}}}" for n in names)
    document = tmp_path / "tables.tex"
    document.write_text("\\documentclass[a4paper]{article}\n\\usepackage{booktabs}\n\\usepackage{longtable}\n"
                        f"\\begin{{document}}\n{body}\n\\end{{document}}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    log = (tmp_path / "tables.log").read_text(errors="replace")
    assert done.returncode == 0, log[-2000:]
    assert re.findall(r"Overfull \\hbox.*", log) == []
