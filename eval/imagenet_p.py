"""ImageNet-P reader: `<root>/<perturbation>/<wnid>/<name>.mp4` (noise difficulty 2, 3 in `<perturbation>_2`, `_3`).

Videos are decoded with PyAV into uint8 [T, C, H, W] frames; for a 224-px model they are center-cropped (never
resized, as for ImageNet-C), for other sizes resized to the model's input (`method="resize"`, its own dataset name). A missing folder or an unreadable video is an error naming the path: skipping a
video would change the benchmark.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hashlib
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from eval.datasets import DataError, model_classes, seeded_subset
from eval.corruptions.catalog import ALL_PERTURBATIONS
from eval.metrics.perturbation import is_noise_perturbation
from nst_core.images import class_folders, listing_digest, map_classes
from nst_core.imagesets import default_workers

VIDEO_EXTENSIONS = (".mp4",)


def read_video(path: str | os.PathLike, channels: int = 3) -> torch.Tensor:
    """Every frame of a video as uint8 [T, C, H, W] (C = 3 RGB or 1 gray); errors name the file."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path} has no video stream")
            fmt = "rgb24" if channels == 3 else "gray"
            frames = [torch.from_numpy(frame.to_ndarray(format=fmt)) for frame in container.decode(video=0)]
    except DataError:
        raise
    except Exception as exc:  # PyAV raises FFmpeg errors of many types; name the file whatever it was
        raise DataError(f"cannot read video {path}: {exc}. Replace or delete the file; videos are never "
                           "skipped (that would change the benchmark)") from None
    if not frames:
        raise DataError(f"video {path} has no frames")
    video = torch.stack(frames)
    return video.permute(0, 3, 1, 2).contiguous() if video.ndim == 4 else video.unsqueeze(1)


