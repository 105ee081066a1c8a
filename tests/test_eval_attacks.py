"""FGSM / PGD on a small trained Fashion-MNIST model: eps 0 = clean, no rise with eps, PGD <= FGSM, seeded."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import train_fashion_mlp

import eval
from eval.attacks import AttackSpec, attack_images

EPS = [0.0, 2.0, 8.0, 16.0]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, dict]:
    meta = {"name": "tiny-cnn", "num_classes": 10, "input_size": [1, 28, 28], "sha256": None,
            "config": {"data": {"dataset": "fashion_mnist", "input_size": [1, 28, 28]}}}
    return train_fashion_mlp(), meta


def test_fgsm_pgd_sanity_relations(trained):
    model, meta = trained
    rows = eval.evaluate(model, meta, "clean,adversarial", limit=300, eps=EPS, pgd_steps=5, progress=False)
    clean = [r["value"] for r in rows if r["suite"] == "clean" and r["metric"] == "top1"][0]
    acc = {(r["attack"], r["eps"]): r["value"] for r in rows if r["suite"] == "adversarial" and r["metric"] == "top1"}
    assert clean > 70.0  # a trained model, else the relations below say little
    assert acc["fgsm", 0.0] == clean and acc["pgd", 0.0] == clean
    for attack in ("fgsm", "pgd"):
        curve = [acc[attack, e] for e in EPS]
        assert all(b <= a for a, b in zip(curve, curve[1:])), (attack, curve)
    for e in EPS[1:]:
        assert acc["pgd", e] <= acc["fgsm", e], (e, acc)
    assert acc["pgd", 16.0] < clean - 30  # the attack really attacks
    assert all(r["n"] == 300 for r in rows)
    summary = eval.summarize(rows)
    assert summary["adversarial_top1"]["pgd"]["16"] == acc["pgd", 16.0]


def test_attacks_stay_in_the_eps_ball_are_seeded_and_leave_state_alone(trained):
    model, _ = trained
    from nst_core.data import FASHION_MNIST_FILES, find_fashion_mnist, read_idx

    root = find_fashion_mnist()
    x = torch.from_numpy(read_idx(root, FASHION_MNIST_FILES["test_images"])[:64].copy()).float().div(255)[:, None]
    y = torch.from_numpy(read_idx(root, FASHION_MNIST_FILES["test_labels"])[:64].copy()).long()
    spec = AttackSpec("pgd", 4.0, steps=3)
    before = torch.random.get_rng_state()
    a = attack_images(model, spec, x, y, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is untouched
    assert torch.equal(a, attack_images(model, spec, x, y, seed=1))
    assert not torch.equal(a, attack_images(model, spec, x, y, seed=2))  # the random start is seeded
    assert (a - x).abs().max() <= 4 / 255 + 1e-6 and a.min() >= 0 and a.max() <= 1
    fgsm = attack_images(model, AttackSpec("fgsm", 2.0), x, y, seed=0)
    changed = (fgsm - x).abs()
    assert changed.max() == pytest.approx(2 / 255, abs=1e-6)
    assert not model.training
    model.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        attack_images(model, spec, x, y, seed=1)
    model.eval()
    with pytest.raises(ValueError, match="unknown attack"):
        attack_images(model, AttackSpec("cw", 1.0), x, y, seed=0)
