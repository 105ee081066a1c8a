"""The results store: SQLite at `<out>/results.sqlite`, one row per measurement (schema in docs/contracts.md).

Tables `results`, `models` and `per_image`. A measurement's identity is (model, checkpoint_sha256, suite, dataset,
corruption, severity, attack, eps, metric, n), enforced by a unique index that treats NULL as a value, so writing
it again replaces it and a re-run can ask `has_cell(...)` to skip what is stored. `n` belongs to the identity
(a `--limit` subset and the full set are different measurements). Each evaluated cell (its metric rows and its
per-image correctness) is written in one transaction, so an interrupted run leaves only whole cells behind.
`write_summary` keeps `<out>/summary.json` (headline figures per model), replaced atomically under an exclusive
lock on the `<out>` folder, so concurrent evaluations into one folder lose no model's entry.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import numpy as np

from nst_common.errors import StoreError
from nst_common.files import atomic_write, umask

if TYPE_CHECKING:  # torch only where per-image tensors are read back: `import eval.store` stays light (reports)
    import torch

SCHEMA_VERSION = 2  # 1: no data_id; 2: data_id (the exact images) is part of every measurement's identity
SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    model TEXT NOT NULL, checkpoint_sha256 TEXT, run TEXT, generation INTEGER, suite TEXT NOT NULL,
    dataset TEXT NOT NULL, corruption TEXT, severity INTEGER, attack TEXT, eps REAL, metric TEXT NOT NULL,
    value REAL, n INTEGER, settings TEXT, created TEXT NOT NULL, data_id TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS results_id ON results (
    model, IFNULL(checkpoint_sha256, ''), suite, dataset, IFNULL(data_id, ''), IFNULL(corruption, ''),
    IFNULL(severity, -1), IFNULL(attack, ''), IFNULL(eps, -1.0), metric, IFNULL(n, -1)
);
CREATE TABLE IF NOT EXISTS models (
    model TEXT NOT NULL, checkpoint_sha256 TEXT, run TEXT, generation INTEGER, source TEXT, meta TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS models_key ON models (model, IFNULL(checkpoint_sha256, ''));
CREATE TABLE IF NOT EXISTS per_image (
    model TEXT NOT NULL, checkpoint_sha256 TEXT, suite TEXT NOT NULL, dataset TEXT NOT NULL, corruption TEXT,
    severity INTEGER, attack TEXT, eps REAL, correct BLOB NOT NULL, n INTEGER NOT NULL, data_id TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS per_image_id ON per_image (
    model, IFNULL(checkpoint_sha256, ''), suite, dataset, IFNULL(data_id, ''), IFNULL(corruption, ''),
    IFNULL(severity, -1), IFNULL(attack, ''), IFNULL(eps, -1.0), n
);
"""
# Version 1 stores gain the data_id column (NULL: those rows never match a new measurement, so nothing measured on
# other images is read back); their old unique indexes are replaced by ones that include it.
MIGRATE_1_TO_2 = """
ALTER TABLE results ADD COLUMN data_id TEXT;
ALTER TABLE per_image ADD COLUMN data_id TEXT;
DROP INDEX IF EXISTS results_key;
DROP INDEX IF EXISTS per_image_key;
"""

RESULT_COLUMNS = ("model", "checkpoint_sha256", "run", "generation", "suite", "dataset", "corruption", "severity",
                  "attack", "eps", "metric", "value", "n", "settings", "created", "data_id")
"""Columns of the `results` table (`SCHEMA`); readers (reports.load) take them from here."""
MODEL_COLUMNS = ("model", "checkpoint_sha256", "run", "generation", "source", "meta")
"""Columns of the `models` table."""
PER_IMAGE_COLUMNS = ("model", "checkpoint_sha256", "suite", "dataset", "corruption", "severity", "attack", "eps",
                     "correct", "n", "data_id")
"""Columns of the `per_image` table (`correct`: packed bits, numpy.packbits order, n of them)."""
CELL_COLUMNS = ("suite", "dataset", "corruption", "severity", "attack", "eps")
"""Columns that name one evaluated set of images (a cell); with model, checkpoint, data_id, metric and n they
identify a measurement."""


