"""The sweep's PNG plots, read back from the figures: the axes measure what really ran (the real V in the panel
titles, training seconds on a log x that spans the curves, no axis squeezed onto one value), one line per method,
cells that never reach the target, which files are written for which rows, and that they are small real PNGs."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

from sampledsoftmax.experiments import curves, plots
from sampledsoftmax.experiments.plots import PLOT_FILES, Series, build_figures, plot_sweep, series_label, series_of
from sampledsoftmax.experiments.sweep import COLUMNS, write_results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# what a skip-gram sweep draws: everything but best_vs_V.png (language models only: bits per byte across V)
SKIPGRAM_FILES = tuple(n for n in PLOT_FILES if n != "best_vs_V.png")
MAX_BYTES = 150_000

# nominal V -> the class count of the trained output layer (the row's V): titles must carry the real one
REAL_V = {1000: 1000, 10000: 10000, 100000: 99874, 1000000: 998412}
BIAS_S = (16, 64, 256, 1024, 4096)  # the S series of the sampled loss at V = 100k
CURVE_T = [0.05 * (60 / 0.05) ** (i / 7) for i in range(8)]  # 8 evaluations, log-spaced over 0.05 ... 60 s

# (loss, sampler, S, subtract_log_q, finish_with_full): the methods of the synthetic sweep
METHODS = [("full", "", "", "", "")]
METHODS += [("sampled", smp, str(s), lq, "") for smp in ("log_uniform", "unigram") for s in (64, 1024)
            for lq in ("true", "false")]
METHODS += [("nce", "unigram", "64", "", ""), ("negative", "unigram", "5", "", ""), ("inbatch", "", "", "true", ""),
            ("adaptive", "", "", "", ""), ("sampled", "log_uniform", "64", "true", "0.1")]


def _excess(loss, sampler, s, logq, finish, v, t):
    """A plausible excess CE after t training seconds: the full softmax slows down with V, the sampled ones
    level off at a floor (higher without the logQ correction, lower with more samples), finishing with the full
    softmax closes the gap."""
    start = math.log(v)
    s = int(s or 0)
    if loss == "full":
        tau, floor = 0.05 * v / 1000, 0.01
    elif loss == "sampled":
        tau = (0.3 if sampler == "unigram" else 0.5) * (1 + s / 512)
        floor = (0.03 + 1.5 / s) if logq == "true" else 0.5 + 0.3 * math.log10(v)
    else:
        tau, floor = {"nce": (0.8, 0.15), "negative": (0.3, 0.9), "inbatch": (0.5, 0.3),
                      "adaptive": (0.4 * math.log10(v), 0.08)}[loss]
    ce = floor + (start - floor) / (1 + (t / tau) ** 1.3)
    if finish and t >= 0.9 * 60:
        ce = min(ce, 0.01 + 0.02 * math.log10(v / 1000))
    return ce


def make_sweep(vs=(1000, 10000, 100000, 1000000), budgets=("seconds",), bias=True, times=CURVE_T):
    """(rows, points): one ok row per method, V and budget with its curve of len(times) evaluations (strings, as
    csv.DictReader gives them), time_to_target from curves.add_time_to_target; the S series at V=100k when `bias`;
    a failed cell, and a row that lacks most columns (an older CSV)."""
    cells = [(m, v) for v in vs for m in METHODS if not (m[2] and int(m[2]) >= v)]
    if bias and 100000 in vs:
        cells += [(("sampled", smp, str(s), lq, ""), 100000) for smp in ("log_uniform", "unigram") for lq in
                  ("true", "false") for s in BIAS_S if s not in (64, 1024)]
    rows, points = [], []
    for budget in budgets:
        for (loss, sampler, s, logq, finish), v in cells:
            real = REAL_V.get(v, v)
            parts = (loss, sampler, f"S{s}" if s else "", "nologq" if logq == "false" else "",
                     f"then-full{finish}" if finish else "", f"V{v}")
            cell = "-".join(x for x in parts if x)
            cell += "-60s" if budget == "seconds" else ""
            step_ms = (0.004 * v if loss == "full" else 1.5 + 0.004 * int(s or 8) + 2e-6 * v)
            ts = times if budget == "seconds" else [t * (0.5 if loss == "full" else 2.0) for t in times]
            ces = [_excess(loss, sampler, s, logq, finish, v, t) for t in ts]
            id_cols = {"cell": cell, "loss": loss, "sampler": sampler, "S": s, "subtract_log_q": logq,
                       "finish_with_full": finish, "V": str(real), "budget": budget}
            for k, (t, ce) in enumerate(zip(ts, ces)):
                points.append({**id_cols, "step": str(int(t / step_ms * 1000) + 1), "train_s": f"{t:.6g}",
                               "eval_s": f"{0.1 * (k + 1):.4g}", "full_ce": f"{3 + ce:.6g}", "excess_ce": f"{ce:.6g}",
                               "top10": "0.4"})
            rows.append({**id_cols, "steps": str(int(ts[-1] / step_ms * 1000)), "train_s": f"{ts[-1]:.6g}",
                         "eval_s": "0.8", "wall_s": f"{ts[-1] + 2:.6g}", "pairs_per_sec": "1e5",
                         "step_ms": f"{step_ms:.4g}", "peak_mem_mb": f"{150 + real * 32 * 4 * 3 / 2**20:.4g}",
                         "full_ce": f"{3 + ces[-1]:.6g}", "excess_ce": f"{ces[-1]:.6g}", "top1": "0.1",
                         "top10": "0.4", "bias_gap": "0.1" if loss == "sampled" else "", "grad_cosine": "",
                         "status": "ok", "run_dir": f"runs/{cell}"})
    curves.add_time_to_target(rows, points)
    for r in rows:  # as results.csv has them
        r["target"] = "" if r["target"] is None else f"{r['target']:.6g}"
        r["time_to_target"] = "" if r["time_to_target"] is None else f"{r['time_to_target']:.6g}"
    rows.append({"cell": "sampled-uniform-S5000-V1000", "loss": "sampled", "sampler": "uniform", "S": "5000",
                 "subtract_log_q": "true", "V": "1000", "wall_s": "0.1", "step_ms": "", "peak_mem_mb": "",
                 "full_ce": "", "excess_ce": "", "status": "failed: InputError: num_sampled=5000 >= V=1000"})
    rows.append({"cell": "old-row", "loss": "negative", "sampler": "uniform", "S": "5", "V": str(vs[0]),
                 "wall_s": "7", "step_ms": "3", "full_ce": "4.5", "excess_ce": "0.4", "status": "ok"})
    return rows, points


def write_curves_csv(out: Path, points) -> None:
    out.mkdir(parents=True, exist_ok=True)
    curves.write_curves(out, points)


def assert_small_png(path: Path) -> None:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert 5_000 < len(data) < MAX_BYTES, (path, len(data))
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] >= 200 and img.shape[1] >= 300, (path, img.shape)
    assert img.std() > 0.01, path  # not a blank canvas


def written(out: Path) -> set[str]:
    return {p.name for p in out.iterdir()}


def panels(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def series_lines(ax, labels=None):
    """The lines of `ax` that stand for a method (not the reference lines or the "not reached" markers)."""
    labels = set(labels) if labels is not None else None
    return [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")
            and (labels is None or ln.get_label() in labels)]


def assert_no_degenerate_axis(fig, data: bool = True) -> None:
    """No visible axis spans less than 0.1 % of its centre; with `data`, the points drawn on each axis do not all
    sit on one value (unless there is only one point)."""
    for ax in panels(fig):
        for which, (lo, hi) in (("x", ax.get_xlim()), ("y", ax.get_ylim())):
            lo, hi = min(lo, hi), max(lo, hi)
            scale = ax.get_xscale() if which == "x" else ax.get_yscale()
            if scale == "log":
                assert lo > 0 and math.log10(hi / lo) > 1e-3 * 10, (ax.get_title(), which, lo, hi)
            else:
                assert hi - lo >= 1e-3 * max(abs(lo + hi) / 2, 1e-9), (ax.get_title(), which, lo, hi)
            if data:
                values = []
                for ln in series_lines(ax):
                    values += [float(x) for x in (ln.get_xdata() if which == "x" else ln.get_ydata())]
                if len(values) > 1:
                    assert max(values) > min(values) * (1 + 1e-3) or max(values) - min(values) > 1e-6, \
                        (ax.get_title(), which, values[:5])


# ------------------------------------------------------------------------------------------------ plot_sweep

def test_writes_the_plots_and_returns_exactly_them(tmp_path):
    rows, points = make_sweep()
    write_curves_csv(tmp_path, points)
    (tmp_path / "frontier.png").write_bytes(b"stale")  # a plot of an earlier version: removed
    paths = plot_sweep(tmp_path, rows)
    assert paths == [tmp_path / name for name in SKIPGRAM_FILES]
    assert written(tmp_path) == set(SKIPGRAM_FILES) | {"curves.csv"}  # no temporary files left behind
    for p in paths:
        assert_small_png(p)


def test_no_axis_is_degenerate():
    rows, points = make_sweep()
    figs = build_figures(rows, points)
    assert list(figs) == list(SKIPGRAM_FILES)
    for name, fig in figs.items():
        assert_no_degenerate_axis(fig)
        for ax in panels(fig):
            assert ax.get_xlabel() or ax.get_title(), name
    assert "ce_vs_V.png" not in PLOT_FILES and "frontier.png" not in PLOT_FILES


def test_curves_one_panel_per_real_V_one_line_per_series():
    rows, points = make_sweep()
    fig = build_figures(rows, points)["curves.png"]
    axes = panels(fig)
    assert [ax.get_title() for ax in axes] == ["V = 1,000", "V = 10,000", "V = 99,874", "V = 998,412"]
    colors, styles = {}, {}
    for ax, v in zip(axes, ("1000", "10000", "99874", "998412")):
        expected = sorted({series_of(p).label for p in points if p["V"] == v})
        lines = series_lines(ax, expected)
        assert sorted(ln.get_label() for ln in lines) == expected  # one line per series, each once
        others = [ln.get_label() for ln in series_lines(ax) if ln.get_label() not in expected]
        assert others == ["target: 50% of the way from the start to the best excess CE at V"]  # and nothing else
        for ln in lines:
            assert len(ln.get_xdata()) == len(CURVE_T) and ln.get_marker() not in (None, "None", "")
            assert colors.setdefault(ln.get_label(), ln.get_color()) == ln.get_color()  # same colour everywhere
            styles[ln.get_label()] = (ln.get_color(), ln.get_linestyle(), ln.get_marker())
        assert ax.get_xscale() == "log"
        lo, hi = ax.get_xlim()
        assert lo <= min(CURVE_T) and hi >= max(CURVE_T) and hi / lo < 3 * max(CURVE_T) / min(CURVE_T)
        assert ax.get_yscale() == "log"  # excess CE falls by decades
    labelled = [ax for ax in axes if ax.get_xlabel()]
    assert labelled and all(ax.get_xlabel() == "training seconds (evaluation excluded)" for ax in labelled)
    assert all("excess CE" in ax.get_ylabel() for ax in axes if ax.get_subplotspec().is_first_col())
    assert len(set(styles.values())) == len(styles) == len({series_of(p) for p in points})  # told apart


def test_curves_use_the_seconds_budget_and_full_ce_on_real_text():
    rows, points = make_sweep(vs=(1000, 10000), budgets=("pairs", "seconds"), bias=False)
    fig = build_figures(rows, points)["curves.png"]
    assert "same training time" in fig.get_suptitle()
    for ax in panels(fig):  # the seconds cells only: each series once
        labels = [ln.get_label() for ln in series_lines(ax) if not ln.get_label().startswith("target")]
        assert len(labels) == len(set(labels))
    text = [{**p, "excess_ce": ""} for p in points if p["budget"] == "pairs"]
    fig = build_figures(rows, text)["curves.png"]
    assert "same number of training pairs" in fig.get_suptitle()
    assert panels(fig)[0].get_ylabel() == "held-out CE (nats)"


def test_real_text_panels_follow_the_normalised_losses_and_say_where_negative_sampling_lies():
    """On real text (no excess CE) negative sampling's CE starts near log V, nats above the normalised losses: the
    panel's y range follows the others (it squeezed them into a flat band before) and a note gives its range."""
    rows, points = make_sweep(vs=(10000,), bias=False)
    text = [{**p, "excess_ce": "", "full_ce": str(float(p["full_ce"]) + (20 if p["loss"] == "negative" else 0))}
            for p in points]
    ax = panels(build_figures(rows, text)["curves.png"])[0]
    neg = [float(p["full_ce"]) for p in text if p["loss"] == "negative"]
    others = [float(p["full_ce"]) for p in text if p["loss"] != "negative"]
    lo, hi = ax.get_ylim()
    assert lo <= min(others) and max(others) <= hi < min(neg)
    notes = [t.get_text() for t in ax.texts]
    assert any(n.startswith("negative sampling:") and f"{max(neg):.2f}" in n for n in notes), notes
    # the planted corpus (excess CE on a log axis): every line stays in range, no note
    ax = panels(build_figures(rows, points)["curves.png"])[0]
    assert not ax.texts and ax.get_ylim()[1] >= max(float(p["excess_ce"]) for p in points)


