"""What a suite works with: the model, its data sources, the options, the store, and the measuring loop.

`EvalContext.measure(cell, n, data)` is the one place a model meets images: it returns the stored rows of a cell
when they are there (resume; `force` recomputes), else runs the inference loop (inference_mode, uint8 -> float on
the device, no per-image Python), checks logits are finite, and writes the cell's rows and per-image correctness
in one transaction. Every cell gets `top1`, `top5` and the calibration rows `ece`, `nll`, `brier`
(`eval.metrics.calibration`) from the same logits; a stored cell without them is measured again.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, cast

import torch
from torch import nn

from eval.datasets import DataError, clean_test_set, imagenet_val_set
from eval.metrics import CALIBRATION_METRICS, Calibration, NonFiniteLogits, TopKAccuracy
from eval.sharding import FollowerStore, all_agree, rank_batches
from eval.store import Cell, ResultStore
from nst_common import distributed
from nst_common.errors import EvaluationError
from nst_common.progress import Progress
from nst_core.imagesets import ImageSet

DEFAULT_EPS = (0.0, 1.0, 2.0, 4.0, 8.0)
DEFAULT_TRANSFORM = "in memory at the model's input size (nst_core.data.to_model_input)"


@dataclass
class EvalOptions:
    """Run settings shared by every suite (CLI flags map one to one)."""

    device: str = "cpu"
    batch_size: int = 256
    workers: int | None = None  # DataLoader workers for image files (None: the CPUs, at most 8; 0 for small sets)
    decode_budget: int = 4 << 30  # bytes: a file set this small is decoded once per model and kept in memory
    compile: bool = False  # torch.compile the model (CUDA: channels_last is always used)
    limit: int | None = None  # fixed seeded subset of every dataset
    attack_limit: int | None = None  # subset for attacks (default: limit; on ImageNet at most 1,000)
    amp: bool = False
    force: bool = False
    seed: int = 0
    eps: Sequence[float] = DEFAULT_EPS  # units of 1/255
    attacks: Sequence[str] = ("fgsm", "pgd")
    pgd_steps: int = 10
    pgd_alpha: float | None = None  # units of 1/255; None: 2.5 * eps / steps
    pgd_random_start: bool = True
    corruption_backend: str = "torch"
    corruption_preset: str | None = None  # imagenet-c | cifar-10-c | tiny-imagenet-c; None: by input size
    corruption_rng: str | None = None  # reference | device; None: device on CUDA, reference on the CPU
    corruptions: Sequence[str] | None = None  # None: all 19
    cache_dir: str | os.PathLike | None = None
    progress: bool = True
    perturbations: Sequence[str] | None = None  # perturbation suite (ImageNet-P): None = all
    perturbation_difficulty: int = 1
    perturbation_limit: int | None = None  # sequences per perturbation (default: limit; generated on ImageNet: 100)
    corruption_limit: int | None = None  # images per generated -C cell (default: limit; on ImageNet: 1,000)
    imagenet_c_method: str = "auto"  # auto | crop | resize | generate (eval.suites.corruption.corruption_method)
    imagenet_p_method: str = "auto"  # auto | crop | resize | generate (eval.suites.perturbation.perturbation_method)


@dataclass
class DataSources:
    """Benchmark roots; ImageNet mode when any is given, else the run's own test set (from the checkpoint)."""

    val: str | os.PathLike | None = None
    imagenet_c: str | os.PathLike | None = None
    imagenet_a: str | os.PathLike | None = None
    imagenet_p: str | os.PathLike | None = None
    imagenet_r: str | os.PathLike | None = None  # the `shifts` suite (ImageNet-R, -Sketch, -V2)
    imagenet_sketch: str | os.PathLike | None = None
    imagenet_v2: str | os.PathLike | None = None  # one variant's root (its folder name names the variant)
    extra: dict[str, Any] = field(default_factory=dict)  # roots for plug-in suites

    @property
    def is_imagenet(self) -> bool:
        """True when evaluating on ImageNet benchmarks (the baseline is then the AlexNet table)."""
        return any(v is not None for v in (self.val, self.imagenet_c, self.imagenet_a, self.imagenet_p,
                                           self.imagenet_r, self.imagenet_sketch, self.imagenet_v2))


