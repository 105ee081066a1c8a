"""L-inf attacks from torchattacks on [0, 1] images, normalisation inside the model, eps in units of 1/255.

`fgsm`, `pgd` (cross-entropy), `apgd-dlr` (APGD with the DLR margin loss, Croce & Hein 2020: invariant to a
scaling of the logits, so a saturated softmax does not hide the gradient; needs >= 3 classes) and `autoattack`
(torchattacks' `AutoAttack(version="standard")`: APGD-CE, APGD-T, FAB-T, Square with 5,000 queries).
`zero_gradient_mask` tells which images have an exactly zero input gradient of the cross-entropy (masked
gradients: a gradient attack then cannot move them, and its robust accuracy means nothing).

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

ATTACKS = ("fgsm", "pgd", "apgd-dlr", "autoattack")
AUTOATTACK_COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")  # torchattacks' standard version, in order


@dataclass(frozen=True)
class AttackSpec:
    """One attack setting; `eps` and `alpha` in units of 1/255 (alpha None: 2.5 * eps / steps, Madry et al.)."""

    name: str
    eps: float
    steps: int = 10
    alpha: float | None = None
    random_start: bool = True
    n_classes: int | None = None  # autoattack's targeted components (APGD-T, FAB-T) need the class count

    def settings(self) -> dict:
        """Plain-data settings for the results store (alpha resolved)."""
        d = asdict(self)
        if self.name == "fgsm":
            return {"attack": "fgsm", "eps_255": self.eps}
        if self.name == "apgd-dlr":
            return {"attack": "apgd-dlr", "library": "torchattacks.APGD", "norm": "Linf", "eps_255": self.eps,
                    "loss": "dlr", "steps": self.steps, "n_restarts": 1, "rho": 0.75, "eot_iter": 1,
                    "seed": "per batch (--seed, batch index)"}
        if self.name == "autoattack":
            return {"attack": "autoattack", "library": "torchattacks.AutoAttack", "version": "standard",
                    "norm": "Linf", "eps_255": self.eps, "n_classes": self.n_classes,
                    "components": list(AUTOATTACK_COMPONENTS), "square_queries": 5000,
                    "seed": "per batch (--seed, batch index)"}
        d["alpha"] = self.step_size()
        return {"attack": "pgd", "eps_255": self.eps, "steps": self.steps, "alpha_255": d["alpha"],
                "random_start": self.random_start}

    def step_size(self) -> float:
        """PGD step size in 1/255 units."""
        return float(self.alpha) if self.alpha is not None else 2.5 * self.eps / max(self.steps, 1)


def make_attack(model: nn.Module, spec: AttackSpec, seed: int = 0) -> torchattacks.attack.Attack:
    """The torchattacks object for `spec` (eps converted from 1/255 units to [0, 1] pixels); `seed` seeds APGD's
    and AutoAttack's own generators (AutoAttack would otherwise seed from the clock)."""
    if spec.eps < 0:
        raise ValueError(f"eps must be >= 0 (units of 1/255), got {spec.eps}")
    if spec.name == "apgd-dlr":
        return torchattacks.APGD(model, norm="Linf", eps=spec.eps / 255, steps=spec.steps, n_restarts=1, seed=seed,
                                 loss="dlr", eot_iter=1, rho=0.75)
    if spec.name == "autoattack":
        if not spec.n_classes:
            raise ValueError("autoattack needs the model's class count (AttackSpec.n_classes)")
        return torchattacks.AutoAttack(model, norm="Linf", eps=spec.eps / 255, version="standard",
                                       n_classes=int(spec.n_classes), seed=seed)
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
    if spec.eps == 0 and spec.name in ("apgd-dlr", "autoattack"):
        return images.detach().clone()  # nothing to search: the clean images (fgsm / pgd give them at eps 0 too)
    attack = make_attack(model, spec, seed)
    device = images.device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.enable_grad(), autocast:
        torch.manual_seed(seed)
        adv = attack(images, labels)
    return adv.detach().clamp_(0, 1)


def zero_gradient_mask(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       amp: bool = False) -> torch.Tensor:
    """bool [B]: whether the input gradient of the cross-entropy at float [0, 1] `images` [B, C, H, W] is exactly
    zero everywhere (a saturated softmax, a quantising or non-differentiable input stage): FGSM and PGD cannot
    move such an image, so their robust accuracy on it says nothing (Athalye et al. 2018, obfuscated gradients)."""
    x = images.detach().clone().requires_grad_(True)
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if amp else nullcontext()
    with torch.enable_grad(), autocast:
        loss = nn.functional.cross_entropy(model(x).float(), labels.to(x.device), reduction="sum")
    if not loss.requires_grad:  # the output does not depend on the input through autograd at all
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    grad, = torch.autograd.grad(loss, x, allow_unused=True)
    if grad is None:  # the output does not depend on the input at all
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    return grad.flatten(1).eq(0).all(dim=1)


__all__ = ["ATTACKS", "AUTOATTACK_COMPONENTS", "AttackSpec", "make_attack", "attack_images", "zero_gradient_mask"]
