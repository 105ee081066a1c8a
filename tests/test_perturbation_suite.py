"""The `perturbation` suite on generated sequences: rows, baseline normalisation, aggregates, resume."""
import math

import pytest
import torch
from torch import nn

from eval.context import EvalContext, EvalOptions
from nst_core.imagesets import ImageSet
from eval.corruptions.catalog import EVALUATED_PERTURBATIONS
from eval.store import ResultStore
from eval.suites import SUITES


def tiny_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 5)).eval()


def meta(name: str) -> dict:
    return {"name": name, "num_classes": 5, "input_size": [3, 16, 16], "sha256": None}


@pytest.fixture()
def clean() -> ImageSet:
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(5, 3, 16, 16, generator=gen) * 255).to(torch.uint8)
    return ImageSet(name="toy", labels=torch.tensor([0, 1, 2, 3, 4]), num_classes=5, indices=torch.arange(5),
                   images=images)


def context(store, clean, tmp_path, model_seed=1, baseline=None, perturbations=None) -> EvalContext:
    options = EvalOptions(batch_size=64, cache_dir=tmp_path / "cache", progress=False)
    options.perturbations = perturbations
    options.perturbation_limit = 4
    return EvalContext(tiny_model(model_seed), meta(f"model{model_seed}"), store, options=options,
                       baseline=baseline, clean=clean)


def test_suite_rows_baseline_and_resume(clean, tmp_path):
    store = ResultStore(None)
    baseline = (tiny_model(2), meta("model2"))
    rows = SUITES["perturbation"].run(context(store, clean, tmp_path, baseline=baseline,
                                              perturbations=list(EVALUATED_PERTURBATIONS)))
    by = {(r["corruption"], r["metric"]): r for r in rows}
    for p in EVALUATED_PERTURBATIONS:
        for m in ("fp", "t5d", "top1", "fr", "t5d_rel"):
            assert (p, m) in by and by[(p, m)]["n"] == 4 and by[(p, m)]["dataset"] == "toy-p/torch"
        assert 0.0 <= by[(p, "fp")]["value"] <= 1.0
    base_rows = {(r["corruption"], r["metric"]): r["value"] for r in store.rows(model="model2")}
    for p in EVALUATED_PERTURBATIONS:  # the baseline's own values are stored, and FR is relative to them
        if base_rows[(p, "fp")] > 0:
            assert by[(p, "fr")]["value"] == pytest.approx(100 * by[(p, "fp")]["value"] / base_rows[(p, "fp")])
    fr = [by[(p, "fr")]["value"] for p in EVALUATED_PERTURBATIONS]
    if all(v is not None for v in fr):
        assert by[(None, "mfr")]["value"] == pytest.approx(sum(fr) / len(fr))
    assert (None, "mt5d") in by and "AlexNet" not in by[(None, "mfr")]["settings"]
    frames = {p: 41 if p == "translate" else 31 for p in EVALUATED_PERTURBATIONS}
    frame_top1 = sum(by[(p, "top1")]["value"] * f for p, f in frames.items()) / sum(frames.values())
    assert by[(None, "top1")]["value"] == pytest.approx(frame_top1)
    assert all(r["severity"] is None for r in rows)

    again = context(store, clean, tmp_path, baseline=baseline, perturbations=list(EVALUATED_PERTURBATIONS))
    rows_again = SUITES["perturbation"].run(again)
    assert again.counts["computed"] == 0  # everything came back from the store
    assert {(r["corruption"], r["metric"]) for r in rows_again} == set(by)


def test_model_as_its_own_baseline_gives_100(clean, tmp_path):
    ctx = context(ResultStore(None), clean, tmp_path, perturbations=["rotate", "gaussian_noise"])
    ctx.baseline = (ctx.model, ctx.meta)
    rows = SUITES["perturbation"].run(ctx)
    fr = [r["value"] for r in rows if r["metric"] == "fr"]
    assert len(fr) == 2 and all(v is None or math.isclose(v, 100.0) for v in fr)
    assert not any(r["corruption"] is None for r in rows)  # only 2 of the 10: no means


def test_nan_logits_are_a_clear_error(clean, tmp_path):
    from eval.context import EvaluationError

    ctx = context(ResultStore(None), clean, tmp_path, perturbations=["rotate"])
    ctx.model = nn.Sequential(ctx.model, nn.Hardtanh(math.nan, math.nan))
    with pytest.raises(EvaluationError, match="rotate"):
        SUITES["perturbation"].run(ctx)


def test_imagenet_p_videos_without_baseline(tmp_path):
    from eval.context import DataSources
    from test_perturbation_reader import ramp_frames, write_video

    for i, wnid in enumerate(["n01", "n02"]):
        write_video(tmp_path / "p" / "rotate" / wnid / f"v{i}.mp4", ramp_frames(10 * i))
    options = EvalOptions(progress=False, perturbations=["rotate"], perturbation_difficulty=2,
                          imagenet_p_method="crop")  # 48-px stand-in videos, as 224-px ones at 224
    ctx = EvalContext(tiny_model(0), meta("m"), ResultStore(None), DataSources(imagenet_p=tmp_path / "p"), options)
    rows = SUITES["perturbation"].run(ctx)
    by = {r["metric"]: r for r in rows}
    assert set(by) == {"fp", "t5d", "top1"} and by["fp"]["n"] == 2
    assert by["fp"]["dataset"] == "imagenet-p-d2"
    assert by["top1"]["value"] is None  # a partial class tree: labels unknown, no frame accuracy
    assert "no baseline named" in by["fp"]["settings"]