def test_one_evaluation_per_cell_is_not_a_squeezed_axis():
    """Every cell evaluated once, at the end of an equal 5 s budget (5.000 ... 5.020 s): the x axis is widened
    and the title says how to get curves."""
    rows, points = make_sweep(vs=(1000, 10000), bias=False, times=[5.0])
    for k, p in enumerate(points):
        p["train_s"] = f"{5.0 + 0.001 * (k % 20):.4f}"
    fig = build_figures(rows, points)["curves.png"]
    assert_no_degenerate_axis(fig, data=False)
    lo, hi = panels(fig)[0].get_xlim()
    assert hi / lo >= 1.4 and lo < 5.0 < 5.02 < hi
    assert "eval.curve_points" in fig.get_suptitle()


def test_time_to_target_with_unreached_cells():
    rows, points = make_sweep()
    for r in [r for r in rows if r.get("time_to_target") and r.get("loss") == "negative"]:
        r["time_to_target"] = ""  # never reached (halfway targets are reached by every cell of this fixture)
    fig = build_figures(rows, points)["time_to_target.png"]
    (ax,) = panels(fig)
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert "50% of the way from the start to the best excess CE at V" in ax.get_title()
    assert "never reached" in ax.get_title()
    ok = [r for r in rows if r.get("target")]
    unreached = [r for r in ok if not r["time_to_target"]]
    reached = [r for r in ok if r["time_to_target"]]
    assert unreached and reached
    top = max(float(r["time_to_target"]) for r in reached) * 3
    hollow = [ln for ln in ax.get_lines() if ln.get_markerfacecolor() == "none"]
    assert sum(len(ln.get_xdata()) for ln in hollow) == len(unreached)
    for ln in hollow:
        assert all(y == pytest.approx(top) for y in ln.get_ydata())
    lo, hi = ax.get_ylim()
    assert hi >= top and lo <= min(float(r["time_to_target"]) for r in reached)
    # one line per series that reaches the target somewhere, through its reached V only
    by_label = {ln.get_label(): ln for ln in series_lines(ax) if ln.get_markerfacecolor() != "none"}
    for label in {series_of(r).label for r in reached}:
        xs = sorted(int(x) for x in by_label[label].get_xdata())
        assert xs == sorted(int(r["V"]) for r in reached if series_of(r).label == label)
    assert sorted(int(t) for t in ax.get_xticks()) == sorted({int(r["V"]) for r in ok})


