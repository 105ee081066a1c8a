#!/usr/bin/env bash
# The README's main command: set up, train the demo's Noisy Student generations on Fashion-MNIST,
# evaluate every generation with the robustness suite, and write the comparison report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN=${RUN:-runs/fashion_mnist}
SECONDS=0
.venv/bin/nst-train --config configs/fashion_mnist.yaml --out "$RUN"
echo "demo: nst-train took $((SECONDS / 60)) min $((SECONDS % 60)) s"
SECONDS=0
# The demo's subset sizes (fixed, seeded): 1,000 test images per corruption cell, 200 attacked images,
# 50 perturbation sequences; clean accuracy uses the same 1,000 images.
.venv/bin/nst-eval --suite robustness --run "$RUN" --limit 1000 --attack-limit 200 --perturbation-limit 50
echo "demo: nst-eval took $((SECONDS / 60)) min $((SECONDS % 60)) s"
.venv/bin/nst-report --results "$RUN/eval/results.sqlite" --out "$RUN/report"
echo "report: $RUN/report/report.html"
