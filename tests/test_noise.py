"""Each noise switch really acts: RandAugment changes inputs; dropout and drop path change train-mode outputs only."""
import torch

from nst_core.config import ModelSpec, NoiseConfig
from nst_core.models import create_model
from nst_core.training import build_augment, smooth_one_hot

# a smooth image with structure (a gradient plus a square), as RandAugment's ops are meant for
IMAGE = (torch.linspace(0, 200, 32).view(1, 1, 32) + torch.zeros(3, 32, 1)).to(torch.uint8)
IMAGE[:, 8:20, 10:24] = 255


def test_randaugment_changes_inputs_and_off_switch_is_identity():
    augment = build_augment(NoiseConfig(ra_magnitude=9), [0.5, 0.5, 0.5])
    torch.manual_seed(0)
    import random

    random.seed(0)
    outs = [augment(IMAGE) for _ in range(64)]
    assert all(o.shape == IMAGE.shape and o.dtype == torch.uint8 for o in outs)
    changed = sum(not torch.equal(o, IMAGE) for o in outs)
    # timm applies each of the 2 ops with probability 0.5: about 3/4 of the images change
    assert 32 <= changed <= 60
    assert max((o.float() - IMAGE.float()).abs().mean() for o in outs) > 10
    assert build_augment(NoiseConfig(randaugment=False), [0.5] * 3) is None
    assert build_augment(NoiseConfig(ra_magnitude=0), [0.5] * 3) is None


def test_randaugment_on_grey_images_keeps_one_channel():
    augment = build_augment(NoiseConfig(), [0.5])
    assert augment(IMAGE[:1]).shape == (1, 32, 32)


def _outputs(drop_rate, drop_path_rate, train):
    torch.manual_seed(0)
    model = create_model(ModelSpec("test_efficientnet", {"depth_multiplier": 2.0}), 10, 3, drop_rate, drop_path_rate)
    model.train(train)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.manual_seed(2)
        a = model(x)
        torch.manual_seed(3)
        b = model(x)
    return a, b


def test_dropout_acts_in_train_mode_only():
    a, b = _outputs(0.5, 0.0, train=True)
    assert not torch.allclose(a, b)
    a, b = _outputs(0.5, 0.0, train=False)
    assert torch.equal(a, b)


def test_drop_path_acts_in_train_mode_only():
    a, b = _outputs(0.0, 0.5, train=True)
    assert not torch.allclose(a, b)
    a, b = _outputs(0.0, 0.5, train=False)
    assert torch.equal(a, b)


def test_no_model_noise_is_deterministic_in_train_mode():
    # BatchNorm uses batch statistics in train mode, but without dropout / drop path two passes agree
    a, b = _outputs(0.0, 0.0, train=True)
    assert torch.allclose(a, b)


def test_label_smoothing():
    t = smooth_one_hot(torch.tensor([1]), 4, 0.1)
    assert torch.allclose(t, torch.tensor([[0.025, 0.925, 0.025, 0.025]]))


def test_ema_warms_up_so_a_short_run_does_not_keep_the_random_init(tmp_path):
    """timm's EMA warm-up: the decay grows from 0, so after 20 steps at decay 0.9999 the EMA weights sit near the
    trained weights, not near the first step's (as a fixed 0.9999 would leave them)."""
    from pathlib import Path

    from nst_core import load_config
    from nst_core.imagesets import ImageSet
    from nst_core.models import NormalizedClassifier
    from nst_core.training import TrainSet, train_generation

    n = 20 * 16
    images = ImageSet(torch.arange(n) % 10, 10, "toy", images=IMAGE.expand(n, -1, -1, -1).clone())
    labeled = TrainSet(images, torch.arange(n), smooth_one_hot(images.labels, 10, 0.0))
    config = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"
    weights = {}
    for ema in (None, 0.9999):
        cfg = load_config(config, {"train.ema_decay": ema, "train.batch_size": 16, "noise.randaugment": False})
        torch.manual_seed(0)
        model = NormalizedClassifier(create_model(ModelSpec("test_efficientnet", {}), 10, 3), [0.5] * 3, [0.5] * 3)
        initial = model.model.conv_stem.weight.detach().clone()
        train_generation(model, labeled, None, cfg, 0, 1, tmp_path / f"state{ema}", torch.device("cpu"), False)
        weights[ema] = model.model.conv_stem.weight.detach()
    trained, averaged = weights[None], weights[0.9999]
    assert (averaged - trained).norm() < 0.5 * (initial - trained).norm()
