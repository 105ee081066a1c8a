"""torchrun with 2 gloo processes on the CPU: sharded pseudo-labels equal one process's, DDP training resumes.

One tiny ImageFolder run (4 classes, 32x32) is trained with `torchrun --nproc_per_node 2 -m nst_core.cli`; a
second one is killed after a training state is written and resumed, and must end with the same files.
"""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from torch.utils.data import DistributedSampler

from nst_common import distributed
from nst_core import load_config
from nst_common.files import write_tensors
from nst_core.data import prepare_data
from nst_core.engine import PSEUDO_FILE, pseudo_label
from nst_core.imagesets import ImageSet
from nst_core.models import load_model
from nst_core.pseudo_shards import SHARD_DIR, batch_shard, merge_shards, shard_file, sharded_probs

TINY = {
    "name": "tiny", "seed": 0, "generations": 2, "device": "cpu",
    "models": [{"arch": "test_efficientnet"}, {"arch": "test_efficientnet", "kwargs": {"channel_multiplier": 1.5}}],
    "data": {"dataset": "imagefolder", "labeled_per_class": 4, "input_size": [3, 32, 32]},
    "noise": {"ra_magnitude": 5, "dropout": 0.2, "drop_path": 0.1},
    "pseudo": {"min_threshold": 0.0, "batch_size": 7},  # 7: the pool (24 images) ends in a short batch
    "train": {"epochs": 6, "student_epochs": 2, "batch_size": 8, "unlabel_ratio": 1, "lr": 0.003},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    """`torchrun --nproc_per_node 2 <args>` in its own process group (so a kill reaches the workers)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True, cwd=cwd)


def nst_train(config: Path, out: Path) -> subprocess.Popen:
    return torchrun("-m", "nst_core.cli", "--config", str(config), "--out", str(out), "--quiet")


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    """An ImageFolder tree (train: 4 classes x 10, test: 4 x 2, colour-coded noise) and a run config on it."""
    root = tmp_path_factory.mktemp("tiny")
    gen = torch.Generator().manual_seed(0)
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
    for split, count in (("train", 10), ("test", 2)):
        for c, colour in enumerate(colours):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(count):
                noise = torch.randint(-40, 41, (36, 36, 3), generator=gen)
                pixels = (torch.tensor(colour) + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / f"c{c}" / f"{i}.png")
    cfg = {**TINY, "data": {**TINY["data"], "data_dir": str(root / "train"), "test_dir": str(root / "test")}}
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def two_rank_run(tiny_config, tmp_path_factory) -> Path:
    """The tiny run trained by 2 processes, uninterrupted."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    job = nst_train(tiny_config, out)
    assert job.wait(timeout=300) == 0, job.stdout.read()
    return out


def test_shards_follow_distributed_sampler():
    for n in (1, 5, 8, 13):
        for world in (1, 2, 3):
            for rank in range(world):
                expected = list(DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False))
                assert distributed.shard_indices(n, rank, world).tolist() == expected
    assert distributed.shard_indices(5, 1, 2, pad=False).tolist() == [1, 3]


def test_batch_shards_keep_single_process_batches(tmp_path):
    n, batch, world = 23, 5, 3
    batches = [list(range(s, min(s + batch, n))) for s in range(0, n, batch)]
    paths = []
    for rank in range(world):
        indices = batch_shard(n, batch, rank, world)
        assert all(chunk in batches for chunk in indices.split(batch) for chunk in [chunk.tolist()])
        paths.append(shard_file(tmp_path, rank, world))
        write_tensors(paths[-1], {"indices": indices, "probs": indices.float().unsqueeze(1).repeat(1, 2)})
    assert torch.equal(merge_shards(paths, n)[:, 0], torch.arange(n).float())


def test_restarted_rank_skips_its_written_shard(tmp_path, monkeypatch):
    """Rank 0 of 2 whose shard file is there (and rank 1's): merged from the files, the model never called."""
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "barrier", lambda: None)
    n, batch = 10, 3
    for rank in range(2):
        indices = batch_shard(n, batch, rank, 2)
        write_tensors(shard_file(tmp_path, rank, 2), {"indices": indices, "probs": indices.float().view(-1, 1)})

    def never(_):
        raise AssertionError("a written shard was labeled again")

    images = ImageSet(torch.zeros(n, dtype=torch.long), 1, "pool", images=torch.zeros(n, 1, 2, 2, dtype=torch.uint8))
    probs = sharded_probs(never, images, tmp_path, batch_size=batch, progress=False)
    assert torch.equal(probs.flatten(), torch.arange(n).float())


def test_single_process_helpers_are_identities():
    x = torch.arange(6.0)
    module = torch.nn.Linear(2, 2)
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.all_reduce(x) is x and distributed.all_gather(x) is x
    assert distributed.wrap_model(module, torch.device("cpu")) is module
    assert distributed.split_batch(8) == 8 and distributed.rank_seed(5) == 5
    assert distributed.init() is False


def test_two_ranks_pseudo_label_like_one(two_rank_run, tiny_config, tmp_path):
    """The merged pseudo_labels.safetensors (and the selection in pseudo_labels.json) equal one process's."""
    cfg = load_config(tiny_config)
    teacher, _ = load_model(two_rank_run / "gen0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the torchrun workers (OMP_NUM_THREADS=1)
    try:
        pseudo_label(cfg, 1, prepare_data(cfg.data, cfg.seed), teacher, tmp_path, torch.device("cpu"), progress=False)
    finally:
        torch.set_num_threads(threads)
    for name in (PSEUDO_FILE, "pseudo_labels.json"):
        assert (two_rank_run / "gen1" / name).read_bytes() == (tmp_path / name).read_bytes(), name
    assert not (two_rank_run / "gen1" / SHARD_DIR).exists()


def test_two_rank_training_checkpoints_and_resumes(two_rank_run, tiny_config, tmp_path):
    """Killed after an epoch's state is written, the 2-rank job resumes to byte-identical checkpoints."""
    out = tmp_path / "run"
    job = nst_train(tiny_config, out)
    deadline = time.time() + 240
    while job.poll() is None and time.time() < deadline and not list(out.glob("gen*/train_state.safetensors")):
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)
    assert job.wait() == -signal.SIGKILL, "the job ended before it could be killed mid-run"
    resumed = nst_train(tiny_config, out)
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    for k in (0, 1):
        for name in ("model.safetensors", "meta.json"):
            a = (two_rank_run / f"gen{k}" / name).read_bytes()
            assert a == (out / f"gen{k}" / name).read_bytes(), f"gen{k}/{name} differs after resume"
    assert not list(out.glob("gen*/train_state.*"))
