"""Report tables as pandas frames: headline (with CIs and paired tests), per-corruption CE, ablation, settings."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from reports.corruptions import COMMON, EXTRA, corruption_sort_key, perturbation_sort_key
from reports.derived import DERIVED, derived_cis, paired_delta_cis
from reports.load import Store, cell_key, correctness, run_configs
from reports.stats import accuracy_ci, decimals, mcnemar_exact, t_interval

NOT_RECORDED = "not recorded"
VERSIONED_PACKAGES = ("torch", "timm", "torchattacks")
PERTURBATION = ("mfr", "mt5d")
CORRUPTION_SUITE = "corruption"


@dataclass(frozen=True)
class Quantity:
    """One headline column: which stored rows it reads and how it is labelled."""

    key: str
    label: str
    metric: str
    suite: str | None = None
    attack: str | None = None
    eps: float | None = None
    severity: int | None = None
    dataset: str | None = None  # rows of this dataset only (the shifts suite's datasets)

    @property
    def is_accuracy(self) -> bool:
        """Whether the value is a binomial proportion (percent of n images), so exact CIs and McNemar apply."""
        return self.metric == "top1"


FIXED_QUANTITIES = (
    Quantity("clean_top1", "clean top-1 (%)", "top1", suite="clean"),
    Quantity("mce", "mCE (%)", "mce"),
    Quantity("relative_mce", "relative mCE (%)", "relative_mce"),
    Quantity("mean_corruption_top1", "mean corruption acc. (%)", "mean_corruption_top1"),
    Quantity("mfr", "mFR (%)", "mfr"),
    Quantity("mt5d", "mT5D (%)", "mt5d"),
    Quantity("imagenet_a_top1", "ImageNet-A top-1 (%)", "top1", suite="natural-adversarial"),
    Quantity("imagenet_r_top1", "ImageNet-R top-1 (%)", "top1", suite="shifts", dataset="imagenet-r"),
    Quantity("imagenet_sketch_top1", "ImageNet-Sketch top-1 (%)", "top1", suite="shifts", dataset="imagenet-sketch"),
    Quantity("imagenet_v2_top1", "ImageNet-V2 top-1 (%)", "top1", suite="shifts", dataset="imagenet-v2"),
    Quantity("clean_ece", "clean ECE (%)", "ece", suite="clean"),
    Quantity("mean_corruption_ece", "mean corruption ECE (%)", "mean_corruption_ece"),
    Quantity("imagenet_a_ece", "ImageNet-A ECE (%)", "ece", suite="natural-adversarial"),
    Quantity("imagenet_r_ece", "ImageNet-R ECE (%)", "ece", suite="shifts", dataset="imagenet-r"),
    Quantity("imagenet_sketch_ece", "ImageNet-Sketch ECE (%)", "ece", suite="shifts", dataset="imagenet-sketch"),
    Quantity("imagenet_v2_ece", "ImageNet-V2 ECE (%)", "ece", suite="shifts", dataset="imagenet-v2"),
)


def quantities(store: Store) -> list[Quantity]:
    """Headline quantities present in the store: the fixed ones (mFR/mT5D per difficulty when there are several),
    then robust accuracy per attack and eps."""
    present = []
    for quantity in FIXED_QUANTITIES:
        rows = _rows(store.results, quantity)
        difficulties = sorted({int(d) for d in rows["severity"].dropna()}) if quantity.metric in PERTURBATION else []
        if len(difficulties) > 1:
            present += [replace(quantity, key=f"{quantity.key}_d{d}", severity=d,
                                label=quantity.label.replace(" (%)", f" d={d} (%)")) for d in difficulties]
        elif len(rows):
            present.append(quantity)
    adversarial = store.results[(store.results["suite"] == "adversarial") & (store.results["metric"] == "top1")]
    pairs = sorted({(str(a), float(e)) for a, e in zip(adversarial["attack"], adversarial["eps"]) if pd.notna(e)})
    robust = [Quantity(f"{a}_eps{e:g}", f"{a} eps={e:g}/255 acc. (%)", "top1", suite="adversarial", attack=a, eps=e)
              for a, e in pairs]
    return present + robust


def headline_long(store: Store, baseline: str | None) -> pd.DataFrame:
    """One row per (model, quantity): value, n, 95% CI, change vs the baseline and its paired test."""
    records = []
    bootstrapped = {model: derived_cis(store, model) for model in store.order}
    paired = {model: paired_delta_cis(store, model, baseline) for model in store.order
              if baseline in store.order and model != baseline}
    for quantity in quantities(store):
        rows = _rows(store.results, quantity)
        for model in store.order:
            row = rows[rows["model"] == model].head(1)
            if len(row):
                record = _headline_record(store, quantity, row.iloc[0], rows, baseline)
                if pd.isna(record["ci_low"]):  # mFR / mT5D bring the evaluator's own interval
                    record.update(_interval(quantity, record["value"], record["n"], bootstrapped[model]))
                record.update(_delta_interval(quantity, record, paired.get(model, {})))
                records.append(record)
    return pd.DataFrame(records, columns=[
        "model", "run", "generation", "quantity", "label", "attack", "eps", "value", "n", "ci_low", "ci_high",
        "ci_method", "baseline", "delta", "delta_low", "delta_high", "p_value", "test"])


def headline_wide(long: pd.DataFrame, column: str = "value") -> pd.DataFrame:
    """The headline pivoted to one row per model (in report order) and one column per quantity."""
    if long.empty:
        return pd.DataFrame()
    labels = list(dict.fromkeys(long["label"]))
    models = list(dict.fromkeys(long["model"]))
    wide = long.pivot(index="model", columns="label", values=column)
    return wide.reindex(index=models, columns=labels).rename_axis(index="model", columns=None)


def headline_display(long: pd.DataFrame) -> pd.DataFrame:
    """Headline cells formatted as 'value [CI low, CI high]'."""
    formatted = long.assign(cell=[_with_ci(v, lo, hi, _places(q, n)) for v, lo, hi, q, n in
                                  zip(long["value"], long["ci_low"], long["ci_high"], long["quantity"], long["n"])])
    return headline_wide(formatted, "cell")


def delta_display(long: pd.DataFrame) -> pd.DataFrame:
    """Change against the baseline per model and quantity (to the value's precision), with the paired test's p-value
    or the paired bootstrap CI of the change where one ran; 'baseline' for the baseline itself."""
    cells = []
    for row in long.itertuples(index=False):
        places = _places(row.quantity, row.n)
        if row.test == "baseline":
            cells.append("baseline")
        elif pd.isna(row.delta):
            cells.append("")
        elif pd.notna(row.p_value):
            cells.append(f"{row.delta:+.{places}f} (p = {row.p_value:.2g})")
        elif pd.notna(row.delta_low):
            cells.append(f"{row.delta:+.{places}f} [{row.delta_low:+.{places}f}, {row.delta_high:+.{places}f}]")
        else:
            cells.append(f"{row.delta:+.{places}f} (no test)")
    return headline_wide(long.assign(cell=cells), "cell")


def corruption_table(store: Store) -> pd.DataFrame:
    """Per model and corruption: top-1 error (%) per severity, CE, relative CE and the normalisation baseline."""
    results = store.results[store.results["suite"] == CORRUPTION_SUITE]
    cells = results[(results["metric"] == "top1") & results["corruption"].notna() & results["severity"].notna()]
    if cells.empty:
        return pd.DataFrame()
    errors = cells.assign(severity=cells["severity"].astype(int), error=100 - cells["value"])
    table = errors.pivot_table(index=["model", "corruption"], columns="severity", values="error", aggfunc="first")
    table.columns = [f"error s{s} (%)" for s in table.columns]
    per_corruption = results[results["corruption"].notna() & results["severity"].isna()]
    for metric, label in (("ce", "CE (%)"), ("relative_ce", "relative CE (%)")):
        values = per_corruption[per_corruption["metric"] == metric].set_index(["model", "corruption"])["value"]
        table[label] = values.reindex(table.index)
    ce_rows = per_corruption[per_corruption["metric"].isin(["ce", "relative_ce"])]
    baselines = ce_rows.assign(baseline=ce_rows["settings"].map(baseline_name)).drop_duplicates(
        ["model", "corruption"]).set_index(["model", "corruption"])["baseline"]
    table["baseline"] = baselines.reindex(table.index).fillna(NOT_RECORDED)
    return _order_models_and_corruptions(table.reset_index(), store.order)


def ce_comparison(corruptions: pd.DataFrame) -> pd.DataFrame:
    """CE (%) with one row per corruption (benchmark order) and one column per model (report order)."""
    if corruptions.empty or corruptions["CE (%)"].isna().all():
        return pd.DataFrame()
    wide = corruptions.pivot(index="corruption", columns="model", values="CE (%)")
    models = list(dict.fromkeys(corruptions["model"]))
    rows = sorted(wide.index, key=corruption_sort_key)
    return wide.reindex(index=rows, columns=models).dropna(how="all").rename_axis(index="corruption", columns=None)


def corruption_changes(store: Store, baseline: str | None) -> pd.DataFrame:
    """Per model (not the baseline), corruption and severity: top-1 error (%), the baseline's on the same cell,
    the change (percentage points) and McNemar's exact p-value where both have per-image bits on the same images."""
    columns = ["model", "corruption", "severity", "error (%)", "baseline error (%)", "change (pp)", "p_value"]
    results = store.results
    cells = results[(results["suite"] == CORRUPTION_SUITE) & (results["metric"] == "top1")
                    & results["corruption"].notna() & results["severity"].notna()]
    base = {cell_key(row): row for _, row in cells[cells["model"] == baseline].iterrows()}
    records = []
    for _, row in cells[cells["model"] != baseline].iterrows():
        base_row = base.get(cell_key(row))
        if base_row is None:
            continue
        assert baseline is not None  # base_row is one of the baseline's cells
        test = _paired_test(store, row["model"], baseline, row, base_row)
        records.append({"model": row["model"], "corruption": row["corruption"], "severity": int(row["severity"]),
                        "error (%)": 100 - float(row["value"]), "baseline error (%)": 100 - float(base_row["value"]),
                        "change (pp)": float(base_row["value"]) - float(row["value"]),
                        "p_value": test.get("p_value", np.nan)})
    if not records:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(records, columns=columns)
    rank = {m: i for i, m in enumerate(store.order)}
    keys = [(rank.get(m, len(rank)), corruption_sort_key(c), s)
            for m, c, s in zip(table["model"], table["corruption"], table["severity"])]
    return table.iloc[sorted(range(len(keys)), key=keys.__getitem__)].reset_index(drop=True)


def perturbation_table(store: Store) -> pd.DataFrame:
    """Per model, perturbation and difficulty: flip probability, FR, top-5 distance, T5D ratio and top-1 (%)."""
    rows = store.results[(store.results["suite"] == "perturbation") & store.results["corruption"].notna()]
    if rows.empty:
        return pd.DataFrame()
    table = rows.assign(difficulty=rows["severity"].astype("Int64")).pivot_table(
        index=["model", "corruption", "difficulty"], columns="metric", values="value", aggfunc="first")
    table = table.reset_index().rename(columns={"corruption": "perturbation"})
    rank = {m: i for i, m in enumerate(store.order)}
    keys = {"model": lambda c: c.map(rank), "perturbation": lambda c: c.map(perturbation_sort_key)}
    return table.sort_values(["model", "perturbation", "difficulty"], key=lambda c: keys.get(c.name, lambda x: x)(c),
                             kind="stable").reset_index(drop=True).rename_axis(columns=None)


def baseline_name(settings: dict) -> str:
    """The CE normalisation baseline recorded in a row's settings (key `baseline`), or 'not recorded'."""
    value = settings.get("baseline") if isinstance(settings, dict) else None
    if value is None:
        return NOT_RECORDED
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def differing_settings(configs: dict[str, dict]) -> pd.DataFrame:
    """Flattened config settings that differ between runs (rows: runs); a run's own name or paths are ignored."""
    flat = {run: flatten(rounded(config)) for run, config in configs.items()}
    keys = sorted(set().union(*flat.values())) if flat else []
    columns = {}
    for key in keys:
        values = {run: flat[run].get(key, NOT_RECORDED) for run in flat}
        if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) < 2:
            continue
        if all(isinstance(v, str) and run in v for run, v in values.items()):
            continue  # the run's identity (its name, its output folder), not a recipe switch
        columns[key] = values
    return pd.DataFrame(columns, index=list(flat)).rename_axis("run")


