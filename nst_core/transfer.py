"""Transfer learning: gen0 starts from a timm pretrained model or a checkpoint, or is a finished checkpoint as is.

Weights are copied by name and shape, the classifier excepted (it is re-initialised for the run's classes).
The optimizer either trains only the classifier (frozen backbone; BatchNorm statistics still adapt in train
mode) or gives the backbone a smaller learning rate (discriminative learning rates, via timm's `lr_scale`).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from nst_common.errors import CheckpointError
from nst_common.files import atomic_write
from nst_core.checkpoint import META, WEIGHTS, is_complete, load_weights
from nst_core.config import InitConfig
from nst_core.training import ParamGroupFn


def classifier_names(module: nn.Module) -> set[str]:
    """State-dict names of a timm model's classifier parameters."""
    head = {id(p) for p in getattr(module, "get_classifier")().parameters()}  # timm's API, not nn.Module's
    return {name for name, p in module.named_parameters() if id(p) in head}


def initialize(module: nn.Module, init: InitConfig, in_chans: int) -> dict[str, Any]:
    """Copy the backbone weights of `init.source` into `module` (a timm model); returns what was loaded."""
    state = _source_state(init, int(getattr(module, "num_classes")), in_chans)
    head = classifier_names(module)
    target = module.state_dict()
    missing = sorted(k for k in target if k not in head and (k not in state or state[k].shape != target[k].shape))
    if missing:
        raise CheckpointError(
            f"init.source {init.source} does not fit the model of gen0: {len(missing)} tensor(s) missing or of "
            f"another shape, e.g. {missing[:3]}; use the same architecture as models[0]"
        )
    module.load_state_dict({k: state[k] if k not in head else v for k, v in target.items()})
    return {"source": init.source, "pretrained": init.pretrained, "reinitialised": sorted(head),
            "freeze_backbone": init.freeze_backbone, "backbone_lr_scale": init.backbone_lr_scale}


def param_group_fn(freeze_backbone: bool, backbone_lr_scale: float = 1.0) -> ParamGroupFn | None:
    """Optimizer groups: the classifier at the full lr, the backbone left out (frozen) or scaled; None: default."""
    if not freeze_backbone and backbone_lr_scale == 1.0:
        return None

    def groups(module: nn.Module) -> list[dict]:
        head = {id(p) for p in getattr(module, "get_classifier")().parameters()}
        head_params = [p for p in module.parameters() if id(p) in head]
        if freeze_backbone:
            return [{"params": head_params}]
        backbone = [p for p in module.parameters() if id(p) not in head]
        return [{"params": backbone, "lr_scale": backbone_lr_scale}, {"params": head_params}]

    return groups


def adopt_checkpoint(source: str | Path, gen_dir: Path) -> None:
    """Copy a finished checkpoint (weights, then meta.json) into `gen_dir`, unchanged, to serve as gen0."""
    source = Path(source)
    if not is_complete(source):
        raise CheckpointError(f"init.teacher {source} is not a finished checkpoint (meta.json + matching weights)")
    for name in (WEIGHTS, META):
        atomic_write(gen_dir / name, lambda tmp, name=name: shutil.copyfile(source / name, tmp))


def _source_state(init: InitConfig, num_classes: int, in_chans: int) -> dict[str, torch.Tensor]:
    assert init.source is not None  # called only when the config names a source
    if init.source.startswith("timm:"):
        name = init.source[len("timm:"):]
        return timm.create_model(name, pretrained=init.pretrained, num_classes=num_classes,
                                 in_chans=in_chans).state_dict()
    return load_weights(Path(init.source))[0]
