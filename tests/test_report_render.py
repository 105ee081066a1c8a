"""Report rendering: formula-safe CSV, escaped names, LaTeX that fits a page, numbers to their precision, the
summary's directions and verdicts, and no global matplotlib state from `import reports`."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reports
from reports import render, tables
from reports.load import load_stores
from reports.stats import decimals
from reports.summary import build_summary, lower_is_better
from test_reports import BASELINE, CLEAN, write_store

HOSTILE_RUN = "<b>bold</b>*x*"
FORMULA_RUN = '=HYPERLINK("http://x")'


@pytest.fixture(scope="module")
def long(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Headline of run fmnist gen0..gen2 against gen0."""
    store = write_store(tmp_path_factory.mktemp("render") / "main.sqlite", ["fmnist/gen0", "fmnist/gen1",
                                                                            "fmnist/gen2"])
    return tables.headline_long(load_stores([store]), BASELINE)


def test_import_changes_no_matplotlib_state(tmp_path: Path) -> None:
    code = f"""
import matplotlib
matplotlib.use("svg")
before = dict(matplotlib.rcParams)
import pathlib
import reports
from reports import figures
history = {{"a/gen0": [{{"epoch": 1, "loss": 1.0, "lr": 0.1}}]}}
figures.training_curves(history, {{}}, pathlib.Path({str(tmp_path)!r}))
after = dict(matplotlib.rcParams)
changed = sorted(k for k in before if before[k] != after[k])
print(matplotlib.get_backend(), changed)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "svg []"
    assert (tmp_path / "training_curves.png").stat().st_size > 1000


def test_csv_cells_a_spreadsheet_would_run_are_neutralised(tmp_path: Path) -> None:
    assert render.neutralise("=1+1") == "'=1+1"
    assert render.neutralise("@SUM(A1)") == "'@SUM(A1)"
    assert render.neutralise("+cmd") == "'+cmd" and render.neutralise("-2+3") == "'-2+3"
    assert render.neutralise("\tx") == "'\tx" and render.neutralise("\rx") == "'\rx"
    assert render.neutralise("-1.5") == "-1.5" and render.neutralise("gen0") == "gen0" and render.neutralise(3) == 3
    frame = pd.DataFrame({"model": [FORMULA_RUN, "a/gen1"], "value": [-1.5, 2.0]}).set_index("model")
    render.write_tables([render.Table("t", frame.rename(columns={"value": "=cmd"}), "c")], tmp_path)
    text = (tmp_path / "tables" / "t.csv").read_text()
    assert text.splitlines() == ["model,'=cmd", "\"'=HYPERLINK(\"\"http://x\"\")\",-1.5", "a/gen1,2.0"]


def test_names_with_html_and_markdown_are_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(CLEAN, f"{HOSTILE_RUN}/gen0", 80)
    monkeypatch.setitem(CLEAN, f"{FORMULA_RUN}/gen1", 85)
    store = write_store(tmp_path / "hostile.sqlite", [f"{HOSTILE_RUN}/gen0", f"{FORMULA_RUN}/gen1"])
    paths = reports.build([store], tmp_path / "out")
    markdown = paths["report.md"].read_text()
    page = paths["report.html"].read_text()
    assert "<b>" not in markdown and "&lt;b&gt;bold&lt;/b&gt;\\*x\\*/gen0" in markdown
    assert "<b>bold" not in page and "&lt;b&gt;bold&lt;/b&gt;*x*/gen0" in page
    headline = paths["tables/headline.csv"].read_text()
    assert "'=HYPERLINK" in headline and "\n=HYPERLINK" not in headline
    assert "\\textless{}b\\textgreater{}" in paths["tables/headline.tex"].read_text()


def test_markdown_escape_leaves_the_report_words_alone() -> None:
    text = "Models: " + render.name("a_b|c") + ", see `code`."
    assert render.md_text(text) == "Models: a\\_b\\|c, see `code`."
    assert str(render.html_text(text)) == "Models: a_b|c, see <code>code</code>."
    assert render.plain(text) == "Models: a_b|c, see `code`."


def test_latex_tables_are_split_to_fit_a_page() -> None:
    frame = pd.DataFrame({"model": ["a", "b"], **{f"metric {i} (%)": [1.0 * i, 2.5] for i in range(17)}})
    latex = render.latex_table(frame, "Wide", "tab:wide")
    # value columns of about 55 pt ("metric 10" over "(%)") fit 5 at a time beside the key column in 345 pt
    assert latex.count("\\toprule") == 4 and latex.count("\\begin{table}") == 4
    assert "(part 1 of 4)" in latex and "(part 4 of 4)" in latex
    assert latex.count("model &") == 4  # the key column repeated in every part
    long_frame = pd.DataFrame({"model": [f"m{i}" for i in range(50)], "x": np.arange(50, dtype=float)})
    assert "\\begin{longtable}" in render.latex_table(long_frame, "Long", "tab:long")


def test_numbers_are_printed_to_their_precision(long: pd.DataFrame) -> None:
    assert render.format_column(pd.Series([0.19900000000000007, 12.3456])) == ["0.199", "12.35"]
    assert render.format_column(pd.Series([0.0, 2.0, np.nan])) == ["0", "2", ""]
    assert tables.rounded({"eps": [0.19900000000000007], "lr": 0.1 + 0.2}) == {"eps": [0.199], "lr": 0.3}
    assert [decimals(n) for n in (100, 200, 1000, 10000, None)] == [0, 1, 1, 2, 1]
    display = tables.headline_display(long)
    assert display.loc["fmnist/gen2", "clean top-1 (%)"] == "90 [82, 95]"  # n = 100: whole percent
    columns, rows = render.display_rows(display)
    assert columns[0] == "model" and "label" not in columns  # no pandas axis-name artefact
    assert tables.delta_display(long).loc["fmnist/gen2", "clean top-1 (%)"] == "+10 (p = 0.002)"


def test_summary_says_which_way_is_better_and_what_is_resolved(long: pd.DataFrame) -> None:
    assert lower_is_better("mce") and lower_is_better("mfr_d2") and not lower_is_better("clean_top1")
    assert not lower_is_better("mean_corruption_top1") and not lower_is_better("PGD_eps8")
    assert lower_is_better("clean_ece") and lower_is_better("mean_corruption_ece") and lower_is_better("imagenet_r_ece")
    summary = build_summary(long, BASELINE)
    labels = [c["label"] for c in summary.columns]
    assert labels == ["clean top-1", "mCE", "relative mCE", "mFR", "FGSM eps=8/255 acc.", "PGD eps=8/255 acc."]
    assert [c["direction"] for c in summary.columns][:2] == ["higher is better", "lower is better"]
    cells = {row["model"]: dict(zip(labels, row["cells"])) for row in summary.rows}
    assert cells[BASELINE]["clean top-1"]["verdict"] == "baseline"
    gen1, gen2 = cells["fmnist/gen1"], cells["fmnist/gen2"]
    assert gen2["clean top-1"]["verdict"] == "better" and gen2["clean top-1"]["change"] == "+10 pp, p = 0.002 ✓"
    assert gen1["clean top-1"]["verdict"] == "unresolved"  # 5 discordant images: p = 0.0625
    assert gen2["mCE"]["verdict"] == "better" and "[" in gen2["mCE"]["change"]
    assert gen2["mFR"]["verdict"] == "better" and gen2["mFR"]["change"] == "-20.0 pp [-30.0, -5.0] ✓"  # stored CI
    assert gen1["mFR"]["verdict"] == "untested"  # no interval stored for gen1
    assert "? no paired test possible (mFR and mT5D of stores written without per-sequence values)." in summary.legend


def test_runs_that_differ_only_in_seed_get_across_seed_intervals(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for model, clean in (("fmnist/gen0", 80), ("fmnist/gen1", 85), ("fmnist_s1/gen0", 82), ("fmnist_s1/gen1", 89)):
        monkeypatch.setitem(CLEAN, model, clean)
    path = write_store(tmp_path / "seeds.sqlite", ["fmnist/gen0", "fmnist/gen1", "fmnist_s1/gen0", "fmnist_s1/gen1"])
    with sqlite3.connect(path) as con:
        for model, meta in con.execute("SELECT model, meta FROM models WHERE run = 'fmnist_s1'").fetchall():
            meta = json.loads(meta)
            meta["config"]["seed"] = 1
            con.execute("UPDATE models SET meta = ? WHERE model = ?", (json.dumps(meta), model))
    store = load_stores([path])
    assert tables.seed_groups(store) == {"fmnist": ["fmnist", "fmnist_s1"]}
    with sqlite3.connect(path) as con:  # a dataset named like the first run (the demo: run and dataset fashion_mnist)
        for model, meta in con.execute("SELECT model, meta FROM models").fetchall():
            meta = json.loads(meta)
            meta["config"].setdefault("data", {})["dataset"] = "fmnist"
            con.execute("UPDATE models SET meta = ? WHERE model = ?", (json.dumps(meta), model))
    store = load_stores([path])
    assert tables.seed_groups(store) == {"fmnist": ["fmnist", "fmnist_s1"]}  # still one group: only name/seed differ
    seeds = tables.across_seeds(tables.headline_long(store, BASELINE), tables.seed_groups(store))
    row = seeds.set_index(["generation", "quantity"]).loc[(0, "clean_top1")]
    assert (row["seeds"], row["mean"], row["values"]) == (2, 81.0, "80.00, 82.00")
    # k = 2: t(0.975, 1) = 12.7062, sd = sqrt(2), so the half-width is 12.7062
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((81 - 12.706205, 81 + 12.706205), abs=1e-5)
    paths = reports.build([path], tmp_path / "out", baseline=BASELINE)
    assert paths["figures/seeds_vs_generation.png"].stat().st_size > 1000
    assert "Runs that differ only in their seed: fmnist: fmnist, fmnist\\_s1." in paths["report.md"].read_text()


def test_seed_figures_prints_the_multiseed_tables_from_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/seed_figures.py (the docs' multi-seed figures) prints the report's across-seed means and paired
    changes, with a verdict only where the interval excludes 0."""
    import runpy
    import sys

    for model, clean in (("fmnist/gen0", 80), ("fmnist/gen1", 85), ("fmnist_s1/gen0", 82), ("fmnist_s1/gen1", 89)):
        monkeypatch.setitem(CLEAN, model, clean)
    (tmp_path / "run" / "eval").mkdir(parents=True)
    path = write_store(tmp_path / "run" / "eval" / "results.sqlite",
                       ["fmnist/gen0", "fmnist/gen1", "fmnist_s1/gen0", "fmnist_s1/gen1"])
    with sqlite3.connect(path) as con:
        for model, meta in con.execute("SELECT model, meta FROM models WHERE run = 'fmnist_s1'").fetchall():
            meta = json.loads(meta)
            meta["config"]["seed"] = 1
            con.execute("UPDATE models SET meta = ? WHERE model = ?", (json.dumps(meta), model))
    monkeypatch.setattr(sys, "argv", ["seed_figures.py", str(tmp_path / "run")])
    runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "seed_figures.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "Mean over 2 seeds" in out
    assert "| gen0 | 81.00 | [68.29, 93.71] | 80.00 / 82.00 |" in out  # t(0.975, 1) * sqrt(2) / sqrt(2) = 12.71
    # gen1 - gen0 per seed: +5 and +7; mean +6, sd sqrt(2): the same half-width 12.71, so not resolved
    assert "| gen1 | +6.00 | [-6.71, +18.71] | +5.00 / +7.00 | not resolved (the interval spans 0) |" in out
    # one run per seed, each with its own store (trained as separate runs): the same tables
    for run, models in (("a", ["fmnist/gen0", "fmnist/gen1"]), ("b", ["fmnist_s1/gen0", "fmnist_s1/gen1"])):
        (tmp_path / run / "eval").mkdir(parents=True)
        with sqlite3.connect(path) as con:
            con.execute(f"ATTACH DATABASE '{tmp_path / run / 'eval' / 'results.sqlite'}' AS part")
            for table in ("models", "results", "per_image"):
                con.execute(f"CREATE TABLE part.{table} AS SELECT * FROM main.{table} WHERE model IN (?, ?)", models)
            con.execute("PRAGMA part.user_version = " + str(con.execute("PRAGMA main.user_version").fetchone()[0]))
            con.commit()
            con.execute("DETACH DATABASE part")
    monkeypatch.setattr(sys, "argv", ["seed_figures.py", str(tmp_path / "a"), str(tmp_path / "b")])
    runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "seed_figures.py"), run_name="__main__")
    assert capsys.readouterr().out == out
