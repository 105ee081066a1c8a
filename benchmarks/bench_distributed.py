"""Scaling of sharded evaluation and sharded pseudo-labeling from 1 to N processes under torchrun.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_distributed.py            # 1 and 2 gloo processes, CPU
    .venv/bin/python benchmarks/bench_distributed.py --procs 1 8 --device cuda    # a GPU machine

Each measurement starts `torchrun --nproc_per_node N benchmarks/bench_distributed.py --worker ...`; the worker
times only the work, between two barriers (not process start-up, imports or data loading), best of --repeat.
eval: `eval.api.evaluate` of the clean suite (force: computed, not read back) of the demo student (random
weights) on the Fashion-MNIST test set; pseudo: `sharded_probs` of the same model over the same images (shard
files written and merged). Speed-up = time(first --procs) / time(N); efficiency = speed-up * first / N.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nst_common import distributed  # noqa: E402

DEMO_META = {"name": "bench/demo-student", "arch": "test_efficientnet",
             "model_kwargs": {"depth_multiplier": 2.0, "channel_multiplier": 1.5}, "num_classes": 10,
             "input_size": [3, 32, 32], "mean": [0.286] * 3, "std": [0.353] * 3, "sha256": None,
             "config": {"data": {"dataset": "fashion_mnist", "input_size": [3, 32, 32]}}}


def worker(args: argparse.Namespace) -> None:
    """Inside torchrun: time the task `repeat` times between barriers; rank 0 prints the best time as JSON."""
    from eval.api import evaluate
    from eval.context import EvalOptions
    from eval.datasets import clean_test_set
    from nst_core.imagesets import ImageSet
    from nst_core.models import model_from_meta
    from nst_core.pseudo_shards import sharded_probs

    distributed.init()
    torch.manual_seed(0)
    model = model_from_meta(DEMO_META).to(args.device).eval()
    data = clean_test_set(DEMO_META, args.limit, 0).materialize()
    pool = ImageSet(data.labels, 10, "bench-pool", images=data.images)
    options = EvalOptions(device=args.device, batch_size=args.batch_size, limit=args.limit, force=True,
                          progress=False)
    times = []
    for _ in range(args.repeat):
        distributed.barrier()
        start = time.perf_counter()
        if args.task == "eval":
            evaluate(model, DEMO_META, "clean", options=options)
        else:
            sharded_probs(model, pool, args.shard_dir, batch_size=args.batch_size, device=args.device,
                          progress=False)
        distributed.barrier()
        times.append(time.perf_counter() - start)
        if distributed.is_main():
            shutil.rmtree(args.shard_dir, ignore_errors=True)
    if distributed.is_main():
        print(json.dumps({"seconds": min(times), "images": len(data)}))
    distributed.shutdown()


def measure(task: str, procs: int, args: argparse.Namespace, shard_dir: Path) -> dict:
    """One torchrun launch of `procs` workers; the best time of the task."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_addr",
           "127.0.0.1", "--master_port", str(port), __file__, "--worker", "--task", task, "--device", args.device,
           "--batch-size", str(args.batch_size), "--repeat", str(args.repeat), "--shard-dir", str(shard_dir)]
    if args.limit is not None:
        cmd += ["--limit", str(args.limit)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"torchrun failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["eval", "pseudo"], choices=["eval", "pseudo"])
    parser.add_argument("--procs", nargs="+", type=int, default=[1, 2], help="process counts (the first is the base)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--limit", type=int, default=None, help="images of the test set (default: all 10,000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--task", default="eval", help=argparse.SUPPRESS)
    parser.add_argument("--shard-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"device {args.device}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}, "
          f"batch {args.batch_size}, best of {args.repeat}; {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'task':<8}{'procs':>6}{'images':>8}{'seconds':>10}{'img/s':>9}{'speed-up':>10}{'efficiency':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            base = None
            for procs in args.procs:
                result = measure(task, procs, args, Path(tmp) / "shards")
                base = base or result["seconds"]
                speedup = base / result["seconds"]
                efficiency = speedup * args.procs[0] / procs
                print(f"{task:<8}{procs:>6}{result['images']:>8}{result['seconds']:>10.2f}"
                      f"{result['images'] / result['seconds']:>9.0f}{speedup:>10.2f}{efficiency:>12.2f}", flush=True)


if __name__ == "__main__":
    main()
