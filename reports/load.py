"""Read results stores (SQLite, see docs/contracts.md) into tidy pandas frames; several stores are merged."""

from __future__ import annotations

import json
import math
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eval.store import CELL_COLUMNS, MODEL_COLUMNS, PER_IMAGE_COLUMNS, RESULT_COLUMNS, SCHEMA_VERSION
from nst_common.errors import ReportError

CELL = CELL_COLUMNS
"""Columns that name one evaluated set of images (a cell); with `model` and `metric` they identify a result.
The store's schema (these and the table columns) is `eval.store`'s; a store's extra columns are not read."""


@dataclass
class Store:
    """Merged contents of one or more results stores."""

    results: pd.DataFrame
    models: pd.DataFrame
    per_image: pd.DataFrame | None
    order: list[str]
    sources: list[Path]
    notes: list[str] = field(default_factory=list)
    bits_index: dict[tuple, int] = field(default_factory=dict)


def load_stores(paths: list[str | Path]) -> Store:
    """Read every store, merge them and order models by run and generation.

    A measurement stored more than once (in several stores, or on several subset sizes n) is read from the row on
    the most images, then the latest `created`.
    """
    notes: list[str] = []
    frames = [_read_store(Path(p), notes) for p in paths]
    results = _merge([f[0] for f in frames], ["model", "metric", *CELL], ["n", "created"], "results", notes)
    models = _merge([f[1] for f in frames], ["model"], [], "models", notes)
    per_image_frames = [f[2] for f in frames if f[2] is not None]
    per_image = (_merge(per_image_frames, ["model", *CELL, "n"], [], "per_image", notes)
                 if per_image_frames else None)
    results = with_difficulty(results)
    results["settings"] = results["settings"].map(_parse_json)
    models["meta"] = models["meta"].map(_parse_json)
    bits_index = ({} if per_image is None else
                  {(row["model"], cell_key(row), int(row["n"])): i for i, row in per_image.iterrows()})
    return Store(results, models, per_image, model_order(results, models), [Path(p) for p in paths], notes,
                 bits_index)


def with_difficulty(frame: pd.DataFrame) -> pd.DataFrame:
    """Perturbation rows get their ImageNet-P difficulty in `severity` (the report's difficulty column).

    nst-eval leaves `severity` NULL there and names difficulty d > 1 in the dataset (`<dataset>-p-d2`).
    """
    rows = (frame["suite"] == "perturbation") & frame["severity"].isna()
    difficulty = frame["dataset"].str.extract(r"-d(\d+)$", expand=False).fillna("1").astype(int)
    return frame.assign(severity=frame["severity"].mask(rows, difficulty))


def model_order(results: pd.DataFrame, models: pd.DataFrame) -> list[str]:
    """Model names grouped by run (alphabetically, models without a run last) and ordered by generation."""
    known = pd.concat([results[["model", "run", "generation"]], models[["model", "run", "generation"]]])
    known = known.drop_duplicates("model")
    keys = known.apply(lambda r: (_missing(r["run"]), str(r["run"]), _as_float(r["generation"]), r["model"]),
                       axis=1)
    return [m for _, m in sorted(zip(keys, known["model"]))]


def cell_key(row: pd.Series | dict) -> tuple:
    """A hashable, NaN-free key for the cell (suite, dataset, corruption, severity, attack, eps) of a row."""
    severity, eps = row["severity"], row["eps"]
    return (
        row["suite"], _none(row["dataset"]), _none(row["corruption"]),
        None if _missing(severity) else int(severity), _none(row["attack"]),
        None if _missing(eps) else round(float(eps), 6),
    )


def correctness(store: Store, model: str, cell: tuple, n: Any) -> np.ndarray | None:
    """Per-image top-1 correctness (bool [n]) of `model` on `cell` with n images, or None when not stored."""
    if _missing(n):
        return None
    index = store.bits_index.get((model, cell, int(n)))
    if index is None or store.per_image is None:
        return None
    bits = np.unpackbits(np.frombuffer(store.per_image.at[index, "correct"], dtype=np.uint8))
    return bits[: int(n)].astype(bool)


