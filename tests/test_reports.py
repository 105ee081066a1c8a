"""Tests of the report stage on small hand-made results stores written per docs/contracts.md."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reports
import reports.corruptions
from eval.metrics.corruption import FORMULAS, definition
from reports import cli, derived, tables
from reports.derived import derived_cis
from reports.load import Store, load_stores
from reports.stats import accuracy_ci, bootstrap_ci, clopper_pearson, mcnemar_exact

N = 100
SEVERITIES = (1, 2, 3, 4, 5)
CORRUPTION_DROP = {"gaussian_noise": 8, "defocus_blur": 5, "snow": 6, "contrast": 10, "speckle_noise": 4}
COMMON_HERE = ("gaussian_noise", "defocus_blur", "snow", "contrast")
ATTACKS = {("FGSM", 0.0): 0, ("FGSM", 2.0): 3, ("FGSM", 8.0): 3, ("PGD", 2.0): 5, ("PGD", 8.0): 5}
CLEAN = {"fmnist/gen0": 80, "fmnist/gen1": 85, "fmnist/gen2": 90, "fmnist_nodrop/gen0": 80, "fmnist_nodrop/gen1": 83,
         "timm:resnet18": 70}
MFR = {"fmnist/gen0": 100.0, "fmnist/gen1": 90.0, "fmnist/gen2": 80.0}
BASELINE = "fmnist/gen0"
VERSIONS = {"torch": "2.4.1", "timm": "1.0.9", "torchattacks": "3.5.1"}
RESULT_SQL = """CREATE TABLE results (model TEXT, checkpoint_sha256 TEXT, run TEXT, generation INTEGER, suite TEXT,
    dataset TEXT, corruption TEXT, severity INTEGER, attack TEXT, eps REAL, metric TEXT, value REAL, n INTEGER,
    settings TEXT, created TEXT)"""
MODELS_SQL = """CREATE TABLE models (model TEXT, checkpoint_sha256 TEXT, run TEXT, generation INTEGER, source TEXT,
    meta TEXT)"""
PER_IMAGE_SQL = """CREATE TABLE per_image (model TEXT, suite TEXT, dataset TEXT, corruption TEXT, severity INTEGER,
    attack TEXT, eps REAL, correct BLOB, n INTEGER)"""


def corrupted_top1(model: str, corruption: str, severity: int) -> int:
    """Hand-made accuracy: clean minus a per-corruption drop per severity step."""
    return CLEAN[model] - CORRUPTION_DROP[corruption] * severity


def attacked_top1(model: str, attack: str, eps: float) -> int:
    """Hand-made robust accuracy: clean minus a per-attack drop per eps unit (eps 0 gives clean)."""
    return CLEAN[model] - int(ATTACKS[(attack, eps)] * eps)


def expected_ce(model: str, corruption: str) -> float:
    """CE_c = 100 * sum_s E_model / sum_s E_baseline (errors in percent)."""
    ours = sum(100 - corrupted_top1(model, corruption, s) for s in SEVERITIES)
    base = sum(100 - corrupted_top1(BASELINE, corruption, s) for s in SEVERITIES)
    return 100 * ours / base


def expected_relative_ce(model: str, corruption: str) -> float:
    """Relative CE_c = 100 * sum_s (E - E_clean) / sum_s (E_base - E_clean_base)."""
    ours = sum(CLEAN[model] - corrupted_top1(model, corruption, s) for s in SEVERITIES)
    base = sum(CLEAN[BASELINE] - corrupted_top1(BASELINE, corruption, s) for s in SEVERITIES)
    return 100 * ours / base


def expected_mce(model: str) -> float:
    """Mean CE over the common corruptions present."""
    return float(np.mean([expected_ce(model, c) for c in COMMON_HERE]))


def baseline_errors() -> dict[str, list[float]]:
    """The CE baseline's errors (fractions) per corruption and severity, as nst-eval holds them."""
    return {c: [(100 - corrupted_top1(BASELINE, c, s)) / 100 for s in SEVERITIES] for c in CORRUPTION_DROP}