def test_time_to_target_reached_before_the_first_step():
    """A cell whose evaluation at step 0 already meets the target (time_to_target 0, as in a 10-step test
    sweep) sits in a "0 s" band at the bottom of the log axis, not off it."""
    rows, points = make_sweep(vs=(1000, 10000), bias=False)
    zero = next(r for r in rows if r.get("time_to_target"))
    zero["time_to_target"] = "0"
    (ax,) = panels(build_figures(rows, points)["time_to_target.png"])
    times = [float(r["time_to_target"]) for r in rows if r.get("time_to_target") and r is not zero]
    bottom = [ln for ln in ax.get_lines() if list(ln.get_ydata()) == [pytest.approx(min(times) / 3)]]
    assert len(bottom) == 1 and bottom[0].get_xdata()[0] == pytest.approx(int(zero["V"]), rel=0.2)
    assert ax.get_ylim()[0] < min(times) / 3 and "before the first step" in ax.get_title()
    for r in rows:  # every cell there at 0 s: still a figure, with no time numbers on its axis
        if r.get("time_to_target"):
            r["time_to_target"] = "0"
    fig = build_figures(rows, points)["time_to_target.png"]
    assert_no_degenerate_axis(fig, data=False)
    fig.canvas.draw()
    assert not any(t.get_text() for t in panels(fig)[0].get_yticklabels())


