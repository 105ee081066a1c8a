"""Evaluation data, all as `nst_core.imagesets.ImageSet`s (the type training reads too): labeled uint8 [N, C, H, W]
batches at the model's input size (models take [0, 1]), in memory or as image files read by the set's transform.

- `clean_test_set`: a run's untouched test set through `nst_core.data.load_test_set`.
- `imagenet_val_set`: ImageFolder val through the model's own eval transform (`nst_core.images.EvalTransform`:
  timm's `create_transform` with its size, crop_pct, crop_mode and interpolation); class folders are mapped by name
  against the model's class list (wnids, or class indices as in ImageNetV2), whatever subset is present.
- `imagenet_c_set`: `<root>/<corruption>/<severity>/<wnid>/*.JPEG`, center crop only at 224 px (resizing -C images
  again is a known benchmark bug), or the 224 image resized to another model size (`method="resize"`, its own
  dataset name `imagenet-c-resized`); a missing corruption or severity folder is an error naming the path.
- `imagenet_a_set`: `<root>/<wnid>/*`, labels 0..199 in timm's sorted-synset order, with `class_index` = the
  200 ImageNet logits to keep (timm/data/_info/imagenet_a_indices.txt, read from the installed timm).
- `imagenet_r_set`: ImageNet-R (`<root>/<wnid>/*`), labels 0..199 with timm's `imagenet_r_indices.txt` mask, as A.
- `imagenet_sketch_set`: ImageNet-Sketch (`<root>/<wnid>/*`, the 1000 classes), the model's transform.
- `imagenet_v2_set`: one ImageNetV2 variant (`<root>/<class index>/*`); the variant (matched-frequency,
  threshold0.7, top-images) is read from the root's folder name and recorded in `info["variant"]`.
- `corrupted_set`: a generated -C set (`eval.corruptions.corrupt`, seeded per image by dataset index), cached on
  disk as one uint8 .npy per (corruption, severity), written atomically, keyed by the clean images' content,
  the subset, the backend and the seed, so the next evaluation reuses it.

Unreadable images are errors naming the file: skipping one would change the benchmark. `--limit N` everywhere is
`seeded_subset`: a fixed, seeded, sorted choice of dataset indices.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from eval.corruptions import ENGINE_VERSION
from nst_common.errors import DataError
from nst_common.files import write_array
from nst_core.images import IMAGE_EXTENSIONS, EvalTransform, class_folders, list_images, listing_digest, map_classes
from nst_core.imagesets import ImageSet
from nst_common.progress import Progress

DEFAULT_CACHE = Path(os.environ.get("NST_CACHE_DIR", Path.home() / ".cache" / "nst-robustness"))


def seeded_subset(n: int, limit: int | None, seed: int = 0) -> torch.Tensor:
    """Sorted positions of a fixed, seeded subset of `limit` out of `n` items (all of them when limit is None)."""
    if limit is None or limit >= n:
        return torch.arange(n)
    if limit <= 0:
        raise ValueError(f"--limit must be positive, got {limit}")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=gen)[:limit].sort().values


def _limited(data: ImageSet, limit: int | None, seed: int) -> ImageSet:
    return data if limit is None or limit >= len(data) else data.subset(seeded_subset(len(data), limit, seed))


# ---------------------------------------------------------------------------------------------- the run's own data

def clean_test_set(meta: Mapping[str, Any], limit: int | None = None, seed: int = 0) -> ImageSet:
    """The run's untouched test set (from the checkpoint's config) at the model's input size."""
    from nst_core.data import load_test_set

    config = meta.get("config") or {}
    data_cfg = config.get("data", config) if isinstance(config, Mapping) else config
    if not data_cfg:
        raise DataError(f"model {meta.get('name')!r} carries no data config: give --val (an ImageFolder val tree)")
    image_set = load_test_set(data_cfg, meta["input_size"])
    positions = seeded_subset(len(image_set), limit, seed)
    if len(positions) < len(image_set):
        image_set = image_set.subset(positions)
    transform = image_set.transform if image_set.files is not None else None  # files are read by it
    info = {} if transform is None else {"root": str(data_cfg.get("test_dir")) if isinstance(data_cfg, Mapping)
                                         else None, "transform": transform.settings()}
    # decoded in memory, in-process (the identity of an in-memory set is its pixels); the name drops "-test"
    return replace(image_set.materialize(256, workers=0), name=str(image_set.name).removesuffix("-test"), info=info)