def ablation_table(store: Store, long: pd.DataFrame) -> pd.DataFrame:
    """Runs side by side: the settings that differ between their stored configs, then headline values."""
    configs = run_configs(store)
    if len(configs) < 2:
        return pd.DataFrame()
    settings = differing_settings(configs)
    values = headline_wide(long)
    models = store.models.drop_duplicates("model").set_index("model")
    rows = []
    for model in store.order:
        if model not in models.index or models.at[model, "run"] not in configs:
            continue
        run = models.at[model, "run"]
        record = {"model": model, "run": run, "generation": _int_or_none(models.at[model, "generation"])}
        record.update(settings.loc[run].to_dict())
        record.update(values.loc[model].to_dict() if model in values.index else {})
        rows.append(record)
    return pd.DataFrame(rows).set_index("model") if rows else pd.DataFrame()


def seed_groups(store: Store) -> dict[str, list[str]]:
    """Runs whose stored configs differ only in `seed` (and their own name and folder), grouped; groups of 2+ runs
    only, named after their first run."""
    configs = run_configs(store)
    keys: dict[str, list[str]] = {}
    for run, config in configs.items():
        flat = flatten(rounded(config))
        recipe = {k: v for k, v in flat.items() if k not in ("seed", "name") and not _names_run(v, run)}
        keys.setdefault(json.dumps(recipe, sort_keys=True, default=str), []).append(run)
    return {runs[0]: runs for runs in keys.values() if len(runs) > 1}


