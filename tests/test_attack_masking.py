"""Attacks that cannot be fooled silently (issue 14): `zero_gradient` per cell, the masking flags, APGD-DLR and
AutoAttack. A model that quantises its input has no gradient anywhere (100 %); the same trained model with its
logits x 1000 (same predictions) saturates the softmax and is flagged, while APGD-DLR, whose margin loss does not
care about the logits' scale, still finds the real robust accuracy."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from conftest import train_fashion_mlp

import eval
from eval.attacks import AttackSpec, attack_images, zero_gradient_mask
from eval.suites.adversarial import masking_flags

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Scaled(nn.Module):
    """The same predictions, logits multiplied by `factor` (a saturated softmax at 1000)."""

    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.factor


class Quantised(nn.Module):
    """Rounds its input to 8 grey levels first: the input gradient is exactly zero everywhere."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 8) / 8)


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, dict]:
    meta = {"name": "mlp", "num_classes": 10, "input_size": [1, 28, 28], "sha256": "1" * 64,
            "config": {"data": {"dataset": "fashion_mnist", "input_size": [1, 28, 28]}}}
    return train_fashion_mlp(), meta


def _cells(rows: list[dict], metric: str) -> dict[tuple[str, float], float]:
    return {(r["attack"], r["eps"]): r["value"] for r in rows if r["metric"] == metric and r["attack"]}


def _masking(rows: list[dict]) -> dict:
    row = [r for r in rows if r["metric"] == "gradient_masking"][0]
    return {"value": row["value"], "flags": json.loads(row["settings"])["flags"]}


def test_a_quantising_model_has_no_gradient_on_any_image(trained):
    model, meta = trained
    q = Quantised(model).eval()
    x = torch.rand(16, 1, 28, 28)
    assert bool(zero_gradient_mask(q, x, torch.zeros(16, dtype=torch.long)).all())
    rows = eval.evaluate(q, {**meta, "name": "quantised", "sha256": "2" * 64}, "adversarial", limit=40,
                         eps=[0.0, 8.0], attacks=["fgsm", "pgd"], pgd_steps=2, progress=False)
    assert set(_cells(rows, "zero_gradient").values()) == {100.0}
    masking = _masking(rows)
    assert masking["value"] == 4.0  # all four cells
    assert {(f["attack"], f["eps"], f["sign"]) for f in masking["flags"]} >= {("fgsm", 8.0, "zero_gradient"),
                                                                              ("pgd", 8.0, "zero_gradient")}
    summary = eval.summarize(rows)
    assert summary["adversarial_zero_gradient"]["fgsm"]["8"] == 100.0
    assert len(summary["gradient_masking"]) == len(masking["flags"])


def test_logits_times_1000_are_flagged_and_apgd_dlr_is_not_fooled(trained):
    model, meta = trained
    kwargs = dict(limit=200, eps=[0.0, 8.0], attacks=["fgsm", "pgd", "apgd-dlr"], pgd_steps=5, progress=False)
    plain = eval.evaluate(model, meta, "adversarial", **kwargs)
    scaled = eval.evaluate(Scaled(model, 1000.0).eval(), {**meta, "name": "x1000", "sha256": "3" * 64},
                           "adversarial", **kwargs)
    acc_plain, acc_scaled = _cells(plain, "top1"), _cells(scaled, "top1")
    zero_plain, zero_scaled = _cells(plain, "zero_gradient"), _cells(scaled, "zero_gradient")
    assert acc_plain["fgsm", 0.0] == acc_scaled["fgsm", 0.0] > 70  # same predictions
    assert max(zero_plain.values()) == 0.0 and _masking(plain) == {"value": 0.0, "flags": []}
    assert zero_scaled["fgsm", 8.0] > 30.0  # most right images have a saturated softmax
    assert acc_scaled["fgsm", 8.0] > acc_plain["fgsm", 8.0] + 15  # FGSM fooled...
    signs = {(f["attack"], f["eps"], f["sign"]) for f in _masking(scaled)["flags"]}
    assert ("fgsm", 8.0, "zero_gradient") in signs and ("pgd", 8.0, "zero_gradient") in signs  # ...but flagged
    assert acc_scaled["apgd-dlr", 8.0] <= acc_plain["apgd-dlr", 8.0] + 2  # the margin loss sees through it
    assert acc_plain["apgd-dlr", 8.0] <= acc_plain["fgsm", 8.0]
    settings = json.loads([r for r in scaled if r["attack"] == "apgd-dlr" and r["metric"] == "top1"][0]["settings"])
    assert settings["loss"] == "dlr" and settings["steps"] == 5 and settings["library"] == "torchattacks.APGD"


