#!/usr/bin/env python
"""Print the README's per-V tables from a finished sweep's results.csv.

    .venv/bin/python scripts/results_tables.py sweeps/default            # or docs/results

One markdown table per class count V (the real V of the cells): each cell's loss, the steps it trained in its
budget, the median step time, the peak memory of its process, the final exact CE (and excess over the Bayes optimum
on the planted corpus), the training seconds it took to get halfway from the cells' start to the best CE any cell reached at
that V (time_to_target; "-" if never), its optimizer and starting rate (results without that column: "-") and the
seconds its exact evaluations cost (not counted as training); on real text also WordSim-353 (Spearman) and the
Google analogy accuracy at the end. The bias group (several S of one sampler at one V) is printed as its own table:
CE reached in the budget against S.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path


def _f(value: str, fmt: str) -> str:
    try:
        return format(float(value), fmt)
    except (TypeError, ValueError):
        return "-"


def _label(r: dict) -> str:
    loss = r["loss"]
    parts = [loss]
    if r.get("sampler"):
        parts.append(r["sampler"])
    if r.get("S") and loss != "negative":
        parts.append(f"S={r['S']}")
    if r.get("subtract_log_q") == "false":
        parts.append("**no log-Q**")
    if r.get("finish_with_full"):
        parts.append(f"then exact (last {float(r['finish_with_full']):.0%})")
    return " ".join(parts)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    path = Path(argv[0]) / "results.csv"
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f)]
    excess = any(r.get("excess_ce") for r in rows)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        suffix = r["cell"].rsplit("-", 1)[-1]  # the planted sweep's cells end in their budget, e.g. "45s"
        budget = suffix if suffix[:1].isdigit() else f"{float(r.get('train_s') or 0):.0f}s"
        groups[(r["V"], budget)].append(r)
    words = any(r.get("wordsim") for r in rows)  # real text: the word-vector metrics too
    ce = "excess CE" if excess else "CE"
    for (v, budget), cells in sorted(groups.items(), key=lambda kv: (int(kv[0][0] or 0), kv[0][1])):
        sweep_s = {r.get("S") for r in cells if r["loss"] == "sampled"}
        if len(sweep_s) > 2 and len(cells) > 12:  # the bias group: CE against S
            print(f"\nV = {int(v):,}, {budget} per cell: {ce} reached against S (sampled softmax)\n")
            series = defaultdict(dict)
            for r in cells:
                series[(r["sampler"], r["subtract_log_q"])][int(r["S"])] = r["excess_ce" if excess else "full_ce"]
            ss = sorted({s for d in series.values() for s in d})
            print("| sampler | log-Q | " + " | ".join(f"S={s}" for s in ss) + " |")
            print("|---|---|" + "---|" * len(ss))
            for (sampler, logq), d in sorted(series.items()):
                print(f"| {sampler} | {logq} | " + " | ".join(_f(d.get(s), ".3f") for s in ss) + " |")
            continue
        print(f"\nV = {int(v):,}, {budget} of training per cell\n")
        extra = " WordSim | analogy |" if words else ""
        print(f"| loss | optimizer | steps | step ms | peak MB | final {ce} | time to target (s) | eval s |{extra} "
              "status |")
        print("|---|---|---|---|---|---|---|---|" + ("---|---|" if words else "") + "---|")
        for r in sorted(cells, key=lambda r: float(r.get("excess_ce" if excess else "full_ce") or 1e9)):
            metrics = f" {_f(r.get('wordsim'), '.3f')} | {_f(r.get('analogy'), '.3f')} |" if words else ""
            print(f"| {_label(r)} | {r.get('optimizer') or '-'} | {r.get('steps') or '-'} | "
                  f"{_f(r.get('step_ms'), '.1f')} | "
                  f"{_f(r.get('peak_mem_mb'), '.0f')} | {_f(r.get('excess_ce' if excess else 'full_ce'), '.3f')} | "
                  f"{_f(r.get('time_to_target'), '.2f')} | {_f(r.get('eval_s'), '.1f')} |{metrics} {r['status']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