# ------------------------------------------------------------------------------------------------ ImageNet readers

def _folder_set(root: Path, name: str, transform: EvalTransform, meta: Mapping[str, Any], limit: int | None,
                seed: int, what: str, classes: Sequence[str] | None = None) -> ImageSet:
    """An ImageFolder tree as an ImageSet, class folders mapped by name against the model's class list.

    `classes` overrides the model's list (ImageNet-A: its 200 wnids, labels 0..199). The set's identity covers
    the file list, the class mapping and the transform, so other images can never read back these cells.
    """
    if not root.is_dir():
        raise DataError(f"{what} folder not found: {root}")
    folders = class_folders(root)
    if not folders:
        raise DataError(f"{root} has no class folders: expected the ImageFolder layout for {what} "
                           "(<root>/<wnid>/*.JPEG, or <root>/<class index>/* as ImageNetV2)")
    num_classes = len(classes) if classes is not None else int(meta.get("num_classes") or 0)
    try:
        label_of = map_classes(folders, classes if classes is not None else model_classes(meta), num_classes,
                               f"{what} {root}")
    except ValueError as exc:
        raise DataError(str(exc)) from None
    listing = list_images(root, folders)
    files = [root / folder / f for folder, names in listing for f in names]
    labels = [label_of[folder] for folder, names in listing for _ in names]
    if not files:
        raise DataError(f"no images under {root} (extensions {', '.join(IMAGE_EXTENSIONS)})")
    mapping = ",".join(f"{f}={label_of[f]}" for f in folders)
    digest = hashlib.sha1(f"{root.resolve()}|{listing_digest(listing)}|{mapping}|{transform.digest()}".encode())
    source = digest.hexdigest()[:16]  # the folder, its file list (no stat calls), the class mapping, the transform
    data = ImageSet(name=name, labels=torch.tensor(labels, dtype=torch.long), num_classes=num_classes,
                    indices=torch.arange(len(files)), files=files, transform=transform, source_id=source,
                    info={"root": str(root), "classes": len(folders), "transform": transform.settings()})
    return _limited(data, limit, seed)


def model_classes(meta: Mapping[str, Any]) -> list[str] | None:
    """The model's class names: `meta["classes"]`, else for a 1000-class model ImageNet-1k's sorted wnids (timm's
    `imagenet_synsets.txt`), else None (then only numeric class folders can be mapped)."""
    if meta.get("classes"):
        return list(meta["classes"])
    if int(meta.get("num_classes") or 0) == 1000:
        return _timm_info("imagenet_synsets.txt")
    return None


def val_transform(meta: Mapping[str, Any]) -> EvalTransform:
    """The model's own eval transform (timm's `create_transform` with the meta's size, crop_pct, crop_mode and
    interpolation): ImageNet val, ImageNet-A and any other folder of full-size photographs."""
    return EvalTransform.from_meta(meta)


def imagenet_val_set(root: str | os.PathLike, meta: Mapping[str, Any], limit: int | None = None,
                     seed: int = 0) -> ImageSet:
    """ImageNet val (or a subset of its class folders, or ImageNetV2's numeric folders) with the model's transform."""
    return _folder_set(Path(root), "imagenet", val_transform(meta), meta, limit, seed, "ImageNet val")


def official_224_transform(meta: Mapping[str, Any], method: str) -> EvalTransform:
    """How official 224-px files (ImageNet-C images, ImageNet-P frames) become model inputs.

    `crop`: center crop only (exact at 224 px; resizing the files again is a known benchmark bug, so this is the
    default at 224); `resize`: the whole 224 image resized to the model's input with its interpolation (as the
    Noisy Student paper did for 299 px), the default at any other size.
    """
    if method == "crop":
        return EvalTransform.from_meta(meta, crop_only=True)
    if method == "resize":
        return EvalTransform.from_meta(meta, crop_pct=1.0, crop_mode="squash")
    raise ValueError(f"unknown method {method!r} for official 224-px images; valid: crop, resize")


