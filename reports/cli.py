"""`nst-report`: write the comparison report for one or more results stores."""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys

from nst_common.errors import describe_os_error

# pandas, matplotlib and the report modules wait until the arguments are parsed: --help and argument errors answer
# at once.

EXIT_BAD_INPUT = 2  # a store, flag or file that cannot be used
EXIT_IO = 1  # the file system refused a write (read-only --out, full disk)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build the report and print where it went."""
    parser = argparse.ArgumentParser(prog="nst-report", description=__doc__)
    parser.add_argument("--results", nargs="+", required=True, metavar="STORE",
                        help="results.sqlite files written by nst-eval (several are merged)")
    parser.add_argument("--out", required=True, help="output folder for report.md, report.html, tables/, figures/")
    parser.add_argument("--baseline", help="model name the changes are measured against (default: the first model)")
    parser.add_argument("--examples", help="image array (.npz with `images`, optional `titles`; or .npy) to show")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--verbose", action="store_true", help="debug log messages (the libraries' too)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="nst-report: %(message)s")
    from reports.assemble import build

    try:
        paths = build(args.results, args.out, baseline=args.baseline, examples=args.examples)
    except (FileNotFoundError, ValueError) as error:
        print(f"nst-report: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except sqlite3.Error as error:
        print(f"nst-report: error: reading {' '.join(args.results)}: {error}; give the results.sqlite files that "
              "nst-eval wrote", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:
        print(f"nst-report: error: {describe_os_error(error)}", file=sys.stderr)
        return EXIT_IO
    if not args.quiet:
        print(f"wrote {len(paths)} files; open {paths['report.html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
