"""The one way evaluation metrics keep, merge and synchronise their state (the torchmetrics `Metric` shape).

A metric declares each state tensor with `add_state(name, default, reduction)`; the reduction says how the states
of two parts of a stream combine:

- `"sum"`: an integer counter (images seen, images right). Parts add up; across torchrun ranks it is all-reduced.
  Integer addition is exact and order-free, so the result is the one process's whatever the split.
- `"cat"`: one value per item (per image, per sequence), a tensor whose first dimension is the items. Parts are
  concatenated; across ranks every rank's values are all-gathered and put back in dataset order by the items'
  positions (`sync(positions)`), so every rank then holds exactly the one-process tensor.

Float sums are not "sum" states (`add_state` refuses them): float addition depends on the order, and an
all-reduce adds in an order of its own. A metric keeps the float values per item ("cat") and sums them in
`compute()`, in dataset order, so a sharded run gives bit-identical figures to one process.

The base class owns `reset`, `state`, `merge` (fold another part of the stream into this one, in this process)
and `sync` (across ranks, through `nst_common.distributed`); a metric adds `update`, `compute` and, where two
instances differ in what they measure, `config` (merging instances with different configs raises).
"""
from __future__ import annotations

from typing import Any, TypeVar

import torch

from nst_common import distributed

REDUCTIONS = ("sum", "cat")
M = TypeVar("M", bound="Metric")


class Metric:
    """A streaming metric whose state tensors are declared with a reduction ("sum" or "cat"); see the module doc."""

    def __init__(self) -> None:
        self._reductions: dict[str, str] = {}
        self._defaults: dict[str, torch.Tensor] = {}
        self._synced = False

    # ------------------------------------------------------------------------------------------------ declaring
    def add_state(self, name: str, default: torch.Tensor, reduction: str) -> None:
        """Declare the state `name` with its empty value and reduction, and set it to that value.

        `default`: for "sum" an integer (or bool) tensor of any shape, the zero counter; for "cat" an empty tensor
        [0, ...] whose dtype and trailing shape the per-item values have. Raises ValueError for an unknown
        reduction, a float "sum" (not bit-identical across splits: keep per-item values as "cat"), a "cat" default
        that is not empty along dim 0, or a name declared twice.
        """
        where = f"{type(self).__name__}.{name}"
        if reduction not in REDUCTIONS:
            raise ValueError(f"{where}: reduction {reduction!r} is not one of {', '.join(REDUCTIONS)}")
        if name in self._reductions or name.startswith("_"):
            raise ValueError(f"{where}: a state of this name is already declared (or the name is private)")
        if reduction == "sum" and (default.is_floating_point() or default.is_complex()):
            raise ValueError(f"{where}: a float 'sum' state ({default.dtype}) depends on the order of addition; "
                             "keep the per-item values as a 'cat' state and sum them in compute()")
        if reduction == "cat" and (default.ndim == 0 or default.shape[0] != 0):
            raise ValueError(f"{where}: a 'cat' default is an empty tensor [0, ...], got shape {tuple(default.shape)}")
        self._reductions[name] = reduction
        self._defaults[name] = default.detach().clone()
        self._set_default(name)

    def _set_default(self, name: str) -> None:
        default = self._defaults[name]
        setattr(self, name, default.clone() if self._reductions[name] == "sum" else [])

    def config(self) -> dict[str, Any]:
        """What this instance measures (e.g. its k or bins); instances merge only when their configs are equal."""
        return {}

    # ------------------------------------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget everything seen so far (every state back to its default)."""
        for name in self._reductions:
            self._set_default(name)
        self._synced = False

    def append(self, name: str, values: torch.Tensor) -> None:
        """Add per-item `values` [b, ...] (b items, in stream order) to the "cat" state `name`."""
        if self._reductions.get(name) != "cat":
            raise KeyError(f"{type(self).__name__}.{name} is not a 'cat' state")
        getattr(self, name).append(values.detach())

    def values(self, name: str) -> torch.Tensor:
        """The "cat" state `name` as one tensor [n, ...] in stream order (after `sync`: dataset order)."""
        parts: list[torch.Tensor] = getattr(self, name)
        if not parts:
            return self._defaults[name].clone()
        if len(parts) > 1:  # concatenated once, then kept as one block
            parts[:] = [torch.cat([p.to(parts[0].device) for p in parts])]
        return parts[0]

    def state(self) -> dict[str, torch.Tensor]:
        """Every state tensor by name ("cat" states concatenated)."""
        return {name: getattr(self, name) if reduction == "sum" else self.values(name)
                for name, reduction in self._reductions.items()}

    # ------------------------------------------------------------------------------------------------ combining
    def merge(self: M, other: M) -> M:
        """Fold `other` (the part of the stream after this one's, in this process) into this metric; returns self.

        "sum" states add, "cat" states are concatenated (this one's items first). Raises ValueError when `other`
        is another kind of metric or measures something else (`config`).
        """
        if type(other) is not type(self) or other._reductions != self._reductions or other.config() != self.config():
            raise ValueError(f"cannot merge {type(other).__name__} {other.config()} into "
                             f"{type(self).__name__} {self.config()}")
        for name, reduction in self._reductions.items():
            if reduction == "sum":
                mine = getattr(self, name)
                setattr(self, name, mine + getattr(other, name).to(mine.device))
            else:
                getattr(self, name).extend(getattr(other, name))
        return self

    def sync(self: M, positions: torch.Tensor | None = None) -> M:
        """Make this rank's state the whole dataset's, on every torchrun rank (collective: all ranks call it).

        `positions` (int [n]): the dataset positions of the n items this rank's "cat" states hold, in their order;
        over all ranks together they must be 0..N-1, each once. "sum" states are all-reduced; "cat" states are
        all-gathered and ordered by position. Single-process the "cat" states are ordered by `positions` (already
        in order for a whole stream). Needed only when the metric has "cat" states. Returns self.

        Raises ValueError when `positions` is missing or does not match the items held or the positions do not
        cover the dataset once; RuntimeError when the metric was already synced (reset it first).
        """
        if self._synced:
            raise RuntimeError(f"{type(self).__name__} was already synced: its state is the whole dataset's")
        cats = [name for name, reduction in self._reductions.items() if reduction == "cat"]
        if cats:
            if positions is None:
                raise ValueError(f"{type(self).__name__}.sync needs the items' positions (it has 'cat' states)")
            positions = positions.reshape(-1).long().cpu()
            for name in cats:
                if self.values(name).shape[0] != positions.numel():
                    raise ValueError(f"{type(self).__name__}.{name} holds {self.values(name).shape[0]} items but "
                                     f"{positions.numel()} positions were given")
        sharded = distributed.is_distributed()
        for name, reduction in self._reductions.items():
            if reduction == "sum" and sharded:
                setattr(self, name, distributed.all_reduce(getattr(self, name)))
        if cats:
            assert positions is not None
            everywhere = distributed.all_gather(positions) if sharded else positions
            order = everywhere.argsort()
            if not torch.equal(everywhere[order], torch.arange(everywhere.numel())):
                raise ValueError(f"{type(self).__name__}.sync: the ranks' positions do not cover 0..N-1 once each")
            for name in cats:
                local = self.values(name)
                if sharded:
                    sent = local.to(torch.uint8) if local.dtype == torch.bool else local  # collectives take no bool
                    local = distributed.all_gather(sent).to(local.dtype)
                setattr(self, name, [local[order.to(local.device)]])
        self._synced = True
        return self


__all__ = ["Metric", "REDUCTIONS"]
