"""Every bad input of docs/bad-inputs.md: a clear message naming the key, value or file, a non-zero exit, no
traceback, and nothing written that would block the corrected rerun.

Most cases call the console scripts' `main` in this process (an uncaught exception would fail the test, which is
the traceback check); a few run the real command in a subprocess.
"""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from nst_core.cli import main as train_main
from nst_core.config import load_config
from reports.cli import main as report_main

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quick.yaml"


def nst_train(capsys, out: Path | None, *args: str, config: Path = QUICK) -> tuple[int, str]:
    """Run nst-train in this process; returns (exit code, stderr)."""
    argv = ["--config", str(config), "--quiet", "--device", "cpu", *args]
    if out is not None:
        argv += ["--out", str(out)]
    code = train_main(argv)
    return code, capsys.readouterr().err


def assert_clean_error(code: int, err: str, expected_code: int, *patterns: str) -> None:
    assert code == expected_code, err
    assert err.startswith("nst-") and "error:" in err and "Traceback" not in err, err
    for pattern in patterns:
        assert pattern in err, (pattern, err)


@pytest.mark.parametrize("setting, message", [
    ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
    ("train.epochs=-1", "train.epochs must be >= 1"),
    ("train.epochs=0", "train.epochs must be >= 1"),
    ("train.student_epochs=0", "train.student_epochs must be >= 1"),
    ("train.lr=-1", "train.lr must be > 0, got -1.0"),
    ("train.lr=0", "train.lr must be > 0"),
    ("train.lr=.nan", "train.lr must be a finite number, got nan"),
    ("train.lr=.inf", "train.lr must be a finite number, got inf"),
    ("train.weight_decay=-0.1", "train.weight_decay must be >= 0"),
    ("train.label_smoothing=1.5", "train.label_smoothing must be in [0, 1)"),
    ("train.ema_decay=1", "train.ema_decay must be in (0, 1)"),
    ("train.optimizer=adamz", "train.optimizer 'adamz' is not a timm optimizer"),
    ("pseudo.batch_size=0", "pseudo.batch_size must be >= 1"),
    ("noise.dropout=1.0", "noise.dropout must be in [0, 1)"),
    ("data.unlabeled_limit=0", "data.unlabeled_limit must be >= 1"),
    ("data.std=[0, 1, 1]", "data.std must be > 0"),
    ("seed=-1", "seed must be >= 0"),
    ("models=[nope_net, test_efficientnet]", "models[0] arch 'nope_net' is not a timm model"),
    ("name=../../escape", "name '../../escape' is not a plain folder name"),
    ("name=/tmp/absolute", "name '/tmp/absolute' is not a plain folder name"),
    ("name=..", "name '..' is not a plain folder name"),
    ("train.lr.x=1", "cannot set train.lr.x: train.lr is 0.003, not a section"),
    ("train.lr=[1", "--set 'train.lr=[1': the value is not valid YAML"),
    ("no_equals_sign", "--set expects KEY=VALUE, got 'no_equals_sign'"),
    ("trian.epochs=2", "unknown key(s) 'trian'"),
    ("device=tpu9", "device 'tpu9' is not a torch device"),
])
def test_bad_setting_is_refused_before_anything_is_written(capsys, tmp_path, setting, message):
    code, err = nst_train(capsys, tmp_path / "run", "--set", setting)
    assert_clean_error(code, err, 2, message)
    assert not (tmp_path / "run").exists()


def test_empty_out_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = nst_train(capsys, None, "--out", "")
    assert_clean_error(code, err, 2, "--out is empty")
    assert list(tmp_path.iterdir()) == []


def test_bad_value_in_the_config_file_names_the_file(capsys, tmp_path):
    raw = yaml.safe_load(QUICK.read_text())
    raw["train"]["batch_size"] = 0
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    code, err = nst_train(capsys, tmp_path / "run", config=config)
    assert_clean_error(code, err, 2, f"{config}: train.batch_size must be >= 1, got 0")


