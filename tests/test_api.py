"""The Python API: `nst_core.train(...)` is a function however often it is called and whatever was imported before
(the training module is `nst_core.training`, so importing it cannot replace the package's `train`)."""
from __future__ import annotations

import json
from pathlib import Path

import nst_core
from nst_core import load_config

QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"
TINY = {"generations": 1, "train.epochs": 1, "data.labeled_per_class": 4, "data.unlabeled_limit": 32}


def test_train_twice_in_one_process(tmp_path: Path, one_torch_thread) -> None:
    import nst_core.engine  # noqa: F401  (imports the training module: `nst_core.train` must stay the function)

    cfg = load_config(QUICK, TINY)
    first = nst_core.train(cfg, str(tmp_path / "a"), device="cpu", progress=False)
    assert callable(nst_core.train)
    second = nst_core.train(cfg, str(tmp_path / "b"), device="cpu", progress=False)
    assert [m["generation"] for m in first] == [m["generation"] for m in second] == [0]
    assert first[0]["metrics"]["test_top1"] == second[0]["metrics"]["test_top1"]  # same seed, same run
    meta = json.loads((tmp_path / "b" / "gen0" / "meta.json").read_text())
    assert meta["metrics"]["test_top1"] == second[0]["metrics"]["test_top1"]
