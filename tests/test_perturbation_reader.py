"""The ImageNet-P mp4 reader on short videos written here with PyAV, and its errors."""
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.datasets import DataError
from eval.imagenet_p import imagenet_p_sequences, perturbation_folder, read_video, write_video

FRAMES, SIZE = 6, 48


def meta(size: int, classes: list[str] | None = None, num_classes: int = 3) -> dict:
    return {"input_size": [3, size, size], "classes": classes, "num_classes": num_classes}


def ramp_frames(offset: int = 0) -> np.ndarray:
    """Frames whose brightness grows by 30 per frame over a horizontal gradient."""
    gradient = np.linspace(0, 60, SIZE, dtype=np.float32)[None, None, :, None]
    levels = (np.arange(FRAMES, dtype=np.float32) * 30 + offset)[:, None, None, None]
    return np.broadcast_to(gradient + levels, (FRAMES, SIZE, SIZE, 3)).clip(0, 255).astype(np.uint8).copy()


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet-p")
    write_video(root / "rotate" / "n01" / "a.mp4", ramp_frames(0))
    write_video(root / "rotate" / "n02" / "b.mp4", ramp_frames(10))
    write_video(root / "gaussian_noise_2" / "n01" / "c.mp4", ramp_frames(20))
    return root


def test_read_video_decodes_every_frame(tree):
    video = read_video(tree / "rotate" / "n01" / "a.mp4")
    assert video.dtype == torch.uint8 and tuple(video.shape) == (FRAMES, 3, SIZE, SIZE)
    expected = torch.from_numpy(ramp_frames(0)).permute(0, 3, 1, 2).float()
    assert (video.float() - expected).abs().mean() < 3  # near-lossless H.264
    assert (video.float().mean(dim=(1, 2, 3)).diff() > 20).all()  # frames in order


def test_sequences_layout_labels_and_center_crop(tree):
    seqs = imagenet_p_sequences(tree, "rotate", meta(32, ["n01", "n02", "n03"]), method="crop")
    assert len(seqs) == 2 and seqs.labels.tolist() == [0, 1]
    batches = list(seqs.batches(batch_size=8))
    assert len(batches) == 1
    frames, labels = batches[0]
    assert tuple(frames.shape) == (2, FRAMES, 3, 32, 32) and labels.tolist() == [0, 1]
    full = read_video(tree / "rotate" / "n01" / "a.mp4")
    assert torch.equal(frames[0], full[..., 8:40, 8:40])
    unknown = imagenet_p_sequences(tree, "rotate", meta(32))  # a model without class names: labels unknown
    assert unknown.labels.tolist() == [-1, -1]
    resized = imagenet_p_sequences(tree, "rotate", meta(32, ["n01", "n02", "n03"]), method="resize")
    frames = resized.read(0)
    assert tuple(frames.shape) == (FRAMES, 3, 32, 32) and resized.identity != seqs.identity
    # the whole frame, shrunk: the left and right edges of the 0..60 gradient are still there
    assert int(frames[0, 0, 16, -1]) - int(frames[0, 0, 16, 0]) > 45


def test_sequences_map_classes_by_name_whatever_subset(tree):
    seqs = imagenet_p_sequences(tree, "rotate", meta(32, ["n00", "n01", "n02"]))
    assert seqs.labels.tolist() == [1, 2]
    with pytest.raises(DataError, match=r"\['n01', 'n02'\] are not among the model's classes"):
        imagenet_p_sequences(tree, "rotate", meta(32, ["cat", "dog"], 2))


def test_difficulty_folders():
    assert perturbation_folder("r", "gaussian_noise", 2) == Path("r/gaussian_noise_2")
    assert perturbation_folder("r", "rotate", 2) == Path("r/rotate")  # non-noise difficulty is a stride


def test_missing_folder_and_unreadable_video_are_named(tree, tmp_path):
    with pytest.raises(DataError, match="gaussian_noise_3"):
        imagenet_p_sequences(tree, "gaussian_noise", meta(32), difficulty=3)
    with pytest.raises(DataError, match="not found"):
        imagenet_p_sequences(tmp_path / "nowhere", "rotate", meta(32))
    bad = tmp_path / "p" / "rotate" / "n01" / "broken.mp4"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a video at all")
    seqs = imagenet_p_sequences(tmp_path / "p", "rotate", meta(32))
    with pytest.raises(DataError, match="broken.mp4"):
        next(seqs.batches(4))
    with pytest.raises(DataError, match="smaller than the model's input"):
        imagenet_p_sequences(tree, "rotate", meta(64)).read(0)
