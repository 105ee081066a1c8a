"""Teacher-student variants end to end: ablation sweeps as sibling runs, KD and MPL generations, FixRes, transfer."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml

from nst_common.files import read_tensors
from nst_core import load_config
from nst_core.config import ConfigError
from nst_core.engine import _claim_run_dir, run
from nst_core.models import load_model
from nst_core.sweep import SWITCHES, plan_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quick.yaml"
TINY = {"data.labeled_per_class": 10, "data.unlabeled_limit": 300, "pseudo.min_threshold": 0.0, "train.epochs": 2,
        "train.student_epochs": 1, "mpl.epochs": 1, "mpl.finetune_epochs": 1}
CONTRACT_KEYS = {"name", "run", "generation", "teacher", "arch", "model_kwargs", "num_classes", "input_size", "mean",
                 "std", "config", "sha256", "metrics", "pseudo_labels", "versions"}
SWEEP_KEYS = {"name", "init.teacher", "init.source"}  # what every sibling sets besides its one setting


def flat(raw: dict, prefix: str = "") -> dict:
    """Nested config dict -> {dotted key: value} (lists are values)."""
    out = {}
    for key, value in raw.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed(a: dict, b: dict) -> set[str]:
    fa, fb = flat(a), flat(b)
    return {k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}


@pytest.fixture(scope="module", autouse=True)
def small_test_set():
    """Score checkpoints on 500 test images (the full 10,000 dominate these tests' time on a CPU)."""
    import nst_core.data

    def prepare(cfg, seed):
        data = nst_core.data.prepare_data(cfg, seed)
        return dataclasses.replace(data, test=data.test.subset(torch.arange(500)))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("nst_core.engine.prepare_data", prepare)
        patch.setattr("nst_core.fixres.prepare_data", prepare)
        yield


@pytest.fixture(scope="module")
def method_sweep(tmp_path_factory) -> Path:
    """`--ablate method` on a tiny quick config: quick (NST), quick-kd, quick-mpl, one shared gen0."""
    root = tmp_path_factory.mktemp("sweep")
    run_sweep(load_config(QUICK, TINY), ["method"], root, device="cpu", progress=False)
    return root


def test_every_switch_changes_one_setting_per_sibling(tmp_path):
    cfg = load_config(QUICK)
    runs = plan_sweep(cfg, list(SWITCHES), tmp_path)
    base = cfg.to_dict()
    assert list(runs)[0] == tmp_path / "quick"
    names = {path.name for path in list(runs)[1:]}
    assert {"quick-no_augment", "quick-no_model_noise", "quick-no_noise", "quick-hard_labels", "quick-unbalanced",
            "quick-noised_teacher", "quick-student_as_teacher", "quick-unlabeled_50pct", "quick-ratio1",
            "quick-kd", "quick-mpl"} <= names
    for path, sibling in list(runs.items())[1:]:
        diff = changed(base, sibling.to_dict()) - SWEEP_KEYS
        assert sibling.name == path.name and sibling.init.teacher == str(tmp_path / "quick" / "gen0")
        assert len(diff) == 1 or path.name in ("quick-no_model_noise", "quick-no_noise"), (path.name, diff)
    assert changed(base, runs[tmp_path / "quick-no_noise"].to_dict()) - SWEEP_KEYS == {
        "noise.randaugment", "noise.dropout", "noise.drop_path"}
    with pytest.raises(ConfigError, match="unknown ablation 'noize'"):
        plan_sweep(cfg, ["noize"], tmp_path)


def test_method_sweep_writes_sibling_runs_sharing_gen0(method_sweep):
    runs = {p.name: p for p in method_sweep.iterdir()}
    assert set(runs) == {"quick", "quick-kd", "quick-mpl"}
    base = yaml.safe_load((runs["quick"] / "config.yaml").read_text())
    gen0_sha = json.loads((runs["quick"] / "gen0" / "meta.json").read_text())["sha256"]
    gen1_keys = set(json.loads((runs["quick"] / "gen1" / "meta.json").read_text()))
    for method in ("kd", "mpl"):
        sibling = yaml.safe_load((runs[f"quick-{method}"] / "config.yaml").read_text())
        assert changed(base, sibling) - SWEEP_KEYS == {"method"} and sibling["method"] == method
        assert json.loads((runs[f"quick-{method}"] / "gen0" / "meta.json").read_text())["sha256"] == gen0_sha
        meta = json.loads((runs[f"quick-{method}"] / "gen1" / "meta.json").read_text())
        assert set(meta) == gen1_keys and CONTRACT_KEYS <= set(meta)
        assert meta["name"] == f"quick-{method}/gen1" and meta["method"] == method
        assert meta["pseudo_labels"]["mode"] == method
        assert not list((runs[f"quick-{method}"] / "gen1").glob("*_state.*"))
        load_model(runs[f"quick-{method}"] / "gen1")
    assert "kd_targets.safetensors" in {p.name for p in (runs["quick-kd"] / "gen1").iterdir()}


def test_fixres_writes_from_rank_0_only(method_sweep, tmp_path, monkeypatch):
    """Under torchrun only rank 0 writes the FixRes checkpoint; another rank reads rank 0's meta.json after the barrier."""
    from nst_common import distributed
    from nst_common.errors import CheckpointError
    from nst_core.fixres import run_fixres

    cfg = load_config(QUICK, {**TINY, "fixres": {"size": 40, "epochs": 1}})
    teacher, meta = load_model(method_sweep / "quick" / "gen0")
    monkeypatch.setattr(distributed, "is_main", lambda: False)  # rank 1 of a run whose rank 0 has not written yet
    with pytest.raises(CheckpointError, match="not a finished checkpoint"):
        run_fixres(cfg, teacher.train(), meta, tmp_path / "gen1", torch.device("cpu"), progress=False)
    assert not (tmp_path / "gen1" / "model.safetensors").exists() and not (tmp_path / "gen1" / "meta.json").exists()


def test_fixres_stage_changes_the_input_size(method_sweep, tmp_path):
    cfg = load_config(QUICK, {**TINY, "generations": 1, "init.teacher": str(method_sweep / "quick" / "gen0"),
                              "fixres": {"size": 40, "epochs": 1}})
    metas = run(cfg, tmp_path / "fx", device="cpu", progress=False)
    assert [m["generation"] for m in metas] == [0, 1]
    meta = json.loads((tmp_path / "fx" / "gen1" / "meta.json").read_text())
    assert meta["input_size"] == [3, 40, 40] and meta["stage"] == "fixres" and meta["teacher"] == 0
    assert CONTRACT_KEYS <= set(meta) and meta["name"] == "quick/gen1"
    model, loaded = load_model(tmp_path / "fx" / "gen1")
    assert model(torch.rand(2, 3, 40, 40)).shape == (2, 10)
    head = {k for k in read_tensors(tmp_path / "fx" / "gen1" / "model.safetensors") if k.startswith("classifier.")}
    before, after = read_tensors(tmp_path / "fx" / "gen0" / "model.safetensors"), read_tensors(
        tmp_path / "fx" / "gen1" / "model.safetensors")
    assert all(not torch.equal(before[k], after[k]) for k in head)  # head-only fine-tune: the classifier moved
    assert torch.equal(before["conv_stem.weight"], after["conv_stem.weight"])  # the backbone's weights did not


def test_transfer_from_a_checkpoint_with_a_frozen_backbone(method_sweep, tmp_path):
    source = method_sweep / "quick" / "gen0"
    cfg = load_config(QUICK, {**TINY, "generations": 1, "train.epochs": 1,
                              "init": {"source": str(source), "freeze_backbone": True}})
    (meta,) = run(cfg, tmp_path / "tl", device="cpu", progress=False)
    assert meta["init"]["reinitialised"] == ["classifier.bias", "classifier.weight"]
    model, _ = load_model(tmp_path / "tl" / "gen0")
    start = read_tensors(source / "model.safetensors")
    for name, param in model.model.named_parameters():
        assert torch.equal(param, start[name]) != name.startswith("classifier."), name


def test_variant_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="init.pretrained: true"):
        load_config(QUICK, {"init.source": "timm:resnet18"})
    with pytest.raises(ConfigError, match="fixres.size .32. must be larger"):
        load_config(QUICK, {"fixres": {"size": 32}})
    with pytest.raises(ConfigError, match="method must be one of"):
        load_config(QUICK, {"method": "distill"})


def test_run_folders_from_before_the_variant_sections_still_resume(tmp_path):
    cfg = load_config(QUICK)
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("method", "kd", "mpl", "fixres", "init")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    _claim_run_dir(cfg, tmp_path)  # no "different config" error
    with pytest.raises(ConfigError, match="different config"):
        _claim_run_dir(load_config(QUICK, {"method": "kd"}), tmp_path)