def run_configs(store: Store) -> dict[str, dict]:
    """The stored config of each run (from its lowest generation's meta), keyed by run name."""
    configs: dict[str, dict] = {}
    rows = store.models.dropna(subset=["run"]).sort_values("generation")
    for _, row in rows.iterrows():
        config = row["meta"].get("config") if isinstance(row["meta"], dict) else None
        if isinstance(config, dict) and row["run"] not in configs:
            configs[row["run"]] = config
    return configs


def connect_read_only(path: Path) -> sqlite3.Connection:
    """Open a SQLite file read-only, whatever characters its path holds ('#', '?', '%', spaces...).

    The path becomes a percent-encoded `file:` URI (pathlib's `as_uri`), so SQLite never cuts it at a '#' or '?'
    or decodes a '%41'; `mode=ro` never creates a file. Raises FileNotFoundError when there is no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results store not found: {path} (give the results.sqlite that nst-eval wrote)")
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def _read_store(path: Path, notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    try:
        return _read_tables(path, notes)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
        raise ReportError(f"{path} is not a readable results store ({exc}): it is another kind of file, truncated "
                          "or corrupt; give the results.sqlite that nst-eval wrote") from exc


def _read_tables(path: Path, notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    with closing(connect_read_only(path)) as con:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ReportError(f"{path} is a results store of schema version {version}, newer than this nst-report "
                              f"reads ({SCHEMA_VERSION}): upgrade nst-robustness to report on it")
        tables = set(pd.read_sql("SELECT name FROM sqlite_master WHERE type='table'", con)["name"])
        if "results" not in tables:
            raise ReportError(f"{path} has no `results` table: is it a results store?")
        results = _read_table(con, "results", RESULT_COLUMNS, path, notes)
        if "models" in tables:
            models = _read_table(con, "models", MODEL_COLUMNS, path, notes)
        else:
            notes.append(f"{path}: no `models` table, so no stored configs (no ablation table) and no model meta.")
            models = pd.DataFrame(columns=list(MODEL_COLUMNS))
        if "per_image" in tables:
            per_image = _read_table(con, "per_image", PER_IMAGE_COLUMNS, path, notes)
        else:
            notes.append(f"{path}: no `per_image` table, so no paired tests and no bootstrap CIs for its models.")
            per_image = None
    return results, models, per_image


def _read_table(con: sqlite3.Connection, table: str, columns: tuple[str, ...], path: Path,
                notes: list[str]) -> pd.DataFrame:
    frame = pd.read_sql(f"SELECT * FROM {table}", con)
    for column in columns:
        if column not in frame:
            notes.append(f"{path}: table `{table}` lacks column `{column}` (treated as not recorded).")
            frame[column] = None
    return frame[list(columns)]


def _merge(frames: list[pd.DataFrame], keys: list[str], prefer: list[str], table: str,
           notes: list[str]) -> pd.DataFrame:
    """Concatenate and keep one row per key: the last after sorting by `prefer` (else the last store given)."""
    merged = pd.concat(frames, ignore_index=True)
    if prefer:
        merged = merged.sort_values(prefer, kind="stable", na_position="first")
    key_frame = merged[keys].astype(object).where(merged[keys].notna(), None).astype(str)
    duplicated = key_frame.duplicated(keep="last")
    if duplicated.any():
        rule = f"the one with the largest {' then latest '.join(prefer)}" if prefer else "the last store's"
        notes.append(f"`{table}`: {int(duplicated.sum())} rows measure something stored again; {rule} is used.")
    return merged[~duplicated].reset_index(drop=True)


def _parse_json(text: object) -> dict:
    if isinstance(text, dict):
        return text
    if not isinstance(text, str) or not text:
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _none(value: object) -> object:
    return None if _missing(value) else value


def _as_float(value: Any) -> float:
    return math.inf if _missing(value) else float(value)
