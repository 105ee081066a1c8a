"""Assemble the whole report from results stores: load -> tables -> figures -> render."""

from __future__ import annotations

import zipfile

from pathlib import Path

import numpy as np
import pandas as pd

from nst_common.errors import ReportError
from reports import figures, tables
from reports.load import Store, load_stores
from reports.render import Figure, Section, Table, name, write_html, write_markdown, write_tables
from reports.stats import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED
from reports.summary import build_summary

TITLE = "Robustness report"
EXAMPLES_FILE = "examples.npz"
METHODS = (
    "95% confidence intervals: accuracies (clean, ImageNet-A, robust accuracy) use the exact Clopper-Pearson "
    "binomial interval from the stored value and n. mCE, relative mCE and mean corruption accuracy use a percentile "
    f"bootstrap over images ({BOOTSTRAP_SAMPLES} resamples, seed {BOOTSTRAP_SEED}; the same images resampled in "
    "every corruption cell), computed by the definition nst-eval stored with each value (the corruptions and "
    "severities averaged, the baseline's normalisers, held fixed, and for relative mCE the clean cell; see the "
    "definitions table), given only when the per-image bits reproduce the stored value; otherwise, or for a store "
    "without recorded definitions, n/a with the reason in tables/headline_long.csv. Changes against the baseline are "
    "differences of stored values; for accuracies measured on the same images the p-value is McNemar's exact test "
    "(two-sided binomial test on the images that exactly one of the two models gets right). For mCE, relative mCE "
    "and mean corruption accuracy the change gets a paired percentile bootstrap 95% CI (the same resampled images "
    "for both models). mFR and mT5D carry the interval nst-eval stores with them: a paired percentile bootstrap "
    "over sequences (the same resampled sequences for the model and the FR baseline), which is also the interval of "
    "the change against that baseline (100 %); stores written before nst-eval kept per-sequence values have none. "
    "No correction for multiple comparisons."
)

DEFINITIONS_CAPTION = ("How each aggregate metric was computed, as nst-eval recorded it with the value "
                       "(settings.definition); the report's intervals for mCE, relative mCE and mean corruption "
                       "accuracy follow it.")


