"""One error hierarchy: every error the project raises for unusable input is an `NSTError`, importable where it was
before, and keeps its old built-in base so existing `except ValueError` / `except RuntimeError` still catch it."""
from __future__ import annotations

import pytest

from nst_common import errors
from nst_common.errors import NSTError


def test_every_error_is_an_nst_error_and_keeps_its_old_base() -> None:
    from eval.context import EvaluationError
    from eval.datasets import DataError as EvalDataError
    from eval.store import StoreError
    from nst_common.errors import CheckpointError
    from nst_core.checkpoint import StateMismatch
    from nst_core.config import ConfigError
    from nst_core.data import DataError
    from nst_core.images import ImageError
    from nst_core.training import DivergedError
    from reports.load import ReportError

    value_errors = [ConfigError, DataError, ImageError, CheckpointError, StateMismatch, DivergedError,
                    StoreError, ReportError]
    for cls in value_errors + [EvaluationError]:
        assert isinstance(cls("x"), NSTError), cls
    for cls in value_errors:
        assert isinstance(cls("x"), ValueError), cls
    assert isinstance(EvaluationError("x"), RuntimeError)
    assert not isinstance(EvaluationError("x"), ValueError)  # as before: `except ValueError` does not swallow it
    assert EvalDataError is DataError  # one data error for training and evaluation data
    assert {getattr(errors, name) for name in errors.__all__} >= set(value_errors) - {StateMismatch} | {EvaluationError}


def test_report_errors_are_nst_errors(tmp_path) -> None:
    import reports

    not_a_store = tmp_path / "notes.sqlite"
    not_a_store.write_text("not a database")
    with pytest.raises(NSTError, match="not a readable results store"):
        reports.build([not_a_store], tmp_path / "out")
