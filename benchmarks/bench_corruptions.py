"""Corruption generation speed: imagecorruptions reference vs the batched torch engine, ms per image.

Usage: python benchmarks/bench_corruptions.py [--size 224] [--batch 64] [--threads 2] [--ref-images 4]
       [--severities 1 2 3 4 5] [--corruptions ...] [--device cpu] [--skip-reference]
       [--rng reference device] [--preset imagenet-c]
The speed table times, in one run, the reference backend and the torch engine in each --rng mode (default both:
'reference' = the reference's NumPy draws, 'device' = per-image torch generators), prints each mode's speed-up per
corruption, the geometric mean over the 15 common corruptions, and the load average (os.getloadavg) before and
after, since the machine may be shared.
       python benchmarks/bench_corruptions.py --model CHECKPOINT_DIR [--images 1000] [--compare backend|rng|seed]
       [--seed-pair 0 1]
       python benchmarks/bench_corruptions.py --fidelity 4 [--size 224]
The --fidelity form prints the PSNR (dB) between the two backends per corruption and severity on that many photos.
The --model form prints a trained model's top-1 error on its own test set corrupted by each backend (or, with
--compare rng, by the torch engine in each random-number mode; with --compare seed, by the torch engine's reference
mode with corruption seeds 0 and 1 or --seed-pair A B, i.e. how far one draw of the noise moves a cell), per
corruption and severity, the difference, and how many random cells differ by more than 1.5 points.
Images are skimage sample photos resized to the size (no downloads). Prints a markdown table.
OMP_WAIT_POLICY defaults to PASSIVE here: on cores shared with other jobs, spin-waiting OpenMP threads stall every
small torch op (measured 5-10x slower at 2 threads); set it in the environment to override.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the torch import

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from skimage import data  # noqa: E402
from skimage.transform import resize  # noqa: E402

from eval.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, corrupt  # noqa: E402

# Corruptions that draw no random numbers (identical in every rng mode and seed).
DETERMINISTIC = ("defocus_blur", "zoom_blur", "contrast", "brightness", "saturate", "pixelate", "jpeg_compression",
                 "gaussian_blur")


def sample_images(n: int, size: int) -> torch.Tensor:
    """n uint8 [3, size, size] images cycled from skimage's colour sample photos."""
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]
    out = [(resize(photos[i % len(photos)], (size, size), anti_aliasing=True) * 255).astype(np.uint8)
           for i in range(n)]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def ms_per_image(images: torch.Tensor, corruption: str, severities: list[int], backend: str,
                 rng: str | None = None, preset: str | None = None) -> tuple[float, float]:
    """(wall, process CPU) milliseconds per image of corrupting ``images`` at each severity, one call per severity."""
    keys = list(range(images.shape[0]))
    if images.device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    for s in severities:
        if backend == "imagecorruptions":
            corrupt(images, corruption, s, keys, backend=backend)
        else:
            corrupt(images, corruption, s, keys, backend=backend, preset=preset, rng=rng)
    if images.device.type == "cuda":
        torch.cuda.synchronize()
    count = len(severities) * images.shape[0]
    return (time.perf_counter() - wall) * 1000 / count, (time.process_time() - cpu) * 1000 / count


def fidelity_table(n: int, size: int) -> None:
    """Print the PSNR (dB) between torch and reference outputs per corruption and severity on n sample photos."""
    images = sample_images(n, size)
    keys = list(range(n))
    print(f"# PSNR torch vs imagecorruptions, {n} photos at {size}x{size}, keys 0-{n - 1}, seed 0")
    print("| corruption | s1 | s2 | s3 | s4 | s5 | min |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in ALL_CORRUPTIONS:
        values = []
        for s in range(1, 6):
            ref = corrupt(images, name, s, keys, backend="imagecorruptions").double()
            mse = float(((corrupt(images, name, s, keys).double() - ref) ** 2).mean())
            values.append(float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse))
        cells = ["exact" if v == float("inf") else f"{v:.1f}" for v in values + [min(values)]]
        print(f"| {name} | {' | '.join(cells)} |", flush=True)


