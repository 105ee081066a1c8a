"""Image files to model inputs: one decoder, one eval transform, one class mapping, for training and evaluation.

- `open_rgb(path, channels)`: any image mode Pillow opens becomes correct 8-bit RGB (or L for 1-channel models):
  16-bit integer images (`I;16*`, and `I` from 16-bit sources) are scaled by 255/65535, 32-bit integer images by
  255/(2^32 - 1) (unsigned) or 255/(2^31 - 1) (signed, negative values refused); palette images with
  transparency, LA, PA and RGBA are composited over white (what a viewer shows); CMYK and YCbCr are converted by
  Pillow; 1-bit becomes 0 / 255. 32-bit float images (mode `F`, whose range is not defined) and modes Pillow
  cannot convert are refused with an `ImageError` naming the file.
- `EvalTransform`: the eval preprocessing as plain data (input size, crop_pct, crop_mode, interpolation), applied by
  timm's own `create_transform(is_training=False, use_prefetcher=True)` (so a timm model sees exactly what timm's
  validate script feeds it), or a center crop only (`crop_only`, for the official 224-px ImageNet-C / -P files).
  Its `settings()` go into every result row.
- `class_folders` / `map_classes`: class folder names to label indices against a model's class list: names in the
  list map to their position (ImageNet wnids to their index among timm's 1000 synsets, whatever subset is
  present); all-numeric names are class indices (ImageNetV2's layout); anything else is an error that lists the
  offending folders.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, cast

import numpy as np
import torch
from PIL import Image

from nst_common.errors import ImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
WHITE = (255, 255, 255)


# ------------------------------------------------------------------------------------------------------- decoding

def _tiff_tag(img: Image.Image, tag: int) -> Any:
    tags = getattr(img, "tag_v2", None)
    value = tags.get(tag) if tags is not None else None
    return value[0] if isinstance(value, tuple) else value


def _scaled_to_8bit(img: Image.Image, path: Path) -> Image.Image:
    """A 16- or 32-bit integer grey image as mode L, scaled by its bit depth (never clipped at 255)."""
    array = np.asarray(img)
    bits = 16 if img.mode.startswith("I;16") else int(_tiff_tag(img, 258) or (16 if img.format in ("PNG", "PPM") else 32))
    if bits <= 16:
        full = 65535
        values = array.astype(np.int64)
    elif int(_tiff_tag(img, 339) or 1) == 2:  # TIFF SampleFormat 2: signed
        if int(array.min()) < 0:
            raise ImageError(f"{path}: a signed 32-bit image with negative values has no defined 8-bit scale; "
                             "convert it to 8- or 16-bit first")
        full, values = 2**31 - 1, array.astype(np.int64)
    else:
        full, values = 2**32 - 1, array.astype(np.int64) & 0xFFFFFFFF  # Pillow keeps unsigned 32-bit in int32
    if int(values.min()) < 0 or int(values.max()) > full:
        raise ImageError(f"{path}: values {int(values.min())}..{int(values.max())} do not fit {bits}-bit; "
                         "convert the file to 8-bit RGB")
    return Image.fromarray(((values * 255 + full // 2) // full).astype(np.uint8), mode="L")


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode in ("P", "L", "RGB") and
                                                              "transparency" in img.info)


def to_rgb(img: Image.Image, path: str | os.PathLike = "<image>", channels: int = 3) -> Image.Image:
    """Any Pillow image as 8-bit RGB (channels 3) or L (channels 1), per the rules in the module docstring.

    Raises `ImageError` (naming `path`) for float images and modes Pillow cannot convert.
    """
    path = Path(path)
    if img.mode == "F":
        raise ImageError(f"{path}: a 32-bit float image has no defined value range; save it as 8- or 16-bit "
                         "integer (PNG, TIFF) or JPEG")
    if img.mode.startswith("I"):
        img = _scaled_to_8bit(img, path)
    elif _has_alpha(img):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        img = Image.alpha_composite(background, rgba)
    try:
        return img.convert("RGB" if channels == 3 else "L")
    except (ValueError, OSError) as exc:
        raise ImageError(f"{path}: cannot convert mode {img.mode} to RGB ({exc}); save it as RGB") from None


def open_rgb(path: str | os.PathLike, channels: int = 3) -> Image.Image:
    """Decode an image file into 8-bit RGB (or L); every failure is an `ImageError` naming the file."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img, path, channels)
    except ImageError:
        raise
    except Exception as exc:  # PIL raises many types; name the file whatever it was
        raise ImageError(f"cannot read image {path}: {exc}. Replace or delete the file; images are never "
                         "skipped (that would change the benchmark)") from None


# ------------------------------------------------------------------------------------------------ eval transform