def with_definition(settings: str, metric: str, corruptions: tuple[str, ...] | list[str]) -> str:
    """Row settings plus the definition nst-eval records (`eval.metrics.corruption.definition`)."""
    record = definition(metric, list(corruptions), BASELINE, baseline_errors(), (100 - CLEAN[BASELINE]) / 100,
                        {"suite": "clean", "dataset": "fashion_mnist", "n": N, "data_id": None})
    return json.dumps({**json.loads(settings), "definition": record})


def bits(correct: int) -> bytes:
    """Packed per-image correctness: the first `correct` of N images right."""
    return np.packbits(np.arange(N) < correct).tobytes()


def config(run: str, dropout: float) -> dict:
    """A run config: identical between sibling runs except student.dropout (and the run's own name and folder)."""
    return {"name": run, "out_dir": f"runs/{run}", "seed": 0, "data": {"dataset": "fashion_mnist",
                                                                       "input_size": [1, 28, 28]},
            "student": {"arch": "resnet18", "dropout": dropout, "noise": {"randaugment": [2, 9]}},
            "generations": 3}


def write_store(path: Path, models: list[str], per_image: bool = True) -> Path:
    """Write a results store per the contract: clean, corruption, adversarial, perturbation rows and per-image bits."""
    con = sqlite3.connect(path)
    con.execute(RESULT_SQL)
    con.execute(MODELS_SQL)
    if per_image:
        con.execute(PER_IMAGE_SQL)
    settings = json.dumps({"data": "fashion_mnist", "limit": N, "seed": 0, "versions": VERSIONS})
    ce_settings = json.dumps({"data": "fashion_mnist", "limit": N, "seed": 0, "baseline": BASELINE})
    for model in models:
        if model.startswith("timm:"):
            run, generation, meta = None, None, {"name": model, "sha256": None}
        else:
            run, gen = model.rsplit("/", 1)
            generation = int(gen[3:])
            meta = {"name": model, "run": run, "generation": generation, "versions": VERSIONS,
                    "config": config(run, 0.0 if run.endswith("nodrop") else 0.2), "input_size": [1, 28, 28],
                    "num_classes": 10, "arch": "resnet18", "metrics": {"test_top1": 80.0 + generation},
                    "history": [{"epoch": e, "loss": 2.0 / e, "lr": 0.1 / e} for e in (1, 2, 3)]}
            if generation:
                meta["pseudo_labels"] = {"before_per_class": [12, 8] * 5, "kept_per_class": [10, 8] * 5,
                                         "written_per_class": [10, 10] * 5, "accuracy_on_pool": 70.0 + generation,
                                         "accuracy_on_kept": 75.0 + generation, "unique_images": 90, "entries": 100}
        con.execute("INSERT INTO models VALUES (?,?,?,?,?,?)",
                    (model, f"sha-{model}", run, generation, f"runs/{model}", json.dumps(meta)))

        def add(suite, corruption, severity, attack, eps, metric, value, n=N, extra=settings, correct=None,
                dataset="fashion_mnist"):
            con.execute("INSERT INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (model, f"sha-{model}", run, generation, suite, dataset, corruption, severity,
                         attack, eps, metric, value, n, extra, "2026-11-22T05:00:00"))
            if per_image and correct is not None:
                con.execute("INSERT INTO per_image VALUES (?,?,?,?,?,?,?,?,?)",
                            (model, suite, "fashion_mnist", corruption, severity, attack, eps, bits(correct), N))

        add("clean", None, None, None, None, "top1", float(CLEAN[model]), correct=CLEAN[model])
        for corruption in CORRUPTION_DROP:
            for severity in SEVERITIES:
                top1 = corrupted_top1(model, corruption, severity)
                add("corruption", corruption, severity, None, None, "top1", float(top1), correct=top1)
            add("corruption", corruption, None, None, None, "ce", expected_ce(model, corruption),
                extra=with_definition(ce_settings, "ce", [corruption]))
            add("corruption", corruption, None, None, None, "relative_ce", expected_relative_ce(model, corruption),
                extra=with_definition(ce_settings, "relative_ce", [corruption]))
        add("corruption", None, None, None, None, "mce", expected_mce(model),
            extra=with_definition(ce_settings, "mce", COMMON_HERE))
        add("corruption", None, None, None, None, "relative_mce",
            float(np.mean([expected_relative_ce(model, c) for c in COMMON_HERE])),
            extra=with_definition(ce_settings, "relative_mce", COMMON_HERE))
        add("corruption", None, None, None, None, "mean_corruption_top1",
            float(np.mean([corrupted_top1(model, c, s) for c in COMMON_HERE for s in SEVERITIES])),
            extra=with_definition(settings, "mean_corruption_top1", COMMON_HERE))
        for attack, eps in ATTACKS:
            top1 = attacked_top1(model, attack, eps)
            add("adversarial", None, None, attack, eps, "top1", float(top1), correct=top1)
        if model in MFR:  # as nst-eval writes them: corruption = perturbation, severity NULL, difficulty 2 in the name
            for metric, value in (("fp", 0.05), ("fr", MFR[model]), ("top1", 47.0)):
                add("perturbation", "gaussian_noise", None, None, None, metric, value, dataset="fashion_mnist-p")
            add("perturbation", "gaussian_noise", None, None, None, "fp", 0.08, dataset="fashion_mnist-p-d2")
            add("perturbation", "brightness", None, None, None, "fp", 0.01, dataset="fashion_mnist-p")
            add("perturbation", None, None, None, None, "mfr", MFR[model], dataset="fashion_mnist-p",
                extra=ce_settings)  # as nst-eval: the FR baseline in the settings
            if model == "fmnist/gen2":  # the evaluator's paired bootstrap interval over sequences
                add("perturbation", None, None, None, None, "mfr_low", 70.0, dataset="fashion_mnist-p")
                add("perturbation", None, None, None, None, "mfr_high", 95.0, dataset="fashion_mnist-p")
    con.commit()
    con.close()
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two stores: run `fmnist` gen0..gen2; the sibling ablation run `fmnist_nodrop` (dropout 0.0) and a timm model."""
    folder = tmp_path_factory.mktemp("stores")
    main = write_store(folder / "main.sqlite", ["fmnist/gen0", "fmnist/gen1", "fmnist/gen2"])
    sibling = write_store(folder / "sibling.sqlite", ["timm:resnet18", "fmnist_nodrop/gen1", "fmnist_nodrop/gen0"])
    return [main, sibling]


@pytest.fixture(scope="module")
def loaded(stores: list[Path]) -> Store:
    """Both stores, merged."""
    return load_stores(stores)


@pytest.fixture(scope="module")
def long(loaded: Store) -> pd.DataFrame:
    """The headline in long form against the baseline, indexed by (model, quantity)."""
    return tables.headline_long(loaded, BASELINE).set_index(["model", "quantity"])


@pytest.fixture(scope="module")
def report(stores: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The full report built from both stores with example images."""
    out = tmp_path_factory.mktemp("report")
    examples = out.parent / "examples.npz"
    images = (np.arange(4 * 28 * 28).reshape(4, 1, 28, 28) % 256).astype(np.uint8)
    frames = (np.arange(2 * 3 * 28 * 28).reshape(2, 3, 1, 28, 28) % 251).astype(np.uint8)
    np.savez(examples, images=images, titles=np.array(["clean", "gaussian_noise s3", "snow s3", "contrast s5"]),
             frames=frames, frame_index=np.array([[0, 15, 30], [0, 20, 40]]),
             perturbations=np.array(["rotate", "translate"]), source=np.array("fmnist test image 7"))
    return reports.build(stores, out, baseline=BASELINE, examples=examples)


