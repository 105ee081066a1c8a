"""`clean`: top-1 / top-5 accuracy on the clean test set (the run's test set, or ImageNet val with --val)."""
from __future__ import annotations

from typing import Any

from eval.context import EvalContext
from eval.suites import PlanItem, register_suite


def measure_clean(ctx: EvalContext) -> dict[str, dict[str, Any]]:
    """The clean cell's rows {metric: row} (stored or computed); other suites use it for relative figures."""
    data = ctx.clean_set()
    return ctx.measure(ctx.cell("clean", data.name, data_id=data.identity), len(data), data,
                       {"root": data.info.get("root")})


def has_clean(ctx: EvalContext) -> bool:
    """Whether a clean test set is there (`EvalContext.has_clean_set`)."""
    return ctx.has_clean_set()


NEEDS_VAL = "needs --val (an ImageFolder val tree); only a project checkpoint carries its own test set"


def plan_clean(ctx: EvalContext) -> PlanItem:
    """One cell on the clean set; its classes must fit the model."""
    data = ctx.clean_set()
    ctx.check_classes(data)
    return PlanItem("clean", data.name, 1, len(data), len(data))


@register_suite("clean", supports=has_clean, requirement=NEEDS_VAL, order=0, plan=plan_clean)
def clean(ctx: EvalContext) -> list[dict[str, Any]]:
    """Clean top-1 / top-5."""
    return list(measure_clean(ctx).values())