@dataclass(frozen=True)
class EvalTransform:
    """Eval preprocessing of one image file into uint8 [C, H, W], as plain data.

    Default: timm's eval transform (`timm.data.create_transform(is_training=False)`): with crop_mode `center`,
    resize the short side to floor(size / crop_pct) and center crop; `squash` resizes the whole image to
    floor(size / crop_pct) on both sides, then center crops; `border` crops a border first (see timm).
    `crop_only`: a center crop to H x W without any resize (official ImageNet-C / -P files at their 224 px);
    an image smaller than the crop is an `ImageError`.
    """

    input_size: tuple[int, ...]  # (C, H, W)
    crop_pct: float = 0.875
    crop_mode: str = "center"
    interpolation: str = "bilinear"
    crop_only: bool = False

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], **overrides: Any) -> "EvalTransform":
        """The transform a model's meta asks for (`input_size`, `crop_pct`, `crop_mode`, `interpolation`)."""
        fields = {"input_size": tuple(int(v) for v in meta["input_size"]),
                  "crop_pct": float(meta.get("crop_pct") or 0.875),
                  "crop_mode": str(meta.get("crop_mode") or "center"),
                  "interpolation": str(meta.get("interpolation") or "bilinear")}
        return cls(**{**fields, **overrides})

    def settings(self) -> dict[str, Any]:
        """The transform as a JSON-ready dict (recorded with every result row)."""
        out = asdict(self)
        out["input_size"] = list(self.input_size)
        return out

    def digest(self) -> str:
        """A short hash of `settings()` (part of a dataset's identity)."""
        return hashlib.sha1(repr(sorted(self.settings().items())).encode()).hexdigest()[:12]

    def _timm(self) -> Callable[[Image.Image], torch.Tensor]:
        cached = self.__dict__.get("_built")
        if cached is None:
            from timm.data import create_transform

            size = cast("tuple[int, int, int]", self.input_size)
            cached = create_transform(size, is_training=False, interpolation=self.interpolation,
                                      crop_pct=self.crop_pct, crop_mode=self.crop_mode, use_prefetcher=True)
            object.__setattr__(self, "_built", cached)
        return cached

    def apply(self, img: Image.Image, path: str | os.PathLike = "<image>") -> torch.Tensor:
        """A decoded 8-bit image as uint8 [C, H, W] at `input_size`."""
        c, h, w = self.input_size
        if self.crop_only:
            if img.height < h or img.width < w:
                raise ImageError(f"{path} is {img.width}x{img.height}, smaller than the {w}x{h} center crop")
            left, top = (img.width - w) // 2, (img.height - h) // 2
            img = img.crop((left, top, left + w, top + h))
            array = np.asarray(img, dtype=np.uint8)
            array = array[:, :, None] if array.ndim == 2 else array
            return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
        x = torch.as_tensor(self._timm()(img))
        return x.unsqueeze(0) if x.ndim == 2 else x

    def __call__(self, path: str | os.PathLike) -> torch.Tensor:
        """Read one image file: decode (`open_rgb`) and transform; uint8 [C, H, W]."""
        return self.apply(open_rgb(path, self.input_size[0]), path)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers rebuild the timm transform themselves
        return {k: v for k, v in self.__dict__.items() if k != "_built"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


# -------------------------------------------------------------------------------------------------- class folders

def class_folders(root: str | os.PathLike) -> list[str]:
    """The class folder names under `root`, sorted (numerically when every name is a number, else as text)."""
    names = [d.name for d in os.scandir(os.fspath(root)) if d.is_dir() and not d.name.startswith(".")]
    if names and all(n.isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def map_classes(folders: Sequence[str], classes: Sequence[str] | None, num_classes: int, where: str) -> dict[str, int]:
    """Label index of each class folder, against a model's class list.

    Folders named as entries of `classes` (ImageNet wnids, a run's training folders) map to their position
    there; otherwise, when every folder name is a non-negative integer below `num_classes`, the name is the
    index (ImageNetV2's layout). Raises `ValueError` listing the folders that fit neither rule.
    """
    position = {name: i for i, name in enumerate(classes or [])}
    if folders and all(f in position for f in folders):
        return {f: position[f] for f in folders}
    if folders and all(f.isdigit() for f in folders):
        too_big = [f for f in folders if int(f) >= num_classes]
        if not too_big:
            return {f: int(f) for f in folders}
        raise ValueError(f"{where}: numeric class folders are class indices, but {too_big[:5]} are >= the model's "
                         f"{num_classes} classes")
    unknown = [f for f in folders if f not in position]
    listed = f"{len(position)} names such as {list(position)[:3]}" if position else "no class names"
    raise ValueError(f"{where}: class folders {unknown[:8]}{' ...' if len(unknown) > 8 else ''} are not among the "
                     f"model's classes ({listed}). Name folders by the model's classes (ImageNet: wnids such as "
                     "n01440764) or by class index (0 .. num_classes - 1, as ImageNetV2)")


def list_images(root: str | os.PathLike, folders: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(folder, sorted image file names) per class folder, by file extension; no stat calls (cheap on big trees)."""
    out = []
    for folder in folders:
        names = sorted(e.name for e in os.scandir(Path(root) / folder)
                       if e.name.lower().endswith(IMAGE_EXTENSIONS) and not e.name.startswith("."))
        out.append((folder, names))
    return out


def listing_digest(listing: Sequence[tuple[str, Sequence[str]]]) -> str:
    """A cheap fingerprint of a folder tree's file list (relative paths, in order): part of a dataset's identity."""
    h = hashlib.sha1()
    for folder, names in listing:
        for name in names:
            h.update(f"{folder}/{name}\n".encode())
    return h.hexdigest()[:16]


__all__ = ["IMAGE_EXTENSIONS", "ImageError", "EvalTransform", "open_rgb", "to_rgb", "class_folders", "map_classes",
           "list_images", "listing_digest"]
