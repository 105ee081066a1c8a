"""Models: timm's factory, a wrapper that normalises inside (so attacks see [0, 1] pixels), and `load_model`."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from nst_common.errors import CheckpointError
from nst_core.checkpoint import WEIGHTS, load_weights
from nst_core.config import ModelSpec


class Normalize(nn.Module):
    """(x - mean) / std per channel, with mean and std as buffers so they move with the model."""

    mean: torch.Tensor  # [1, C, 1, 1] (registered buffers)
    std: torch.Tensor

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
               weights: str | Path | None = None, eval_size: str | int | None = None,
               ) -> tuple[NormalizedClassifier, dict[str, Any]]:
    """An eval-mode classifier on [0, 1] images and its meta, from a checkpoint directory or `timm:<name>`.

    timm models: `pretrained` downloads timm's weights (the only network use; without a network it fails within
    seconds unless they are cached), `weights` loads a local file instead (.safetensors, or a timm / torch
    checkpoint read by `timm.models.load_state_dict` with `weights_only=True`, which never unpickles code; EMA
    weights are preferred when the file has them, as timm does). `eval_size`: "test" for timm's test size and
    crop where the pretrained config has one, or an int N for N x N. The meta records the eval transform (size,
    crop_pct, crop_mode, interpolation, mean, std), the class names, what weights were loaded (`weights`) and
    the sha256 of the weights actually loaded (`sha256`). Raises `CheckpointError` (a `ValueError`) naming the
    model or file.
    """
    source_str = str(source)
    if source_str.startswith("timm:"):
        model, meta = _load_timm(source_str[len("timm:"):], pretrained, weights, eval_size)
    else:
        if weights is not None or pretrained:
            raise CheckpointError(f"{source}: --weights and --pretrained apply to timm:<name> models; a checkpoint "
                                  "folder carries its own weights")
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
    data_cfg = (meta.get("config") or {}).get("data") or {}
    transform = {key: meta.get(key, data_cfg.get(key, default)) for key, default in TRANSFORM_DEFAULTS.items()}
    meta = {**meta, **transform, "source": str(directory), "weights": str(directory / WEIGHTS)}
    return model, meta


TRANSFORM_DEFAULTS = {"crop_pct": 0.875, "crop_mode": "center", "interpolation": "bilinear"}


def state_sha256(model: nn.Module) -> str:
    """sha256 over a model's state dict (sorted names, dtypes, shapes and bytes): the identity of loaded weights."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _create_timm(name: str, pretrained: bool) -> nn.Module:
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0]}*")[:5]
        raise CheckpointError(f"timm:{name} is not a timm model{'; close: ' + ', '.join(close) if close else ''} "
                              "(names as in timm.list_models(pretrained=True), e.g. timm:resnet50.a1_in1k)")
    if pretrained:
        check_pretrained_reachable(name)
    try:
        return timm.create_model(name, pretrained=pretrained)
    except (OSError, RuntimeError) as exc:
        if not pretrained:
            raise
        raise CheckpointError(f"timm:{name}: downloading its pretrained weights failed ({exc}). Pass a local weights "
                              "file with --weights FILE (safetensors or a timm/torch checkpoint)") from None


def _load_timm(name: str, pretrained: bool, weights: str | Path | None,
               eval_size: str | int | None = None) -> tuple[NormalizedClassifier, dict[str, Any]]:
    if pretrained and weights is not None:
        raise CheckpointError(f"timm:{name}: give --pretrained (timm's hub weights) or --weights FILE, not both")
    inner = _create_timm(name, pretrained)
    label = f"timm:{name}"
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise CheckpointError(f"weights file not found: {path}")
        try:
            state = timm.models.load_state_dict(str(path), use_ema=True, weights_only=True)
        except Exception as exc:  # torch.load / safetensors raise many types; name the file whatever it was
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "weights_only" in str(exc) or "pickle" in str(exc).lower():  # torch's advice is to unpickle: never
                reason = "not plain tensors: it would have to be unpickled, which this tool never does"
            raise CheckpointError(f"{path} is not a readable weights file ({reason}); give a .safetensors file or "
                                  "a torch checkpoint of tensors only") from None
        _load_state(inner, state, path)
        label = f"timm:{name}@{path.name}"
    elif not pretrained:
        label = f"timm:{name}@random-init"
    cfg = timm.data.resolve_model_data_config(inner, use_test_size=eval_size == "test")
    if eval_size not in (None, "test"):
        size = int(eval_size)
        cfg["input_size"] = (cfg["input_size"][0], size, size)
    subset = timm.data.infer_imagenet_subset(inner)
    classes = timm.data.ImageNetInfo(subset).label_names() if subset else None
    meta: dict[str, Any] = {
        "name": label, "run": None, "generation": None, "teacher": None, "arch": name, "model_kwargs": {},
        "num_classes": inner.num_classes, "input_size": [int(v) for v in cfg["input_size"]],
        "mean": list(cfg["mean"]), "std": list(cfg["std"]), "crop_pct": float(cfg.get("crop_pct") or 0.875),
        "crop_mode": cfg.get("crop_mode") or "center", "interpolation": cfg.get("interpolation") or "bilinear",
        "classes": classes if classes is not None and len(classes) == inner.num_classes else None,
        "pretrained": pretrained, "weights": str(weights) if weights is not None else
        ("timm pretrained" if pretrained else "random init"), "sha256": state_sha256(inner), "source": f"timm:{name}",
        "config": None, "eval_size": eval_size,
    }
    return NormalizedClassifier(inner, meta["mean"], meta["std"]), meta


def check_pretrained_reachable(name: str, timeout: float = 3.0) -> None:
    """Fail within seconds when timm's weights for `name` are neither cached nor downloadable.

    Looks in the Hugging Face cache (hf_hub_id) and torch hub's checkpoint folder (url) first; otherwise opens a
    TCP connection to the download host with a `timeout` in seconds. Raises `CheckpointError` naming the model
    and how to pass local weights.
    """
    import os
    import socket
    from urllib.parse import urlparse

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise CheckpointError(f"timm:{name} has no pretrained weights in timm; name a tagged model such as "
                              f"{(timm.list_models(name.split('.')[0] + '*', pretrained=True) or ['resnet50.a1_in1k'])[0]}")
    host = None
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        for filename in filter(None, (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin",
                                      "open_clip_pytorch_model.bin")):
            if isinstance(try_to_load_from_cache(repo, filename), str):
                return
        host = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).hostname
        if constants.HF_HUB_OFFLINE:
            host = None
    elif cfg.url:
        url = cfg.url if isinstance(cfg.url, str) else cfg.url[0]  # timm allows (url, file name)
        if (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name).is_file():
            return
        host = urlparse(url).hostname
    reason = "HF_HUB_OFFLINE is set" if host is None else ""
    if host is not None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            return
        except OSError as exc:
            reason = f"{host} cannot be reached: {exc}"
    raise CheckpointError(
        f"timm:{name}: --pretrained needs timm's weights, which are not cached here and cannot be downloaded "
        f"({reason}). Download them where there is a network (python -c \"import timm; timm.create_model("
        f"'{name}', pretrained=True)\" fills the Hugging Face cache, which can be copied here), or pass a local "
        "file with --weights FILE (.safetensors or a timm/torch checkpoint)")


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load `state` strictly; any difference (names or shapes) is a CheckpointError naming the file."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(set(own) & set(state))
              if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                              f"other shapes {shapes[:3]}; is it the weights of this architecture?")
    model.load_state_dict(state)


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
