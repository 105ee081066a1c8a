"""The suite registry: `nst-eval --suite NAME` runs `SUITES[NAME]`; `robustness` runs every suite the data supports.

How to add a suite (ImageNet-P does it this way): put a module in `eval/suites/` (it is imported automatically)
and decorate a function taking an `eval.context.EvalContext` and returning result rows (dicts with the columns of
`eval.store.RESULT_COLUMNS`, as made by `Cell.row`):

    from eval.suites import register_suite

    @register_suite("perturbation", supports=lambda ctx: ctx.data.imagenet_p is not None, order=50)
    def perturbation(ctx):
        data = ctx.clean_set()                                    # or read ctx.data.imagenet_p
        cell = ctx.cell("perturbation", "imagenet-p", corruption="gaussian_noise")
        if (rows := ctx.stored(cell, n)) is None:                 # resume: skip what is stored unless --force
            ...                                                   # ctx.model, ctx.device, ctx.autocast(), ctx.options
            rows = {m: cell.row(m, value, n, ctx.settings(...)) for m, value in ...}
            ctx.store.write(rows.values())                        # one transaction per cell
        return list(rows.values())

- `supports(ctx) -> bool`: whether the suite applies to this model and data (e.g. an ImageNet root was given);
  `robustness` runs, in `order`, every registered suite with `in_robustness=True` whose `supports` is true.
  A suite asked for by name that does not support the data raises an error saying what is missing.
- `plan(ctx) -> PlanItem`: what the suite will do (cells, images per cell, forward-pass images, cache bytes),
  building only what is cheap (folder listings); raising `ValueError` (or `DataError` / `EvaluationError`)
  here means the model and data do not fit. `resolve_suites` plans every suite before any runs: under
  `robustness` a suite that cannot run is skipped with its reason (listed in summary.json), a suite asked for by
  name is an error, so nothing is measured before every argument and folder has been checked.
- Models on [0, 1] images, normalising inside; images from `ctx.clean_set()` or `eval.datasets` are uint8
  batches (`ImageSet.batches`); `ctx.measure(cell, n, data)` does the whole top-1/top-5 loop and storage.
- The rows a suite returns feed `summary.json` (`eval.api.summarize`); metric names follow docs/contracts.md.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from eval.context import EvalContext

SuiteFn = Callable[["EvalContext"], list[dict[str, Any]]]


@dataclass(frozen=True)
class PlanItem:
    """What one suite will do for one model: `cells` measurements of `images` images each, `forward` images
    through the model in all (attacks count their gradient steps), `cache_bytes` of generated images at most."""

    suite: str
    dataset: str
    cells: int
    images: int
    forward: int
    cache_bytes: int = 0
    note: str = ""


@dataclass(frozen=True)
class Suite:
    """A registered suite: its runner, when it applies, its plan, and its place in `robustness`."""

    name: str
    run: SuiteFn
    supports: Callable[["EvalContext"], bool]
    requirement: str  # said when the suite is asked for but `supports` is false
    in_robustness: bool = True
    order: int = 100
    plan: Callable[["EvalContext"], PlanItem] | None = None


SUITES: dict[str, Suite] = {}
META_SUITES = ("robustness",)


def register_suite(name: str, *, supports: Callable[["EvalContext"], bool] | None = None, requirement: str = "",
                   in_robustness: bool = True, order: int = 100,
                   plan: Callable[["EvalContext"], PlanItem] | None = None) -> Callable[[SuiteFn], SuiteFn]:
    """Decorator registering a suite function under `name` (an existing name is an error)."""
    if name in META_SUITES:
        raise ValueError(f"{name!r} is reserved")

    def wrap(fn: SuiteFn) -> SuiteFn:
        if name in SUITES and SUITES[name].run is not fn:
            raise ValueError(f"suite {name!r} is already registered by {SUITES[name].run.__module__}")
        SUITES[name] = Suite(name, fn, supports or (lambda ctx: True), requirement, in_robustness, order, plan)
        return fn

    return wrap


def suite_names() -> list[str]:
    """Every name `--suite` accepts."""
    return [*sorted(SUITES, key=lambda n: (SUITES[n].order, n)), *META_SUITES]


def resolve_suites(names: str | list[str], ctx: "EvalContext") -> tuple[list[Suite], list[PlanItem], dict[str, str]]:
    """The suites to run for `names` (comma-separated or a list), their plans, and the skipped ones with reasons.

    `robustness` expands to every suite whose `supports` is true; one whose plan fails (the model and data do
    not fit) is skipped with the reason. A suite named explicitly that cannot run raises `ValueError` (or the
    plan's own error). Nothing is measured here.
    """
    from eval.context import EvaluationError
    from eval.datasets import DataError

    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    for name in wanted:
        if name not in SUITES and name not in META_SUITES:
            raise ValueError(f"unknown suite {name!r}; valid: {', '.join(suite_names())}")
    suites: list[Suite] = []
    plans: list[PlanItem] = []
    skipped: dict[str, str] = {}
    for name in wanted:
        candidates = sorted(SUITES.values(), key=lambda s: (s.order, s.name)) if name in META_SUITES else [SUITES[name]]
        for suite in candidates:
            if suite in suites or (name in META_SUITES and not suite.in_robustness):
                continue
            try:
                if not suite.supports(ctx):
                    raise ValueError(f"suite {suite.name!r} does not apply here: {suite.requirement}")
                item = suite.plan(ctx) if suite.plan is not None else None
            except (ValueError, DataError, EvaluationError) as exc:
                if name not in META_SUITES:
                    raise
                skipped[suite.name] = str(exc)
                continue
            suites.append(suite)
            skipped.pop(suite.name, None)
            if item is not None:
                plans.append(item)
    return suites, plans, skipped


def _import_suites() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_import_suites()

__all__ = ["PlanItem", "Suite", "SUITES", "register_suite", "resolve_suites", "suite_names"]
