"""`perturbation`: ImageNet-P stability: flip probability, top-5 distance, FR / relative T5D, mFR / mT5D, frame top-1.

Sequences come from the official ImageNet-P videos (`--imagenet-p`: center-cropped at 224 px, `imagenet-p`; resized
to another model size, `imagenet-p-resized`), or are generated at the model's input size from the clean test set (the
run's own, or ImageNet val: 100 seeded sequences per perturbation by default) by `eval.corruptions.perturbations`,
cached on disk (`<clean>-p/torch`).
FR and relative T5D need a baseline evaluated here on the same sequences: the run's gen0 teacher by default,
`--baseline` otherwise (on ImageNet the AlexNet ImageNet-P values are not published in code, so a baseline must be
named and is computed here). Options: `perturbations` (names; default all 14), `perturbation_difficulty` (1..3),
`perturbation_limit` (sequences; default: the clean set's size).

Rows: per perturbation (`corruption` = its name) `fp`, `t5d`, `top1` and, with a baseline, `fr`, `t5d_rel`; over the
10 evaluated perturbations (`corruption` NULL) `top1` (all their frames) and, with a baseline, `mfr`, `mt5d`.
Difficulty d > 1 is part of the dataset name (`<dataset>-p-d2`); `severity` stays NULL.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from eval.context import DEFAULT_TRANSFORM, EvalContext, EvaluationError
from eval.corruptions.catalog import ALL_PERTURBATIONS, EVALUATED_PERTURBATIONS
from eval.corruptions.perturbations import GENERATOR_VERSION, cached_sequences, check_perturbation, num_frames
from eval.datasets import DEFAULT_CACHE, seeded_subset
from eval.imagenet_p import imagenet_p_sequences
from eval.metrics.perturbation import (
    bootstrap_relative_mean,
    PerturbationMetrics,
    mean_over_perturbations,
    relative_to_baseline,
)
from eval.suites import PlanItem, register_suite
from eval.suites.clean import has_clean
from nst_common import distributed
from nst_common.progress import Progress

SUITE = "perturbation"
RAW_METRICS = ("fp", "t5d", "top1")
BOOTSTRAP_RESAMPLES = 1000  # mFR / mT5D intervals (eval.metrics.perturbation.bootstrap_relative_mean)
UNITS = ("fp: fraction of frame pairs whose top-1 flips; t5d: mean top-5 distance; fr, t5d_rel, mfr, mt5d: percent "
         "of the baseline's value on the same sequences; top1: percent of all frames")
IMAGENET_BASELINE_NOTE = ("the AlexNet ImageNet-P values are not published in code: FR and relative T5D are relative "
                          "to the baseline named here, evaluated by this suite on the same sequences")
OFFICIAL_SIZE = (224, 224)  # ImageNet-P frames are 224 x 224
IMAGENET_GENERATED_SEQUENCES = 100  # default sequences per perturbation generated from ImageNet val
CACHE_BYTES = 64 << 20  # sequences per generated chunk (and cache file): about this many bytes


def has_sequences(ctx: EvalContext) -> bool:
    """Whether sequences can be had: ImageNet-P videos, or a clean set to generate them from."""
    return ctx.data.imagenet_p is not None or has_clean(ctx)


@dataclass
class SequenceSource:
    """The sequences of one perturbation: a dataset name, a count, and a batch iterator (uint8 [B, T, C, H, W])."""

    dataset: str
    n: int
    batches: Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]]
    settings: dict[str, Any]
    class_check: Callable[[EvalContext], None]
    data_id: str  # the exact sequences: video file list and method, or the generator's source and settings


def perturbation_options(ctx: EvalContext) -> tuple[list[str], int, int | None]:
    """(perturbations, difficulty, sequence limit) from the run options, validated.

    The limit is --perturbation-limit, else --limit; sequences generated from ImageNet val default to a seeded
    subset of `IMAGENET_GENERATED_SEQUENCES` (generation costs about 5 s and 65 MiB of cache per image on the CPU).
    """
    o = ctx.options
    names = list(o.perturbations or ALL_PERTURBATIONS)
    difficulty = int(o.perturbation_difficulty)
    for name in names:
        check_perturbation(name, difficulty)
    limit = o.perturbation_limit if o.perturbation_limit is not None else o.limit
    if o.perturbation_limit is None and ctx.data.val is not None and perturbation_method(ctx) == "generate":
        limit = min(limit or IMAGENET_GENERATED_SEQUENCES, IMAGENET_GENERATED_SEQUENCES)
    return names, difficulty, limit


def perturbation_method(ctx: EvalContext) -> str:
    """How this model gets ImageNet-P: `crop` / `resize` (the official 224-px videos), or `generate` (from the
    clean set at the model's size). `auto`: videos center-cropped at 224 px, resized at other sizes; generated
    without --imagenet-p. Raises `ValueError` for a method the data cannot give."""
    method = ctx.options.imagenet_p_method
    official = ctx.data.imagenet_p is not None
    size = tuple(int(v) for v in ctx.meta["input_size"][1:])
    if method == "auto":
        return ("crop" if size == OFFICIAL_SIZE else "resize") if official else "generate"
    if method in ("crop", "resize") and not official:
        raise ValueError(f"--imagenet-p-method {method} reads the official ImageNet-P videos: give --imagenet-p")
    if method not in ("crop", "resize", "generate"):
        raise ValueError(f"unknown --imagenet-p-method {method!r}; valid: auto, crop, resize, generate")
    return method


def sequence_source(ctx: EvalContext, perturbation: str, difficulty: int, limit: int | None) -> SequenceSource:
    """ImageNet-P videos (`perturbation_method` crop or resize), else sequences generated from the clean set."""
    o = ctx.options
    method = perturbation_method(ctx)
    if method != "generate":
        assert ctx.data.imagenet_p is not None  # the official videos are read only when given
        videos = imagenet_p_sequences(ctx.data.imagenet_p, perturbation, ctx.meta, difficulty, limit, o.seed,
                                      method=method)

        def check(c: EvalContext) -> None:
            k = int(c.meta.get("num_classes") or 0)
            if bool((videos.labels >= 0).any()) and k <= int(videos.labels.max()):
                raise EvaluationError(f"{c.model_name} has {k} classes but ImageNet-P ({videos.folder}) needs an "
                                      "ImageNet-1k model (1000 classes)")

        name = "imagenet-p" if method == "crop" else "imagenet-p-resized"
        return SequenceSource(_dataset_name(name, difficulty), len(videos),
                              lambda bs: videos.batches(bs, o.workers),
                              {"source": str(videos.folder), "method": method,
                               "transform": {"input_size": list(videos.input_size), "method": method,
                                             "interpolation": videos.interpolation if method == "resize" else None}},
                              check, videos.identity)

    clean = ctx.clean_set()
    if limit is not None and limit < len(clean):
        clean = clean.subset(seeded_subset(len(clean), limit, o.seed))
    cache_root = Path(o.cache_dir) if o.cache_dir is not None else DEFAULT_CACHE
    frames = num_frames(perturbation)
    c, h, w = (int(v) for v in ctx.meta["input_size"])
    chunk = max(1, min(256, CACHE_BYTES // (frames * c * h * w)))

    def generated(_: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        keys = clean.indices.tolist()
        start = 0
        for images, labels in ctx.decoded(clean).batches(chunk, o.workers):  # decoded once when it fits, else streamed
            yield cached_sequences(images, perturbation, keys[start:start + len(images)], o.seed, difficulty,
                                   cache_root, device=ctx.device), labels  # generated on the eval device
            start += len(images)

    settings = {"source": "generated", "method": "generate", "generator_version": GENERATOR_VERSION,
                "generator_device": ctx.device.type,
                "generated_from": clean.name, "cache": str(cache_root / "perturbation_sequences"),
                "transform": clean.info.get("transform", DEFAULT_TRANSFORM)}
    # the device's random streams differ (CPU vs CUDA generators): it is part of the sequences' identity
    data_id = hashlib.sha1(f"{clean.identity}|{GENERATOR_VERSION}|{o.seed}|{ctx.device.type}".encode()).hexdigest()[:16]
    return SequenceSource(_dataset_name(f"{clean.name}-p/torch", difficulty), len(clean), generated, settings,
                          lambda model_ctx: model_ctx.check_classes(clean), data_id)


def plan_perturbation(ctx: EvalContext) -> PlanItem:
    """Cells (one per perturbation), sequences per cell, frames through the model, generated bytes at most."""
    names, difficulty, limit = perturbation_options(ctx)
    source = sequence_source(ctx, names[0], difficulty, limit)
    source.class_check(ctx)
    frames = sum(num_frames(p) for p in names)
    c, h, w = (int(v) for v in ctx.meta["input_size"])
    generated = source.settings.get("source") == "generated"
    return PlanItem(SUITE, source.dataset, len(names), source.n, source.n * frames,
                    cache_bytes=source.n * frames * c * h * w if generated else 0,
                    note=f"{source.n} sequences per perturbation, {source.settings['method']}")


def sequence_logits(ctx: EvalContext, sequences: torch.Tensor) -> torch.Tensor:
    """Logits [B, T, K] of uint8 sequences [B, T, C, H, W], frames in batches of `--batch-size`."""
    flat = sequences.flatten(0, 1)
    outputs = []
    for start in range(0, flat.shape[0], ctx.options.batch_size):
        x = flat[start:start + ctx.options.batch_size].to(ctx.device, non_blocking=True).float().div_(255)
        with torch.inference_mode(), ctx.autocast():
            outputs.append(ctx.model(x).float())  # on the device: one copy per step, in the metric
    return torch.cat(outputs).view(sequences.shape[0], sequences.shape[1], -1)


def measure_sequences(ctx: EvalContext, source: SequenceSource, perturbation: str, difficulty: int,
                      desc: str) -> dict[str, Any]:
    """Stream the source's sequences through the model: {"fp", "t5d", "top1", "n", "per_sequence"} (per-sequence
    fp and t5d lists for the bootstrap, in sequence order).

    Under torchrun step s is scored by rank s mod world_size; the metric is then synced by the sequences' positions
    (`Metric.sync`), so every rank gets the one process's figures.
    """
    source.class_check(ctx)
    acc = PerturbationMetrics(perturbation, difficulty)
    rank, world = distributed.rank(), distributed.world_size()
    mine: list[torch.Tensor] = []  # positions (in the source) of the sequences this rank scored
    bar = Progress(total=source.n, desc=desc, unit="seq", enabled=ctx.options.progress and rank == 0, leave=False,
                   dynamic_ncols=True)
    # enough sequences per step that a forward batch is full
    per_step = max(1, ctx.options.batch_size // num_frames(perturbation))
    step = seen = 0
    for sequences, labels in source.batches(per_step):
        for start in range(0, sequences.shape[0], per_step):
            part, part_labels = sequences[start:start + per_step], labels[start:start + per_step]
            number, step = step, step + 1
            first, seen = seen, seen + part.shape[0]
            bar.update(part.shape[0])
            if number % world != rank:
                continue
            logits = sequence_logits(ctx, part)
            try:
                acc.update(logits, part_labels if bool((part_labels >= 0).all()) else None)
            except ValueError as exc:
                raise EvaluationError(f"{desc}: {exc}. Check the checkpoint or evaluate without --amp. Cells "
                                      "already stored are kept.") from None
            mine.append(torch.arange(first, seen))
    bar.close()
    acc.sync(torch.cat(mine) if mine else torch.zeros(0, dtype=torch.long))
    return {**acc.compute(), "per_sequence": acc.per_sequence()}


def raw_values(ctx: EvalContext, source: SequenceSource, perturbation: str, difficulty: int,
               settings: dict[str, Any]) -> dict[str, float]:
    """This model's fp / t5d / top1 on the source (and `per_sequence` fp / t5d, kept in the fp row's settings for
    the bootstrap intervals): from the store when there, else measured and stored."""
    cell = ctx.cell(SUITE, source.dataset, corruption=perturbation, data_id=source.data_id)
    stored = ctx.stored(cell, source.n)
    if stored is not None and all(m in stored for m in RAW_METRICS):
        ctx.counts["stored"] += 1
        values = {m: (math.nan if stored[m]["value"] is None else stored[m]["value"]) for m in RAW_METRICS}
        return {**values, "per_sequence": json.loads(stored["fp"]["settings"] or "{}").get("per_sequence")}
    values = measure_sequences(ctx, source, perturbation, difficulty, cell.describe())
    ctx.store.write([cell.row(m, values[m], source.n, ctx.settings(
        **settings, **({"per_sequence": values["per_sequence"]} if m == "fp" else {}))) for m in RAW_METRICS])
    ctx.counts["computed"] += 1
    return values


@register_suite(SUITE, supports=has_sequences, order=40, plan=plan_perturbation,
                requirement="ImageNet evaluation needs --imagenet-p (the videos) or --val (to generate sequences)")
def perturbation(ctx: EvalContext) -> list[dict[str, Any]]:
    """Per perturbation fp, t5d, top1 (and fr, t5d_rel with a baseline); mfr, mt5d over the 10 evaluated ones."""
    names, difficulty, limit = perturbation_options(ctx)
    base = ctx.baseline_context
    base_name = None if base is None else base.model_name
    common = {"difficulty": difficulty, "units": UNITS, "baseline": base_name,
              "pairing": "noise: every frame vs frame 0; others: consecutive frames, stride = difficulty"}
    if ctx.data.is_imagenet:
        common["baseline_note"] = IMAGENET_BASELINE_NOTE if base is not None else \
            "no baseline named (--baseline): FR, relative T5D, mFR and mT5D are not computed"
    rows: list[dict[str, Any]] = []
    top1: dict[str, float] = {}
    relative: dict[str, dict[str, float]] = {"fr": {}, "t5d_rel": {}}
    paired: dict[str, dict[str, Any]] = {"own": {}, "base": {}}  # per-sequence values for the bootstrap
    source = None
    ids: list[str] = []
    for name in names:
        source = sequence_source(ctx, name, difficulty, limit)
        ids.append(source.data_id)
        settings = {**common, **source.settings, "frames": num_frames(name)}
        own = raw_values(ctx, source, name, difficulty, settings)
        top1[name] = own["top1"]
        cell = ctx.cell(SUITE, source.dataset, corruption=name, data_id=source.data_id)
        cell_rows = [cell.row(m, own[m], source.n, ctx.settings(**settings)) for m in RAW_METRICS]
        if base is not None:
            ref = own if base is ctx else raw_values(base, source, name, difficulty, settings)
            paired["own"][name], paired["base"][name] = own.get("per_sequence"), ref.get("per_sequence")
            relative["fr"][name] = relative_to_baseline(own["fp"], ref["fp"])
            relative["t5d_rel"][name] = relative_to_baseline(own["t5d"], ref["t5d"])
            extra = [cell.row(m, relative[m][name], source.n, ctx.settings(**settings)) for m in relative]
            ctx.store.write(extra)
            cell_rows += extra
        rows += cell_rows
    if source is not None and all(p in top1 for p in EVALUATED_PERTURBATIONS):
        frames = {p: num_frames(p) for p in EVALUATED_PERTURBATIONS}
        means = {"top1": sum(top1[p] * frames[p] for p in frames) / sum(frames.values())}
        if base is not None:
            means.update(mfr=mean_over_perturbations(relative["fr"]),
                         mt5d=mean_over_perturbations(relative["t5d_rel"]))
            pairs: list[tuple[Any, Any]] = [(paired["own"].get(p), paired["base"].get(p))
                                            for p in EVALUATED_PERTURBATIONS]
            if all(a is not None and b is not None for a, b in pairs):  # 95 % intervals over sequences
                for metric, key in (("mfr", "fp"), ("mt5d", "t5d")):
                    lo, hi = bootstrap_relative_mean({p: a[key] for p, (a, _) in zip(EVALUATED_PERTURBATIONS, pairs)},
                                                     {p: b[key] for p, (_, b) in zip(EVALUATED_PERTURBATIONS, pairs)},
                                                     BOOTSTRAP_RESAMPLES, ctx.options.seed)
                    means.update({f"{metric}_low": lo, f"{metric}_high": hi})
        cell = ctx.cell(SUITE, source.dataset, data_id=hashlib.sha1("|".join(ids).encode()).hexdigest()[:16])
        agg_settings = {**common, "perturbations": list(EVALUATED_PERTURBATIONS)}
        if "mfr_low" in means:
            agg_settings["interval"] = (f"mfr_low/high, mt5d_low/high: 95 % percentile bootstrap over sequences "
                                        f"(paired with the baseline, {BOOTSTRAP_RESAMPLES} resamples, seed "
                                        f"{ctx.options.seed})")
        if undefined := [p for p in EVALUATED_PERTURBATIONS if math.isnan(relative["fr"].get(p, 0.0))]:
            agg_settings["undefined"] = (f"the baseline never flipped on {', '.join(undefined)}: FR is undefined "
                                         "there, so mFR is too; evaluate more sequences")
        aggregate = [cell.row(m, v, source.n, ctx.settings(**agg_settings)) for m, v in means.items()]
        ctx.store.write(aggregate)
        rows += aggregate
    return rows


def _dataset_name(name: str, difficulty: int) -> str:
    return name if difficulty == 1 else f"{name}-d{difficulty}"
