#!/usr/bin/env python
"""Print the README's tables for a finished language-model sweep (task: lm) from its results.csv, curves.csv and
references.csv.

    .venv/bin/python scripts/results_lm_tables.py sweeps/lm_text            # or docs/results_lm_text
    .venv/bin/python scripts/results_lm_tables.py --converged docs/results_lm_converged

One markdown table per class count V: each cell's loss, the steps it trained in its budget, tokens per second and the
median step time, the peak memory of its process, its exact held-out bits per byte at the end and the best it reached
(the minimum over its evaluations), the per-token perplexity at the end, the training seconds it took to get
halfway from the start to the best any cell reached at that V ("-" if never) and the seconds its exact evaluations cost
(not training time). Then the references on the same held-out text: the unigram model every cell starts from and a
Kneser–Ney trigram model per V, gzip/bz2/xz given the training text as context.

--converged (a step-budget sweep such as configs/sweep_lm_converged.yaml): one table per V of where each loss ends:
steps, training seconds, bits per byte at the end and the best, the gap to the exact softmax's end (bits per byte),
the perplexity at the end, and the change of bits per byte over the last curve interval (its steps in brackets):
near 0, the loss has stopped improving at this budget.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path


def _f(value, fmt: str) -> str:
    try:
        return format(float(value), fmt)
    except (TypeError, ValueError):
        return "-"


def _label(r: dict) -> str:
    parts = [r["loss"]]
    if r.get("sampler"):
        parts.append(r["sampler"])
    if r.get("S") and r["loss"] in ("sampled", "nce"):
        parts.append(f"S={r['S']}")
    if r.get("finish_with_full"):
        parts.append(f"then exact (last {float(r['finish_with_full']):.0%})")
    return " ".join(parts)


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def converged(root: Path) -> int:
    rows = [r for r in _read(root / "results.csv") if r.get("task") == "lm"]
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for p in _read(root / "curves.csv"):
        try:
            curves[p["cell"]].append((int(p["step"]), float(p["bpb"])))
        except (KeyError, TypeError, ValueError):
            continue
    by_v: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_v[r["V"]].append(r)
    for v, cells in sorted(by_v.items(), key=lambda kv: int(kv[0] or 0)):
        exact = [float(r["bpb"]) for r in cells if r["loss"] == "full" and not r.get("finish_with_full") and r.get("bpb")]
        print(f"**V = {int(v):,}**\n")
        print("| loss | steps | train s | bits/byte at end | best bits/byte | vs exact at end | ppl at end "
              "| last interval: change (steps) | status |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in sorted(cells, key=lambda r: float(r.get("bpb") or "inf")):
            pts = sorted(curves.get(r["cell"], []))
            best = min((b for _, b in pts), default=None)
            last = f"{pts[-1][1] - pts[-2][1]:+.3f} ({pts[-2][0]}-{pts[-1][0]})" if len(pts) >= 2 else "-"
            gap = f"{float(r['bpb']) - exact[0]:+.3f}" if exact and r.get("bpb") else "-"
            print(f"| {_label(r)} | {r.get('steps') or '-'} | {_f(r.get('train_s'), ',.0f')} | {_f(r.get('bpb'), '.3f')} | "
                  f"{_f(best, '.3f')} | {gap} | {_f(r.get('ppl'), ',.0f')} | {last} | {r.get('status')} |")
        print()
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--converged":
        return converged(Path(argv[1]))
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[3].strip(), file=sys.stderr)
        return 2
    root = Path(argv[0])
    rows = [r for r in _read(root / "results.csv") if r.get("task") == "lm"]
    best: dict[str, float] = {}
    for p in _read(root / "curves.csv"):
        try:
            b = float(p["bpb"])
        except (KeyError, TypeError, ValueError):
            continue
        best[p["cell"]] = min(best.get(p["cell"], b), b)
    by_v: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_v[r["V"]].append(r)
    for v, cells in sorted(by_v.items(), key=lambda kv: int(kv[0] or 0)):
        budget = {_f(r.get("train_s"), ".0f") for r in cells}
        print(f"**V = {int(v):,}** (training seconds per cell: {', '.join(sorted(budget))})\n")
        print("| loss | steps | tokens/s | step ms | peak MB | bits/byte at end | best bits/byte | ppl at end "
              "| time to target (s) | eval s | status |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in sorted(cells, key=lambda r: float(best.get(r["cell"], r.get("bpb") or "inf") or "inf")):
            print(f"| {_label(r)} | {r.get('steps') or '-'} | {_f(r.get('tokens_per_sec'), ',.0f')} | "
                  f"{_f(r.get('step_ms'), '.0f')} | {_f(r.get('peak_mem_mb'), ',.0f')} | {_f(r.get('bpb'), '.3f')} | "
                  f"{_f(best.get(r['cell']), '.3f')} | {_f(r.get('ppl'), ',.0f')} | "
                  f"{_f(r.get('time_to_target'), '.1f')} | {_f(r.get('eval_s'), '.0f')} | {r.get('status')} |")
        print()
    refs = _read(root / "references.csv")
    if refs:
        print("References on the same held-out text:\n")
        print("| reference | V | bits/byte |")
        print("|---|---|---|")
        for r in refs:
            print(f"| {r['reference']} | {_f(r.get('V'), ',.0f') if r.get('V') else 'any'} | {_f(r['bpb'], '.3f')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
