"""Sharded evaluation: `torchrun --nproc_per_node 2 -m eval.cli` (gloo, CPU) stores the rows of one process.

Two untrained checkpoints (gen0 is the CE baseline) on a 20-image ImageFolder test set, in batches of 3 (a short
last batch, ranks with unequal shares): clean, corruption, adversarial (FGSM, PGD with random start) and
perturbation cells must match one process's row for row, per-image correctness included; run again, the 2 ranks
read every cell back together.
"""
import json
import sys
import sqlite3
from pathlib import Path

import pytest
import torch
from PIL import Image

from eval.cli import main as nst_eval
from nst_core.checkpoint import save_checkpoint
from nst_core.models import model_from_meta
from test_distributed import torchrun

ARGS = ["--suite", "clean,corruption,adversarial,perturbation", "--batch-size", "3", "--corruptions",
        "gaussian_noise,fog", "--eps", "0,2", "--pgd-steps", "2", "--perturbations", "gaussian_noise,translate",
        "--perturbation-limit", "5", "--no-progress", "--device", "cpu"]
ROW_COLUMNS = ("model, checkpoint_sha256, run, generation, suite, dataset, corruption, severity, attack, eps, "
               "metric, value, n, settings")


def make_run(root: Path) -> Path:
    """gen0 and gen1 of a run: random test_efficientnet weights, test set 4 classes x 5 images."""
    for c in range(4):
        (root / "test" / f"c{c}").mkdir(parents=True)
        for i in range(5):
            pixels = torch.randint(0, 256, (32, 32, 3), generator=torch.Generator().manual_seed(10 * c + i))
            Image.fromarray(pixels.to(torch.uint8).numpy()).save(root / "test" / f"c{c}" / f"{i}.png")
    data = {"dataset": "imagefolder", "test_dir": str(root / "test"), "input_size": [3, 32, 32]}
    for k in (0, 1):
        meta = {"name": f"tiny/gen{k}", "run": "tiny", "generation": k, "arch": "test_efficientnet",
                "model_kwargs": {}, "num_classes": 4, "input_size": [3, 32, 32], "mean": [0.5] * 3,
                "std": [0.25] * 3, "config": {"data": data}, "metrics": {"test_top1": 0.0}}
        torch.manual_seed(k)
        save_checkpoint(root / "run" / f"gen{k}", model_from_meta(meta).model.state_dict(), meta)
    return root / "run"


def stored(out: Path) -> tuple[list, list, dict]:
    """Result rows (no timestamps), per-image rows, and summary.json without its update times."""
    with sqlite3.connect(out / "results.sqlite") as conn:
        rows = sorted(conn.execute(f"SELECT {ROW_COLUMNS} FROM results").fetchall(), key=repr)
        per_image = sorted(conn.execute("SELECT model, suite, dataset, corruption, severity, attack, eps, correct, n "
                                        "FROM per_image").fetchall(), key=repr)
    summary = json.loads((out / "summary.json").read_text())["models"]
    for figures in summary.values():
        figures.pop("updated")
    return rows, per_image, summary


@pytest.mark.usefixtures("one_torch_thread")  # as the torchrun workers (OMP_NUM_THREADS=1): the calibration rows
def test_two_ranks_store_the_rows_of_one(tmp_path):  # are sums of float logits, so the thread count must match too
    run = make_run(tmp_path)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert nst_eval(["--run", str(run), "--out", str(tmp_path / "one"), *ARGS, *cache]) == 0
    # the console script, as docs/distributed.md says; an eval.py in the working directory must not run instead
    (tmp_path / "eval.py").write_text("raise SystemExit('the eval.py of the working directory ran')\n")
    nst_eval_script = str(Path(sys.executable).parent / "nst-eval")
    job = torchrun("--no-python", nst_eval_script, "--run-dir", str(run), "--out", str(tmp_path / "two"), *ARGS,
                   *cache, cwd=tmp_path)
    assert job.wait(timeout=300) == 0, job.stdout.read()
    one, two = stored(tmp_path / "one"), stored(tmp_path / "two")
    assert len(one[0]) > 50 and {r[4] for r in one[0]} == {"clean", "corruption", "adversarial", "perturbation"}
    assert one == two
    again = torchrun("--no-python", nst_eval_script, "--run-dir", str(run), "--out", str(tmp_path / "two"), *ARGS,
                     *cache, cwd=tmp_path)
    assert again.wait(timeout=300) == 0
    log = again.stdout.read()
    assert "tiny/gen1: 0 cells computed" in log and "tiny/gen0: 0 cells computed" in log, log
    assert stored(tmp_path / "two")[:2] == two[:2]