def test_models_are_merged_grouped_by_run_and_ordered_by_generation(loaded: Store) -> None:
    assert loaded.order == ["fmnist/gen0", "fmnist/gen1", "fmnist/gen2", "fmnist_nodrop/gen0", "fmnist_nodrop/gen1",
                            "timm:resnet18"]


def test_headline_carries_stored_values_and_exact_deltas(long: pd.DataFrame) -> None:
    for model in CLEAN:
        assert long.loc[(model, "clean_top1"), "value"] == CLEAN[model]
        assert long.loc[(model, "mce"), "value"] == pytest.approx(expected_mce(model), abs=1e-12)
        assert long.loc[(model, "mce"), "delta"] == pytest.approx(expected_mce(model) - 100.0, abs=1e-12)
        assert long.loc[(model, "PGD_eps8"), "value"] == attacked_top1(model, "PGD", 8.0)
    assert long.loc[("fmnist/gen2", "clean_top1"), "delta"] == 10.0
    assert long.loc[("fmnist/gen2", "mfr"), "delta"] == -20.0
    assert ("fmnist_nodrop/gen0", "mfr") not in long.index
    assert "imagenet_a_top1" not in long.index.get_level_values("quantity")


def test_paired_test_is_mcnemar_on_the_stored_bits(long: pd.DataFrame) -> None:
    # gen2 gets images 80..89 right that gen0 gets wrong, and none the other way: p = 2 * 0.5**10
    assert long.loc[("fmnist/gen2", "clean_top1"), "p_value"] == pytest.approx(2 * 0.5**10, rel=1e-12)
    assert long.loc[("fmnist/gen2", "clean_top1"), "test"].startswith("McNemar exact")
    assert long.loc[(BASELINE, "clean_top1"), "test"] == "baseline"
    gen2_mfr = long.loc[("fmnist/gen2", "mfr")]  # the stored interval is the change's, minus the baseline's 100
    assert (gen2_mfr["ci_low"], gen2_mfr["ci_high"], gen2_mfr["delta_low"], gen2_mfr["delta_high"]) == (70, 95, -30, -5)
    assert gen2_mfr["test"] == "paired bootstrap over sequences (percentile CI of the change)"
    assert long.loc[("fmnist/gen1", "mfr"), "test"].startswith("n/a (no interval stored")