def imagenet_c_set(root: str | os.PathLike, corruption: str, severity: int, meta: Mapping[str, Any],
                   limit: int | None = None, seed: int = 0, method: str = "crop") -> ImageSet:
    """One (corruption, severity) cell of ImageNet-C (`official_224_transform(method)`); errors name a missing
    folder."""
    cell = Path(root) / corruption / str(severity)
    if not cell.is_dir():
        missing = cell if (Path(root) / corruption).is_dir() else Path(root) / corruption
        raise DataError(f"ImageNet-C folder missing: {missing} (expected <root>/<corruption>/<severity 1-5>/"
                           f"<wnid>/*.JPEG). Complete the download, or choose corruptions with --corruptions")
    name = "imagenet-c" if method == "crop" else f"imagenet-c-{method}d"
    data = _folder_set(cell, name, official_224_transform(meta, method), meta, limit, seed, "ImageNet-C")
    data.info.update(corruption=corruption, severity=severity, method=method)
    return data


def _timm_info(name: str) -> list[str]:
    text = resources.files("timm.data").joinpath("_info").joinpath(name).read_text()  # one part a call on 3.10
    return [line.strip() for line in text.splitlines() if line.strip()]


def imagenet_a_mask() -> torch.Tensor:
    """The 200 ImageNet-1k logit indices of ImageNet-A's classes (timm's imagenet_a_indices.txt), in label order."""
    return torch.tensor([int(v) for v in _timm_info("imagenet_a_indices.txt")], dtype=torch.long)


def imagenet_a_synsets() -> list[str]:
    """ImageNet-A's 200 wnids in label order (timm's imagenet_a_synsets.txt)."""
    return _timm_info("imagenet_a_synsets.txt")


def imagenet_a_set(root: str | os.PathLike, meta: Mapping[str, Any], limit: int | None = None,
                   seed: int = 0) -> ImageSet:
    """ImageNet-A (`<root>/<wnid>/*`): labels 0..199, `class_index` = the 200-logit mask."""
    return _masked_set(root, meta, limit, seed, "imagenet-a", "ImageNet-A", imagenet_a_synsets(), imagenet_a_mask())


def imagenet_r_mask() -> torch.Tensor:
    """The 200 ImageNet-1k logit indices of ImageNet-R's classes (timm's imagenet_r_indices.txt), in label order."""
    return torch.tensor([int(v) for v in _timm_info("imagenet_r_indices.txt")], dtype=torch.long)


def imagenet_r_synsets() -> list[str]:
    """ImageNet-R's 200 wnids in label order (timm's imagenet_r_synsets.txt)."""
    return _timm_info("imagenet_r_synsets.txt")


def imagenet_r_set(root: str | os.PathLike, meta: Mapping[str, Any], limit: int | None = None,
                   seed: int = 0) -> ImageSet:
    """ImageNet-R (renditions, `<root>/<wnid>/*`): labels 0..199, `class_index` = the 200-logit mask."""
    return _masked_set(root, meta, limit, seed, "imagenet-r", "ImageNet-R", imagenet_r_synsets(), imagenet_r_mask())


def _masked_set(root: str | os.PathLike, meta: Mapping[str, Any], limit: int | None, seed: int, name: str,
                title: str, synsets: list[str], mask: torch.Tensor) -> ImageSet:
    """A 200-class subset of ImageNet (`<root>/<wnid>/*`, wnids from `synsets`): labels 0..199 and `class_index` =
    `mask`, the 1000-class logits the model's prediction is taken over."""
    data = _folder_set(Path(root), name, val_transform(meta), meta, limit, seed, title, classes=synsets)
    data.class_index = mask
    return data


def imagenet_sketch_set(root: str | os.PathLike, meta: Mapping[str, Any], limit: int | None = None,
                        seed: int = 0) -> ImageSet:
    """ImageNet-Sketch (`<root>/<wnid>/*`, ImageNet-1k's classes, any subset) with the model's eval transform."""
    return _folder_set(Path(root), "imagenet-sketch", val_transform(meta), meta, limit, seed, "ImageNet-Sketch")


IMAGENET_V2_VARIANTS = ("matched-frequency", "threshold0.7", "top-images")


def imagenet_v2_variant(root: str | os.PathLike) -> str:
    """The ImageNetV2 variant named by a root folder (`imagenetv2-matched-frequency-format-val` ->
    `matched-frequency`); a folder naming none of the three gives its own name."""
    name = Path(root).resolve().name
    return next((v for v in IMAGENET_V2_VARIANTS if v in name), name)