class EvalContext:
    """One model under evaluation; suites read from it and measure through it."""

    def __init__(self, model: nn.Module, meta: Mapping[str, Any], store: ResultStore | FollowerStore | None = None,
                 data: DataSources | None = None, options: EvalOptions | None = None,
                 baseline: str | tuple[nn.Module, Mapping[str, Any]] | None = None,
                 clean: ImageSet | None = None) -> None:
        self.model = model
        self.meta = dict(meta)
        self.store = store if store is not None else ResultStore(None)
        self.data = data or DataSources()
        self.options = options or EvalOptions()
        self.baseline = baseline
        self._clean = clean
        self.device = torch.device(self.options.device)
        self.model_name = str(self.meta.get("name") or self.meta.get("source") or type(model).__name__)
        self.sha256 = self.meta.get("sha256")
        self.run = self.meta.get("run")
        self.generation = self.meta.get("generation")
        self.counts = {"computed": 0, "stored": 0}  # cells measured vs read back (resume)
        self._measured: dict[tuple[Cell, int], dict[str, dict[str, Any]]] = {}  # this evaluation's cells
        self._decoded: dict[str, ImageSet] = {}  # file sets decoded in memory, by identity (`decoded`)
        if self.model.training:
            raise EvaluationError(f"{self.model_name}: the model is in train mode; evaluation needs model.eval()")
        if self.device.type == "cuda":  # the layout convolutions run fastest in on a GPU; results are the same
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.options.compile:
            self.model = cast(nn.Module, torch.compile(self.model))  # an OptimizedModule

    # ------------------------------------------------------------------------------------------------ data
    def has_clean_set(self) -> bool:
        """Whether a clean set can be had: given, ImageNet val (--val), or the run's own test set (a checkpoint's
        config names its data; a timm model has none)."""
        return self._clean is not None or self.data.val is not None or bool((self.meta.get("config") or {}).get("data"))

    def clean_set(self) -> ImageSet:
        """The clean test set (ImageNet val when --val is given, else the run's test set), `limit` applied."""
        if self._clean is None:
            if self.data.val is not None:
                self._clean = imagenet_val_set(self.data.val, self.meta, self.options.limit, self.options.seed)
            elif not self.has_clean_set():
                raise DataError(f"{self.model_name} carries no test set of its own: give --val (an ImageFolder "
                                   "val tree) for clean accuracy")
            else:
                self._clean = clean_test_set(self.meta, self.options.limit, self.options.seed)
        return self._clean

    def decoded(self, data: ImageSet) -> ImageSet:
        """`data` with its images decoded in memory, once per model, when it fits `decode_budget` (the attack
        suite's 10 cells, generated sets and the examples then read each file once); else `data` (streamed)."""
        if data.images is not None or data.decoded_bytes > self.options.decode_budget:
            return data
        key = data.identity
        if key not in self._decoded:
            self._decoded[key] = data.materialize(self.options.batch_size, self.options.workers)
        return self._decoded[key]

    def cell(self, suite: str, dataset: str, corruption: str | None = None, severity: int | None = None,
             attack: str | None = None, eps: float | None = None, data_id: str | None = None) -> Cell:
        """The store key of one measurement of this model: the weights' sha256 and the images' `data_id`
        (`ImageSet.identity`, or a generated set's id) tell apart what names alone would not."""
        return Cell(self.model_name, self.sha256, self.run, self.generation, suite, dataset, corruption,
                    None if severity is None else int(severity), attack, None if eps is None else float(eps),
                    data_id)

    def settings(self, **extra: Any) -> dict[str, Any]:
        """Settings recorded with every row: the run options plus suite-specific ones."""
        o = self.options
        base = {"batch_size": o.batch_size, "limit": o.limit, "amp": o.amp, "seed": o.seed, "device": o.device,
                "input_size": self.meta.get("input_size"), "weights": self.meta.get("weights")}
        return {**base, **extra}

    def check_classes(self, data: ImageSet) -> None:
        """A model whose class count does not fit the dataset is an error naming both."""
        k = int(self.meta.get("num_classes") or 0)
        root = data.info.get("root", data.name)
        if data.class_index is not None:
            need = int(data.class_index.max()) + 1
            if k < need:
                raise EvaluationError(f"{self.model_name} has {k} classes but {data.name} ({root}) selects logits "
                                      f"up to index {need - 1}: it needs an ImageNet-1k model (1000 classes)")
        elif k != data.num_classes:
            raise EvaluationError(f"{self.model_name} has {k} classes but {data.name} ({root}) has "
                                  f"{data.num_classes}: evaluate a model trained on this dataset, or point the "
                                  "dataset flags at the matching data")

    # --------------------------------------------------------------------------------------------- measuring
    def stored(self, cell: Cell, n: int) -> dict[str, dict[str, Any]] | None:
        """The stored rows {metric: row} of a cell on n images, or None (always None with force)."""
        if self.options.force or not all_agree(self.store.has_cell(cell, n)):  # under torchrun: all ranks alike
            return None
        return {r["metric"]: r for r in self.store.cell_rows(cell, n)}

    def measure(self, cell: Cell, n: int | None, data: Callable[[], ImageSet] | ImageSet,
                settings: Mapping[str, Any] | None = None,
                perturb: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None,
                extra: Callable[[], Mapping[str, float]] | None = None, extra_metrics: Sequence[str] = (),
                ) -> dict[str, dict[str, Any]]:
        """Rows {metric: row} of `cell` (top1, top5, ece, nll, brier): from the store when there, else computed
        and stored.

        `data` may be a callable so that a stored cell never builds (or generates) its images; `n` is the
        expected image count (None: take it from the data). `perturb(x, y, batch_index)` (attacks) maps float
        [0, 1] batches before the forward pass and runs with gradients; `extra()`, called after the loop, gives
        more metrics of the same pass (named in `extra_metrics`: a stored cell lacking one is measured again),
        written in the same transaction (the attacks' `zero_gradient`).
        """
        eval_set = None
        if n is None:
            eval_set = data() if callable(data) else data
            n = len(eval_set)
        if (cell, n) in self._measured:  # asked again in this evaluation (e.g. clean error for relative CE)
            return self._measured[cell, n]
        need = (*CALIBRATION_METRICS, *extra_metrics)
        if (rows := self.stored(cell, n)) is not None and all(m in rows for m in need):
            self.counts["stored"] += 1
        else:
            if eval_set is None:
                eval_set = data() if callable(data) else data
            self.check_classes(eval_set)
            eval_set = self._decoded.get(eval_set.identity, eval_set) if eval_set.images is None else eval_set
            calibration = Calibration()
            acc = self.predict(eval_set, cell, perturb, calibration)
            metrics = {**acc.compute(), **calibration.compute(), **dict(extra() if extra is not None else {})}
            recorded = self.settings(transform=eval_set.info.get("transform", DEFAULT_TRANSFORM), **dict(settings or {}))
            new = [cell.row(m, v, acc.n, recorded) for m, v in metrics.items()]
            self.store.write(new, {cell: acc.per_image()})
            self.counts["computed"] += 1
            rows = {r["metric"]: r for r in new}
        self._measured[cell, n] = rows
        return rows

    def autocast(self) -> Any:
        """bf16 autocast when --amp, else a no-op context."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.options.amp else nullcontext()

    def predict(self, data: ImageSet, cell: Cell,
                perturb: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None,
                calibration: Calibration | None = None) -> TopKAccuracy:
        """The inference loop over `data`: streaming top-1/top-5 with per-image correctness; NaN logits raise.

        `calibration`, when given, accumulates ECE / NLL / Brier from the same logits (gathered in dataset order
        under torchrun, so the figures are bit-identical to one process).
        Under torchrun each rank scores its own batches (`eval.sharding`) and every metric is synced
        (`Metric.sync(positions)`), so all ranks get the whole set's accumulators.
        """
        o = self.options
        acc = TopKAccuracy((1, 5), keep_per_image=True)
        index = None if data.class_index is None else data.class_index.to(self.device)
        bad = NonFiniteLogits()
        shard, positions, numbers = rank_batches(data, o.batch_size)
        bar = Progress(total=len(shard), desc=cell.describe(), unit="img", enabled=o.progress and distributed.is_main(),
                       leave=False, dynamic_ncols=True)
        pin = self.device.type == "cuda"
        # a file set that fits the decode budget is kept as it streams by (decoding overlaps the forward passes),
        # so the other cells of this model on the same images never decode a file again
        keep: list[torch.Tensor] | None = [] if (data.images is None and not distributed.is_distributed() and
                                                  data.decoded_bytes <= o.decode_budget) else None
        for b, (xb, yb) in zip(numbers, shard.batches(o.batch_size, o.workers, pin_memory=pin)):
            if keep is not None:
                keep.append(xb)
            x = xb.to(self.device, non_blocking=True).float().div_(255)
            if pin:
                x = x.contiguous(memory_format=torch.channels_last)
            y = yb.to(self.device, non_blocking=True)
            if perturb is not None:
                x = perturb(x, y, b)
            with torch.inference_mode(), self.autocast():
                logits = self.model(x)
                if index is not None:
                    logits = logits.index_select(1, index)
            bad.update(logits)
            acc.update(logits, y)  # outside inference_mode: the accumulator's state stays a normal tensor
            if calibration is not None:
                calibration.update(logits, y)
            bar.update(xb.shape[0])
        bar.close()
        if keep:
            self._decoded[data.identity] = replace(data, images=torch.cat(keep), files=None)
        for metric in (acc, calibration, bad):  # across ranks: counts summed, per-image values in dataset order
            if metric is not None:
                metric.sync(positions)
        nonfinite = bad.compute()  # positions in `data`
        if nonfinite.numel():
            which = data.indices[nonfinite][:5].tolist()
            raise EvaluationError(f"{cell.describe()}: the model gave NaN/inf logits for {nonfinite.numel()} "
                                  f"images (dataset indices {which}...); check the checkpoint (weights with NaN?) "
                                  "or evaluate without --amp. Cells already stored are kept.")
        return acc

    # ---------------------------------------------------------------------------------------------- baseline
    @cached_property
    def baseline_context(self) -> "EvalContext | None":
        """The CE baseline on non-ImageNet data, evaluated on this same data (None when there is none)."""
        spec = self.baseline
        if spec is None:
            source = self.meta.get("source")
            if source and not str(source).startswith("timm:"):
                gen0 = Path(source).parent / "gen0"
                if (gen0 / "meta.json").exists():
                    spec = str(gen0)
        if spec is None:
            return None
        if isinstance(spec, tuple):
            model, meta = spec
        else:
            if Path(str(spec)).resolve() == Path(str(self.meta.get("source", ""))).resolve():
                return self
            from nst_core import load_model

            model, meta = load_model(str(spec), device=self.device)
        if list(meta.get("input_size") or []) != list(self.meta.get("input_size") or []):
            raise EvaluationError(f"baseline {meta.get('name')} takes input size {meta.get('input_size')} but "
                                  f"{self.model_name} takes {self.meta.get('input_size')}: the baseline must see the "
                                  "same images; choose another with --baseline")
        if meta.get("sha256") and meta.get("sha256") == self.sha256 and meta.get("name") == self.model_name:
            return self
        return EvalContext(model, meta, self.store, self.data, self.options, baseline=None, clean=self.clean_set())


__all__ = ["EvalContext", "EvalOptions", "DataSources", "EvaluationError", "DEFAULT_EPS"]
