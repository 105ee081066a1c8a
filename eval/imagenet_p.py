"""ImageNet-P reader: `<root>/<perturbation>/<wnid>/<name>.mp4` (noise difficulty 2, 3 in `<perturbation>_2`, `_3`).

Videos are decoded with PyAV into uint8 [T, C, H, W] frames; frames larger than the model's input are center-cropped
(never resized, as for ImageNet-C). A missing folder or an unreadable video is an error naming the path: skipping a
video would change the benchmark.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from eval.datasets import DatasetError, seeded_subset
from eval.metrics.perturbation import ALL_PERTURBATIONS, is_noise_perturbation

VIDEO_EXTENSIONS = (".mp4",)


def read_video(path: str | os.PathLike, channels: int = 3) -> torch.Tensor:
    """Every frame of a video as uint8 [T, C, H, W] (C = 3 RGB or 1 gray); errors name the file."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(f"{path} has no video stream")
            fmt = "rgb24" if channels == 3 else "gray"
            frames = [torch.from_numpy(frame.to_ndarray(format=fmt)) for frame in container.decode(video=0)]
    except DatasetError:
        raise
    except Exception as exc:  # PyAV raises FFmpeg errors of many types; name the file whatever it was
        raise DatasetError(f"cannot read video {path}: {exc}. Replace or delete the file; videos are never "
                           "skipped (that would change the benchmark)") from None
    if not frames:
        raise DatasetError(f"video {path} has no frames")
    video = torch.stack(frames)
    return video.permute(0, 3, 1, 2).contiguous() if video.ndim == 4 else video.unsqueeze(1)


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

    def __len__(self) -> int:
        return len(self.files)

    def read(self, position: int) -> torch.Tensor:
        """Sequence at `position`: uint8 [T, C, H, W] center-cropped to the input size."""
        c, h, w = self.input_size
        video = read_video(self.files[position], c)
        vh, vw = video.shape[-2:]
        if vh < h or vw < w:
            raise DatasetError(f"{self.files[position]} is {vw}x{vh}, smaller than the model's input {w}x{h}: "
                               "ImageNet-P frames are only center-cropped, never resized; generate the sequences at "
                               "this size instead (evaluate without --imagenet-p, with --val)")
        top, left = (vh - h) // 2, (vw - w) // 2
        return video[..., top:top + h, left:left + w]

    def batches(self, batch_size: int, workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 [B, T, C, H, W], int64 [B]) in order; a batch holds videos of equal length only."""
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


def imagenet_p_sequences(root: str | os.PathLike, perturbation: str, input_size: Sequence[int],
                         difficulty: int = 1, classes: Sequence[str] | None = None, limit: int | None = None,
                         seed: int = 0) -> VideoSequences:
    """The (seeded `limit` subset of the) videos of one perturbation; labels index `classes` (sorted wnids).

    Without `classes` the folder's own class folders are the class list only when there are 1000 of them (the full
    benchmark); otherwise labels are -1 (unknown) and frame accuracy is not computed.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"ImageNet-P root not found: {root}")
    folder = perturbation_folder(root, perturbation, difficulty)
    if not folder.is_dir():
        present = sorted(d.name for d in root.iterdir() if d.is_dir())
        raise DatasetError(f"ImageNet-P folder missing: {folder} (expected <root>/<perturbation>/<wnid>/*.mp4, "
                           f"difficulty 2/3 of noise in <perturbation>_2/_3; found: {', '.join(present) or 'none'}). "
                           "Complete the download, or choose perturbations to run")
    wnids = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not wnids:
        raise DatasetError(f"{folder} has no class folders (<wnid>/*.mp4)")
    if classes is None and len(wnids) == 1000:
        classes = wnids
    label_of = {w: i for i, w in enumerate(classes)} if classes is not None else {}
    unknown = sorted(set(wnids) - set(label_of)) if classes is not None else []
    if unknown:
        raise DatasetError(f"{folder} has class folders not in the model's class list: {unknown[:5]}")
    files: list[Path] = []
    labels: list[int] = []
    for wnid in wnids:
        found = sorted(p for p in (folder / wnid).iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
        files += found
        labels += [label_of.get(wnid, -1)] * len(found)
    if not files:
        raise DatasetError(f"no videos under {folder} (extensions {', '.join(VIDEO_EXTENSIONS)})")
    positions = seeded_subset(len(files), limit, seed)
    c, h, w = (int(v) for v in input_size)
    return VideoSequences(name="imagenet-p", folder=folder, files=[files[i] for i in positions.tolist()],
                          labels=torch.tensor(labels, dtype=torch.long)[positions], indices=positions,
                          input_size=(c, h, w))
