"""`corruption`: top-1 per (corruption, severity), CE / relative CE per corruption, mCE, relative mCE, mean accuracy.

Data (`corruption_method`): ImageNet-C from disk with --imagenet-c, center-cropped at 224 px (`imagenet-c`) or
resized to another model size (`imagenet-c-resized`); otherwise the clean set (ImageNet val: a seeded 1,000-image
subset by default; the run's test set) corrupted by `eval.corruptions` at the model's size (`<clean>-c/<backend>`,
all 19 x 5, seeded per image, cached on disk). Baseline: on ImageNet the AlexNet
table (clean error 0.4348); elsewhere a model evaluated here on the same images, by default the run's gen0
(`--baseline` to choose). The baseline is named in every derived row's settings and in summary.json.
The 4 extra ImageNet-C corruptions are skipped when their folder is absent from --imagenet-c (a missing
severity of a present corruption, or a missing common corruption, is an error).
Calibration under shift: every cell has `ece`, `nll`, `brier` (`eval.context.EvalContext.measure`); their means
over the measured (corruption, severity) cells are the rows `mean_corruption_ece`, `mean_corruption_nll`,
`mean_corruption_brier` (corruption NULL).
"""
from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path
from typing import Any

from eval.context import EvalContext
import torch

from eval.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, ENGINE_VERSION, EXTRA_CORRUPTIONS, resolve_settings, rng_tag
from eval.datasets import corrupted_set, corruption_cache_dir, imagenet_c_set, seeded_subset
from eval.metrics import ALEXNET_CLEAN_ERROR, ALEXNET_NAME, SEVERITIES, alexnet_errors, corruption_summary
from eval.metrics.corruption import definition
from eval.metrics import CALIBRATION_METRICS, mean_corruption_accuracy
from eval.suites import PlanItem, register_suite
from eval.suites.clean import has_clean, measure_clean

log = logging.getLogger(__name__)
SUITE = "corruption"
OFFICIAL_SIZE = (224, 224)  # ImageNet-C and -P files are 224 x 224
IMAGENET_GENERATED_LIMIT = 1000  # default images per generated ImageNet-C cell (75 cells: 75,000 generated images)


def corruption_method(ctx: EvalContext) -> str:
    """How this model gets ImageNet-C: `crop` / `resize` (official 224-px files), or `generate` (from the clean set).

    `--imagenet-c-method auto` (the default): official files center-cropped at 224 px, resized at any other size;
    without `--imagenet-c`, generated from the clean set at the model's size (off ImageNet always). An explicit
    `crop` at another size center-crops the files (a 64-px model then sees the middle 64 x 64 of each image).
    Raises `ValueError` for a method the data cannot give.
    """
    method = ctx.options.imagenet_c_method
    official = ctx.data.imagenet_c is not None
    size = tuple(int(v) for v in ctx.meta["input_size"][1:])
    if method == "auto":
        if official:
            return "crop" if size == OFFICIAL_SIZE else "resize"
        return "generate"
    if method in ("crop", "resize") and not official:
        raise ValueError(f"--imagenet-c-method {method} reads the official ImageNet-C files: give --imagenet-c")
    if method not in ("crop", "resize", "generate"):
        raise ValueError(f"unknown --imagenet-c-method {method!r}; valid: auto, crop, resize, generate")
    return method


def generated_limit(ctx: EvalContext) -> int | None:
    """Images generated per cell: --corruption-limit, else --limit; on ImageNet at most 1,000 by default."""
    o = ctx.options
    if o.corruption_limit is not None:
        return o.corruption_limit
    if ctx.data.val is not None:
        return min(o.limit or IMAGENET_GENERATED_LIMIT, IMAGENET_GENERATED_LIMIT)
    return o.limit


def generator_settings(ctx: EvalContext) -> dict[str, Any]:
    """What makes generated images what they are (part of their identity and every row's settings): backend,
    seed, engine version, preset (--corruption-preset, default by input size) and random stream (--corruption-rng,
    default device on CUDA; `rng_tag` names the device kind, whose generators differ)."""
    o = ctx.options
    probe = torch.empty((0, *(int(v) for v in ctx.meta["input_size"])), dtype=torch.uint8, device=ctx.device)
    preset, rng = resolve_settings(probe, o.corruption_backend, o.corruption_preset, o.corruption_rng)
    return {"method": "generate", "backend": o.corruption_backend, "corruption_seed": o.seed,
            "engine_version": ENGINE_VERSION, "preset": preset, "rng": rng_tag(rng, ctx.device)}


