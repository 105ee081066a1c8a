"""Evaluation data, all as labeled uint8 [N, C, H, W] batches at the model's input size (models take [0, 1]).

- `clean_test_set`: a run's untouched test set through `nst_core.data.load_test_set`.
- `imagenet_val_set`: ImageFolder val, Resize(int(size / crop_pct)) + CenterCrop(size) with the model's config.
- `imagenet_c_set`: `<root>/<corruption>/<severity>/<wnid>/*.JPEG`, center crop only (resizing -C images again is
  a known benchmark bug); a missing corruption or severity folder is an error naming the path.
- `imagenet_a_set`: `<root>/<wnid>/*`, labels 0..199 in timm's sorted-synset order, with `class_index` = the
  200 ImageNet logits to keep (timm/data/_info/imagenet_a_indices.txt, read from the installed timm).
- `corrupted_set`: a generated -C set (`eval.corruptions.corrupt`, seeded per image by dataset index), cached on
  disk as one uint8 .npy per (corruption, severity), written atomically, keyed by the clean images' content,
  the subset, the backend and the seed, so the next evaluation reuses it.

Unreadable images are errors naming the file: skipping one would change the benchmark. `--limit N` everywhere is
`seeded_subset`: a fixed, seeded, sorted choice of dataset indices.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from nst_core.checkpoint import write_array

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_CACHE = Path(os.environ.get("NST_CACHE_DIR", Path.home() / ".cache" / "nst-robustness"))


class DatasetError(ValueError):
    """Evaluation data that is missing or unreadable; the message names the path and says what to do."""


@dataclass
class EvalSet:
    """Labeled uint8 images for evaluation, in memory (`images`) or as files read by `read` in a DataLoader.

    `indices` are the dataset indices of the items (fixed order; keys for per-image seeding and pairing);
    `class_index`, when set, selects and orders the model's logits before comparing with `labels` (ImageNet-A).
    """

    name: str
    labels: torch.Tensor
    num_classes: int
    indices: torch.Tensor
    images: torch.Tensor | None = None
    files: list[Path] | None = None
    read: Callable[[Path], torch.Tensor] | None = None
    class_index: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.numel())

    def subset(self, positions: torch.Tensor) -> "EvalSet":
        """The items at `positions` (positions in this set, not dataset indices)."""
        pos = torch.as_tensor(positions, dtype=torch.long)
        return replace(self, labels=self.labels[pos], indices=self.indices[pos],
                       images=None if self.images is None else self.images[pos],
                       files=None if self.files is None else [self.files[i] for i in pos.tolist()])

    def batches(self, batch_size: int, workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 [B, C, H, W], int64 [B]) in index order: memory slices, or files through a DataLoader."""
        if self.images is not None:
            for start in range(0, len(self), batch_size):
                yield self.images[start:start + batch_size], self.labels[start:start + batch_size]
            return
        loader = DataLoader(_FileDataset(self.files, self.labels, self.read), batch_size=batch_size, shuffle=False,
                            num_workers=workers, persistent_workers=False)
        yield from loader

    def materialize(self, batch_size: int = 256, workers: int = 0) -> "EvalSet":
        """The same set with every image in memory (uint8)."""
        if self.images is not None:
            return self
        images = torch.cat([x for x, _ in self.batches(batch_size, workers)]) if len(self) else torch.zeros(0)
        return replace(self, images=images, files=None, read=None)

    def content_digest(self) -> str:
        """sha1 over the images, labels and indices (keys the corruption cache)."""
        data = self.materialize()
        h = hashlib.sha1()
        for t in (data.images, data.labels, data.indices):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


class _FileDataset(Dataset):
    def __init__(self, files: list[Path], labels: torch.Tensor, read: Callable[[Path], torch.Tensor]) -> None:
        self.files, self.labels, self.read = files, labels, read

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.read(self.files[i]), self.labels[i]


def seeded_subset(n: int, limit: int | None, seed: int = 0) -> torch.Tensor:
    """Sorted positions of a fixed, seeded subset of `limit` out of `n` items (all of them when limit is None)."""
    if limit is None or limit >= n:
        return torch.arange(n)
    if limit <= 0:
        raise ValueError(f"--limit must be positive, got {limit}")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=gen)[:limit].sort().values


def _limited(data: EvalSet, limit: int | None, seed: int) -> EvalSet:
    return data if limit is None or limit >= len(data) else data.subset(seeded_subset(len(data), limit, seed))


# ---------------------------------------------------------------------------------------------- the run's own data

