"""PNG plots of a sweep's results table: what each loss costs and how close it gets, as the class count V grows.

    from sampledsoftmax.experiments.plots import plot_sweep
    with open("sweeps/quick/results.csv", newline="") as f:
        plot_sweep(Path("sweeps/quick"), list(csv.DictReader(f)))  # -> the paths written

Files, each drawn only when its columns have values (a plot with nothing to show is not written):

- ``step_time_vs_V.png``: median step time (ms) against V, one line per method.
- ``peak_mem_vs_V.png``: peak memory (MB) against V.
- ``ce_vs_V.png``: excess CE over the Bayes optimum against V (``full_ce`` where no cell has ``excess_ce``; the
  y label says which); one panel per budget when the sweep has both ``pairs`` and ``seconds`` budgets.
- ``frontier.png``: wall time against CE, one panel per V (at most 4) and budget, one point per method; the
  Pareto-optimal points (nothing both faster and lower in CE) are ringed and joined by a step line.
- ``bias.png``: ``bias_gap`` (exact CE minus the sampled objective) against S, one panel per V, one line per
  (loss, sampler, logQ).

V and S axes are logarithmic with ticks at the values swept. A value axis (time, memory, CE) is logarithmic when its
values are all positive and span more than 3x (memory: 30x), else linear: a narrow range reads better that way.

A method (a *series*) is (loss, sampler, S, subtract_log_q), labelled like ``sampled log_uniform S=64``,
``sampled uniform S=64 no logQ``, ``negative S=5``, ``nce S=64``, ``inbatch``, ``full``. Cells that differ only
in other settings are one series; their values at one V (and budget) are combined by the median. A method keeps
its colour in every plot of one call (colours follow the sorted list of methods present); bias.png, whose lines
are (loss, sampler, logQ) across S, colours those on their own.

Rows are the sweep's result dicts, fresh (numbers) or read back from results.csv (strings): empty strings and
missing columns count as missing, and only rows whose status is ``ok`` are plotted. Importing this module does
not import matplotlib; :func:`plot_sweep` does, and draws on ``Figure`` objects with the Agg canvas (no pyplot,
no global state).
"""

from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Optional, Sequence

PLOT_FILES = ("step_time_vs_V.png", "peak_mem_vs_V.png", "ce_vs_V.png", "frontier.png", "bias.png")
DPI = 100
MAX_FRONTIER_PANELS = 4  # V values shown in frontier.png / bias.png: the smallest, the largest and between

# the trainer's default sampler (LossConfig.sampler): left out of nce/negative labels, as gensim users expect
DEFAULT_SAMPLER = "unigram"
_LOSS_ORDER = {"full": 0, "sampled": 1, "nce": 2, "negative": 3, "inbatch": 4, "adaptive": 5}
_LOSS_MARKER = {"full": "s", "sampled": "o", "nce": "^", "negative": "v", "inbatch": "D", "adaptive": "P"}
_METRICS = ("wall_s", "train_s", "step_ms", "peak_mem_mb", "full_ce", "excess_ce", "bias_gap")


# ------------------------------------------------------------------------------------------------ parsing