@pytest.mark.parametrize("text, message", [
    (None, "does not exist"),
    ("name: [unclosed", "not valid YAML"),
    ("- a\n- list\n", "expected a mapping at the top level"),
    (b"\xff\xfe binary", "cannot be read"),
])
def test_bad_config_file(capsys, tmp_path, text, message):
    config = tmp_path / "c.yaml"
    if isinstance(text, bytes):
        config.write_bytes(text)
    elif text is not None:
        config.write_text(text)
    code, err = nst_train(capsys, tmp_path / "run", config=config)
    assert_clean_error(code, err, 2, message)


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    raw = QUICK.read_text().replace("lr: 0.003", "lr: 3e-3")
    assert "lr: 3e-3" in raw
    (tmp_path / "c.yaml").write_text(raw)
    assert load_config(tmp_path / "c.yaml").train.lr == 0.003
    from nst_core.cli import parse_overrides

    assert parse_overrides(["train.lr=1e-4", "train.weight_decay=5E2"]) == {"train.lr": 1e-4,
                                                                            "train.weight_decay": 500.0}


def test_nonexistent_data_dir_is_an_error_not_a_fallback(capsys, tmp_path):
    code, err = nst_train(capsys, tmp_path / "run", "--data-dir", "/nonexistent")
    assert_clean_error(code, err, 2, "data.data_dir (--data-dir) = '/nonexistent' is not an existing folder")
    assert "leave it out to use the installed dataset" in err  # Fashion-MNIST has one
    assert not (tmp_path / "run").exists()
    code, err = nst_train(capsys, tmp_path / "run", "--data-dir", "/nonexistent", "--set", "data.dataset=imagefolder",
                          "--set", f"data.test_dir={tmp_path}")
    assert_clean_error(code, err, 2, "data.data_dir (--data-dir) = '/nonexistent' is not an existing folder")
    assert "installed dataset" not in err  # an ImageFolder run has none to fall back on


def test_data_dir_without_the_dataset_is_an_error_not_a_fallback(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, err = nst_train(capsys, tmp_path / "run", "--data-dir", str(tmp_path / "empty"))
    assert_clean_error(code, err, 2, f"{tmp_path / 'empty'}")
    assert "holds no Fashion-MNIST" in err or "Fashion-MNIST not found" in err
    assert not (tmp_path / "run").exists()


def test_unbuildable_model_kwargs(capsys, tmp_path):
    code, err = nst_train(capsys, tmp_path / "run", "--set",
                          "models=[{arch: test_efficientnet, kwargs: {bogus: 1}}, test_efficientnet]")
    assert_clean_error(code, err, 2, "models[0] (test_efficientnet with kwargs {'bogus': 1}) cannot be built")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(capsys, tmp_path):
    code = train_main(["--config", str(QUICK), "--quiet", "--device", "cuda", "--out", str(tmp_path / "run")])
    assert_clean_error(code, capsys.readouterr().err, 2, "device 'cuda': no such CUDA device here")
    assert not (tmp_path / "run").exists()


def test_missing_init_checkpoints(capsys, tmp_path):
    code, err = nst_train(capsys, tmp_path / "run", "--set", f"init.source={tmp_path / 'nothing'}")
    assert_clean_error(code, err, 2, f"init.source {tmp_path / 'nothing'} is not a finished checkpoint folder")
    code, err = nst_train(capsys, tmp_path / "run", "--set", f"init.teacher={tmp_path / 'nothing'}")
    assert_clean_error(code, err, 2, f"init.teacher {tmp_path / 'nothing'} is not a finished checkpoint folder")
    assert not (tmp_path / "run").exists()


def test_unknown_ablation(capsys, tmp_path):
    code, err = nst_train(capsys, tmp_path / "runs", "--ablate", "colour")
    assert_clean_error(code, err, 2, "unknown ablation 'colour'")
    assert not (tmp_path / "runs").exists()


def image_tree(root: Path, classes: dict[str, int]) -> Path:
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (40 * i % 255, 80, 120)).save(root / name / f"{i}.png")
    return root


def folder_config(tmp_path: Path, train: Path, test: Path) -> Path:
    raw = {"name": "folders", "generations": 1, "models": ["test_efficientnet"], "device": "cpu",
           "data": {"dataset": "imagefolder", "data_dir": str(train), "test_dir": str(test), "labeled_per_class": 1,
                    "input_size": [3, 16, 16]},
           "train": {"epochs": 1, "batch_size": 2}}
    path = tmp_path / "folders.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_test_folder_with_other_classes_is_refused(capsys, tmp_path):
    train = image_tree(tmp_path / "train", {"cat": 2, "dog": 2, "eel": 2})
    test = image_tree(tmp_path / "test", {"dog": 1, "eel": 1})
    code, err = nst_train(capsys, tmp_path / "run", config=folder_config(tmp_path, train, test))
    assert_clean_error(code, err, 2, "data.test_dir", "missing ['cat']")
    assert not (tmp_path / "run").exists()


