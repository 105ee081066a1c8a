"""eval.metrics.base.Metric: the one mechanism by which metrics merge ("sum" / "cat" states, `merge`, `sync`).

Pinned: two halves of a stream merged locally give exactly the one-stream state (every metric); a sharded stream
synced over two gloo ranks gives every rank exactly the one-process state and figures; bad declarations, bad
positions, mismatched configs and a second sync raise.
"""
from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from eval.metrics import Calibration, Metric, NonFiniteLogits, PerturbationMetrics, TopKAccuracy, ZeroGradient

N_IMAGES, N_CLASSES, BATCH = 23, 7, 3
N_SEQUENCES, PER_STEP = 11, 2


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [23, 7] (row 4 NaN, a few ties) and targets [23]."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(N_IMAGES, N_CLASSES, generator=gen, dtype=torch.float64).float() * 3
    logits[7] = logits[7, 0]  # a row of ties
    logits[4, 2] = math.nan
    return logits, torch.randint(0, N_CLASSES, (N_IMAGES,), generator=gen)


def _sequences() -> tuple[torch.Tensor, torch.Tensor]:
    """Coarse logits of 11 sequences [11, 6 frames, 10 classes] (ties are frequent) and labels [11]."""
    gen = torch.Generator().manual_seed(5)
    return torch.randint(0, 4, (N_SEQUENCES, 6, 10), generator=gen).float(), torch.randint(0, 10, (N_SEQUENCES,),
                                                                                           generator=gen)


def _image_metrics() -> list[Metric]:
    return [TopKAccuracy((1, 5), keep_per_image=True), Calibration(), NonFiniteLogits(), ZeroGradient()]


def _update_images(metrics: list[Metric], logits: torch.Tensor, target: torch.Tensor) -> None:
    acc, cal, bad, zero = metrics
    assert isinstance(acc, TopKAccuracy) and isinstance(cal, Calibration)
    assert isinstance(bad, NonFiniteLogits) and isinstance(zero, ZeroGradient)
    finite = torch.nan_to_num(logits, nan=0.0)
    acc.update(finite, target)
    cal.update(finite, target)
    bad.update(logits)
    zero.update(finite.eq(finite[:, :1]).all(dim=1))  # stands in for a zero-gradient mask: the all-tie rows


def _stream(batches: list[int]) -> tuple[list[Metric], torch.Tensor]:
    """The image metrics over the given batches of BATCH images, and the positions of those images."""
    logits, target = _images()
    metrics = _image_metrics()
    positions = []
    for b in batches:
        span = torch.arange(b * BATCH, min((b + 1) * BATCH, N_IMAGES))
        _update_images(metrics, logits[span], target[span])
        positions.append(span)
    return metrics, torch.cat(positions)


def _sequence_stream(steps: list[int]) -> tuple[PerturbationMetrics, torch.Tensor]:
    logits, labels = _sequences()
    acc = PerturbationMetrics("rotate", difficulty=2)
    positions = []
    for s in steps:
        span = torch.arange(s * PER_STEP, min((s + 1) * PER_STEP, N_SEQUENCES))
        acc.update(logits[span], labels[span])
        positions.append(span)
    return acc, torch.cat(positions)


def _same_state(a: Metric, b: Metric) -> None:
    sa, sb = a.state(), b.state()
    assert list(sa) == list(sb)
    for name in sa:
        assert sa[name].dtype == sb[name].dtype, name
        assert torch.equal(sa[name], sb[name]), name  # exactly: no tolerance (NaN-free states)


def _all_batches(n: int, size: int) -> list[int]:
    return list(range(math.ceil(n / size)))


def test_merging_two_halves_of_a_stream_gives_the_one_stream_state():
    whole, _ = _stream(_all_batches(N_IMAGES, BATCH))
    first, _ = _stream([0, 1, 2])
    second, _ = _stream(list(range(3, 8)))
    for w, a, b in zip(whole, first, second):
        assert a.merge(b) is a
        _same_state(a, w)
    acc, cal, bad, zero = first
    assert acc.n == N_IMAGES and acc.per_image().shape == (N_IMAGES,)
    assert bad.compute().tolist() == [4] and zero.state()["zero"].item() == 1  # row 7: all ties
    assert cal.compute() == whole[1].compute()
    seq_whole, _ = _sequence_stream(_all_batches(N_SEQUENCES, PER_STEP))
    seq_a, _ = _sequence_stream([0, 1])
    seq_b, _ = _sequence_stream([2, 3, 4, 5])
    _same_state(seq_a.merge(seq_b), seq_whole)
    assert seq_a.compute() == seq_whole.compute() and seq_a.compute()["n"] == N_SEQUENCES


