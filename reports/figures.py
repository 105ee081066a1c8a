"""Report figures (matplotlib, Agg), each written as PNG and SVG; one colour per model across all figures."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from reports.corruptions import FAMILIES  # noqa: E402

RUN_PALETTES = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")
OTHER_COLOURS = ("tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")
DPI = 150
plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
                     "svg.hashsalt": "nst-report"})


def model_colours(order: list[str], runs: dict[str, str | None]) -> dict[str, tuple]:
    """A colour per model: each run gets a hue, darker for later generations; models without a run get others."""
    colours: dict[str, tuple] = {}
    run_names = list(dict.fromkeys(r for r in (runs.get(m) for m in order) if r is not None))
    for index, run in enumerate(run_names):
        members = [m for m in order if runs.get(m) == run]
        shades = np.linspace(0.5, 0.95, len(members)) if len(members) > 1 else [0.75]
        cmap = plt.get_cmap(RUN_PALETTES[index % len(RUN_PALETTES)])
        colours.update({m: cmap(s) for m, s in zip(members, shades)})
    others = [m for m in order if m not in colours]
    colours.update({m: matplotlib.colors.to_rgba(OTHER_COLOURS[i % len(OTHER_COLOURS)]) for i, m in enumerate(others)})
    return colours


def ce_bars(ce_wide: pd.DataFrame, colours: dict[str, tuple], out: Path) -> list[Path]:
    """Grouped bars: CE per corruption (rows of `ce_wide`) per model (its columns); 100 = the baseline."""
    models, corruptions = list(ce_wide.columns), list(ce_wide.index)
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(models) * len(corruptions) + 2), 4), layout="constrained")
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


def error_vs_severity(corruptions: pd.DataFrame, clean_error: dict[str, float], colours: dict[str, tuple],
                      out: Path) -> list[Path]:
    """Mean top-1 error per corruption family vs severity (0 = clean), one line per model."""
    severity_columns = [c for c in corruptions.columns if c.startswith("error s")]
    severities = [int(c.split("s")[1].split()[0]) for c in severity_columns]
    fig, axes = plt.subplots(1, len(FAMILIES), figsize=(11, 3.6), sharey=True, layout="constrained")
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


def robust_vs_eps(robust: pd.DataFrame, colours: dict[str, tuple], out: Path) -> list[Path]:
    """Robust accuracy vs eps (units of 1/255) per attack with 95% CIs, one line per model."""
    attacks = list(dict.fromkeys(robust["attack"]))
    fig, axes = plt.subplots(1, len(attacks), figsize=(4.2 * len(attacks) + 1, 3.6), sharey=True,
                             layout="constrained", squeeze=False)
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


def metrics_vs_generation(long: pd.DataFrame, colours: dict[str, tuple], out: Path) -> list[Path]:
    """Headline quantities vs generation with 95% CIs (robust accuracy at each attack's largest eps only).

    A line per run; models without a run are dashed horizontal levels.
    """
    largest = long.groupby("attack")["eps"].transform("max")
    long = long[long["attack"].isna() | (long["eps"] == largest)]
    labels = list(dict.fromkeys(long["label"]))
    columns = min(4, len(labels))
    rows = int(np.ceil(len(labels) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns + 0.5, 2.9 * rows + 0.6), layout="constrained",
                             squeeze=False)
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
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(labels):]:
        ax.set_visible(False)
    _legend_below(fig, list(colours))
    return _save(fig, out / "metrics_vs_generation")


def example_strip(images: np.ndarray, titles: list[str], out: Path) -> list[Path]:
    """Rows of up to 10 example images (uint8 [K, C, H, W], [K, H, W, C] or [K, H, W]) with wrapped titles."""
    images = _as_hwc(images)
    columns = min(len(images), 10)
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.4 * columns + 0.4, 1.9 * rows), layout="constrained",
                             squeeze=False)
    for ax in axes.flat[len(images):]:
        ax.set_visible(False)
    for ax, image, title in zip(axes.flat, images, titles):
        _show(ax, image)
        ax.set_title("\n".join(textwrap.wrap(title.replace("_", " "), 14)), fontsize=7)
        ax.axis("off")
    return _save(fig, out / "example_corruptions")


def perturbation_frames(frames: np.ndarray, perturbations: list[str], frame_index: np.ndarray, out: Path) -> list[Path]:
    """One image's frames per perturbation: a row per perturbation (uint8 [P, F, C, H, W]), frame t above each."""
    rows, columns = frames.shape[:2]
    fig, axes = plt.subplots(rows, columns, figsize=(0.95 * columns + 1.4, 1.05 * rows + 0.3), layout="constrained",
                             squeeze=False)
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


def _show(ax: plt.Axes, image: np.ndarray) -> None:
    """A uint8 [H, W, C] image at its own pixels (no resampling, so the SVG embeds the original image)."""
    ax.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=255, interpolation="none")


def _errorbar(ax: plt.Axes, x: object, rows: pd.DataFrame, colour: tuple, label: str) -> None:
    values = rows["value"].to_numpy(dtype=float)
    low, high = rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float)
    yerr = np.vstack([values - low, high - values])
    ax.errorbar(x, values, yerr=np.where(np.isfinite(yerr), yerr, 0), color=colour, marker="o", markersize=3.5,
                capsize=2.5, linewidth=1, label=label)


def _legend_below(fig: plt.Figure, order: list[str]) -> None:
    """One legend for the whole figure, below it: reference lines first, then models in report order."""
    entries: dict[str, object] = {}
    for axis in fig.axes:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    labels = sorted(entries, key=lambda label: order.index(label) if label in order else -1)
    handles = [entries[label] for label in labels]
    fig.legend(handles, labels, loc="outside lower center", ncols=min(6, len(labels)), frameon=False)


def _as_hwc(images: np.ndarray) -> np.ndarray:
    if images.ndim == 3:
        return images[..., None]
    if images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        return images.transpose(0, 2, 3, 1)
    return images


def _save(fig: plt.Figure, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=DPI)
    fig.savefig(paths[1], metadata={"Date": None})
    plt.close(fig)
    return paths
