"""Typed run configuration loaded from YAML: every recipe ingredient is one switch, unknown keys are errors."""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from nst_common.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, also reading exponent numbers without a dot (`1e-3`, `5E4`) as floats.

    PyYAML follows YAML 1.1, where a float needs a dot (`1.0e-3`), and would hand `1e-3` over as a string;
    YAML 1.2 and every user read it as a number.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """Parse YAML text safely (no Python objects), `1e-3` read as a float; raises yaml.YAMLError."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


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
    crop_mode: str = "center"  # imagefolder: timm's eval crop mode (center, squash, border)
    interpolation: str = "bilinear"  # imagefolder: timm's resize interpolation (bilinear, bicubic, ...)
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
    sync_bn: bool = False  # torchrun on GPUs: SyncBatchNorm, batch statistics over all ranks' images (off: per rank)


@dataclass
class KDConfig:
    """Knowledge distillation (method: kd): alpha * T^2 * KL(teacher || student) + (1 - alpha) * CE on labels."""

    alpha: float = 0.9
    temperature: float = 4.0


@dataclass
class MPLConfig:
    """Meta Pseudo Labels (method: mpl): teacher and student trained together, then the student fine-tuned."""

    epochs: int = 3  # passes over the unlabeled pool (steps of train.unlabel_ratio * train.batch_size images)
    teacher_lr: float | None = None  # default: train.lr
    teacher_label_weight: float = 1.0  # the teacher's supervised loss
    uda_weight: float = 1.0  # the teacher's UDA consistency loss (weak vs strong view)
    uda_temperature: float = 0.7  # sharpening of the weak view's prediction
    uda_threshold: float = 0.6  # confidence mask of the UDA loss
    finetune_epochs: int = 2  # the student on labeled data after MPL (0: none)
    finetune_lr: float | None = None  # default: train.lr / 10
    reduced: bool = False  # reduced MPL: a small MLP teacher adjusts the converged teacher's stored predictions
    mlp_hidden: int = 128


@dataclass
class FixResConfig:
    """FixRes: fine-tune the last generation briefly at a higher (test) resolution, written as one more generation."""

    size: int  # the new H = W
    epochs: int = 1  # passes over the labeled set
    lr_scale: float = 0.1  # learning rate = train.lr * lr_scale
    train_layers: Literal["head", "all"] = "head"  # head: classifier only (BatchNorm statistics still adapt)


@dataclass
class InitConfig:
    """Where gen0 starts: random, a timm pretrained model (network, only with pretrained: true) or a checkpoint."""

    source: str | None = None  # "timm:<name>" or a checkpoint directory; the classifier is re-initialised
    pretrained: bool = False  # allow downloading timm's weights for a timm: source
    freeze_backbone: bool = False  # train only the classifier
    backbone_lr_scale: float = 1.0  # discriminative learning rates: backbone lr = train.lr * this
    teacher: str | None = None  # a finished checkpoint used as gen0 as it is (copied), e.g. by ablation sweeps


@dataclass
class RunConfig:
    """A whole Noisy Student run: `generations` checkpoints, gen0 the teacher, each student the next teacher."""

    name: str
    models: list[ModelSpec]
    seed: int = 0
    seeds: list[int] | None = None  # train one run per seed into <out>/seed<k>/ (nst_core.engine.run_seeds)
    generations: int = 3
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: Literal["nst", "kd", "mpl"] = "nst"  # how a teacher teaches each student (gen >= 1)
    kd: KDConfig = field(default_factory=KDConfig)
    mpl: MPLConfig = field(default_factory=MPLConfig)
    fixres: FixResConfig | None = None  # null: off
    init: InitConfig = field(default_factory=InitConfig)

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
        raw = yaml_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc}); give a readable UTF-8 YAML file") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    for dotted, value in (overrides or {}).items():
        set_dotted(raw, dotted, value)
    source = f"{path} (with overrides of {', '.join(overrides)})" if overrides else str(path)
    return config_from_dict(raw, source=source)


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> RunConfig:
    """Build and validate a RunConfig from plain data."""
    cfg = _build(RunConfig, raw, source, "")
    validate(cfg, source)
    return cfg


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating sections as needed."""
    *parents, last = dotted.split(".")
    node = raw
    for depth, key in enumerate(parents):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            where = ".".join(parents[:depth + 1])
            raise ConfigError(f"cannot set {dotted}: {where} is {node!r}, not a section; check the key")
    node[last] = value


