#!/usr/bin/env bash
# Issue 14's multi-seed answer: the demo config trained with 3 seeds, every seed's generations evaluated with the
# demo's subsets (each seed's gen0 is its own CE / FR baseline), then the report's across-seed tables.
# Usage: bash scripts/multiseed.sh [seeds, default 0,1,2]   (RUN=... to choose the folder)
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-0,1,2}
RUN=${RUN:-runs/fashion_mnist_seeds}
SECONDS=0
.venv/bin/nst-train --config configs/fashion_mnist.yaml --out "$RUN" --seeds "$SEEDS" --quiet
echo "multiseed: nst-train ($SEEDS) took $((SECONDS / 60)) min $((SECONDS % 60)) s"
SECONDS=0
.venv/bin/nst-eval --suite robustness --run "$RUN" --limit 1000 --attack-limit 200 --perturbation-limit 50 --quiet
echo "multiseed: nst-eval took $((SECONDS / 60)) min $((SECONDS % 60)) s"
.venv/bin/nst-report --results "$RUN/eval/results.sqlite" --out "$RUN/report"
echo "report: $RUN/report/report.html"
