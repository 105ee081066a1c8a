"""Knowledge distillation: the student matches the teacher's temperature-softened predictions, plus the labels.

loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y) on labeled images, and only
the T^2 * KL term on unlabeled ones (Hinton et al.). The teacher (eval mode, no noise) predicts every image once;
its probabilities at T are cached in the generation's folder, like pseudo labels.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nst_core.config import KDConfig, RunConfig
from nst_core.data import NSTData
from nst_core.models import NormalizedClassifier
from nst_core.pseudo import cached_probs, pool_accuracy
from nst_core.training import Augment, Loss, TrainSet

KD_FILE = "kd_targets.safetensors"


def kd_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher_probs || softmax(student_logits / T)), averaged over the batch."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    return temperature**2 * F.kl_div(log_student, teacher_probs, reduction="batchmean")


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, label_targets: torch.Tensor,
                      alpha: float, temperature: float) -> torch.Tensor:
    """alpha * T^2 * KL to the teacher + (1 - alpha) * cross-entropy to the (one-hot or smoothed) label targets."""
    cross_entropy = torch.sum(-label_targets * F.log_softmax(student_logits, dim=1), dim=1).mean()
    return alpha * kd_kl(student_logits, teacher_probs, temperature) + (1.0 - alpha) * cross_entropy


def kd_losses(kd: KDConfig) -> tuple[Loss, Loss]:
    """(labeled, unlabeled) criteria; labeled targets are [B, 2, K]: teacher probabilities at T, label targets."""

    def labeled(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return distillation_loss(logits, targets[:, 0], targets[:, 1], kd.alpha, kd.temperature)

    return labeled, partial(kd_kl, temperature=kd.temperature)


def kd_sets(cfg: RunConfig, data: NSTData, teacher: NormalizedClassifier, label_targets: torch.Tensor,
            augment: Augment | None, gen_dir: Path, device: torch.device,
            progress: bool = True) -> tuple[TrainSet, TrainSet, dict[str, Any]]:
    """The student's labeled and unlabeled training sets with the teacher's targets, and their summary."""
    probs = cached_probs(teacher, {"labeled": data.labeled, "unlabeled": data.unlabeled}, gen_dir / KD_FILE,
                         cfg.kd.temperature, cfg.pseudo.batch_size, device, cfg.train.amp, progress)
    everything = torch.arange(len(data.unlabeled))
    labeled = TrainSet(data.labeled, torch.arange(len(data.labeled)),
                       torch.stack([probs["labeled"], label_targets], dim=1), augment)
    unlabeled = TrainSet(data.unlabeled, everything, probs["unlabeled"], augment)
    meta = {
        "mode": "kd", "alpha": cfg.kd.alpha, "temperature": cfg.kd.temperature, "pool_size": len(data.unlabeled),
        "entries": len(everything), "accuracy_on_pool": pool_accuracy(probs["unlabeled"], data.unlabeled.labels),
    }
    return labeled, unlabeled, meta
