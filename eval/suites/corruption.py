"""`corruption`: top-1 per (corruption, severity), CE / relative CE per corruption, mCE, relative mCE, mean accuracy.

Data: ImageNet-C from disk with --imagenet-c (center crop only); otherwise the run's test set corrupted on the
fly by `eval.corruptions` (all 19 x 5, seeded per image, cached on disk). Baseline: on ImageNet the AlexNet
table (clean error 0.4348); elsewhere a model evaluated here on the same images, by default the run's gen0
(`--baseline` to choose). The baseline is named in every derived row's settings and in summary.json.
The 4 extra ImageNet-C corruptions are skipped when their folder is absent from --imagenet-c (a missing
severity of a present corruption, or a missing common corruption, is an error).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from eval.context import EvalContext
from eval.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, EXTRA_CORRUPTIONS
from eval.datasets import corrupted_set, corruption_cache_dir, imagenet_c_set, imagenet_classes
from eval.metrics import ALEXNET_CLEAN_ERROR, ALEXNET_NAME, SEVERITIES, alexnet_errors, corruption_summary
from eval.metrics import mean_corruption_accuracy
from eval.suites import register_suite
from eval.suites.clean import has_clean, measure_clean

log = logging.getLogger(__name__)
SUITE = "corruption"


def corruption_cells(ctx: EvalContext) -> tuple[str, int, dict[str, list[float]], list[dict[str, Any]]]:
    """Measure (or read back) every (corruption, severity) cell: (dataset, n, errors {c: [s1..s5]}, rows)."""
    o = ctx.options
    names = list(o.corruptions or ALL_CORRUPTIONS)
    errors: dict[str, list[float]] = {}
    rows: list[dict[str, Any]] = []
    n = 0
    if ctx.data.imagenet_c is not None:
        root = Path(ctx.data.imagenet_c)
        classes = imagenet_classes(ctx.data.val) if ctx.data.val is not None else None
        dataset = "imagenet-c"
        for c in names:
            if o.corruptions is None and c in EXTRA_CORRUPTIONS and not (root / c).is_dir():
                log.warning("ImageNet-C extra corruption %s not found under %s: skipped", c, root)
                continue
            for s in SEVERITIES:
                data = imagenet_c_set(root, c, s, ctx.meta, classes, o.limit, o.seed)
                n = len(data)
                cell_rows = ctx.measure(ctx.cell(SUITE, dataset, c, s), n, data, {"root": str(root)})
                errors.setdefault(c, []).append(1.0 - cell_rows["top1"]["value"] / 100.0)
                rows += cell_rows.values()
        return dataset, n, errors, rows

    clean = ctx.clean_set().materialize()
    dataset = f"{clean.name}-c/{o.corruption_backend}"
    folder: list[Path] = []

    def make(c: str, s: int):
        if not folder:  # the content digest is computed once, and only when something must be generated
            folder.append(corruption_cache_dir(clean, o.corruption_backend, o.seed, o.cache_dir))
        return corrupted_set(clean, c, s, o.corruption_backend, o.seed, directory=folder[0], progress=o.progress)

    n = len(clean)
    for c in names:
        for s in SEVERITIES:
            cell_rows = ctx.measure(ctx.cell(SUITE, dataset, c, s), n, lambda c=c, s=s: make(c, s),
                                    {"backend": o.corruption_backend, "corruption_seed": o.seed})
            errors.setdefault(c, []).append(1.0 - cell_rows["top1"]["value"] / 100.0)
            rows += cell_rows.values()
    return dataset, n, errors, rows


def _clean_error(ctx: EvalContext) -> float | None:
    return 1.0 - measure_clean(ctx)["top1"]["value"] / 100.0 if has_clean(ctx) else None


@register_suite(SUITE, supports=lambda ctx: ctx.data.imagenet_c is not None or not ctx.data.is_imagenet,
                requirement="ImageNet needs the ImageNet-C root (--imagenet-c)", order=10)
def corruption(ctx: EvalContext) -> list[dict[str, Any]]:
    """Every cell, then the derived CE figures against the baseline."""
    dataset, n, errors, rows = corruption_cells(ctx)
    clean_error = _clean_error(ctx)
    if ctx.data.is_imagenet:
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
                            backend=None if ctx.data.imagenet_c is not None else ctx.options.corruption_backend)
    derived: list[dict[str, Any]] = []
    cell = ctx.cell(SUITE, dataset)
    if base is not None:
        summary = corruption_summary(errors, clean_error, base, base_clean)
        for c, v in summary["ce"].items():
            derived.append(ctx.cell(SUITE, dataset, c).row("ce", v, n, settings))
        for c, v in (summary["relative_ce"] or {}).items():
            derived.append(ctx.cell(SUITE, dataset, c).row("relative_ce", v, n, settings))
        for metric in ("mce", "relative_mce"):
            if summary[metric] is not None:
                derived.append(cell.row(metric, summary[metric], n, settings))
    if all(c in errors for c in CORRUPTIONS):
        derived.append(cell.row("mean_corruption_top1", mean_corruption_accuracy(errors), n, settings))
    ctx.store.write(derived)
    return rows + derived
