"""Seeds as an axis (issue 14): `nst-train --seeds` trains one resumable run per seed into <out>/seed<k>/gen<g>/,
`nst-eval --run <out>` finds them all, each seed's gen0 is its own baseline; bad seed lists are refused early."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.cli import build_parser as eval_parser, model_sources
from nst_core.cli import main as nst_train
from nst_core.config import ConfigError, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "generations=1", "--set", "train.epochs=1", "--set", "data.unlabeled_limit=100",
        "--set", "data.labeled_per_class=5", "--set", "data.input_size=[3,16,16]", "--quiet"]


def test_two_seeds_train_into_their_folders_resume_and_are_all_evaluated(tmp_path, capsys):
    out = tmp_path / "run"
    assert nst_train(["--config", str(ROOT / "configs" / "quick.yaml"), "--out", str(out), "--seeds", "3,5",
                      *TINY]) == 0
    metas = {s: json.loads((out / f"seed{s}" / "gen0" / "meta.json").read_text()) for s in (3, 5)}
    assert {s: (m["name"], m["run"], m["config"]["seed"], m["config"]["seeds"]) for s, m in metas.items()} == {
        3: ("quick-seed3/gen0", "quick-seed3", 3, [3, 5]), 5: ("quick-seed5/gen0", "quick-seed5", 5, [3, 5])}
    assert metas[3]["sha256"] != metas[5]["sha256"]  # other seeds, other weights
    capsys.readouterr()
    assert nst_train(["--config", str(ROOT / "configs" / "quick.yaml"), "--out", str(out), "--seeds", "3,5",
                      *TINY]) == 0  # resumes: both finished, kept
    assert json.loads((out / "seed3" / "gen0" / "meta.json").read_text())["sha256"] == metas[3]["sha256"]
    sources = model_sources(eval_parser().parse_args(["--run", str(out)]))
    assert sources == [str(out / "seed3" / "gen0"), str(out / "seed5" / "gen0")]


def test_bad_seed_lists_are_refused_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit):
        nst_train(["--config", str(ROOT / "configs" / "quick.yaml"), "--out", str(tmp_path / "x"), "--seeds", "1,1"])
    assert "distinct" in capsys.readouterr().err and not (tmp_path / "x").exists()
    raw = load_config(ROOT / "configs" / "quick.yaml").to_dict()
    with pytest.raises(ConfigError, match="seeds"):
        config_from_dict({**raw, "seeds": []})
    assert config_from_dict({**raw, "seeds": [0, 2]}).seeds == [0, 2]