def imagenet_v2_set(root: str | os.PathLike, meta: Mapping[str, Any], limit: int | None = None,
                    seed: int = 0) -> ImageSet:
    """One ImageNetV2 variant (`<root>/<class index 0..999>/*`, numeric folders are class indices)."""
    data = _folder_set(Path(root), "imagenet-v2", val_transform(meta), meta, limit, seed, "ImageNet-V2")
    data.info["variant"] = imagenet_v2_variant(root)
    return data


# ------------------------------------------------------------------------------------- generated corruption sets

def corruption_cache_dir(clean: ImageSet, backend: str, seed: int, cache_dir: str | os.PathLike | None = None,
                         preset: str | None = None, rng: str | None = None) -> Path:
    """Where the generated sets of `clean` live: keyed by dataset, input size, n, content digest, backend, engine
    version (`eval.corruptions.ENGINE_VERSION`), preset and random stream (`eval.corruptions.rng_tag`; both left out
    of the name when None) and seed."""
    root = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    data = clean.materialize()
    c, h, w = data.pixels.shape[1:]
    generator = "-".join([backend, f"v{ENGINE_VERSION}"] + [v for v in (preset, rng) if v] + [f"seed{seed}"])
    return root / "corruptions" / f"{clean.name}-{c}x{h}x{w}-n{len(data)}-{data.content_digest()}" / generator


def corrupted_set(clean: ImageSet, corruption: str, severity: int, backend: str = "torch", seed: int = 0,
                  cache_dir: str | os.PathLike | None = None, chunk: int = 500, progress: bool = True,
                  directory: Path | None = None, preset: str | None = None, rng: str | None = None,
                  device: str | torch.device | None = None) -> ImageSet:
    """`clean` corrupted by `eval.corruptions.corrupt` (keys = dataset indices), from the disk cache when there.

    `preset` / `rng`: the engine's corruption strengths and random-number mode (None: its defaults for the images'
    size and for `device`); `device`: where the images are corrupted (None: where they are; results come back to
    the CPU for the cache).
    """
    from eval.corruptions import corrupt, resolve_settings, rng_tag

    data = clean.materialize()
    device = torch.device(device) if device is not None else data.pixels.device
    probe = torch.empty((0, *data.pixels.shape[1:]), dtype=torch.uint8, device=device)
    preset, rng = resolve_settings(probe, backend, preset, rng)
    folder = directory or corruption_cache_dir(data, backend, seed, cache_dir, preset, rng_tag(rng, device))
    path = folder / f"{corruption}-{severity}.npy"
    images = None
    if path.exists():
        try:
            array = np.load(path, allow_pickle=False)
            if tuple(array.shape) == tuple(data.pixels.shape) and array.dtype == np.uint8:
                images = torch.from_numpy(array)
        except (ValueError, OSError):
            images = None  # a damaged cache file is regenerated
    if images is None:
        parts = []
        keys = data.indices.tolist()
        bar = Progress(total=len(data), desc=f"generate {corruption}/{severity} ({backend})", unit="img",
                       enabled=progress, leave=False)
        for start in range(0, len(data), chunk):
            part = corrupt(data.pixels[start:start + chunk].to(device), corruption, severity,
                           keys[start:start + chunk], seed=seed, backend=backend, preset=preset, rng=rng).cpu()
            parts.append(part)
            bar.update(part.shape[0])
        bar.close()
        images = torch.cat(parts)
        write_array(path, images.numpy())
    return replace(data, name=f"{clean.name}-c/{backend}", images=images, source_id="",  # identity: these pixels
                   info={**data.info, "corruption": corruption, "severity": severity, "backend": backend,
                         "preset": preset, "rng": rng_tag(rng, device), "engine_version": ENGINE_VERSION,
                         "seed": seed, "cache": str(path)})


__all__ = [
    "DataError", "seeded_subset", "clean_test_set", "val_transform", "official_224_transform",
    "imagenet_val_set", "imagenet_c_set", "imagenet_a_set", "imagenet_a_mask", "imagenet_a_synsets",
    "imagenet_r_set", "imagenet_r_mask", "imagenet_r_synsets", "imagenet_sketch_set", "imagenet_v2_set",
    "imagenet_v2_variant", "IMAGENET_V2_VARIANTS",
    "corrupted_set", "corruption_cache_dir", "DEFAULT_CACHE",
]
