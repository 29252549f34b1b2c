"""PNG plots of a sweep: learning curves (held-out CE, or bits per byte for a language model, against training
seconds), the time each method takes to reach a target quality, and what a step costs, as the class count V grows.

    from sampledsoftmax.experiments.plots import plot_sweep
    with open("sweeps/quick/results.csv", newline="") as f:
        plot_sweep(Path("sweeps/quick"), list(csv.DictReader(f)))  # -> the paths written

``plot_sweep`` reads the learning curves from ``<out_dir>/curves.csv`` (:mod:`.curves`; written by the sweep just
before) and the rest from the results rows. Files, each drawn only when its columns have values (a plot with nothing
to show is not written):

- ``curves.png``: held-out excess CE over the Bayes optimum (``full_ce`` on real text; ``bpb`` for a language
  model) against training seconds (evaluation excluded), log x, one panel per V, one line per cell, a marker at
  each evaluation (the one before the first step, at 0 s, has no place on the log axis); the dotted grey line is
  the time-to-target threshold at V. Only the ``seconds``-budget cells when the sweep has them (see
  :func:`_curve_budget`).
- ``time_to_target.png``: training seconds until a cell's CE first reaches the target (halfway from the cells' start
  to the best value at its V, :func:`.curves.targets`) against V, log-log, one line per method, the cells of each
  V's main budget (and longer ones) only, as in curves.png (a shorter study such as the bias group has its own
  plot); a cell that never reaches it is a hollow marker in the "not reached" band at the top edge, one that is
  there before its first step (0 s) a marker in the "0 s" band at the bottom.
- ``best_vs_V.png`` (language models only): the best held-out bits per byte each cell reached within its budget
  (the lowest of its evaluations; the row's final ``bpb`` without curve points) against V, log x, one line per
  method: does a larger vocabulary pay, and with which loss? (see :func:`best_vs_v_figure` for why skip-gram
  sweeps get none).
- ``step_time_vs_V.png``: median training step time (ms) against V, one line per method.
- ``peak_mem_vs_V.png``: the peak memory of each cell's process (MB) against V.
- ``bias.png``: the CE the ``sampled`` loss reaches in the sweep's fixed budget against S (log x), at the V with
  the most S values (the largest of a tie), one line per (sampler, subtract_log_q), one panel per budget; the exact
  softmax's CE at that V is the dashed grey reference. Skipped when no (sampler, logQ) has two S values at one V.

Language-model sweeps (``task: lm``): a row's V is the number of classes of the trained output layer (the BPE
vocabulary size), its ``bpb`` the exact held-out bits per byte and its curve points carry ``bpb`` at every
evaluation. Bits per byte, unlike the per-token CE (``full_ce``) or perplexity, do not depend on the tokenizer, so
they are the metric every plot uses where the rows or points have them (:func:`_ce_metric`,
:func:`.curves.ce_metric`): labelled "held-out bits per byte (exact)", targets in bits/byte, a step
budget called "training steps" rather than pairs. Step time and memory read the same ``step_ms`` and
``peak_mem_mb`` columns as skip-gram rows (throughput, ``tokens_per_sec`` vs ``pairs_per_sec``, is not plotted).

V and S axes are logarithmic with ticks at the values swept; V is the real class count of the trained output layer
(the row's ``V``), not the nominal grid value. A value axis (time, memory, CE) is logarithmic when its values are all
positive and span more than 3x (memory: 30x), else linear. No axis is left with a degenerate range: a range narrower
than a few percent of its centre (e.g. every cell evaluated once at the end of an equal 5 s budget) is widened
(:func:`_widen`), so ticks never read 5.000, 5.005, ... 5.020.

A method (a *series*) is (loss, sampler, S, subtract_log_q, finish_with_full), labelled like
``sampled log_uniform S=64``, ``sampled uniform S=64 no logQ``, ``sampled unigram S=64, full last 10%``,
``negative S=5``, ``nce S=64``, ``inbatch``, ``full``. Cells that differ only in other settings are one series; their
values at one V (and budget) are combined by the median (in curves.png each cell keeps its own line, in its
series' colour). A method keeps its colour in every plot of one call (colours follow the sorted list of methods
present); bias.png, whose lines are (sampler, logQ) across S, colours those on their own.

Rows are the sweep's result dicts, fresh (numbers) or read back from results.csv (strings): empty strings and
missing columns count as missing, and only rows whose status is ``ok`` are plotted. Importing this module does
not import matplotlib; :func:`build_figures` does, and draws on ``Figure`` objects with the Agg canvas (no pyplot,
no global state); tests read the figures' axes from it.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Optional, Sequence

from . import curves as curves_mod

PLOT_FILES = ("curves.png", "time_to_target.png", "best_vs_V.png", "step_time_vs_V.png", "peak_mem_vs_V.png",
              "bias.png")
OBSOLETE_FILES = ("ce_vs_V.png", "frontier.png")  # drawn by earlier versions; removed so no stale plot is read
DPI = 100
MAX_BYTES = 150_000  # what a plot file may weigh (tests/test_plots.py checks it)
TRAIN_SECONDS = "training seconds (evaluation excluded)"
V_LABEL = "V (classes in the output layer)"

# the trainer's default sampler (LossConfig.sampler): left out of nce/negative labels, as gensim users expect
DEFAULT_SAMPLER = "unigram"
_LOSS_ORDER = {"full": 0, "sampled": 1, "nce": 2, "negative": 3, "inbatch": 4, "adaptive": 5}
_LOSS_MARKER = {"full": "s", "sampled": "o", "nce": "^", "negative": "v", "inbatch": "D", "adaptive": "P"}
_METRICS = ("wall_s", "train_s", "step_ms", "peak_mem_mb", "full_ce", "excess_ce", "bpb", "bias_gap", "target",
            "time_to_target")


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


def _fraction(value: Any) -> Optional[float]:
    """finish_with_full: a fraction in (0, 1), or None for "" / 0 (the run never switches to the full softmax)."""
    x = _num(value)
    return x if x is not None and x > 0 else None


class Series(NamedTuple):
    """One method: what a line stands for."""

    loss: str
    sampler: str
    S: Optional[int]
    subtract_log_q: Optional[bool]
    finish_with_full: Optional[float] = None
    optimizer: str = ""  # the optim.name of the results' "optimizer" column ("sgd 0.025" -> "sgd"); "" if absent

    @property
    def label(self) -> str:
        return series_label(self)

    def sort_key(self) -> tuple:
        return (_LOSS_ORDER.get(self.loss, 99), self.loss, self.sampler, self.S or 0, self.subtract_log_q is False,
                self.finish_with_full or 0.0, self.optimizer)


def series_of(row: dict) -> Series:
    loss = str(row.get("loss") or "").strip() or "?"
    optimizer = str(row.get("optimizer") or "").split()
    return Series(loss, str(row.get("sampler") or "").strip(), _int(row.get("S")), _flag(row.get("subtract_log_q")),
                  _fraction(row.get("finish_with_full")), optimizer[0] if optimizer else "")


def series_label(series: Series) -> str:
    """"full", "sampled log_uniform S=64", "sampled uniform S=64 no logQ", "negative S=5", "nce S=64",
    "negative uniform S=5" (a non-default sampler is named), "inbatch", "inbatch no logQ", "adaptive",
    "sampled unigram S=64, full last 10%" (loss.finish_with_full=0.1), "full, Adam" (an optimizer other than SGD
    is named)."""
    parts = [series.loss]
    if series.sampler and (series.loss == "sampled" or series.sampler != DEFAULT_SAMPLER):
        parts.append(series.sampler)
    if series.S is not None:
        parts.append(f"S={series.S}")
    if series.subtract_log_q is False:
        parts.append("no logQ")
    text = " ".join(parts)
    if series.finish_with_full:
        text += f", full last {series.finish_with_full * 100:.3g}%"
    if series.optimizer and series.optimizer != "sgd":
        text += ", " + _OPTIMIZER_NAMES.get(series.optimizer, series.optimizer)
    return text


_OPTIMIZER_NAMES = {"adam": "Adam", "sparse_adam": "SparseAdam", "adagrad": "Adagrad"}


class _Cell(NamedTuple):
    """One plotted value: a method at one V and budget, the median over its rows."""

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
    """bpb where any cell has it (language models), else excess_ce, else full_ce, else None."""
    for m in ("bpb", "excess_ce", "full_ce"):
        if any(m in c.values for c in cells):
            return m
    return None


def _fmt_count(v: float) -> str:
    """A class or sample count, exact: 1000 -> "1k", 1000000 -> "1M", 1024 -> "1,024", 9987 -> "9,987"."""
    v = int(round(v))
    for div, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if v and v % div == 0:
            return f"{v // div}{suffix}"
    return f"{v:,}"


def _fmt_tick(v: float) -> str:
    """A tick value on a log axis: 0.05, 0.3, 2, 50, 1,000, 20k."""
    if v >= 10**4:
        return _fmt_count(v) if float(v).is_integer() else f"{v:.3g}"
    return f"{v:,.0f}" if v >= 1000 else f"{v:g}"


def _v_title(v: Optional[int]) -> str:
    """A panel's title: the real class count, every digit ("V = 9,987", "V = 1,000,000")."""
    return f"V = {v:,}" if v is not None else "V = ?"


