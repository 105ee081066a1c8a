"""Report figures, each written as PNG and SVG; one colour per model across all figures.

Importing this module changes no global matplotlib state: every figure is an explicit `matplotlib.figure.Figure`
on its own Agg canvas (no pyplot, no backend switch), drawn inside `matplotlib.rc_context(STYLE)`.
"""

from __future__ import annotations

import functools
import io
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colormaps, colors, ticker
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nst_common.files import atomic_write
from reports.corruptions import FAMILIES

RUN_PALETTES = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")
OTHER_COLOURS = ("tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")
DPI = 150
STYLE: dict[Any, Any] = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
         "svg.hashsalt": "nst-report", "svg.fonttype": "path"}
"""rcParams for the report's figures, applied only inside `rc_context` while a figure is drawn and saved."""
SIGNIFICANCE = 0.05
"""p-value under which a paired test counts as resolving a change (marked in the delta heatmap)."""


def styled(function: Callable[..., list[Path]]) -> Callable[..., list[Path]]:
    """Run a figure function inside the report's rc_context, so global rcParams stay untouched."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> list[Path]:
        with matplotlib.rc_context(STYLE):
            return function(*args, **kwargs)

    return wrapper


def new_figure(**kwargs: Any) -> Figure:
    """A Figure on its own Agg canvas (constrained layout), independent of pyplot and the chosen backend."""
    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def model_colours(order: list[str], runs: dict[str, str | None]) -> dict[str, tuple]:
    """A colour per model: each run gets a hue, darker for later generations; models without a run get others."""
    colours: dict[str, tuple] = {}
    run_names = list(dict.fromkeys(r for r in (runs.get(m) for m in order) if r is not None))
    for index, run in enumerate(run_names):
        members = [m for m in order if runs.get(m) == run]
        shades = np.linspace(0.5, 0.95, len(members)) if len(members) > 1 else [0.75]
        cmap = colormaps[RUN_PALETTES[index % len(RUN_PALETTES)]]
        colours.update({m: cmap(s) for m, s in zip(members, shades)})
    others = [m for m in order if m not in colours]
    colours.update({m: colors.to_rgba(OTHER_COLOURS[i % len(OTHER_COLOURS)]) for i, m in enumerate(others)})
    return colours


@styled
def ce_bars(ce_wide: pd.DataFrame, colours: dict[str, tuple], out: Path) -> list[Path]:
    """Grouped bars: CE per corruption (rows of `ce_wide`) per model (its columns); 100 = the baseline."""
    models, corruptions = list(ce_wide.columns), list(ce_wide.index)
    width = 0.8 / max(len(models), 1)
    fig = new_figure(figsize=(min(11.0, max(6.0, 0.25 * len(models) * len(corruptions) + 2)), 4))
    ax = fig.subplots()
    for i, model in enumerate(models):
        x = np.arange(len(corruptions)) + (i - (len(models) - 1) / 2) * width
        ax.bar(x, ce_wide[model].to_numpy(dtype=float), width, color=colours[model], label=model,
               edgecolor="black", linewidth=0.3)
    ax.axhline(100, color="black", linestyle="--", linewidth=0.8, label="baseline (CE = 100)")
    ax.set_xticks(np.arange(len(corruptions)), [c.replace("_", " ") for c in corruptions], rotation=40, ha="right")
    ax.set_xlabel("corruption")
    ax.set_ylabel("corruption error CE (%, baseline = 100)")
    ax.set_title("Corruption error per corruption (lower is better)")
    _legend_below(fig, list(colours))
    return _save(fig, out / "ce_per_corruption")


@styled
def ce_heatmap(corruptions: pd.DataFrame, order: list[str], out: Path) -> list[Path]:
    """Top-1 error (%) per corruption (rows) and severity (columns), one panel per model, on one colour scale.

    `corruptions` is `tables.corruption_table` (columns `error s<k> (%)` and `CE (%)`); each row's CE (the sum of
    its errors over severities, normalised by the baseline's) is written at the right of the row.
    """
    severity_columns = [c for c in corruptions.columns if c.startswith("error s")]
    severities = [c.split("s")[1].split()[0] for c in severity_columns]
    models = [m for m in order if m in set(corruptions["model"])]
    names = list(dict.fromkeys(corruptions["corruption"]))
    grids = {m: corruptions[corruptions["model"] == m].set_index("corruption").reindex(names) for m in models}
    values = np.concatenate([g[severity_columns].to_numpy(dtype=float).ravel() for g in grids.values()])
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 100.0)
    columns = min(4, len(models))
    rows = int(np.ceil(len(models) / columns))
    fig = new_figure(figsize=(2.6 * columns + 1.6, (0.2 * len(names) + 0.9) * rows + 0.3))
    axes = fig.subplots(rows, columns, sharey=True, squeeze=False)
    image = None
    for ax, model in zip(axes.flat, models):
        grid = grids[model][severity_columns].to_numpy(dtype=float)
        image = ax.imshow(grid, cmap="magma_r", vmin=low, vmax=high, aspect="auto", interpolation="none")
        _annotate(ax, grid, image, "{:.0f}")
        ax.set_xticks(np.arange(len(severities)), severities)
        ax.set_yticks(np.arange(len(names)), [n.replace("_", " ") for n in names], fontsize=7)
        ax.set_xlabel("severity")
        ax.set_title("\n".join(textwrap.wrap(model, 30)), fontsize=8)
        ce = grids[model]["CE (%)"] if "CE (%)" in grids[model] else pd.Series(np.nan, index=names)
        for y, value in enumerate(ce.to_numpy(dtype=float)):
            if np.isfinite(value):
                ax.text(len(severities) - 0.4, y, f"CE {value:.0f}", fontsize=6, va="center", ha="left",
                        clip_on=False)
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes, label="top-1 error (%)", shrink=0.6, pad=0.04)
    fig.suptitle("Top-1 error per corruption and severity (lower is better; CE per row, baseline = 100)",
                 fontsize=9)
    return _save(fig, out / "ce_heatmap")


@styled
def ce_delta_heatmap(changes: pd.DataFrame, order: list[str], baseline: str, out: Path) -> list[Path]:
    """Change in top-1 error (percentage points) against `baseline` per corruption and severity, a panel per model.

    `changes` is `tables.corruption_changes`: `model`, `corruption`, `severity`, `change (pp)`, `p_value`. Blue is
    fewer errors than the baseline; cells whose McNemar p < SIGNIFICANCE are marked with `*` and bold text.
    """
    models = [m for m in order if m in set(changes["model"]) and m != baseline]
    names = list(dict.fromkeys(changes["corruption"]))
    severities = sorted(int(s) for s in set(changes["severity"]))
    grids, marks = {}, {}
    for model in models:
        rows = changes[changes["model"] == model]
        grids[model] = rows.pivot(index="corruption", columns="severity", values="change (pp)").reindex(
            index=names, columns=severities).to_numpy(dtype=float)
        marks[model] = (rows.pivot(index="corruption", columns="severity", values="p_value").reindex(
            index=names, columns=severities).to_numpy(dtype=float) < SIGNIFICANCE)
    values = np.concatenate([g.ravel() for g in grids.values()]) if grids else np.array([])
    finite = np.abs(values[np.isfinite(values)])
    limit = max(float(finite.max()), 1.0) if len(finite) else 1.0
    columns = max(1, min(4, len(models)))
    rows = max(1, int(np.ceil(len(models) / columns)))
    fig = new_figure(figsize=(2.4 * columns + 1.6, (0.2 * len(names) + 0.9) * rows + 0.3))
    axes = fig.subplots(rows, columns, sharey=True, squeeze=False)
    image = None
    for ax, model in zip(axes.flat, models):
        image = ax.imshow(grids[model], cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="none")
        _annotate(ax, grids[model], image, "{:+.0f}", marks[model])
        ax.set_xticks(np.arange(len(severities)), [str(s) for s in severities])
        ax.set_yticks(np.arange(len(names)), [n.replace("_", " ") for n in names], fontsize=7)
        ax.set_xlabel("severity")
        ax.set_title("\n".join(textwrap.wrap(f"{model} - {baseline}", 30)), fontsize=8)
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes, label="change in top-1 error (pp)", shrink=0.6, pad=0.02)
    fig.suptitle(f"Change in top-1 error against {baseline} (blue = fewer errors; * McNemar p < {SIGNIFICANCE:g})",
                 fontsize=9)
    return _save(fig, out / "ce_delta_heatmap")


@styled
def training_curves(histories: dict[str, list[dict]], colours: dict[str, tuple], out: Path) -> list[Path]:
    """Training loss and learning rate per epoch, one line per model (generation), from meta.json `history`.

    Each entry is {"epoch", "loss", "lr"} (nst_core.training); entries of other stages (MPL's fine-tune) continue the
    epoch count. Students' losses include the pseudo-label term, so they are not on the teacher's scale.
    """
    fig = new_figure(figsize=(9, 3.4))
    loss_ax, lr_ax = fig.subplots(1, 2)
    for model, history in histories.items():
        epochs = np.arange(1, len(history) + 1)
        losses = np.array([h.get("loss", np.nan) for h in history], dtype=float)
        rates = np.array([h.get("lr", np.nan) for h in history], dtype=float)
        loss_ax.plot(epochs, losses, color=colours.get(model), label=model, linewidth=1.2)
        lr_ax.plot(epochs, rates, color=colours.get(model), label=model, linewidth=1.2)
    loss_ax.set(title="Training loss per epoch", xlabel="epoch", ylabel="mean loss over the epoch")
    lr_ax.set(title="Learning rate at the end of each epoch", xlabel="epoch", ylabel="learning rate")
    for ax in (loss_ax, lr_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    _legend_below(fig, list(colours))
    return _save(fig, out / "training_curves")


@styled
def pseudo_label_stats(pseudo: dict[str, dict], classes: list[str] | None, colours: dict[str, tuple],
                       out: Path) -> list[Path]:
    """Per student generation: pool images per class before the filter, kept, written (after balancing), and the
    pseudo labels' accuracy on the pool and on the kept images (meta.json `pseudo_labels`, nst_core.engine)."""
    models = list(pseudo)
    counts = ("before_per_class", "kept_per_class", "written_per_class")
    titles = ("Pool images per class (teacher's top-1)", "Kept after the confidence filter",
              "Written to the student's set")
    width_classes = max(len(pseudo[m].get(counts[0]) or []) for m in models)
    names = list(classes or [])[:width_classes] or [str(i) for i in range(width_classes)]
    names += [str(i) for i in range(len(names), width_classes)]
    fig = new_figure(figsize=(11, 3.6))
    axes = fig.subplots(1, 4, width_ratios=[3, 3, 3, 1.6])
    width = 0.8 / max(len(models), 1)
    for ax, key, title in zip(axes, counts, titles):
        for i, model in enumerate(models):
            values = np.array(pseudo[model].get(key) or [], dtype=float)
            x = np.arange(len(values)) + (i - (len(models) - 1) / 2) * width
            ax.bar(x, values, width, color=colours.get(model), label=model, edgecolor="black", linewidth=0.3)
        ax.set_xticks(np.arange(width_classes), names, rotation=60, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("images")
    accuracy_ax = axes[3]
    for i, model in enumerate(models):
        for j, (key, hatch) in enumerate((("accuracy_on_pool", ""), ("accuracy_on_kept", "//"))):
            value = pseudo[model].get(key)
            if value is not None:
                accuracy_ax.bar(j + (i - (len(models) - 1) / 2) * width, value, width, color=colours.get(model),
                                hatch=hatch, edgecolor="black", linewidth=0.3)
                accuracy_ax.text(j + (i - (len(models) - 1) / 2) * width, value, f"{value:.1f}", rotation=90,
                                 ha="center", va="bottom", fontsize=6)
    accuracy_ax.set_xticks([0, 1], ["whole pool", "kept"])
    accuracy_ax.set_title("Pseudo-label acc. (%)", fontsize=9)
    accuracy_ax.set_ylim(0, 110)
    _legend_below(fig, list(colours))
    return _save(fig, out / "pseudo_labels")


@styled
def error_vs_severity(corruptions: pd.DataFrame, clean_error: dict[str, float], colours: dict[str, tuple],
                      out: Path) -> list[Path]:
    """Mean top-1 error per corruption family vs severity (0 = clean), one line per model."""
    severity_columns = [c for c in corruptions.columns if c.startswith("error s")]
    severities = [int(c.split("s")[1].split()[0]) for c in severity_columns]
    fig = new_figure(figsize=(11, 3.6))
    axes = fig.subplots(1, len(FAMILIES), sharey=True)
    for ax, (family, members) in zip(axes, FAMILIES.items()):
        rows = corruptions[corruptions["corruption"].isin(members)]
        for model, group in rows.groupby("model", sort=False):
            x, y = list(severities), list(group[severity_columns].mean().to_numpy())
            if model in clean_error:
                x, y = [0, *x], [clean_error[model], *y]
            ax.plot(x, y, marker="o", markersize=3.5, color=colours[model], label=model)
        present = sorted(set(rows["corruption"]), key=members.index)
        ax.set_title(f"{family} ({len(present)} of {len(members)} corruptions)" if present else f"{family} (none)")
        ax.set_xlabel("severity (0 = clean)")
        ax.set_xticks([0, *severities])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean top-1 error (%)")
    _legend_below(fig, list(colours))
    return _save(fig, out / "error_vs_severity")


@styled
def robust_vs_eps(robust: pd.DataFrame, colours: dict[str, tuple], out: Path) -> list[Path]:
    """Robust accuracy vs eps (units of 1/255) per attack with 95% CIs, one line per model."""
    attacks = list(dict.fromkeys(robust["attack"]))
    fig = new_figure(figsize=(4.2 * len(attacks) + 1, 3.6))
    axes = fig.subplots(1, len(attacks), sharey=True, squeeze=False)
    dodge = 0.012 * max(float(np.ptp(robust["eps"].to_numpy(dtype=float))), 1.0)
    for ax, attack in zip(axes[0], attacks):
        groups = list(robust[robust["attack"] == attack].groupby("model", sort=False))
        for i, (model, group) in enumerate(groups):
            group = group.sort_values("eps")
            _errorbar(ax, group["eps"] + (i - (len(groups) - 1) / 2) * dodge, group, colours[model], model)
        ax.set_title(f"{attack} (L-inf)")
        ax.set_xlabel("eps (units of 1/255)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("robust top-1 accuracy (%)")
    _legend_below(fig, list(colours))
    return _save(fig, out / "robust_accuracy_vs_eps")


@styled
def metrics_vs_generation(long: pd.DataFrame, colours: dict[str, tuple], out: Path,
                          stem: str = "metrics_vs_generation") -> list[Path]:
    """Headline quantities vs generation with 95% CIs (robust accuracy at each attack's largest eps only).

    A line per run; models without a run are dashed horizontal levels. Written as `<stem>.png|svg`.
    """
    largest = long.groupby("attack")["eps"].transform("max")
    long = long[long["attack"].isna() | (long["eps"] == largest)]
    labels = list(dict.fromkeys(long["label"]))
    columns = min(4, len(labels))
    rows = int(np.ceil(len(labels) / columns))
    fig = new_figure(figsize=(3.2 * columns + 0.5, 2.9 * rows + 0.6))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, label in zip(axes.flat, labels):
        data = long[long["label"] == label]
        runs = list(data[data["run"].notna()].groupby("run", sort=False))
        for i, (_, group) in enumerate(runs):
            group = group.sort_values("generation")
            x = group["generation"].to_numpy(dtype=float) + (i - (len(runs) - 1) / 2) * 0.05
            ax.plot(x, group["value"], color=colours[group["model"].iloc[-1]], linewidth=1)
            for position, (_, row) in zip(x, group.iterrows()):
                _errorbar(ax, [position], row.to_frame().T, colours[row["model"]], row["model"])
        for _, row in data[data["run"].isna()].iterrows():
            ax.axhline(row["value"], color=colours[row["model"]], linestyle="--", linewidth=1, label=row["model"])
        ax.set_title("\n".join(textwrap.wrap(label, 28)))
        ax.set_xlabel("generation")
        ax.set_ylabel("value (%)")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(labels):]:
        ax.set_visible(False)
    _legend_below(fig, list(colours))
    return _save(fig, out / stem)


@styled
def example_strip(images: np.ndarray, titles: list[str], out: Path) -> list[Path]:
    """Rows of up to 10 example images (uint8 [K, C, H, W], [K, H, W, C] or [K, H, W]) with wrapped titles."""
    images = _as_hwc(images)
    columns = min(len(images), 10)
    rows = int(np.ceil(len(images) / columns))
    fig = new_figure(figsize=(1.4 * columns + 0.4, 1.9 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(images):]:
        ax.set_visible(False)
    for ax, image, title in zip(axes.flat, images, titles):
        _show(ax, image)
        ax.set_title("\n".join(textwrap.wrap(title.replace("_", " "), 14)), fontsize=7)
        ax.axis("off")
    return _save(fig, out / "example_corruptions")


@styled
def perturbation_frames(frames: np.ndarray, perturbations: list[str], frame_index: np.ndarray, out: Path) -> list[Path]:
    """One image's frames per perturbation: a row per perturbation (uint8 [P, F, C, H, W]), frame t above each."""
    rows, columns = frames.shape[:2]
    fig = new_figure(figsize=(0.95 * columns + 1.4, 1.05 * rows + 0.3))
    axes = fig.subplots(rows, columns, squeeze=False)
    for r, (name, row) in enumerate(zip(perturbations, frames)):
        for c, (ax, image) in enumerate(zip(axes[r], _as_hwc(row))):
            _show(ax, image)
            ax.set_title(f"t = {int(frame_index[r][c])}", fontsize=6, pad=2)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        axes[r][0].set_ylabel(name.replace("_", " "), rotation=0, ha="right", va="center", fontsize=8)
    return _save(fig, out / "perturbation_frames")


def _annotate(ax: Axes, grid: np.ndarray, image: Any, template: str, bold: np.ndarray | None = None) -> None:
    """Write each finite cell's value in the cell, black or white by the cell colour's luminance."""
    for (y, x), value in np.ndenumerate(grid):
        if not np.isfinite(value):
            continue
        red, green, blue, _ = image.cmap(image.norm(value))
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
        marked = bold is not None and bool(bold[y, x])
        text = "0" if round(value) == 0 else template.format(value)
        ax.text(x, y, text + ("*" if marked else ""), ha="center", va="center", fontsize=6,
                color="white" if dark else "black", fontweight="bold" if marked else "normal")


def _show(ax: Axes, image: np.ndarray) -> None:
    """A uint8 [H, W, C] image at its own pixels (no resampling, so the SVG embeds the original image)."""
    ax.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=255, interpolation="none")


def _errorbar(ax: Axes, x: Any, rows: pd.DataFrame, colour: tuple, label: str) -> None:
    values = rows["value"].to_numpy(dtype=float)
    low, high = rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float)
    yerr = np.vstack([values - low, high - values])
    ax.errorbar(x, values, yerr=np.where(np.isfinite(yerr), yerr, 0), color=colour, marker="o", markersize=3.5,
                capsize=2.5, linewidth=1, label=label)


def _legend_below(fig: Figure, order: list[str]) -> None:
    """One legend for the whole figure, below it: reference lines first, then models in report order."""
    entries: dict[str, Any] = {}  # label -> artist
    for axis in fig.axes:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    labels = sorted(entries, key=lambda label: order.index(label) if label in order else -1)
    handles = [entries[label] for label in labels]
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(6, len(labels)), frameon=False)


def _as_hwc(images: np.ndarray) -> np.ndarray:
    if images.ndim == 3:
        return images[..., None]
    if images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        return images.transpose(0, 2, 3, 1)
    return images


def _save(fig: Figure, stem: Path) -> list[Path]:
    """PNG (DPI) and SVG (no date, fixed hash salt: reproducible bytes), each written atomically."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path, kwargs in ((paths[0], {"dpi": DPI}), (paths[1], {"metadata": {"Date": None}})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=path.suffix[1:], **kwargs)
        data = buffer.getvalue()
        atomic_write(path, lambda tmp, data=data: tmp.write_bytes(data))
    return paths
