"""FP / T5D / FR against hand-computed answers and an independent rankdata-based reference."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from eval.metrics.perturbation import (
    EVALUATED_PERTURBATIONS,
    PerturbationMetrics,
    frame_pairs,
    mean_over_perturbations,
    relative_to_baseline,
    sequence_flip_probability,
    sequence_top5_distance,
)

K = 8


def onehot_logits(preds: list[int], k: int = K) -> torch.Tensor:
    """One sequence [1, T, k] whose frame t predicts preds[t] (other classes ranked by index)."""
    logits = -torch.arange(k, dtype=torch.float32).repeat(len(preds), 1) * 0.01
    for t, p in enumerate(preds):
        logits[t, p] = 10.0
    return logits.unsqueeze(0)


def ranked_logits(order: list[int], k: int = K) -> torch.Tensor:
    """One frame [k] whose classes rank as `order` (best first), the rest after them by index."""
    rest = [c for c in range(k) if c not in order]
    logits = torch.empty(k)
    for r, c in enumerate(list(order) + rest):
        logits[c] = float(k - r)
    return logits


def test_frame_pairs_rules():
    e, l = frame_pairs(4, noise=True)
    assert list(zip(e.tolist(), l.tolist())) == [(0, 1), (0, 2), (0, 3)]
    e, l = frame_pairs(4, noise=False)
    assert list(zip(e.tolist(), l.tolist())) == [(0, 1), (1, 2), (2, 3)]
    e, l = frame_pairs(5, noise=False, difficulty=2)
    assert list(zip(e.tolist(), l.tolist())) == [(0, 2), (2, 4), (1, 3)]
    e, _ = frame_pairs(5, noise=True, difficulty=3)  # noise difficulty lives in the data, not the pairing
    assert e.tolist() == [0, 0, 0, 0]


def test_flip_probability_noise_vs_consecutive():
    logits = onehot_logits([0, 1, 0, 2])
    assert sequence_flip_probability(logits, noise=True).item() == pytest.approx(2 / 3)
    assert sequence_flip_probability(logits, noise=False).item() == pytest.approx(1.0)


def test_flip_probability_difficulty_2():
    logits = onehot_logits([0, 0, 1, 1, 1])
    assert sequence_flip_probability(logits, noise=False, difficulty=2).item() == pytest.approx(2 / 3)
    assert sequence_flip_probability(logits, noise=False, difficulty=1).item() == pytest.approx(1 / 4)


def test_frame_equal_to_previous_gives_zero():
    frame = torch.randn(K)
    logits = torch.stack([frame, frame, frame]).unsqueeze(0)
    assert sequence_flip_probability(logits, noise=False).item() == 0.0
    assert sequence_top5_distance(logits, noise=False).item() == 0.0


def test_top5_distance_swaps_and_drop_out():
    base = ranked_logits([0, 1, 2, 3, 4, 5])
    swap = ranked_logits([1, 0, 2, 3, 4, 5])  # sigma = 2,1,3,4,5 -> |0-1| + |1-0| = 2
    drop = ranked_logits([1, 2, 3, 4, 5, 6, 0])  # class 0 falls to rank 7: |0-5| + 4 * 1 = 9
    assert sequence_top5_distance(torch.stack([base, swap]).unsqueeze(0), noise=False).item() == 2.0
    assert sequence_top5_distance(torch.stack([base, drop]).unsqueeze(0), noise=False).item() == 9.0
    # noise rule: both later frames compared with frame 0 -> mean(2, 9)
    seq = torch.stack([base, swap, drop]).unsqueeze(0)
    assert sequence_top5_distance(seq, noise=True).item() == pytest.approx(5.5)
    # consecutive: (base, swap) = 2; (swap, drop): sigma = 1,7,2,3,4 -> 0 + 4 + 1 + 1 + 1 = 7
    assert sequence_top5_distance(seq, noise=False).item() == pytest.approx(4.5)


def test_ties_are_ranked_ordinally_by_class_index():
    tied = torch.zeros(K)  # ranks follow class index: 0, 1, 2, ...
    lifted = torch.zeros(K)
    lifted[4] = 1.0  # class 4 first, then 0, 1, 2, 3 by index: sigma = 2, 3, 4, 5, 1
    seq = torch.stack([tied, lifted]).unsqueeze(0)
    assert sequence_top5_distance(seq, noise=False).item() == 8.0
    assert sequence_flip_probability(seq, noise=False).item() == 1.0  # top-1 of the tied frame is class 0


def reference_metrics(logits: np.ndarray, noise: bool, difficulty: int) -> tuple[float, float]:
    """Independent implementation following the published evaluation loop (rankdata ordinal, argsort inverse)."""
    cum = np.cumsum(np.asarray([0] + [1] * 5 + [0] * (logits.shape[-1] - 5)))
    step = 1 if noise else difficulty
    fps, t5ds = [], []
    for vid in logits:
        preds = vid.argmax(1)
        ranks = [rankdata(-frame, method="ordinal") for frame in vid]
        flips, dists = [], []
        for i in range(step):
            prev_pred, perm1 = preds[i], ranks[i]
            for pred, perm2 in zip(preds[i::step][1:], ranks[i::step][1:]):
                flips.append(int(prev_pred != pred))
                sigma = perm2[np.argsort(perm1)]
                dists.append(np.sum(np.abs(cum[:5] - cum[sigma - 1][:5])))
                if not noise:
                    prev_pred, perm1 = pred, perm2
        fps.append(np.mean(flips))
        t5ds.append(np.mean(dists))
    return float(np.mean(fps)), float(np.mean(t5ds))


@pytest.mark.parametrize("perturbation,difficulty", [("gaussian_noise", 1), ("rotate", 1), ("rotate", 2),
                                                     ("translate", 3)])
def test_streaming_matches_reference_and_merges(perturbation, difficulty):
    gen = torch.Generator().manual_seed(0)
    # coarse logits so ties happen often
    logits = torch.randint(0, 4, (6, 11, 10), generator=gen).float()
    labels = torch.randint(0, 10, (6,), generator=gen)
    ref_fp, ref_t5d = reference_metrics(logits.numpy(), "noise" in perturbation, difficulty)

    whole = PerturbationMetrics(perturbation, difficulty)
    whole.update(logits, labels)
    part_a, part_b = PerturbationMetrics(perturbation, difficulty), PerturbationMetrics(perturbation, difficulty)
    part_a.update(logits[:2], labels[:2])
    part_b.update(logits[2:], labels[2:])
    part_a.merge(part_b)
    for acc in (whole, part_a):
        out = acc.compute()
        assert out["fp"] == pytest.approx(ref_fp)
        assert out["t5d"] == pytest.approx(ref_t5d)
        assert out["n"] == 6
        expected_top1 = 100.0 * (logits.argmax(-1) == labels[:, None]).float().mean().item()
        assert out["top1"] == pytest.approx(expected_top1)
    whole.reset()
    with pytest.raises(ValueError):
        whole.compute()


def test_nan_logits_fail_clearly():
    acc = PerturbationMetrics("rotate")
    with pytest.raises(ValueError, match="NaN"):
        acc.update(torch.full((1, 3, 5), math.nan))


def test_flip_rate_and_means():
    fp = {p: 0.1 for p in EVALUATED_PERTURBATIONS}
    base = {p: 0.2 for p in EVALUATED_PERTURBATIONS}
    fr = {p: relative_to_baseline(fp[p], base[p]) for p in fp}
    assert fr["rotate"] == pytest.approx(50.0)
    assert mean_over_perturbations(fr) == pytest.approx(50.0)
    assert math.isnan(relative_to_baseline(0.1, 0.0))
    with pytest.raises(KeyError, match="scale"):
        mean_over_perturbations({p: 1.0 for p in EVALUATED_PERTURBATIONS if p != "scale"})