def test_time_to_target_needs_targets():
    rows, points = make_sweep(vs=(1000,), bias=False)
    for r in rows:
        r.pop("target", None), r.pop("time_to_target", None)
    assert "time_to_target.png" not in build_figures(rows, points)


def test_bias_plot_at_the_largest_V_with_several_S():
    rows, points = make_sweep()
    fig = build_figures(rows, points)["bias.png"]
    (ax,) = panels(fig)
    assert "V = 99,874" in fig.get_suptitle()
    assert ax.get_xscale() == "log" and ax.get_xlabel().startswith("S")
    assert [int(t) for t in ax.get_xticks()] == list(BIAS_S)
    lines = {ln.get_label(): ln for ln in series_lines(ax)}
    assert set(lines) == {"log_uniform", "log_uniform no logQ", "unigram", "unigram no logQ", "full softmax"}
    assert list(lines["unigram"].get_xdata()) == list(BIAS_S)
    assert "excess CE" in ax.get_ylabel()
    # two budgets: one panel each, same S axis
    rows2, points2 = make_sweep(vs=(100000,), budgets=("pairs", "seconds"))
    axes = panels(build_figures(rows2, points2)["bias.png"])
    assert [ax.get_title() for ax in axes] == ["budget: same number of training pairs", "budget: same training time"]


def test_no_S_series_no_bias_plot(tmp_path):
    rows, points = make_sweep(vs=(1000, 10000), bias=False)  # S=1024 only at V=10k, S=64 only at V=1k ...
    rows = [r for r in rows if r.get("S") != "1024"]
    write_curves_csv(tmp_path, points)
    paths = plot_sweep(tmp_path, rows)
    assert [p.name for p in paths] == [n for n in SKIPGRAM_FILES if n != "bias.png"]
    assert not (tmp_path / "bias.png").exists()


def test_missing_or_empty_curves_csv_skips_the_curves(tmp_path):
    rows, points = make_sweep(vs=(1000, 10000), bias=False)
    paths = plot_sweep(tmp_path / "missing", rows)
    assert "curves.png" not in [p.name for p in paths] and "step_time_vs_V.png" in [p.name for p in paths]
    write_curves_csv(tmp_path / "empty", [])
    assert (tmp_path / "empty" / "curves.csv").read_text().startswith("cell,")
    paths = plot_sweep(tmp_path / "empty", rows)
    assert "curves.png" not in [p.name for p in paths] and paths


def test_nothing_ok_writes_nothing(tmp_path):
    rows, _ = make_sweep(vs=(1000,), bias=False)
    failed = [r for r in rows if r["status"] != "ok"]
    assert failed
    assert plot_sweep(tmp_path / "a", failed) == []
    assert plot_sweep(tmp_path / "b", []) == []
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_rows_read_back_from_write_results(tmp_path):
    rows, points = make_sweep(vs=(1000, 100000))
    write_results(tmp_path, rows)
    write_curves_csv(tmp_path, points)
    with open(tmp_path / "results.csv", newline="", encoding="utf-8") as f:
        back = list(csv.DictReader(f))
    assert {"finish_with_full", "target", "time_to_target"} <= set(COLUMNS)
    paths = plot_sweep(tmp_path, back)
    assert [p.name for p in paths] == list(SKIPGRAM_FILES)
    for p in paths:
        assert_small_png(p)


def test_fresh_rows_with_numbers():
    rows, points = make_sweep(vs=(1000, 100000))
    fresh = []
    for r in rows:
        r = dict(r)
        for k in ("V", "S", "wall_s", "step_ms", "peak_mem_mb", "full_ce", "excess_ce", "target", "time_to_target",
                  "finish_with_full"):
            if r.get(k):
                r[k] = float(r[k]) if k not in ("V", "S") else int(r[k])
            elif k in r:
                r[k] = None
        r["subtract_log_q"] = {"true": True, "false": False}.get(r.get("subtract_log_q", ""), "")
        fresh.append(r)
    assert list(build_figures(fresh, points)) == list(SKIPGRAM_FILES)


def test_single_v(tmp_path):
    rows, points = make_sweep(vs=(100000,))
    write_curves_csv(tmp_path, points)
    paths = plot_sweep(tmp_path, rows)
    assert [p.name for p in paths] == list(SKIPGRAM_FILES)
    figs = build_figures(rows, points)
    for name, fig in figs.items():
        # one V: every point of a V axis sits on it, by design; the axis limits are still a range
        assert_no_degenerate_axis(fig, data=name in ("curves.png", "bias.png"))
    for p in paths:
        assert_small_png(p)


def test_missing_columns_skip_their_plots(tmp_path):
    rows, points = make_sweep(vs=(1000, 10000), bias=False)
    keep = ("cell", "loss", "sampler", "S", "V", "wall_s", "full_ce", "status")
    rows = [{k: r[k] for k in keep if k in r} for r in rows]
    # no curves, step times, memory or targets; the CE falls back to full_ce, S=64 and S=1024 at V=10k: bias.png
    assert [p.name for p in plot_sweep(tmp_path, rows)] == ["bias.png"]
    assert "held-out CE" in panels(build_figures(rows)["bias.png"])[0].get_ylabel()
    write_curves_csv(tmp_path, points)
    assert [p.name for p in plot_sweep(tmp_path, rows)] == ["curves.png", "bias.png"]
    rows = [{k: v for k, v in r.items() if k != "S"} for r in rows]
    assert plot_sweep(tmp_path / "none", rows) == [] and not (tmp_path / "none").exists()


