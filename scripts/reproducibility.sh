#!/usr/bin/env bash
# What reproduces bit for bit (docs/beyond-anchors.md): the quick config trained three times, with 1 intra-op thread,
# then twice with 2, each into its own folder; prints each generation's weights sha256 (first 16 hex digits) and test
# top-1. Same thread count: identical weights expected; another thread count: other float sums, other weights.
# Usage: bash scripts/reproducibility.sh [out folder, default /tmp/nst-reproducibility]   (~3-6 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/nst-reproducibility}
for run in 1 2 2-again; do
  threads=${run%-again}
  rm -rf "$OUT/threads$run"
  OMP_NUM_THREADS=$threads .venv/bin/nst-train --config configs/quick.yaml --out "$OUT/threads$run" --quiet
  for meta in "$OUT/threads$run"/gen*/meta.json; do
    .venv/bin/python -c "import json, sys; m = json.load(open(sys.argv[1])); \
print(f'threads {sys.argv[2]:8} gen{m[\"generation\"]}  sha256 {m[\"sha256\"][:16]}  test top-1 {m[\"metrics\"][\"test_top1\"]:.2f} %')" \
      "$meta" "$run"
  done
done