_CE_LABEL = {"excess_ce": "held-out excess CE over the Bayes optimum (nats)",
             "full_ce": "held-out CE (nats)",
             "bpb": "held-out bits per byte (exact)"}
# what a target or a reached value is called in titles and legends ("best CE at V + 0.1 nats")
_CE_NAME = {"excess_ce": "CE", "full_ce": "CE", "bpb": "bits per byte"}


def _target_text(metric: Optional[str]) -> str:
    """How the time-to-target threshold is defined, for labels and titles."""
    what = {"excess_ce": "excess CE", "bpb": "bits per byte"}.get(metric, "CE")
    return f"{curves_mod.FRACTION:.0%} of the way from the start to the best {what} at V"


def _curve_budget(budgets: Iterable[str]) -> Optional[str]:
    """The one budget curves.png and time_to_target.png show: "seconds" when the sweep has it. Curves against
    training time compare methods under one time budget (STYLE.md: "Curves over time, not one number per run"):
    with equal seconds every line runs to the same right edge and a reader picks a method where the lines cross.
    The "pairs" cells are the same methods again with a different learning-rate schedule, ending wherever their
    steps ran out; drawn as well they would double every line. A sweep with pairs only shows its pairs cells."""
    budgets = set(budgets)
    if not budgets:
        return None
    return "seconds" if "seconds" in budgets else sorted(budgets)[0]


