"""Generated -C sets on the quick run's checkpoints: per-image seeding, the disk cache, resume, the CLI end to end."""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import torch
from torch import nn

import eval
import eval.corruptions
from eval.cli import main
from eval.context import EvalContext, EvalOptions
from eval.corruptions.perturbations import generate_sequences
from eval.datasets import clean_test_set, corrupted_set
from eval.examples import write_examples
from eval.store import ResultStore
from eval.suites import resolve_suites

SOME = ["gaussian_noise", "fog", "saturate"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_generated_images_are_seeded_per_image_and_cached(quick_run, tmp_path, monkeypatch):
    from nst_core import load_model

    _, meta = load_model(quick_run / "gen0")
    clean = clean_test_set(meta, limit=40)
    a = corrupted_set(clean, "gaussian_noise", 3, cache_dir=tmp_path, progress=False)
    assert a.images.shape == clean.images.shape == (40, 3, 32, 32) and a.images.dtype == torch.uint8
    assert not torch.equal(a.images, clean.images)
    assert len(list(tmp_path.rglob("gaussian_noise-3.npy"))) == 1
    # a different subset (another cache entry, generated again) gives the same image for the same dataset index
    part = corrupted_set(clean.subset(torch.tensor([3, 17, 30])), "gaussian_noise", 3, cache_dir=tmp_path,
                         progress=False)
    assert torch.equal(part.images, a.images[[3, 17, 30]])

    def no_generation(*args, **kwargs):
        raise AssertionError("the cached set was generated again")

    monkeypatch.setattr(eval.corruptions, "corrupt", no_generation)
    again = corrupted_set(clean, "gaussian_noise", 3, cache_dir=tmp_path, progress=False)
    assert torch.equal(again.images, a.images)
    assert not any(p.name.endswith(".tmp") or p.name.startswith(".") for p in tmp_path.rglob("*"))


class Counting(nn.Module):
    """Counts forward calls; raises KeyboardInterrupt at call `stop_at` (a kill in the middle of a cell)."""

    def __init__(self, inner: nn.Module, stop_at: int | None = None) -> None:
        super().__init__()
        self.inner, self.stop_at, self.calls = inner, stop_at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.stop_at is not None and self.calls >= self.stop_at:
            raise KeyboardInterrupt
        return self.inner(x)


def test_resume_after_interrupt_recomputes_nothing_stored(quick_run, tmp_path):
    from nst_core import load_model

    model, meta = load_model(quick_run / "gen0")
    kw = dict(suite="clean,corruption", corruptions=SOME, limit=20, batch_size=10, cache_dir=tmp_path / "cache",
              progress=False)
    cells, calls_per_cell = 1 + 3 * 5, 2
    with pytest.raises(KeyboardInterrupt):  # killed in the 7th cell (after 6 whole cells = 12 calls)
        eval.evaluate(Counting(model, stop_at=14).eval(), meta, out=tmp_path / "out", **kw)
    with ResultStore(tmp_path / "out" / "results.sqlite") as store:
        assert len(store.rows(metric="top1")) == 6
    resumed = Counting(model).eval()
    rows = eval.evaluate(resumed, meta, out=tmp_path / "out", **kw)
    assert resumed.calls == (cells - 6) * calls_per_cell
    full = eval.evaluate(model, meta, out=tmp_path / "fresh", **kw)
    key = lambda r: (r["suite"], str(r["corruption"]), str(r["severity"]), r["metric"])  # noqa: E731
    assert sorted((key(r), r["value"]) for r in rows) == sorted((key(r), r["value"]) for r in full)
    third = Counting(model).eval()
    eval.evaluate(third, meta, out=tmp_path / "out", **kw)
    assert third.calls == 0
    forced = Counting(model).eval()
    eval.evaluate(forced, meta, out=tmp_path / "out", force=True, **kw)
    assert forced.calls == cells * calls_per_cell
    # gen0 is its own baseline: CE 100 everywhere; no mCE without all 15 common corruptions
    ce = [r["value"] for r in rows if r["metric"] == "ce"]
    assert ce == pytest.approx([100.0] * 3) and not [r for r in rows if r["metric"] == "mce"]


def test_robustness_expands_to_the_suites_the_data_supports(quick_run):
    from nst_core import load_model

    model, meta = load_model(quick_run / "gen0")
    suites, plans, skipped = resolve_suites("robustness", EvalContext(model, meta))
    own = {s.name for s in suites}
    assert {"clean", "corruption", "adversarial", "perturbation"} <= own and "natural-adversarial" not in own
    assert {p.suite: p.cells for p in plans} == {"clean": 1, "corruption": 95, "adversarial": 10, "perturbation": 14}
    # ImageNet-A that does not fit (a missing folder here; a 10-class model below) is skipped, the rest still run
    suites, _, skipped = resolve_suites("robustness", EvalContext(model, meta, data=eval.DataSources(imagenet_a="/x")))
    assert "not found: /x" in skipped["natural-adversarial"]
    assert {"clean", "corruption", "adversarial", "perturbation"} <= {s.name for s in suites}
    with pytest.raises(ValueError, match="--imagenet-a"):
        resolve_suites("natural-adversarial", EvalContext(model, meta))
    with pytest.raises(ValueError, match=r"unknown attack\(s\) \['fgsn'\]"):
        resolve_suites("adversarial", EvalContext(model, meta, options=eval.EvalOptions(attacks=["fgsn"])))
    with pytest.raises(ValueError, match="unknown suite 'bogus'"):
        resolve_suites("clean,bogus", EvalContext(model, meta))


def test_cli_scores_every_generation_against_gen0(quick_run, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["--run", str(quick_run), "--suite", "clean,corruption,adversarial", "--limit", "16", "--eps", "0,4",
            "--pgd-steps", "2", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())["models"]
    assert set(summary) == {"quick/gen0", "quick/gen1"}
    gen0, gen1 = summary["quick/gen0"], summary["quick/gen1"]
    assert gen0["mce"] == pytest.approx(100.0) and list(gen0["ce"].values()) == pytest.approx([100.0] * 19)
    # relative CE is undefined (null) where the baseline's corrupted error does not exceed its clean error
    defined = [v for v in gen0["relative_ce"].values() if v is not None]
    assert defined and defined == pytest.approx([100.0] * len(defined))
    assert gen1["baseline"] == "quick/gen0" and gen1["corruption_dataset"] == "fashion_mnist-c/torch"
    assert 0 < gen1["mce"] and gen1["clean_n"] == 16 and set(gen1["adversarial_top1"]) == {"fgsm", "pgd"}
    assert gen1["adversarial_top1"]["fgsm"]["0"] == gen1["clean_top1"]
    con = sqlite3.connect(out / "results.sqlite")
    per_model = dict(con.execute("SELECT model, COUNT(*) FROM results WHERE suite='corruption' AND metric='top1' "
                                 "GROUP BY model").fetchall())
    assert per_model == {"quick/gen0": 95, "quick/gen1": 95}
    assert con.execute("SELECT COUNT(*) FROM per_image WHERE n = 16").fetchone()[0] == 2 * (1 + 95 + 4)
    assert con.execute("SELECT COUNT(*) FROM models").fetchone()[0] == 2
    settings = json.loads(con.execute("SELECT settings FROM results WHERE metric='mce' AND model='quick/gen1'")
                          .fetchone()[0])
    assert settings["baseline"] == "quick/gen0" and settings["backend"] == "torch"
    assert "quick/gen1 | clean top-1" in capsys.readouterr().out
    with np.load(out / "examples.npz", allow_pickle=False) as shown:  # the report's strip: the first clean image
        assert set(shown.files) == {"images", "titles", "source"}  # no perturbation suite, so no frames
        assert shown["images"].shape == (20, 3, 32, 32) and list(shown["titles"][:2]) == ["clean", "gaussian_noise s3"]
        clean = clean_test_set(json.loads((quick_run / "gen0" / "meta.json").read_text()), limit=16)
        corrupted = corrupted_set(clean, "gaussian_noise", 3, cache_dir=tmp_path / "cache", progress=False)
        assert np.array_equal(shown["images"][0], clean.images[0].numpy())
        assert np.array_equal(shown["images"][1], corrupted.images[0].numpy())  # what the models were scored on
    assert main(["--checkpoint", str(tmp_path / "nowhere"), "--out", str(out), "--no-progress"]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_examples_hold_one_image_frames_per_perturbation(quick_run, tmp_path):
    from nst_core import load_model

    model, meta = load_model(quick_run / "gen0")
    ctx = EvalContext(model, meta, options=EvalOptions(limit=16, perturbations=["rotate", "translate", "shot_noise"]))
    assert write_examples(tmp_path, ctx, ["clean", "adversarial"]) is None  # nothing to show
    path = write_examples(tmp_path, ctx, ["perturbation"])
    with np.load(path, allow_pickle=False) as shown:
        assert "images" not in shown.files and list(shown["perturbations"]) == ["rotate", "translate", "shot_noise"]
        assert shown["frames"].shape == (3, 8, 3, 32, 32) and shown["frame_index"][1].tolist()[-1] == 40
        clean = ctx.clean_set()
        rotate = generate_sequences(clean.images[:1], "rotate", clean.indices[:1].tolist())[0]
        assert np.array_equal(shown["frames"][0], rotate[shown["frame_index"][0]].numpy())
    before = path.stat().st_mtime_ns
    assert write_examples(tmp_path, ctx, ["perturbation"]) == path and path.stat().st_mtime_ns == before  # kept


def test_limit_is_a_fixed_seeded_sorted_subset():
    from eval.datasets import seeded_subset

    a = seeded_subset(10_000, 50, seed=0)
    assert torch.equal(a, seeded_subset(10_000, 50, seed=0)) and len(set(a.tolist())) == 50
    assert torch.equal(a, a.sort().values) and not torch.equal(a, seeded_subset(10_000, 50, seed=1))
    assert torch.equal(seeded_subset(30, None), torch.arange(30)) and torch.equal(seeded_subset(30, 99), torch.arange(30))
    with pytest.raises(ValueError, match="positive"):
        seeded_subset(30, 0)
