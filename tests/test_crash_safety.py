"""Crash safety of nst-train: one-unit training state, leftovers removed on the next run, kills at every rename.

The slow test kills `nst-train` on configs/quick.yaml right before each of its file renames and deletions in
turn (a `sitecustomize` audit hook calls `os._exit` at the k-th event), reruns it, and compares every final file
with an uninterrupted run (18 kill points: 16 renames, 2 deletions). Run it with `bash scripts/test.sh -m slow`;
measured 20 min 37 s and 23 min 54 s on the shared 2-core VM while other tests ran (2026-12-01).
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nst_common.files import atomic_write, remove_temp_files, write_arrays, write_json, write_tensors
from nst_core import load_config
from nst_core.checkpoint import StateMismatch, load_state, resume_state, save_state
from nst_core.engine import run

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quick.yaml"
KILLED = 77  # exit status of a process the hook killed

# Counts the renames (os.rename / os.replace) and deletions under NST_KILL_ROOT; exits at number NST_KILL_AT.
HOOK = '''
import os, sys
_root = os.environ.get("NST_KILL_ROOT")
if _root:
    _at, _log, _seen = int(os.environ.get("NST_KILL_AT", "0")), os.environ["NST_KILL_LOG"], [0]
    def _hook(event, args):
        if event in ("os.rename", "os.remove", "os.rmdir") and str(args[0]).startswith(_root):
            _seen[0] += 1
            with open(_log, "a") as handle:
                handle.write(f"{_seen[0]} {event} {os.path.relpath(str(args[0]), _root)}\\n")
            if _seen[0] == _at:
                os._exit(%d)
    sys.addaudithook(_hook)
''' % KILLED


def small_state(value: float = 1.0) -> dict:
    model = torch.nn.Linear(3, 2)
    torch.nn.init.constant_(model.weight, value)
    return {"epoch": 2, "history": [{"loss": 0.5}], "model": model.state_dict()}


def test_state_is_one_file_and_round_trips(tmp_path):
    save_state(tmp_path / "train_state", small_state(), {"generation": 0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_state.safetensors"]
    state = load_state(tmp_path / "train_state", {"generation": 0})
    assert state["epoch"] == 2 and state["history"] == [{"loss": 0.5}]
    assert torch.equal(state["model"]["weight"], torch.ones(2, 3))


def test_state_of_another_training_is_never_used(tmp_path):
    save_state(tmp_path / "train_state", small_state(), {"generation": 0, "epochs": 8})
    with pytest.raises(StateMismatch, match="belongs to another training.*epochs"):
        load_state(tmp_path / "train_state", {"generation": 0, "epochs": 9})
    messages = []
    assert resume_state(tmp_path / "train_state", {"generation": 0, "epochs": 9}, log=messages.append) is None
    assert "not used" in messages[0] and not (tmp_path / "train_state.safetensors").exists()


def test_corrupt_state_is_detected(tmp_path):
    save_state(tmp_path / "train_state", small_state(), {})
    path = tmp_path / "train_state.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(StateMismatch, match="do not match their SHA-256"):
        load_state(tmp_path / "train_state")
    path.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(StateMismatch, match="not a readable training state"):
        load_state(tmp_path / "train_state")


def test_old_two_file_state_is_not_used(tmp_path):
    """The old format paired train_state.safetensors with train_state.json, renamed one by one: never trusted."""
    save_state(tmp_path / "train_state", small_state(), {})
    (tmp_path / "train_state.json").write_text(json.dumps({"__dict__": [["epoch", 1]]}))
    with pytest.raises(StateMismatch, match="old two-file format"):
        load_state(tmp_path / "train_state")
    assert resume_state(tmp_path / "train_state", log=lambda m: None) is None
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_gives_the_umask_mode_and_cleans_up(tmp_path):
    old = os.umask(0o027)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        write_tensors(tmp_path / "w.safetensors", {"x": torch.zeros(2)})  # safetensors creates its file 0600
        save_state(tmp_path / "train_state.safetensors", {"x": torch.zeros(2), "epoch": 1})
        write_arrays(tmp_path / "a.npz", {"x": np.zeros(2)})
    finally:
        os.umask(old)
    for name in ("a.json", "w.safetensors", "train_state.safetensors", "a.npz"):  # 0666 less the umask, never 0600
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name
    old = os.umask(0o002)  # a group-shared folder: the results store is group-writable like the other files
    try:
        from eval.store import ResultStore

        ResultStore(tmp_path / "results.sqlite").conn.close()
        write_json(tmp_path / "g.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "results.sqlite").stat().st_mode) == 0o664  # SQLite alone gives 0644
    assert stat.S_IMODE((tmp_path / "g.json").stat().st_mode) == 0o664
    (tmp_path / "results.sqlite").unlink()
    (tmp_path / "g.json").unlink()
    (tmp_path / "w.safetensors").unlink()
    (tmp_path / "train_state.safetensors").unlink()
    (tmp_path / "a.npz").unlink()

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(28, "No space left on device", str(tmp))

    with pytest.raises(OSError):
        atomic_write(tmp_path / "a.json", fail)
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_remove_temp_files_only_takes_atomic_write_leftovers(tmp_path):
    (tmp_path / "sub").mkdir()
    left = [tmp_path / ".config.yaml.ab12cd_9.tmp", tmp_path / ".model.safetensors.x9z0k1m2.tmp"]
    kept = [tmp_path / "notes.tmp", tmp_path / ".notes.tmp", tmp_path / ".a.b.tmp", tmp_path / "model.safetensors",
            tmp_path / ".hidden", tmp_path / "sub" / ".meta.json.abcdefgh.tmp"]  # not below the folder
    for path in left + kept:
        path.write_text("x")
    assert sorted(remove_temp_files(tmp_path)) == sorted(left)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in left)
    real = tmp_path / "real.json"
    write_json(real, {})
    names = []
    import tempfile

    for _ in range(20):  # the pattern matches what mkstemp really makes
        fd, name = tempfile.mkstemp(prefix=".real.json.", suffix=".tmp", dir=tmp_path)
        os.close(fd)
        names.append(Path(name))
    assert sorted(remove_temp_files(tmp_path)) == sorted(names)


def test_rerun_removes_leftovers_of_a_finished_run(quick_run, tmp_path):
    """A kill after meta.json but before the clean-up, or during a write: the next run removes what was left."""
    copy = tmp_path / "run"
    shutil.copytree(quick_run, copy)
    before = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    (copy / "gen0" / "train_state.safetensors").write_bytes(b"stale")
    (copy / "gen1" / "train_state.json").write_text("{}")
    (copy / "gen1" / ".meta.json.k3j2h1ab.tmp").write_text("{")
    (copy / ".config.yaml.abcdef_1.tmp").write_text("half")
    run(load_config(QUICK), copy, device="cpu", progress=False)
    after = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    assert after == before


def nst_train(out: Path, hook_dir: Path, kill_at: int, log: Path, src: Path = ROOT) -> subprocess.CompletedProcess:
    """nst-train on the quick config, run from `src` (a copy of nst_core and configs/quick.yaml)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook_dir), str(src)]), "OMP_NUM_THREADS": "1",
           "NST_KILL_ROOT": str(out), "NST_KILL_AT": str(kill_at), "NST_KILL_LOG": str(log)}
    return subprocess.run([sys.executable, "-m", "nst_core.cli", "--config", str(src / "configs" / "quick.yaml"),
                           "--out", str(out), "--quiet", "--device", "cpu"], env=env, capture_output=True, text=True,
                          timeout=900, cwd=src)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def snapshot_source(dest: Path) -> Path:
    """A copy of nst_core and configs/quick.yaml: the 37 runs of the slow test all use the same code, even while
    the working tree changes under it."""
    shutil.copytree(ROOT / "nst_core", dest / "nst_core", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "configs").mkdir()
    shutil.copy(QUICK, dest / "configs" / "quick.yaml")
    return dest