def _budget_title(budget: str, lm: bool = False) -> str:
    """A budget in words; a language model's step budget is in steps (of equal batches of tokens), not pairs."""
    pairs = "same number of training steps" if lm else "same number of training pairs"
    return {"pairs": pairs, "seconds": "same training time"}.get(budget, budget)


# ------------------------------------------------------------------------------------------------ drawing

def _new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **subplot_kw):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, [ax for row in axes for ax in row]


def _save(fig, path: Path) -> Path:
    """Write atomically (someone may be looking at the file while the sweep redraws it), as a 256-colour PNG: a
    plot has few colours, and the palette keeps a 25-line, 4-panel figure well under :data:`MAX_BYTES`."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1, facecolor="white")
    buf.seek(0)
    with Image.open(buf) as img:
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        small.save(tmp, format="PNG", optimize=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# colours: a family per (loss, sampler) with several S values, a shade per S in it (darker: more samples); a
# (loss, sampler) with one S gets a plain colour of its own, of a hue no family took
_FULL_COLOR = (0.2, 0.2, 0.2)
_FAMILY_MAPS = (("Blues", "tab:blue"), ("Oranges", "tab:orange"), ("Greens", "tab:green"), ("Reds", "tab:red"),
                ("Purples", "tab:purple"))
_SINGLE_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
                  "tab:cyan", "tab:red", "tab:gray")


def _colors(series: Iterable[Series]) -> dict[Series, Any]:
    """Series -> RGB colour. The full softmax is dark grey; a (loss, sampler) with several S values is a colour
    family (blues, oranges, greens, ...) with a shade per S, so twenty-odd sampled methods stay readable; the others
    get distinct plain colours (a method with another optimizer is another family). The logQ correction and
    finish_with_full are told apart by the line style (:func:`_style`), the loss by the marker. Deterministic: it
    depends on the set of series only."""
    from matplotlib import colormaps
    from matplotlib.colors import to_rgb

    ordered = sorted(set(series), key=Series.sort_key)
    families: dict[tuple, list[Series]] = {}
    for s in ordered:
        families.setdefault((s.loss, s.sampler, s.optimizer), []).append(s)
    multi = [k for k, ms in families.items() if k[0] != "full" and len({m.S for m in ms}) > 1]
    taken = {_FAMILY_MAPS[i % len(_FAMILY_MAPS)][1] for i in range(min(len(multi), len(_FAMILY_MAPS)))}
    singles = [c for c in _SINGLE_COLORS if c not in taken] or list(_SINGLE_COLORS)
    out, n_single = {}, 0
    for key, members in families.items():
        if key[0] == "full":
            out.update((m, _FULL_COLOR) for m in members)
        elif key in multi:
            cmap = colormaps[_FAMILY_MAPS[multi.index(key) % len(_FAMILY_MAPS)][0]]
            ss = sorted({m.S or 0 for m in members})
            for m in members:
                out[m] = tuple(float(c) for c in cmap(0.45 + 0.5 * ss.index(m.S or 0) / (len(ss) - 1))[:3])
        else:
            color = to_rgb(singles[n_single % len(singles)])
            n_single += 1
            out.update((m, color) for m in members)
    return out


def _style(series: Series, colors: dict) -> dict:
    """Colour per method, marker per loss; dashed without the logQ correction, dash-dot when finishing with the
    full softmax (dotted: both)."""
    nolog, finish = series.subtract_log_q is False, bool(series.finish_with_full)
    linestyle = ":" if (nolog and finish) else "-." if finish else "--" if nolog else "-"
    return dict(color=colors[series], marker=_LOSS_MARKER.get(series.loss, "o"), linestyle=linestyle)


def _legend_right(fig, axes, order: Sequence[str] = ()) -> None:
    """One legend for the figure, outside to the right: the labels in `order` first (in that order), then any
    others (reference lines) as they were drawn; each label once."""
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
    """Rows and columns for n panels: a row of up to three, 2x2 for four, then rows of three."""
    if n == 4:
        return 2, 2
    return (1, max(n, 1)) if n <= 3 else (math.ceil(n / 3), 3)


def _labels(colors: dict) -> list[str]:
    return [s.label for s in sorted(colors, key=Series.sort_key)]


def _v_axis(ax, vs: Sequence[int]) -> None:
    """Log x with ticks exactly at the (real) V values of the sweep."""
    from matplotlib.ticker import NullFormatter, NullLocator

    vs = sorted(set(vs))
    ax.set_xscale("log")
    if vs:
        ax.set_xticks(vs, [_fmt_count(v) for v in vs])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        pad = 3.0 if len(vs) == 1 else 1.5
        ax.set_xlim(vs[0] / pad, vs[-1] * pad)
    ax.set_xlabel(V_LABEL)


def _log_ticks(ax, which: str, lo: float, hi: float) -> None:
    """Ticks at 1-2-5 (or finer, for a narrow range) steps with plain labels on a log axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = math.log10(hi / lo) if hi > lo > 0 else 0.0
    subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades <= 1 else (1.0, 2.0, 5.0) if decades <= 3.5 else (1.0,)
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: _fmt_tick(v)))
    axis.set_minor_formatter(NullFormatter())