def test_empty_image_folder_is_refused(capsys, tmp_path):
    train = tmp_path / "train"
    (train / "cat").mkdir(parents=True)
    (train / "dog").mkdir()
    test = image_tree(tmp_path / "test", {"cat": 1, "dog": 1})
    code, err = nst_train(capsys, tmp_path / "run", config=folder_config(tmp_path, train, test))
    assert_clean_error(code, err, 2, "data.data_dir", "hold no images")
    assert not (tmp_path / "run").exists()


def test_diverging_training_stops_without_a_checkpoint(capsys, tmp_path):
    code, err = nst_train(capsys, tmp_path / "run", "--set", "train.lr=1e30", "--set", "generations=1")
    assert_clean_error(code, err, 2, "gen0 epoch 1/8", "the loss is nan", "training diverged", "lower train.lr",
                       "the same --out works")
    assert not (tmp_path / "run" / "gen0" / "meta.json").exists()
    assert not (tmp_path / "run" / "gen0" / "model.safetensors").exists()
    # nothing had finished: the corrected rerun into the same folder is not refused as "a different config"
    code, err = nst_train(capsys, tmp_path / "run", "--set", "train.lr=0.003", "--set", "generations=1",
                          "--set", "train.epochs=1")
    assert code == 0, err
    assert (tmp_path / "run" / "gen0" / "meta.json").exists()


def test_non_finite_weights_are_caught_before_the_checkpoint():
    from nst_core.training import DivergedError, check_finite_weights

    module = torch.nn.Linear(2, 2)
    check_finite_weights(module, "gen0")  # finite: no error
    with torch.no_grad():
        module.bias[0] = float("inf")
    with pytest.raises(DivergedError, match=r"gen0: 1 of 2 weight tensors are not finite \(e.g. bias\)"):
        check_finite_weights(module, "gen0")