def _num(value: Any) -> Optional[float]:
    """A finite float, or None for missing / empty / unparsable / nan / inf."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _int(value: Any) -> Optional[int]:
    x = _num(value)
    return int(round(x)) if x is not None else None


def _flag(value: Any) -> Optional[bool]:
    """subtract_log_q as written by the sweep ("true"/"false"/""), or a bool."""
    if isinstance(value, bool):
        return value
    text = str(value or "").strip().lower()
    return {"true": True, "false": False, "1": True, "0": False}.get(text)


class Series(NamedTuple):
    """One method: what a line (or a frontier point) stands for."""

    loss: str
    sampler: str
    S: Optional[int]
    subtract_log_q: Optional[bool]

    @property
    def label(self) -> str:
        return series_label(self)

    def sort_key(self) -> tuple:
        return (_LOSS_ORDER.get(self.loss, 99), self.loss, self.sampler, self.S or 0, self.subtract_log_q is False)


def series_of(row: dict) -> Series:
    loss = str(row.get("loss") or "").strip() or "?"
    return Series(loss, str(row.get("sampler") or "").strip(), _int(row.get("S")), _flag(row.get("subtract_log_q")))


def series_label(series: Series) -> str:
    """"full", "sampled log_uniform S=64", "sampled uniform S=64 no logQ", "negative S=5", "nce S=64",
    "negative uniform S=5" (a non-default sampler is named), "inbatch", "inbatch no logQ", "adaptive"."""
    parts = [series.loss]
    if series.sampler and (series.loss == "sampled" or series.sampler != DEFAULT_SAMPLER):
        parts.append(series.sampler)
    if series.S is not None:
        parts.append(f"S={series.S}")
    if series.subtract_log_q is False:
        parts.append("no logQ")
    return " ".join(parts)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points that no other point beats on both coordinates (lower is better on both), ordered by
    increasing x (so decreasing y). Of identical points the first is kept; a point tied on x with a lower-y one is
    dominated. `[(1, 5), (2, 3), (3, 4), (4, 1)]` -> `[0, 1, 3]`."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1], i))
    front, best_y = [], math.inf
    for i in order:
        if points[i][1] < best_y:
            front.append(i)
            best_y = points[i][1]
    return front


class _Cell(NamedTuple):
    """One plotted value: a method at one V and budget, the median over its cells."""

    series: Series
    V: Optional[int]
    budget: str
    values: dict  # metric -> float, only the metrics that have a value


def _cells(rows: Iterable[dict]) -> list[_Cell]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if not isinstance(r, dict) or str(r.get("status") or "").strip() != "ok":
            continue
        groups[(series_of(r), _int(r.get("V")), str(r.get("budget") or "").strip())].append(r)
    out = []
    for (series, v, budget), rs in groups.items():
        values = {}
        for m in _METRICS:
            xs = [x for x in (_num(r.get(m)) for r in rs) if x is not None]
            if xs:
                values[m] = statistics.median(xs)
        out.append(_Cell(series, v, budget, values))
    return sorted(out, key=lambda c: (c.series.sort_key(), c.V or 0, c.budget))


def _ce_metric(cells: Sequence[_Cell]) -> Optional[str]:
    """excess_ce where any cell has it, else full_ce, else None."""
    for m in ("excess_ce", "full_ce"):
        if any(m in c.values for c in cells):
            return m
    return None


def _pick_spread(values: Sequence, k: int) -> list:
    """At most k of the sorted `values`, evenly spread, always the first and last."""
    if len(values) <= k:
        return list(values)
    return [values[round(i * (len(values) - 1) / (k - 1))] for i in range(k)]


def _fmt_count(v: float) -> str:
    """A class or sample count, exact: 1000 -> "1k", 1000000 -> "1M", 1024 -> "1,024", 9987 -> "9,987"."""
    v = int(round(v))
    for div, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if v and v % div == 0:
            return f"{v // div}{suffix}"
    return f"{v:,}"


def _fmt_tick(v: float) -> str:
    """A tick value on a log axis: 0.3, 2, 50, 1,000, 20k."""
    if v >= 10**4:
        return _fmt_count(v) if float(v).is_integer() else f"{v:.3g}"
    return f"{v:,.0f}" if v >= 1000 else f"{v:g}"


_CE_LABEL = {"excess_ce": "excess CE over Bayes optimum (nats)",
             "full_ce": "held-out CE (nats; no excess_ce recorded)"}


# ------------------------------------------------------------------------------------------------ drawing

def _new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **subplot_kw):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, [ax for row in axes for ax in row]


def _save(fig, path: Path) -> Path:
    """Write atomically: the sweep redraws after every cell and someone may be looking at the file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _colors(series: Iterable[Series]) -> dict[Series, Any]:
    from matplotlib import colormaps

    ordered = sorted(set(series), key=Series.sort_key)
    if len(ordered) <= 10:
        palette = list(colormaps["tab10"].colors)
    else:  # tab20, dark shades first, then the light ones
        tab20 = list(colormaps["tab20"].colors)
        palette = tab20[0::2] + tab20[1::2]
    return {s: palette[i % len(palette)] for i, s in enumerate(ordered)}