def _names(ctx: EvalContext) -> list[str]:
    names = list(ctx.options.corruptions or ALL_CORRUPTIONS)
    unknown = [c for c in names if c not in ALL_CORRUPTIONS]
    if unknown or not names:
        raise ValueError(f"unknown corruption(s) {unknown} in --corruptions; valid: {', '.join(ALL_CORRUPTIONS)}")
    return names


def plan_corruption(ctx: EvalContext) -> PlanItem:
    """The cells (corruptions x 5 severities), images per cell, forward images and generated bytes at most."""
    names = _names(ctx)
    method = corruption_method(ctx)
    o = ctx.options
    if method != "generate":
        assert ctx.data.imagenet_c is not None  # the official files are read only when given
        root = Path(ctx.data.imagenet_c)
        present = [c for c in names if not (o.corruptions is None and c in EXTRA_CORRUPTIONS and not (root / c).is_dir())]
        first = imagenet_c_set(root, present[0], 1, ctx.meta, o.limit, o.seed, method=method)
        ctx.check_classes(first)
        cells = len(present) * len(SEVERITIES)
        return PlanItem(SUITE, first.name, cells, len(first), cells * len(first),
                        note=f"official files, method {method}")
    clean = ctx.clean_set()
    ctx.check_classes(clean)
    limit = generated_limit(ctx)
    n = len(clean) if limit is None else min(limit, len(clean))
    cells = len(names) * len(SEVERITIES)
    c, h, w = (int(v) for v in ctx.meta["input_size"])
    return PlanItem(SUITE, f"{clean.name}-c/{o.corruption_backend}", cells, n, cells * n,
                    cache_bytes=cells * n * c * h * w, note=f"generated from {n} of {len(clean)} clean images")


def corruption_cells(ctx: EvalContext) -> tuple[str, int, dict[str, list[float]], list[dict[str, Any]], str]:
    """Measure (or read back) every (corruption, severity) cell: (dataset, n, errors {c: [s1..s5]}, rows, data_id)."""
    o = ctx.options
    names = _names(ctx)
    errors: dict[str, list[float]] = {}
    rows: list[dict[str, Any]] = []
    method = corruption_method(ctx)
    if method != "generate":
        assert ctx.data.imagenet_c is not None  # the official files are read only when given
        root = Path(ctx.data.imagenet_c)
        ids: list[str] = []
        n = 0
        dataset = "imagenet-c"
        for c in names:
            if o.corruptions is None and c in EXTRA_CORRUPTIONS and not (root / c).is_dir():
                log.warning("ImageNet-C extra corruption %s not found under %s: skipped", c, root)
                continue
            for s in SEVERITIES:
                data = imagenet_c_set(root, c, s, ctx.meta, o.limit, o.seed, method=method)
                dataset, n = data.name, len(data)
                ids.append(data.identity)
                cell_rows = ctx.measure(ctx.cell(SUITE, dataset, c, s, data_id=data.identity), n, data,
                                        {"root": str(root), "method": method})
                errors.setdefault(c, []).append(1.0 - cell_rows["top1"]["value"] / 100.0)
                rows += cell_rows.values()
        return dataset, n, errors, rows, hashlib.sha1("|".join(ids).encode()).hexdigest()[:16]

    clean = ctx.clean_set()
    limit = generated_limit(ctx)
    if limit is not None and limit < len(clean):
        clean = clean.subset(seeded_subset(len(clean), limit, o.seed))
    clean = ctx.decoded(clean).materialize(o.batch_size, o.workers)
    dataset = f"{clean.name}-c/{o.corruption_backend}"
    settings = generator_settings(ctx)
    data_id = hashlib.sha1(f"{clean.identity}|{sorted(settings.items())}".encode()).hexdigest()[:16]
    folder: list[Path] = []

    def make(c: str, s: int):
        if not folder:  # the content digest is computed once, and only when something must be generated
            folder.append(corruption_cache_dir(clean, o.corruption_backend, o.seed, o.cache_dir, settings["preset"],
                                               settings["rng"]))
        return corrupted_set(clean, c, s, o.corruption_backend, o.seed, directory=folder[0], progress=o.progress,
                             preset=settings["preset"], rng=o.corruption_rng, device=ctx.device)

    n = len(clean)
    for c in names:
        for s in SEVERITIES:
            cell_rows = ctx.measure(ctx.cell(SUITE, dataset, c, s, data_id=data_id), n,
                                    functools.partial(make, c, s), {**settings, "generated_from": clean.name})
            errors.setdefault(c, []).append(1.0 - cell_rows["top1"]["value"] / 100.0)
            rows += cell_rows.values()
    return dataset, n, errors, rows, data_id


