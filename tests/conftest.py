"""Shared fixtures: a quick trained run (trained once per test session) and small helpers."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quick.yaml"


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> Path:
    """configs/quick.yaml trained once (gen0, gen1) for tests that need real checkpoints."""
    from nst_core import load_config
    from nst_core.engine import run

    out = tmp_path_factory.mktemp("quick") / "run"
    run(load_config(QUICK), out, device="cpu", progress=False)
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for modules of many small ops: on shared cores OpenMP threads otherwise wait on each
    other (measured: 1.8 s instead of 0.015 s per forward when oversubscribed). Outputs do not change."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class NormalizedMLP(torch.nn.Module):
    """A Fashion-MNIST MLP taking [0, 1] images, normalisation inside (the only correct place for attacks)."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
        self.register_buffer("mean", torch.tensor(0.286).view(1, 1, 1, 1))
        self.register_buffer("std", torch.tensor(0.353).view(1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def train_fashion_mlp() -> torch.nn.Module:
    """The attack tests' model: NormalizedMLP, seed 0, 4 epochs of Adam (lr 3e-3, batch 100) on the first 3,000
    Fashion-MNIST training images; returned in eval mode (about 80 % top-1)."""
    from nst_core.data import FASHION_MNIST_FILES, find_fashion_mnist, read_idx

    root = find_fashion_mnist()
    x = torch.from_numpy(read_idx(root, FASHION_MNIST_FILES["train_images"])[:3000].copy()).float().div(255)
    y = torch.from_numpy(read_idx(root, FASHION_MNIST_FILES["train_labels"])[:3000].copy()).long()
    torch.manual_seed(0)
    model = NormalizedMLP()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):
        for i in range(0, len(x), 100):
            loss = torch.nn.functional.cross_entropy(model(x[i:i + 100, None]), y[i:i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