def test_derived_metric_changes_get_a_paired_bootstrap_interval(long: pd.DataFrame) -> None:
    row = long.loc[("fmnist/gen2", "mce")]
    assert row["test"] == "paired bootstrap over images (percentile CI of the change)"
    assert row["delta_low"] < row["delta"] < row["delta_high"] < 0  # 10 points fewer errors in every cell
    # the same images resampled for both models: the change's interval is narrower than the model's own interval
    assert row["delta_high"] - row["delta_low"] < row["ci_high"] - row["ci_low"]
    assert np.isnan(long.loc[(BASELINE, "mce"), "delta_low"])


def test_clopper_pearson_on_known_case() -> None:
    low, high = clopper_pearson(90, 100)
    assert low == pytest.approx(0.8237774022598247, abs=1e-12)
    assert high == pytest.approx(0.9509953107785141, abs=1e-12)
    assert accuracy_ci(90.0, 100) == pytest.approx((82.37774022598247, 95.09953107785141), abs=1e-10)
    assert clopper_pearson(0, 10)[0] == 0.0 and clopper_pearson(10, 10)[1] == 1.0


def test_mcnemar_exact_on_hand_made_pair() -> None:
    model = np.array([True] * 10 + [False] * 2 + [True] * 5 + [False] * 3)
    baseline = np.array([False] * 10 + [True] * 2 + [True] * 5 + [False] * 3)
    result = mcnemar_exact(model, baseline)
    assert (result.only_model, result.only_baseline) == (10, 2)
    assert result.p_value == pytest.approx(158 / 4096, rel=1e-12)  # 2 * (C(12,0) + C(12,1) + C(12,2)) / 2**12
    assert mcnemar_exact(model, model).p_value == 1.0