def model_error_table(checkpoint: str, n: int, batch: int, compare: str = "backend",
                      preset: str | None = None, seed_pair: tuple[int, int] = (0, 1)) -> None:
    """Print top-1 error (%) per corruption and severity for two ways of corrupting, and their difference in points.

    compare="backend": the imagecorruptions reference vs the torch engine (imagenet-c, reference draws);
    compare="rng": the torch engine's 'reference' vs 'device' random-number modes, in ``preset`` (None: the default
    preset of the test images' size); compare="seed": the torch engine's 'reference' mode with the two corruption
    seeds of ``seed_pair``, same preset rule (the spread a stochastic engine shows against itself).
    """
    from nst_core import load_model
    from nst_core.data import load_test_set

    from eval.corruptions import resolve_settings

    model, meta = load_model(checkpoint)
    test = load_test_set(meta["config"]["data"], meta["input_size"])
    images, labels = test.images[:n], test.labels[:n]
    keys = list(range(len(labels)))
    ways: dict[str, dict[str, Any]]
    if compare == "backend":
        ways = {"reference": dict(backend="imagecorruptions"), "torch": dict(backend="torch", preset="imagenet-c")}
    elif compare == "rng":
        preset = resolve_settings(images, preset=preset)[0]
        ways = {"reference mode": dict(preset=preset, rng="reference"), "device mode": dict(preset=preset,
                                                                                             rng="device")}
    else:
        preset = resolve_settings(images, preset=preset)[0]
        ways = {f"seed {k}": dict(preset=preset, rng="reference", seed=k) for k in seed_pair}
    (a_name, a_kw), (b_name, b_kw) = ways.items()

    def error(x: torch.Tensor) -> float:
        with torch.no_grad():
            pred = torch.cat([model(x[i:i + batch].float() / 255).argmax(1) for i in range(0, len(x), batch)])
        return 100.0 * float((pred != labels).float().mean())

    print(f"# {meta['name']} (sha256 {meta['sha256'][:12]}), {test.name} first {len(labels)} images at "
          f"{tuple(images.shape[1:])}, clean top-1 error {error(images):.2f} %; {a_name}: {a_kw}; {b_name}: {b_kw}")
    print(f"| corruption | {a_name} error s1..s5 (%) | {b_name} error s1..s5 (%) | {b_name} - {a_name} (points) "
          "| max abs |")
    print("|---|---|---|---|---:|")
    worst, beyond, random_cells = 0.0, [], 0
    for name in ALL_CORRUPTIONS:
        ref = [error(corrupt(images, name, s, keys, **a_kw)) for s in range(1, 6)]
        ours = [error(corrupt(images, name, s, keys, **b_kw)) for s in range(1, 6)]
        diff = [b - a for a, b in zip(ref, ours)]
        worst = max(worst, max(abs(d) for d in diff))
        if name not in DETERMINISTIC:
            random_cells += 5
            # errors are multiples of 100 / n points: a tolerance keeps exactly 1.5 (within) from rounding beyond
            beyond += [f"{name} s{k + 1} ({d:+.1f})" for k, d in enumerate(diff) if abs(d) > 1.5 + 1e-6]
        print(f"| {name} | {' '.join(f'{v:.1f}' for v in ref)} | {' '.join(f'{v:.1f}' for v in ours)} "
              f"| {' '.join(f'{d:+.1f}' for d in diff)} | {max(abs(d) for d in diff):.1f} |", flush=True)
    print(f"largest |difference| over the {len(ALL_CORRUPTIONS) * 5} cells: {worst:.2f} points; random cells "
          f"beyond 1.5 points: {len(beyond)} of {random_cells}: {', '.join(beyond) or 'none'}")


