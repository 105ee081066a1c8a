"""One progress convention for nst-train, nst-eval and nst-report (and the Python API under them).

`Progress` is tqdm where someone watches (stderr is a terminal, or a Jupyter kernel draws the widget); when the
output goes to a file or a pipe it draws nothing (no carriage-return frames in logs) and instead writes one plain
line to stderr when it closes or its loop ends: what it was (the bar's `desc`), how much, how long and the rate,
e.g. ``gen1 epoch 3/8: 120 step in 10.2 s (11.8 step/s), loss=0.412``. Training writes such a line per epoch,
pseudo-labeling per pass, the evaluator per cell. `enabled=False` (``--quiet``, or a rank other than 0 under
torchrun) writes neither. Imports nothing heavy.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterator

from tqdm.auto import tqdm

__all__ = ["Progress", "interactive"]


def interactive() -> bool:
    """True when progress bars can be seen: stderr is a terminal or the code runs in a Jupyter kernel."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class Progress(tqdm):
    """tqdm on a terminal; elsewhere one summary line per bar (see the module docstring). Same arguments as tqdm,
    with `enabled` in place of `disable`."""

    def __init__(self, *args: Any, enabled: bool = True, **kwargs: Any) -> None:
        kwargs.pop("disable", None)
        self._plain = enabled and not interactive()
        self._count = 0.0
        self._start = time.perf_counter()
        self._written = False
        super().__init__(*args, disable=not enabled or self._plain, **kwargs)
        self._label = kwargs.get("desc") or ""
        self._what = kwargs.get("unit") or "it"

    def __iter__(self) -> Iterator[Any]:
        if not self._plain:
            yield from super().__iter__()
            return
        for item in self.iterable:
            yield item
            self._count += 1
        self.close()

    def update(self, n: float | None = 1) -> bool | None:
        """Advance by `n` (counted for the summary line when no bar is drawn)."""
        if self._plain:
            self._count += 1 if n is None else n
        return super().update(n)

    def __del__(self) -> None:
        """A bar collected without being closed (its loop ended by an error) writes no summary line: the error
        stays the last line on stderr."""
        self._written = True
        super().__del__()

    def close(self) -> None:
        """Close the bar, or write the summary line once when no bar is drawn."""
        if self._plain and not self._written:
            self._written = True
            seconds = time.perf_counter() - self._start
            rate = f"{self._count / seconds:.1f}" if seconds > 0 else "-"
            count = f"{self._count:.0f}" if float(self._count).is_integer() else f"{self._count:.1f}"
            extra = getattr(self, "postfix", None)
            line = f"{self._label}: {count} {self._what} in {seconds:.1f} s ({rate} {self._what}/s)"
            print(f"{line}, {extra}" if extra else line, file=sys.stderr, flush=True)
        super().close()
