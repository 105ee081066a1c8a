"""`nst-train`: train the generations of a Noisy Student run from a YAML config.

Under torchrun (`torchrun --nproc_per_node N --no-python nst-train ...`) every process runs this same command: training
is data-parallel (DDP), pseudo-labeling sharded, and rank 0 alone writes files and prints.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from nst_common.errors import CheckpointError, DataError, DivergedError, describe_os_error
from nst_core.config import ConfigError, load_config, yaml_load  # PyYAML only; torch and timm wait until main()

EXIT_BAD_INPUT = 2  # a config, flag, data or checkpoint that cannot be used; training diverged
EXIT_IO = 1  # the file system refused a read or write (read-only folder, full disk)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nst-train", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML run config (see configs/)")
    parser.add_argument("--out", help="run directory (default: runs/<name>)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the config's, 'auto')")
    parser.add_argument("--data-dir", help="dataset folder (overrides data.data_dir)")
    parser.add_argument("--download", action="store_true", help="allow downloading the dataset when not found")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=2 (value parsed as YAML); repeatable")
    parser.add_argument("--pretrained", action="store_true",
                        help="allow downloading timm's pretrained weights for init.source timm:<name>")
    parser.add_argument("--ablate", action="append", default=[], metavar="SWITCH",
                        help="train the config and its variants for SWITCH as sibling runs "
                             "<out or runs>/<name>-<variant> (student_noise, labels, balance, teacher_noise, "
                             "model_size, unlabeled_data, unlabel_ratio, method); repeatable")
    parser.add_argument("--seeds", type=_seed_list, metavar="K,K,...",
                        help="train one run per seed into <out>/seed<k>/gen<g>/ (overrides the config's seeds:); "
                             "nst-eval --run <out> evaluates them all and nst-report aggregates over seeds")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress: no bars on a terminal, no per-epoch lines when the output is redirected")
    parser.add_argument("--verbose", action="store_true", help="debug log messages (the libraries' too)")
    return parser


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) < len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct integers >= 0, got {text!r}")
    return seeds


def parse_overrides(pairs: list[str]) -> dict:
    """`key=value` strings to a dict, values parsed as YAML (so numbers, lists and booleans work)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            overrides[key.strip()] = yaml_load(value)
        except yaml.YAMLError as exc:
            problem = " ".join(str(exc).split())  # one line
            raise ConfigError(f"--set {pair!r}: the value is not valid YAML ({problem}); quote it if it is text") from exc
    return overrides


RESUME_AFTER_SPACE = ", then rerun the same command: finished generations and epochs are kept"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="nst-train: %(message)s")
    try:  # the config is read and checked before torch is imported: a typo in it answers at once
        overrides = parse_overrides(args.set)
        if args.data_dir is not None:
            overrides["data.data_dir"] = args.data_dir
        if args.download:
            overrides["data.download"] = True
        if args.pretrained:
            overrides["init.pretrained"] = True
        if args.out is not None and not args.out.strip():
            raise ConfigError("--out is empty; give a folder for the run (default: runs/<name>)")
        cfg = load_config(args.config, overrides)
        seeds = args.seeds or cfg.seeds
        if args.ablate and seeds:
            raise ConfigError("--ablate with seeds (--seeds or seeds: in the config) is not supported; run one of them")
    except ConfigError as exc:
        print(f"nst-train: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"nst-train: error: {describe_os_error(exc, RESUME_AFTER_SPACE)}", file=sys.stderr)
        return EXIT_IO
    from nst_common import distributed
    from nst_core.engine import run, run_seeds
    from nst_core.sweep import run_sweep

    distributed.init()
    progress = not args.quiet and distributed.is_main()
    try:
        if args.ablate:
            runs = run_sweep(cfg, args.ablate, Path(args.out or "runs"), device=args.device, progress=progress)
        elif seeds:
            out = Path(args.out) if args.out else Path("runs") / cfg.name
            runs = run_seeds(cfg, out, seeds, device=args.device, progress=progress)
        else:
            out = Path(args.out) if args.out else Path("runs") / cfg.name
            runs = {out: run(cfg, out, device=args.device, progress=progress)}
    except (ConfigError, DataError, CheckpointError, DivergedError) as exc:
        print(f"nst-train: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"nst-train: error: {describe_os_error(exc, RESUME_AFTER_SPACE)}", file=sys.stderr)
        return EXIT_IO
    except KeyboardInterrupt:
        print("nst-train: interrupted; run the same command again to resume from the last finished epoch",
              file=sys.stderr)
        return 130
    main_rank = distributed.is_main()
    distributed.shutdown()
    if not main_rank:
        return 0
    for out, metas in runs.items():
        print(f"\n{'generation':<11}{'model':<28}{'test top-1 %':>13}")
        for meta in metas:
            print(f"gen{meta['generation']:<8}{meta['arch']:<28}{meta['metrics']['test_top1']:>13.2f}")
        print(f"checkpoints in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
