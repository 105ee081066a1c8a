"""Meta Pseudo Labels: a teacher and a student trained together; the teacher learns from the student's progress.

Each step the teacher labels an unlabeled batch (hard labels on the strongly augmented view), the student takes
one step on those labels, and the change of the student's labeled loss (before minus after: the one-step
approximation of the meta gradient) scales the teacher's gradient of its pseudo labels' cross-entropy: labels
that helped the student become more likely, labels that hurt it less likely. The teacher also learns from the
labels and from UDA consistency (weak vs strong view, confidence-masked, sharpened). Then the student is
fine-tuned on the labeled data; the last weights are the checkpoint (none is chosen on the test set).

The student's labeled loss is measured in eval mode under no_grad, so the only student forward that moves
BatchNorm statistics is its training step. Reduced MPL (Pham et al., appendix E): the converged teacher predicts
every image once; a small MLP teacher maps those predictions to adjusted ones and is trained with the student.
State (both models, both optimizers, history) is saved after every epoch, so a killed run resumes exactly.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from nst_common import distributed
from nst_common.progress import Progress
from nst_common.seeding import derive_seed, seed_everything
from nst_core.checkpoint import resume_state, save_state
from nst_core.config import ConfigError, MPLConfig, RunConfig
from nst_core.data import NSTData
from nst_core.imagesets import ImageSet
from nst_core.models import NormalizedClassifier
from nst_core.pseudo import cached_probs
from nst_core.training import (Augment, TrainSet, build_augment, check_finite_loss, check_finite_weights, cycle_batches,
                               make_optimizer, plan_batches, smooth_one_hot,
                               state_fingerprint, train_generation)

PREDICTIONS_FILE = "teacher_predictions.safetensors"


class MLPTeacher(nn.Module):
    """Reduced MPL's teacher: logits = log p + MLP(log p) on stored predictions p; starts as the identity."""

    def __init__(self, num_classes: int, hidden: int) -> None:
        super().__init__()
        first, last = nn.Linear(num_classes, hidden), nn.Linear(hidden, num_classes)  # created in this order (RNG)
        self.net = nn.Sequential(first, nn.GELU(), last)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        log_probs = probs.clamp_min(1e-8).log()
        return log_probs + self.net(log_probs)


class Views(Dataset):
    """Image i of an ImageSet as (clean uint8, augmented uint8, label, i)."""

    def __init__(self, images: ImageSet, augment: Augment | None = None) -> None:
        self.images, self.augment = images, augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        pixels, label = self.images[i]
        return pixels, self.augment(pixels) if self.augment is not None else pixels, label, i


@dataclass
class MPLBatch:
    """One step's tensors: the student's inputs, and the teacher's (images, or stored predictions)."""

    x_l: torch.Tensor  # labeled images, float in [0, 1]
    y_l: torch.Tensor  # their labels
    x_u: torch.Tensor  # unlabeled images the student trains on (strong view)
    t_l: torch.Tensor  # the teacher's input for the labeled images
    t_u: torch.Tensor  # the teacher's input for x_u; its pseudo labels come from here
    t_uw: torch.Tensor | None = None  # the teacher's weak view of x_u, for UDA; None: no UDA


