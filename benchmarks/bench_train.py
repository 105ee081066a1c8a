"""Engine overhead: training and pseudo-labeling throughput against bare PyTorch on the same model and batches.

    .venv/bin/python benchmarks/bench_train.py [--steps 30] [--batch 64] [--ratio 3]

Training: `nst_core.training.train_generation` (DataLoader over the pseudo-labeled set, soft-target loss, LR schedule,
per-epoch atomic state save) against a plain loop of forward / cross-entropy / backward / step over the same
labeled + unlabeled batches, the input noise off in both (RandAugment costs the same in either). Pseudo-labeling:
`nst_core.pseudo.predict_probs` against bare `model(x)` under inference_mode. Goal: both ratios >= 0.9.
Memory format: the engine with `train.channels_last` against the default (contiguous) layout, same batches; the
ratio is the speed-up the demo config takes.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nst_core.config import ModelSpec, config_from_dict
from nst_core.imagesets import ImageSet
from nst_core.models import NormalizedClassifier, create_model
from nst_core.pseudo import predict_probs
from nst_core.training import TrainSet, train_generation

SPEC = ModelSpec("test_efficientnet", {"depth_multiplier": 2.0, "channel_multiplier": 1.5})


def make_model(seed: int = 0) -> NormalizedClassifier:
    torch.manual_seed(seed)
    return NormalizedClassifier(create_model(SPEC, 10, 3, 0.2, 0.2), [0.5] * 3, [0.25] * 3)


def training_sets(steps: int, batch: int, ratio: int) -> tuple[TrainSet, TrainSet, torch.Tensor, ImageSet]:
    """Random labeled / unlabeled training sets for `steps` steps of `batch` + `batch * ratio` images."""
    n_lab, n_unl = batch * steps, batch * ratio * steps
    gen = torch.Generator().manual_seed(0)
    images = ImageSet(torch.randint(0, 10, (n_lab + n_unl,), generator=gen), 10, "bench",
                      images=torch.randint(0, 256, (n_lab + n_unl, 3, 32, 32), dtype=torch.uint8, generator=gen))
    targets = F.softmax(torch.randn(n_lab + n_unl, 10, generator=gen), 1)
    labeled = TrainSet(images, torch.arange(n_lab), targets[:n_lab])
    unlabeled = TrainSet(images, torch.arange(n_lab, n_lab + n_unl), targets[n_lab:])
    return labeled, unlabeled, targets, images


def engine_speed(steps: int, batch: int, ratio: int, channels_last: bool = False) -> float:
    """Images per second of `train_generation` over one epoch of `steps` steps."""
    labeled, unlabeled, _, _ = training_sets(steps, batch, ratio)
    cfg = config_from_dict({"name": "bench", "generations": 1, "models": [SPEC.arch],
                            "train": {"batch_size": batch, "unlabel_ratio": ratio, "epochs": 1,
                                      "channels_last": channels_last}})
    model = make_model()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train_generation(model, labeled, unlabeled, cfg, 1, 1, Path(tmp) / "state", torch.device("cpu"), progress=False)
        return steps * batch * (1 + ratio) / (time.perf_counter() - start)


def bench_training(steps: int, batch: int, ratio: int) -> tuple[float, float]:
    """Images per second: engine, plain loop."""
    _, _, targets, images = training_sets(steps, batch, ratio)
    n_lab, n_unl = batch * steps, batch * ratio * steps
    total = steps * batch * (1 + ratio)
    engine = engine_speed(steps, batch, ratio)

    model = make_model()
    model.train()
    defaults = config_from_dict({"name": "bench", "generations": 1, "models": [SPEC.arch]}).train
    opt = torch.optim.AdamW(model.model.parameters(), lr=defaults.lr, weight_decay=defaults.weight_decay)
    order_l, order_u = torch.randperm(n_lab), torch.randperm(n_unl) + n_lab
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.cat([order_l[step * batch:(step + 1) * batch], order_u[step * batch * ratio:(step + 1) * batch * ratio]])
        x = images.images[idx].float().div_(255)
        logits = model(x)
        loss = torch.sum(-targets[idx] * F.log_softmax(logits, -1), -1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    plain = total / (time.perf_counter() - start)
    return engine, plain


def bench_pseudo(n: int, batch: int) -> tuple[float, float]:
    """Images per second: predict_probs, bare model(x)."""
    images = ImageSet(torch.zeros(n), 10, "bench", images=torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8))
    model = make_model().eval()
    predict_probs(model, images.subset(range(batch)), batch_size=batch, progress=False)  # warm-up
    start = time.perf_counter()
    predict_probs(model, images, batch_size=batch, progress=False)
    engine = n / (time.perf_counter() - start)
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, n, batch):
            model(images.images[i:i + batch].float().div_(255))
    bare = n / (time.perf_counter() - start)
    return engine, bare


def median_by_ratio(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """The (project, baseline) pair whose ratio is the median of the repeats."""
    return sorted(runs, key=lambda r: r[0] / r[1])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--ratio", type=int, default=3)
    parser.add_argument("--pseudo-images", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"model: {SPEC.arch} {SPEC.kwargs}, 32x32 RGB; the run with the median ratio of {args.repeats}")
    train = median_by_ratio([bench_training(args.steps, args.batch, args.ratio) for _ in range(args.repeats)])
    pseudo = median_by_ratio([bench_pseudo(args.pseudo_images, 512) for _ in range(args.repeats)])
    layout = median_by_ratio([(engine_speed(args.steps, args.batch, args.ratio, channels_last=True),
                               engine_speed(args.steps, args.batch, args.ratio)) for _ in range(args.repeats)])
    print(f"training     : engine {train[0]:8.0f} img/s  plain loop {train[1]:8.0f} img/s  ratio {train[0] / train[1]:.3f} (goal >= 0.9)")
    print(f"pseudo-label : engine {pseudo[0]:8.0f} img/s  bare model {pseudo[1]:8.0f} img/s  ratio {pseudo[0] / pseudo[1]:.3f} (goal >= 0.9)")
    print(f"channels-last: engine {layout[0]:8.0f} img/s  contiguous {layout[1]:8.0f} img/s  speed-up {layout[0] / layout[1]:.3f}")


if __name__ == "__main__":
    main()