def test_import_does_not_load_matplotlib():
    code = ("import sys, sampledsoftmax, sampledsoftmax.experiments.plots, sampledsoftmax.experiments.sweep; "
            "sys.exit(1 if any(m == 'matplotlib' or m.startswith('matplotlib.') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ------------------------------------------------------------------------------------------------ helpers

@pytest.mark.parametrize("row, label", [
    ({"loss": "full", "sampler": "", "S": "", "subtract_log_q": ""}, "full"),
    ({"loss": "sampled", "sampler": "log_uniform", "S": "64", "subtract_log_q": "true"}, "sampled log_uniform S=64"),
    ({"loss": "sampled", "sampler": "uniform", "S": "64", "subtract_log_q": "false"}, "sampled uniform S=64 no logQ"),
    ({"loss": "sampled", "sampler": "unigram", "S": 1024.0, "subtract_log_q": True}, "sampled unigram S=1024"),
    ({"loss": "sampled", "sampler": "unigram", "S": "64", "subtract_log_q": "true", "finish_with_full": "0.1"},
     "sampled unigram S=64, full last 10%"),
    ({"loss": "sampled", "sampler": "unigram", "S": "64", "finish_with_full": 0.0}, "sampled unigram S=64"),
    ({"loss": "negative", "sampler": "unigram", "S": "5", "subtract_log_q": ""}, "negative S=5"),
    ({"loss": "negative", "sampler": "uniform", "S": "5"}, "negative uniform S=5"),
    ({"loss": "nce", "sampler": "unigram", "S": "64"}, "nce S=64"),
    ({"loss": "inbatch", "subtract_log_q": "true"}, "inbatch"),
    ({"loss": "inbatch", "subtract_log_q": "false"}, "inbatch no logQ"),
    ({"loss": "adaptive"}, "adaptive"),
])
def test_series_label(row, label):
    assert series_label(series_of(row)) == label


def test_default_sampler_is_the_trainers():
    from sampledsoftmax.embeddings.config import LossConfig

    assert plots.DEFAULT_SAMPLER == LossConfig().sampler


def test_rows_parsed_and_duplicates_combined_by_median():
    base = {"loss": "sampled", "sampler": "uniform", "S": "64", "subtract_log_q": "true", "V": "1000",
            "status": "ok"}
    rows = [
        {**base, "step_ms": "10", "excess_ce": "0.5"},
        {**base, "step_ms": "20", "excess_ce": ""},
        {**base, "step_ms": "nan", "excess_ce": "0.7"},
        {**base, "step_ms": "999", "status": "failed: boom"},
        {**base, "status": " ok ", "S": "64.0", "subtract_log_q": "TRUE", "step_ms": " 30 ", "finish_with_full": "0"},
    ]
    (cell,) = plots._cells(rows)
    assert cell.series == Series("sampled", "uniform", 64, True, None)
    assert cell.V == 1000
    assert cell.values == pytest.approx({"step_ms": 20.0, "excess_ce": 0.6})


def test_ce_metric_falls_back_to_full_ce():
    full_only = plots._cells([{"loss": "full", "V": "10", "full_ce": "3.2", "status": "ok"}])
    both = plots._cells([{"loss": "full", "V": "10", "full_ce": "3.2", "excess_ce": "0.1", "status": "ok"}])
    assert plots._ce_metric(full_only) == "full_ce"
    assert plots._ce_metric(both) == "excess_ce"
    assert plots._ce_metric(plots._cells([{"loss": "full", "V": "10", "status": "ok"}])) is None


def test_colours_distinct_and_deterministic():
    series = [series_of({"loss": "sampled", "sampler": "uniform", "S": str(s), "subtract_log_q": lq})
              for s in (8, 16, 32, 64, 128, 256, 512, 1024) for lq in ("true", "false")]
    series += [series_of(r) for r in ({"loss": "full"}, {"loss": "nce", "sampler": "unigram", "S": "64"},
                                      {"loss": "negative", "sampler": "unigram", "S": "5"}, {"loss": "inbatch"},
                                      {"loss": "adaptive"}, {"loss": "sampled", "sampler": "log_uniform", "S": "64"})]
    a, b = plots._colors(series), plots._colors(reversed(series))
    assert a == b
    # one shade per S of the sampled uniform family, logQ told apart by the line style; the rest plain colours
    assert len({a[s] for s in series}) == 8 + 6
    styles = {(a[s], plots._style(s, a)["linestyle"], plots._style(s, a)["marker"]) for s in series}
    assert len(styles) == len(series)


@pytest.mark.parametrize("v, text", [(1000, "1k"), (10000, "10k"), (1000000, "1M"), (1024, "1,024"), (300, "300"),
                                     (9987, "9,987")])
def test_count_labels(v, text):
    assert plots._fmt_count(v) == text


def test_widen_a_squeezed_axis():
    fig, (ax,) = plots._new_figure(4, 3)
    ax.plot([5.0, 5.02], [0.30, 0.3001])
    ax.set_xscale("log")
    ax.set_xlim(5.0, 5.02)
    ax.set_ylim(0.30, 0.3001)
    plots._widen(ax, "x")
    plots._widen(ax, "y")
    lo, hi = ax.get_xlim()
    assert hi / lo == pytest.approx(1.5) and lo < 5.0 and hi > 5.02
    lo, hi = ax.get_ylim()
    assert hi - lo == pytest.approx(0.05 * 0.30005) and lo < 0.30 < 0.3001 < hi


def test_curves_draw_one_budget_per_panel_longer_cells_labelled_shorter_ones_counted():
    """configs/sweep.yaml at one V: the main cells (every loss) under one budget, the exact softmax once more with a
    longer budget, and the bias group (one loss, shorter budget). The panel draws the main budget, the longer cell
    labelled with its budget (open markers), and leaves the shorter ones out with a note counting them (at 100k
    they were twenty overlapping lines ending at a third of the panel)."""
    rows, points = make_sweep(vs=(10000, 100000), bias=True)
    bias_only = {p["cell"] for p in points if p["V"] == "99874" and p["S"] in ("16", "256", "4096")}
    assert len(bias_only) == 12
    long_full = [{**p, "cell": "full-V10000-240s", "train_s": f"{float(p['train_s']) * 4:.6g}"}
                 for p in points if p["cell"] == "full-V10000-60s"]
    pts = [{**p, "train_s": f"{float(p['train_s']) / 3:.6g}"} if p["cell"] in bias_only else p for p in points]
    fig = build_figures(rows, pts + long_full)["curves.png"]
    ax10, ax100 = panels(fig)
    labels10 = [ln.get_label() for ln in series_lines(ax10) if not ln.get_label().startswith("target")]
    assert "full (240 s budget)" in labels10 and labels10.count("full") == 1
    (long_line,) = [ln for ln in series_lines(ax10) if ln.get_label() == "full (240 s budget)"]
    assert max(long_line.get_xdata()) == pytest.approx(240, rel=1e-3) and long_line.get_markerfacecolor() == "white"
    assert not ax10.texts
    labels100 = {ln.get_label() for ln in series_lines(ax100)}
    assert not any("S=16" in lab or "S=256" in lab or "S=4096" in lab for lab in labels100)
    assert {"full", "nce S=64", "sampled unigram S=1024"} <= labels100
    assert [t.get_text() for t in ax100.texts] == ["12 shorter-budget cells not drawn"]
    # the pairs budget ends wherever each cell's steps ran out: nothing is left out there
    rows, points = make_sweep(vs=(10000,), budgets=("pairs",), bias=False)
    ax = panels(build_figures(rows, points)["curves.png"])[0]
    assert len([ln for ln in series_lines(ax) if not ln.get_label().startswith("target")]) == len(
        {p["cell"] for p in points}) and not ax.texts


def test_a_non_sgd_optimizer_is_named_and_coloured_apart():
    assert series_of({"loss": "full", "optimizer": "adam 0.01"}).label == "full, Adam"
    assert series_of({"loss": "full", "optimizer": "sgd 0.025"}).label == "full"
    assert series_of({"loss": "full"}).label == "full"  # an older results.csv without the column
    nce = series_of({"loss": "nce", "sampler": "unigram", "S": "64", "optimizer": "sparse_adam 0.01"})
    assert nce.label == "nce S=64, SparseAdam"
    rows, points = make_sweep(vs=(10000,), bias=False)
    sgd_cell = "sampled-unigram-S1024-V10000-60s"
    extra = [{**p, "cell": sgd_cell + "-sparse_adam", "optimizer": "sparse_adam 0.01",
              "excess_ce": f"{float(p['excess_ce']) * 0.8:.6g}"} for p in points if p["cell"] == sgd_cell]
    extra_rows = [{**r, "cell": sgd_cell + "-sparse_adam", "optimizer": "sparse_adam 0.01"} for r in rows
                  if r.get("cell") == sgd_cell]
    figs = build_figures(rows + extra_rows, points + extra)
    ax = panels(figs["curves.png"])[0]
    (sgd,) = series_lines(ax, ["sampled unigram S=1024"])
    (adam,) = series_lines(ax, ["sampled unigram S=1024, SparseAdam"])
    assert sgd.get_color() != adam.get_color()
    # the per-V plots keep them apart too (they were one median before)
    ax = panels(figs["step_time_vs_V.png"])[0]
    assert {"sampled unigram S=1024", "sampled unigram S=1024, SparseAdam"} <= {ln.get_label() for ln in
                                                                               series_lines(ax)}


# ------------------------------------------------------------------------------------------------ language models

LM_V = (8000, 32000, 128000)  # BPE vocabulary sizes: the rows' V (the output layer's classes)
LM_T = [0.0] + [2.0 * (300 / 2.0) ** (i / 7) for i in range(8)]  # step 0, then 8 evaluations over 2 ... 300 s
LM_METHODS = [("full", "", ""), ("sampled", "unigram", "1024"), ("adaptive", "", "")]
LM_LABELS = ["full, Adam", "sampled unigram S=1024, Adam", "adaptive, Adam"]  # in series order


def _bpb(loss, v, t):
    """Plausible held-out bits per byte after t training seconds: log2(V) bits a token at the start over ~3-5 bytes
    a token; the exact softmax converges lower but slows down with V, the sampled and adaptive ones level off a
    little higher; adaptive at 128k diverges at its end (its best is not its last evaluation)."""
    bytes_per_token = 3.0 + 0.5 * math.log2(v / 8000)
    start = math.log2(v) / bytes_per_token
    k = math.log2(v / 8000) / 2  # 0, 1, 2
    tau, floor = {"full": (4 * (v / 8000) ** 0.6, 1.45 - 0.02 * k), "sampled": (3.0, 1.47 - 0.025 * k),
                  "adaptive": (2.5, 1.50 - 0.01 * k)}[loss]
    bpb = floor + (start - floor) / (1 + (t / tau) ** 1.5)
    if loss == "adaptive" and v == 128000 and t >= 300:
        bpb += 0.08
    return bpb, bytes_per_token


def make_lm_sweep(vs=LM_V, times=LM_T):
    """(rows, points) of a language-model sweep (task: lm, seconds budget): one ok row per loss and V, as
    results.csv has them (bpb, ppl, tokens_per_sec, no pairs_per_sec or excess_ce), its curve with bpb at every
    evaluation, target / time_to_target from curves.add_time_to_target (the bpb margin)."""
    rows, points = [], []
    for v in vs:
        for loss, sampler, s in LM_METHODS:
            cell = "-".join(x for x in (loss, sampler, f"S{s}" if s else "", f"V{v}", "300s") if x)
            id_cols = {"cell": cell, "loss": loss, "sampler": sampler, "S": s, "subtract_log_q": "true" if s else "",
                       "finish_with_full": "", "optimizer": "adam 0.001", "V": str(v), "budget": "seconds"}
            step_ms = {"full": 5 + 4e-4 * v, "sampled": 6 + 1e-5 * v, "adaptive": 5.5 + 5e-5 * v}[loss]
            logits = {"full": v, "sampled": 1024, "adaptive": 2048 + v // 8}  # logits a token (B=8, T=256, fp32)
            curve = [(t, *_bpb(loss, v, t)) for t in times]
            for t, bpb, bpt in curve:
                points.append({**id_cols, "step": str(int(t / step_ms * 1000)), "train_s": f"{t:.6g}",
                               "eval_s": "1.5", "full_ce": f"{bpb * bpt * math.log(2):.6g}", "excess_ce": "",
                               "top10": "", "bpb": f"{bpb:.6g}"})
            t, bpb, bpt = curve[-1]
            ce = bpb * bpt * math.log(2)
            rows.append({**id_cols, "task": "lm", "steps": str(int(t / step_ms * 1000)), "train_s": f"{t:.6g}",
                         "eval_s": "13.5", "wall_s": f"{t + 20:.6g}", "pairs_per_sec": "",
                         "tokens_per_sec": f"{8 * 256 / step_ms * 1000:.6g}", "step_ms": f"{step_ms:.4g}",
                         "peak_mem_mb": f"{400 + logits[loss] * 8 * 256 * 4 * 3 / 2**20:.4g}",
                         "full_ce": f"{ce:.6g}", "excess_ce": "", "bpb": f"{bpb:.6g}", "ppl": f"{math.exp(ce):.6g}",
                         "tokenizer_s": "12.0", "status": "ok", "run_dir": f"runs/{cell}"})
    curves.add_time_to_target(rows, points)
    for r in rows:
        r["target"] = "" if r["target"] is None else f"{r['target']:.6g}"
        r["time_to_target"] = "" if r["time_to_target"] is None else f"{r['time_to_target']:.6g}"
    rows.append({"cell": "full-V512000-300s", "loss": "full", "V": "", "task": "lm", "budget": "seconds",
                 "status": "failed: OutOfMemoryError: CUDA out of memory"})
    return rows, points


def _texts(fig) -> list[str]:
    """Every title and axis label of a figure, its legend entries and notes."""
    out = [fig.get_suptitle()] + [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    for ax in panels(fig):
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()] + [t.get_text() for t in ax.texts]
    return [t for t in out if t]


def _best_by_cell(points) -> dict[str, float]:
    return {cell: min(float(p["bpb"]) for p in pts) for cell, pts in curves.by_cell(points).items()}


def test_lm_sweep_writes_its_plots(tmp_path):
    rows, points = make_lm_sweep()
    write_curves_csv(tmp_path, points)
    paths = plot_sweep(tmp_path, rows)
    # one S value: no bias.png; best_vs_V.png with the rest
    assert [p.name for p in paths] == [n for n in PLOT_FILES if n != "bias.png"]
    assert "best_vs_V.png" in [p.name for p in paths]
    for p in paths:
        assert_small_png(p)
    for name, fig in build_figures(rows, points).items():
        assert_no_degenerate_axis(fig)
        text = " ".join(_texts(fig))
        assert "nats" not in text and "pairs" not in text and "excess CE" not in text, (name, text)


def test_lm_curves_in_bits_per_byte_one_panel_per_V():
    rows, points = make_lm_sweep()
    fig = build_figures(rows, points)["curves.png"]
    axes = panels(fig)
    assert [ax.get_title() for ax in axes] == ["V = 8,000", "V = 32,000", "V = 128,000"]
    assert "held-out bits per byte (exact)" in fig.get_suptitle() and "same training time" in fig.get_suptitle()
    assert axes[0].get_ylabel() == "held-out bits per byte (exact)"
    for ax in axes:
        assert ax.get_xscale() == "log"
        assert sorted(ln.get_label() for ln in series_lines(ax, LM_LABELS)) == sorted(LM_LABELS)
        others = [ln.get_label() for ln in series_lines(ax) if ln.get_label() not in LM_LABELS]
        assert others == ["target: 50% of the way from the start to the best bits per byte at V"]
        for ln in series_lines(ax, LM_LABELS):  # the evaluations after the first step (log x: not the one at 0 s)
            assert len(ln.get_xdata()) == len(LM_T) - 1 and min(ln.get_xdata()) > 0
        lo, hi = ax.get_ylim()  # every evaluation drawn is in range
        assert lo <= min(min(ln.get_ydata()) for ln in series_lines(ax, LM_LABELS))
        assert hi >= max(max(ln.get_ydata()) for ln in series_lines(ax, LM_LABELS))


def test_lm_time_to_target_in_bits_per_byte():
    rows, points = make_lm_sweep()
    (ax,) = panels(build_figures(rows, points)["time_to_target.png"])
    assert "50% of the way from the start to the best bits per byte at V" in ax.get_title()
    best = _best_by_cell(points)
    for v in LM_V:  # the targets the rows carry: halfway from the median start (step 0) to the best bpb at V
        at_v = [r for r in rows if r.get("V") == str(v)]
        starts = sorted(float(p["bpb"]) for p in points if p["V"] == str(v) and int(p["step"]) == 0)
        mid = starts[len(starts) // 2] if len(starts) % 2 else (starts[len(starts) // 2 - 1] + starts[len(starts) // 2]) / 2
        goal = mid - 0.5 * (mid - min(best[r["cell"]] for r in at_v))
        assert [float(r["target"]) for r in at_v] == pytest.approx([goal] * len(at_v), rel=1e-5)
    assert sorted(int(t) for t in ax.get_xticks()) == list(LM_V)


def test_lm_best_vs_V_one_line_per_series_at_each_cells_best():
    rows, points = make_lm_sweep()
    fig = build_figures(rows, points)["best_vs_V.png"]
    (ax,) = panels(fig)
    assert ax.get_title().startswith("Best held-out bits per byte in the budget, by vocabulary size")
    assert "same training time: 300 s per cell" in ax.get_title()
    assert "bits per byte" in ax.get_ylabel() and ax.get_xlabel() == plots.V_LABEL
    assert ax.get_xscale() == "log" and sorted(int(t) for t in ax.get_xticks()) == list(LM_V)
    lines = {ln.get_label(): ln for ln in series_lines(ax)}
    assert sorted(lines) == sorted(LM_LABELS)
    best = _best_by_cell(points)
    final = {r["cell"]: float(r["bpb"]) for r in rows if r.get("bpb")}
    for (loss, sampler, s), label in zip(LM_METHODS, LM_LABELS):
        cells = ["-".join(x for x in (loss, sampler, f"S{s}" if s else "", f"V{v}", "300s") if x) for v in LM_V]
        assert [int(x) for x in lines[label].get_xdata()] == list(LM_V)
        assert list(lines[label].get_ydata()) == pytest.approx([best[c] for c in cells])
    diverged = "adaptive-V128000-300s"  # its best is an earlier evaluation, not its final value
    assert best[diverged] < final[diverged] - 0.05
    assert lines["adaptive, Adam"].get_ydata()[-1] == pytest.approx(best[diverged])
    lo, hi = ax.get_ylim()
    assert lo <= min(best.values()) and hi >= max(best.values())


def test_lm_best_vs_V_falls_back_to_the_rows_and_leaves_other_budgets_out():
    rows, points = make_lm_sweep()
    # no curve points for one cell: its row's final bpb; the exact softmax once more at 8k for 1200 s: left out
    gone = "sampled-unigram-S1024-V32000-300s"
    long_full = [{**p, "cell": "full-V8000-1200s", "train_s": f"{float(p['train_s']) * 4:.6g}",
                  "bpb": f"{float(p['bpb']) - 0.1:.6g}"} for p in points if p["cell"] == "full-V8000-300s"]
    long_row = [{**r, "cell": "full-V8000-1200s", "train_s": "1200", "bpb": "1.3"} for r in rows
                if r["cell"] == "full-V8000-300s"]
    fig = build_figures(rows + long_row, [p for p in points if p["cell"] != gone] + long_full)["best_vs_V.png"]
    (ax,) = panels(fig)
    lines = {ln.get_label(): ln for ln in series_lines(ax)}
    row = next(r for r in rows if r["cell"] == gone)
    assert lines["sampled unigram S=1024, Adam"].get_ydata()[1] == pytest.approx(float(row["bpb"]))
    assert lines["full, Adam"].get_ydata()[0] == pytest.approx(_best_by_cell(points)["full-V8000-300s"])
    assert [t.get_text() for t in ax.texts] == ["1 cells with another training budget not drawn"]
    # rows only (no curves.csv): every value is the row's final bpb
    (ax,) = panels(build_figures(rows)["best_vs_V.png"])
    ys = sorted(y for ln in series_lines(ax) for y in ln.get_ydata())
    assert ys == pytest.approx(sorted(float(r["bpb"]) for r in rows if r.get("bpb")))


def test_lm_step_time_and_memory_from_the_lm_rows():
    rows, points = make_lm_sweep()
    figs = build_figures(rows, points)
    for name, col in (("step_time_vs_V.png", "step_ms"), ("peak_mem_vs_V.png", "peak_mem_mb")):
        (ax,) = panels(figs[name])
        lines = {ln.get_label(): ln for ln in series_lines(ax)}
        assert sorted(lines) == sorted(LM_LABELS)
        for (loss, _, _), label in zip(LM_METHODS, LM_LABELS):
            expected = [float(r[col]) for r in rows if r.get("loss") == loss and r.get("V")]
            assert list(lines[label].get_ydata()) == pytest.approx(expected)


def test_skipgram_sweeps_get_no_best_vs_V():
    """Per-class CE measures a different prediction problem at each V: only bits per byte are compared across V."""
    rows, points = make_sweep(vs=(1000, 10000), bias=False)
    assert "best_vs_V.png" not in build_figures(rows, points)
    text = [{**p, "excess_ce": ""} for p in points]
    assert "best_vs_V.png" not in build_figures([{**r, "excess_ce": ""} for r in rows], text)


def test_ce_metric_prefers_bits_per_byte():
    lm = plots._cells([{"loss": "full", "V": "8000", "full_ce": "3.2", "bpb": "1.4", "status": "ok"}])
    assert plots._ce_metric(lm) == "bpb"
    assert "bits per byte" in plots._target_text("bpb") and "excess CE" in plots._target_text("excess_ce")


@pytest.mark.parametrize("sweep_dir", ["results", "results_text", "results_lm_text"])
def test_committed_time_to_target_charts_are_readable(sweep_dir):
    """The published charts (docs/): a legend a reader can take in, and at every V at least two cells that reach the
    target (halfway from the start to the best), so the chart compares losses instead of naming the best one."""
    from sampledsoftmax.experiments.sweep import _read_results

    root = Path(__file__).resolve().parents[1] / "docs" / sweep_dir
    rows, points = _read_results(root / "results.csv"), curves.read_curves(root / "curves.csv")
    curves.add_time_to_target(rows, points)
    fig = build_figures(rows, points)["time_to_target.png"]
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) <= 16
    for v in {r["V"] for r in rows if r.get("status") == "ok"}:
        reached = [r for r in rows if r["V"] == v and r.get("time_to_target") not in (None, "")]
        assert len(reached) >= 2, (sweep_dir, v)
