"""The Noisy Student loop: teacher -> pseudo labels -> filter/balance -> noised student -> next teacher.

A run directory holds `config.yaml` and one `gen<k>/` per generation. A finished generation (meta.json present,
weights matching their sha256) is loaded, never retrained; an unfinished one resumes from its last epoch.
Everything that can be checked before training (config values, folders, data, devices, models) is checked
before the run writes its first file, so a failed start leaves nothing that blocks the corrected rerun; a rerun
first deletes what killed writers left (temporary files, a finished generation's training state).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from nst_common import distributed
from nst_common.errors import CheckpointError
from nst_common.errors import DivergedError
from nst_common.files import atomic_write, read_tensors, remove_temp_files, write_json, write_tensors
from nst_common.seeding import derive_seed
from nst_core.checkpoint import clear_states, is_complete, read_meta, save_checkpoint
from nst_core.config import ConfigError, RunConfig, config_from_dict, yaml_load
from nst_core.data import DataError, NSTData, find_fashion_mnist, prepare_data
from nst_core.distill import kd_losses, kd_sets
from nst_core.fixres import run_fixres
from nst_core.models import NormalizedClassifier, create_model, load_model, versions
from nst_core.mpl import train_mpl
from nst_core.pseudo import Selection, filter_and_balance, make_targets, pool_accuracy
from nst_core.pseudo_shards import SHARD_DIR, discard_shards, sharded_probs
from nst_core.training import TrainSet, build_augment, evaluate_top1, smooth_one_hot, train_generation
from nst_core.transfer import adopt_checkpoint, initialize, param_group_fn

PSEUDO_FILE = "pseudo_labels.safetensors"


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else the CPU; raises ConfigError for a device that is not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"device {name!r} is not a torch device; use auto, cpu, cuda or cuda:<n>") from exc
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"device {name!r}: no such CUDA device here ({torch.cuda.device_count()} visible); "
                          "use --device cpu or auto")
    return device


def preflight(cfg: RunConfig, out: Path) -> None:
    """The checks that need files, before anything is written: the data folders exist (a given data.data_dir is
    used, never silently replaced by another copy), init checkpoints are finished, method mpl runs in one process.

    Raises ConfigError, DataError or CheckpointError naming the key and the path.
    """
    data = cfg.data
    for key in ("data_dir", "test_dir", "unlabeled_dir"):
        value = getattr(data, key)
        download_target = key == "data_dir" and data.dataset == "fashion_mnist" and data.download
        if value is not None and not value.strip():
            raise ConfigError(f"data.{key} is an empty string; give a folder, or null to leave it out")
        if value is not None and not Path(value).is_dir() and not download_target:
            flag = " (--data-dir)" if key == "data_dir" else ""
            raise ConfigError(f"data.{key}{flag} = {value!r} is not an existing folder; fix the path"
                              + (" or leave it out to use the installed dataset"
                                 if key == "data_dir" and data.dataset == "fashion_mnist" else ""))
    if data.dataset == "fashion_mnist" and data.data_dir and not data.download:
        base = Path(data.data_dir)
        root = find_fashion_mnist(data.data_dir)
        if root not in (base, base / "FashionMNIST" / "raw"):
            raise DataError(
                f"data.data_dir = {data.data_dir!r} holds no Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz] "
                f"...); point it at the folder that does, or leave it out to use {root}"
            )
    if data.dataset == "imagefolder" and not data.data_dir:
        raise ConfigError("data.data_dir is required for dataset imagefolder (the labeled train tree)")
    if data.dataset == "imagefolder" and not data.test_dir:
        raise ConfigError("data.test_dir is required for dataset imagefolder (the test/val tree)")
    init = cfg.init
    if init.source and not init.source.startswith("timm:") and not is_complete(Path(init.source)):
        raise CheckpointError(f"init.source {init.source} is not a finished checkpoint folder (meta.json + "
                              "matching model.safetensors); give one, or timm:<name>")
    if init.teacher and not is_complete(Path(out) / "gen0") and not is_complete(Path(init.teacher)):
        raise CheckpointError(f"init.teacher {init.teacher} is not a finished checkpoint folder (meta.json + "
                              "matching model.safetensors)")
    if cfg.method == "mpl" and cfg.generations > 1 and distributed.is_distributed():
        raise ConfigError("method: mpl trains in one process; start it without torchrun")


def check_models(cfg: RunConfig, num_classes: int) -> None:
    """Build every generation's model on the meta device (no memory, no time), so bad model kwargs fail here."""
    for generation in range(cfg.generations):
        spec = cfg.model_for(generation)
        try:
            with torch.device("meta"):
                create_model(spec, num_classes, cfg.data.input_size[0], cfg.noise.dropout, cfg.noise.drop_path)
        except (TypeError, ValueError, RuntimeError, AssertionError, KeyError) as exc:
            raise ConfigError(f"models[{generation}] ({spec.arch} with kwargs {spec.kwargs}) cannot be built: "
                              f"{exc}; fix models[{generation}]") from exc