def _names_run(value: object, run: str) -> bool:
    """Whether a config value is a path into the run's own folder (`runs/<run>/...`; its name is the key `name`).
    Neither a substring nor an equal value counts: the demo's dataset `fashion_mnist` is also its run's name."""
    if not isinstance(value, str):
        return False
    parts = value.replace("\\", "/").split("/")
    return len(parts) > 1 and run in parts


def across_seeds(long: pd.DataFrame, groups: dict[str, list[str]], level: float = 0.95) -> pd.DataFrame:
    """Per seed group, generation and headline quantity: the mean over seeds and its t interval
    (mean +- t_{(1+level)/2, k-1} * sd / sqrt(k), k seeds: the spread between seeds, not within a test set)."""
    columns = ["group", "seeds", "generation", "quantity", "label", "attack", "eps", "mean", "sd", "ci_low",
               "ci_high", "values"]
    records = []
    for group, runs in groups.items():
        rows = long[long["run"].isin(runs) & long["generation"].notna()]
        for (generation, quantity), part in rows.groupby(["generation", "quantity"], sort=False):
            values = part["value"].to_numpy(dtype=float)
            k = len(values)
            if k < 2:
                continue
            mean, sd, low, high = t_interval(values, level)
            records.append({"group": group, "seeds": k, "generation": int(generation), "quantity": quantity,
                            "label": part["label"].iloc[0], "attack": part["attack"].iloc[0],
                            "eps": part["eps"].iloc[0], "mean": mean, "sd": sd, "ci_low": low,
                            "ci_high": high, "values": ", ".join(f"{v:.2f}" for v in values)})
    return pd.DataFrame(records, columns=columns)


