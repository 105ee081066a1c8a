"""Clean evaluation of a folder of real 224-px JPEGs: `eval.evaluate(..., "clean")` vs a timm-validate-style loop.

    .venv/bin/python benchmarks/bench_eval_folder.py [--images 512] [--workers 2] [--arch resnet18] [--repeats 2]

The folder is made here from scikit-image's sample photos (random crops and flips saved as JPEG, quality 90, in 10
wnid folders: real photographs, ImageNet's layout). Baseline = what timm's validate.py does: an ImageFolder-style
dataset, `timm.data.create_transform` (the model's eval transform, normalised), a DataLoader with the same workers
and batch size, and `model(x)` under inference_mode. Project = `eval.evaluate(model, meta, "clean",
data=DataSources(val=folder))` with the same workers and batch size (listing, class mapping, identity, top-1/5,
per-image correctness, calibration, the in-memory store). Ratio = baseline time / project time (goal >= 0.9).
Repeats alternate; the best of each is kept. Prints the machine's load average before and after.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from imagenet_standin import WNIDS, photos  # noqa: E402

WNID_FOLDERS = list(WNIDS) + ["n01496331", "n01498041", "n01514668", "n01514859", "n01518878"]


def make_folder(root: Path, images: int, seed: int = 0) -> Path:
    """`images` JPEGs (random 300-500 px crops of the sample photos, random flips) in 10 wnid folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sources = [p for p in photos() if min(p.shape[:2]) >= 300]
    for k in range(images):
        photo = sources[k % len(sources)]
        h, w = photo.shape[:2]
        ch, cw = int(rng.integers(280, min(h, 500) + 1)), int(rng.integers(280, min(w, 500) + 1))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = photo[top:top + ch, left:left + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        folder = root / WNID_FOLDERS[k % len(WNID_FOLDERS)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"ILSVRC2012_val_{k:08d}.JPEG", quality=90)
    return root


class _Files(torch.utils.data.Dataset):
    def __init__(self, root: Path, transform) -> None:
        self.files = sorted(root.rglob("*.JPEG"))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.files[i]) as img:
            return self.transform(img.convert("RGB")), 0


def baseline(model, folder: Path, workers: int, batch: int) -> float:
    """timm validate.py's loop: dataset + create_transform (normalised) + DataLoader + model(x)."""
    import timm

    cfg = timm.data.resolve_model_data_config(model)
    loader = torch.utils.data.DataLoader(_Files(folder, timm.data.create_transform(**cfg, is_training=False)),
                                         batch_size=batch, num_workers=workers)
    start = time.perf_counter()
    with torch.inference_mode():
        for x, _ in loader:
            model(x).argmax(1)
    return time.perf_counter() - start


def project(model, meta, folder: Path, workers: int, batch: int) -> float:
    import eval
    from eval.store import ResultStore

    start = time.perf_counter()
    eval.evaluate(model, meta, "clean", data=eval.DataSources(val=folder), store=ResultStore(None), progress=False,
                  workers=workers, batch_size=batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--arch", default="resnet18.a1_in1k")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from nst_core import load_model

    model, meta = load_model(f"timm:{args.arch}")
    inner = model.model
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp) / "val", args.images)
        base, ours = [], []
        for _ in range(args.repeats):
            base.append(baseline(inner, folder, args.workers, args.batch_size))
            ours.append(project(model, meta, folder, args.workers, args.batch_size))
    b, o = min(base), min(ours)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; load average before "
          f"{'/'.join(f'{v:.1f}' for v in load_before)}, after {'/'.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"{args.images} JPEGs, {args.arch} at {meta['input_size'][1]} px, {args.workers} workers, batch "
          f"{args.batch_size}: baseline (timm validate loop) {b:.2f} s, eval.evaluate clean {o:.2f} s, "
          f"ratio baseline/project {b / o:.3f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