def build(stores: list[str | Path] | str | Path, out: str | Path, baseline: str | None = None,
          examples: str | Path | None = None) -> dict[str, Path]:
    """Write the report for `stores` into `out`; returns the written files keyed by their path relative to `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = load_stores([stores] if isinstance(stores, (str, Path)) else list(stores))
    if not store.order:
        raise ReportError("the results stores hold no models")
    baseline = _choose_baseline(store, baseline)
    long = tables.headline_long(store, baseline)
    corruptions = tables.corruption_table(store)
    ce_wide = tables.ce_comparison(corruptions)
    perturbations = tables.perturbation_table(store)
    ablation = tables.ablation_table(store, long)
    runs = dict(zip(store.models["model"], store.models["run"])) | dict(zip(store.results["model"],
                                                                            store.results["run"]))
    example_path = _find_examples(store, examples)
    shown = _read_examples(example_path) if example_path is not None else {}
    colours = figures.model_colours(store.order, {m: r if isinstance(r, str) else None for m, r in runs.items()})

    changes = tables.corruption_changes(store, baseline)
    written = write_tables(_tables(long, corruptions, ce_wide, changes, perturbations, ablation, store), out)
    sections = [
        Section("Overview", [*_overview(store, baseline)]),
        _headline_section(long, colours, out, tables.seed_groups(store), tables.masking_table(store)),
        _training_section(store, colours, out),
        _corruption_section(long, corruptions, ce_wide, changes, store.order, baseline, colours, out),
        _perturbation_section(perturbations, shown, example_path, out),
        _ablation_section(ablation, long, store),
        _examples_section(shown, example_path, out),
        _settings_section(store),
    ]
    summary = build_summary(long, baseline)
    subtitle = (f"{len(store.order)} models from {len(store.sources)} results store(s); changes against "
                f"{name(baseline)}.")
    written += [write_markdown(TITLE, summary, sections, out), write_html(TITLE, subtitle, summary, sections, out)]
    written += [block.stem.with_suffix(suffix) for section in sections for block in section.blocks
                if isinstance(block, Figure) for suffix in (".png", ".svg")]
    return {p.relative_to(out).as_posix(): p for p in written}


def _choose_baseline(store: Store, baseline: str | None) -> str:
    if baseline is None:
        return store.order[0]
    if baseline not in store.order:
        raise ReportError(f"baseline {baseline!r} is not in the stores; models: {', '.join(store.order)}")
    return baseline


def _tables(long: pd.DataFrame, corruptions: pd.DataFrame, ce_wide: pd.DataFrame, changes: pd.DataFrame,
            perturbations: pd.DataFrame, ablation: pd.DataFrame, store: Store) -> list[Table]:
    candidates = [
        Table("headline", tables.headline_wide(long), "Headline metrics per model (values in %)."),
        Table("headline_long", long, "Headline metrics with 95% CIs, change against the baseline and the test."),
        Table("corruption_errors", corruptions, "Top-1 error per corruption and severity, CE and relative CE."),
        Table("ce_per_corruption", ce_wide, "CE (%) per corruption (rows) and model (columns)."),
        Table("corruption_changes", changes, "Change in top-1 error against the baseline per corruption and "
              "severity, with McNemar's exact p-value."),
        Table("across_seeds", tables.across_seeds(long, tables.seed_groups(store)), "Mean over seeds and its 95% t "
              "interval per generation and headline quantity."),
        Table("training", tables.training_table(store), "Per generation: test top-1 recorded at training, data "
              "sizes and pseudo-label statistics from meta.json."),
        Table("perturbations", perturbations, "Flip probability, FR, T5D and top-1 per perturbation and difficulty."),
        Table("ablation", ablation, "Runs side by side: settings that differ between their configs, then metrics."),
        Table("versions", tables.versions_table(store), "Package versions recorded in the stores."),
        Table("data", tables.data_table(store), "Datasets and subset sizes (images per measurement) per suite."),
        Table("settings", tables.settings_table(store), "Settings recorded in the stores' rows and models' meta."),
        Table("definitions", tables.definitions_table(store), DEFINITIONS_CAPTION),
    ]
    return [t for t in candidates if not t.frame.empty]


def _overview(store: Store, baseline: str) -> list[str]:
    blocks = [
        "Results stores: " + ", ".join(name(p) for p in store.sources) + ".",
        "Models (grouped by run, ordered by generation): " + ", ".join(name(m) for m in store.order) + ".",
        f"Baseline for the changes (deltas) and paired tests: {name(baseline)}.",
    ]
    return blocks + ["Note: " + _mark_paths(note, store.sources) for note in store.notes]


def _mark_paths(text: str, paths: list[Path]) -> str:
    """The store paths inside a note marked as user data (escaped in markdown and HTML)."""
    for path in sorted({str(p) for p in paths}, key=len, reverse=True):
        text = text.replace(path, name(path))
    return text


def _seed_blocks(long: pd.DataFrame, groups: dict[str, list[str]], out: Path) -> list:
    """Across-seed means and t intervals per generation, when runs differ only in their seed."""
    seeds = tables.across_seeds(long, groups)
    if seeds.empty:
        return []
    named = "; ".join(f"{name(g)}: " + ", ".join(name(r) for r in runs) for g, runs in groups.items())
    frame = seeds.assign(model=[f"{g} ({k} seeds)/gen{n}" for g, k, n in
                                zip(seeds["group"], seeds["seeds"], seeds["generation"])],
                         run=seeds["group"], value=seeds["mean"])
    colours = figures.model_colours(list(dict.fromkeys(frame["model"])), dict(zip(frame["model"], frame["run"])))
    figures.metrics_vs_generation(frame, colours, out / "figures", stem="seeds_vs_generation")
    shown = seeds.drop(columns=["quantity", "attack", "eps"])
    changes = tables.seed_changes(long, groups)
    paired = [] if changes.empty else [Table("seed_changes", changes.drop(columns=["quantity"]),
                                             "Change against gen0 paired by seed (each seed's generation minus the "
                                             "same seed's gen0): mean over seeds, 95% t interval, each seed's change.")]
    return [f"Runs that differ only in their seed: {named}.",
            Figure(out / "figures" / "seeds_vs_generation", "Headline metrics vs generation: the mean over seeds "
                   "with its 95% t interval (the spread between seeds: data draw, noise, initialisation)."),
            Table("across_seeds", shown, "Mean over seeds, standard deviation, 95% t interval and each seed's "
                  "value per generation."), *paired]


def _headline_section(long: pd.DataFrame, colours: dict, out: Path, groups: dict[str, list[str]],
                      masking: pd.DataFrame | None = None) -> Section:
    if long.empty:
        return Section("Headline", ["The stores hold no headline metrics."])
    fixed, robust = long[long["attack"].isna()], long[long["attack"].notna()]
    blocks: list = []
    for part, what in ((fixed, "Headline"), (robust, "Robust accuracy per attack and eps (1/255)")):
        if not part.empty:
            values, changes = tables.headline_display(part), tables.delta_display(part)
            if part is robust and len(values.index) < len(values.columns):  # long, not wide: fits the page
                values, changes = (t.T.rename_axis(index="attack and eps") for t in (values, changes))
            blocks += [Table("headline", values, f"{what}: value [95% CI] per model, in %."),
                       Table("headline_delta", changes, f"{what}: change against the baseline (percentage points), "
                             "with McNemar's exact p-value where both models have per-image results on the same "
                             "images, or the paired bootstrap 95% CI of the change.")]
    blocks.append(METHODS)
    figures.metrics_vs_generation(long, colours, out / "figures")
    blocks.append(Figure(out / "figures" / "metrics_vs_generation", "Headline metrics vs generation (95% CIs)."))
    blocks += _seed_blocks(long, groups, out)
    if not robust.empty:
        figures.robust_vs_eps(robust, colours, out / "figures")
        blocks.append(Figure(out / "figures" / "robust_accuracy_vs_eps",
                             "Robust top-1 accuracy vs eps (1/255 units) per attack (95% Clopper-Pearson CIs)."))
    if masking is not None and not masking.empty:
        blocks.append(Table("gradient_masking", masking, "Signs of masked gradients per model: zero_gradient = more "
                            "than 1% of attacked images had an all-zero input gradient; rises_with_eps = robust "
                            "accuracy above the one at the next smaller eps; weaker_than_fgsm = an iterative attack "
                            "left more images right than FGSM. A flagged robust accuracy is not to be trusted; "
                            "'none' = checked, nothing found."))
    return Section("Headline", blocks)


def _corruption_section(long: pd.DataFrame, corruptions: pd.DataFrame, ce_wide: pd.DataFrame,
                        changes: pd.DataFrame, order: list[str], baseline: str, colours: dict, out: Path) -> Section:
    if corruptions.empty:
        return Section("Corruptions (ImageNet-C style)", ["The stores hold no corruption results."])
    named = corruptions.groupby("baseline", sort=False)["model"].agg(lambda m: ", ".join(name(x) for x in
                                                                                        dict.fromkeys(m)))
    blocks: list = ["CE normalisation baseline: " + "; ".join(f"{name(b)} (for {m})" for b, m in named.items()) + "."]
    figures.ce_heatmap(corruptions, order, out / "figures")
    blocks.append(Figure(out / "figures" / "ce_heatmap", "Top-1 error (%) per corruption and severity, one panel "
                         "per model, on one colour scale; each row's CE (baseline = 100) at its right."))
    if not changes.empty:
        figures.ce_delta_heatmap(changes, order, baseline, out / "figures")
        blocks += [Figure(out / "figures" / "ce_delta_heatmap",
                          f"Change in top-1 error against {name(baseline)} (percentage points; blue = fewer errors); "
                          f"* and bold: McNemar's exact p < {figures.SIGNIFICANCE:g} on that cell's images (no "
                          "correction for the many cells)."),
                   Table("corruption_changes", changes, "Change in top-1 error against the baseline per corruption "
                         "and severity (percentage points) with McNemar's exact p-value.")]
    if not ce_wide.empty:
        figures.ce_bars(ce_wide, colours, out / "figures")
        blocks += [Table("ce_per_corruption", ce_wide, "CE (%) per corruption and model (baseline = 100)."),
                   Figure(out / "figures" / "ce_per_corruption", "CE per corruption per model (lower is better).")]
    clean = long[long["quantity"] == "clean_top1"]
    clean_error = dict(zip(clean["model"], 100 - clean["value"]))
    figures.error_vs_severity(corruptions, clean_error, colours, out / "figures")
    blocks += [Figure(out / "figures" / "error_vs_severity",
                      "Mean top-1 error per corruption family vs severity (common corruptions; 0 = clean)."),
               Table("corruption_errors", corruptions,
                     "Top-1 error (%) per corruption and severity, CE, relative CE and the normalisation baseline.")]
    return Section("Corruptions (ImageNet-C style)", blocks)


def _training_section(store: Store, colours: dict, out: Path) -> Section:
    """Training curves and pseudo-label statistics per generation, from the meta.json the store holds."""
    title = "Training"
    histories, pseudo, classes = {}, {}, None
    for model in store.order:
        meta = tables.model_meta(store, model)
        if isinstance(meta.get("history"), list) and meta["history"]:
            histories[model] = [h for h in meta["history"] if isinstance(h, dict)]
        if isinstance(meta.get("pseudo_labels"), dict) and meta["pseudo_labels"].get("kept_per_class"):
            pseudo[model] = meta["pseudo_labels"]
            classes = classes or meta.get("classes")
    blocks: list = []
    training = tables.training_table(store)
    if not training.empty:
        blocks.append(Table("training", training, "Per generation, from its meta.json: test top-1 measured at the "
                            "end of training (on the whole test set), data sizes and pseudo-label statistics."))
    if histories:
        figures.training_curves(histories, colours, out / "figures")
        blocks.append(Figure(out / "figures" / "training_curves", "Mean training loss and learning rate per epoch, "
                             "one line per generation (students' losses include the pseudo-label term)."))
    if pseudo:
        figures.pseudo_label_stats(pseudo, classes, colours, out / "figures")
        blocks.append(Figure(out / "figures" / "pseudo_labels", "Pseudo labels per student generation: pool "
                             "images per class (the teacher's top-1), kept by the confidence filter, written after "
                             "balancing; their accuracy on the whole pool and on the kept images (held-back labels)."))
    if not blocks:
        blocks.append("The stores hold no training history or pseudo-label statistics (models without meta.json, "
                      "e.g. timm models, or stores written without the `models` table).")
    return Section(title, blocks)


def _perturbation_section(perturbations: pd.DataFrame, shown: dict, path: Path | None, out: Path) -> Section:
    title = "Perturbations (ImageNet-P style)"
    blocks: list = []
    if perturbations.empty:
        blocks.append("The stores hold no perturbation results.")
    else:
        blocks += ["FR and T5D ratios are normalised by the baseline named in the rows' settings (`baseline`); fp and "
                   "t5d are the raw flip probability and top-5 distance.",
                   Table("perturbations", perturbations, "Per perturbation and difficulty (top-1 in %).")]
    if "frames" in shown:
        assert path is not None  # `shown` was read from the examples file at `path`
        figures.perturbation_frames(shown["frames"], shown["perturbations"], shown["frame_index"], out / "figures")
        blocks.append(Figure(out / "figures" / "perturbation_frames",
                             f"One image's frames per perturbation (t = frame index), {_source(shown, path)}."))
    return Section(title, blocks)


def _ablation_section(ablation: pd.DataFrame, long: pd.DataFrame, store: Store) -> Section:
    if ablation.empty:
        runs = store.models["run"].dropna().nunique()
        return Section("Ablation", [f"No ablation table: {runs} run(s) with a stored config (needs 2 or more)."])
    metrics = {"run", "generation", *long["label"]}
    settings = [c for c in ablation.columns if c not in metrics]
    text = ("Settings that differ between the runs' stored configs: " + ", ".join(name(s) for s in settings) + "."
            if settings else "The runs' stored configs do not differ.")
    return Section("Ablation", [text, Table("ablation", ablation, "Runs side by side (values in %).")])


def _examples_section(shown: dict, path: Path | None, out: Path) -> Section:
    title = "Example corrupted images"
    if path is None:
        return Section(title, [f"Skipped: no image array file given (--examples, or {EXAMPLES_FILE} beside a store)."])
    if "images" not in shown:
        return Section(title, [f"{name(path)} holds no corrupted images (`images`): the corruption suite was not run."])
    figures.example_strip(shown["images"], shown["titles"], out / "figures")
    return Section(title, [Figure(out / "figures" / "example_corruptions",
                                  f"One test image under every corruption (the severity in each title), "
                                  f"{_source(shown, path)}.")])


def _find_examples(store: Store, examples: str | Path | None) -> Path | None:
    """--examples when given (it must exist), else the first examples.npz beside a store."""
    if examples:
        if not Path(examples).is_file():
            raise FileNotFoundError(f"--examples file not found: {examples}")
        return Path(examples)
    return next((p for p in (s.parent / EXAMPLES_FILE for s in store.sources) if p.is_file()), None)


def _read_examples(path: Path) -> dict:
    """The arrays of an examples file (docs/contracts.md): images + titles, frames + frame_index + perturbations.
    Raises ReportError naming the file when it is not a readable .npy / .npz of plain arrays (truncated, or holding
    pickled objects, which are never loaded)."""
    try:
        if path.suffix == ".npy":
            images = np.load(path, allow_pickle=False)
            return {"images": images, "titles": [f"example {i}" for i in range(len(images))]}
        with np.load(path, allow_pickle=False) as data:
            shown = {key: data[key] for key in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        reason = "it holds pickled objects, which are never loaded" if "pickle" in str(exc) else str(exc)
        raise ReportError(f"{path} is not a readable examples file ({reason}); delete it (nst-eval writes it "
                          "again) or give another with --examples") from None
    if "images" in shown:
        titles = shown.get("titles", [f"example {i}" for i in range(len(shown["images"]))])
        shown["titles"] = [str(t) for t in titles]
    if "frames" in shown:
        frames = shown["frames"]
        names = shown.get("perturbations", [f"perturbation {i}" for i in range(len(frames))])
        shown["perturbations"] = [str(n) for n in names]
        shown.setdefault("frame_index", np.tile(np.arange(frames.shape[1]), (len(frames), 1)))
    return shown


def _source(shown: dict, path: Path) -> str:
    return f"from {name(path)}: {name(shown['source'])}" if "source" in shown else f"from {name(path)}"


def _settings_section(store: Store) -> Section:
    definitions = tables.definitions_table(store)
    return Section("Settings used", [
        Table("versions", tables.versions_table(store), "Versions of torch, timm and torchattacks as recorded."),
        Table("data", tables.data_table(store), "Datasets and subset sizes: images per measurement (n) per suite."),
        Table("settings", tables.settings_table(store),
              "Every setting recorded in the results' rows and in the models' meta versions (seeds, limits, ...)."),
        *([Table("definitions", definitions, DEFINITIONS_CAPTION)] if not definitions.empty else []),
    ])
