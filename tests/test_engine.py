"""The generation loop end to end: checkpoints per generation, resume after a kill, and bad input."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nst_core import load_config
from nst_core.config import ConfigError
from nst_core.data import DataError
from nst_core.engine import run

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quick.yaml"
# A smaller variant of the quick run for the kill/resume test (several epochs, so a kill can land mid-generation).
RESUME_SET = ["data.labeled_per_class=10", "data.unlabeled_limit=400", "train.epochs=6", "train.student_epochs=2",
              "pseudo.min_threshold=0.05"]


def nst_train(out: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "nst_core.cli", "--config", str(QUICK), "--out", str(out), "--quiet"]
    for item in RESUME_SET:
        args += ["--set", item]
    return subprocess.Popen(args + list(extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_quick_run_writes_every_generation(quick_run):
    for k in (0, 1):
        assert (quick_run / f"gen{k}" / "model.safetensors").is_file()
        assert (quick_run / f"gen{k}" / "meta.json").is_file()
        assert not list((quick_run / f"gen{k}").glob("*_state.*"))
    assert (quick_run / "gen1" / "pseudo_labels.safetensors").is_file()
    assert (quick_run / "config.yaml").is_file()


def test_finished_generations_are_not_retrained(quick_run):
    before = {p: p.stat().st_mtime_ns for p in quick_run.rglob("*.safetensors")}
    metas = run(load_config(QUICK), quick_run, device="cpu", progress=False)
    assert [m["generation"] for m in metas] == [0, 1]
    assert {p: p.stat().st_mtime_ns for p in quick_run.rglob("*.safetensors")} == before


def test_killed_run_resumes_to_identical_files(tmp_path):
    """SIGKILL mid-generation (after an epoch's state is saved); the rerun ends with byte-identical checkpoints."""
    whole = nst_train(tmp_path / "whole")
    assert whole.wait(timeout=300) == 0, whole.stdout.read()

    killed = nst_train(tmp_path / "killed")
    state = tmp_path / "killed" / "gen0" / "train_state.safetensors"
    deadline = time.time() + 240
    while not state.exists() and time.time() < deadline and killed.poll() is None:
        time.sleep(0.05)
    assert state.exists(), "no epoch finished before the deadline"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "gen0" / "meta.json").exists(), "the kill came too late to test resume"

    resumed = nst_train(tmp_path / "killed")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    for k in (0, 1):
        for name in ("model.safetensors", "meta.json"):
            a = (tmp_path / "whole" / f"gen{k}" / name).read_bytes()
            b = (tmp_path / "killed" / f"gen{k}" / name).read_bytes()
            assert a == b, f"gen{k}/{name} differs after resume"


def test_labeled_count_larger_than_a_class(tmp_path):
    cfg = load_config(QUICK, {"data.labeled_per_class": 7000})
    with pytest.raises(DataError, match=r"labeled_per_class is 7000 but class 0 \('T-shirt/top'\) has only 6000"):
        run(cfg, tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "gen0").exists()


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr("nst_core.data.SYSTEM_FASHION_MNIST", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    cfg = load_config(QUICK, {"data.data_dir": str(tmp_path / "empty")})
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist.*download"):
        run(cfg, tmp_path / "r", progress=False)


def test_rerun_with_another_config_is_refused(quick_run):
    with pytest.raises(ConfigError, match="different config"):
        run(load_config(QUICK, {"seed": 1}), quick_run, progress=False)


def test_cli_reports_bad_config_cleanly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "models": ["test_efficientnet"], "generations": 1, "trian": {}}))
    proc = subprocess.run([sys.executable, "-m", "nst_core.cli", "--config", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown key(s) 'trian'" in proc.stderr and "Traceback" not in proc.stderr
