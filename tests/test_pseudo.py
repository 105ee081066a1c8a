"""Pseudo labels: filtering by confidence, class balancing (exact counts), soft vs hard targets, un-noised teacher."""
import pytest
import torch
from torch import nn

from nst_core.imagesets import ImageSet
from nst_core.pseudo import filter_and_balance, make_targets, pool_accuracy, predict_probs


def probs_from(rows):
    return torch.tensor(rows, dtype=torch.float32)


# 3 classes, 10 pool images: class 0 has 5 confident images, class 1 has 2 (one below the floor), class 2 has 3.
PROBS = probs_from([
    [0.90, 0.05, 0.05], [0.80, 0.10, 0.10], [0.70, 0.20, 0.10], [0.60, 0.20, 0.20], [0.50, 0.30, 0.20],
    [0.10, 0.85, 0.05], [0.35, 0.40, 0.25],  # class 1: 0.85, 0.40
    [0.10, 0.10, 0.80], [0.05, 0.05, 0.90], [0.20, 0.20, 0.60],
])


def test_filter_floor_without_balancing():
    sel = filter_and_balance(PROBS, per_class=4, min_threshold=0.45, balance=False)
    assert sel.before == [5, 2, 3]
    assert sel.kept == [5, 1, 3] and sel.written == [5, 1, 3]
    assert sel.indices.tolist() == [0, 1, 2, 3, 4, 5, 7, 8, 9]


def test_balance_thins_full_and_duplicates_short_classes_exactly():
    sel = filter_and_balance(PROBS, per_class=4, min_threshold=0.45, balance=True, generator=torch.Generator().manual_seed(0))
    assert sel.kept == [4, 1, 3]  # class 0 capped to its 4 most confident images: threshold rises to 0.6
    assert sel.thresholds[0] == pytest.approx(0.6)
    assert sel.written == [4, 4, 4]
    counts = torch.bincount(sel.indices, minlength=10).tolist()
    assert counts[:5] == [1, 1, 1, 1, 0]  # the least confident class-0 image is thinned out
    assert counts[5] == 4 and counts[6] == 0  # the one confident class-1 image written 4 times
    assert sorted(counts[7:]) == [1, 1, 2]  # 4 / 3: each once, one drawn at random a second time


def test_balance_fraction_is_seeded():
    a = filter_and_balance(PROBS, 4, 0.45, True, torch.Generator().manual_seed(1)).indices
    b = filter_and_balance(PROBS, 4, 0.45, True, torch.Generator().manual_seed(1)).indices
    assert torch.equal(a, b)


def test_empty_class_writes_nothing():
    sel = filter_and_balance(PROBS, per_class=4, min_threshold=0.95, balance=True)
    assert sel.kept == [0, 0, 0] and sel.written == [0, 0, 0] and len(sel.indices) == 0


def test_soft_and_hard_targets():
    p = probs_from([[0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])
    assert torch.equal(make_targets(p, "soft"), p)
    assert make_targets(p, "hard").tolist() == [[0, 1, 0], [1, 0, 0]]


def test_pool_accuracy():
    labels = torch.tensor([0, 0, 0, 1, 0, 1, 1, 2, 2, 2])
    assert pool_accuracy(PROBS, labels) == 90.0  # image 3 is labelled 1, predicted 0
    assert pool_accuracy(PROBS, torch.full((10,), -1)) is None


class DropoutNet(nn.Module):
    """Outputs depend on dropout in train mode only."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(3 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(self.drop(x.flatten(1)))


def test_teacher_labels_unnoised_and_temperature_softens():
    torch.manual_seed(0)
    images = ImageSet(torch.zeros(8), 3, "t", images=torch.randint(0, 256, (8, 3, 4, 4), dtype=torch.uint8))
    model = DropoutNet()
    model.train()  # the engine must put it in eval mode itself
    a = predict_probs(model, images, batch_size=3, progress=False)
    b = predict_probs(model, images, batch_size=8, progress=False)
    assert torch.allclose(a, b, atol=1e-6)
    with torch.no_grad():
        expected = torch.softmax(model.eval()(images.images.float() / 255), 1)
    assert torch.allclose(a, expected, atol=1e-6)
    noised = predict_probs(model, images, noised=True, progress=False)
    assert not torch.allclose(noised, a)
    soft = predict_probs(model, images, temperature=4.0, progress=False)
    assert (soft.max(1).values < a.max(1).values).all()
