"""`shifts`: natural distribution shifts timm publishes for every model: ImageNet-R (200-class logit mask from
timm's `imagenet_r_indices.txt`), ImageNet-Sketch (1000 classes) and one ImageNetV2 variant (numeric class
folders; the variant read from the root's folder name). One cell per dataset given, each with top-1, top-5 and
calibration (ece, nll, brier); part of `robustness` when any of `--imagenet-r`, `--imagenet-sketch`,
`--imagenet-v2` is given."""
from __future__ import annotations

from typing import Any, Callable

from eval.context import EvalContext
from eval.datasets import imagenet_r_set, imagenet_sketch_set, imagenet_v2_set
from eval.suites import PlanItem, register_suite
from nst_core.imagesets import ImageSet

SUITE = "shifts"


def _readers(ctx: EvalContext) -> list[tuple[str, Any, Callable[..., ImageSet], dict[str, Any]]]:
    d = ctx.data
    return [(name, root, reader, extra) for name, root, reader, extra in (
        ("imagenet-r", d.imagenet_r, imagenet_r_set, {"mask": "timm/data/_info/imagenet_r_indices.txt"}),
        ("imagenet-sketch", d.imagenet_sketch, imagenet_sketch_set, {}),
        ("imagenet-v2", d.imagenet_v2, imagenet_v2_set, {}),
    ) if root is not None]


def shift_sets(ctx: EvalContext) -> list[tuple[ImageSet, dict[str, Any]]]:
    """Every given shift dataset (folder listings only: cheap) with the settings its cell records."""
    o = ctx.options
    out = []
    for _, root, reader, extra in _readers(ctx):
        data = reader(root, ctx.meta, o.limit, o.seed)
        settings = {"root": str(root), **extra}
        if "variant" in data.info:
            settings["variant"] = data.info["variant"]
        out.append((data, settings))
    return out


def plan_shifts(ctx: EvalContext) -> PlanItem:
    """One cell per dataset given; each must fit the model (ImageNet-1k's 1000 logits)."""
    sets = shift_sets(ctx)
    for data, _ in sets:
        ctx.check_classes(data)
    images = sum(len(data) for data, _ in sets)
    return PlanItem(SUITE, ",".join(data.name for data, _ in sets), len(sets), max(len(d) for d, _ in sets), images,
                    note=", ".join(f"{data.name} {len(data)}" for data, _ in sets))


@register_suite(SUITE, supports=lambda ctx: bool(_readers(ctx)), order=22, plan=plan_shifts,
                requirement="give --imagenet-r, --imagenet-sketch or --imagenet-v2 (an ImageFolder root)")
def shifts(ctx: EvalContext) -> list[dict[str, Any]]:
    """Top-1 / top-5 / calibration on each given shift dataset."""
    rows: list[dict[str, Any]] = []
    for data, settings in shift_sets(ctx):
        rows += ctx.measure(ctx.cell(SUITE, data.name, data_id=data.identity), len(data), data, settings).values()
    return rows
