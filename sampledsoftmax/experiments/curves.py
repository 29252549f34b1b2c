"""Learning curves of a sweep: exact held-out CE against training seconds, one curve per cell, and the time each
cell takes to reach a target quality.

A cell's curve is read back from its own TensorBoard run (the trainer logs ``eval/full_ce``, ``eval/excess_ce``,
``eval/top10``, ``eval/train_seconds`` and ``eval/eval_seconds`` at every evaluation; ``eval.curve_points`` spaces
them log-uniformly over the run), so ``curves.csv`` can always be rebuilt from the runs, also after a resumed sweep.

Time to target (the chart that answers "at my class count, which loss gets me there first"): for each class count
V, the target is halfway (``FRACTION``) from where the cells start (the median of their evaluations before the first
step) to the best value any cell reached at that V; a cell's time to target is the training seconds of its first
evaluation at or below the target (None if it never gets there). Halfway, so that several losses reach it at every
V (a target at the best + a margin is reached by the best cell alone where it leads by more than the margin, and
then the chart says only which cell ended lowest). On the planted corpus the value is the excess CE over the Bayes
optimum, on real text the exact CE itself, for language models bits per byte.
"""

from __future__ import annotations

import csv
import io
import math
import os
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Optional

# identity of a cell, copied from its results row into each of its curve points
ID_COLUMNS = ["cell", "loss", "sampler", "S", "subtract_log_q", "finish_with_full", "optimizer", "V", "budget"]
POINT_COLUMNS = ["step", "train_s", "eval_s", "full_ce", "excess_ce", "top10", "bpb"]
CURVE_COLUMNS = ID_COLUMNS + POINT_COLUMNS
FRACTION = 0.5  # the time-to-target threshold: this fraction of the way from the cells' start to the best at a V

_TAGS = {"full_ce": "eval/full_ce", "excess_ce": "eval/excess_ce", "top10": "eval/top10",
         "train_s": "eval/train_seconds", "eval_s": "eval/eval_seconds", "bpb": "eval/bpb"}


def read_run_curve(run_dir: Path) -> list[dict[str, Any]]:
    """The evaluations of one training run, in step order: step, train_s, eval_s, full_ce, excess_ce, top10."""
    from ..training.tbcompat import use_tensorboard_stub

    use_tensorboard_stub()  # tensorboard's reader would import TensorFlow where it is installed
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags().get("scalars", []))
    by_step: dict[int, dict[str, Any]] = defaultdict(dict)
    for key, tag in _TAGS.items():
        if tag in tags:
            for e in acc.Scalars(tag):
                by_step[e.step][key] = e.value  # a resumed run may log a step twice: the last value wins
    return [{"step": s, **by_step[s]} for s in sorted(by_step) if "full_ce" in by_step[s]]


def _num(value: Any) -> Optional[float]:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def ce_metric(points: Iterable[dict]) -> str:
    """"bpb" when every point has it (language models on real text: comparable across vocabularies), else
    "excess_ce" when every point has it (the planted corpus), else "full_ce" (real text)."""
    points = list(points)
    for metric in ("bpb", "excess_ce"):
        if points and all(_num(p.get(metric)) is not None for p in points):
            return metric
    return "full_ce"


def collect(rows: Iterable[dict]) -> list[dict[str, Any]]:
    """Every curve point of the "ok" rows that have a run directory, with the row's identity columns."""
    out = []
    for r in rows:
        run_dir = r.get("run_dir")
        if not str(r.get("status", "")).startswith("ok") or not run_dir or not Path(run_dir).is_dir():
            continue
        for p in read_run_curve(Path(run_dir)):
            out.append({**{k: r.get(k, "") for k in ID_COLUMNS}, **p})
    return out


def write_curves(out_dir: Path, points: list[dict]) -> Path:
    """<out_dir>/curves.csv, atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for p in points:
        w.writerow({k: _fmt(p.get(k)) for k in CURVE_COLUMNS})
    path = out_dir / "curves.csv"
    atomic_write(path, buf.getvalue())
    return path


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_curves(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [dict(r) for r in csv.DictReader(f)]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def by_cell(points: Iterable[dict]) -> dict[str, list[dict]]:
    """Curve points grouped by cell id, each in training-time order."""
    cells: dict[str, list[dict]] = defaultdict(list)
    for p in points:
        cells[str(p["cell"])].append(p)
    for pts in cells.values():
        pts.sort(key=lambda p: (_num(p.get("train_s")) or 0.0, int(float(p.get("step") or 0))))
    return dict(cells)


def targets(points: Iterable[dict], fraction: float = FRACTION) -> dict[str, float]:
    """V -> target value: `fraction` of the way from the start (the median of the cells' step-0 evaluations, or of
    their first evaluations where none is at step 0) to the best value any cell reached at that V."""
    points = list(points)
    metric = ce_metric(points)
    best: dict[str, float] = {}
    start: dict[str, list[float]] = defaultdict(list)  # step-0 values at each V
    first: dict[str, list[float]] = defaultdict(list)  # each cell's first value (where no cell has step 0)
    for pts in by_cell(points).values():
        vals = [(p, ce) for p in pts if (ce := _num(p.get(metric))) is not None]
        if not vals:
            continue
        v = str(vals[0][0].get("V"))
        first[v].append(vals[0][1])
        start[v] += [ce for p, ce in vals if int(float(p.get("step") or 0)) == 0]
        best[v] = min([best.get(v, math.inf)] + [ce for _, ce in vals])
    mids = {v: statistics.median(start[v] or first[v]) for v in best}
    return {v: mids[v] - fraction * max(mids[v] - b, 0.0) for v, b in best.items()}


def time_to_target(curve: list[dict], target: float, metric: str) -> Optional[float]:
    """Training seconds of the first evaluation at or below `target` (None: never)."""
    for p in curve:
        ce = _num(p.get(metric))
        if ce is not None and ce <= target:
            return _num(p.get("train_s")) or 0.0
    return None


def add_time_to_target(rows: list[dict], points: list[dict], fraction: float = FRACTION) -> None:
    """Set each row's "time_to_target" (seconds, or None) and "target" (the threshold at its V, `targets`)."""
    metric = ce_metric(points)
    goal = targets(points, fraction)
    curves = by_cell(points)
    for r in rows:
        t = goal.get(str(r.get("V")))
        r["target"] = t
        curve = curves.get(str(r.get("cell")))
        r["time_to_target"] = time_to_target(curve, t, metric) if (curve and t is not None) else None