def seed_changes(long: pd.DataFrame, groups: dict[str, list[str]], level: float = 0.95) -> pd.DataFrame:
    """Per seed group, generation >= 1 and headline quantity: the change against gen0 paired by seed (each seed's
    generation minus the same seed's gen0), its mean over seeds and t interval, and how many seeds improved."""
    columns = ["group", "seeds", "generation", "quantity", "label", "mean_change", "ci_low", "ci_high", "changes"]
    records = []
    for group, runs in groups.items():
        rows = long[long["run"].isin(runs) & long["generation"].notna()]
        gen0 = {(r, q): v for r, g, q, v in zip(rows["run"], rows["generation"], rows["quantity"], rows["value"])
                if int(g) == 0}
        later = rows[rows["generation"].astype(int) > 0]
        for (generation, quantity), part in later.groupby(["generation", "quantity"], sort=False):
            deltas = np.array([v - gen0[r, quantity] for r, v in zip(part["run"], part["value"])
                               if (r, quantity) in gen0], dtype=float)
            k = len(deltas)
            if k < 2:
                continue
            mean, _, low, high = t_interval(deltas, level)
            records.append({"group": group, "seeds": k, "generation": int(generation), "quantity": quantity,
                            "label": part["label"].iloc[0], "mean_change": mean, "ci_low": low,
                            "ci_high": high, "changes": ", ".join(f"{d:+.2f}" for d in deltas)})
    return pd.DataFrame(records, columns=columns)


