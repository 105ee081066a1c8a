"""One generation's training: labeled and pseudo-labeled batches under the recipe's noise, resumable per epoch.

Every epoch re-seeds torch, NumPy and `random` from (seed, generation, epoch), and the state (model, optimizer,
EMA, history) is saved after each epoch as one file renamed once, stamped with what it belongs to
(`state_fingerprint`), so a run killed at any instant resumes to bit-identical weights and never from another
training's state. A NaN or infinite loss, or non-finite final weights, stop the generation (DivergedError).
Under torchrun the model is wrapped in DistributedDataParallel, each rank takes its DistributedSampler share of
the (global) batches and draws its own noise, and rank 0 writes the state that every rank resumes from.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, cast

import torch
import torch.nn.functional as F
from timm.data import rand_augment_transform
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from tqdm.auto import tqdm

from nst_common import distributed
from nst_common.errors import DivergedError
from nst_common.progress import Progress
from nst_common.seeding import derive_seed, seed_everything
from nst_core.checkpoint import resume_state, save_state
from nst_core.config import NoiseConfig, RunConfig, TrainConfig
from nst_core.imagesets import ImageSet
from nst_core.models import NormalizedClassifier

Augment = Callable[[torch.Tensor], torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, targets) -> scalar
ParamGroupFn = Callable[[torch.nn.Module], list[dict]]  # module -> optimizer parameter groups


def check_finite_loss(loss: float, where: str, lr_key: str = "train.lr") -> None:
    """Raise DivergedError when a step's loss is NaN or infinite (`where` names the generation, epoch, step)."""
    if not math.isfinite(loss):
        raise DivergedError(
            f"{where}: the loss is {loss}: training diverged, so this generation is stopped and no checkpoint "
            f"is written for it; lower {lr_key} (or check the data) and rerun (the same --out works when no "
            "generation had finished; else use another --out)"
        )


def check_finite_weights(module: torch.nn.Module, where: str, lr_key: str = "train.lr") -> None:
    """Raise DivergedError when any floating-point tensor of `module`'s state dict holds NaN or inf."""
    bad = [name for name, t in module.state_dict().items() if t.is_floating_point() and not bool(t.isfinite().all())]
    if bad:
        raise DivergedError(
            f"{where}: {len(bad)} of {len(module.state_dict())} weight tensors are not finite (e.g. {bad[0]}): "
            f"training diverged, so no checkpoint is written; lower {lr_key} and rerun (the same --out works "
            "when no generation had finished; else use another --out)"
        )


def state_fingerprint(cfg: RunConfig, generation: int, **shape: Any) -> dict[str, Any]:
    """What a training state belongs to: the config (SHA-256 of its JSON), the generation and the epoch plan;
    a state with another fingerprint is never resumed from."""
    text = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    return {"config_sha256": hashlib.sha256(text.encode()).hexdigest(), "generation": generation, **shape}


class TrainSet(Dataset):
    """Images picked from an ImageSet (duplicates allowed) with soft targets [M, K], optionally augmented."""

    def __init__(self, images: ImageSet, indices: torch.Tensor, targets: torch.Tensor, augment: Augment | None = None):
        if len(indices) != len(targets):
            raise ValueError(f"{len(indices)} indices but {len(targets)} targets")
        self.images, self.indices, self.targets, self.augment = images, indices, targets, augment

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, _ = self.images[int(self.indices[i])]
        if self.augment is not None:
            pixels = self.augment(pixels)
        return pixels, self.targets[i]


