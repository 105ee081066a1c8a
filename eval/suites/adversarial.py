"""`adversarial`: robust top-1 under torchattacks FGSM and PGD (L-inf, eps in 1/255 units) on the clean test set."""
from __future__ import annotations

from typing import Any

import torch

from eval.attacks import ATTACKS, AttackSpec, attack_images
from eval.context import EvalContext
from eval.datasets import seeded_subset
from eval.suites import PlanItem, register_suite
from eval.suites.clean import NEEDS_VAL, has_clean


IMAGENET_ATTACK_LIMIT = 1000  # default attacked images on ImageNet (a seeded subset of the clean set)


def attack_limit(ctx: EvalContext) -> int | None:
    """Images attacked: --attack-limit, else the whole clean set (--limit applied), on ImageNet at most 1,000."""
    if ctx.options.attack_limit is not None:
        return ctx.options.attack_limit
    return IMAGENET_ATTACK_LIMIT if ctx.data.val is not None else None


def attack_specs(ctx: EvalContext) -> list[AttackSpec]:
    """Every (attack, eps) setting, validated: known attacks, eps >= 0 (1/255 units), PGD steps >= 1."""
    o = ctx.options
    unknown = [a for a in o.attacks if a not in ATTACKS]
    if unknown or not o.attacks:
        raise ValueError(f"unknown attack(s) {unknown} in --attacks; valid: {', '.join(ATTACKS)}")
    if not o.eps or any(not (0 <= float(e) <= 255) for e in o.eps):
        raise ValueError(f"--eps takes values in 0..255 (units of 1/255), got {list(o.eps)}")
    if o.pgd_steps < 1:
        raise ValueError(f"--pgd-steps must be >= 1, got {o.pgd_steps}")
    if o.pgd_alpha is not None and o.pgd_alpha <= 0:
        raise ValueError(f"--pgd-alpha must be > 0 (1/255 units), got {o.pgd_alpha}")
    return [AttackSpec(a, float(e), o.pgd_steps, o.pgd_alpha, o.pgd_random_start) for a in o.attacks for e in o.eps]


def plan_adversarial(ctx: EvalContext) -> PlanItem:
    """One cell per (attack, eps) on the attacked subset; a gradient step counts as 3 forward passes."""
    specs = attack_specs(ctx)
    data = ctx.clean_set()
    ctx.check_classes(data)
    limit = attack_limit(ctx)
    n = len(data) if limit is None else min(limit, len(data))
    steps = sum(0 if s.eps == 0 else (1 if s.name == "fgsm" else s.steps) for s in specs)
    return PlanItem("adversarial", data.name, len(specs), n, n * (len(specs) + 3 * steps),
                    note=f"{n} of {len(data)} images attacked (--attack-limit)")


@register_suite("adversarial", supports=has_clean, requirement=NEEDS_VAL, order=30, plan=plan_adversarial)
def adversarial(ctx: EvalContext) -> list[dict[str, Any]]:
    """One cell per (attack, eps); eps 0 is the clean accuracy through the same code path."""
    o = ctx.options
    data = ctx.clean_set()
    limit = attack_limit(ctx)
    if limit is not None and limit < len(data):
        data = data.subset(seeded_subset(len(data), limit, o.seed))
    rows: list[dict[str, Any]] = []
    for spec in attack_specs(ctx):
        def perturb(x: torch.Tensor, y: torch.Tensor, b: int, spec: AttackSpec = spec) -> torch.Tensor:
            return attack_images(ctx.model, spec, x, y, seed=o.seed * 1_000_003 + b, amp=o.amp)

        cell = ctx.cell("adversarial", data.name, attack=spec.name, eps=spec.eps, data_id=data.identity)
        rows += ctx.measure(cell, len(data), data, spec.settings(), perturb).values()
    return rows