def _auto_log(ax, which: str, values: Sequence[float], min_span: float = 3.0) -> None:
    """Log scale on axis `which` ("x"/"y") when every value is positive and they span more than `min_span`x (a
    narrower range reads better on a linear axis)."""
    if not values or min(values) <= 0 or max(values) / min(values) <= min_span:
        return
    getattr(ax, f"set_{which}scale")("log")
    _log_ticks(ax, which, min(values), max(values))


def _widen(ax, which: str, min_ratio: float = 1.5, min_rel: float = 0.05) -> None:
    """Widen axis `which` whose range is degenerate: on a log axis narrower than `min_ratio`x (to `min_ratio`x
    around its geometric centre), on a linear one narrower than `min_rel` of its centre's magnitude (to that).
    Equal-budget end points (5.000 ... 5.020 s) then sit in the middle of a readable axis instead of stretching
    a few milliseconds over the whole width."""
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    lo, hi = min(lo, hi), max(lo, hi)
    setter = ax.set_xlim if which == "x" else ax.set_ylim
    if (ax.get_xscale() if which == "x" else ax.get_yscale()) == "log":
        if lo > 0 and hi / lo < min_ratio:
            c, half = math.sqrt(lo * hi), math.sqrt(min_ratio)
            setter(c / half, c * half)
            _log_ticks(ax, which, c / half, c * half)
        return
    c = (lo + hi) / 2
    span = max(min_rel * abs(c), 1e-3)
    if hi - lo < span:
        setter(c - span / 2, c + span / 2)


def _finish(ax) -> None:
    ax.grid(True, which="major", alpha=0.3)
    ax.tick_params(labelsize=8)
    _widen(ax, "x")
    _widen(ax, "y")


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


def _line_figure(cells: Sequence[_Cell], metric: str, ylabel: str, title: str, colors: dict, log_y_span: float):
    vs = sorted({c.V for c in cells if c.V is not None and metric in c.values})
    if not vs:
        return None
    fig, (ax,) = _new_figure(6.4, 4.2)
    ys = _plot_vs_v(cells, metric, colors, ax)
    _v_axis(ax, vs)
    _auto_log(ax, "y", ys, log_y_span)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="minor", axis="y", alpha=0.1)
    _finish(ax)
    _legend_right(fig, [ax], _labels(colors))
    return fig


def _curve_lines(points: Sequence[dict]) -> tuple[Optional[str], str, dict[Optional[int], list]]:
    """(budget shown, CE metric, V -> [(series, cell, [(train_s, ce), ...]), ...]) of the curve points: the points
    of the chosen budget, with a positive training time (the x axis is logarithmic) and a finite CE."""
    metric = curves_mod.ce_metric(points)
    budget = _curve_budget({str(p.get("budget") or "").strip() for p in points})
    by_v: dict[Optional[int], list] = defaultdict(list)
    for cell, pts in curves_mod.by_cell(p for p in points if str(p.get("budget") or "").strip() == budget).items():
        xy = [(_num(p.get("train_s")), _num(p.get(metric))) for p in pts]
        xy = [(x, y) for x, y in xy if x is not None and x > 0 and y is not None]
        if xy:
            by_v[_int(pts[0].get("V"))].append((series_of(pts[0]), cell, xy))
    return budget, metric, dict(by_v)


def _budget_groups(lines: list) -> tuple[list, list, int]:
    """Split one panel's (series, cell, xy) lines by the training seconds they ran: (main, longer, number left out).
    The main group is the budget most losses share at this V (ends within 15 % of each other: the same
    train.max_seconds); cells given more time (e.g. the exact softmax run longer, to converge) are `longer`, drawn
    with their budget in the label; shorter cells (a study of its own at this V, e.g. the bias group: bias.png)
    are left out, so the panel compares methods under one budget and every line reaches the same right edge."""
    ends = sorted({max(x for x, _ in xy) for _, _, xy in lines})
    clusters: list[list[float]] = []
    for e in ends:
        if clusters and e <= clusters[-1][0] * 1.15:
            clusters[-1].append(e)
        else:
            clusters.append([e])

    def group(line) -> int:
        end = max(x for x, _ in line[2])
        return next(i for i, c in enumerate(clusters) if c[0] <= end <= c[-1])

    losses = [{ln[0].loss for ln in lines if group(ln) == i} for i in range(len(clusters))]
    main = max(range(len(clusters)), key=lambda i: (len(losses[i]), i))
    longer = [ln for ln in lines if group(ln) > main]
    return [ln for ln in lines if group(ln) == main], longer, sum(group(ln) < main for ln in lines)


