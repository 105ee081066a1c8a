"""L-inf FGSM and PGD from torchattacks on [0, 1] images, normalisation inside the model, eps in units of 1/255.

The model must take [0, 1] pixels and normalise inside (nst_core.load_model's models do): normalising in the
data loader instead is the classic misuse of attack libraries. Attacks run with the model in eval mode and are
seeded per batch (PGD's random start) without touching the caller's global RNG state.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
import torchattacks
from torch import nn

ATTACKS = ("fgsm", "pgd")


@dataclass(frozen=True)
class AttackSpec:
    """One attack setting; `eps` and `alpha` in units of 1/255 (alpha None: 2.5 * eps / steps, Madry et al.)."""

    name: str
    eps: float
    steps: int = 10
    alpha: float | None = None
    random_start: bool = True

    def settings(self) -> dict:
        """Plain-data settings for the results store (alpha resolved)."""
        d = asdict(self)
        if self.name == "fgsm":
            return {"attack": "fgsm", "eps_255": self.eps}
        d["alpha"] = self.step_size()
        return {"attack": "pgd", "eps_255": self.eps, "steps": self.steps, "alpha_255": d["alpha"],
                "random_start": self.random_start}

    def step_size(self) -> float:
        """PGD step size in 1/255 units."""
        return float(self.alpha) if self.alpha is not None else 2.5 * self.eps / max(self.steps, 1)


def make_attack(model: nn.Module, spec: AttackSpec) -> torchattacks.attack.Attack:
    """The torchattacks object for `spec` (eps converted from 1/255 units to [0, 1] pixels)."""
    if spec.eps < 0:
        raise ValueError(f"eps must be >= 0 (units of 1/255), got {spec.eps}")
    if spec.name == "fgsm":
        return torchattacks.FGSM(model, eps=spec.eps / 255)
    if spec.name == "pgd":
        return torchattacks.PGD(model, eps=spec.eps / 255, alpha=spec.step_size() / 255, steps=spec.steps,
                                random_start=spec.random_start)
    raise ValueError(f"unknown attack {spec.name!r}; valid: {', '.join(ATTACKS)}")


def attack_images(model: nn.Module, spec: AttackSpec, images: torch.Tensor, labels: torch.Tensor, seed: int,
                  amp: bool = False) -> torch.Tensor:
    """Adversarial versions of float [0, 1] `images` (model in eval mode, RNG seeded with `seed`)."""
    if model.training:
        raise RuntimeError("attacks must run on a model in eval mode (call model.eval())")
    attack = make_attack(model, spec)
    device = images.device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.enable_grad(), autocast:
        torch.manual_seed(seed)
        adv = attack(images, labels)
    return adv.detach().clamp_(0, 1)


__all__ = ["ATTACKS", "AttackSpec", "make_attack", "attack_images"]
