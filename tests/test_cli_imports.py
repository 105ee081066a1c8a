"""The three command lines parse and check their arguments before importing anything heavy: `--help` and an argument
error import none of torch, timm, pandas or matplotlib (so they answer at once, whatever the machine's load)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

QUICK = str(Path(__file__).resolve().parents[1] / "configs" / "quick.yaml")

HEAVY = ("torch", "timm", "pandas", "matplotlib", "torchvision", "torchattacks", "scipy")

PROBE = """
import json, sys
from {module} import main
try:
    code = main({argv!r})
except SystemExit as exit:
    code = exit.code
print(json.dumps({{"code": code, "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def probe(module: str, argv: list[str]) -> dict:
    """Run `module.main(argv)` in a fresh interpreter; its exit code and the heavy modules it imported."""
    code = PROBE.format(module=module, argv=argv, heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["nst_core.cli", "eval.cli", "reports.cli"])
def test_help_imports_nothing_heavy(module: str) -> None:
    result = probe(module, ["--help"])
    assert result == {"code": 0, "heavy": []}


@pytest.mark.parametrize(("module", "argv"), [
    ("nst_core.cli", ["--config", QUICK, "--seeds", "1,x"]),  # a bad flag value
    ("nst_core.cli", []),  # --config missing
    ("nst_core.cli", ["--config", "no-such-config.yaml"]),  # the config is read before torch is imported
    ("nst_core.cli", ["--config", QUICK, "--set", "train.no_such_key=1"]),  # a key the config does not have
    ("eval.cli", ["--suite", "nonsense"]),
    ("reports.cli", ["--out", "somewhere"]),  # --results missing
])
def test_argument_error_imports_nothing_heavy(module: str, argv: list[str]) -> None:
    result = probe(module, argv)
    assert result == {"code": 2, "heavy": []}


def test_package_imports_are_light() -> None:
    """`import nst_core`, `import reports` and `import eval` load their heavy parts only when those are used."""
    code = ("import json, sys, nst_core, reports, eval\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


@pytest.mark.parametrize("module", ["nst_core.cli", "eval.cli", "reports.cli"])
def test_quiet_and_verbose_alike_in_every_command(module: str) -> None:
    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--quiet" in proc.stdout and "--verbose" in proc.stdout
