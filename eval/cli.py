"""`nst-eval`: score checkpoints or timm models on the robustness suites, into `<out>/results.sqlite`.

    nst-eval --suite robustness --run runs/fashion_mnist            # every generation of a run (gen0 = baseline)
    nst-eval --suite corruption --checkpoint runs/x/gen2 --limit 1000
    nst-eval --suite robustness --model timm:tf_efficientnet_b0.ns_jft_in1k --pretrained \\
        --val /data/imagenet/val --imagenet-c /data/imagenet-c --imagenet-a /data/imagenet-a --out outputs/eval
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from eval.api import evaluate
from eval.context import DEFAULT_EPS, DataSources, EvalOptions, EvaluationError
from eval.suites import suite_names


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (flags of issue 3)."""
    p = argparse.ArgumentParser(prog="nst-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="robustness", help=f"comma-separated; one of {', '.join(suite_names())}")
    what = p.add_argument_group("models")
    what.add_argument("--run", "--run-dir", dest="run", type=Path,
                      help="a run folder: evaluate every gen<k> in it (--run-dir under torchrun, whose own "
                           "--run-path would swallow --run)")
    what.add_argument("--checkpoint", type=Path, action="append", default=[], help="a checkpoint folder (repeatable)")
    what.add_argument("--model", action="append", default=[], help="timm:<name> (repeatable), its own data config")
    what.add_argument("--pretrained", action="store_true", help="timm models: load timm's pretrained weights")
    what.add_argument("--baseline", help="CE baseline off ImageNet: checkpoint folder or timm:<name> "
                      "(default: the run's gen0)")
    data = p.add_argument_group("data")
    data.add_argument("--val", type=Path, help="ImageNet val (ImageFolder); turns on ImageNet mode")
    data.add_argument("--imagenet-c", type=Path, help="ImageNet-C root (<root>/<corruption>/<severity>/<wnid>/)")
    data.add_argument("--imagenet-a", type=Path, help="ImageNet-A root (<root>/<wnid>/)")
    data.add_argument("--imagenet-p", type=Path, help="ImageNet-P root (perturbation suite)")
    data.add_argument("--limit", type=int, help="evaluate a fixed, seeded subset of N images per dataset")
    data.add_argument("--corruption-backend", default="torch", choices=("torch", "imagecorruptions"),
                      help="generator for datasets without a -C set (default torch)")
    data.add_argument("--corruptions", type=_names, help="comma-separated subset (default: all 19)")
    data.add_argument("--cache-dir", type=Path, help="where generated corrupted sets are cached "
                      "(default $NST_CACHE_DIR or ~/.cache/nst-robustness)")
    data.add_argument("--perturbations", type=_names, help="perturbation suite: comma-separated subset (default all)")
    data.add_argument("--perturbation-difficulty", type=int, default=1, help="ImageNet-P difficulty (1, 2 or 3)")
    data.add_argument("--perturbation-limit", type=int, help="sequences per perturbation (default: --limit)")
    adv = p.add_argument_group("attacks")
    adv.add_argument("--eps", type=_floats, default=list(DEFAULT_EPS), help="L-inf eps list in 1/255 units")
    adv.add_argument("--attacks", type=_names, default=["fgsm", "pgd"], help="comma-separated: fgsm,pgd")
    adv.add_argument("--pgd-steps", type=int, default=10)
    adv.add_argument("--pgd-alpha", type=float, help="PGD step in 1/255 units (default 2.5 * eps / steps)")
    adv.add_argument("--no-random-start", action="store_true", help="PGD without the random start")
    adv.add_argument("--attack-limit", type=int, help="images attacked (default: --limit)")
    run = p.add_argument_group("running")
    run.add_argument("--out", type=Path, help="output folder (default: <run>/eval, beside a checkpoint, or outputs/eval)")
    run.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    run.add_argument("--batch-size", type=int, default=256)
    run.add_argument("--workers", type=int, default=0, help="DataLoader workers for image files")
    run.add_argument("--threads", type=int, help="torch intra-op threads (1 avoids OpenMP stalls on busy cores)")
    run.add_argument("--amp", action="store_true", help="bf16 autocast")
    run.add_argument("--force", action="store_true", help="recompute cells already in the store")
    run.add_argument("--seed", type=int, default=0, help="subset, corruption and attack seed")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def model_sources(args: argparse.Namespace) -> list[str]:
    """Every model to evaluate, gen0 of a run first (it is the others' CE baseline)."""
    sources: list[str] = []
    if args.run is not None:
        if not args.run.is_dir():
            raise FileNotFoundError(f"run folder not found: {args.run}")
        gens = sorted((d for d in args.run.glob("gen*") if d.name[3:].isdigit() and (d / "meta.json").exists()),
                      key=lambda d: int(d.name[3:]))
        if not gens:
            raise FileNotFoundError(f"no finished generation (gen<k>/meta.json) in {args.run}: train it first")
        sources += [str(d) for d in gens]
    sources += [str(c) for c in args.checkpoint]
    for m in args.model:
        if not m.startswith("timm:"):
            raise ValueError(f"--model takes timm:<name>, got {m!r} (use --checkpoint for a folder)")
        sources.append(m)
    if not sources:
        raise ValueError("nothing to evaluate: give --run, --checkpoint or --model")
    return sources


def default_out(args: argparse.Namespace) -> Path:
    """--out, else <run>/eval, else beside the first checkpoint, else outputs/eval."""
    if args.out is not None:
        return args.out
    if args.run is not None:
        return args.run / "eval"
    if args.checkpoint:
        return args.checkpoint[0].parent / "eval"
    return Path("outputs") / "eval"


def _headline(name: str, summary: dict[str, Any]) -> str:
    parts = [name]
    for key, label in (("clean_top1", "clean top-1"), ("mce", "mCE"), ("relative_mce", "rel. mCE"),
                       ("mean_corruption_top1", "corr. top-1"), ("imagenet_a_top1", "ImageNet-A top-1")):
        if summary.get(key) is not None:
            parts.append(f"{label} {summary[key]:.2f}")
    for attack, by_eps in (summary.get("adversarial_top1") or {}).items():
        parts.append(f"{attack} " + " ".join(f"{e}:{v:.1f}" for e, v in by_eps.items()))
    return " | ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `nst-eval` console script."""
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from nst_core import distributed, load_model

    distributed.init()  # under torchrun: each rank scores a shard of every set, rank 0 writes and prints
    main_rank = distributed.is_main()
    logging.basicConfig(level=logging.INFO if main_rank else logging.WARNING, format="nst-eval: %(message)s")
    from eval.api import summarize
    from eval.store import ResultStore

    try:
        sources = model_sources(args)
        out = default_out(args)
        options = EvalOptions(
            device=args.device, batch_size=args.batch_size, workers=args.workers, limit=args.limit,
            attack_limit=args.attack_limit, amp=args.amp, force=args.force, seed=args.seed, eps=args.eps,
            attacks=args.attacks, pgd_steps=args.pgd_steps, pgd_alpha=args.pgd_alpha,
            pgd_random_start=not args.no_random_start, corruption_backend=args.corruption_backend,
            corruptions=args.corruptions, cache_dir=args.cache_dir, progress=not args.no_progress and main_rank,
            perturbations=args.perturbations, perturbation_difficulty=args.perturbation_difficulty,
            perturbation_limit=args.perturbation_limit)
        data = DataSources(val=args.val, imagenet_c=args.imagenet_c, imagenet_a=args.imagenet_a,
                           imagenet_p=args.imagenet_p)
        with ResultStore(out / "results.sqlite") as store:
            for source in sources:
                model, meta = load_model(source, device=args.device, pretrained=args.pretrained)
                rows = evaluate(model, meta, args.suite, data=data, options=options, store=store, out=out,
                                baseline=args.baseline)
                if main_rank:
                    print(_headline(str(meta.get("name") or source), summarize(rows)), flush=True)
        if main_rank:
            print(f"results: {out / 'results.sqlite'}; summary: {out / 'summary.json'}")
    except (EvaluationError, ValueError, OSError) as exc:
        print(f"nst-eval: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nst-eval: interrupted; finished cells are stored, run the same command again to resume",
              file=sys.stderr)
        return 130
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