def curves_figure(points: Sequence[dict], colors: dict):
    """curves.png: CE against training seconds, one panel per V, one line per cell. None without curve points."""
    budget, metric, by_v = _curve_lines(points)
    if not by_v:
        return None
    goal = curves_mod.targets(points)  # over every budget, as the rows' time_to_target (curves.add_time_to_target)
    unit = "bits/byte" if metric == "bpb" else "nats"
    vs = sorted(by_v, key=lambda v: (v is None, v or 0))
    nrows, ncols = _grid(len(vs))
    fig, axes = _new_figure(3.9 * ncols + 2.6, 3.3 * nrows + 0.5, nrows, ncols, sharex=True)
    all_x = [x for lines in by_v.values() for _, _, xy in lines for x, _ in xy]
    for ax, v in zip(axes, vs):
        ys, above = [], []
        # real text (CE, bits per byte): negative sampling is not a normalised model (its CE starts near log V, far
        # above the others); the panel's range follows the normalised losses and says where negative sampling lies
        clip = metric != "excess_ce" and any(series.loss != "negative" for series, _, _ in by_v[v])
        main, longer, left_out = _budget_groups(by_v[v]) if budget == "seconds" else (by_v[v], [], 0)
        for series, _cell, xy in sorted(main, key=lambda t: (t[0].sort_key(), t[1])):
            xs, y = zip(*xy)
            ax.plot(xs, y, label=series.label, markersize=4, linewidth=1.2, **_style(series, colors))
            (above if clip and series.loss == "negative" else ys).extend(y)
        for series, _cell, xy in sorted(longer, key=lambda t: (t[0].sort_key(), t[1])):
            xs, y = zip(*xy)
            style = dict(_style(series, colors), markerfacecolor="white", alpha=0.8)
            ax.plot(xs, y, label=f"{series.label} ({max(xs):.0f} s budget)", markersize=4, linewidth=1.0,
                    **style)
            (above if clip and series.loss == "negative" else ys).extend(y)
        if left_out:
            ax.text(0.98, 0.03, f"{left_out} shorter-budget cells not drawn", transform=ax.transAxes, fontsize=7,
                    ha="right", va="bottom", color="0.3")
        t = goal.get(str(v)) if v is not None else None
        if t is not None:
            ax.axhline(t, color="0.45", linewidth=1, linestyle=":", zorder=1,
                       label=f"target: {_target_text(metric)}")
            ys.append(t)
        ax.set_title(_v_title(v), fontsize=10)
        _auto_log(ax, "y", ys)
        if above and ys:
            pad = 0.08 * (max(ys) - min(ys) or 0.1)
            ax.set_ylim(min(ys) - pad, max(ys) + 3 * pad)
            ax.text(0.02, 0.97, f"negative sampling: {min(above):.2f}-{max(above):.2f} {unit}, above",
                    transform=ax.transAxes, fontsize=7, va="top", color="0.3")
    for ax in axes[::ncols]:
        ax.set_ylabel(_CE_LABEL[metric].replace(" over the Bayes optimum", "\nover the Bayes optimum"), fontsize=9)
    for ax in axes[len(vs):]:
        ax.set_visible(False)
    ax0 = axes[0]
    ax0.set_xscale("log")
    lo, hi = min(all_x), max(all_x)
    ax0.set_xlim(lo / 1.4, hi * 1.4)  # shared: every panel spans the sweep's real training seconds
    _log_ticks(ax0, "x", lo, hi)
    for ax in axes[:len(vs)]:
        _finish(ax)
    for i, ax in enumerate(axes[:len(vs)]):
        if i + ncols >= len(vs):  # the lowest visible panel of its column
            ax.set_xlabel(TRAIN_SECONDS)
            ax.tick_params(labelbottom=True)
    one_point = all(len(xy) == 1 for lines in by_v.values() for _, _, xy in lines)
    title = f"Learning curves: {_CE_LABEL[metric]} during training"
    if budget:
        title += f" ({_budget_title(budget, metric == 'bpb')})"
    if one_point:
        title += "\none evaluation per cell: set eval.curve_points for curves"
    fig.suptitle(title, fontsize=11)
    _legend_right(fig, axes, _labels(colors))
    return fig