def validate(cfg: RunConfig, source: str = "<dict>") -> None:
    """Every value's range and the checks that span several keys; raises ConfigError naming the key.

    Needs no files (folders and data are checked by `nst_core.engine.preflight`, before a run writes anything).
    """
    validate_name(cfg.name, source)
    validate_ranges(cfg, source)
    if cfg.seeds is not None and (not cfg.seeds or any(s < 0 for s in cfg.seeds)
                                  or len(set(cfg.seeds)) < len(cfg.seeds)):
        raise ConfigError(f"{source}: seeds must be a non-empty list of distinct integers >= 0, got {cfg.seeds}")
    validate_models(cfg, source)
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
    validate_variants(cfg, source)


def validate_name(name: str, source: str = "<dict>") -> None:
    """A run name is one folder name (runs/<name>): no path separators, not '.', '..' or empty."""
    if (not name.strip() or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name
            or Path(name).is_absolute()):
        raise ConfigError(
            f"{source}: name {name!r} is not a plain folder name; the run is written to <out>/<name>, so the name "
            "may not hold '/' or '\\' or be '.', '..' or empty: use letters, digits, '-', '_' and '.'"
        )


def validate_ranges(cfg: RunConfig, source: str = "<dict>") -> None:
    """The range of every numeric key (sizes >= 1, rates > 0, probabilities in [0, 1))."""
    t, d, n, p, m = cfg.train, cfg.data, cfg.noise, cfg.pseudo, cfg.mpl
    checks: list[tuple[bool, str, Any, str]] = [
        (cfg.seed >= 0, "seed", cfg.seed, ">= 0"),
        (t.epochs >= 1, "train.epochs", t.epochs, ">= 1 (gen0 needs training)"),
        (t.student_epochs is None or t.student_epochs >= 1, "train.student_epochs", t.student_epochs,
         ">= 1, or null for train.epochs"),
        (t.batch_size >= 1, "train.batch_size", t.batch_size, ">= 1"),
        (t.lr > 0, "train.lr", t.lr, "> 0"),
        (t.weight_decay >= 0, "train.weight_decay", t.weight_decay, ">= 0"),
        (t.warmup_epochs >= 0, "train.warmup_epochs", t.warmup_epochs, ">= 0"),
        (0 <= t.label_smoothing < 1, "train.label_smoothing", t.label_smoothing, "in [0, 1)"),
        (t.ema_decay is None or 0 < t.ema_decay < 1, "train.ema_decay", t.ema_decay, "in (0, 1), or null for none"),
        (t.unlabeled_weight is None or t.unlabeled_weight >= 0, "train.unlabeled_weight", t.unlabeled_weight,
         ">= 0, or null for train.unlabel_ratio"),
        (all(v >= 1 for v in d.input_size), "data.input_size", d.input_size, "[C, H, W] with every entry >= 1"),
        (all(v > 0 for v in d.std), "data.std", d.std, "> 0 in every channel"),
        (0 < d.crop_pct <= 1, "data.crop_pct", d.crop_pct, "in (0, 1]"),
        (d.num_workers >= 0, "data.num_workers", d.num_workers, ">= 0"),
        (d.unlabeled_limit is None or d.unlabeled_limit >= 1, "data.unlabeled_limit", d.unlabeled_limit,
         ">= 1, or null for no limit"),
        (n.ra_ops >= 0, "noise.ra_ops", n.ra_ops, ">= 0"),
        (n.ra_magnitude >= 0, "noise.ra_magnitude", n.ra_magnitude, ">= 0"),
        (n.ra_magnitude_std >= 0, "noise.ra_magnitude_std", n.ra_magnitude_std, ">= 0"),
        (0 <= n.dropout < 1, "noise.dropout", n.dropout, "in [0, 1)"),
        (0 <= n.drop_path < 1, "noise.drop_path", n.drop_path, "in [0, 1)"),
        (p.batch_size >= 1, "pseudo.batch_size", p.batch_size, ">= 1"),
        (p.per_class is None or p.per_class >= 1, "pseudo.per_class", p.per_class, ">= 1, or null for pool / classes"),
        (m.epochs >= 1, "mpl.epochs", m.epochs, ">= 1"),
        (m.finetune_epochs >= 0, "mpl.finetune_epochs", m.finetune_epochs, ">= 0"),
        (m.teacher_lr is None or m.teacher_lr > 0, "mpl.teacher_lr", m.teacher_lr, "> 0, or null for train.lr"),
        (m.finetune_lr is None or m.finetune_lr > 0, "mpl.finetune_lr", m.finetune_lr, "> 0, or null for train.lr / 10"),
        (m.teacher_label_weight >= 0 and m.uda_weight >= 0, "mpl.teacher_label_weight / mpl.uda_weight",
         [m.teacher_label_weight, m.uda_weight], ">= 0"),
        (0 <= m.uda_threshold <= 1, "mpl.uda_threshold", m.uda_threshold, "in [0, 1]"),
        (m.mlp_hidden >= 1, "mpl.mlp_hidden", m.mlp_hidden, ">= 1"),
    ]
    if cfg.fixres is not None:
        checks += [(cfg.fixres.epochs >= 1, "fixres.epochs", cfg.fixres.epochs, ">= 1"),
                   (cfg.fixres.lr_scale > 0, "fixres.lr_scale", cfg.fixres.lr_scale, "> 0")]
    for ok, key, value, rule in checks:
        if not ok:
            raise ConfigError(f"{source}: {key} must be {rule}, got {value!r}")