def masking_table(store: Store) -> pd.DataFrame:
    """The adversarial suite's signs of masked gradients per model (`gradient_masking` rows' flags): attack, eps,
    sign (zero_gradient > 1 %, rises_with_eps, weaker_than_fgsm) and value; one 'none' row per checked model."""
    rows = store.results[(store.results["suite"] == "adversarial") & (store.results["metric"] == "gradient_masking")]
    records = []
    for model, settings in zip(rows["model"], rows["settings"]):
        flags = (settings if isinstance(settings, dict) else {}).get("flags") or []
        if not flags:
            records.append({"model": model, "attack": "", "eps": np.nan, "sign": "none", "value": np.nan})
        for flag in flags:
            records.append({"model": model, "attack": flag.get("attack"), "eps": flag.get("eps"),
                            "sign": flag.get("sign"), "value": flag.get("value")})
    return pd.DataFrame(records, columns=["model", "attack", "eps", "sign", "value"])


def model_meta(store: Store, model: str) -> dict:
    """The meta.json the store holds for `model` (the `models` table), or {} when none."""
    rows = store.models[store.models["model"] == model]
    meta = rows["meta"].iloc[0] if len(rows) else {}
    return meta if isinstance(meta, dict) else {}


def training_table(store: Store) -> pd.DataFrame:
    """Per model with a meta.json: generation, architecture, test top-1 at training time (%, its test set), labeled
    and pool sizes, and the pseudo labels' statistics (accuracy on the pool and on the kept images, images kept)."""
    records = []
    for model in store.order:
        meta = model_meta(store, model)
        if not meta.get("arch") and not meta.get("metrics"):
            continue
        metrics = meta["metrics"] if isinstance(meta.get("metrics"), dict) else {}
        data = meta["data"] if isinstance(meta.get("data"), dict) else {}
        pseudo = meta["pseudo_labels"] if isinstance(meta.get("pseudo_labels"), dict) else {}
        records.append({
            "model": model, "generation": _int_or_none(meta.get("generation")), "arch": meta.get("arch"),
            "method": meta.get("method"), "test top-1 (%)": metrics.get("test_top1"),
            "test images": metrics.get("test_n"), "labeled": data.get("labeled"),
            "pool": data.get("unlabeled_pool"), "pseudo-label acc. pool (%)": pseudo.get("accuracy_on_pool"),
            "pseudo-label acc. kept (%)": pseudo.get("accuracy_on_kept"),
            "pool images kept": pseudo.get("unique_images"), "student set entries": pseudo.get("entries"),
        })
    table = pd.DataFrame(records)
    if table.empty:
        return table
    return table.dropna(axis=1, how="all").apply(
        lambda c: pd.to_numeric(c) if c.name not in ("model", "arch", "method") and c.notna().any() else c)


