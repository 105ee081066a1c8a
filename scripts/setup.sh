#!/usr/bin/env bash
# Set-up shared by the README's commands: a virtual environment with the project and its dependencies, and the
# Fashion-MNIST files. Idempotent: a second run only checks. Override the torch wheels with TORCH_SPEC, e.g.
#   TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cpu" scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

if ! command -v "$PYTHON" >/dev/null; then
  echo "setup: $PYTHON not found; install Python 3.10+ (Debian: apt-get install python3 python3-venv)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV" || { echo "setup: venv failed; on Debian: apt-get install python3-venv" >&2; exit 1; }
fi

stamp="$VENV/.nst-installed"
want="$(cat pyproject.toml; echo "$TORCH_SPEC")"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing dependencies into $VENV (torch is large: this takes a few minutes once)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q $TORCH_SPEC
  "$VENV/bin/python" -m pip install -q -e ".[test]"
  printf '%s' "$want" > "$stamp"
fi

# Fashion-MNIST: the Debian package where we can install it, else a torchvision download into data/.
if ! "$VENV/bin/python" -c "from nst_core.data import find_fashion_mnist; find_fashion_mnist('data')" 2>/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing the Debian package dataset-fashion-mnist"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
      || echo "setup: apt-get could not install dataset-fashion-mnist; trying a download" >&2
  fi
  "$VENV/bin/python" -c "from nst_core.data import find_fashion_mnist; find_fashion_mnist('data', download=True)" || {
    echo "setup: Fashion-MNIST is not available: install dataset-fashion-mnist (Debian) or put the IDX .gz files in data/" >&2
    exit 1
  }
fi