def test_single_process_sync_orders_the_items_by_position():
    whole, _ = _stream(_all_batches(N_IMAGES, BATCH))
    shuffled, positions = _stream([5, 0, 7, 2, 1, 6, 3, 4])  # batches in another order: items follow positions
    for w, s in zip(whole, shuffled):
        s.sync(positions)  # ZeroGradient has "sum" states only: its positions are not used
        _same_state(s, w)
    with pytest.raises(RuntimeError, match="already synced"):
        shuffled[0].sync(positions)
    shuffled[0].reset()
    assert shuffled[0].n == 0 and shuffled[0].per_image().numel() == 0


@pytest.mark.parametrize("reduction,default,message", [
    ("max", torch.zeros((), dtype=torch.long), "not one of sum, cat"),
    ("mean", torch.zeros(0), "not one of sum, cat"),
    ("sum", torch.zeros((), dtype=torch.float64), "float 'sum' state"),
    ("cat", torch.zeros(3), "empty tensor"),
    ("cat", torch.zeros(()), "empty tensor"),
])
def test_a_bad_state_declaration_raises(reduction, default, message):
    class Bad(Metric):
        def __init__(self) -> None:
            super().__init__()
            self.add_state("x", default, reduction)

    with pytest.raises(ValueError, match=message):
        Bad()


def test_a_state_declared_twice_raises_and_cat_appends_only_to_cat_states():
    metric = Metric()
    metric.add_state("x", torch.zeros((), dtype=torch.long), "sum")
    with pytest.raises(ValueError, match="already declared"):
        metric.add_state("x", torch.zeros(0), "cat")
    with pytest.raises(KeyError, match="not a 'cat' state"):
        metric.append("x", torch.ones(2))


def test_merging_metrics_that_measure_different_things_raises():
    with pytest.raises(ValueError, match="cannot merge"):
        TopKAccuracy((1, 5)).merge(TopKAccuracy((1, 3)))
    with pytest.raises(ValueError, match="cannot merge"):
        TopKAccuracy(keep_per_image=True).merge(TopKAccuracy(keep_per_image=False))
    with pytest.raises(ValueError, match="cannot merge"):
        Calibration(15).merge(Calibration(10))
    with pytest.raises(ValueError, match="cannot merge"):
        PerturbationMetrics("rotate", 1).merge(PerturbationMetrics("rotate", 2))
    with pytest.raises(ValueError, match="cannot merge"):
        Calibration().merge(NonFiniteLogits())  # type: ignore[arg-type]


def test_sync_checks_the_positions():
    acc, positions = _stream([0, 1])[0][0], torch.arange(6)
    with pytest.raises(ValueError, match="needs the items' positions"):
        acc.sync()
    with pytest.raises(ValueError, match="holds 6 items but 5 positions"):
        acc.sync(positions[:5])
    with pytest.raises(ValueError, match="do not cover 0..N-1"):
        acc.sync(positions + 1)
    with pytest.raises(ValueError, match="do not cover 0..N-1"):
        acc.sync(torch.tensor([0, 1, 2, 2, 3, 4]))
    assert ZeroGradient().sync().compute() == {"zero_gradient": 0.0}  # "sum" states only: no positions needed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_worker(rank: int, port: int) -> None:
    """One of two gloo ranks: batches b with b % 2 == rank (as eval.sharding.rank_batches), then `sync`."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        whole, _ = _stream(_all_batches(N_IMAGES, BATCH))
        mine, positions = _stream([b for b in _all_batches(N_IMAGES, BATCH) if b % 2 == rank])
        for w, m in zip(whole, mine):
            m.sync(positions)
            _same_state(m, w)
        acc, cal, bad, zero = mine
        assert acc.compute() == whole[0].compute() and cal.compute() == whole[1].compute()
        assert bad.compute().tolist() == [4] and zero.compute() == whole[3].compute()
        seq_whole, _ = _sequence_stream(_all_batches(N_SEQUENCES, PER_STEP))
        seq, seq_positions = _sequence_stream([s for s in _all_batches(N_SEQUENCES, PER_STEP) if s % 2 == rank])
        seq.sync(seq_positions)
        _same_state(seq, seq_whole)
        assert seq.compute() == seq_whole.compute() and seq.per_sequence() == seq_whole.per_sequence()
    finally:
        dist.destroy_process_group()


@pytest.mark.usefixtures("one_torch_thread")
def test_two_ranks_synced_hold_exactly_the_one_process_state():
    """Two gloo processes (spawned here), each with every other batch; a failed assertion fails the spawn."""
    mp.spawn(_rank_worker, args=(_free_port(),), nprocs=2, join=True)