def settings_table(store: Store) -> pd.DataFrame:
    """Every setting recorded in the rows' settings or the models' meta versions: its values and where it was
    (metric definitions, `settings.definition`, are in `definitions_table` instead)."""
    sources = [(f"results ({suite})", [_without_definition(x) for x in rows["settings"]])
               for suite, rows in store.results.groupby("suite")]
    sources.append(("models meta", [{"versions": m.get("versions", {})} for m in store.models["meta"]
                                    if isinstance(m, dict)]))
    found: dict[str, tuple[set[str], list[str]]] = {}
    for source, settings in sources:
        for key, values in _distinct(settings).items():
            entry = found.setdefault(key, (set(), []))
            entry[0].update(values)
            entry[1].append(source)
    return pd.DataFrame([{"setting": key, "values": _listing(values), "recorded in": ", ".join(where)}
                         for key, (values, where) in sorted(found.items())],
                        columns=["setting", "values", "recorded in"])


def definitions_table(store: Store) -> pd.DataFrame:
    """The aggregate rows' definitions as nst-eval recorded them (`settings.definition`), one row per metric and
    distinct definition: formula, its text, the corruptions and severities averaged, the baseline, whether the clean
    error is subtracted, and the models. Empty when no row records one (stores written before definitions were)."""
    columns = ["metric", "formula", "definition", "corruptions", "severities", "baseline", "clean error subtracted",
               "models"]
    results = store.results[store.results["corruption"].isna()]
    found: dict[tuple, list[str]] = {}
    for metric, model, settings in zip(results["metric"], results["model"], results["settings"]):
        definition = settings.get("definition") if isinstance(settings, dict) else None
        if not isinstance(definition, dict):
            continue
        corruptions = [str(c) for c in definition.get("corruptions") or []]
        named = {COMMON: f"the {len(COMMON)} common", COMMON + EXTRA: f"all {len(COMMON + EXTRA)} (common and extra)"
                 }.get(tuple(corruptions), f"{len(corruptions)}: {', '.join(corruptions)}")
        subtracted = definition.get("clean_error_subtracted")
        key = (metric, str(definition.get("formula")), str(definition.get("text", "")), named,
               ", ".join(str(s) for s in definition.get("severities") or []),
               baseline_name(definition) if "baseline" in definition else "",
               "" if subtracted is None else ("yes" if subtracted else "no"))
        found.setdefault(key, []).append(model)
    rank = {m: i for i, m in enumerate(store.order)}
    records = [[*key, ", ".join(sorted(set(models), key=lambda m: rank.get(m, len(rank))))]
               for key, models in sorted(found.items())]
    return pd.DataFrame(records, columns=columns)


def data_table(store: Store) -> pd.DataFrame:
    """Datasets and subset sizes: per suite and dataset, the image counts n and the number of models."""
    rows = store.results.dropna(subset=["n"])
    grouped = rows.groupby(["suite", "dataset"], dropna=False)
    return pd.DataFrame({
        "images (n)": grouped["n"].agg(lambda n: ", ".join(str(int(v)) for v in sorted(set(n)))),
        "models": grouped["model"].nunique(),
    }).reset_index()


