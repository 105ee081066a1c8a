"""One progress convention: bars only where someone watches; redirected output gets one plain line per bar (what,
how much, how long, the rate) and no carriage-return frames; `enabled=False` (--quiet) writes nothing."""
from __future__ import annotations

import re
import subprocess
import sys

CODE = """
from nst_common.progress import Progress
for step in Progress(range(4), desc="gen1 epoch 1/2", unit="step", leave=False):
    pass
bar = Progress(total=10, desc="clean/test", unit="img", leave=False)
bar.update(6)
bar.update(4)
bar.set_postfix(loss="0.250")
bar.close()
bar.close()  # one line only
for _ in Progress(range(3), desc="quiet", enabled=False):
    pass
print("done")
"""


def test_redirected_progress_is_one_plain_line_per_bar() -> None:
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(r"gen1 epoch 1/2: 4 step in \d+\.\d s \((\d+\.\d|-) step/s\)", lines[0]), lines[0]
    assert re.fullmatch(r"clean/test: 10 img in \d+\.\d s \((\d+\.\d|-) img/s\), loss=0.250", lines[1]), lines[1]
    assert proc.stdout == "done\n"


FAILING = """
import sys
from nst_common.progress import Progress
def run():
    for step in Progress(range(4), desc="gen0 epoch 1/1", unit="step"):
        raise ValueError("a bad image")
    bar = Progress(total=4, desc="never", unit="img")
try:
    run()
except ValueError as exc:
    print(f"nst-train: error: {exc}", file=sys.stderr)
def manual():
    bar = Progress(total=4, desc="clean imagenet", unit="img")
    bar.update(1)
    raise ValueError("another")
try:
    manual()
except ValueError as exc:
    print(f"nst-eval: error: {exc}", file=sys.stderr)
"""


def test_a_bar_ended_by_an_error_writes_no_line_after_the_error() -> None:
    proc = subprocess.run([sys.executable, "-c", FAILING], capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip().splitlines() == ["nst-train: error: a bad image", "nst-eval: error: another"]
