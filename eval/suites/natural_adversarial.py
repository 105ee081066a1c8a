"""`natural-adversarial`: ImageNet-A top-1 / top-5 with the 200-class logit mask (timm's index list)."""
from __future__ import annotations

from typing import Any

from eval.context import EvalContext
from eval.datasets import imagenet_a_set
from eval.suites import PlanItem, register_suite


def plan_natural_adversarial(ctx: EvalContext) -> PlanItem:
    """One cell on ImageNet-A; the model needs ImageNet-1k's logits (1000 classes)."""
    assert ctx.data.imagenet_a is not None  # the suite runs only with --imagenet-a (supports=)
    data = imagenet_a_set(ctx.data.imagenet_a, ctx.meta, ctx.options.limit, ctx.options.seed)
    ctx.check_classes(data)
    return PlanItem("natural-adversarial", data.name, 1, len(data), len(data))


@register_suite("natural-adversarial", supports=lambda ctx: ctx.data.imagenet_a is not None,
                requirement="give the ImageNet-A root with --imagenet-a", order=20, plan=plan_natural_adversarial)
def natural_adversarial(ctx: EvalContext) -> list[dict[str, Any]]:
    """ImageNet-A accuracy of a 1000-class model, logits restricted to A's 200 classes."""
    o = ctx.options
    assert ctx.data.imagenet_a is not None
    data = imagenet_a_set(ctx.data.imagenet_a, ctx.meta, o.limit, o.seed)
    rows = ctx.measure(ctx.cell("natural-adversarial", data.name, data_id=data.identity), len(data), data,
                       {"root": str(ctx.data.imagenet_a), "mask": "timm/data/_info/imagenet_a_indices.txt"})
    return list(rows.values())
