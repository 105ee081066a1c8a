"""GPU corruption throughput against model forwards, in one run (issue 13).

Measures, on one device and the same batch of 224-px images (batch 256 by default):

1. per-corruption generation rate (images/s) of ``eval.corruptions.corrupt`` in 'device' rng mode, severity 3
   (every corruption, the imagenet-c preset);
2. forward rates (images/s) of timm ``efficientnet_b0`` and ``resnet50`` (random init, no download), bf16 autocast
   on CUDA (float32 on the CPU), channels_last, inference mode;
3. corruption evaluation end to end -- per batch: corrupt on the device, normalise, forward, top-1 against the
   labels, the counts kept on the device -- over the 15 common corruptions at severity 3, against a bare forward
   over the same number of batches of the same (clean) images; and the full ImageNet-C time this implies
   (50,000 images x 15 corruptions x 5 severities).

Goals (issue 13): every corruption's rate >= the efficientnet_b0 forward rate; end to end >= 0.8x the bare forward;
full ImageNet-C for ResNet-50 in <= 30 min on one GPU.

Usage:  python benchmarks/bench_gpu.py [--device cuda] [--batch 256] [--size 224] [--budget 2.0] [--json out.json]
        python benchmarks/bench_gpu.py --smoke      (CPU, 32 px, batch 4, short budgets: checks the script runs)
Each rate is the best of repeated timings within ``--budget`` seconds (after one untimed warm-up call), with
torch.cuda.synchronize around every timing. Images: skimage sample photos resized (no download), labels random.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the torch import (see bench_corruptions.py)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, ENGINE_VERSION, corrupt  # noqa: E402

IMAGENET_C_IMAGES = 50_000 * len(CORRUPTIONS) * 5  # 3.75 M
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def sync(device: torch.device) -> None:
    """Wait for queued device work (CUDA), so that wall time measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn: Callable[[], object], device: torch.device, budget: float, min_reps: int = 1) -> float:
    """Fastest wall time of ``fn()`` over repeats within ``budget`` seconds (one untimed warm-up call first)."""
    fn()
    sync(device)
    best, spent, reps = float("inf"), 0.0, 0
    while reps < min_reps or spent < budget:
        start = time.perf_counter()
        fn()
        sync(device)
        elapsed = time.perf_counter() - start
        best, spent, reps = min(best, elapsed), spent + elapsed, reps + 1
        if reps >= 50:
            break
    return best


def sample_batch(n: int, size: int, device: torch.device) -> torch.Tensor:
    """n uint8 [3, size, size] images cycled from skimage's colour sample photos, on ``device``."""
    import numpy as np
    from skimage import data
    from skimage.transform import resize

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]
    base = [(resize(p, (size, size), anti_aliasing=True) * 255).astype(np.uint8) for p in photos]
    out = np.stack([base[i % len(base)] for i in range(n)])
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(device)


def make_model(name: str, device: torch.device) -> torch.nn.Module:
    """timm model ``name`` with random weights (pretrained=False: nothing is downloaded), eval, channels_last."""
    import timm

    model = timm.create_model(name, pretrained=False, num_classes=1000)
    return model.eval().to(device=device, memory_format=torch.channels_last)


def forward_fn(model: torch.nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 [B, 3, H, W] on the device -> logits: normalise, channels_last, bf16 autocast on CUDA, inference mode."""
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255

    def forward(u8: torch.Tensor) -> torch.Tensor:
        x = ((u8.float() - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            return model(x)

    return forward


def main() -> None:
    """Run the three measurements and print markdown tables (and write --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timed repeats per measurement")
    parser.add_argument("--corruptions", nargs="+", default=list(ALL_CORRUPTIONS))
    parser.add_argument("--models", nargs="+", default=["efficientnet_b0", "resnet50"])
    parser.add_argument("--e2e-model", default="resnet50", help="model of the end-to-end measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--smoke", action="store_true", help="CPU, 32 px, batch 4, tiny budgets: a quick check")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.smoke:
        args.device, args.batch, args.size, args.budget = "cpu", 4, 32, 0.0
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    started = time.perf_counter()
    images = sample_batch(args.batch, args.size, device)
    keys = list(range(args.batch))
    labels = torch.randint(0, 1000, (args.batch,), generator=torch.Generator().manual_seed(0)).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    load = os.getloadavg()
    print(f"# bench_gpu: {name}, torch {torch.__version__}, engine {ENGINE_VERSION}, batch {args.batch} x "
          f"{args.size} px, severity {args.severity}, rng device, preset imagenet-c, budget {args.budget} s; "
          f"load average {load[0]:.2f}")

    models = {m: forward_fn(make_model(m, device), device) for m in dict.fromkeys(args.models + [args.e2e_model])}
    forward_rate = {}
    for m in args.models:
        seconds = best_seconds(lambda: models[m](images), device, args.budget)
        forward_rate[m] = args.batch / seconds
    reference_model = args.models[0]

    print(f"\n| corruption | images/s | vs {reference_model} forward |")
    print("|---|---:|---:|")
    rates = {}
    for c in args.corruptions:
        seconds = best_seconds(lambda: corrupt(images, c, args.severity, keys, preset="imagenet-c", rng="device"),
                               device, args.budget)
        rates[c] = args.batch / seconds
        print(f"| {c} | {rates[c]:,.0f} | {rates[c] / forward_rate[reference_model]:.2f}x |", flush=True)
    print("\n| model (bf16 on CUDA) | forward images/s |")
    print("|---|---:|")
    for m, r in forward_rate.items():
        print(f"| {m} | {r:,.0f} |")

    e2e_forward = models[args.e2e_model]
    common = [c for c in args.corruptions if c in CORRUPTIONS]

    def evaluation() -> torch.Tensor:
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for c in common:
            logits = e2e_forward(corrupt(images, c, args.severity, keys, preset="imagenet-c", rng="device"))
            correct += (logits.argmax(1) == labels).sum()
        return correct  # stays on the device until read

    def bare() -> None:
        for _ in common:
            e2e_forward(images)

    e2e_seconds = best_seconds(evaluation, device, args.budget)
    bare_seconds = best_seconds(bare, device, args.budget)
    n_images = args.batch * len(common)
    e2e_rate, bare_rate = n_images / e2e_seconds, n_images / bare_seconds
    full_minutes = IMAGENET_C_IMAGES / e2e_rate / 60
    print(f"\nend to end ({args.e2e_model}, {len(common)} corruptions x 1 batch): {e2e_rate:,.0f} images/s; "
          f"bare forward {bare_rate:,.0f} images/s; ratio {e2e_rate / bare_rate:.2f}x (goal >= 0.8); "
          f"full ImageNet-C ({IMAGENET_C_IMAGES:,} images) at this rate: {full_minutes:.1f} min (goal <= 30)")
    slower = [c for c, r in rates.items() if r < forward_rate[reference_model]]
    print(f"corruptions slower than the {reference_model} forward: {', '.join(slower) or 'none'}; "
          f"total run time {time.perf_counter() - started:.0f} s")
    if args.json:
        result = {"device": name, "torch": torch.__version__, "engine_version": ENGINE_VERSION, "batch": args.batch,
                  "size": args.size, "severity": args.severity, "generation_images_per_s": rates,
                  "forward_images_per_s": forward_rate, "e2e_model": args.e2e_model,
                  "e2e_images_per_s": e2e_rate, "bare_images_per_s": bare_rate,
                  "e2e_over_bare": e2e_rate / bare_rate, "full_imagenet_c_minutes": full_minutes,
                  "slower_than_forward": slower, "load_average": load[0]}
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