def versions_table(store: Store) -> pd.DataFrame:
    """Versions of torch, timm and torchattacks found anywhere in the settings or meta ('not recorded' if none)."""
    sources = list(store.results["settings"]) + [m for m in store.models["meta"] if isinstance(m, dict)]
    found: dict[str, set[str]] = {p: set() for p in VERSIONED_PACKAGES}
    for source in sources:
        for key, value in flatten(source).items():
            package = key.rsplit(".", 1)[-1]
            if package in found and value is not None:
                found[package].add(str(value))
    return pd.DataFrame({"package": list(found),
                         "version": [", ".join(sorted(v)) or NOT_RECORDED for v in found.values()]})


def flatten(data: dict, prefix: str = "") -> dict[str, object]:
    """Nested dicts flattened to dotted keys; lists are kept as JSON text so they compare and print."""
    flat: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple, dict)) else value
    return flat


def _rows(results: pd.DataFrame, quantity: Quantity) -> pd.DataFrame:
    mask = (results["metric"] == quantity.metric) & results["value"].notna()
    if quantity.suite is not None:
        mask &= results["suite"] == quantity.suite
    if quantity.metric == "top1":
        mask &= results["corruption"].isna() & results["severity"].isna()
        mask &= (results["attack"] == quantity.attack) if quantity.attack else results["attack"].isna()
    if quantity.eps is not None:
        mask &= np.isclose(results["eps"].astype(float), quantity.eps)
    if quantity.severity is not None:
        mask &= results["severity"] == quantity.severity
    if quantity.dataset is not None:
        mask &= results["dataset"] == quantity.dataset
    return results[mask]


def _headline_record(store: Store, quantity: Quantity, row: pd.Series, rows: pd.DataFrame,
                     baseline: str | None) -> dict:
    model, value, n = row["model"], float(row["value"]), row["n"]
    record = {"model": model, "run": row["run"], "generation": _int_or_none(row["generation"]),
              "quantity": quantity.key, "label": quantity.label, "attack": quantity.attack, "eps": quantity.eps,
              "value": value, "n": None if pd.isna(n) else int(n), "baseline": baseline,
              "ci_low": np.nan, "ci_high": np.nan, "ci_method": "", "delta": np.nan, "delta_low": np.nan,
              "delta_high": np.nan, "p_value": np.nan, "test": ""}
    base_row = rows[rows["model"] == baseline].head(1)
    if baseline is None or base_row.empty:
        return record
    record["delta"] = value - float(base_row["value"].iloc[0])
    if model == baseline:
        record["test"] = "baseline"
    elif quantity.metric in PERTURBATION:
        record.update(_perturbation_interval(store, quantity, row, baseline))
    elif not quantity.is_accuracy:
        record["test"] = "n/a (derived metric, no paired test)"
    else:
        record.update(_paired_test(store, model, baseline, row, base_row.iloc[0]))
    return record


def _perturbation_interval(store: Store, quantity: Quantity, row: pd.Series, baseline: str) -> dict:
    """mFR / mT5D: the evaluator's 95 % interval, a paired bootstrap over sequences (rows `<metric>_low/_high`),
    which is also the change's interval against the FR baseline (whose own value is 100 %) when that baseline is
    the report's."""
    results = store.results
    same = (results["model"] == row["model"]) & (results["dataset"] == row["dataset"]) & results["corruption"].isna()
    bounds = [results[same & (results["metric"] == f"{quantity.metric}_{side}")]["value"] for side in ("low", "high")]
    if any(b.empty for b in bounds):
        return {"test": "n/a (no interval stored: evaluate again with this version of nst-eval)"}
    settings = row["settings"] if isinstance(row["settings"], dict) else {}
    if settings.get("baseline") != baseline:
        return {"test": f"n/a (FR is relative to {settings.get('baseline')}, not {baseline})"}
    low, high = float(bounds[0].iloc[0]), float(bounds[1].iloc[0])
    return {"ci_low": low, "ci_high": high, "ci_method": "paired bootstrap over sequences (percentile)",
            "delta_low": low - 100.0, "delta_high": high - 100.0,
            "test": "paired bootstrap over sequences (percentile CI of the change)"}


