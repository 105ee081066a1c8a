"""`adversarial`: robust top-1 under torchattacks FGSM, PGD, APGD-DLR and AutoAttack (L-inf, eps in 1/255 units) on
the clean test set.

Attacks that cannot be fooled silently: every cell also stores `zero_gradient` (percent of its attacked images
whose input gradient of the cross-entropy is exactly zero, measured on the clean images before the attack), and
the suite writes one `gradient_masking` row (attack and eps NULL; value = the number of flagged cells; settings
`flags` = [{attack, eps, sign, ...}]) naming the usual signs of masked gradients (Athalye et al. 2018;
Carlini et al. 2019, "On Evaluating Adversarial Robustness"):
`zero_gradient` above 1 %, robust accuracy that rises with eps (`rises_with_eps`), and an iterative attack that
leaves more images right than FGSM at the same eps (`weaker_than_fgsm`).
"""
from __future__ import annotations

from typing import Any

import torch

from eval.attacks import ATTACKS, AttackSpec, attack_images, zero_gradient_mask
from eval.context import EvalContext
from eval.datasets import seeded_subset
from eval.metrics import ZeroGradient
from eval.suites import PlanItem, register_suite
from eval.suites.clean import NEEDS_VAL, has_clean
from nst_common.seeding import derive_seed


IMAGENET_ATTACK_LIMIT = 1000  # default attacked images on ImageNet (a seeded subset of the clean set)
ZERO_GRADIENT_THRESHOLD = 1.0  # percent: more images than this with an all-zero input gradient flags the cell
AUTOATTACK_FORWARD = 5000 + 3 * 3 * 100  # plan: forward images per attacked image, at most (Square's queries first)


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
    k = int(ctx.meta.get("num_classes") or 0)
    if "apgd-dlr" in o.attacks and k < 3:
        raise ValueError(f"apgd-dlr's DLR loss needs at least 3 classes; {ctx.model_name} has {k}: choose other "
                         "--attacks")
    return [AttackSpec(a, float(e), o.pgd_steps, o.pgd_alpha, o.pgd_random_start, k or None)
            for a in o.attacks for e in o.eps]


def plan_adversarial(ctx: EvalContext) -> PlanItem:
    """One cell per (attack, eps) on the attacked subset; a gradient step counts as 3 forward passes."""
    specs = attack_specs(ctx)
    data = ctx.clean_set()
    ctx.check_classes(data)
    limit = attack_limit(ctx)
    n = len(data) if limit is None else min(limit, len(data))
    steps = sum(0 if s.eps == 0 else (1 if s.name == "fgsm" else AUTOATTACK_FORWARD // 3 if s.name == "autoattack"
                                      else s.steps) for s in specs)
    return PlanItem("adversarial", data.name, len(specs), n, n * (2 * len(specs) + 3 * steps),
                    note=f"{n} of {len(data)} images attacked (--attack-limit)"
                         + ("; autoattack counted at its most" if "autoattack" in ctx.options.attacks else ""))


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
        zero = ZeroGradient()  # of this rank's batches; synced (all-reduced) when the cell is done

        def perturb(x: torch.Tensor, y: torch.Tensor, b: int, spec: AttackSpec = spec,
                    zero: ZeroGradient = zero) -> torch.Tensor:
            zero.update(zero_gradient_mask(ctx.model, x, y, o.amp))
            return attack_images(ctx.model, spec, x, y, seed=derive_seed(o.seed, "attack batch", b), amp=o.amp)

        def extra(zero: ZeroGradient = zero) -> dict[str, float]:
            return zero.sync().compute()

        cell = ctx.cell("adversarial", data.name, attack=spec.name, eps=spec.eps, data_id=data.identity)
        rows += ctx.measure(cell, len(data), data, spec.settings(), perturb, extra=extra,
                            extra_metrics=("zero_gradient",)).values()
    flags = masking_flags(rows)
    cell = ctx.cell("adversarial", data.name, data_id=data.identity)
    row = cell.row("gradient_masking", float(len({(f["attack"], f["eps"]) for f in flags})), len(data),
                   ctx.settings(flags=flags, zero_gradient_threshold=ZERO_GRADIENT_THRESHOLD))
    ctx.store.write([row])
    return rows + [row]


def masking_flags(rows: list[dict[str, Any]], threshold: float = ZERO_GRADIENT_THRESHOLD) -> list[dict[str, Any]]:
    """The signs of masked gradients in an adversarial suite's cell rows, as plain data for the report:
    [{attack, eps, sign, value, ...}] with sign `zero_gradient` (percent above `threshold`), `rises_with_eps`
    (robust top-1 above the one at the next smaller eps: `previous_eps`, `previous`) or `weaker_than_fgsm` (an
    iterative attack leaving more images right than FGSM at the same eps: `fgsm`)."""
    top1 = {(r["attack"], r["eps"]): r["value"] for r in rows if r["metric"] == "top1" and r["attack"]}
    zero = {(r["attack"], r["eps"]): r["value"] for r in rows if r["metric"] == "zero_gradient" and r["attack"]}
    flags: list[dict[str, Any]] = []
    for (attack, eps), value in sorted(zero.items()):
        if value is not None and value > threshold:
            flags.append({"attack": attack, "eps": eps, "sign": "zero_gradient", "value": value})
    for attack in sorted({a for a, _ in top1}):
        curve = sorted((e, v) for (a, e), v in top1.items() if a == attack)
        for (e0, v0), (e1, v1) in zip(curve, curve[1:]):
            if v1 > v0:
                flags.append({"attack": attack, "eps": e1, "sign": "rises_with_eps", "value": v1,
                              "previous_eps": e0, "previous": v0})
    for (attack, eps), value in sorted(top1.items()):
        fgsm = top1.get(("fgsm", eps))
        if attack != "fgsm" and eps > 0 and fgsm is not None and value > fgsm:
            flags.append({"attack": attack, "eps": eps, "sign": "weaker_than_fgsm", "value": value, "fgsm": fgsm})
    return flags
