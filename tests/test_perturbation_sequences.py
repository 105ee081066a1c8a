"""ImageNet-P-style sequence generation: frame counts, clean frames, monotone parameters, seeding, cache, strip."""
import numpy as np
import pytest
import torch

from eval.corruptions.perturbations import (
    cached_sequences,
    example_frames,
    frame_parameters,
    generate_sequences,
    num_frames,
)
from eval.corruptions.catalog import ALL_PERTURBATIONS, EVALUATED_PERTURBATIONS, EXTRA_PERTURBATIONS

# where a frame must equal the clean image exactly
CLEAN_FRAME = {"gaussian_noise": 0, "shot_noise": 0, "speckle_noise": 0, "zoom_blur": 0, "brightness": 15,
               "translate": 20, "rotate": 15, "shear": 15, "scale": 24}
RANDOM = {"gaussian_noise", "shot_noise", "speckle_noise", "snow", "spatter"}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Two 32x32 RGB images: a textured object on a dark background (Fashion-MNIST-like)."""
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    blob = (((yy - 16) ** 2 + (xx - 14) ** 2) < 80).float()
    base = blob * (120 + 100 * torch.rand(3, 32, 32, generator=gen))
    return torch.stack([base, base.flip(-1)]).round().to(torch.uint8)


@pytest.fixture(scope="module")
def sequences(images) -> dict[str, torch.Tensor]:
    return {p: generate_sequences(images, p, keys=[3, 7], seed=1) for p in ALL_PERTURBATIONS}


def test_lists_match_the_benchmark():
    assert len(EVALUATED_PERTURBATIONS) == 10 and len(EXTRA_PERTURBATIONS) == 4


@pytest.mark.parametrize("perturbation", ALL_PERTURBATIONS)
def test_shape_clean_frame_and_determinism(perturbation, images, sequences):
    seq = sequences[perturbation]
    frames = 41 if perturbation == "translate" else 31
    assert num_frames(perturbation) == frames
    assert seq.dtype == torch.uint8 and tuple(seq.shape) == (2, frames, 3, 32, 32)
    if perturbation in CLEAN_FRAME:
        assert torch.equal(seq[:, CLEAN_FRAME[perturbation]], images)
    assert not torch.equal(seq[:, 0], seq[:, -1])  # the sequence moves
    again = generate_sequences(images, perturbation, keys=[3, 7], seed=1)
    assert torch.equal(again, seq)
    alone = generate_sequences(images[1:], perturbation, keys=[7], seed=1)  # batch composition does not matter
    assert torch.equal(alone[0], seq[1])
    if perturbation in RANDOM:
        assert not torch.equal(generate_sequences(images, perturbation, keys=[3, 7], seed=2), seq)


@pytest.mark.parametrize("perturbation", [p for p in ALL_PERTURBATIONS if "noise" not in p])
def test_parameter_moves_monotonically_in_small_steps(perturbation):
    params = np.asarray(frame_parameters(perturbation))
    steps = np.diff(params)
    assert (steps > 0).all() and np.allclose(steps, steps[0])


def test_noise_levels_grow_with_difficulty(images):
    spread = []
    for difficulty in (1, 2, 3):
        assert frame_parameters("gaussian_noise", difficulty)[0] == 0.0
        seq = generate_sequences(images, "gaussian_noise", keys=[0, 1], seed=0, difficulty=difficulty)
        spread.append((seq[:, 1:].float() - images[:, None].float()).abs().mean().item())
    assert spread[0] < spread[1] < spread[2]


def test_frames_follow_their_parameter(images, sequences):
    def centroid_x(frames: torch.Tensor) -> torch.Tensor:
        mass = frames.float().sum(dim=(1, 2))  # [T, W]
        return (mass * torch.arange(frames.shape[-1])).sum(-1) / mass.sum(-1)

    assert (centroid_x(sequences["translate"][0]).diff() > 0).all()  # shifts right frame by frame
    brightness = sequences["brightness"][0].float().mean(dim=(1, 2, 3))
    assert (brightness.diff() >= 0).all() and brightness[-1] > brightness[0]
    area = (sequences["scale"][0] > 0).float().sum(dim=(1, 2, 3))
    assert (area.diff() >= 0).all() and area[-1] > area[0]
    drift = (sequences["zoom_blur"][0].float() - images[0].float()).abs().mean(dim=(1, 2, 3))
    assert drift[-1] > drift[1] > 0


def test_bad_input_fails_clearly(images):
    with pytest.raises(ValueError, match="unknown perturbation"):
        generate_sequences(images, "fog", keys=[0, 1])
    with pytest.raises(ValueError, match="one key per image"):
        generate_sequences(images, "rotate", keys=[0])
    with pytest.raises(ValueError, match="difficulty"):
        generate_sequences(images, "shot_noise", keys=[0, 1], difficulty=4)


def test_cache_roundtrip(tmp_path, images):
    first = cached_sequences(images, "shot_noise", [3, 7], seed=1, cache_dir=tmp_path)
    files = list(tmp_path.rglob("*.npy"))
    assert len(files) == 1
    assert torch.equal(cached_sequences(images, "shot_noise", [3, 7], seed=1, cache_dir=tmp_path), first)
    assert torch.equal(first, generate_sequences(images, "shot_noise", [3, 7], seed=1))
    cached_sequences(images, "shot_noise", [3, 8], seed=1, cache_dir=tmp_path)  # other keys: another entry
    assert len(list(tmp_path.rglob("*.npy"))) == 2


def test_example_frames_pick_evenly_spaced_frames_of_each_sequence(images):
    frames, index = example_frames(images[0], perturbations=["rotate", "translate", "gaussian_noise"], columns=4)
    assert frames.dtype == torch.uint8 and frames.shape == (3, 4, 3, 32, 32)
    assert index == [[0, 10, 20, 30], [0, 13, 27, 40], [0, 10, 20, 30]]  # translate has 41 frames
    rotate = generate_sequences(images[:1], "rotate", [0])[0]
    assert torch.equal(frames[0], rotate[[0, 10, 20, 30]])
    assert torch.equal(frames[2, 0], images[0])  # a noise sequence starts with the clean image
    gray, _ = example_frames(images[0, :1], perturbations=["brightness"], columns=3)
    assert gray.shape == (1, 3, 1, 32, 32)


def test_damaged_cache_file_is_regenerated(tmp_path, images):
    first = cached_sequences(images, "rotate", [0, 1], cache_dir=tmp_path)
    (path,) = tmp_path.rglob("*.npy")
    path.write_bytes(b"truncated")
    assert torch.equal(cached_sequences(images, "rotate", [0, 1], cache_dir=tmp_path), first)


def test_shot_noise_frames_are_poisson_counts():
    """Frames 1.. of shot_noise are Poisson(x * L) / L: mean x and variance x / L per pixel (x in [0, 1])."""
    value, lam = 128, 60.0  # difficulty 3
    images = torch.full((2, 3, 32, 32), value, dtype=torch.uint8)
    seq = generate_sequences(images, "shot_noise", keys=[0, 1], seed=0, difficulty=3, device="cpu")
    counts = seq[:, 1:].double() / 255 * lam  # back to counts (frames round counts / L * 255)
    x = value / 255
    assert abs(float(counts.mean()) / lam - x) < 0.01
    assert abs(float(counts.var()) / (x * lam) - 1) < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sequences_generate_on_cuda(images):
    for perturbation in ALL_PERTURBATIONS:
        seq = generate_sequences(images, perturbation, keys=[3, 7], seed=1, device="cuda")
        assert seq.device.type == "cuda" and seq.shape[0] == 2
        alone = generate_sequences(images[1:], perturbation, keys=[7], seed=1, device="cuda")
        assert torch.equal(alone[0], seq[1])