@torch.no_grad()
def labeled_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Cross-entropy of `model` in eval mode (BatchNorm statistics untouched), restoring its train/eval mode."""
    was_training = model.training
    model.eval()
    loss = F.cross_entropy(model(x), y).item()
    model.train(was_training)
    return loss


def uda_loss(weak_logits: torch.Tensor, strong_logits: torch.Tensor, temperature: float,
             threshold: float) -> torch.Tensor:
    """Cross-entropy of the strong view to the sharpened weak-view prediction, where the weak view is confident."""
    weak = weak_logits.detach()
    target = F.softmax(weak / temperature, dim=1)
    mask = (F.softmax(weak, dim=1).max(1).values >= threshold).float()
    return (torch.sum(-target * F.log_softmax(strong_logits, dim=1), dim=1) * mask).mean()


def mpl_step(teacher: nn.Module, student: nn.Module, teacher_opt: torch.optim.Optimizer,
             student_opt: torch.optim.Optimizer, batch: MPLBatch, cfg: MPLConfig) -> dict[str, float]:
    """One MPL step: the student learns the teacher's hard labels; the teacher learns from the student's change."""
    t_logits_l = teacher(batch.t_l)
    t_logits_u = teacher(batch.t_u)
    pseudo = t_logits_u.detach().argmax(1)

    before = labeled_loss(student, batch.x_l, batch.y_l)
    student_loss = F.cross_entropy(student(batch.x_u), pseudo)  # the student's only train-mode forward
    student_opt.zero_grad(set_to_none=True)
    student_loss.backward()
    student_opt.step()
    feedback = before - labeled_loss(student, batch.x_l, batch.y_l)  # > 0: the pseudo labels helped

    supervised = F.cross_entropy(t_logits_l, batch.y_l)
    teacher_loss = cfg.teacher_label_weight * supervised + feedback * F.cross_entropy(t_logits_u, pseudo)
    uda = torch.zeros(())
    if batch.t_uw is not None and cfg.uda_weight > 0:
        with torch.no_grad():
            weak_logits = teacher(batch.t_uw)
        uda = uda_loss(weak_logits, t_logits_u, cfg.uda_temperature, cfg.uda_threshold)
        teacher_loss = teacher_loss + cfg.uda_weight * uda
    teacher_opt.zero_grad(set_to_none=True)
    teacher_loss.backward()
    teacher_opt.step()
    return {"student_loss": student_loss.item(), "feedback": feedback, "teacher_supervised": supervised.item(),
            "teacher_uda": uda.item(), "teacher_loss": teacher_loss.item()}


def train_mpl(student: NormalizedClassifier, teacher: NormalizedClassifier, data: NSTData, cfg: RunConfig,
              generation: int, gen_dir: Path, device: torch.device,
              progress: bool = True) -> tuple[list[dict], dict[str, Any]]:
    """MPL from the previous generation (a copy, or its stored predictions), then the student's fine-tune."""
    if distributed.is_distributed():
        raise ConfigError("method: mpl trains in one process; start it without torchrun")
    mpl = cfg.mpl
    stored = (cached_probs(teacher, {"labeled": data.labeled, "unlabeled": data.unlabeled},
                           gen_dir / PREDICTIONS_FILE, 1.0, cfg.pseudo.batch_size, device, cfg.train.amp, progress)
              if mpl.reduced else None)
    teacher_net: nn.Module  # what the MPL step calls
    teacher_module: nn.Module  # what the teacher optimizer updates and the state saves
    if mpl.reduced:
        teacher_net = teacher_module = MLPTeacher(data.num_classes, mpl.mlp_hidden)
    else:
        copied = copy.deepcopy(teacher)
        teacher_net, teacher_module = copied, copied.model
    student.to(device)
    teacher_net.to(device)
    augment = build_augment(cfg.noise, cfg.data.mean)
    labeled, unlabeled = Views(data.labeled), Views(data.unlabeled, augment)
    plan = plan_batches(cfg, len(labeled), len(unlabeled))
    student_opt, student_sched = make_optimizer(student.model, cfg.train, plan.steps, mpl.epochs)
    teacher_opt, teacher_sched = make_optimizer(teacher_module, cfg.train, plan.steps, mpl.epochs,
                                                lr=mpl.teacher_lr)
    state_path = gen_dir / "mpl_state"
    start, history = 0, []
    fingerprint = state_fingerprint(cfg, generation, stage="mpl", epochs=mpl.epochs, steps=plan.steps,
                                    labeled=len(labeled), unlabeled=len(unlabeled),
                                    batch=[plan.labeled, plan.unlabeled])
    state = resume_state(state_path, fingerprint, log=tqdm.write)
    if state is not None:
        student.model.load_state_dict(state["student"])
        teacher_module.load_state_dict(state["teacher"])
        student_opt.load_state_dict(state["student_optimizer"])
        teacher_opt.load_state_dict(state["teacher_optimizer"])
        start, history = state["epoch"], state["history"]

    for epoch in range(start, mpl.epochs):
        seed_everything(derive_seed(cfg.seed, "epoch", generation, epoch))
        labeled_batches = cycle_batches(labeled, plan.labeled, cfg.data.num_workers)
        unlabeled_batches = cycle_batches(unlabeled, plan.unlabeled, cfg.data.num_workers)
        student.train()
        teacher_net.train()
        sums: dict[str, float] = {}
        for step in Progress(range(plan.steps), desc=f"gen{generation} MPL epoch {epoch + 1}/{mpl.epochs}",
                             unit="step", enabled=progress, leave=False):
            global_step = epoch * plan.steps + step
            student_sched.step_update(global_step)
            teacher_sched.step_update(global_step)
            batch = _batch(next(labeled_batches), next(unlabeled_batches), stored, device)
            for key, value in mpl_step(teacher_net, student, teacher_opt, student_opt, batch, mpl).items():
                check_finite_loss(value, f"gen{generation} MPL epoch {epoch + 1}/{mpl.epochs} step {step + 1} ({key})",
                                  "train.lr / mpl.teacher_lr")
                sums[key] = sums.get(key, 0.0) + value
        history.append({"stage": "mpl", "epoch": epoch + 1,
                        **{key: round(value / plan.steps, 6) for key, value in sums.items()}})
        save_state(state_path, {"epoch": epoch + 1, "history": history, "student": student.model.state_dict(),
                                "teacher": teacher_module.state_dict(),
                                "student_optimizer": student_opt.state_dict(),
                                "teacher_optimizer": teacher_opt.state_dict()}, fingerprint)
    check_finite_weights(student.model, f"gen{generation} after MPL", "train.lr / mpl.teacher_lr")
    history = history + finetune(student, data, cfg, generation, gen_dir, device, progress)
    meta = {"mode": "mpl", "reduced": mpl.reduced, "epochs": mpl.epochs, "finetune_epochs": mpl.finetune_epochs,
            "pool_size": len(data.unlabeled), "checkpoint": "last (no selection on the test set)"}
    return history, meta


