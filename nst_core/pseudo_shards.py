"""Sharded pseudo-labeling under torchrun: each rank labels its own batches of the pool into its own shard file.

The pool is cut into the same consecutive batches of `pseudo.batch_size` images as in one process, and the batch
numbers are split between the ranks the way DistributedSampler splits indices (padded by repeating the first
batches), so every image is labeled in exactly the batch it would have been in alone: the merged probabilities,
and so the filtered, balanced selection, are bit-identical to the single-process ones. A shard file
`rank<r>-of-<w>.safetensors` holds the pool indices and their probabilities; it is written atomically, and a
restarted job with the same world size skips the shards already there. The run directory must be shared by all
ranks (as it is for checkpoints).
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import torch
from torch import nn

from nst_common import distributed
from nst_common.errors import CheckpointError
from nst_common.files import read_tensors, write_tensors
from nst_core.imagesets import ImageSet
from nst_core.pseudo import predict_probs

SHARD_DIR = "pseudo_shards"


def shard_file(directory: Path, rank: int, world_size: int) -> Path:
    """The shard file of one rank in a job of `world_size` ranks."""
    return Path(directory) / f"rank{rank}-of-{world_size}.safetensors"


def batch_shard(n: int, batch_size: int, rank: int, world_size: int) -> torch.Tensor:
    """The pool indices of rank `rank`: whole batches [b * bs, (b + 1) * bs), batches split as DistributedSampler.

    Only the pool's last (short) batch can be short, and it is always the last of its rank's batches, so cutting
    the returned indices into `batch_size` chunks gives back exactly the single-process batches.
    """
    batches = distributed.shard_indices(math.ceil(n / batch_size), rank, world_size, pad=True)
    spans = [torch.arange(b * batch_size, min((b + 1) * batch_size, n)) for b in batches.tolist()]
    return torch.cat(spans) if spans else torch.empty(0, dtype=torch.long)


def merge_shards(paths: list[Path], n: int) -> torch.Tensor:
    """Probabilities [n, K] ordered by pool index from shard files, the padding duplicates dropped."""
    parts = [read_tensors(path) for path in paths]
    indices = torch.cat([part["indices"] for part in parts])
    probs = torch.cat([part["probs"] for part in parts])
    indices, order = indices.sort(stable=True)
    first = torch.ones_like(indices, dtype=torch.bool)
    first[1:] = indices[1:] != indices[:-1]
    indices, probs = indices[first], probs[order[first]]
    if not torch.equal(indices, torch.arange(n)):
        raise CheckpointError(f"the shards {[str(p) for p in paths]} do not cover the {n} pool images; delete them")
    return probs


def sharded_probs(model: nn.Module, images: ImageSet, shard_dir: Path, temperature: float = 1.0,
                  batch_size: int = 512, device: str | torch.device = "cpu", noised: bool = False,
                  amp: bool = False, progress: bool = True) -> torch.Tensor:
    """`predict_probs` of the whole pool; under torchrun each rank labels its shard, and all return the merge."""
    rank, world = distributed.rank(), distributed.world_size()
    if world == 1:
        return predict_probs(model, images, temperature, batch_size, device, noised=noised, amp=amp,
                             progress=progress)
    path = shard_file(shard_dir, rank, world)
    if not path.is_file():
        indices = batch_shard(len(images), batch_size, rank, world)
        probs = predict_probs(model, images.subset(indices), temperature, batch_size, device, noised=noised,
                              amp=amp, progress=progress and distributed.is_main())
        write_tensors(path, {"indices": indices, "probs": probs})
    distributed.barrier()
    return merge_shards([shard_file(shard_dir, r, world) for r in range(world)], len(images))


def discard_shards(shard_dir: Path) -> None:
    """Once every rank has merged (and the merged file is written), rank 0 deletes the shard files."""
    distributed.barrier()
    if distributed.is_main() and Path(shard_dir).is_dir():
        shutil.rmtree(shard_dir)
