"""Noisy Student Training engine: config -> data -> models -> pseudo labels -> training -> checkpoints."""
from nst_core.config import ConfigError, RunConfig, load_config
from nst_core.models import load_model

__all__ = ["ConfigError", "RunConfig", "load_config", "load_model", "train"]


def train(config: "RunConfig | str", out: str | None = None, device: str | None = None, progress: bool = True) -> list[dict]:
    """Train every generation of a run (a RunConfig or a YAML path) into `out` (default runs/<name>)."""
    from pathlib import Path

    from nst_core.engine import run

    cfg = load_config(config) if not isinstance(config, RunConfig) else config
    return run(cfg, Path(out or Path("runs") / cfg.name), device=device, progress=progress)