def _clean_top1(ctx: EvalContext) -> dict[str, Any] | None:
    """The clean cell's top-1 row (stored or measured), or None without a clean set."""
    return measure_clean(ctx)["top1"] if has_clean(ctx) else None


def _clean_error(ctx: EvalContext) -> float | None:
    row = _clean_top1(ctx)
    return None if row is None else 1.0 - row["value"] / 100.0


@register_suite(SUITE, supports=lambda ctx: ctx.data.imagenet_c is not None or has_clean(ctx),
                requirement="ImageNet needs the ImageNet-C root (--imagenet-c) or --val to generate it from", order=10,
                plan=plan_corruption)
def corruption(ctx: EvalContext) -> list[dict[str, Any]]:
    """Every cell, then the derived CE figures against the baseline."""
    dataset, n, errors, rows, data_id = corruption_cells(ctx)
    clean_row = _clean_top1(ctx)
    clean_error = None if clean_row is None else 1.0 - clean_row["value"] / 100.0
    clean_cell = None if clean_row is None else {k: clean_row.get(k) for k in ("suite", "dataset", "n", "data_id")}
    method = corruption_method(ctx)
    on_imagenet = method != "generate" or ctx.data.val is not None
    base: dict[str, list[float]] | None
    base_clean: float | None
    base_name: str | None
    if on_imagenet:
        base, base_clean, base_name = alexnet_errors(), ALEXNET_CLEAN_ERROR, ALEXNET_NAME
    else:
        bctx = ctx.baseline_context
        if bctx is None:
            base = base_clean = base_name = None
            log.warning("%s: no CE baseline (no gen0 beside the checkpoint and no --baseline): CE/mCE not computed",
                        ctx.model_name)
        else:
            base_name = bctx.model_name
            base = errors if bctx is ctx else corruption_cells(bctx)[2]
            base_clean = _clean_error(bctx)
    settings = ctx.settings(baseline=base_name, baseline_clean_error=base_clean, clean_error=clean_error,
                            method=method, backend=ctx.options.corruption_backend if method == "generate" else None)
    if on_imagenet and method != "crop":
        settings["baseline_note"] = (f"the AlexNet errors were measured on the official 224-px ImageNet-C; these "
                                     f"images are {'resized' if method == 'resize' else 'generated'}, so CE and mCE "
                                     "against them are approximate")
    derived: list[dict[str, Any]] = []
    cell = ctx.cell(SUITE, dataset, data_id=data_id)

    def defined(metric: str, corruptions: list[str], **extra: Any) -> dict[str, Any]:
        """The row settings plus the metric's complete definition (`eval.metrics.corruption.definition`)."""
        return {**settings, **extra, "definition": definition(metric, corruptions, base_name, base, base_clean,
                                                               clean_cell)}

    if base is not None:
        summary = corruption_summary(errors, clean_error, base, base_clean)
        for c, v in summary["ce"].items():
            derived.append(ctx.cell(SUITE, dataset, c, data_id=data_id).row("ce", v, n, defined("ce", [c])))
        for c, v in (summary["relative_ce"] or {}).items():
            derived.append(ctx.cell(SUITE, dataset, c, data_id=data_id).row("relative_ce", v, n,
                                                                             defined("relative_ce", [c])))
        for metric in ("mce", "relative_mce"):
            if summary[metric] is not None:
                derived.append(cell.row(metric, summary[metric], n, defined(metric, list(CORRUPTIONS))))
    if all(c in errors for c in CORRUPTIONS):
        derived.append(cell.row("mean_corruption_top1", mean_corruption_accuracy(errors, CORRUPTIONS), n,
                                defined("mean_corruption_top1", list(CORRUPTIONS))))
    for metric in CALIBRATION_METRICS:  # calibration under shift: the mean over every measured cell
        measured = [r for r in rows if r["metric"] == metric and r["severity"] is not None]
        if measured:
            names = list(dict.fromkeys(r["corruption"] for r in measured))
            derived.append(cell.row(f"mean_corruption_{metric}", sum(r["value"] for r in measured) / len(measured),
                                    n, defined("mean_corruption_cells", names, cells=len(measured))))
    ctx.store.write(derived)
    return rows + derived
