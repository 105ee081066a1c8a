"""Models: timm's factory, a wrapper that normalises inside (so attacks see [0, 1] pixels), and `load_model`."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from nst_core.checkpoint import CheckpointError, WEIGHTS, load_weights, read_tensors
from nst_core.config import ModelSpec


class Normalize(nn.Module):
    """(x - mean) / std per channel, with mean and std as buffers so they move with the model."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class NormalizedClassifier(nn.Module):
    """A classifier on images in [0, 1]: normalisation, then the timm model (whose state dict is the checkpoint)."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


def create_model(spec: ModelSpec, num_classes: int, in_chans: int, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, pretrained: bool = False) -> nn.Module:
    """A timm model with the recipe's model noise (dropout before the classifier, stochastic depth)."""
    try:
        return timm.create_model(spec.arch, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans,
                                 drop_rate=drop_rate, drop_path_rate=drop_path_rate, **spec.kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ValueError(f"unknown timm model {spec.arch!r}; see timm.list_models() for the names") from exc
        raise


def load_model(source: str | Path, device: str | torch.device = "cpu", pretrained: bool = False,
               weights: str | Path | None = None) -> tuple[NormalizedClassifier, dict[str, Any]]:
    """An eval-mode classifier on [0, 1] images and its meta, from a checkpoint directory or `timm:<name>`.

    `pretrained` downloads timm's weights (the only network use); `weights` loads a foreign file into a timm
    model: .safetensors, or .pth/.pt through torch.load(weights_only=True), which never unpickles code.
    """
    source_str = str(source)
    if source_str.startswith("timm:"):
        model, meta = _load_timm(source_str[len("timm:"):], pretrained, weights)
    else:
        model, meta = _load_checkpoint(Path(source))
    model.to(device).eval()
    return model, meta


def model_from_meta(meta: dict[str, Any]) -> NormalizedClassifier:
    """Rebuild the (untrained) classifier a meta.json describes."""
    spec = ModelSpec(meta["arch"], dict(meta.get("model_kwargs") or {}))
    inner = create_model(spec, meta["num_classes"], meta["input_size"][0],
                         meta.get("drop_rate", 0.0), meta.get("drop_path_rate", 0.0))
    return NormalizedClassifier(inner, meta["mean"], meta["std"])


def _load_checkpoint(path: Path) -> tuple[NormalizedClassifier, dict[str, Any]]:
    directory = path.parent if path.name == WEIGHTS else path
    if not directory.is_dir():
        raise CheckpointError(f"{path} is neither a checkpoint directory nor a timm:<name> model")
    state, meta = load_weights(directory)
    model = model_from_meta(meta)
    _load_state(model.model, state, directory / WEIGHTS)
    meta = {**meta, "source": str(directory)}
    return model, meta


def _load_timm(name: str, pretrained: bool, weights: str | Path | None) -> tuple[NormalizedClassifier, dict[str, Any]]:
    inner = timm.create_model(name, pretrained=pretrained)
    if weights is not None:
        path = Path(weights)
        state = read_tensors(path) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu", weights_only=True)
        _load_state(inner, state, path)
    cfg = timm.data.resolve_data_config({}, model=inner)
    meta = {
        "name": f"timm:{name}", "run": None, "generation": None, "teacher": None, "arch": name, "model_kwargs": {},
        "num_classes": inner.num_classes, "input_size": list(cfg["input_size"]), "mean": list(cfg["mean"]),
        "std": list(cfg["std"]), "crop_pct": cfg.get("crop_pct", 0.875), "interpolation": cfg.get("interpolation", "bilinear"),
        "pretrained": pretrained, "sha256": None, "source": f"timm:{name}", "config": None,
    }
    return NormalizedClassifier(inner, meta["mean"], meta["std"]), meta


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


def versions() -> dict[str, str]:
    """Library versions recorded with every checkpoint and result."""
    import torchvision

    found = {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
             "timm": timm.__version__}
    try:
        import torchattacks

        found["torchattacks"] = torchattacks.__version__
    except ImportError:
        pass
    return found
