"""Print the README's demo figures from a finished demo run, so they are copied from output, not typed by hand.

    .venv/bin/python scripts/demo_figures.py [runs/fashion_mnist]

Reads every `gen<k>/meta.json` (model, parameters, test top-1 on all 10,000 test images, the pseudo labels'
accuracy on the pool) and `eval/summary.json` (clean top-1, mCE, mFR on the evaluated subsets) and prints the
markdown table and the sentence the README shows.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/fashion_mnist")
    gens = sorted((d for d in run.glob("gen*") if (d / "meta.json").is_file()), key=lambda d: int(d.name[3:]))
    if not gens:
        sys.exit(f"demo_figures: no finished gen<k>/meta.json under {run}: run bash scripts/demo.sh first")
    from safetensors import safe_open

    print("| generation | model: timm `test_efficientnet`, depth x2 | parameters | learns from | test top-1 (all 10,000) |")
    print("|---|---|---:|---|---:|")
    metas = []
    for d in gens:
        meta = json.loads((d / "meta.json").read_text())
        metas.append(meta)
        with safe_open(str(d / "model.safetensors"), "pt") as f:
            params = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys()
                         if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
        k = meta["generation"]
        channels = (meta.get("model_kwargs") or {}).get("channel_multiplier", 1.0)
        if k == 0:
            source = f"the {meta['data']['labeled']:,} labeled images"
        else:
            accuracy = (meta.get("pseudo_labels") or {}).get("accuracy_on_pool")
            label = f" ({accuracy:.2f} % correct)" if isinstance(accuracy, (int, float)) else ""
            source = f"+ the pool, soft-labeled by gen{k - 1}{label}"
        role = "teacher" if k == 0 else "student"
        print(f"| gen{k} ({role}) | channels x{channels:g} | {params / 1e6:.2f} M | {source} | "
              f"{meta['metrics']['test_top1']:.2f} % |")
    summary_path = run / "eval" / "summary.json"
    if summary_path.is_file():
        models = json.loads(summary_path.read_text())["models"]
        rows = [models.get(m["name"], {}) for m in metas]

        def series(key: str, fmt: str = "{:.1f}") -> str:
            return " -> ".join(fmt.format(r[key]) if isinstance(r.get(key), (int, float)) else "n/a" for r in rows)

        mfr = " -> ".join(f"{(r.get('perturbation') or {}).get('mfr'):.1f}"
                          if isinstance((r.get("perturbation") or {}).get("mfr"), (int, float)) else "n/a" for r in rows)
        print(f"\nOn those subsets gen0 -> ... -> gen{len(rows) - 1}: clean top-1 {series('clean_top1')} %, "
              f"mCE {series('mce')}, mFR {mfr}.")


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


if __name__ == "__main__":
    main()
