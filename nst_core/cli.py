"""`nst-train`: train the generations of a Noisy Student run from a YAML config."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from nst_core.checkpoint import CheckpointError
from nst_core.config import ConfigError, load_config
from nst_core.data import DataError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nst-train", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML run config (see configs/)")
    parser.add_argument("--out", help="run directory (default: runs/<name>)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the config's, 'auto')")
    parser.add_argument("--data-dir", help="dataset folder (overrides data.data_dir)")
    parser.add_argument("--download", action="store_true", help="allow downloading the dataset when not found")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=2 (value parsed as YAML); repeatable")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def parse_overrides(pairs: list[str]) -> dict:
    """`key=value` strings to a dict, values parsed as YAML (so numbers, lists and booleans work)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nst_core.engine import run

    overrides = parse_overrides(args.set)
    if args.data_dir:
        overrides["data.data_dir"] = args.data_dir
    if args.download:
        overrides["data.download"] = True
    try:
        cfg = load_config(args.config, overrides)
        out = Path(args.out) if args.out else Path("runs") / cfg.name
        metas = run(cfg, out, device=args.device, progress=not args.quiet)
    except (ConfigError, DataError, CheckpointError) as exc:
        print(f"nst-train: error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{'generation':<11}{'model':<28}{'test top-1 %':>13}")
    for meta in metas:
        print(f"gen{meta['generation']:<8}{meta['arch']:<28}{meta['metrics']['test_top1']:>13.2f}")
    print(f"checkpoints in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