def build_augment(noise: NoiseConfig, mean: list[float]) -> Augment | None:
    """timm's RandAugment on uint8 [C, H, W] tensors (through PIL), or None when input noise is off."""
    if not noise.randaugment or noise.ra_magnitude <= 0 or noise.ra_ops <= 0:
        return None
    spec = f"rand-m{noise.ra_magnitude}-n{noise.ra_ops}-mstd{noise.ra_magnitude_std}-mmax{max(10, noise.ra_magnitude)}"
    fill = tuple(round(255 * m) for m in (mean if len(mean) == 3 else mean * 3))
    transform = rand_augment_transform(spec, {"img_mean": fill})

    def augment(pixels: torch.Tensor) -> torch.Tensor:
        grey = pixels.shape[0] == 1
        image = to_pil_image(pixels.expand(3, -1, -1) if grey else pixels)
        out = pil_to_tensor(transform(image))
        return out[:1] if grey else out

    return augment


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot targets with label smoothing (mass `smoothing` spread uniformly over all classes)."""
    return F.one_hot(labels, num_classes).float() * (1.0 - smoothing) + smoothing / num_classes


@dataclass
class Batches:
    """How one epoch is cut: steps, and images per step from each source."""

    steps: int
    labeled: int
    unlabeled: int


def plan_batches(cfg: RunConfig, n_labeled: int, n_unlabeled: int) -> Batches:
    """gen0: one pass over the labeled set; students: one pass over the pseudo-labeled set, labeled cycled."""
    labeled = min(cfg.train.batch_size, n_labeled)
    if n_unlabeled == 0:
        return Batches(steps=max(1, n_labeled // labeled), labeled=labeled, unlabeled=0)
    unlabeled = min(cfg.train.unlabel_ratio * cfg.train.batch_size, n_unlabeled)
    return Batches(steps=max(1, n_unlabeled // unlabeled), labeled=labeled, unlabeled=unlabeled)


def make_optimizer(module: torch.nn.Module, train: TrainConfig, steps_per_epoch: int, epochs: int,
                   lr: float | None = None, param_group_fn: ParamGroupFn | None = None,
                   ) -> tuple[torch.optim.Optimizer, CosineLRScheduler]:
    """timm's optimizer (`train.optimizer`) and a per-step cosine schedule with warm-up, at `lr` (default train.lr)."""
    lr = lr if lr is not None else train.lr
    optimizer = create_optimizer_v2(module, opt=train.optimizer, lr=lr, weight_decay=train.weight_decay,
                                    param_group_fn=param_group_fn)
    scheduler = CosineLRScheduler(optimizer, t_initial=max(1, epochs * steps_per_epoch), lr_min=lr * 0.01,
                                  warmup_t=round(train.warmup_epochs * steps_per_epoch), warmup_lr_init=lr * 0.01,
                                  t_in_epochs=False)
    return optimizer, scheduler