def clean_test_set(meta: Mapping[str, Any], limit: int | None = None, seed: int = 0) -> EvalSet:
    """The run's untouched test set (from the checkpoint's config) at the model's input size."""
    from nst_core.data import iterate_batches, load_test_set

    config = meta.get("config") or {}
    data_cfg = config.get("data", config) if isinstance(config, Mapping) else config
    if not data_cfg:
        raise DatasetError(f"model {meta.get('name')!r} carries no data config: give --val (an ImageFolder val tree)")
    image_set = load_test_set(data_cfg, meta["input_size"])
    positions = seeded_subset(len(image_set), limit, seed)
    if len(positions) < len(image_set):
        image_set = image_set.subset(positions)
    images = image_set.images
    if images is None:
        images = torch.cat([x for x, _ in iterate_batches(image_set, 256)])
    name = str(image_set.name).removesuffix("-test")
    return EvalSet(name=name, labels=image_set.labels.long(), num_classes=int(image_set.num_classes),
                   indices=positions.clone(), images=images)


# ------------------------------------------------------------------------------------------------ ImageNet readers

def _interpolation(name: str | None) -> Any:
    from torchvision.transforms import InterpolationMode

    return InterpolationMode(name or "bilinear")


class ImageReader:
    """Reads one image file into uint8 [C, H, W]: optional Resize(short side) + CenterCrop, or crop only."""

    def __init__(self, input_size: Sequence[int], crop_pct: float | None = None, interpolation: str | None = None,
                 resize: bool = True) -> None:
        self.channels, self.height, self.width = (int(v) for v in input_size)
        self.crop_pct = crop_pct or 0.875
        self.interpolation = interpolation
        self.resize = resize

    def __call__(self, path: Path) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        try:
            with Image.open(path) as img:
                img = img.convert("RGB" if self.channels == 3 else "L")
        except Exception as exc:  # PIL raises many types; name the file whatever it was
            raise DatasetError(f"cannot read image {path}: {exc}. Replace or delete the file; images are never "
                               "skipped (that would change the benchmark)") from None
        if self.resize:
            img = TF.resize(img, int(self.height / self.crop_pct), interpolation=_interpolation(self.interpolation))
        elif img.height < self.height or img.width < self.width:
            raise DatasetError(f"{path} is {img.width}x{img.height}, smaller than the model's input "
                               f"{self.width}x{self.height}: ImageNet-C/-A images are only center-cropped, never "
                               "resized; generate corruptions at this size instead (--corruption-backend)")
        img = TF.center_crop(img, [self.height, self.width])
        return TF.pil_to_tensor(img)


def _class_dirs(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir())