def test_derived_metric_cis_bootstrap_when_bits_reproduce_values(long: pd.DataFrame) -> None:
    for quantity in ("mce", "relative_mce", "mean_corruption_top1"):
        row = long.loc[("fmnist/gen1", quantity)]
        assert row["ci_method"].startswith("bootstrap"), quantity
        assert row["ci_low"] < row["value"] < row["ci_high"]
    assert long.loc[("fmnist/gen1", "mfr"), "ci_method"].startswith("n/a")
    assert long.loc[(BASELINE, "mce"), "ci_method"] == "n/a (the CE baseline itself: 100 by definition)"
    assert long.loc[(BASELINE, "mean_corruption_top1"), "ci_method"].startswith("bootstrap")


def test_derived_cis_compute_over_the_stored_definition(tmp_path: Path) -> None:
    """The mCE row's definition lists 2 of the 4 common corruptions here: its interval is over exactly those."""
    path = write_store(tmp_path / "subset.sqlite", [BASELINE, "fmnist/gen1"])
    subset = ("snow", "contrast")
    value = float(np.mean([expected_ce("fmnist/gen1", c) for c in subset]))
    ce_settings = json.dumps({"baseline": BASELINE})
    with sqlite3.connect(path) as con:
        con.execute("UPDATE results SET value = ?, settings = ? WHERE model = 'fmnist/gen1' AND metric = 'mce'",
                    (value, with_definition(ce_settings, "mce", subset)))
    store = load_stores([path])
    denominators = [sum(100 - corrupted_top1(BASELINE, c, s) for s in SEVERITIES) for c in subset]  # percent

    def mce_of_subset(accuracies: np.ndarray) -> np.ndarray:  # [B, 10 cells] -> [B]
        errors = (100 - accuracies).reshape(-1, len(subset), len(SEVERITIES)).sum(axis=2)
        return (100 * errors / np.array(denominators)).mean(axis=1)

    cells = [np.arange(N) < corrupted_top1("fmnist/gen1", c, s) for c in subset for s in SEVERITIES]
    cis = derived_cis(store, "fmnist/gen1")
    assert cis["mce"] == pytest.approx(bootstrap_ci(cells, mce_of_subset), abs=1e-9)
    assert isinstance(cis["relative_mce"], tuple)  # its own definition: the 4 corruptions, as stored
    # the same value with a definition over all 4 is not reproduced by the bits: no interval, not a guess
    with sqlite3.connect(path) as con:
        con.execute("UPDATE results SET settings = ? WHERE model = 'fmnist/gen1' AND metric = 'mce'",
                    (with_definition(ce_settings, "mce", COMMON_HERE),))
    assert derived_cis(load_stores([path]), "fmnist/gen1")["mce"] == \
        "n/a (stored value not reproducible from per-image data)"


def test_store_without_definitions_gives_no_derived_interval(tmp_path: Path) -> None:
    """An old store (derived rows without a recorded definition) gets n/a with that reason, never a guessed CI."""
    path = write_store(tmp_path / "old.sqlite", [BASELINE, "fmnist/gen1"])
    with sqlite3.connect(path) as con:
        con.execute("UPDATE results SET settings = json_remove(settings, '$.definition')")
        con.execute("UPDATE results SET settings = json_set(settings, '$.definition', json('{\"formula\": \"x\"}')) "
                    "WHERE model = 'fmnist/gen1' AND metric = 'relative_mce'")
    store = load_stores([path])
    cis = derived_cis(store, "fmnist/gen1")
    assert cis["mce"] == cis["mean_corruption_top1"] == "n/a (definition not recorded)"
    assert cis["relative_mce"] == ("n/a (definition 'x' is not one this report computes; "
                                   "'hendrycks2019-relative-mce' is)")
    long = tables.headline_long(store, BASELINE).set_index(["model", "quantity"])
    assert long.loc[("fmnist/gen1", "mce"), "ci_method"] == "n/a (definition not recorded)"
    assert long.loc[("fmnist/gen1", "mce"), "test"] == "n/a (definition not recorded) for the change"
    assert long.loc[("fmnist/gen1", "mce"), "value"] == pytest.approx(expected_mce("fmnist/gen1"), abs=1e-12)


