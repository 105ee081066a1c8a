"""`adversarial`: robust top-1 under torchattacks FGSM and PGD (L-inf, eps in 1/255 units) on the clean test set."""
from __future__ import annotations

from typing import Any

import torch

from eval.attacks import AttackSpec, attack_images
from eval.context import EvalContext
from eval.datasets import seeded_subset
from eval.suites import register_suite
from eval.suites.clean import NEEDS_VAL, has_clean


IMAGENET_ATTACK_LIMIT = 1000  # default attacked images on ImageNet (a seeded subset of the clean set)


def attack_limit(ctx: EvalContext) -> int | None:
    """Images attacked: --attack-limit, else the whole clean set (--limit applied), on ImageNet at most 1,000."""
    if ctx.options.attack_limit is not None:
        return ctx.options.attack_limit
    return IMAGENET_ATTACK_LIMIT if ctx.data.is_imagenet else None


@register_suite("adversarial", supports=has_clean, requirement=NEEDS_VAL, order=30)
def adversarial(ctx: EvalContext) -> list[dict[str, Any]]:
    """One cell per (attack, eps); eps 0 is the clean accuracy through the same code path."""
    o = ctx.options
    data = ctx.clean_set()
    limit = attack_limit(ctx)
    if limit is not None and limit < len(data):
        data = data.subset(seeded_subset(len(data), limit, o.seed))
    rows: list[dict[str, Any]] = []
    for name in o.attacks:
        for eps in o.eps:
            spec = AttackSpec(name, float(eps), o.pgd_steps, o.pgd_alpha, o.pgd_random_start)

            def perturb(x: torch.Tensor, y: torch.Tensor, b: int, spec: AttackSpec = spec) -> torch.Tensor:
                return attack_images(ctx.model, spec, x, y, seed=o.seed * 1_000_003 + b, amp=o.amp)

            cell = ctx.cell("adversarial", data.name, attack=name, eps=float(eps), data_id=data.identity)
            rows += ctx.measure(cell, len(data), data, spec.settings(), perturb).values()
    return rows
