"""benchmarks/bench_gpu.py runs end to end in its CPU --smoke form and reports every figure it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from eval.corruptions import ALL_CORRUPTIONS

ROOT = Path(__file__).resolve().parents[1]


def test_bench_gpu_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--smoke", "--threads", "1",
                          "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["batch"] == 4 and result["size"] == 32
    assert set(result["generation_images_per_s"]) == set(ALL_CORRUPTIONS)
    assert all(r > 0 for r in result["generation_images_per_s"].values())
    assert set(result["forward_images_per_s"]) == {"efficientnet_b0", "resnet50"}
    assert result["e2e_model"] == "resnet50" and result["e2e_images_per_s"] > 0 and result["bare_images_per_s"] > 0
    assert result["full_imagenet_c_minutes"] > 0
    assert "| spatter |" in run.stdout and "end to end (resnet50, 15 corruptions" in run.stdout
