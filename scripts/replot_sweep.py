#!/usr/bin/env python
"""Rebuild a finished sweep's derived files from its rows alone: targets and time to target (results.csv,
results.md) and every plot, from results.csv and curves.csv (the cells' TensorBoard runs are not needed, so this
works on the committed copies under docs/ too).

    .venv/bin/python scripts/replot_sweep.py docs/results       # or sweeps/default, docs/results_lm_text, ...
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without installing

from sampledsoftmax.experiments import curves  # noqa: E402
from sampledsoftmax.experiments.plots import plot_sweep  # noqa: E402
from sampledsoftmax.experiments.sweep import _read_results, write_results  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not (Path(argv[0]) / "results.csv").is_file():
        print("usage: replot_sweep.py SWEEP_DIR (a directory with results.csv and curves.csv)", file=sys.stderr)
        return 2
    out = Path(argv[0])
    rows = _read_results(out / "results.csv")
    points = curves.read_curves(out / "curves.csv")
    curves.add_time_to_target(rows, points)
    write_results(out, rows)
    for p in plot_sweep(out, rows):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
