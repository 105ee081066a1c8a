"""Shared fixtures: a quick trained run (trained once per test session) and small helpers."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quick.yaml"


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> Path:
    """configs/quick.yaml trained once (gen0, gen1) for tests that need real checkpoints."""
    from nst_core import load_config
    from nst_core.engine import run

    out = tmp_path_factory.mktemp("quick") / "run"
    run(load_config(QUICK), out, device="cpu", progress=False)
    return out