def time_to_target_figure(cells: Sequence[_Cell], colors: dict):
    """time_to_target.png from the rows' target / time_to_target, in the curves' budget. None when no row has a
    target (no curves). Two bands frame the log axis: "not reached" at the top (a row with a target but no
    time_to_target: hollow markers) and "0 s" at the bottom (reached at the evaluation before the first step). At
    each V only the cells of the main budget and longer ones are drawn (`_budget_groups`, as in curves.png)."""
    from matplotlib.ticker import FuncFormatter

    cells = [c for c in cells if c.V is not None and "target" in c.values]
    budget = _curve_budget(c.budget for c in cells)
    cells = [c for c in cells if c.budget == budget]
    if not cells:
        return None
    if budget == "seconds":  # per V: the budget most losses share, and longer runs; not a shorter study's cells
        kept = []
        for v in {c.V for c in cells}:
            lines = [(c.series, c, [(c.values.get("train_s") or 0.0, 0.0)]) for c in cells if c.V == v]
            main, longer, _ = _budget_groups(lines)
            kept += [c for _, c, _ in main + longer]
        cells = sorted(kept, key=lambda c: (c.series.sort_key(), c.V or 0))

    def kind(c: _Cell) -> str:
        t = c.values.get("time_to_target")
        return "never" if t is None else "start" if t <= 0 else "time"

    times = [c.values["time_to_target"] for c in cells if kind(c) == "time"]
    lo, hi = (min(times), max(times)) if times else (1.0, 1.0)
    top, bottom = hi * 3, lo / 3  # where the unreached / reached-at-0-s cells are drawn
    by_series: dict[Series, list[_Cell]] = defaultdict(list)
    for c in cells:
        by_series[c.series].append(c)
    order = sorted(by_series, key=Series.sort_key)
    # the cells of one band and V side by side (not stacked on one point): 0.02 decades apart, 0.3 at most
    band: dict[tuple, list[Series]] = defaultdict(list)
    for s in order:
        for c in by_series[s]:
            if kind(c) != "time":
                band[(kind(c), c.V)].append(s)

    def dodge(where: str, v: int, s: Series) -> float:
        members = band[(where, v)]
        n, k = len(members), members.index(s)
        return v * 10 ** ((k - (n - 1) / 2) * min(0.02, 0.3 / max(n - 1, 1)))

    fig, (ax,) = _new_figure(7.0, 4.6)
    for s in order:
        st = _style(s, colors)
        mine = sorted(by_series[s], key=lambda c: c.V)
        pts = [(c.V, c.values["time_to_target"]) for c in mine if kind(c) == "time"]
        labelled = bool(pts)
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=s.label, markersize=6, linewidth=1.3, **st)
        for where, y, face in (("start", bottom, st["color"]), ("never", top, "none")):
            vs = [c.V for c in mine if kind(c) == where]
            if vs:
                ax.plot([dodge(where, v, s) for v in vs], [y] * len(vs), linestyle="none", marker=st["marker"],
                        markersize=7, markerfacecolor=face, markeredgecolor=st["color"], markeredgewidth=1.3,
                        clip_on=False, label="_" + s.label if labelled else s.label)
                labelled = True
    _v_axis(ax, [c.V for c in cells])
    ax.set_yscale("log")
    has = {where for where, _ in band}
    y0 = bottom / 1.3 if "start" in has else lo / 2
    y1 = top * 1.3 if "never" in has else hi * 2
    ax.set_ylim(y0, y1)
    _log_ticks(ax, "y", y0, y1)
    band_lo, band_hi = lo / 1.6 if "start" in has else 0.0, hi * 1.6 if "never" in has else math.inf
    if not times:
        band_lo = band_hi = math.inf  # nothing reached after a positive time: no numbers on the axis
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _fmt_tick(v) if band_lo <= v <= band_hi else ""))
    for where, y, span, text in (("never", top, (hi * 1.6, y1), " not reached"),
                                 ("start", bottom, (y0, lo / 1.6), " 0 s")):
        if where not in has:
            continue
        ax.axhspan(*span, color="0.92", zorder=0, linewidth=0)
        ax.axhline(y, color="0.6", linewidth=0.8, zorder=1)
        ax.text(1.0, y, text, transform=ax.get_yaxis_transform(), va="center", ha="left", fontsize=8, color="0.35")
        for (w, v), ms in band.items():
            if w == where:
                n = sum(1 for c in cells if c.V == v)
                ax.annotate(f"{len(ms)} of {n}", (v, y), xytext=(0, 8), textcoords="offset points", ha="center",
                            fontsize=7, color="0.35")
    ax.set_ylabel(f"{TRAIN_SECONDS}\nat the first evaluation at or below the target", fontsize=9)
    metric = _ce_metric(cells)
    title = f"Time to target: {_target_text(metric)}"
    if budget:
        title += f" ({_budget_title(budget, metric == 'bpb')})"
    notes = [text for where, text in (("never", "hollow markers at the top: never reached within the budget"),
                                      ("start", "at the bottom: reached before the first step")) if where in has]
    if notes:
        title += "\n" + "; ".join(notes)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="minor", axis="y", alpha=0.1)
    _finish(ax)
    _legend_right(fig, [ax], _labels(colors))
    return fig


