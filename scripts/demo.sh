#!/usr/bin/env bash
# The README's main command: set up, train the demo's Noisy Student generations on Fashion-MNIST,
# evaluate every generation with the robustness suite, and write the comparison report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN=${RUN:-runs/fashion_mnist}
.venv/bin/nst-train --config configs/fashion_mnist.yaml --out "$RUN"
.venv/bin/nst-eval --suite robustness --run "$RUN"
.venv/bin/nst-report --results "$RUN/eval/results.sqlite" --out "$RUN/report"
echo "report: $RUN/report/report.html"