def finetune(student: NormalizedClassifier, data: NSTData, cfg: RunConfig, generation: int, gen_dir: Path,
             device: torch.device, progress: bool = True) -> list[dict]:
    """The student on the labeled data alone, at mpl.finetune_lr (default train.lr / 10), resumable."""
    if cfg.mpl.finetune_epochs <= 0:
        return []
    lr = cfg.mpl.finetune_lr if cfg.mpl.finetune_lr is not None else cfg.train.lr / 10
    tuned = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=lr))
    targets = smooth_one_hot(data.labeled.labels, data.num_classes, cfg.train.label_smoothing)
    labeled = TrainSet(data.labeled, torch.arange(len(data.labeled)), targets, build_augment(cfg.noise, cfg.data.mean))
    history = train_generation(student, labeled, None, tuned, generation, cfg.mpl.finetune_epochs,
                               gen_dir / "finetune_state", device, progress)
    return [{"stage": "finetune", **entry} for entry in history]


def _batch(labeled: list[torch.Tensor], unlabeled: list[torch.Tensor], stored: dict[str, torch.Tensor] | None,
           device: torch.device) -> MPLBatch:
    """Move a step's batches to the device; the teacher sees images (full MPL) or stored predictions (reduced)."""
    clean_l, _, y_l, index_l = labeled
    clean_u, strong_u, _, index_u = unlabeled
    x_l, x_uw, x_u = (x.to(device).float().div_(255) for x in (clean_l, clean_u, strong_u))
    y_l = y_l.to(device)
    if stored is None:
        return MPLBatch(x_l=x_l, y_l=y_l, x_u=x_u, t_l=x_l, t_u=x_u, t_uw=x_uw)
    return MPLBatch(x_l=x_l, y_l=y_l, x_u=x_u, t_l=stored["labeled"][index_l].to(device),
                    t_u=stored["unlabeled"][index_u].to(device))
