"""Checkpoints: safetensors + JSON round trip with identical logits, sha256 checks, atomic writes, no pickle."""
import json

import pytest
import torch

from nst_common.errors import CheckpointError
from nst_common.files import write_json
from nst_core.checkpoint import is_complete, load_state, save_state
from nst_core.models import load_model


def test_round_trip_gives_identical_logits(quick_run):
    model, meta = load_model(quick_run / "gen1")
    again, _ = load_model(quick_run / "gen1" / "model.safetensors")
    x = torch.rand(6, *meta["input_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert not model.training
    for key in ("generation", "teacher", "arch", "model_kwargs", "num_classes", "input_size", "mean", "std",
                "config", "sha256", "metrics", "pseudo_labels"):
        assert key in meta, key
    assert meta["generation"] == 1 and meta["teacher"] == 0 and meta["input_size"] == [3, 32, 32]
    assert 0 < meta["metrics"]["test_top1"] <= 100
    assert sum(meta["pseudo_labels"]["written_per_class"]) == meta["pseudo_labels"]["entries"]


def test_model_normalises_inside(quick_run):
    model, meta = load_model(quick_run / "gen0")
    x = torch.rand(2, *meta["input_size"])
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), model.model((x - mean) / std))


def test_corrupt_weights_are_refused(quick_run, tmp_path):
    import shutil

    copy = tmp_path / "gen0"
    shutil.copytree(quick_run / "gen0", copy)
    assert is_complete(copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert not is_complete(copy)
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        load_model(copy)


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="meta.json does not exist"):
        load_model(tmp_path)


def test_training_state_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    save_state(tmp_path / "s", {"epoch": 3, "model": model.state_dict(), "optimizer": opt.state_dict(), "ema": {}})
    state = load_state(tmp_path / "s")
    assert state["epoch"] == 3 and state["ema"] == {}
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.5)
    fresh.load_state_dict(state["optimizer"])
    assert fresh.param_groups[0]["lr"] == 0.1 and list(fresh.param_groups[0]["betas"]) == [0.8, 0.9]
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert load_state(tmp_path / "absent") is None


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "x.json"
    write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