def train_generation(model: NormalizedClassifier, labeled: TrainSet, unlabeled: TrainSet | None, cfg: RunConfig,
                     generation: int, epochs: int, state_path: Path, device: torch.device,
                     progress: bool = True, losses: tuple[Loss, Loss] | None = None,
                     param_group_fn: ParamGroupFn | None = None) -> list[dict]:
    """Train `model` in place for `epochs`, resuming from `state_path`; returns the per-epoch history.

    `losses` are the (labeled, unlabeled) criteria on (logits, targets), soft-target cross-entropy by default;
    `param_group_fn` builds the optimizer's parameter groups (frozen backbone, discriminative learning rates).
    """
    train = cfg.train
    plan = plan_batches(cfg, len(labeled), len(unlabeled) if unlabeled is not None else 0)
    model.to(device)
    if train.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer, scheduler = make_optimizer(model.model, train, plan.steps, epochs, param_group_fn=param_group_fn)
    ema = (ModelEmaV3(model.model, decay=train.ema_decay, use_warmup=True)  # warm-up: short runs forget the init
           if train.ema_decay else None)
    labeled_loss, unlabeled_loss = losses or (SoftTargetCrossEntropy(), SoftTargetCrossEntropy())
    weight = train.unlabeled_weight if train.unlabeled_weight is not None else float(train.unlabel_ratio)

    start, history = 0, []
    fingerprint = state_fingerprint(cfg, generation, epochs=epochs, steps=plan.steps, labeled=len(labeled),
                                    unlabeled=len(unlabeled) if unlabeled is not None else 0,
                                    batch=[plan.labeled, plan.unlabeled])
    state = resume_state(state_path, fingerprint, log=_log)
    if state is not None:
        model.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
        start, history = state["epoch"], state["history"]
    net = distributed.wrap_model(model, device, train.sync_bn)  # DDP under torchrun, else `model` itself

    for epoch in range(start, epochs):
        seed = derive_seed(cfg.seed, "epoch", generation, epoch)
        seed_everything(distributed.rank_seed(seed))  # each rank its own noise; rank 0 the single-process seed
        labeled_batches = cycle_batches(labeled, plan.labeled, cfg.data.num_workers,
                                        shard_seed=derive_seed(seed, "labeled order"))
        unlabeled_batches = (cycle_batches(unlabeled, plan.unlabeled, cfg.data.num_workers,
                                           shard_seed=derive_seed(seed, "unlabeled order"))
                             if unlabeled is not None else None)
        model.train()
        loss_sum = 0.0
        bar = Progress(range(plan.steps), desc=f"gen{generation} epoch {epoch + 1}/{epochs}", unit="step",
                       enabled=progress, leave=False)
        for step in bar:
            global_step = epoch * plan.steps + step
            scheduler.step_update(global_step)
            x_l, y_l = next(labeled_batches)
            parts = [(x_l, y_l, 1.0, labeled_loss)]
            if unlabeled_batches is not None:
                x_u, y_u = next(unlabeled_batches)
                parts.append((x_u, y_u, weight, unlabeled_loss))
            loss = _step(net, optimizer, parts, device, train.amp, train.channels_last)
            check_finite_loss(loss, f"gen{generation} epoch {epoch + 1}/{epochs} step {step + 1}/{plan.steps}")
            if ema is not None:
                ema.update(model.model, step=global_step)
            loss_sum += loss
            bar.set_postfix(loss=f"{loss:.3f}")
        loss_sum = float(distributed.all_reduce(torch.tensor(loss_sum, dtype=torch.float64))) / distributed.world_size()
        history.append({"epoch": epoch + 1, "loss": round(loss_sum / plan.steps, 6),
                        "lr": round(optimizer.param_groups[0]["lr"], 8)})
        if distributed.is_main():  # one writer; every rank resumes from this file
            save_state(state_path, {"epoch": epoch + 1, "history": history, "model": model.model.state_dict(),
                                    "optimizer": optimizer.state_dict(),
                                    "ema": ema.module.state_dict() if ema is not None else {}}, fingerprint)
        distributed.barrier()
    if ema is not None:
        model.model.load_state_dict(ema.module.state_dict())
    check_finite_weights(model.model, f"gen{generation} after {epochs} epoch(s)")
    distributed.broadcast_state(model.model)  # every rank goes on with rank 0's (checkpointed) BatchNorm statistics
    model.eval()
    return history


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
          parts: list[tuple[torch.Tensor, torch.Tensor, float, Loss]], device: torch.device, amp: bool,
          channels_last: bool) -> float:
    """One update on the concatenated labeled + unlabeled batch; the loss is the weighted sum of both means."""
    sizes = [len(x) for x, *_ in parts]
    x = torch.cat([x for x, *_ in parts]).to(device, non_blocking=True).float().div_(255)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        logits = model(x).float()
    loss = cast(torch.Tensor, sum(w * loss_fn(chunk, y.to(device)) for chunk, (_, y, w, loss_fn) in
                                  zip(logits.split(sizes), parts)))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def cycle_batches(data: Dataset, batch_size: int, num_workers: int, shard_seed: int | None = None) -> Iterator:
    """Endless shuffled batches (drop_last), re-shuffling on every pass; seeded by the epoch's torch seed.

    Under torchrun, with `shard_seed`, every rank shuffles alike (DistributedSampler seeded from `shard_seed`,
    re-seeded per pass) and takes its share: `batch_size` is global, each rank gets batch_size // world_size.
    """
    if shard_seed is not None and distributed.is_distributed():
        seed = int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(shard_seed)))
        sampler: DistributedSampler[int] = DistributedSampler(data, shuffle=True, seed=seed, drop_last=True)
        loader = DataLoader(data, batch_size=distributed.split_batch(batch_size), sampler=sampler, drop_last=True,
                            num_workers=num_workers, persistent_workers=False)
        for rounds in itertools.count():
            sampler.set_epoch(rounds)
            yield from loader
    generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator,
                        num_workers=num_workers, persistent_workers=False)
    while True:
        yield from loader


@torch.inference_mode()
def evaluate_top1(model: torch.nn.Module, images: ImageSet, batch_size: int, device: torch.device) -> float:
    """Top-1 accuracy in percent on an ImageSet (model in eval mode)."""
    model.eval()
    correct = 0
    for pixels, labels in images.batches(batch_size, workers=0):
        logits = model(pixels.to(device).float().div_(255))
        correct += int((logits.argmax(1).cpu() == labels).sum())
    return round(100.0 * correct / max(1, len(images)), 4)


def _log(message: str) -> None:
    """A message line, printed by rank 0 only (through tqdm, so progress bars stay intact)."""
    if distributed.is_main():
        tqdm.write(message)
