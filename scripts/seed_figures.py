"""Print the multi-seed answer (docs/beyond-anchors.md) from a finished `scripts/multiseed.sh` run, so the docs'
figures are copied from output, not typed by hand.

    .venv/bin/python scripts/seed_figures.py [runs/fashion_mnist_seeds]          # nst-train --seeds: one store
    .venv/bin/python scripts/seed_figures.py runs/fashion_mnist runs/fashion_mnist_seed1 runs/fashion_mnist_seed2

Each argument is a run folder whose `eval/results.sqlite` is read (one folder of `nst-train --seeds`, or one run per
seed trained as separate runs, e.g. `--set seed=1 --set name=<name>_seed1`: runs whose configs differ only in their
seed and name are grouped either way).

Reads the results stores with the report's own functions: `across_seeds` (per
generation: the mean over seeds and its 95 % t interval) and `seed_changes` (each generation minus the same seed's
gen0, paired by seed: mean change, 95 % t interval, each seed's change), and prints them as markdown tables; a change
is resolved when its interval excludes 0, better or worse by the quantity's direction (`reports.summary`).
"""
from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    runs = [Path(a) for a in sys.argv[1:]] or [Path("runs/fashion_mnist_seeds")]
    paths = [run / "eval" / "results.sqlite" for run in runs]
    for path in paths:
        if not path.is_file():
            sys.exit(f"seed_figures: {path} is missing: evaluate the run first (`bash scripts/multiseed.sh 0,1,2` "
                     "trains and evaluates a multi-seed run)")
    from reports import tables
    from reports.load import load_stores
    from reports.summary import lower_is_better

    store = load_stores(paths)
    groups = tables.seed_groups(store)
    long = tables.headline_long(store, None)
    means, changes = tables.across_seeds(long, groups), tables.seed_changes(long, groups)
    if means.empty:
        sys.exit(f"seed_figures: {', '.join(map(str, paths))} hold no runs that differ only in their seed")
    print(f"Mean over {means['seeds'].iloc[0]} seeds and 95 % t interval, per generation (each seed's value):\n")
    print("| quantity | generation | mean | 95 % interval | per seed |")
    print("|---|---|---:|---|---|")
    for r in means.itertuples():
        print(f"| {r.label} | gen{int(r.generation)} | {r.mean:.2f} | [{r.ci_low:.2f}, {r.ci_high:.2f}] | "
              f"{str(r.values).replace(', ', ' / ')} |")
    print("\nChange against gen0, paired by seed (mean, 95 % t interval, each seed's change):\n")
    print("| quantity | generation | mean change | 95 % interval | per seed | verdict |")
    print("|---|---|---:|---|---|---|")
    for r in changes.itertuples():
        resolved = r.ci_low > 0 or r.ci_high < 0
        verdict = ("no interval (the seeds' changes are all equal)" if r.ci_low == r.ci_high else
                   ("better" if (r.mean_change < 0) == lower_is_better(str(r.quantity)) else "worse") if resolved
                   else "not resolved (the interval spans 0)")
        print(f"| {r.label} | gen{int(r.generation)} | {r.mean_change:+.2f} | [{r.ci_low:+.2f}, {r.ci_high:+.2f}] | "
              f"{str(r.changes).replace(', ', ' / ')} | {verdict} |")


if __name__ == "__main__":
    main()