@pytest.mark.slow
def test_kill_before_every_rename_resumes_to_identical_files(tmp_path):
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(HOOK)
    src = snapshot_source(tmp_path / "src")
    whole = tmp_path / "whole"
    done = nst_train(whole, hook_dir, 0, tmp_path / "whole.log", src)
    assert "src/nst_core" in subprocess.run(
        [sys.executable, "-c", "import nst_core; print(nst_core.__file__)"], cwd=src, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(src)}).stdout  # the copy is what runs
    assert done.returncode == 0, done.stderr
    events = (tmp_path / "whole.log").read_text().splitlines()
    assert sum("os.rename" in e for e in events) >= 15, events  # config, 8 + 1 epoch states, 2 x (model, meta)...
    reference = tree(whole)
    assert not [name for name in reference if "_state" in name or name.endswith(".tmp")]

    failures = []
    for k in range(1, len(events) + 1):
        out, log = tmp_path / f"kill{k}", tmp_path / f"kill{k}.log"
        killed = nst_train(out, hook_dir, k, log, src)
        assert killed.returncode == KILLED, (k, killed.returncode, killed.stderr[-2000:])
        resumed = nst_train(out, hook_dir, 0, tmp_path / f"resume{k}.log", src)
        if resumed.returncode != 0:
            failures.append(f"kill before {events[k - 1]}: rerun exit {resumed.returncode}: {resumed.stderr[-500:]}")
            continue
        got = tree(out)
        if got.keys() != reference.keys():
            failures.append(f"kill before {events[k - 1]}: files {sorted(got.keys() ^ reference.keys())} differ")
        changed = [name for name in reference.keys() & got.keys() if got[name] != reference[name]]
        if changed:
            failures.append(f"kill before {events[k - 1]}: {sorted(changed)} not identical to the uninterrupted run")
        shutil.rmtree(out)
    assert not failures, "\n".join(failures)