def _list_images(root: Path, classes: Sequence[str], label_of: Mapping[str, int]) -> tuple[list[Path], list[int]]:
    files: list[Path] = []
    labels: list[int] = []
    for wnid in classes:
        found = sorted(p for p in (root / wnid).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        files += found
        labels += [label_of[wnid]] * len(found)
    return files, labels


def _folder_set(root: Path, name: str, reader: ImageReader, classes: Sequence[str] | None, limit: int | None,
                seed: int, what: str) -> EvalSet:
    if not root.is_dir():
        raise DatasetError(f"{what} folder not found: {root}")
    present = _class_dirs(root)
    if not present:
        raise DatasetError(f"{root} has no class folders (<wnid>/): expected the ImageFolder layout for {what}")
    classes = list(classes) if classes is not None else present
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise DatasetError(f"{root} has class folders not in the model's class list: {unknown[:5]}")
    label_of = {w: i for i, w in enumerate(classes)}
    files, labels = _list_images(root, [w for w in classes if w in present], label_of)
    if not files:
        raise DatasetError(f"no images under {root} (extensions {', '.join(IMAGE_EXTENSIONS)})")
    data = EvalSet(name=name, labels=torch.tensor(labels, dtype=torch.long), num_classes=len(classes),
                   indices=torch.arange(len(files)), files=files, read=reader, info={"root": str(root),
                                                                                     "classes": classes})
    return _limited(data, limit, seed)


def imagenet_classes(val_root: str | os.PathLike) -> list[str]:
    """The sorted wnid folders of an ImageFolder tree (the class order of torchvision / timm)."""
    return _class_dirs(Path(val_root))


def imagenet_val_set(root: str | os.PathLike, meta: Mapping[str, Any], limit: int | None = None,
                     seed: int = 0) -> EvalSet:
    """ImageNet val (ImageFolder) with the model's Resize(int(size/crop_pct)) + CenterCrop(size)."""
    reader = ImageReader(meta["input_size"], meta.get("crop_pct"), meta.get("interpolation"), resize=True)
    return _folder_set(Path(root), "imagenet", reader, None, limit, seed, "ImageNet val")


def imagenet_c_set(root: str | os.PathLike, corruption: str, severity: int, meta: Mapping[str, Any],
                   classes: Sequence[str] | None = None, limit: int | None = None, seed: int = 0) -> EvalSet:
    """One (corruption, severity) cell of ImageNet-C, center crop only; errors name a missing folder."""
    cell = Path(root) / corruption / str(severity)
    if not cell.is_dir():
        missing = cell if (Path(root) / corruption).is_dir() else Path(root) / corruption
        raise DatasetError(f"ImageNet-C folder missing: {missing} (expected <root>/<corruption>/<severity 1-5>/"
                           f"<wnid>/*.JPEG). Complete the download, or choose corruptions with --corruptions")
    reader = ImageReader(meta["input_size"], resize=False)
    data = _folder_set(cell, "imagenet-c", reader, classes, limit, seed, "ImageNet-C")
    data.info.update(corruption=corruption, severity=severity)
    return data


def _timm_info(name: str) -> list[str]:
    text = resources.files("timm.data").joinpath("_info", name).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def imagenet_a_mask() -> torch.Tensor:
    """The 200 ImageNet-1k logit indices of ImageNet-A's classes (timm's imagenet_a_indices.txt), in label order."""
    return torch.tensor([int(v) for v in _timm_info("imagenet_a_indices.txt")], dtype=torch.long)


def imagenet_a_synsets() -> list[str]:
    """ImageNet-A's 200 wnids in label order (timm's imagenet_a_synsets.txt)."""
    return _timm_info("imagenet_a_synsets.txt")


def imagenet_a_set(root: str | os.PathLike, meta: Mapping[str, Any], limit: int | None = None,
                   seed: int = 0) -> EvalSet:
    """ImageNet-A (`<root>/<wnid>/*`): labels 0..199, `class_index` = the 200-logit mask."""
    reader = ImageReader(meta["input_size"], meta.get("crop_pct"), meta.get("interpolation"), resize=True)
    data = _folder_set(Path(root), "imagenet-a", reader, imagenet_a_synsets(), limit, seed, "ImageNet-A")
    data.class_index = imagenet_a_mask()
    return data


# ------------------------------------------------------------------------------------- generated corruption sets

def corruption_cache_dir(clean: EvalSet, backend: str, seed: int, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the generated sets of `clean` live: keyed by dataset, input size, n, content digest, backend, seed."""
    root = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    data = clean.materialize()
    c, h, w = data.images.shape[1:]
    return root / "corruptions" / f"{clean.name}-{c}x{h}x{w}-n{len(data)}-{data.content_digest()}" / \
        f"{backend}-seed{seed}"


def corrupted_set(clean: EvalSet, corruption: str, severity: int, backend: str = "torch", seed: int = 0,
                  cache_dir: str | os.PathLike | None = None, chunk: int = 500, progress: bool = True,
                  directory: Path | None = None) -> EvalSet:
    """`clean` corrupted by `eval.corruptions.corrupt` (keys = dataset indices), from the disk cache when there."""
    from eval.corruptions import corrupt

    data = clean.materialize()
    folder = directory or corruption_cache_dir(data, backend, seed, cache_dir)
    path = folder / f"{corruption}-{severity}.npy"
    images = None
    if path.exists():
        try:
            array = np.load(path, allow_pickle=False)
            if tuple(array.shape) == tuple(data.images.shape) and array.dtype == np.uint8:
                images = torch.from_numpy(array)
        except (ValueError, OSError):
            images = None  # a damaged cache file is regenerated
    if images is None:
        parts = []
        keys = data.indices.tolist()
        bar = tqdm(total=len(data), desc=f"generate {corruption}/{severity} ({backend})", unit="img",
                   disable=not progress, leave=False)
        for start in range(0, len(data), chunk):
            part = corrupt(data.images[start:start + chunk], corruption, severity, keys[start:start + chunk],
                           seed=seed, backend=backend)
            parts.append(part)
            bar.update(part.shape[0])
        bar.close()
        images = torch.cat(parts)
        write_array(path, images.numpy())
    return replace(data, name=f"{clean.name}-c/{backend}", images=images,
                   info={**data.info, "corruption": corruption, "severity": severity, "backend": backend,
                         "seed": seed, "cache": str(path)})


__all__ = [
    "DatasetError", "EvalSet", "ImageReader", "seeded_subset", "clean_test_set", "imagenet_classes",
    "imagenet_val_set", "imagenet_c_set", "imagenet_a_set", "imagenet_a_mask", "imagenet_a_synsets",
    "corrupted_set", "corruption_cache_dir", "DEFAULT_CACHE",
]