@dataclass(frozen=True)
class Cell:
    """What one measurement was made on: a model and (suite, dataset, corruption, severity, attack, eps)."""

    model: str
    checkpoint_sha256: str | None
    run: str | None
    generation: int | None
    suite: str
    dataset: str
    corruption: str | None = None
    severity: int | None = None
    attack: str | None = None
    eps: float | None = None
    data_id: str | None = None  # the exact images (`nst_core.imagesets.ImageSet.identity`): source, transform, subset

    def row(self, metric: str, value: float | None, n: int | None, settings: Mapping[str, Any] | None = None,
            created: str | None = None) -> dict[str, Any]:
        """A `results` row (a plain dict with the contract's columns) for one metric of this cell."""
        value = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
        return {**asdict(self), "metric": metric, "value": value, "n": n,
                "settings": json.dumps(dict(settings or {}), sort_keys=True, default=str),
                "created": created or now()}

    def where(self) -> tuple[str, list[Any]]:
        """SQL condition (NULL-safe) and parameters selecting this cell's rows."""
        cols = ("model", "checkpoint_sha256", "suite", "dataset", "data_id", "corruption", "severity", "attack", "eps")
        return " AND ".join(f"{c} IS ?" for c in cols), [getattr(self, c) for c in cols]

    def describe(self) -> str:
        """A short human name for messages and progress bars."""
        parts = [self.model, self.suite, self.dataset]
        if self.corruption is not None:
            parts.append(self.corruption if self.severity is None else f"{self.corruption}/{self.severity}")
        if self.attack is not None:
            parts.append(f"{self.attack}@{self.eps:g}/255")
        return " ".join(parts)


