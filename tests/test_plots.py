"""The sweep's PNG plots: which files are written for which rows, that they are real small PNGs, and the helpers
(series labels, Pareto front, row parsing) on examples worked out by hand."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from sampledsoftmax.experiments import plots
from sampledsoftmax.experiments.plots import PLOT_FILES, Series, pareto_front, plot_sweep, series_label, series_of
from sampledsoftmax.experiments.sweep import COLUMNS, write_results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_BYTES = 300_000

# (loss, sampler, S, subtract_log_q): the methods of the synthetic sweep
METHODS = [
    ("full", "", "", ""),
    ("sampled", "log_uniform", "64", "true"),
    ("sampled", "log_uniform", "64", "false"),
    ("sampled", "uniform", "256", "true"),
    ("nce", "unigram", "64", ""),
    ("negative", "unigram", "5", ""),
    ("inbatch", "", "", "true"),
]


def make_rows(vs=(1000, 10000, 100000), budget: str = "pairs", bias: bool = True) -> list[dict]:
    """One ok row per method and V (strings, as csv.DictReader gives them), a failed cell, and a row that lacks
    peak_mem_mb and top1/top10 altogether (an older CSV)."""
    rows = []
    for k, v in enumerate(vs):
        for j, (loss, sampler, s, logq) in enumerate(METHODS):
            step_ms = (0.01 * v if loss == "full" else 2.0 + j) * (1 + 0.1 * k)
            rows.append({
                "cell": f"{loss}-{sampler}-S{s}-V{v}", "loss": loss, "sampler": sampler, "S": s,
                "subtract_log_q": logq, "V": str(v), "steps": "300", "wall_s": f"{5 + step_ms * 0.3:.4g}",
                "pairs_per_sec": "1e5", "step_ms": f"{step_ms:.4g}", "peak_mem_mb": f"{200 + v / 1000 * (j + 1):.4g}",
                "full_ce": f"{4 + 0.1 * j:.4g}", "excess_ce": f"{0.05 + 0.02 * j + 0.01 * k:.4g}",
                "top1": "0.1", "top10": "0.4",
                "bias_gap": f"{0.3 / (j + 1) + 0.1 * k:.4g}" if bias and loss == "sampled" else "",
                "grad_cosine": "", "budget": budget, "status": "ok", "run_dir": f"runs/{loss}{j}-V{v}",
            })
    rows.append({"cell": "sampled-uniform-S5000-V1000", "loss": "sampled", "sampler": "uniform", "S": "5000",
                 "subtract_log_q": "true", "V": "1000", "wall_s": "0.1", "step_ms": "", "peak_mem_mb": "",
                 "full_ce": "", "excess_ce": "", "status": "failed: InputError: num_sampled=5000 >= V=1000"})
    rows.append({"cell": "old-row", "loss": "negative", "sampler": "uniform", "S": "5", "V": str(vs[0]),
                 "wall_s": "7", "step_ms": "3", "full_ce": "4.5", "excess_ce": "0.4", "status": "ok"})
    return rows


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


# ------------------------------------------------------------------------------------------------ plot_sweep

def test_writes_the_five_plots_and_returns_exactly_them(tmp_path):
    out = tmp_path / "sweep"
    paths = plot_sweep(out, make_rows())
    assert paths == [out / name for name in PLOT_FILES]
    assert written(out) == set(PLOT_FILES)  # nothing else: no temporary files left behind
    for p in paths:
        assert_small_png(p)


def test_nothing_ok_writes_nothing(tmp_path):
    failed = [r for r in make_rows() if r["status"] != "ok"]
    assert failed
    assert plot_sweep(tmp_path / "a", failed) == []
    assert plot_sweep(tmp_path / "b", []) == []
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_rows_read_back_from_write_results(tmp_path):
    write_results(tmp_path, make_rows())
    with open(tmp_path / "results.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    paths = plot_sweep(tmp_path / "plots", rows)
    # the table keeps only its COLUMNS: bias.png only once the sweep records bias_gap
    expected = [n for n in PLOT_FILES if n != "bias.png" or "bias_gap" in COLUMNS]
    assert [p.name for p in paths] == expected
    for p in paths:
        assert_small_png(p)


def test_fresh_rows_with_numbers(tmp_path):
    rows = []
    for r in make_rows():
        r = dict(r)
        for k in ("V", "S", "wall_s", "step_ms", "peak_mem_mb", "full_ce", "excess_ce", "bias_gap"):
            if r.get(k):
                r[k] = float(r[k]) if k not in ("V", "S") else int(r[k])
            elif k in r:
                r[k] = None
        r["subtract_log_q"] = {"true": True, "false": False}.get(r.get("subtract_log_q", ""), "")
        rows.append(r)
    assert [p.name for p in plot_sweep(tmp_path, rows)] == list(PLOT_FILES)


def test_single_v(tmp_path):
    paths = plot_sweep(tmp_path, make_rows(vs=(5000,)))
    assert [p.name for p in paths] == list(PLOT_FILES)
    for p in paths:
        assert_small_png(p)


def test_no_bias_values_no_bias_plot(tmp_path):
    paths = plot_sweep(tmp_path, make_rows(bias=False))
    assert [p.name for p in paths] == [n for n in PLOT_FILES if n != "bias.png"]
    assert not (tmp_path / "bias.png").exists()


def test_missing_columns_skip_their_plots(tmp_path):
    keep = ("cell", "loss", "sampler", "S", "V", "wall_s", "full_ce", "status")
    rows = [{k: r[k] for k in keep if k in r} for r in make_rows()]
    paths = plot_sweep(tmp_path, rows)
    # no step_ms, peak_mem_mb, excess_ce, bias_gap: CE falls back to full_ce; the frontier still has wall_s
    assert [p.name for p in paths] == ["ce_vs_V.png", "frontier.png"]
    assert written(tmp_path) == {"ce_vs_V.png", "frontier.png"}


def test_two_budgets(tmp_path):
    rows = make_rows(budget="pairs") + make_rows(budget="seconds")
    paths = plot_sweep(tmp_path, rows)
    assert [p.name for p in paths] == list(PLOT_FILES)
    from matplotlib.image import imread

    one = plot_sweep(tmp_path / "one", make_rows(budget="pairs"))
    # one row of frontier panels per budget: the two-budget frontier is the taller figure
    assert imread(paths[3]).shape[0] > imread(one[3]).shape[0]
    for p in paths:
        assert_small_png(p)


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


def test_pareto_front_by_hand():
    pts = [(10, 0.5), (5, 0.9), (20, 0.3), (12, 0.6), (5, 0.9), (30, 0.3), (8, 0.9), (5, 1.2)]
    # by x: (5,0.9)#1 kept, (5,0.9)#4 same point, (5,1.2)#7 and (8,0.9)#6 no lower CE, (10,0.5)#0 kept,
    # (12,0.6)#3 dominated by #0, (20,0.3)#2 kept, (30,0.3)#5 slower with the same CE
    assert pareto_front(pts) == [1, 0, 2]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 2.0)]) == [0]
    assert pareto_front([(1, 5), (2, 3), (3, 4), (4, 1)]) == [0, 1, 3]


def test_rows_parsed_and_duplicates_combined_by_median():
    base = {"loss": "sampled", "sampler": "uniform", "S": "64", "subtract_log_q": "true", "V": "1000",
            "status": "ok"}
    rows = [
        {**base, "step_ms": "10", "excess_ce": "0.5"},
        {**base, "step_ms": "20", "excess_ce": ""},
        {**base, "step_ms": "nan", "excess_ce": "0.7"},
        {**base, "step_ms": "999", "status": "failed: boom"},
        {**base, "status": " ok ", "S": "64.0", "subtract_log_q": "TRUE", "step_ms": " 30 "},
    ]
    (cell,) = plots._cells(rows)
    assert cell.series == Series("sampled", "uniform", 64, True)
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
    a, b = plots._colors(series), plots._colors(reversed(series))
    assert a == b
    assert len(set(a.values())) == len(series)  # 16 methods, 16 colours


@pytest.mark.parametrize("v, text", [(1000, "1k"), (10000, "10k"), (1000000, "1M"), (1024, "1,024"), (300, "300"),
                                     (9987, "9,987")])
def test_count_labels(v, text):
    assert plots._fmt_count(v) == text
