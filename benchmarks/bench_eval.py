"""Evaluation throughput vs bare `model(x)` on the same batches, and corruption generation time per image.

    .venv/bin/python benchmarks/bench_eval.py                     # demo student model, CPU
    .venv/bin/python benchmarks/bench_eval.py --device cuda --amp --checkpoint runs/fashion_mnist/gen2

Loop = `EvalContext.predict` (uint8 -> float on the device, forward, top-1/top-5, per-image correctness, NaN
check), timed on the clean test set and on a generated corrupted set read from the disk cache; bare = the same
model on the same batches already as float tensors on the device, under inference_mode. Ratio = bare time /
loop time (1.0 = no overhead; goal >= 0.8). Repeats alternate and the best of each is kept.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.context import EvalContext, EvalOptions  # noqa: E402
from eval.corruptions import ALL_CORRUPTIONS, corrupt  # noqa: E402
from eval.datasets import clean_test_set, corrupted_set  # noqa: E402


def demo_model(device: str):
    """The demo run's student architecture (random weights: throughput does not depend on them)."""
    from nst_core.models import model_from_meta

    meta = {"name": "bench/demo-student", "arch": "test_efficientnet",
            "model_kwargs": {"depth_multiplier": 2.0, "channel_multiplier": 1.5}, "num_classes": 10,
            "input_size": [3, 32, 32], "mean": [0.286] * 3, "std": [0.353] * 3, "sha256": None,
            "config": {"data": {"dataset": "fashion_mnist", "input_size": [3, 32, 32]}}}
    return model_from_meta(meta).to(device).eval(), meta


def time_bare(model, batches, device, amp) -> float:
    xs = [x.to(device).float().div_(255) for x, _ in batches]
    auto = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if amp else nullcontext()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t = time.perf_counter()
    with torch.inference_mode(), auto:
        for x in xs:
            model(x)
    sync()
    return time.perf_counter() - t


def time_loop(ctx: EvalContext, data) -> float:
    sync = torch.cuda.synchronize if ctx.device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    acc = ctx.predict(data, ctx.cell("bench", data.name))
    acc.compute()
    sync()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="checkpoint folder (default: the demo student, random weights)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--n", type=int, default=2000, help="test images timed")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gen-n", type=int, default=64, help="images per corruption for generation timing")
    p.add_argument("--reference", action="store_true", help="also time the imagecorruptions backend")
    p.add_argument("--skip-generation", action="store_true")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.checkpoint:
        from nst_core import load_model

        model, meta = load_model(args.checkpoint, device=args.device)
    else:
        model, meta = demo_model(args.device)
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}"
          + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""))
    print(f"model: {meta['name']} {meta['input_size']}, device {args.device}, amp {args.amp}, "
          f"batch {args.batch_size}, {args.n} images")
    options = EvalOptions(device=args.device, batch_size=args.batch_size, amp=args.amp, progress=False)
    ctx = EvalContext(model, meta, options=options)
    clean = clean_test_set(meta, limit=args.n)
    with tempfile.TemporaryDirectory() as cache:
        corrupted_set(clean, "fog", 3, cache_dir=cache, progress=False)  # generate once
        corrupted = corrupted_set(clean, "fog", 3, cache_dir=cache, progress=False)  # from the cache
        print("\n| data | bare model(x) img/s | evaluation loop img/s | ratio |\n|---|---|---|---|")
        for name, data in (("clean", clean), ("fog/3 from cache", corrupted)):
            batches = list(data.batches(args.batch_size))
            time_bare(model, batches[:2], args.device, args.amp)  # warm-up
            time_loop(ctx, data)
            bare, loop = [], []
            for _ in range(args.repeats):
                bare.append(time_bare(model, batches, args.device, args.amp))
                loop.append(time_loop(ctx, data))
            b, lo = min(bare), min(loop)
            print(f"| {name} | {len(data) / b:,.0f} | {len(data) / lo:,.0f} | {b / lo:.2f} |")
    if args.skip_generation:
        return
    images = clean.images[: args.gen_n]
    keys = clean.indices[: args.gen_n].tolist()
    backends = ["torch"] + (["imagecorruptions"] if args.reference else [])
    print(f"\ncorruption generation, severity 3, {args.gen_n} images at {tuple(images.shape[1:])}, ms per image")
    print("| corruption | " + " | ".join(backends) + " |\n|---|" + "---|" * len(backends))
    totals = {b: 0.0 for b in backends}
    for c in ALL_CORRUPTIONS:
        cells = []
        for b in backends:
            corrupt(images[:2], c, 3, keys[:2], backend=b)  # warm-up (kernels, frost files)
            t = time.perf_counter()
            corrupt(images, c, 3, keys, backend=b)
            ms = 1000 * (time.perf_counter() - t) / len(images)
            totals[b] += ms
            cells.append(f"{ms:.2f}")
        print(f"| {c} | " + " | ".join(cells) + " |")
    print("| mean of 19 | " + " | ".join(f"{totals[b] / len(ALL_CORRUPTIONS):.2f}" for b in backends) + " |")


if __name__ == "__main__":
    main()
