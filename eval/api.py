"""The public API: `evaluate(model, meta, suite=...) -> rows`, and `summarize(rows)` for summary.json."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from eval.context import DataSources, EvalContext, EvalOptions
from eval.examples import write_examples
from eval.sharding import rank_store
from eval.store import ResultStore, write_summary
from eval.suites import resolve_suites
from nst_common import distributed
from nst_core.models import state_sha256

log = logging.getLogger(__name__)


def evaluate(model: nn.Module, meta: Mapping[str, Any], suite: str | list[str] = "robustness", *,
             data: DataSources | None = None, options: EvalOptions | None = None,
             store: ResultStore | None = None, out: str | os.PathLike | None = None,
             baseline: str | tuple[nn.Module, Mapping[str, Any]] | None = None, **option_overrides: Any,
             ) -> list[dict[str, Any]]:
    """Run `suite` on a model ([0, 1] images in, logits out) and return its result rows.

    `out`: write `<out>/results.sqlite`, update `<out>/summary.json` and write `<out>/examples.npz` (the report's
    example images) when it is missing; `store`: an open store instead
    (default: in memory). `option_overrides` set `EvalOptions` fields (batch_size=..., limit=..., eps=...).
    Cells already in the store are read back, not recomputed, unless force=True. A meta without `sha256` gets
    the sha256 of the model's state dict, so other weights under the same name never read back these cells; a
    name the store already holds with other weights gets `@<sha256 prefix>` appended.
    """
    options = options or EvalOptions()
    for key, value in option_overrides.items():
        if not hasattr(options, key):
            raise TypeError(f"unknown evaluation option {key!r}; valid: {sorted(vars(EvalOptions()))}")
        setattr(options, key, value)
    own_store = store is None
    if store is None:
        store = ResultStore(None if out is None else Path(out) / "results.sqlite")
    try:
        name = str(meta.get("name") or meta.get("source") or type(model).__name__)
        sha256 = meta.get("sha256") or state_sha256(model)  # an API model is known by its weights too
        meta = {**meta, "sha256": sha256, "name": store.display_name(name, sha256)}
        ctx = EvalContext(model, meta, rank_store(store), data, options, baseline)  # under torchrun rank 0 writes
        ctx.store.add_model(ctx.model_name, ctx.sha256, ctx.run, ctx.generation, meta.get("source"), meta)
        suites, _, skipped = resolve_suites(suite, ctx)
        for name, reason in skipped.items():
            log.warning("%s: suite %s skipped: %s", ctx.model_name, name, reason)
        rows: list[dict[str, Any]] = []
        for s in suites:
            rows += s.run(ctx)
        rows = _dedupe(rows)
        log.info("%s: %d cells computed, %d read back from the store", ctx.model_name, ctx.counts["computed"],
                 ctx.counts["stored"])
        if out is not None and distributed.is_main():
            write_summary(out, ctx.model_name, {**summarize(rows, meta), "skipped": skipped})
            write_examples(out, ctx, [s.name for s in suites], force=options.force)
        return rows
    finally:
        if own_store and out is not None:
            store.close()


def _dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("model", "checkpoint_sha256", "suite", "dataset", "data_id", "corruption", "severity", "attack", "eps",
            "metric", "n")
    seen: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        seen[tuple(r[k] for k in keys)] = r
    return list(seen.values())


def summarize(rows: list[dict[str, Any]], meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Headline figures of one model's rows: clean top-1, mCE, relative mCE, mean corruption accuracy,
    ImageNet-A top-1, robust accuracy per attack and eps, each with its n; calibration (`clean_ece`,
    `mean_corruption_ece`, `imagenet_a_ece`, ... and nll / brier alike), `adversarial_zero_gradient` and the
    `gradient_masking` flags; plus any other suite's aggregates."""
    import json

    out: dict[str, Any] = {}
    if meta is not None:
        out.update(checkpoint_sha256=meta.get("sha256"), run=meta.get("run"), generation=meta.get("generation"),
                   source=meta.get("source"))
    for r in rows:
        suite, metric, value, n = r["suite"], r["metric"], r["value"], r["n"]
        if suite == "clean":
            out[f"clean_{metric}"] = value
            out.update(clean_n=n, clean_dataset=r["dataset"])
        elif suite == "corruption":
            if r["corruption"] is None:
                settings = json.loads(r["settings"] or "{}")
                out[metric] = value
                out.update(corruption_dataset=r["dataset"], corruption_n=n, baseline=settings.get("baseline"),
                           baseline_clean_error=settings.get("baseline_clean_error"))
            elif r["severity"] is None:
                out.setdefault(metric, {})[r["corruption"]] = value
        elif suite == "natural-adversarial":
            out[f"imagenet_a_{metric}"] = value
            out["imagenet_a_n"] = n
        elif suite == "shifts":  # {dataset: {top1, top5, ece, nll, brier, n}}
            out.setdefault("shifts", {}).setdefault(r["dataset"], {}).update({metric: value, "n": n})
        elif suite == "adversarial" and metric == "top1":
            out.setdefault("adversarial_top1", {}).setdefault(r["attack"], {})[f"{r['eps']:g}"] = value
            out["adversarial_n"] = n
        elif suite == "adversarial" and r["attack"] is not None:  # zero_gradient, ece, ...: per attack and eps
            out.setdefault(f"adversarial_{metric}", {}).setdefault(r["attack"], {})[f"{r['eps']:g}"] = value
        elif suite == "adversarial" and metric == "gradient_masking":
            out["gradient_masking"] = json.loads(r["settings"] or "{}").get("flags", [])
        elif r["corruption"] is None and r["severity"] is None and r["attack"] is None:
            out.setdefault(suite, {})[metric] = value  # plug-in suites' aggregates (e.g. mfr, mt5d)
    return out


__all__ = ["evaluate", "summarize", "EvalOptions", "DataSources", "EvalContext"]
