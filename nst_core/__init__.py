"""Noisy Student Training engine: config -> data -> models -> pseudo labels -> training -> checkpoints."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nst_core.config import ConfigError, RunConfig, load_config  # PyYAML only: no torch

if TYPE_CHECKING:
    from nst_core.models import load_model

__all__ = ["ConfigError", "RunConfig", "load_config", "load_model", "train"]


def __getattr__(name: str) -> Any:  # lazy: `nst-train --help` must not pull in torch and timm
    if name == "load_model":
        from nst_core.models import load_model

        return load_model
    raise AttributeError(f"module 'nst_core' has no attribute {name!r}")


def train(config: "RunConfig | str", out: str | None = None, device: str | None = None, progress: bool = True) -> list[dict]:
    """Train every generation of a run (a RunConfig or a YAML path) into `out` (default runs/<name>)."""
    from pathlib import Path

    from nst_core.engine import run

    cfg = load_config(config) if not isinstance(config, RunConfig) else config
    return run(cfg, Path(out or Path("runs") / cfg.name), device=device, progress=progress)
