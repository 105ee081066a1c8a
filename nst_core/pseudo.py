"""Pseudo labels: the un-noised teacher labels the unlabeled pool; labels are filtered by confidence and balanced.

Filtering and balancing follow the official Noisy Student code: per class (the teacher's top-1), images below
`min_threshold` are dropped; with balancing, a class keeps at most its `per_class` most confident images (so the
effective threshold rises above the floor for over-full classes), and the kept images are written
per_class / kept times each, the fractional part drawn at random without replacement, so every class that kept
anything ends with exactly `per_class` entries (under-full classes duplicated, over-full ones thinned).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nst_common.files import read_tensors, write_tensors
from nst_common.progress import Progress
from nst_core.imagesets import ImageSet


@dataclass
class Selection:
    """Which pool images train the student, how often each, and the per-class counts along the way."""

    indices: torch.Tensor  # into the pool, repeated for duplicates, sorted
    before: list[int]  # per class: pool images whose teacher top-1 is the class
    kept: list[int]  # after the confidence filter (and the per-class cap when balancing)
    written: list[int]  # after balancing: entries per class in the student's training set
    thresholds: list[float] = field(default_factory=list)  # effective confidence threshold per class


@torch.inference_mode()
def predict_probs(model: nn.Module, images: ImageSet, temperature: float = 1.0, batch_size: int = 512,
                  device: str | torch.device = "cpu", noised: bool = False, amp: bool = False,
                  progress: bool = True) -> torch.Tensor:
    """Softmax(logits / T) of every image, float32 [N, K]; the teacher in eval mode unless `noised` (an ablation)."""
    model.train(noised)
    device = torch.device(device)
    out = []
    batches = images.batches(batch_size, workers=0)
    for pixels, _ in Progress(batches, total=-(-len(images) // batch_size), desc="pseudo-labeling", unit="batch",
                              enabled=progress, leave=False):
        x = pixels.to(device, non_blocking=True).float().div_(255)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            logits = model(x)
        out.append(F.softmax(logits.float() / temperature, dim=1).cpu())
    model.eval()
    return torch.cat(out) if out else torch.empty(0, 0)


def make_targets(probs: torch.Tensor, mode: str) -> torch.Tensor:
    """Soft targets are the probabilities; hard targets their one-hot argmax."""
    if mode == "soft":
        return probs
    if mode == "hard":
        return F.one_hot(probs.argmax(1), probs.shape[1]).float()
    raise ValueError(f"pseudo.mode must be 'soft' or 'hard', got {mode!r}")


def filter_and_balance(probs: torch.Tensor, per_class: int, min_threshold: float, balance: bool = True,
                       generator: torch.Generator | None = None) -> Selection:
    """Select pool images per class by teacher confidence and balance classes to `per_class` entries."""
    confidence, predicted = probs.max(1)
    num_classes = probs.shape[1]
    chosen, before, kept, written, thresholds = [], [], [], [], []
    for c in range(num_classes):
        members = (predicted == c).nonzero().flatten()
        before.append(len(members))
        conf = confidence[members]
        order = torch.sort(conf, descending=True, stable=True).indices
        members, conf = members[order], conf[order]
        members = members[conf >= min_threshold]
        if balance and len(members) > per_class:
            members = members[:per_class]
        kept.append(len(members))
        thresholds.append(float(confidence[members].min()) if len(members) else float("nan"))
        if balance and len(members):
            members = _repeat_to(members, per_class, generator)
        written.append(len(members))
        chosen.append(members)
    indices = torch.cat(chosen).sort().values if chosen else torch.empty(0, dtype=torch.long)
    return Selection(indices=indices, before=before, kept=kept, written=written, thresholds=thresholds)


def _repeat_to(members: torch.Tensor, target: int, generator: torch.Generator | None) -> torch.Tensor:
    """Each member floor(target / n) times, plus one more copy for a random (target mod n) of them."""
    whole, extra = divmod(target, len(members))
    pick = torch.randperm(len(members), generator=generator)[:extra]
    return torch.cat([members.repeat(whole), members[pick]])


def pool_accuracy(probs: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None) -> float | None:
    """Top-1 accuracy (percent) of the pseudo labels against the pool's held-back labels, when they are known."""
    if indices is not None:
        probs, labels = probs[indices], labels[indices]
    if len(labels) == 0 or bool((labels < 0).any()):
        return None
    return round(100.0 * float((probs.argmax(1) == labels).float().mean()), 4)


def cached_probs(model: nn.Module, sets: dict[str, ImageSet], cache: Path, temperature: float = 1.0,
                 batch_size: int = 512, device: str | torch.device = "cpu", amp: bool = False,
                 progress: bool = True) -> dict[str, torch.Tensor]:
    """`predict_probs` (eval mode) of each named set, computed once and cached in a safetensors file."""
    if cache.is_file():
        return read_tensors(cache)
    probs = {name: predict_probs(model, images, temperature, batch_size, device, amp=amp, progress=progress)
             for name, images in sets.items()}
    write_tensors(cache, probs)
    return probs