def seed_spread(checkpoint: str, n: int, cells: list[str], seeds: int, preset: str | None = None) -> None:
    """Print, per 'corruption:severity' cell, a trained model's top-1 error over ``seeds`` corruption seeds in each
    rng mode: mean, standard deviation and range (how much one draw of the noise moves the error)."""
    from nst_core import load_model
    from nst_core.data import load_test_set

    model, meta = load_model(checkpoint)
    test = load_test_set(meta["config"]["data"], meta["input_size"])
    images, labels = test.images[:n], test.labels[:n]
    keys = list(range(len(labels)))

    def error(x: torch.Tensor) -> float:
        with torch.no_grad():
            return 100.0 * float((model(x.float() / 255).argmax(1) != labels).float().mean())

    print(f"# {meta['name']}, {test.name} first {len(labels)} images, seeds 0-{seeds - 1}, "
          f"preset {preset or 'default'}")
    print("| cell | reference mean +- sd (range) | device mean +- sd (range) |")
    print("|---|---|---|")
    for cell in cells:
        name, severity = cell.split(":")
        stats = []
        for rng in ("reference", "device"):
            e = np.array([error(corrupt(images, name, int(severity), keys, seed=k, preset=preset, rng=rng))
                          for k in range(seeds)])
            stats.append(f"{e.mean():.2f} +- {e.std(ddof=1):.2f} ({e.min():.1f}-{e.max():.1f})")
        print(f"| {name} s{severity} | {stats[0]} | {stats[1]} |", flush=True)


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ref-images", type=int, default=4, help="images per severity timed with the reference")
    parser.add_argument("--severities", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--corruptions", nargs="+", default=list(ALL_CORRUPTIONS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--rng", nargs="+", default=["reference", "device"], choices=["reference", "device"],
                        help="torch engine random-number modes to time")
    parser.add_argument("--preset", default=None, help="corruption preset of the torch engine (default imagenet-c, "
                        "the only one the reference computes)")
    parser.add_argument("--model", help="checkpoint directory: print the model-error table instead")
    parser.add_argument("--images", type=int, default=1000, help="test images for --model")
    parser.add_argument("--compare", choices=["backend", "rng", "seed"], default="backend",
                        help="--model: reference backend vs torch engine, the engine's reference vs device mode, or "
                        "the engine's reference mode with corruption seed 0 vs seed 1 (--seed-pair)")
    parser.add_argument("--seed-pair", type=int, nargs=2, default=[0, 1], metavar=("A", "B"),
                        help="--compare seed: the two corruption seeds")
    parser.add_argument("--fidelity", type=int, metavar="N", help="print the PSNR table on N photos instead")
    parser.add_argument("--spread", nargs="+", metavar="CORRUPTION:SEVERITY",
                        help="--model: the error's spread over --seeds corruption seeds in both rng modes instead")
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.fidelity:
        fidelity_table(args.fidelity, args.size)
        return
    if args.model and args.spread:
        seed_spread(args.model, args.images, args.spread, args.seeds, args.preset)
        return
    if args.model:
        if args.compare == "seed" and args.seed_pair[0] == args.seed_pair[1]:
            parser.error(f"--seed-pair needs two different seeds, got {args.seed_pair}")
        model_error_table(args.model, args.images, args.batch, args.compare, args.preset,
                          (args.seed_pair[0], args.seed_pair[1]))
        return
    images = sample_images(args.batch, args.size).to(args.device)
    preset = args.preset or "imagenet-c"
    for rng in args.rng:  # warm-up, untimed: imports and one-off caches (frost photos, Poisson tables, filters)
        for name in args.corruptions:
            for s in args.severities:
                corrupt(images[:1], name, s, [0], preset=preset, rng=rng)
    load_before = os.getloadavg()
    print(f"# {args.size}x{args.size}, batch {args.batch}, {torch.get_num_threads()} threads, device {args.device}, "
          f"preset {preset}, severities {args.severities}, reference on {args.ref_images} images; "
          f"{platform.machine()}, {os.cpu_count()} visible cores, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
          f"torch {torch.__version__}; load average at start {load_before[0]:.2f} {load_before[1]:.2f} "
          f"{load_before[2]:.2f}")
    modes = " | ".join(f"torch {m} ms/img | speed-up {m}" for m in args.rng)
    print(f"| corruption | reference ms/img | {modes} | reference CPU ms/img | "
          + " | ".join(f"torch {m} CPU ms/img" for m in args.rng) + " |")
    print("|---|---:|" + "---:|---:|" * len(args.rng) + "---:|" + "---:|" * len(args.rng))
    ratios: dict[str, list[float]] = {m: [] for m in args.rng}
    cpu_ratios: dict[str, list[float]] = {m: [] for m in args.rng}
    sums = {m: 0.0 for m in args.rng}
    ref_sum, slower = 0.0, {m: [] for m in args.rng}
    nan = (float("nan"), float("nan"))
    for name in args.corruptions:
        ours = {m: ms_per_image(images, name, args.severities, "torch", m, preset) for m in args.rng}
        ref_ms = nan if args.skip_reference else ms_per_image(
            images[:args.ref_images].cpu(), name, args.severities, "imagecorruptions")
        cells = " | ".join(f"{ours[m][0]:.2f} | {ref_ms[0] / ours[m][0]:.1f}x" for m in args.rng)
        cpu_cells = " | ".join(f"{ours[m][1]:.2f}" for m in args.rng)
        print(f"| {name} | {ref_ms[0]:.1f} | {cells} | {ref_ms[1]:.1f} | {cpu_cells} |", flush=True)
        if name in CORRUPTIONS:
            ref_sum += ref_ms[0]
            for m in args.rng:
                ratios[m].append(ref_ms[0] / ours[m][0])
                cpu_ratios[m].append(ref_ms[1] / ours[m][1])
                sums[m] += ours[m][0]
                if ours[m][0] > ref_ms[0]:
                    slower[m].append(name)
    k = sum(c in CORRUPTIONS for c in args.corruptions)
    load_after = os.getloadavg()
    if k:
        for m in args.rng:
            geometric = float(np.exp(np.mean(np.log(ratios[m]))))
            cpu_geometric = float(np.exp(np.mean(np.log(cpu_ratios[m]))))
            print(f"rng {m}: mean of the {k} common: reference {ref_sum / k:.1f} ms/img, torch {sums[m] / k:.2f} "
                  f"ms/img, ratio of means {ref_sum / sums[m]:.1f}x, geometric mean of per-corruption speed-ups "
                  f"{geometric:.2f}x (of process CPU time: {cpu_geometric:.2f}x), slower than the reference: "
                  f"{', '.join(slower[m]) or 'none'}")
    print(f"load average at end {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")


if __name__ == "__main__":
    main()