def test_report_knows_the_formulas_the_evaluator_records() -> None:
    assert derived.FORMULAS == {metric: FORMULAS[metric][0] for metric in derived.DERIVED}


def test_report_reads_schema_and_names_from_the_evaluator_without_torch() -> None:
    """One schema and one list of names: reports take them from eval.store and eval.corruptions.catalog, whose
    import loads neither torch nor timm (so `nst-report --help` stays fast)."""
    code = ("import json, sys\n"
            "import reports.load as load, reports.corruptions as names, reports.derived, eval.store as store\n"
            "import eval.corruptions.catalog as catalog\n"
            "same = [load.RESULT_COLUMNS is store.RESULT_COLUMNS, load.MODEL_COLUMNS is store.MODEL_COLUMNS,\n"
            "        load.PER_IMAGE_COLUMNS is store.PER_IMAGE_COLUMNS, load.CELL is store.CELL_COLUMNS,\n"
            "        names.COMMON is catalog.CORRUPTIONS, names.EXTRA is catalog.EXTRA_CORRUPTIONS,\n"
            "        names.FAMILIES is catalog.CORRUPTION_FAMILIES]\n"
            "print(json.dumps({'same': same, 'heavy': [m for m in ('torch', 'timm') if m in sys.modules]}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"same": [True] * 7, "heavy": []}
    from eval.corruptions import catalog
    from eval.metrics import perturbation

    assert perturbation.EVALUATED_PERTURBATIONS is catalog.EVALUATED_PERTURBATIONS
    assert reports.corruptions.PERTURBATIONS == catalog.ALL_PERTURBATIONS and len(catalog.EVALUATED_PERTURBATIONS) == 10
    assert [c for family in catalog.CORRUPTION_FAMILIES.values() for c in family] == list(catalog.CORRUPTIONS)


def test_definitions_table_shows_what_the_store_records(loaded: Store, report: dict[str, Path]) -> None:
    table = tables.definitions_table(loaded).set_index("metric")
    assert list(table.index) == ["mce", "mean_corruption_top1", "relative_mce"]
    mce = table.loc["mce"]
    assert mce["formula"] == "hendrycks2019-mce" and mce["baseline"] == BASELINE
    assert mce["corruptions"] == "4: " + ", ".join(COMMON_HERE) and mce["severities"] == "1, 2, 3, 4, 5"
    assert (mce["clean error subtracted"], table.loc["relative_mce", "clean error subtracted"]) == ("no", "yes")
    assert mce["definition"].startswith("hendrycks2019 mCE: sum_s E / sum_s E_base, mean over corruptions")
    assert mce["models"] == ", ".join(loaded.order)  # one definition shared by every model, in report order
    assert not tables.settings_table(loaded)["setting"].str.startswith("definition").any()
    assert "hendrycks2019-relative-mce" in pd.read_csv(report["tables/definitions.csv"])["formula"].to_list()


def test_a_store_newer_than_the_report_is_refused(tmp_path: Path) -> None:
    from eval.store import SCHEMA_VERSION
    from nst_common.errors import ReportError

    path = write_store(tmp_path / "new.sqlite", [BASELINE])
    with sqlite3.connect(path) as con:
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ReportError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this nst-report"):
        load_stores([path])


def test_corruption_table_has_errors_ce_and_named_baseline(loaded: Store) -> None:
    table = tables.corruption_table(loaded).set_index(["model", "corruption"])
    row = table.loc[("fmnist/gen1", "snow")]
    assert row["error s3 (%)"] == 100 - corrupted_top1("fmnist/gen1", "snow", 3)
    assert row["CE (%)"] == pytest.approx(expected_ce("fmnist/gen1", "snow"), abs=1e-12)
    assert row["relative CE (%)"] == pytest.approx(expected_relative_ce("fmnist/gen1", "snow"), abs=1e-12)
    assert set(table["baseline"]) == {BASELINE}
    assert len(table) == len(CLEAN) * len(CORRUPTION_DROP)  # perturbation rows (gaussian_noise, 1) stay out
    corruptions = list(table.loc["fmnist/gen0"].index)
    assert corruptions == ["gaussian_noise", "defocus_blur", "snow", "contrast", "speckle_noise"]


def test_perturbation_table_per_perturbation_and_difficulty(loaded: Store) -> None:
    table = tables.perturbation_table(loaded).set_index(["model", "perturbation", "difficulty"])
    assert table.loc[("fmnist/gen1", "gaussian_noise", 1), ["fp", "fr", "top1"]].to_list() == [0.05, 90.0, 47.0]
    assert table.loc[("fmnist/gen1", "gaussian_noise", 2), "fp"] == 0.08  # difficulty read from "<dataset>-p-d2"
    rows = list(table.loc["fmnist/gen1"].index)
    assert rows == [("gaussian_noise", 1), ("gaussian_noise", 2), ("brightness", 1)]  # benchmark order, not a-z
    assert list(table.index.get_level_values("model").unique()) == list(MFR)


def test_baseline_not_recorded_is_said() -> None:
    assert tables.baseline_name({"data": "x"}) == "not recorded"
    assert tables.baseline_name({"baseline": "fmnist/gen0"}) == "fmnist/gen0"


def test_ablation_picks_up_exactly_the_differing_setting(loaded: Store, long: pd.DataFrame) -> None:
    settings = tables.differing_settings({"fmnist": config("fmnist", 0.2), "fmnist_nodrop": config("fmnist_nodrop", 0)})
    assert list(settings.columns) == ["student.dropout"]
    ablation = tables.ablation_table(loaded, long.reset_index())
    assert [c for c in ablation.columns if "(%)" not in c] == ["run", "generation", "student.dropout"]
    assert ablation.loc["fmnist_nodrop/gen1", "student.dropout"] == 0.0
    assert ablation.loc["fmnist/gen2", "clean top-1 (%)"] == 90.0
    assert "timm:resnet18" not in ablation.index


def test_versions_are_found_in_settings(loaded: Store) -> None:
    versions = tables.versions_table(loaded).set_index("package")["version"]
    assert versions.to_dict() == VERSIONS


def test_report_files_and_figures_are_written(report: dict[str, Path]) -> None:
    for name in ("report.md", "report.html", "tables/headline.csv", "tables/headline.tex", "tables/ablation.csv",
                 "tables/corruption_errors.tex", "tables/perturbations.csv"):
        assert report[name].stat().st_size > 0, name
    for stem in ("ce_per_corruption", "error_vs_severity", "robust_accuracy_vs_eps", "metrics_vs_generation",
                 "example_corruptions", "perturbation_frames", "ce_heatmap", "ce_delta_heatmap", "training_curves",
                 "pseudo_labels"):
        for suffix in (".png", ".svg"):
            assert report[f"figures/{stem}{suffix}"].stat().st_size > 1000, stem
    headline = pd.read_csv(report["tables/headline.csv"]).set_index("model")
    assert headline.loc["fmnist/gen2", "clean top-1 (%)"] == 90.0
    assert "\\begin{tabular}" in report["tables/headline.tex"].read_text()


def test_html_is_self_contained(report: dict[str, Path]) -> None:
    text = report["report.html"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.IGNORECASE)
    assert re.search(r"<link|<script", text) is None
    assert text.count("data:image/svg+xml;base64,") == 10
    assert "McNemar" in text and "Clopper-Pearson" in text and "student.dropout" in text


def test_markdown_names_baseline_and_settings(report: dict[str, Path]) -> None:
    text = report["report.md"].read_text()
    assert f"CE normalisation baseline: {BASELINE} (for fmnist/gen0, fmnist/gen1," in text
    assert "torchattacks" in text and "3.5.1" in text
    assert "![" in text and "figures/ce_per_corruption.png" in text
    perturbations = text.index("Perturbations (ImageNet-P style)")
    assert perturbations < text.index("figures/perturbation_frames.png") < text.index("Ablation", perturbations)
    assert "fmnist test image 7" in text


def test_cli_on_a_store_without_per_image_degrades(stores: list[Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    store = write_store(tmp_path / "bare.sqlite", ["fmnist/gen0", "fmnist/gen1"], per_image=False)
    assert cli.main(["--results", str(store), "--out", str(tmp_path / "out")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert cli.main(["--results", str(store), "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert capsys.readouterr().out == ""  # --quiet: nothing but errors
    text = (tmp_path / "out" / "report.md").read_text()
    assert "no `per_image` table" in text
    long = pd.read_csv(tmp_path / "out" / "tables" / "headline_long.csv").set_index(["model", "quantity"])
    assert long.loc[("fmnist/gen1", "clean_top1"), "test"] == "n/a (no per-image data)"
    assert long.loc[("fmnist/gen1", "mce"), "ci_method"] == "n/a (no per-image data)"
    assert "No ablation table" in text and "Skipped: no image array file" in text
    assert cli.main(["--results", *map(str, stores), "--out", str(tmp_path / "x"), "--baseline", "nope"]) == 2
    assert "not in the stores" in capsys.readouterr().err


def test_larger_subset_wins_when_a_measurement_is_stored_twice(tmp_path: Path) -> None:
    path = write_store(tmp_path / "twice.sqlite", ["fmnist/gen0"])
    with sqlite3.connect(path) as con:
        con.execute("INSERT INTO results (model, run, generation, suite, dataset, metric, value, n, settings, created)"
                    " VALUES ('fmnist/gen0', 'fmnist', 0, 'clean', 'fashion_mnist', 'top1', 50.0, 10, '{}',"
                    " '2026-11-23T00:00:00')")
    store = load_stores([path])
    long = tables.headline_long(store, None).set_index(["model", "quantity"])
    assert long.loc[("fmnist/gen0", "clean_top1"), ["value", "n"]].to_list() == [80.0, N]
    assert any("stored again" in note for note in store.notes)


def test_missing_columns_and_tables_are_noted(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE results (model TEXT, run TEXT, generation INTEGER, suite TEXT, dataset TEXT, "
                    "corruption TEXT, severity INTEGER, attack TEXT, eps REAL, metric TEXT, value REAL, n INTEGER)")
        con.execute("INSERT INTO results VALUES ('a/gen0', 'a', 0, 'clean', 'd', NULL, NULL, NULL, NULL, 'top1', "
                    "90, 100)")
    store = load_stores([path])
    assert any("lacks column `settings`" in note for note in store.notes)
    assert any("no `models` table" in note for note in store.notes)
    long = tables.headline_long(store, "a/gen0")
    assert long[["value", "ci_low"]].iloc[0].to_list() == [90.0, pytest.approx(82.37774022598247)]
    assert tables.versions_table(store)["version"].to_list() == ["not recorded"] * 3


def test_notebook_runs_on_a_small_store(stores: list[Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The walkthrough runs top to bottom; with the dataset here it draws its three figures, else it says why."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("NST_RESULTS", str(stores[0]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(Path(__file__).parents[1] / "notebooks" / "report_walkthrough.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(Path(__file__).parents[1])}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "comparing fmnist/gen2 against the baseline fmnist/gen0" in text
    pngs = sum("image/png" in o.get("data", {}) for o in outputs)
    if "evaluated test images of fashion_mnist" in text:
        # hand-made bits: gen2 gets the first 10 more images right in every cell, so 10 fixed images per cell
        assert pngs == 3
        assert "10 images only fmnist/gen2 gets right (0 the other way)" in text
        assert "not verified: the checkpoint is not on this machine" in text  # hand-made store, no checkpoints
    else:
        assert pngs == 1 and "not available here" in text  # only the discordant-pairs figure needs no images