def test_masking_flags_read_rising_curves_and_pgd_above_fgsm():
    def row(attack, eps, value, metric="top1"):
        return {"attack": attack, "eps": eps, "value": value, "metric": metric}

    rows = [row("fgsm", 0.0, 90), row("fgsm", 4.0, 50), row("fgsm", 8.0, 55), row("pgd", 0.0, 90),
            row("pgd", 4.0, 60), row("pgd", 8.0, 40), row("pgd", 8.0, 0.5, "zero_gradient"),
            row("fgsm", 8.0, 1.5, "zero_gradient")]
    flags = {(f["attack"], f["eps"], f["sign"]) for f in masking_flags(rows)}
    assert flags == {("fgsm", 8.0, "rises_with_eps"), ("pgd", 4.0, "weaker_than_fgsm"),
                     ("fgsm", 8.0, "zero_gradient")}


def test_autoattack_runs_seeded_and_is_at_least_as_strong_as_pgd(trained):
    model, meta = trained
    from nst_core.data import FASHION_MNIST_FILES, find_fashion_mnist, read_idx

    root = find_fashion_mnist()
    x = torch.from_numpy(read_idx(root, FASHION_MNIST_FILES["test_images"])[:12].copy()).float().div(255)[:, None]
    y = torch.from_numpy(read_idx(root, FASHION_MNIST_FILES["test_labels"])[:12].copy()).long()
    right = lambda images: model(images).argmax(1).eq(y)  # noqa: E731
    pgd = attack_images(model, AttackSpec("pgd", 24.0, steps=10), x, y, seed=3)
    keep = right(x) & ~right(pgd)  # images PGD breaks: AutoAttack's first component must too (Square then idles)
    x, y = x[keep], y[keep]
    assert len(y) >= 6
    spec = AttackSpec("autoattack", 24.0, n_classes=10)
    a = attack_images(model, spec, x, y, seed=3)
    assert (a - x).abs().max() <= 24 / 255 + 1e-6
    assert torch.equal(a, attack_images(model, spec, x, y, seed=3))  # seeded, not from the clock
    assert int(right(a).sum()) == 0
    assert AttackSpec("autoattack", 8.0, n_classes=10).settings()["components"] == ["apgd-ce", "apgd-t", "fab-t",
                                                                                  "square"]


def test_the_report_lists_the_flags_and_calibration(trained, tmp_path):
    from reports.assemble import build

    model, meta = trained
    eval.evaluate(Quantised(model).eval(), {**meta, "name": "quantised", "sha256": "2" * 64}, "clean,adversarial",
                  out=tmp_path, limit=40, eps=[0.0, 8.0], attacks=["fgsm"], progress=False)
    build(tmp_path / "results.sqlite", tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Signs of masked gradients" in text and "zero_gradient" in text and "clean ECE (%)" in text


def test_seed_changes_are_paired_by_seed():
    import pandas as pd

    from reports.tables import seed_changes

    long = pd.DataFrame({"run": ["a", "a", "b", "b", "c", "c"], "generation": [0, 2, 0, 2, 0, 2],
                         "quantity": ["clean_top1"] * 6, "label": ["clean"] * 6,
                         "value": [80.0, 82.0, 70.0, 73.0, 90.0, 91.0]})
    row = seed_changes(long, {"a": ["a", "b", "c"]}).iloc[0]
    assert row["mean_change"] == pytest.approx(2.0) and row["changes"] == "+2.00, +3.00, +1.00"
    half = 4.302652729911275 * 1.0 / 3 ** 0.5  # t_{0.975, 2} * sd / sqrt(3), sd of (2, 3, 1) = 1
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((2.0 - half, 2.0 + half))