def _interval(quantity: Quantity, value: float, n: int | None, bootstrapped: dict) -> dict:
    if quantity.is_accuracy:
        low, high = accuracy_ci(value, n)
        method = "Clopper-Pearson exact" if np.isfinite(low) else "n/a (n not recorded)"
        return {"ci_low": low, "ci_high": high, "ci_method": method}
    interval = bootstrapped.get(quantity.key) if quantity.key in DERIVED else None
    if isinstance(interval, tuple):
        return {"ci_low": interval[0], "ci_high": interval[1], "ci_method": "bootstrap over images (percentile)"}
    return {"ci_low": np.nan, "ci_high": np.nan, "ci_method": interval or "n/a (not a per-image metric)"}


def _delta_interval(quantity: Quantity, record: dict, paired: dict) -> dict:
    """The paired bootstrap CI of the change for derived metrics (mCE, ...), where the per-image bits allow one."""
    if quantity.key not in DERIVED or record["test"] in ("", "baseline") or pd.isna(record["delta"]):
        return {}
    interval = paired.get(quantity.key)
    if isinstance(interval, tuple):
        return {"delta_low": interval[0], "delta_high": interval[1],
                "test": "paired bootstrap over images (percentile CI of the change)"}
    return {"test": f"{interval} for the change" if interval else record["test"]}


def _paired_test(store: Store, model: str, baseline: str, row: pd.Series, base_row: pd.Series) -> dict:
    if cell_key(row) != cell_key(base_row) or row["n"] != base_row["n"]:
        return {"test": "n/a (not the same images)"}
    ours = correctness(store, model, cell_key(row), row["n"])
    theirs = correctness(store, baseline, cell_key(base_row), base_row["n"])
    if ours is None or theirs is None:
        return {"test": "n/a (no per-image data)"}
    result = mcnemar_exact(ours, theirs)
    return {"p_value": result.p_value, "test": result.test}


def _places(quantity: str, n: object) -> int:
    """Decimals to show: an accuracy's precision from its n (`stats.decimals`); 1 for derived metrics."""
    return 1 if quantity in DERIVED or quantity.split("_d")[0] in PERTURBATION else decimals(n)


def _with_ci(value: float, low: float, high: float, places: int = 2) -> str:
    if pd.isna(low):
        return f"{value:.{places}f}"
    return f"{value:.{places}f} [{low:.{places}f}, {high:.{places}f}]"


def _order_models_and_corruptions(table: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    rank = {m: i for i, m in enumerate(order)}
    keys = [(rank.get(m, len(rank)), corruption_sort_key(c)) for m, c in zip(table["model"], table["corruption"])]
    positions = sorted(range(len(keys)), key=keys.__getitem__)
    return table.iloc[positions].reset_index(drop=True)


def _without_definition(settings: object) -> dict:
    return {k: v for k, v in settings.items() if k != "definition"} if isinstance(settings, dict) else {}


def _distinct(settings: list[dict]) -> dict[str, set[str]]:
    values: dict[str, set[str]] = {}
    for entry in settings:
        for key, value in flatten(rounded(entry) if isinstance(entry, dict) else {}).items():
            values.setdefault(key, set()).add(str(value))
    return values


def rounded(value: Any, digits: int = 6) -> Any:
    """`value` with every float (also inside dicts and lists) rounded to `digits` significant digits, so that
    binary noise (0.19900000000000007) does not print."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if np.isfinite(value) else value
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def _listing(values: set[str], most: int = 8) -> str:
    ordered = sorted(values)
    shown = ", ".join(ordered[:most])
    return shown if len(ordered) <= most else f"{shown}, ... ({len(ordered)} values)"


def _int_or_none(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)