def validate_models(cfg: RunConfig, source: str = "<dict>") -> None:
    """Every architecture is a timm model name and the optimizer a timm optimizer (checked offline)."""
    import timm
    from timm.optim import list_optimizers

    for k, spec in enumerate(cfg.models):
        if not timm.is_model(spec.arch):
            close = timm.list_models(f"*{spec.arch.split('.')[0][:12]}*")[:5]
            hint = f" (similar: {', '.join(close)})" if close else ""
            raise ConfigError(
                f"{source}: models[{k}] arch {spec.arch!r} is not a timm model{hint}; "
                "see `python -c \"import timm; print(timm.list_models())\"` for the names"
            )
    optimizer = cfg.train.optimizer.lower().split("_")[-1]
    if optimizer not in list_optimizers():
        raise ConfigError(
            f"{source}: train.optimizer {cfg.train.optimizer!r} is not a timm optimizer; e.g. adamw, sgd, "
            "momentum, rmsproptf (see timm.optim.list_optimizers())"
        )
    if cfg.device != "auto":
        try:
            import torch

            torch.device(cfg.device)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"{source}: device {cfg.device!r} is not a torch device; use auto, cpu, cuda or "
                              "cuda:<n>") from exc


def validate_variants(cfg: RunConfig, source: str = "<dict>") -> None:
    """Checks of the teacher-student variants (kd, mpl, fixres, init)."""
    if not 0.0 <= cfg.kd.alpha <= 1.0:
        raise ConfigError(f"{source}: kd.alpha must be in [0, 1], got {cfg.kd.alpha}")
    if cfg.kd.temperature <= 0 or cfg.mpl.uda_temperature <= 0:
        raise ConfigError(f"{source}: kd.temperature and mpl.uda_temperature must be > 0")
    if cfg.fixres is not None and cfg.fixres.size <= cfg.data.input_size[1]:
        raise ConfigError(
            f"{source}: fixres.size ({cfg.fixres.size}) must be larger than the training resolution "
            f"data.input_size {cfg.data.input_size}"
        )
    init = cfg.init
    if init.source and init.source.startswith("timm:") and not init.pretrained:
        raise ConfigError(
            f"{source}: init.source {init.source!r} downloads timm's pretrained weights; set init.pretrained: true "
            "(or pass --pretrained) to allow the download, or start from a checkpoint directory"
        )
    if init.source and init.teacher:
        raise ConfigError(f"{source}: give init.source (initialise gen0) or init.teacher (use gen0 as is), not both")
    if init.backbone_lr_scale < 0:
        raise ConfigError(f"{source}: init.backbone_lr_scale must be >= 0, got {init.backbone_lr_scale}")


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
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # a config section's class
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
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or (hint is int and value != int(value))):
            raise ConfigError(
                f"{source}: {key} must be {'an integer' if hint is int else 'a finite number'}, got {value!r}"
            )
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        return value
    return value