def read_only_out(tmp_path: Path) -> Path:
    """A folder this process cannot write into: a chmod 555 folder, or for root (whom chmod does not stop) /sys."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return folder / "run"
    if _mkdir_fails(Path("/sys/nst-robustness-probe")):
        return Path("/sys/nst-robustness-test/run")
    pytest.skip("running as root and /sys is writable: no read-only folder to test with")


def _mkdir_fails(path: Path) -> bool:
    try:
        path.mkdir()
    except OSError:
        return True
    path.rmdir()
    return False


def test_read_only_out(capsys, tmp_path):
    out = read_only_out(tmp_path)
    code, err = nst_train(capsys, out)
    assert_clean_error(code, err, 1, "make it writable", "choose another --out")
    assert "Permission denied" in err or "Operation not permitted" in err


def test_full_disk_is_a_clear_error_and_leaves_no_temp_file(tmp_path):
    """A real write failure: the file-size limit (RLIMIT_FSIZE) makes the first training-state write fail (EFBIG),
    as a full disk (ENOSPC) would; nst-train says so, exits 1, and leaves no temporary file."""
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))\n"
              "from nst_core.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", script, "--config", str(QUICK), "--quiet", "--device", "cpu",
                           "--out", str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    assert "nst-train: error: cannot write" in proc.stderr and "free space" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(out.rglob("*.tmp")) and not (out / "gen0" / "meta.json").exists()


def test_cli_subprocess_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nst_core.cli", "--config", str(QUICK), "--out", str(tmp_path / "r"),
                           "--set", "train.batch_size=0"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "train.batch_size must be >= 1, got 0" in proc.stderr


# ---- nst-report and nst-eval: stores and output folders ---------------------------------------------------

def small_store(path: Path) -> Path:
    from eval.store import Cell, ResultStore

    path.parent.mkdir(parents=True, exist_ok=True)
    with ResultStore(path) as store:
        for i in range(2):
            cell = Cell(f"m{i}", None, "r", i, "clean", "ds")
            store.write([cell.row("top1", 50.0 + i, 8)], {cell: torch.arange(8) % (i + 2) == 0})
    return path


@pytest.mark.parametrize("folder", ["dir#x", "q?x", "%41", "sp ace"])
def test_report_opens_store_paths_whatever_characters_they_hold(capsys, tmp_path, folder, monkeypatch):
    store = small_store(tmp_path / folder / "results.sqlite")
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = report_main(["--results", f"{folder}/results.sqlite", "--out", str(tmp_path / "report")])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["report"])  # no cut-off file created
    assert store.stat().st_size > 0


@pytest.mark.parametrize("content, message", [
    (b"this is not a database" * 20, "file is not a database"),
    (None, "database disk image is malformed"),  # a real store cut in half
])
def test_report_names_a_store_that_is_not_a_database(capsys, tmp_path, content, message):
    path = tmp_path / "results.sqlite"
    if content is None:
        data = small_store(tmp_path / "whole.sqlite").read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    code = report_main(["--results", str(path), "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{path} is not a readable results store" in err and message in err


@pytest.mark.parametrize("content", [b"PK\x03\x04 cut short", b"not an array file at all"])
def test_report_names_an_examples_file_it_cannot_read(capsys, tmp_path, content):
    store = small_store(tmp_path / "results.sqlite")
    (tmp_path / "examples.npz").write_bytes(content)  # beside the store, so the report reads it
    code = report_main(["--results", str(store), "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert f"{tmp_path / 'examples.npz'} is not a readable examples file" in err and "delete it" in err


def test_report_missing_store(capsys, tmp_path):
    code = report_main(["--results", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert code == 2 and f"results store not found: {tmp_path / 'none.sqlite'}" in err
    assert not (tmp_path / "none.sqlite").exists()


def test_report_read_only_out(capsys, tmp_path):
    store = small_store(tmp_path / "results.sqlite")
    code = report_main(["--results", str(store), "--out", str(read_only_out(tmp_path))])
    err = capsys.readouterr().err
    assert code == 1 and "nst-report: error: " in err and "Traceback" not in err
    assert "make it writable" in err and ("Permission denied" in err or "Operation not permitted" in err)


@pytest.mark.parametrize("kind", ["not a database", "truncated"])
def test_result_store_that_is_not_a_database_is_named(tmp_path, kind):
    from eval.store import ResultStore, StoreError

    path = tmp_path / "results.sqlite"
    if kind == "truncated":
        data = small_store(tmp_path / "whole.sqlite").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"PK\x03\x04 a zip file, not SQLite" * 10)
    with pytest.raises(StoreError, match=f"{path} is not a readable results store.*Move it away"):
        ResultStore(path)


def test_nst_eval_names_a_bad_store(capsys, tmp_path, quick_run):
    from eval.cli import main as eval_main

    out = tmp_path / "eval"
    out.mkdir()
    (out / "results.sqlite").write_bytes(b"not a database at all" * 10)
    code = eval_main(["--suite", "clean", "--checkpoint", str(quick_run / "gen0"), "--limit", "8", "--out", str(out),
                      "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{out / 'results.sqlite'} is not a readable results store" in err


def test_nst_eval_read_only_out_is_a_refused_write(capsys, tmp_path, quick_run):
    from eval.cli import main as eval_main

    code = eval_main(["--suite", "clean", "--checkpoint", str(quick_run / "gen0"), "--limit", "8",
                      "--out", str(read_only_out(tmp_path)), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "nst-eval: error: " in err and "Traceback" not in err  # exit 1 as nst-train / nst-report
    assert "make it writable" in err and ("Permission denied" in err or "Operation not permitted" in err)


def _write_summaries(out: str, worker: int, count: int) -> None:
    from eval.store import write_summary

    for i in range(count):
        write_summary(out, f"w{worker}-m{i}", {"top1": float(i)})


def test_concurrent_summary_writers_lose_nothing(tmp_path):
    import json

    workers, count = 4, 40
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_summaries, args=(str(tmp_path), w, count)) for w in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    models = json.loads((tmp_path / "summary.json").read_text())["models"]
    assert len(models) == workers * count
    assert not list(tmp_path.glob(".summary.json.*.tmp"))


def test_corrupt_summary_is_named(tmp_path):
    from eval.store import StoreError, write_summary

    (tmp_path / "summary.json").write_text("{ not json")
    with pytest.raises(StoreError, match=f"{tmp_path / 'summary.json'} is not valid JSON.*delete it"):
        write_summary(tmp_path, "m", {"top1": 1.0})
