"""Datasets as uint8 images at the model's input size: Fashion-MNIST (IDX files) or ImageFolder trees.

In-memory images (Fashion-MNIST) become model inputs through `to_model_input`: resize to H x W (bilinear,
antialiased) and grey replicated to C channels. Image files (ImageFolder trees) go through the one eval transform
that evaluation uses too (`nst_core.images.EvalTransform`: timm's `create_transform` with the config's crop_pct,
crop_mode and interpolation), and class folders sort numerically when all are numbers.
Pixels stay uint8 until a batch is made; models take floats in [0, 1] and normalise inside.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nst_common.errors import DataError
from nst_common.seeding import derive_seed
from nst_core.config import DataConfig
from nst_core.images import IMAGE_EXTENSIONS, EvalTransform, class_folders, list_images
from nst_core.imagesets import ImageSet

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist


@dataclass
class NSTData:
    """The three parts of a Noisy Student run: labeled, unlabeled pool (labels only for reporting), test."""

    labeled: ImageSet
    unlabeled: ImageSet
    test: ImageSet

    @property
    def num_classes(self) -> int:
        return self.labeled.num_classes


def prepare_data(cfg: DataConfig, seed: int) -> NSTData:
    """Load the dataset and split train into N labeled images per class (seeded) and the unlabeled pool."""
    train, test = _load_train_test(cfg)
    if cfg.labeled_per_class is None:
        labeled_idx, unlabeled_idx = torch.arange(len(train)), torch.arange(0)
    else:
        labeled_idx, unlabeled_idx = split_labeled(train.labels, cfg.labeled_per_class, seed, train.classes)
    if cfg.unlabeled_dir:
        pool = _folder_unlabeled(cfg)
    else:
        pool = train.subset(unlabeled_idx)
    if cfg.unlabeled_limit is not None and cfg.unlabeled_limit < len(pool):
        gen = torch.Generator().manual_seed(derive_seed(seed, "unlabeled limit"))
        keep = torch.randperm(len(pool), generator=gen)[: cfg.unlabeled_limit].sort().values
        pool = pool.subset(keep)
    return NSTData(labeled=train.subset(labeled_idx), unlabeled=pool, test=test)


def load_test_set(data_cfg: DataConfig | dict[str, Any], input_size: list[int] | tuple[int, ...] | None = None) -> ImageSet:
    """The untouched test set of a run's dataset, at `input_size` [C, H, W] (default: the config's)."""
    cfg = _data_config(data_cfg)
    if input_size is not None:
        cfg = dataclasses.replace(cfg, input_size=list(input_size))
    if cfg.dataset == "fashion_mnist":
        root = find_fashion_mnist(cfg.data_dir, cfg.download)
        images = read_idx(root, FASHION_MNIST_FILES["test_images"])
        labels = read_idx(root, FASHION_MNIST_FILES["test_labels"])
        return _fashion_set(images, labels, cfg, "fashion_mnist-test")
    return _folder_set(cfg.test_dir, cfg, "test_dir")


def to_model_input(images: torch.Tensor, input_size: list[int] | tuple[int, ...]) -> torch.Tensor:
    """The documented transform: uint8 [N, H, W] or [N, C, H, W] -> uint8 [N, C', H', W'] at `input_size`."""
    channels, height, width = input_size
    x = images if images.ndim == 4 else images.unsqueeze(1)
    if x.shape[-2:] != (height, width):
        out = []
        for chunk in x.split(4096):
            y = F.interpolate(chunk.float(), size=(height, width), mode="bilinear", antialias=True, align_corners=False)
            out.append(y.round_().clamp_(0, 255).to(torch.uint8))
        x = torch.cat(out)
    if x.shape[1] == channels:
        return x.contiguous()
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1).contiguous()
    if channels == 1:  # colour to grey, ITU-R 601 weights as PIL's convert("L")
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (x.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    raise DataError(f"cannot turn {x.shape[1]}-channel images into {channels} channels")


def split_labeled(labels: torch.Tensor, per_class: int, seed: int, classes: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split: `per_class` labeled indices per class, the rest unlabeled; both sorted."""
    gen = torch.Generator().manual_seed(seed)
    labeled = []
    for c in range(int(labels.max()) + 1):
        members = (labels == c).nonzero().flatten()
        if len(members) < per_class:
            name = f" ({classes[c]!r})" if classes else ""
            raise DataError(
                f"data.labeled_per_class is {per_class} but class {c}{name} has only {len(members)} training "
                "images; lower data.labeled_per_class"
            )
        labeled.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    labeled_idx = torch.cat(labeled).sort().values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[labeled_idx] = False
    return labeled_idx, mask.nonzero().flatten()


def find_fashion_mnist(data_dir: str | os.PathLike | None = None, download: bool = False) -> Path:
    """Locate the Fashion-MNIST IDX files: `data_dir`, then the Debian package, then a torchvision download."""
    candidates = []
    if data_dir:
        base = Path(data_dir)
        candidates += [base, base / "FashionMNIST" / "raw"]
    candidates.append(SYSTEM_FASHION_MNIST)
    for root in candidates:
        if all(_idx_path(root, name) is not None for name in FASHION_MNIST_FILES.values()):
            return root
    if download:
        from torchvision.datasets import FashionMNIST

        cache = Path(data_dir or Path.home() / ".cache" / "nst-robustness")
        FashionMNIST(str(cache), train=True, download=True)
        FashionMNIST(str(cache), train=False, download=True)
        return cache / "FashionMNIST" / "raw"
    looked = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"Fashion-MNIST not found (looked in {looked}). Install it with "
        "`sudo apt-get install dataset-fashion-mnist` (Debian), or set data.download: true (or pass "
        "--download) to fetch it with torchvision, or point data.data_dir / --data-dir at a folder holding "
        f"{', '.join(v + '.gz' for v in FASHION_MNIST_FILES.values())}"
    )


def read_idx(root: Path, name: str) -> np.ndarray:
    """Read one IDX file (gzipped or not): the format of MNIST and Fashion-MNIST."""
    path = _idx_path(root, name)
    if path is None:
        raise DataError(f"{root / name}(.gz) does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file; re-download it")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {body.size}")
    return body.reshape(shape)


def _idx_path(root: Path, name: str) -> Path | None:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    return None


def _data_config(data_cfg: DataConfig | dict[str, Any]) -> DataConfig:
    if isinstance(data_cfg, DataConfig):
        return data_cfg
    from nst_core.config import _build

    return _build(DataConfig, dict(data_cfg), "meta.json", "data")


def _load_train_test(cfg: DataConfig) -> tuple[ImageSet, ImageSet]:
    if cfg.dataset == "fashion_mnist":
        root = find_fashion_mnist(cfg.data_dir, cfg.download)
        train = _fashion_set(read_idx(root, FASHION_MNIST_FILES["train_images"]),
                             read_idx(root, FASHION_MNIST_FILES["train_labels"]), cfg, "fashion_mnist-train")
        test = _fashion_set(read_idx(root, FASHION_MNIST_FILES["test_images"]),
                            read_idx(root, FASHION_MNIST_FILES["test_labels"]), cfg, "fashion_mnist-test")
        return train, test
    train = _folder_set(cfg.data_dir, cfg, "data_dir")
    return train, _folder_set(cfg.test_dir, cfg, "test_dir", train.classes)


def _fashion_set(images: np.ndarray, labels: np.ndarray, cfg: DataConfig, name: str) -> ImageSet:
    pixels = to_model_input(torch.from_numpy(images.copy()), cfg.input_size)
    return ImageSet(torch.from_numpy(labels.astype(np.int64)), 10, name, images=pixels, classes=FASHION_MNIST_CLASSES)


def image_transform(cfg: DataConfig) -> EvalTransform:
    """The one eval transform of a run's image files (timm's `create_transform`; see `nst_core.images`)."""
    return EvalTransform(tuple(cfg.input_size), cfg.crop_pct, cfg.crop_mode, cfg.interpolation)


def _folder_set(root: str | None, cfg: DataConfig, key: str, classes: list[str] | None = None) -> ImageSet:
    """An ImageFolder tree; `classes` (the training tree's) must be exactly its class folders, else a DataError."""
    if not root or not Path(root).is_dir():
        raise DataError(f"data.{key} = {root!r} is not a folder; point it at an ImageFolder tree (<root>/<class>/*.jpg)")
    found = class_folders(root)
    if not found:
        raise DataError(f"data.{key} = {root!r} has no class folders; expected <root>/<class>/*.jpg")
    if classes is not None and found != classes:
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        raise DataError(f"data.{key} = {root!r} does not have the classes of data.data_dir: missing {missing[:8]}, "
                        f"extra {extra[:8]}. Labels are positions in the class list, so both trees need the same "
                        "class folders")
    listing = list_images(root, found)
    empty = [folder for folder, names in listing if not names]
    if empty:
        raise DataError(f"data.{key} = {root!r}: class folders {empty[:8]} hold no images "
                        f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folders")
    paths = [Path(root) / folder / name for folder, names in listing for name in names]
    labels = [i for i, (_, names) in enumerate(listing) for _ in names]
    return ImageSet(torch.tensor(labels), len(found), Path(root).name, files=paths, transform=image_transform(cfg),
                    classes=found)


def _folder_unlabeled(cfg: DataConfig) -> ImageSet:
    assert cfg.unlabeled_dir is not None  # called only when the config names a folder
    root = Path(cfg.unlabeled_dir)
    if not root.is_dir():
        raise DataError(f"data.unlabeled_dir = {str(root)!r} is not a folder of images")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise DataError(f"data.unlabeled_dir {root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return ImageSet(torch.full((len(paths),), -1), 0, root.name, files=paths, transform=image_transform(cfg))