class _Best(NamedTuple):
    """One cell's best value within its budget (best_vs_V.png)."""

    series: Series
    cell: str
    end_s: Optional[float]  # the training seconds it ran: its last evaluation's, else the row's train_s
    best: float


def _best_values(rows: Sequence[dict], points: Sequence[dict], metric: str) -> tuple[Optional[str], dict]:
    """(budget shown, V -> [_Best, ...]): for each ``ok`` row of the curves' budget, the lowest `metric` of its curve
    points (the best evaluation within its budget), or the row's final value when it has no curve points."""
    ok = [r for r in rows if isinstance(r, dict) and str(r.get("status") or "").strip() == "ok"]
    budget = _curve_budget(str(r.get("budget") or "").strip() for r in ok)
    curves = curves_mod.by_cell(p for p in points if str(p.get("budget") or "").strip() == budget and p.get("cell"))
    by_v: dict[int, list[_Best]] = defaultdict(list)
    for r in ok:
        v = _int(r.get("V"))
        if v is None or str(r.get("budget") or "").strip() != budget:
            continue
        cell = str(r.get("cell") or "")
        pts = curves.get(cell, []) if cell else []
        ys = [y for y in (_num(p.get(metric)) for p in pts) if y is not None]
        best = min(ys) if ys else _num(r.get(metric))
        if best is None:
            continue
        ends = [x for x in (_num(p.get("train_s")) for p in pts) if x is not None]
        by_v[v].append(_Best(series_of(r), cell, max(ends) if ends else _num(r.get("train_s")), best))
    return budget, dict(by_v)


