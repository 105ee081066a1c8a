"""Typed run configuration loaded from YAML: every recipe ingredient is one switch, unknown keys are errors."""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file, the key and what to do."""


@dataclass
class ModelSpec:
    """One timm model: `arch` for `timm.create_model`, plus its own keyword arguments."""

    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Where the images come from and how they become model inputs."""

    dataset: Literal["fashion_mnist", "imagefolder"] = "fashion_mnist"
    data_dir: str | None = None  # fashion_mnist: folder with the IDX files; imagefolder: the labeled train tree
    test_dir: str | None = None  # imagefolder: the test/val tree
    unlabeled_dir: str | None = None  # imagefolder: a folder of unlabeled images (default: the rest of train)
    download: bool = False  # fashion_mnist: allow a torchvision download when no local copy is found
    labeled_per_class: int | None = 100  # null: every training image is labeled (pool from unlabeled_dir)
    unlabeled_limit: int | None = None  # cap the unlabeled pool (seeded subset)
    input_size: list[int] = field(default_factory=lambda: [3, 32, 32])  # [C, H, W]
    mean: list[float] = field(default_factory=lambda: [0.286, 0.286, 0.286])
    std: list[float] = field(default_factory=lambda: [0.353, 0.353, 0.353])
    crop_pct: float = 0.875  # imagefolder: resize the short side to H / crop_pct, then center crop
    num_workers: int = 0


@dataclass
class NoiseConfig:
    """Student noise (the recipe's input and model noise); `apply_to_gen0` also noises the first teacher."""

    randaugment: bool = True
    ra_ops: int = 2
    ra_magnitude: int = 9
    ra_magnitude_std: float = 0.5
    dropout: float = 0.2
    drop_path: float = 0.2
    apply_to_gen0: bool = True


@dataclass
class PseudoConfig:
    """How the teacher labels the unlabeled pool, and how the labels are filtered and balanced."""

    mode: Literal["soft", "hard"] = "soft"
    temperature: float = 1.0
    min_threshold: float = 0.3
    per_class: int | None = None  # target images per class (the recipe's num_image); default: pool / classes
    balance: bool = True
    teacher_noise: bool = False  # ablation: label with the teacher in train mode (dropout, drop path on)
    batch_size: int = 512


@dataclass
class TrainConfig:
    """Optimisation of one generation."""

    epochs: int = 10  # gen0 (labeled data only): passes over the labeled set
    student_epochs: int | None = None  # gen >= 1: passes over the pseudo-labeled set (default: epochs)
    batch_size: int = 64  # labeled images per step
    unlabel_ratio: int = 3  # unlabeled images per step = unlabel_ratio * batch_size
    unlabeled_weight: float | None = None  # weight of the pseudo-label loss (default: unlabel_ratio, as officially)
    optimizer: str = "adamw"  # any timm.optim.create_optimizer_v2 name (rmsproptf for the paper's recipe)
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1  # on hard labels only (labeled data and hard pseudo labels)
    ema_decay: float | None = None  # e.g. 0.9999; the EMA weights become the checkpoint
    amp: bool = False  # bf16 autocast on CUDA
    channels_last: bool = False


@dataclass
class RunConfig:
    """A whole Noisy Student run: `generations` checkpoints, gen0 the teacher, each student the next teacher."""

    name: str
    models: list[ModelSpec]
    seed: int = 0
    generations: int = 3
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def model_for(self, generation: int) -> ModelSpec:
        """The model of a generation (the list is indexed by generation)."""
        return self.models[generation]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for meta.json and the results store)."""
        return dataclasses.asdict(self)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run config; `overrides` maps dotted keys (``train.epochs``) to values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; see configs/ for examples")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    for dotted, value in (overrides or {}).items():
        set_dotted(raw, dotted, value)
    return config_from_dict(raw, source=str(path))


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> RunConfig:
    """Build and validate a RunConfig from plain data."""
    cfg = _build(RunConfig, raw, source, "")
    validate(cfg, source)
    return cfg


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating sections as needed."""
    *parents, last = dotted.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


def validate(cfg: RunConfig, source: str = "<dict>") -> None:
    """Checks that span several keys."""
    if cfg.generations < 1:
        raise ConfigError(f"{source}: generations must be >= 1, got {cfg.generations}")
    if len(cfg.models) < cfg.generations:
        raise ConfigError(
            f"{source}: models lists {len(cfg.models)} model(s) but generations is {cfg.generations}; "
            "give one model per generation (gen0 first), each student equal or larger than its teacher"
        )
    if len(cfg.data.input_size) != 3:
        raise ConfigError(f"{source}: data.input_size must be [C, H, W], got {cfg.data.input_size}")
    channels = cfg.data.input_size[0]
    if len(cfg.data.mean) != channels or len(cfg.data.std) != channels:
        raise ConfigError(f"{source}: data.mean and data.std need {channels} values (one per input channel)")
    if cfg.data.labeled_per_class is None and not cfg.data.unlabeled_dir:
        raise ConfigError(f"{source}: data.labeled_per_class is null (all labeled) but no data.unlabeled_dir is given")
    if cfg.data.labeled_per_class is not None and cfg.data.labeled_per_class < 1:
        raise ConfigError(f"{source}: data.labeled_per_class must be >= 1, got {cfg.data.labeled_per_class}")
    if cfg.train.unlabel_ratio < 1:
        raise ConfigError(f"{source}: train.unlabel_ratio must be >= 1, got {cfg.train.unlabel_ratio}")
    if not 0.0 <= cfg.pseudo.min_threshold < 1.0:
        raise ConfigError(f"{source}: pseudo.min_threshold must be in [0, 1), got {cfg.pseudo.min_threshold}")
    if cfg.pseudo.temperature <= 0:
        raise ConfigError(f"{source}: pseudo.temperature must be > 0, got {cfg.pseudo.temperature}")


def _build(cls: type, raw: Any, source: str, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where or 'the config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        section = f"section '{where}'" if where else "the top level"
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(repr(k) for k in unknown)} in {section}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    missing = [
        name for name, f in fields.items()
        if name not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{source}: missing required key(s) {', '.join(missing)} in {where or 'the top level'}")
    kwargs = {name: _coerce(hints[name], value, source, f"{where}.{name}".lstrip(".")) for name, value in raw.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is ModelSpec and isinstance(value, str):
        return ModelSpec(arch=value)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, source, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: {key} must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return [_coerce(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is Any:
        if origin is dict and not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (hint is int and value != int(value)):
            raise ConfigError(f"{source}: {key} must be {'an integer' if hint is int else 'a number'}, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        return value
    return value