def run(cfg: RunConfig, out: Path, device: str | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Train every generation of `cfg` into `out`, resuming what is there; returns each generation's meta."""
    out = Path(out)
    dev = resolve_device(device or cfg.device)
    preflight(cfg, out)
    data = prepare_data(cfg.data, cfg.seed)
    check_models(cfg, data.num_classes)
    if distributed.is_main():  # the first writes: everything above passed
        _claim_run_dir(cfg, out)
        for folder in [out, *sorted(out.glob("gen*")), *sorted(out.glob(f"gen*/{SHARD_DIR}"))]:  # the run's layout
            for stale in remove_temp_files(folder):
                _log(f"removed {stale} (left by an interrupted write)")
    distributed.barrier()
    metas: list[dict[str, Any]] = []
    teacher: NormalizedClassifier | None = None
    for generation in range(cfg.generations):
        gen_dir = out / f"gen{generation}"
        if generation == 0 and cfg.init.teacher and not is_complete(gen_dir):
            adopt_checkpoint(cfg.init.teacher, gen_dir)
        if is_complete(gen_dir):
            if distributed.is_main():
                clear_states(gen_dir)  # a kill between meta.json and the clean-up left the training state
            teacher, meta = load_model(gen_dir, device=dev)
            _log(f"gen{generation}: finished earlier (test top-1 {meta['metrics']['test_top1']:.2f} %), kept")
        else:
            try:
                teacher, meta = train_one(cfg, generation, data, teacher, gen_dir, dev, progress)
            except DivergedError:
                if not metas and distributed.is_main():  # nothing finished: the corrected config may start here
                    clear_states(gen_dir)
                    (out / "config.yaml").unlink(missing_ok=True)
                raise
            _log(f"gen{generation}: {meta['arch']} test top-1 {meta['metrics']['test_top1']:.2f} %")
        metas.append(meta)
    if cfg.fixres is not None:
        assert teacher is not None  # every run has a gen0
        metas.append(run_fixres(cfg, teacher, metas[-1], out / f"gen{cfg.generations}", dev, progress))
        if distributed.is_main():
            clear_states(out / f"gen{cfg.generations}")  # finished: a state left by a kill after meta.json goes
    return metas


def seed_config(cfg: RunConfig, seed: int) -> RunConfig:
    """The run of one seed of a multi-seed config: `seed` set, named `<name>-seed<k>` (so its checkpoints'
    names, e.g. `demo-seed1/gen2`, stay distinct in one results store); `seeds` kept, naming the group."""
    return dataclasses.replace(cfg, seed=int(seed), name=f"{cfg.name}-seed{int(seed)}")


def run_seeds(cfg: RunConfig, out: Path, seeds: list[int] | None = None, device: str | None = None,
              progress: bool = True) -> dict[Path, list[dict[str, Any]]]:
    """Train one run per seed (`seeds`, else `cfg.seeds`) into `<out>/seed<k>/gen<g>/`, each resumable on its own
    (a finished seed is read back, an interrupted one resumes); returns {run folder: its generations' metas}.
    Every seeded choice changes with the seed: the labeled/unlabeled split, initial weights, augmentation, the
    pseudo-label balancing draw. Raises ConfigError for an empty or repeated seed list."""
    seeds = list(seeds if seeds is not None else cfg.seeds or [])
    if not seeds or len(set(seeds)) < len(seeds) or any(int(s) < 0 for s in seeds):
        raise ConfigError(f"seeds must be a non-empty list of distinct integers >= 0, got {seeds}")
    cfg = dataclasses.replace(cfg, seeds=[int(s) for s in seeds])
    return {Path(out) / f"seed{int(s)}": run(seed_config(cfg, s), Path(out) / f"seed{int(s)}", device, progress)
            for s in seeds}


def train_one(cfg: RunConfig, generation: int, data: NSTData, teacher: NormalizedClassifier | None,
              gen_dir: Path, device: torch.device, progress: bool = True) -> tuple[NormalizedClassifier, dict[str, Any]]:
    """Train generation `generation` (the teacher is None for gen0) and write its checkpoint."""
    noised = generation > 0 or cfg.noise.apply_to_gen0
    drop_rate = cfg.noise.dropout if noised else 0.0
    drop_path_rate = cfg.noise.drop_path if noised else 0.0
    spec = cfg.model_for(generation)
    channels = cfg.data.input_size[0]
    torch.manual_seed(derive_seed(cfg.seed, "initial weights", generation))
    model = NormalizedClassifier(create_model(spec, data.num_classes, channels, drop_rate, drop_path_rate),
                                 cfg.data.mean, cfg.data.std)
    augment = build_augment(cfg.noise, cfg.data.mean) if noised else None
    init_meta = initialize(model.model, cfg.init, channels) if generation == 0 and cfg.init.source else None
    groups = param_group_fn(cfg.init.freeze_backbone, cfg.init.backbone_lr_scale) if generation == 0 else None

    labeled_targets = smooth_one_hot(data.labeled.labels, data.num_classes, cfg.train.label_smoothing)
    labeled = TrainSet(data.labeled, torch.arange(len(data.labeled)), labeled_targets, augment)
    unlabeled, pseudo_meta, losses = None, None, None
    if teacher is not None and cfg.method == "kd":
        labeled, unlabeled, pseudo_meta = kd_sets(cfg, data, teacher, labeled_targets, augment, gen_dir, device,
                                                  progress)
        losses = kd_losses(cfg.kd)
    elif teacher is not None and cfg.method == "nst":
        selection, targets, pseudo_meta = pseudo_label(cfg, generation, data, teacher, gen_dir, device, progress)
        if len(selection.indices) == 0:
            raise ConfigError(
                f"gen{generation}: no pseudo label passed pseudo.min_threshold = {cfg.pseudo.min_threshold}; "
                "lower it or train the teacher longer, into another --out (the finished generations of this one "
                "belong to this config)"
            )
        unlabeled = TrainSet(data.unlabeled, selection.indices, targets[selection.indices], augment)

    epochs = cfg.train.epochs if generation == 0 else (cfg.train.student_epochs or cfg.train.epochs)
    state_path = gen_dir / "train_state"
    if teacher is not None and cfg.method == "mpl":
        history, pseudo_meta = train_mpl(model, teacher, data, cfg, generation, gen_dir, device, progress)
    else:
        history = train_generation(model, labeled, unlabeled, cfg, generation, epochs, state_path, device, progress,
                                   losses=losses, param_group_fn=groups)
    test_top1 = evaluate_top1(model, data.test, cfg.pseudo.batch_size, device)
    meta = {
        "name": f"{cfg.name}/gen{generation}", "run": cfg.name, "generation": generation,
        "teacher": generation - 1 if generation > 0 else None, "arch": spec.arch, "model_kwargs": spec.kwargs,
        "drop_rate": drop_rate, "drop_path_rate": drop_path_rate, "num_classes": data.num_classes,
        "input_size": list(cfg.data.input_size), "mean": list(cfg.data.mean), "std": list(cfg.data.std),
        "crop_pct": cfg.data.crop_pct, "crop_mode": cfg.data.crop_mode, "interpolation": cfg.data.interpolation,
        "classes": data.labeled.classes, "config": cfg.to_dict(), "history": history,
        "metrics": {"test_top1": test_top1, "test_n": len(data.test)},
        "data": {"labeled": len(data.labeled), "unlabeled_pool": len(data.unlabeled), "test": len(data.test)},
        "pseudo_labels": pseudo_meta, "method": cfg.method if generation > 0 else "supervised", "init": init_meta,
        "versions": versions(),
    }
    if distributed.is_main():  # one writer; the other ranks read the finished meta.json after the barrier
        meta = save_checkpoint(gen_dir, model.model.state_dict(), meta)
        clear_states(gen_dir)
    distributed.barrier()
    if not distributed.is_main():
        meta = read_meta(gen_dir)
    return model, meta


def pseudo_label(cfg: RunConfig, generation: int, data: NSTData, teacher: NormalizedClassifier, gen_dir: Path,
                 device: torch.device, progress: bool = True) -> tuple[Selection, torch.Tensor, dict[str, Any]]:
    """Label the pool with the teacher (cached in gen_dir; sharded under torchrun), then filter and balance
    (on the merged pool, so every rank selects alike); returns targets for all."""
    cache = gen_dir / PSEUDO_FILE
    if cache.is_file():
        probs = read_tensors(cache)["probs"]
    else:
        probs = sharded_probs(teacher, data.unlabeled, gen_dir / SHARD_DIR, cfg.pseudo.temperature,
                              cfg.pseudo.batch_size, device, noised=cfg.pseudo.teacher_noise, amp=cfg.train.amp,
                              progress=progress)
        if distributed.is_main():
            write_tensors(cache, {"probs": probs, "confidence": probs.max(1).values, "label": probs.argmax(1)})
    discard_shards(gen_dir / SHARD_DIR)  # also the shards a kill after the merged file was written left
    per_class = cfg.pseudo.per_class or max(1, len(data.unlabeled) // data.num_classes)
    generator = torch.Generator().manual_seed(derive_seed(cfg.seed, "pseudo-label balance", generation))
    selection = filter_and_balance(probs, per_class, cfg.pseudo.min_threshold, cfg.pseudo.balance, generator)
    targets = make_targets(probs, cfg.pseudo.mode)
    if cfg.pseudo.mode == "hard":
        targets = targets * (1.0 - cfg.train.label_smoothing) + cfg.train.label_smoothing / targets.shape[1]
    unique = selection.indices.unique()
    meta = {
        "mode": cfg.pseudo.mode, "temperature": cfg.pseudo.temperature, "per_class_target": per_class,
        "min_threshold": cfg.pseudo.min_threshold, "balance": cfg.pseudo.balance,
        "before_per_class": selection.before, "kept_per_class": selection.kept,
        "written_per_class": selection.written,
        "thresholds": [round(t, 6) if t == t else None for t in selection.thresholds],
        "pool_size": len(data.unlabeled), "unique_images": len(unique), "entries": len(selection.indices),
        "accuracy_on_pool": pool_accuracy(probs, data.unlabeled.labels),
        "accuracy_on_kept": pool_accuracy(probs, data.unlabeled.labels, unique),
    }
    if distributed.is_main():
        write_json(gen_dir / "pseudo_labels.json", meta)
    return selection, targets, meta


def _log(message: str) -> None:
    """A progress line, printed by rank 0 only."""
    if distributed.is_main():
        tqdm.write(message)


def _claim_run_dir(cfg: RunConfig, out: Path) -> None:
    """Write config.yaml, or check that an existing run directory was made by the same config."""
    resolved = yaml.safe_dump(cfg.to_dict(), sort_keys=True)
    path = out / "config.yaml"
    if path.is_file():
        try:
            stored = yaml_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid YAML ({exc}); it is not this run's: choose another --out") from exc
        if not isinstance(stored, dict) or config_from_dict(stored, str(path)).to_dict() != yaml_load(resolved):
            raise ConfigError(
                f"{out} holds a run made with a different config ({path}); resume with the same config, "
                "or choose another --out"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(resolved))

