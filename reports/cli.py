"""`nst-report`: write the comparison report for one or more results stores."""

from __future__ import annotations

import argparse
import sys

from reports.assemble import build


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build the report and print where it went."""
    parser = argparse.ArgumentParser(prog="nst-report", description=__doc__)
    parser.add_argument("--results", nargs="+", required=True, metavar="STORE",
                        help="results.sqlite files written by nst-eval (several are merged)")
    parser.add_argument("--out", required=True, help="output folder for report.md, report.html, tables/, figures/")
    parser.add_argument("--baseline", help="model name the changes are measured against (default: the first model)")
    parser.add_argument("--examples", help="image array (.npz with `images`, optional `titles`; or .npy) to show")
    args = parser.parse_args(argv)
    try:
        paths = build(args.results, args.out, baseline=args.baseline, examples=args.examples)
    except (FileNotFoundError, ValueError) as error:
        print(f"nst-report: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} files; open {paths['report.html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
