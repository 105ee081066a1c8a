"""One error hierarchy for training, evaluation and reports: catch `NSTError` for any input the project refuses.

Every class keeps the built-in base it had before this hierarchy (ValueError, or RuntimeError for
`EvaluationError`), so code that catches `ValueError` catches what it caught before. Each message names the file, key
or value and says what to do. The classes are importable where they were defined before (`nst_core.config.ConfigError`,
`nst_core.data.DataError`, `eval.datasets.DataError`, `eval.store.StoreError` ...); this module imports nothing
heavy.

    NSTError
    |-- ConfigError        a run config, key or flag that cannot be used          (nst_core.config)
    |-- DataError          data (training or evaluation) missing or unreadable     (nst_core.data, eval.datasets)
    |-- ImageError         an image file that cannot become 8-bit RGB             (nst_core.images)
    |-- CheckpointError    a checkpoint that is missing, incomplete or corrupt    (nst_core.checkpoint)
    |-- DivergedError      training produced a non-finite loss or weights         (nst_core.training)
    |-- EvaluationError    an evaluation that cannot go on (a RuntimeError)       (eval.context)
    |-- StoreError         a results store or summary.json that cannot be read    (eval.store)
    `-- ReportError        results stores a report cannot be built from           (reports.load)
"""
from __future__ import annotations

__all__ = ["describe_os_error", "NSTError", "ConfigError", "DataError", "ImageError", "CheckpointError", "DivergedError",
           "EvaluationError", "StoreError", "ReportError"]


class NSTError(Exception):
    """Base of every error this project raises for input it cannot use; the message says what to do."""


class ConfigError(NSTError, ValueError):
    """A configuration that cannot be used; the message names the file, the key and what to do."""


class DataError(NSTError, ValueError):
    """Data that cannot be found or read; the message names the path and says how to get it."""


class ImageError(NSTError, ValueError):
    """An image file that cannot become 8-bit RGB; the message names the file and says what to do."""


class CheckpointError(NSTError, ValueError):
    """A checkpoint that is missing, incomplete or corrupt; the message names the file."""


class DivergedError(NSTError, ValueError):
    """Training produced a non-finite loss or non-finite weights; no finished checkpoint is written."""


class EvaluationError(NSTError, RuntimeError):
    """An evaluation that cannot go on (NaN logits, class-count mismatch...); stored cells stay stored."""


class StoreError(NSTError, ValueError):
    """A results store or summary.json that cannot be read (not a database, truncated, corrupt); names the file."""


class ReportError(NSTError, ValueError):
    """Results stores a report cannot be built from (no models, an unknown baseline, not a results store)."""


def describe_os_error(error: OSError, after_space: str = "") -> str:
    """A one-line message for a refused read or write (the commands' exit-1 errors): the path, the reason and what
    to do. `after_space` ends the full-disk advice (e.g. that a rerun keeps finished work)."""
    import errno
    from pathlib import Path

    name = error.filename if error.filename is not None else "a file"
    where = Path(name).parent if isinstance(name, str) and Path(name).name.startswith(".") else name
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"cannot write {where}: {error.strerror}; free space or choose another --out{after_space}"
    if error.errno == errno.EROFS:
        return f"cannot write {where}: {error.strerror}; choose another --out"
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"{where}: {error.strerror}; make it writable (readable, for an input file) or choose another --out"
    if error.errno in (errno.EEXIST, errno.ENOTDIR):
        return f"{name}: {error.strerror}; --out and its parents must be folders"
    return f"{name}: {error.strerror or error}"
