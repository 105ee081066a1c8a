"""report.html in a real browser (headless Chromium via scripts/check_report.py): images load, anchors resolve,
the page fits 900 px, a screenshot is written; and the check catches a broken image and a broken anchor."""

from __future__ import annotations

import importlib.util
import shutil
import struct
import sys
from pathlib import Path

import pytest

import reports
from test_reports import BASELINE, write_store

SCRIPT = Path(__file__).parents[1] / "scripts" / "check_report.py"
spec = importlib.util.spec_from_file_location("check_report", SCRIPT)
check_report = importlib.util.module_from_spec(spec)
sys.modules.setdefault("check_report", check_report)  # dataclasses look their module up while being defined
spec.loader.exec_module(check_report)

pytestmark = pytest.mark.skipif(
    check_report.find_browser() is None,
    reason="Chromium is not installed (Debian package `chromium`: apt-get install chromium); the browser check "
           "renders report.html headless and cannot run without it")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of run fmnist gen0..gen2 (every section but the examples)."""
    folder = tmp_path_factory.mktemp("browser")
    store = write_store(folder / "main.sqlite", ["fmnist/gen0", "fmnist/gen1", "fmnist/gen2"])
    return reports.build([store], folder / "report", baseline=BASELINE)["report.html"]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG from its IHDR chunk."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_report_passes_in_chromium_at_900_px(report: Path, tmp_path: Path) -> None:
    result = check_report.check_report(report, tmp_path / "shot.png", width=900, height=1200)
    assert result.problems == []
    assert result.images == 8 and result.width <= 900 and result.height > 3000
    assert png_size(tmp_path / "shot.png") == (900, 1200)


def test_check_fails_on_a_missing_image_and_a_broken_anchor(report: Path, tmp_path: Path) -> None:
    broken = tmp_path / "report.html"
    shutil.copytree(report.parent / "tables", tmp_path / "tables")
    shutil.copytree(report.parent / "figures", tmp_path / "figures")
    text = report.read_text()
    text = text.replace('<section id="summary">', "<section>", 1)
    text = text.replace("data:image/svg+xml;base64,", "data:image/svg+xml;base64,AAAA", 1)
    broken.write_text(text.replace("figures/ce_heatmap.png", "figures/gone.png", 1))
    problems = check_report.check_report(broken).problems
    assert "broken anchor: #summary has no element with that id" in problems
    assert "missing file: figures/gone.png (linked from report.html)" in problems
    assert sum(p.startswith("image did not load:") for p in problems) == 1
    assert check_report.main([str(broken)]) == 1
    assert not list(tmp_path.glob(".check-*"))  # the probe copy is removed
