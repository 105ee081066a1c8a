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
import time
from pathlib import Path
from typing import Any, Sequence

# Heavy imports (torch, timm, the suites) wait until the arguments are parsed and checked: --help and argument
# errors answer at once.
ATTACKS = ("fgsm", "pgd", "apgd-dlr", "autoattack")
SUITE_NAMES = ("clean", "corruption", "natural-adversarial", "shifts", "adversarial", "perturbation", "robustness")
METHODS = ("auto", "crop", "resize", "generate")
DEFAULT_EPS = (0.0, 1.0, 2.0, 4.0, 8.0)


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not 0 <= v <= 255 for v in values):
        raise argparse.ArgumentTypeError(f"expected eps values in 0..255 (units of 1/255), got {text!r}")
    return values


def _names(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names, got nothing")
    return names


def _choices(valid: Sequence[str]):
    def parse(text: str) -> list[str]:
        names = _names(text)
        unknown = [n for n in names if n not in valid]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
        return names
    return parse


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def _eval_size(text: str) -> str | int:
    if text == "test":
        return text
    return _count(1)(text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: every value is checked here, before any model or image is touched."""
    p = argparse.ArgumentParser(prog="nst-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", type=_choices(SUITE_NAMES), default=["robustness"],
                   help=f"comma-separated; one of {', '.join(SUITE_NAMES)} (robustness = every suite the data "
                        "and model support; the others are skipped with their reason)")
    what = p.add_argument_group("models")
    what.add_argument("--run", "--run-dir", dest="run", type=Path,
                      help="a run folder: evaluate every gen<k> in it, or every seed<k>/gen<g> of a multi-seed run "
                           "(--run-dir under torchrun, whose own --run-path would swallow --run)")
    what.add_argument("--checkpoint", type=Path, action="append", default=[], help="a checkpoint folder (repeatable)")
    what.add_argument("--model", action="append", default=[], help="timm:<name> (repeatable), its own data config")
    what.add_argument("--pretrained", action="store_true",
                      help="timm models: timm's pretrained weights (downloads unless cached; fails within seconds "
                           "offline)")
    what.add_argument("--weights", type=Path, action="append", default=[],
                      help="timm models: a local weights file (.safetensors, or a timm / torch checkpoint read with "
                           "weights_only=True), one per --model in order")
    what.add_argument("--eval-size", type=_eval_size,
                      help="timm models: 'test' for timm's test size and crop where the config has one, or N px")
    what.add_argument("--baseline", help="CE baseline off ImageNet: checkpoint folder or timm:<name> "
                      "(default: the run's gen0)")
    data = p.add_argument_group("data")
    data.add_argument("--val", type=Path, help="ImageNet val (ImageFolder: <val>/<wnid>/*, any subset of the 1000 "
                      "classes, or ImageNetV2's <val>/<class index>/*)")
    data.add_argument("--imagenet-c", type=Path, help="ImageNet-C root (<root>/<corruption>/<severity>/<wnid>/)")
    data.add_argument("--imagenet-a", type=Path, help="ImageNet-A root (<root>/<wnid>/)")
    data.add_argument("--imagenet-r", type=Path, help="ImageNet-R root (<root>/<wnid>/, 200 classes; shifts suite)")
    data.add_argument("--imagenet-sketch", type=Path, help="ImageNet-Sketch root (<root>/<wnid>/; shifts suite)")
    data.add_argument("--imagenet-v2", type=Path, help="one ImageNetV2 variant's root (<root>/<class index>/; "
                      "the variant is read from its folder name, e.g. imagenetv2-matched-frequency-format-val; "
                      "shifts suite)")
    data.add_argument("--imagenet-p", type=Path, help="ImageNet-P root (<root>/<perturbation>/<wnid>/*.mp4)")
    data.add_argument("--imagenet-c-method", choices=METHODS, default="auto",
                      help="official 224-px files center-cropped (crop, the default at 224 px) or resized to the "
                           "model (resize, the default at other sizes), or generate from --val at the model's size "
                           "(the default without --imagenet-c); each is its own dataset name")
    data.add_argument("--imagenet-p-method", choices=METHODS, default="auto", help="the same for ImageNet-P")
    data.add_argument("--limit", type=_count(1), help="evaluate a fixed, seeded subset of N images per dataset")
    data.add_argument("--corruption-limit", type=_count(1),
                      help="images per generated -C cell (default --limit; from ImageNet val at most 1,000)")
    data.add_argument("--corruption-backend", default="torch", choices=("torch", "imagecorruptions"),
                      help="generator for generated -C sets (default torch)")
    data.add_argument("--corruption-preset", choices=("imagenet-c", "cifar-10-c", "tiny-imagenet-c"),
                      help="corruption strengths of generated -C sets (default by input size: <= 32 px cifar-10-c, "
                      "<= 64 px tiny-imagenet-c, else imagenet-c)")
    data.add_argument("--corruption-rng", choices=("reference", "device"),
                      help="random numbers of generated -C sets: the reference's NumPy draws or per-image torch "
                      "generators on the device (default: device on CUDA, reference on the CPU)")
    data.add_argument("--corruptions", type=_names, help="comma-separated subset (default: all 19)")
    data.add_argument("--cache-dir", type=Path, help="where generated corrupted sets are cached "
                      "(default $NST_CACHE_DIR or ~/.cache/nst-robustness)")
    data.add_argument("--perturbations", type=_names,
                      help="perturbation suite: comma-separated subset (default all 14)")
    data.add_argument("--perturbation-difficulty", type=int, choices=(1, 2, 3), default=1,
                      help="ImageNet-P difficulty (1, 2 or 3)")
    data.add_argument("--perturbation-limit", type=_count(1),
                      help="sequences per perturbation (default --limit; generated from ImageNet val at most 100)")
    adv = p.add_argument_group("attacks")
    adv.add_argument("--eps", type=_floats, default=list(DEFAULT_EPS), help="L-inf eps list in 1/255 units")
    adv.add_argument("--attacks", type=_choices(ATTACKS), default=["fgsm", "pgd"],
                     help="comma-separated, of: fgsm, pgd, apgd-dlr (APGD with the DLR margin loss, --pgd-steps "
                          "steps; needs >= 3 classes), autoattack (torchattacks' standard AutoAttack: slow, up to "
                          "~6,000 forward passes per robust image); default fgsm,pgd")
    adv.add_argument("--pgd-steps", type=_count(1), default=10)
    adv.add_argument("--pgd-alpha", type=float, help="PGD step in 1/255 units (default 2.5 * eps / steps)")
    adv.add_argument("--no-random-start", action="store_true", help="PGD without the random start")
    adv.add_argument("--attack-limit", type=_count(1),
                     help="images attacked (default: the clean set; on ImageNet val at most 1,000)")
    run = p.add_argument_group("running")
    run.add_argument("--out", type=Path, help="output folder (default: <run>/eval, beside a checkpoint, or outputs/eval)")
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    run.add_argument("--batch-size", type=_count(1), default=256)
    run.add_argument("--workers", type=_count(0), help="DataLoader workers decoding image files (default: the "
                     "available CPUs, at most 8; none for sets under 1,024 files)")
    run.add_argument("--compile", action="store_true", help="torch.compile the model (on CUDA: channels_last always)")
    run.add_argument("--threads", type=_count(1), help="torch intra-op threads (1 avoids OpenMP stalls on busy cores)")
    run.add_argument("--amp", action="store_true", help="bf16 autocast")
    run.add_argument("--force", action="store_true", help="recompute cells already in the store")
    run.add_argument("--seed", type=int, default=0, help="subset, corruption and attack seed")
    run.add_argument("--dry-run", action="store_true",
                     help="print the plan (suites, cells, images, cache bytes, estimated time) and exit; writes nothing")
    run.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true",
                     help="no progress: no bars on a terminal, no per-cell lines when the output is redirected")
    run.add_argument("--verbose", action="store_true", help="debug log messages (the libraries' too)")
    return p


def check_args(args: argparse.Namespace) -> None:
    """What argparse cannot check: names from the catalogues, and that every folder and file named exists (before
    anything is loaded). Raises ValueError naming the flag."""
    from eval.corruptions.catalog import ALL_CORRUPTIONS, ALL_PERTURBATIONS

    for flag, given, valid in (("--corruptions", args.corruptions, ALL_CORRUPTIONS),
                               ("--perturbations", args.perturbations, ALL_PERTURBATIONS)):
        unknown = [n for n in given or () if n not in valid]
        if unknown:
            raise ValueError(f"{flag}: unknown {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
    for flag in ("val", "imagenet_c", "imagenet_a", "imagenet_p", "imagenet_r", "imagenet_sketch", "imagenet_v2",
                 "run"):
        path = getattr(args, flag)
        if path is not None and not path.is_dir():
            raise ValueError(f"--{flag.replace('_', '-')} {path}: folder not found")
    for path in args.checkpoint:
        if not (path / "meta.json").is_file() and not (path.name == "model.safetensors" and path.is_file()):
            raise ValueError(f"--checkpoint {path}: no meta.json there; give a finished gen<k> folder")
    for path in args.weights:
        if not path.is_file():
            raise ValueError(f"--weights {path}: file not found")
    if args.weights and len(args.weights) != len(args.model):
        raise ValueError(f"--weights was given {len(args.weights)} times for {len(args.model)} --model: give one "
                         "weights file per timm model, in the same order")
    if args.weights and args.pretrained:
        raise ValueError("give --pretrained (timm's hub weights) or --weights FILE, not both")
    if args.pgd_alpha is not None and args.pgd_alpha <= 0:
        raise ValueError(f"--pgd-alpha must be > 0 (1/255 units), got {args.pgd_alpha}")


def run_generations(run: Path) -> list[Path]:
    """The finished gen<k> folders of a run folder, gen0 first."""
    return sorted((d for d in run.glob("gen*") if d.name[3:].isdigit() and (d / "meta.json").exists()),
                  key=lambda d: int(d.name[3:]))


def model_sources(args: argparse.Namespace) -> list[str]:
    """Every model to evaluate, gen0 of a run first (it is the others' CE baseline)."""
    sources: list[str] = []
    if args.run is not None:
        if not args.run.is_dir():
            raise FileNotFoundError(f"run folder not found: {args.run}")
        gens = run_generations(args.run)
        if not gens:  # a multi-seed run (nst-train --seeds): every seed<k>/gen<g>, each seed's gen0 its baseline
            for seed in sorted((d for d in args.run.glob("seed*") if d.name[4:].isdigit()),
                               key=lambda d: int(d.name[4:])):
                gens += run_generations(seed)
        if not gens:
            raise FileNotFoundError(f"no finished generation (gen<k>/meta.json, or seed<k>/gen<g>/meta.json) in "
                                    f"{args.run}: train it first")
        sources += [str(d) for d in gens]
    sources += [str(c) for c in args.checkpoint]
    for m in args.model:
        if not m.startswith("timm:"):
            raise ValueError(f"--model takes timm:<name>, got {m!r} (use --checkpoint for a folder)")
        sources.append(m)
    if args.model:
        import timm

        unknown = [m for m in args.model if not timm.is_model(m[len("timm:"):])]
        if unknown:
            raise ValueError(f"--model {', '.join(unknown)}: not a timm model (see timm.list_models())")
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
    for dataset, figures in (summary.get("shifts") or {}).items():
        parts.append(f"{dataset} top-1 {figures['top1']:.2f}")
    for attack, by_eps in (summary.get("adversarial_top1") or {}).items():
        parts.append(f"{attack} " + " ".join(f"{e}:{v:.1f}" for e, v in by_eps.items()))
    return " | ".join(parts)


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def probe_seconds_per_image(model: Any, meta: dict[str, Any], device: str, batch: int, amp: bool) -> float:
    """Seconds per image of one forward pass, timed on a small random batch after a warm-up (the plan's estimate)."""
    import torch

    x = torch.rand(min(batch, 4), *meta["input_size"], device=device)
    context = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if amp else torch.inference_mode()
    best = float("inf")
    with torch.inference_mode(), context:
        model(x)  # warm-up: kernels chosen, memory allocated
        for _ in range(3):  # the fastest of three: a busy machine's stalls are not the model's speed
            start = time.perf_counter()
            model(x)
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return best / x.shape[0]


def format_plan(name: str, meta: dict[str, Any], plans: list[Any], skipped: dict[str, str],
                seconds_per_image: float, device: str) -> str:
    """The plan of one model as text: suites, cells, images per cell, forward images, cache, estimated time."""
    c, h, w = meta["input_size"]
    lines = [f"model {name}: {h}x{w}, crop_pct {meta.get('crop_pct', '-')}, {meta.get('crop_mode', 'center')}, "
             f"{meta.get('interpolation', '-')}; weights {meta.get('weights', '-')} (sha256 "
             f"{str(meta.get('sha256') or '-')[:12]})",
             f"  {'suite':<20}{'dataset':<26}{'cells':>6}{'images/cell':>13}{'forward':>12}{'cache':>11}  note"]
    forward = cache = 0
    for item in plans:
        lines.append(f"  {item.suite:<20}{item.dataset:<26}{item.cells:>6}{item.images:>13}{item.forward:>12}"
                     f"{_bytes(item.cache_bytes):>11}  {item.note}")
        forward += item.forward
        cache += item.cache_bytes
    for suite, reason in skipped.items():
        lines.append(f"  {suite:<20}skipped: {reason}")
    lines.append(f"  estimate: {_duration(forward * seconds_per_image)} of forward passes ({forward} images at "
                 f"{1000 * seconds_per_image:.2f} ms/image, probed on {device}); generating images and reading "
                 f"files not included; at most {_bytes(cache)} of generated images cached; cells already stored "
                 "are read back, not recomputed")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `nst-eval` console script: check every argument, plan, then evaluate."""
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
    except ValueError as exc:
        print(f"nst-eval: error: {exc}", file=sys.stderr)
        return 2
    import torch

    from nst_common import distributed
    from nst_common.errors import CheckpointError, DataError, describe_os_error

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    distributed.init()  # under torchrun: each rank scores a shard of every set, rank 0 writes and prints
    main_rank = distributed.is_main()
    level = (logging.DEBUG if args.verbose else logging.INFO) if main_rank else logging.WARNING
    logging.basicConfig(level=level, format="nst-eval: %(message)s")
    if not args.verbose:
        logging.getLogger("timm").setLevel(logging.WARNING)  # timm's own load messages repeat what the plan says
    from eval.api import evaluate, summarize
    from eval.context import DataSources, EvalContext, EvalOptions, EvaluationError
    from eval.store import ResultStore
    from eval.suites import resolve_suites
    from nst_core import load_model

    try:
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: no CUDA device here; use --device cpu")
        sources = model_sources(args)
        out = default_out(args)
        options = EvalOptions(
            device=args.device, batch_size=args.batch_size, workers=args.workers, compile=args.compile,
            limit=args.limit,
            attack_limit=args.attack_limit, amp=args.amp, force=args.force, seed=args.seed, eps=args.eps,
            attacks=args.attacks, pgd_steps=args.pgd_steps, pgd_alpha=args.pgd_alpha,
            pgd_random_start=not args.no_random_start, corruption_backend=args.corruption_backend,
            corruption_preset=args.corruption_preset, corruption_rng=args.corruption_rng,
            corruptions=args.corruptions, cache_dir=args.cache_dir, progress=not args.no_progress and main_rank,
            perturbations=args.perturbations, perturbation_difficulty=args.perturbation_difficulty,
            perturbation_limit=args.perturbation_limit, corruption_limit=args.corruption_limit,
            imagenet_c_method=args.imagenet_c_method, imagenet_p_method=args.imagenet_p_method)
        data = DataSources(val=args.val, imagenet_c=args.imagenet_c, imagenet_a=args.imagenet_a,
                           imagenet_p=args.imagenet_p, imagenet_r=args.imagenet_r,
                           imagenet_sketch=args.imagenet_sketch, imagenet_v2=args.imagenet_v2)
        weights = dict(zip(args.model, args.weights))
        loaded = []
        for source in sources:  # every model loaded and every suite planned before anything is measured
            model, meta = load_model(source, device=args.device, pretrained=args.pretrained and source in args.model,
                                     weights=weights.get(source),
                                     eval_size=args.eval_size if source in args.model else None)
            ctx = EvalContext(model, meta, ResultStore(None), data, options, args.baseline)
            _, plans, skipped = resolve_suites(args.suite, ctx)
            if not plans:
                raise ValueError(f"{ctx.model_name}: no suite can run: " +
                                 "; ".join(f"{k}: {v}" for k, v in skipped.items()))
            if main_rank:
                rate = probe_seconds_per_image(model, meta, args.device, args.batch_size, args.amp)
                print(format_plan(ctx.model_name, meta, plans, skipped, rate, args.device), flush=True)
            loaded.append((source, model, meta))
        if args.dry_run:
            if main_rank:
                print("dry run: nothing was computed or written")
            distributed.shutdown()
            return 0
        with ResultStore(out / "results.sqlite") as store:
            for source, model, meta in loaded:
                rows = evaluate(model, meta, args.suite, data=data, options=options, store=store, out=out,
                                baseline=args.baseline)
                if main_rank:
                    print(_headline(str(meta.get("name") or source), summarize(rows)), flush=True)
        if main_rank:
            print(f"results: {out / 'results.sqlite'}; summary: {out / 'summary.json'}")
    except (EvaluationError, CheckpointError, DataError, ValueError) as exc:
        print(f"nst-eval: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused a read or write: exit 1, like nst-train and nst-report
        print(f"nst-eval: error: {describe_os_error(exc, '; a rerun keeps the cells already stored')}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nst-eval: interrupted; finished cells are stored, run the same command again to resume",
              file=sys.stderr)
        return 130
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