def best_vs_v_figure(rows: Sequence[dict], points: Sequence[dict], cells: Sequence[_Cell], colors: dict):
    """best_vs_V.png, language models only: the best held-out bits per byte each cell reached within its budget
    against V, one line per series (the median over a series' cells at one V). Bits per byte do not depend on the
    tokenizer, so the lines answer "does a larger vocabulary pay, and with which loss?". A skip-gram sweep gets
    none: its per-class CE measures a different prediction problem at each V (more, rarer words), and its plain CE
    against V (ce_vs_V.png) was dropped for the learning curves and the time to target. In the ``seconds`` budget
    a V's cells given another training time than most losses there (see :func:`_budget_groups`) are left out and
    counted in a note; the title gives the seconds per cell."""
    if _ce_metric(cells) != "bpb":
        return None
    budget, by_v = _best_values(rows, points, "bpb")
    if not by_v:
        return None
    values: dict[Series, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    seconds: dict[int, float] = {}
    left_out = 0
    for v, bests in by_v.items():
        main = bests
        if budget == "seconds" and all(b.end_s is not None and b.end_s > 0 for b in bests):
            lines = [(b.series, b.cell, [(b.end_s, b.best)]) for b in bests]
            main_lines, longer, shorter = _budget_groups(lines)
            keep = {id(ln) for ln in main_lines}
            main = [b for b, ln in zip(bests, lines) if id(ln) in keep]
            left_out += len(longer) + shorter
            seconds[v] = statistics.median(b.end_s for b in main)
        for b in main:
            values[b.series][v].append(b.best)
    fig, (ax,) = _new_figure(6.4, 4.2)
    ys_all = []
    for s in sorted(values, key=Series.sort_key):
        xs, ys = zip(*sorted((v, statistics.median(bs)) for v, bs in values[s].items()))
        ax.plot(xs, ys, label=s.label, markersize=5, linewidth=1.3, **_style(s, colors))
        ys_all.extend(ys)
    _v_axis(ax, list(by_v))
    _auto_log(ax, "y", ys_all)
    ax.set_ylabel(_CE_LABEL["bpb"] + "\nbest evaluation within the budget", fontsize=9)
    title = "Best held-out bits per byte in the budget, by vocabulary size (lower is better)"
    if budget == "seconds" and seconds:
        per_v = sorted(seconds.items())
        if max(seconds.values()) <= min(seconds.values()) * 1.15:
            title += f"\n(same training time: {statistics.median(seconds.values()):.3g} s per cell)"
        else:
            title += "\n(training seconds per cell: " + ", ".join(f"{_fmt_count(v)} {t:.3g} s" for v, t in per_v) + ")"
    elif budget:
        title += f"\n({_budget_title(budget, lm=True)})"
    ax.set_title(title, fontsize=10)
    if left_out:
        ax.text(0.98, 0.03, f"{left_out} cells with another training budget not drawn", transform=ax.transAxes,
                fontsize=7, ha="right", va="bottom", color="0.3")
    ax.grid(True, which="minor", axis="y", alpha=0.1)
    _finish(ax)
    _legend_right(fig, [ax], _labels(colors))
    return fig


def bias_figure(cells: Sequence[_Cell]):
    """bias.png: the `sampled` loss's CE after the fixed budget against S at the V where some (sampler, logQ)
    has the most S values (at least two; the largest such V); one panel per budget. None when there is no such V."""
    metric = _ce_metric(cells)
    if metric is None:
        return None
    sampled = [c for c in cells if c.series.loss == "sampled" and c.series.S is not None
               and not c.series.finish_with_full and c.V is not None and metric in c.values]
    method = lambda s: s._replace(S=None)  # noqa: E731 - one line per (sampler, logQ)
    s_values: dict[tuple, set] = defaultdict(set)
    for c in sampled:
        s_values[(c.V, c.budget, method(c.series))].add(c.series.S)
    # the V with the most S values of one (sampler, logQ), the larger V of a tie (the sweep's S series at 100k,
    # not the two S values it also runs at 1M)
    ranked = [(len(ss), v) for (v, _, _), ss in s_values.items() if len(ss) >= 2]
    if not ranked:
        return None
    v = max(ranked)[1]
    budgets = sorted({c.budget for c in sampled if c.V == v})
    colors = _colors(method(c.series) for c in sampled if c.V == v)
    fig, axes = _new_figure(4.6 * len(budgets) + 2.4, 4.0, 1, len(budgets), sharey=True)
    all_ys, all_s = [], set()
    for ax, budget in zip(axes, budgets):
        lines: dict[Series, list[tuple[int, float]]] = defaultdict(list)
        for c in sampled:
            if c.V == v and c.budget == budget:
                lines[method(c.series)].append((c.series.S, c.values[metric]))
        for m in sorted(lines, key=Series.sort_key):
            xs, ys = zip(*sorted(lines[m]))
            st = _style(m, colors)
            ax.plot(xs, ys, label=m.label.replace("sampled ", "", 1), markersize=5, linewidth=1.3, **st)
            all_ys.extend(ys)
            all_s.update(xs)
        full = [c.values[metric] for c in cells if c.series.loss == "full" and c.V == v and c.budget == budget
                and metric in c.values]
        if full:
            ax.axhline(statistics.median(full), color="0.45", linestyle="--", linewidth=1, zorder=1,
                       label="full softmax")
            all_ys.append(statistics.median(full))
        if budget:
            ax.set_title(f"budget: {_budget_title(budget, metric == 'bpb')}", fontsize=10)
        ax.set_xlabel("S (classes sampled per step)")
    ss = sorted(all_s)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(ss, [_fmt_count(s) for s in ss])
        ax.minorticks_off()
        ax.set_xlim(ss[0] / 1.6, ss[-1] * 1.6)
    _auto_log(axes[0], "y", all_ys)
    axes[0].set_ylabel(_CE_LABEL[metric] + "\nat the end of training")
    for ax in axes:
        _finish(ax)
    fig.suptitle(f"Sampled softmax: {_CE_NAME[metric]} reached against S at {_v_title(v)} (lower is better)",
                 fontsize=11)
    _legend_right(fig, axes, [m.label.replace("sampled ", "", 1) for m in sorted(colors, key=Series.sort_key)])
    return fig


def build_figures(rows: Sequence[dict], points: Sequence[dict] = ()) -> dict[str, Any]:
    """The figures of `rows` (the results table) and `points` (the curve points of curves.csv), by file name in
    the order of :data:`PLOT_FILES`; a plot with nothing to show is left out."""
    cells = _cells(rows)
    if not cells:
        return {}
    points = list(points)
    colors = _colors([c.series for c in cells] + [series_of(p) for p in points])
    figures = {
        "curves.png": curves_figure(points, colors) if points else None,
        "time_to_target.png": time_to_target_figure(cells, colors),
        "best_vs_V.png": best_vs_v_figure(rows, points, cells, colors),
        "step_time_vs_V.png": _line_figure(cells, "step_ms", "median training step time (ms)",
                                           "Training step time", colors, log_y_span=3.0),
        "peak_mem_vs_V.png": _line_figure(cells, "peak_mem_mb", "peak memory of the cell's process (MB)",
                                          "Peak memory (CPU: resident set; CUDA: allocator peak)", colors,
                                          log_y_span=30.0),
        "bias.png": bias_figure(cells),
    }
    return {name: figures[name] for name in PLOT_FILES if figures[name] is not None}


def plot_sweep(out_dir: Path, rows: list[dict]) -> list[Path]:
    """Write the sweep plots of `rows` (the results table) and of ``<out_dir>/curves.csv`` into `out_dir` and
    return the paths written, in the order of :data:`PLOT_FILES`. A plot whose columns have no values is skipped
    (and an older file of that name is left alone; a missing or empty curves.csv skips curves.png); the plots of
    earlier versions (:data:`OBSOLETE_FILES`) are removed. With no ``ok`` rows nothing is written and `out_dir` is
    not created."""
    out_dir = Path(out_dir)
    points = curves_mod.read_curves(out_dir / "curves.csv")
    figures = build_figures(rows, points)
    if not figures:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in OBSOLETE_FILES:
        (out_dir / name).unlink(missing_ok=True)
    return [_save(fig, out_dir / name) for name, fig in figures.items()]
