"""`nst-report`: write the comparison report for one or more results stores."""

from __future__ import annotations

import argparse
import errno
import logging
import sqlite3
import sys
from pathlib import Path

# pandas, matplotlib and the report modules wait until the arguments are parsed: --help and argument errors answer
# at once.

EXIT_BAD_INPUT = 2  # a store, flag or file that cannot be used
EXIT_IO = 1  # the file system refused a write (read-only --out, full disk)


def describe_os_error(error: OSError) -> str:
    """A one-line message for a refused read or write: the path, the reason and what to do."""
    name = error.filename if error.filename is not None else "a file"
    where = Path(name).parent if isinstance(name, str) and Path(name).name.startswith(".") else name
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"cannot write {where}: {error.strerror}; free space or choose another --out"
    if error.errno == errno.EROFS:
        return f"cannot write {where}: {error.strerror}; choose another --out"
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"{where}: {error.strerror}; make it writable (readable, for an input file) or choose another --out"
    if error.errno in (errno.EEXIST, errno.ENOTDIR):
        return f"{name}: {error.strerror}; --out and its parents must be folders"
    return f"{name}: {error.strerror or error}"


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