def _style(series: Series, colors: dict) -> dict:
    return dict(color=colors[series], marker=_LOSS_MARKER.get(series.loss, "o"),
                linestyle="--" if series.subtract_log_q is False else "-")


def _legend_right(fig, axes, order: Sequence[str] = ()) -> None:
    """One legend for the figure, outside to the right: the labels in `order` first (in that order), then any
    others (the Pareto marks) as they were drawn; each label once."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if not lab.startswith("_"):
                seen.setdefault(lab, h)
    if not seen:
        return
    rank = {lab: i for i, lab in enumerate(order)}
    labels = sorted(seen, key=lambda lab: rank.get(lab, len(rank)))  # stable: the rest keep drawing order
    fig.legend([seen[lab] for lab in labels], labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False)


def _grid(n: int) -> tuple[int, int]:
    """Rows and columns for n panels: a row, or 2x2 for four."""
    return (2, 2) if n == 4 else (1, max(n, 1))


def _labels(colors: dict) -> list[str]:
    return [s.label for s in sorted(colors, key=Series.sort_key)]


def _v_axis(ax, vs: Sequence[int]) -> None:
    """Log x with ticks exactly at the V values of the sweep."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.set_xscale("log")
    if vs:
        ax.set_xticks(sorted(vs), [_fmt_count(v) for v in sorted(vs)])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        if len(vs) == 1:
            ax.set_xlim(vs[0] / 3, vs[0] * 3)
        else:
            ax.set_xlim(min(vs) / 1.5, max(vs) * 1.5)
    ax.set_xlabel("V (classes)")


