"""Example images for the report: one clean test image under every corruption and every perturbation sequence.

`write_examples` saves `<out>/examples.npz` (the contract in docs/contracts.md), which `nst-report` draws as the
strip of corrupted images and the strip of frames per perturbation. The images are made by the same generators,
keys and seed as the generated -C / -P sets, so they show what the models saw for that image (with official
ImageNet-C / -P files, the same corruptions generated from the val image).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from eval.context import EvalContext
from eval.corruptions import ALL_CORRUPTIONS, corrupt
from eval.corruptions.perturbations import example_frames
from eval.datasets import DataError
from eval.corruptions.catalog import ALL_PERTURBATIONS
from nst_common.files import write_arrays

log = logging.getLogger(__name__)

EXAMPLES_FILE = "examples.npz"
EXAMPLE_SEVERITY = 3  # the middle of the five ImageNet-C severities
FRAME_COLUMNS = 8  # frames shown per perturbation, evenly spaced over the sequence


def write_examples(out: str | os.PathLike, ctx: EvalContext, suites: Sequence[str], force: bool = False) -> Path | None:
    """Write `<out>/examples.npz` for the suites run (corruption -> `images`, perturbation -> `frames`).

    Kept when it exists (every model of a run shows the same image) unless `force`; None when there is nothing to
    show (neither suite ran, or ImageNet mode without `--val` has no clean image to corrupt).
    """
    path = Path(out) / EXAMPLES_FILE
    wanted = {"corruption", "perturbation"} & set(suites)
    if not wanted:
        return None
    if path.is_file() and not force:
        return path
    try:
        clean = ctx.clean_set()
    except DataError as exc:
        log.info("no example images: %s", exc)
        return None
    if len(clean) == 0:
        return None
    image = clean.subset(torch.tensor([0])).materialize()
    pixels, key, label = image.pixels[0], int(image.indices[0]), int(image.labels[0])
    seed = ctx.options.seed
    classes = ctx.meta.get("classes") or []
    name = classes[label] if label < len(classes) else f"class {label}"
    arrays: dict[str, np.ndarray] = {
        "source": np.array(f"{clean.name} image {key} ({name}), seed {seed}, made by nst-eval's generators"),
    }
    if "corruption" in wanted:
        corruptions = list(ctx.options.corruptions or ALL_CORRUPTIONS)
        corrupted = [corrupt(pixels[None], c, EXAMPLE_SEVERITY, [key], seed, ctx.options.corruption_backend,
                             preset=ctx.options.corruption_preset)[0] for c in corruptions]
        arrays["images"] = torch.stack([pixels, *corrupted]).numpy()
        arrays["titles"] = np.array(["clean", *(f"{c} s{EXAMPLE_SEVERITY}" for c in corruptions)])
    if "perturbation" in wanted:
        perturbations = list(ctx.options.perturbations or ALL_PERTURBATIONS)
        frames, index = example_frames(pixels, perturbations, FRAME_COLUMNS, key, seed)
        arrays.update(frames=frames.numpy(), frame_index=np.array(index, dtype=np.int64),
                      perturbations=np.array(perturbations))
    write_arrays(path, arrays)
    return path
