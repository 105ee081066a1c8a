"""Ablation sweeps: the variants of a run, each changing one setting of its students, as sibling runs.

`nst-train --config X --ablate student_noise` trains X under `<root>/<name>` (the base row), then each variant
under `<root>/<name>-<variant>` with its own config.yaml. Every switch concerns the students (gen >= 1), so the
siblings share the base run's gen0: their config names it as `init.teacher` and it is copied, not retrained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from nst_core.config import ConfigError, RunConfig, config_from_dict, set_dotted
from nst_core.engine import run

Overrides = dict[str, Any]  # dotted key -> value


def _student_noise(cfg: RunConfig) -> dict[str, Overrides]:
    return {"no_augment": {"noise.randaugment": False},
            "no_model_noise": {"noise.dropout": 0.0, "noise.drop_path": 0.0},
            "no_noise": {"noise.randaugment": False, "noise.dropout": 0.0, "noise.drop_path": 0.0}}


def _labels(cfg: RunConfig) -> dict[str, Overrides]:
    other = "hard" if cfg.pseudo.mode == "soft" else "soft"
    return {f"{other}_labels": {"pseudo.mode": other}}


def _balance(cfg: RunConfig) -> dict[str, Overrides]:
    return {"unbalanced" if cfg.pseudo.balance else "balanced": {"pseudo.balance": not cfg.pseudo.balance}}


def _teacher_noise(cfg: RunConfig) -> dict[str, Overrides]:
    name = "clean_teacher" if cfg.pseudo.teacher_noise else "noised_teacher"
    return {name: {"pseudo.teacher_noise": not cfg.pseudo.teacher_noise}}


def _model_size(cfg: RunConfig) -> dict[str, Overrides]:
    teacher = {"arch": cfg.models[0].arch, "kwargs": dict(cfg.models[0].kwargs)}
    return {"student_as_teacher": {"models": [teacher] * len(cfg.models)}}


def _unlabeled_data(cfg: RunConfig) -> dict[str, Overrides]:
    if cfg.data.unlabeled_limit is None:
        raise ConfigError("--ablate unlabeled_data takes fractions of data.unlabeled_limit; set it in the config")
    return {f"unlabeled_{pct}pct": {"data.unlabeled_limit": cfg.data.unlabeled_limit * pct // 100} for pct in (50, 25)}


def _unlabel_ratio(cfg: RunConfig) -> dict[str, Overrides]:
    return {f"ratio{r}": {"train.unlabel_ratio": r} for r in (1, 2 * cfg.train.unlabel_ratio)}


def _method(cfg: RunConfig) -> dict[str, Overrides]:
    return {m: {"method": m} for m in ("nst", "kd", "mpl")}


SWITCHES: dict[str, Callable[[RunConfig], dict[str, Overrides]]] = {
    "student_noise": _student_noise, "labels": _labels, "balance": _balance, "teacher_noise": _teacher_noise,
    "model_size": _model_size, "unlabeled_data": _unlabeled_data, "unlabel_ratio": _unlabel_ratio,
    "method": _method,
}


def variants(cfg: RunConfig, switch: str) -> dict[str, Overrides]:
    """The variants of one switch that differ from `cfg`: variant name -> dotted overrides."""
    if switch not in SWITCHES:
        raise ConfigError(f"unknown ablation {switch!r}; choose from {', '.join(SWITCHES)}")
    base = cfg.to_dict()
    found = {name: overrides for name, overrides in SWITCHES[switch](cfg).items()
             if any(_get(base, key) != value for key, value in overrides.items())}
    if not found:
        raise ConfigError(f"--ablate {switch}: every variant equals the base config; nothing to compare")
    return found


def sibling_config(cfg: RunConfig, variant: str, overrides: Overrides, base_gen0: Path) -> RunConfig:
    """`cfg` with `overrides`, named `<name>-<variant>`, with the base run's gen0 as its gen0."""
    raw = cfg.to_dict()
    for key, value in {**overrides, "name": f"{cfg.name}-{variant}", "init.source": None,
                       "init.teacher": str(base_gen0)}.items():
        set_dotted(raw, key, value)
    return config_from_dict(raw, source=f"{cfg.name} variant {variant}")


def plan_sweep(cfg: RunConfig, switches: list[str], root: Path) -> dict[Path, RunConfig]:
    """Run folder -> config: the base run first, then one sibling per variant of each switch."""
    base_dir = Path(root) / cfg.name
    runs = {base_dir: cfg}
    for switch in switches:
        for variant, overrides in variants(cfg, switch).items():
            runs[Path(root) / f"{cfg.name}-{variant}"] = sibling_config(cfg, variant, overrides, base_dir / "gen0")
    return runs


def run_sweep(cfg: RunConfig, switches: list[str], root: Path, device: str | None = None,
              progress: bool = True) -> dict[Path, list[dict[str, Any]]]:
    """Train the base run and every sibling (finished generations are kept); returns each run's metas."""
    return {out: run(run_cfg, out, device=device, progress=progress)
            for out, run_cfg in plan_sweep(cfg, switches, root).items()}


def _get(raw: dict[str, Any], dotted: str) -> Any:
    node: Any = raw
    for key in dotted.split("."):
        node = node[key]
    return node