def _auto_log(ax, which: str, values: Sequence[float], min_span: float = 3.0) -> None:
    """Log scale on axis `which` ("x"/"y") when every value is positive and they span more than `min_span`x (a
    narrower range reads better on a linear axis); ticks at 1-2-5 (or finer) steps with plain labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if not values or min(values) <= 0 or max(values) / min(values) <= min_span:
        return
    decades = math.log10(max(values) / min(values))
    subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades <= 1 else (1.0, 2.0, 5.0) if decades <= 3 else (1.0,)
    getattr(ax, f"set_{which}scale")("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: _fmt_tick(v)))
    axis.set_minor_formatter(NullFormatter())


def _plot_vs_v(cells: Sequence[_Cell], metric: str, colors: dict, ax) -> list[float]:
    """One line per series of `metric` against V, the median over budgets. Returns the y values drawn."""
    by_series: dict[Series, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for c in cells:
        if c.V is not None and metric in c.values:
            by_series[c.series][c.V].append(c.values[metric])
    ys_all = []
    for s in sorted(by_series, key=Series.sort_key):
        pts = sorted((v, statistics.median(ys)) for v, ys in by_series[s].items())
        xs, ys = zip(*pts)
        ax.plot(xs, ys, label=s.label, markersize=5, linewidth=1.3, **_style(s, colors))
        ys_all.extend(ys)
    return ys_all


def _line_plot(path: Path, cells: Sequence[_Cell], metric: str, ylabel: str, title: str, colors: dict,
               log_y_span: float) -> Optional[Path]:
    vs = sorted({c.V for c in cells if c.V is not None and metric in c.values})
    if not vs:
        return None
    fig, (ax,) = _new_figure(6.4, 4.2)
    ys = _plot_vs_v(cells, metric, colors, ax)
    _v_axis(ax, vs)
    _auto_log(ax, "y", ys, log_y_span)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", axis="y", alpha=0.1)
    _legend_right(fig, [ax], _labels(colors))
    return _save(fig, path)


def _budget_groups(cells: Sequence[_Cell]) -> list[str]:
    return sorted({c.budget for c in cells}) or [""]


def _budget_title(budget: str) -> str:
    return {"pairs": "same number of pairs", "seconds": "same wall time"}.get(budget, budget) if budget else ""


def _ce_plot(path: Path, cells: Sequence[_Cell], colors: dict) -> Optional[Path]:
    metric = _ce_metric(cells)
    if metric is None:
        return None
    cells = [c for c in cells if c.V is not None and metric in c.values]
    if not cells:
        return None
    budgets = _budget_groups(cells)
    fig, axes = _new_figure(5.2 * len(budgets) + 1.2, 4.2, 1, len(budgets), sharey=True)
    all_ys = [c.values[metric] for c in cells]
    for ax, budget in zip(axes, budgets):
        mine = [c for c in cells if c.budget == budget]
        _plot_vs_v(mine, metric, colors, ax)
        _v_axis(ax, sorted({c.V for c in mine}))
        ax.grid(True, which="major", alpha=0.3)
        if len(budgets) > 1:
            ax.set_title(f"budget: {_budget_title(budget)}", fontsize=10)
    _auto_log(axes[0], "y", all_ys)
    axes[0].set_ylabel(_CE_LABEL[metric])
    only = _budget_title(budgets[0]) if len(budgets) == 1 else ""
    fig.suptitle("Held-out CE after training" + (f" ({only})" if only else ""), fontsize=11)
    _legend_right(fig, axes, _labels(colors))
    return _save(fig, path)


def _frontier_plot(path: Path, cells: Sequence[_Cell], colors: dict) -> Optional[Path]:
    metric = _ce_metric(cells)
    if metric is None:
        return None
    # x: the training time (train_s: the steps only, no data generation or evaluation), else the cell's wall time
    tkey = "train_s" if cells and all(c.values.get("train_s", 0) > 0 for c in cells if metric in c.values) \
        else "wall_s"
    cells = [c for c in cells if metric in c.values and c.values.get(tkey, 0) > 0]
    if not cells:
        return None
    budgets = _budget_groups(cells)
    vs = _pick_spread(sorted({c.V for c in cells}, key=lambda v: (v is None, v or 0)), MAX_FRONTIER_PANELS)
    panels = [(b, v) for b in budgets for v in vs if any(c.budget == b and c.V == v for c in cells)]
    if len(budgets) > 1:
        nrows, ncols = len(budgets), len(vs)
        panels = [(b, v) for b in budgets for v in vs]
    else:
        nrows, ncols = _grid(len(panels))
    fig, axes = _new_figure(3.6 * ncols + 1.8, 3.3 * nrows + 0.4, nrows, ncols)
    for ax, (budget, v) in zip(axes, panels):
        mine = [c for c in cells if c.budget == budget and c.V == v]
        where = "V=" + (_fmt_count(v) if v is not None else "?")
        ax.set_title(where + (f" ({_budget_title(budget)})" if len(budgets) > 1 else ""), fontsize=10)
        if not mine:
            ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes, color="0.5")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        pts = [(c.values[tkey], c.values[metric]) for c in mine]
        for c, (x, y) in zip(mine, pts):
            st = _style(c.series, colors)
            ax.plot([x], [y], linestyle="none", marker=st["marker"], color=st["color"], markersize=6,
                    label=c.series.label, zorder=3)
        front = pareto_front(pts)
        fx, fy = [pts[i][0] for i in front], [pts[i][1] for i in front]
        ax.step(fx, fy, where="post", color="0.35", linewidth=1, linestyle=":", zorder=2,
                label="Pareto front")
        ax.plot(fx, fy, linestyle="none", marker="o", markersize=11, markerfacecolor="none",
                markeredgecolor="0.2", markeredgewidth=1, zorder=4, label="Pareto-optimal")
        _auto_log(ax, "x", [p[0] for p in pts])
        _auto_log(ax, "y", [p[1] for p in pts])
        ax.grid(True, which="major", alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes[(nrows - 1) * ncols:]:
        ax.set_xlabel("training time (s)" if tkey == "train_s" else "wall time (s)")
    ylabel = _CE_LABEL[metric].replace(" over Bayes optimum", "").replace("; no excess_ce recorded", "")
    for ax in axes[::ncols]:
        ax.set_ylabel(ylabel)
    fig.suptitle("Speed vs accuracy (lower left is better; ringed: Pareto-optimal)"
                 + (f" - {_budget_title(budgets[0])}" if len(budgets) == 1 and budgets[0] else ""), fontsize=11)
    _legend_right(fig, axes, _labels(colors))
    return _save(fig, path)


def _bias_plot(path: Path, cells: Sequence[_Cell]) -> Optional[Path]:
    cells = [c for c in cells if "bias_gap" in c.values and c.series.S is not None]
    if not cells:
        return None
    method = lambda s: s._replace(S=None)  # noqa: E731 - one line per (loss, sampler, logQ) in each V's panel
    colors = _colors(method(c.series) for c in cells)
    vs = _pick_spread(sorted({c.V for c in cells}, key=lambda v: (v is None, v or 0)), MAX_FRONTIER_PANELS)
    nrows, ncols = _grid(len(vs))
    fig, axes = _new_figure(3.6 * ncols + 1.8, 3.2 * nrows + 0.4, nrows, ncols, sharey=True)
    for ax, v in zip(axes, vs):
        lines: dict[Series, list[tuple[int, float]]] = defaultdict(list)
        for c in cells:
            if c.V == v:
                lines[method(c.series)].append((c.series.S, c.values["bias_gap"]))
        ss = set()
        for m in sorted(lines, key=Series.sort_key):
            pts = sorted(lines[m])
            # duplicates at one S (two budgets): their median, one point
            xs = sorted({s for s, _ in pts})
            ys = [statistics.median([y for s, y in pts if s == x]) for x in xs]
            ax.plot(xs, ys, label=m.label, markersize=5, linewidth=1.3, **_style(m, colors))
            ss.update(xs)
        ax.axhline(0.0, color="0.5", linewidth=0.8, zorder=1)
        ax.set_xscale("log")
        ss = sorted(ss)
        ax.set_xticks(ss, [str(s) for s in ss])
        ax.minorticks_off()
        ax.set_xlim(min(ss) / 2, max(ss) * 2)
        ax.set_title("V=" + (_fmt_count(v) if v is not None else "?"), fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[(nrows - 1) * ncols:]:
        ax.set_xlabel("S (sampled classes)")
    for ax in axes[::ncols]:
        ax.set_ylabel("exact CE - sampled objective (nats)")
    fig.suptitle("Bias of the sampled objective at the end of training", fontsize=11)
    _legend_right(fig, axes, _labels(colors))
    return _save(fig, path)


def plot_sweep(out_dir: Path, rows: list[dict]) -> list[Path]:
    """Write the sweep plots of `rows` (the results table) into `out_dir` and return the paths written, in the
    order of :data:`PLOT_FILES`. A plot whose columns have no values in the ``ok`` rows is skipped (and an older
    file of that name is left alone); with no ``ok`` rows nothing is written and `out_dir` is not created."""
    cells = _cells(rows)
    if not cells:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = _colors(c.series for c in cells)
    written = [
        _line_plot(out_dir / PLOT_FILES[0], cells, "step_ms", "median step time (ms)",
                   "Training step time", colors, log_y_span=3.0),
        _line_plot(out_dir / PLOT_FILES[1], cells, "peak_mem_mb", "peak memory (MB)",
                   "Peak memory", colors, log_y_span=30.0),
        _ce_plot(out_dir / PLOT_FILES[2], cells, colors),
        _frontier_plot(out_dir / PLOT_FILES[3], cells, colors),
        _bias_plot(out_dir / PLOT_FILES[4], cells),
    ]
    return [p for p in written if p is not None]
