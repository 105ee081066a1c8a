"""eval.store: NULL-safe unique keys, replace on re-write, one transaction per cell, per-image bits, summary.json."""
from __future__ import annotations

import json
import math
import sqlite3

import pytest
import torch

from eval.store import Cell, ResultStore, write_summary


def _cell(**kw) -> Cell:
    base = dict(model="m/gen0", checkpoint_sha256=None, run="m", generation=0, suite="clean", dataset="d")
    return Cell(**{**base, **kw})


def test_rewrite_replaces_and_n_is_part_of_the_key(tmp_path):
    store = ResultStore(tmp_path / "results.sqlite")
    cell = _cell()  # corruption, severity, attack, eps, sha all NULL: still one key
    store.write([cell.row("top1", 50.0, 100)])
    store.write([cell.row("top1", 60.0, 100)])
    assert [r["value"] for r in store.rows(model="m/gen0")] == [60.0]
    assert store.has_cell(cell, 100) and not store.has_cell(cell, 99)
    store.write([cell.row("top1", 70.0, 99)])  # another subset size is another measurement
    assert sorted(r["value"] for r in store.rows(model="m/gen0")) == [60.0, 70.0]
    noisy = _cell(suite="corruption", corruption="fog", severity=3)
    store.write([noisy.row("top1", float("nan"), 100)])
    assert store.cell_rows(noisy)[0]["value"] is None  # NaN is stored as NULL, never as a number
    store.close()
    con = sqlite3.connect(tmp_path / "results.sqlite")
    assert con.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 3


def test_a_failed_write_leaves_nothing(tmp_path):
    store = ResultStore(tmp_path / "results.sqlite")
    cell = _cell()
    good = cell.row("top1", 1.0, 10)
    bad = dict(good, metric=None)  # violates NOT NULL inside the same transaction
    with pytest.raises(sqlite3.IntegrityError):
        store.write([good, bad], {cell: torch.ones(10, dtype=torch.bool)})
    assert store.rows() == []
    assert store.per_image(cell, 10) is None


def test_per_image_round_trip_and_models(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    cell = _cell(attack="pgd", eps=2.0)
    correct = torch.tensor([True, False, True, True, False, False, True, False, True, True, True])
    store.write([cell.row("top1", 63.6, 11)], {cell: correct})
    assert torch.equal(store.per_image(cell, 11), correct)
    store.add_model("m/gen0", None, "m", 0, "/x/gen0", {"name": "m/gen0", "config": {"seed": 1}})
    store.add_model("m/gen0", None, "m", 0, "/x/gen0", {"name": "m/gen0", "config": {"seed": 2}})
    metas = [json.loads(r[0]) for r in store.conn.execute("SELECT meta FROM models")]
    assert metas == [{"name": "m/gen0", "config": {"seed": 2}}]


def test_summary_merges_models_atomically(tmp_path):
    write_summary(tmp_path, "a", {"clean_top1": 90.0, "mce": float("nan")})
    write_summary(tmp_path, "b", {"clean_top1": 80.0})
    write_summary(tmp_path, "a", {"imagenet_a_top1": 5.0})
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["models"]["a"]["clean_top1"] == 90.0 and data["models"]["a"]["imagenet_a_top1"] == 5.0
    assert data["models"]["a"]["mce"] is None and data["models"]["b"]["clean_top1"] == 80.0
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left behind
    assert not math.isnan(data["models"]["b"]["clean_top1"])


def test_column_constants_are_the_tables_columns(tmp_path):
    """RESULT_COLUMNS, MODEL_COLUMNS and PER_IMAGE_COLUMNS (which reports.load reads by) name exactly the columns the
    schema creates, in order; CELL_COLUMNS are results columns."""
    from eval.store import CELL_COLUMNS, MODEL_COLUMNS, PER_IMAGE_COLUMNS, RESULT_COLUMNS

    store = ResultStore(tmp_path / "results.sqlite")
    columns = {t: tuple(r[1] for r in store.conn.execute(f"PRAGMA table_info({t})"))
               for t in ("results", "models", "per_image")}
    store.close()
    assert columns == {"results": RESULT_COLUMNS, "models": MODEL_COLUMNS, "per_image": PER_IMAGE_COLUMNS}
    assert set(CELL_COLUMNS) <= set(RESULT_COLUMNS) and set(CELL_COLUMNS) <= set(PER_IMAGE_COLUMNS)
