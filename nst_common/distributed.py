"""Multi-process runs under torchrun: process group from the environment, sharding, and tensor collectives.

Without torchrun (no WORLD_SIZE in the environment, or WORLD_SIZE=1) nothing is initialised: every helper is a
no-op or the identity (`rank()` 0, `world_size()` 1, `is_main()` True), so the single-process path is unchanged.
Under torchrun the backend is NCCL on CUDA (each process on cuda:LOCAL_RANK) and gloo on the CPU. Only tensors
cross process boundaries: nothing is pickled (no `*_object` collectives).
"""
from __future__ import annotations

import math
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nst_common.errors import ConfigError
from nst_common.seeding import derive_seed


def init(timeout_minutes: float = 60.0) -> bool:
    """Join torchrun's process group (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); False when single-process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes))
    return True


def shutdown() -> None:
    """Leave the process group (after a final barrier) when one was joined."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 when single-process)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 when single-process)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0, the process that writes shared files and prints."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here (no-op when single-process)."""
    if is_distributed():
        if _backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def shard_indices(n: int, rank: int, world_size: int, pad: bool = True) -> torch.Tensor:
    """DistributedSampler's split of range(n) without shuffling: rank r gets r, r + w, r + 2w, ...

    With `pad` the range is first extended by its own head to a multiple of `world_size`, so every rank gets
    ceil(n / w) indices (some repeated: drop them when merging); without it the ranks' shards are disjoint.
    """
    total = math.ceil(n / world_size) * world_size if pad else n
    indices = torch.arange(total) % max(n, 1) if n else torch.arange(0)
    return indices[rank:total:world_size]


def split_batch(batch_size: int) -> int:
    """The per-process share of a global batch (the config's batch sizes are global): batch_size // world_size."""
    return max(1, batch_size // world_size())


def rank_seed(seed: int) -> int:
    """A seed of this rank's own (augmentation, dropout) from a shared one; rank 0 keeps `seed` unchanged."""
    return seed if rank() == 0 else derive_seed(seed, "rank", rank())


def all_reduce(tensor: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> torch.Tensor:
    """The element-wise reduction (sum by default) of `tensor` over all processes, on `tensor`'s device."""
    if not is_distributed():
        return tensor
    work = tensor.detach().to(_comm_device()).clone()
    dist.all_reduce(work, op=op)
    return work.to(tensor.device)


def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's `tensor` concatenated along dim 0 in rank order (first dims may differ between ranks)."""
    if not is_distributed():
        return tensor
    device = _comm_device()
    work = tensor.detach().to(device).contiguous()
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([work.shape[0]], dtype=torch.long, device=device))
    longest = int(max(s.item() for s in sizes))
    padded = work.new_zeros((longest, *work.shape[1:]))
    padded[: work.shape[0]] = work
    parts = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)]).to(tensor.device)


def broadcast_state(module: nn.Module) -> None:
    """Overwrite `module`'s parameters and buffers with rank 0's, in place."""
    if not is_distributed():
        return
    for tensor in module.state_dict().values():
        work = tensor.detach().to(_comm_device())
        dist.broadcast(work, src=0)
        if work.data_ptr() != tensor.data_ptr():
            tensor.copy_(work)


def wrap_model(module: nn.Module, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """DistributedDataParallel around `module` (BatchNorm made synchronous on request); `module` itself alone."""
    if not is_distributed():
        return module
    if sync_bn:
        if device.type != "cuda":
            raise ConfigError("train.sync_bn needs GPUs (PyTorch's SyncBatchNorm has no CPU kernel); set it false")
        from timm.layers import convert_sync_batchnorm  # keeps timm's fused BatchNorm + activation layers

        for name, child in module.named_children():
            module.add_module(name, convert_sync_batchnorm(child))
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def _backend() -> str:
    return dist.get_backend() if is_distributed() else "none"


def _comm_device() -> torch.device:
    """Where collectives run: the current GPU under NCCL, the CPU under gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if _backend() == "nccl" else torch.device("cpu")