def now() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ResultStore:
    """The SQLite results store; `path=None` keeps it in memory (API use without an output folder).

    Raises StoreError when `path` exists but is not a readable SQLite store (another file, truncated, corrupt).
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else Path(path)
        created = self.path is not None and not self.path.exists()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(":memory:" if self.path is None else str(self.path), timeout=60)
        self.conn.row_factory = sqlite3.Row
        try:
            self._create_or_migrate()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise StoreError(
                f"{self.path} is not a readable results store ({exc}): it is another kind of file, truncated or "
                "corrupt. Move it away (nst-eval then starts a new store there) or choose another --out"
            ) from exc
        if created and self.path is not None and self.path.exists():  # SQLite creates 0644 less the umask: never group-writable
            os.chmod(self.path, 0o666 & ~umask())

    def _create_or_migrate(self) -> None:
        """Create the tables, or bring a version-1 store to `SCHEMA_VERSION`; a newer store is an error."""
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        has_results = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'results'").fetchone() is not None
        if version > SCHEMA_VERSION:
            raise ValueError(f"{self.path} is a results store of schema version {version}, newer than this "
                             f"nst-eval understands ({SCHEMA_VERSION}): upgrade nst-robustness, or write to another "
                             "--out")
        with self.conn:
            if has_results and version < 2:
                columns = {r[1] for r in self.conn.execute("PRAGMA table_info(results)")}
                if "data_id" not in columns:
                    self.conn.executescript(MIGRATE_1_TO_2)
            self.conn.executescript(SCHEMA)
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def add_model(self, name: str, sha256: str | None, run: str | None, generation: int | None, source: str | None,
                  meta: Mapping[str, Any]) -> None:
        """Record (or refresh) a model and its meta.json."""
        with self.conn:
            self.conn.execute(
                f"INSERT OR REPLACE INTO models ({', '.join(MODEL_COLUMNS)}) VALUES ({', '.join('?' * 6)})",
                (name, sha256, run, generation, source, json.dumps(dict(meta), sort_keys=True, default=str)))

    def display_name(self, name: str, sha256: str | None) -> str:
        """`name`, or `name@<first 8 of sha256>` when the store already holds other weights under `name` (two
        weights of one architecture, two runs of one config): reports key models by name, so names stay unique."""
        if not sha256:
            return name
        others = {r[0] for r in self.conn.execute("SELECT checkpoint_sha256 FROM models WHERE model = ?", (name,))}
        return name if not others or sha256 in others else f"{name}@{sha256[:8]}"

    def has_cell(self, cell: Cell, n: int, metric: str = "top1") -> bool:
        """Whether `metric` of this cell on n images is stored."""
        where, params = cell.where()
        cur = self.conn.execute(f"SELECT 1 FROM results WHERE {where} AND metric = ? AND n IS ? LIMIT 1",
                                [*params, metric, n])
        return cur.fetchone() is not None

    def cell_rows(self, cell: Cell, n: int | None = None) -> list[dict[str, Any]]:
        """The stored rows of one cell (all n, or only those on n images)."""
        where, params = cell.where()
        sql = f"SELECT {', '.join(RESULT_COLUMNS)} FROM results WHERE {where}"
        if n is not None:
            sql += " AND n IS ?"
            params = [*params, n]
        return [dict(r) for r in self.conn.execute(sql + " ORDER BY metric", params)]

    def write(self, rows: Iterable[Mapping[str, Any]], per_image: Mapping[Cell, torch.Tensor] | None = None) -> None:
        """Write result rows and per-image correctness in one transaction (all or nothing)."""
        rows = list(rows)
        with self.conn:
            self.conn.executemany(
                f"INSERT OR REPLACE INTO results ({', '.join(RESULT_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(RESULT_COLUMNS))})",
                [tuple(r[c] for c in RESULT_COLUMNS) for r in rows])
            for cell, correct in (per_image or {}).items():
                bits = np.packbits(correct.detach().cpu().numpy().astype(bool)).tobytes()
                self.conn.execute(
                    f"INSERT OR REPLACE INTO per_image ({', '.join(PER_IMAGE_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(PER_IMAGE_COLUMNS))})",
                    (cell.model, cell.checkpoint_sha256, cell.suite, cell.dataset, cell.corruption, cell.severity,
                     cell.attack, cell.eps, bits, int(correct.numel()), cell.data_id))

    def rows(self, **where: Any) -> list[dict[str, Any]]:
        """Result rows matching column=value filters (None matches NULL)."""
        bad = set(where) - set(RESULT_COLUMNS)
        if bad:
            raise KeyError(f"unknown result columns {sorted(bad)}; valid: {RESULT_COLUMNS}")
        cond = " AND ".join(f"{k} IS ?" for k in where) or "1"
        return [dict(r) for r in self.conn.execute(
            f"SELECT {', '.join(RESULT_COLUMNS)} FROM results WHERE {cond}", list(where.values()))]

    def per_image(self, cell: Cell, n: int) -> torch.Tensor | None:
        """Stored per-image top-1 correctness (bool [n]) of a cell, or None."""
        where, params = cell.where()
        r = self.conn.execute(f"SELECT correct, n FROM per_image WHERE {where} AND n = ?", [*params, n]).fetchone()
        if r is None:
            return None
        bits = np.unpackbits(np.frombuffer(r["correct"], dtype=np.uint8), count=r["n"])
        import torch

        return torch.from_numpy(bits.astype(bool))


def write_summary(out_dir: str | os.PathLike, model: str, figures: Mapping[str, Any]) -> Path:
    """Merge one model's headline figures into `<out>/summary.json` ({"models": {name: figures}}), atomically.

    The read-merge-replace runs under an exclusive `fcntl.flock` on the `<out>` folder itself (no lock file; the
    lock goes when the process ends, even by a kill), so concurrent writers each see the others' entries. Raises
    StoreError when the existing summary.json is not a JSON object.
    """
    path = Path(out_dir) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent):
        data: dict[str, Any] = {"models": {}}
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise StoreError(f"{path} is not valid JSON ({exc}); delete it: nst-eval writes it again, one "
                                 "entry per model it evaluates (results.sqlite holds every figure)") from exc
            if not isinstance(data, dict) or not isinstance(data.setdefault("models", {}), dict):
                raise StoreError(f"{path} is not a summary ({{\"models\": {{...}}}}); delete it or choose another --out")
        data["models"][model] = {**data["models"].get(model, {}), **dict(figures), "updated": now()}
        text = json.dumps(_plain(data), indent=2, sort_keys=True, allow_nan=False)
        atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))
    return path


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock (flock) on a folder; a no-op where fcntl or folder handles are missing."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):  # not POSIX: no lock
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _plain(obj: Any) -> Any:
    """JSON-ready copy: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


__all__ = ["Cell", "ResultStore", "StoreError", "write_summary", "now", "RESULT_COLUMNS", "MODEL_COLUMNS",
           "PER_IMAGE_COLUMNS", "CELL_COLUMNS", "SCHEMA", "SCHEMA_VERSION"]