def write_video(path: str | os.PathLike, frames: "np.ndarray | torch.Tensor") -> None:
    """Write uint8 frames [T, H, W, 3] as a lossless H.264 mp4 (yuv444p, crf 0): ImageNet-P's container, e.g. for
    sequences made with `eval.corruptions.perturbations.generate_sequences` (permuted to [T, H, W, C])."""
    import av

    array = np.ascontiguousarray(torch.as_tensor(frames).numpy(), dtype=np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.width, stream.height = array.shape[2], array.shape[1]
        stream.pix_fmt = "yuv444p"
        stream.options = {"crf": "0"}
        for frame in array:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def perturbation_folder(root: str | os.PathLike, perturbation: str, difficulty: int = 1) -> Path:
    """The folder of one perturbation: `<perturbation>` or, for noise at difficulty 2/3, `<perturbation>_<d>`."""
    if perturbation not in ALL_PERTURBATIONS:
        raise ValueError(f"unknown perturbation {perturbation!r}; valid: {', '.join(ALL_PERTURBATIONS)}")
    if difficulty not in (1, 2, 3):
        raise ValueError(f"invalid difficulty {difficulty!r}; valid: 1, 2, 3")
    suffix = f"_{difficulty}" if difficulty > 1 and is_noise_perturbation(perturbation) else ""
    return Path(root) / f"{perturbation}{suffix}"


@dataclass
class VideoSequences:
    """The videos of one ImageNet-P perturbation folder with labels (-1 where the class list is unknown)."""

    name: str
    folder: Path
    files: list[Path]
    labels: torch.Tensor
    indices: torch.Tensor
    input_size: tuple[int, int, int]
    method: str = "crop"  # crop: center crop (exact at 224 px); resize: the frames resized to the input size
    interpolation: str = "bilinear"
    identity: str = ""  # the exact sequences (file list, class mapping, method, size, subset): cells' data_id

    def __len__(self) -> int:
        return len(self.files)

    def read(self, position: int) -> torch.Tensor:
        """Sequence at `position`: uint8 [T, C, H, W] center-cropped (or resized) to the input size."""
        c, h, w = self.input_size
        video = read_video(self.files[position], c)
        vh, vw = video.shape[-2:]
        if self.method == "resize":
            if (vh, vw) == (h, w):
                return video
            mode = "bicubic" if self.interpolation == "bicubic" else "bilinear"
            out = F.interpolate(video.float(), size=(h, w), mode=mode, antialias=True, align_corners=False)
            return out.round_().clamp_(0, 255).to(torch.uint8)
        if vh < h or vw < w:
            raise DataError(f"{self.files[position]} is {vw}x{vh}, smaller than the model's input {w}x{h}: "
                               "ImageNet-P frames are only center-cropped, never resized; generate the sequences at "
                               "this size instead (evaluate without --imagenet-p, with --val)")
        top, left = (vh - h) // 2, (vw - w) // 2
        return video[..., top:top + h, left:left + w]

    def batches(self, batch_size: int, workers: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 [B, T, C, H, W], int64 [B]) in order; a batch holds videos of equal length only. `workers`
        None: `nst_core.imagesets.default_workers`, a video counting as its 31 frames."""
        workers = default_workers(31 * len(self)) if workers is None else workers
        loader = DataLoader(_Videos(self), batch_size=None, shuffle=False, num_workers=workers)
        videos: list[torch.Tensor] = []
        labels: list[torch.Tensor] = []
        for video, label in loader:
            if videos and (len(videos) == batch_size or video.shape != videos[0].shape):
                yield torch.stack(videos), torch.stack(labels)
                videos, labels = [], []
            videos.append(video)
            labels.append(label)
        if videos:
            yield torch.stack(videos), torch.stack(labels)


class _Videos(Dataset):
    def __init__(self, sequences: VideoSequences) -> None:
        self.sequences = sequences

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sequences.read(i), self.sequences.labels[i]


def imagenet_p_sequences(root: str | os.PathLike, perturbation: str, meta: Mapping[str, Any], difficulty: int = 1,
                         limit: int | None = None, seed: int = 0, method: str = "crop") -> VideoSequences:
    """The (seeded `limit` subset of the) videos of one perturbation, class folders mapped by name against the
    model's class list (`nst_core.images.map_classes`; labels -1 when the model has no class names and the
    folders are not class indices, and frame accuracy is then not computed). `method`: `crop` (center crop, exact
    at 224 px) or `resize` (the 224 frames resized to the model's input with its interpolation)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"ImageNet-P root not found: {root}")
    folder = perturbation_folder(root, perturbation, difficulty)
    if not folder.is_dir():
        present = sorted(d.name for d in root.iterdir() if d.is_dir())
        raise DataError(f"ImageNet-P folder missing: {folder} (expected <root>/<perturbation>/<wnid>/*.mp4, "
                        f"difficulty 2/3 of noise in <perturbation>_2/_3; found: {', '.join(present) or 'none'}). "
                        "Complete the download, or name the perturbations to run with --perturbations")
    folders = class_folders(folder)
    if not folders:
        raise DataError(f"{folder} has no class folders (<wnid>/*.mp4)")
    try:
        label_of = map_classes(folders, model_classes(meta), int(meta.get("num_classes") or 0),
                               f"ImageNet-P {folder}")
    except ValueError as exc:
        if model_classes(meta) or any(f.isdigit() for f in folders):
            raise DataError(str(exc)) from None
        label_of = {}
    files: list[Path] = []
    labels: list[int] = []
    listing = []
    for wnid in folders:
        names = sorted(e.name for e in os.scandir(folder / wnid) if e.name.lower().endswith(VIDEO_EXTENSIONS))
        listing.append((wnid, names))
        files += [folder / wnid / n for n in names]
        labels += [label_of.get(wnid, -1)] * len(names)
    if not files:
        raise DataError(f"no videos under {folder} (extensions {', '.join(VIDEO_EXTENSIONS)})")
    if method not in ("crop", "resize"):
        raise ValueError(f"unknown ImageNet-P method {method!r}; valid: crop, resize")
    positions = seeded_subset(len(files), limit, seed)
    c, h, w = (int(v) for v in meta["input_size"])
    interpolation = str(meta.get("interpolation") or "bilinear")
    h_ = hashlib.sha1(f"{folder.resolve()}|{listing_digest(listing)}|{sorted(label_of.items())}|{method}|{c}x{h}x{w}|"
                      f"{interpolation if method == 'resize' else ''}".encode())
    h_.update(positions.numpy().tobytes())
    return VideoSequences(name="imagenet-p", folder=folder, files=[files[i] for i in positions.tolist()],
                          labels=torch.tensor(labels, dtype=torch.long)[positions], indices=positions,
                          input_size=(c, h, w), method=method, interpolation=interpolation,
                          identity=h_.hexdigest()[:16])
