"""The loss benchmark at tiny sizes: its rows, its arithmetic and its outputs (never its speed)."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest

from sampledsoftmax import LOSSES
from sampledsoftmax.experiments import bench
from sampledsoftmax.cli import main
from sampledsoftmax.errors import ConfigError, SampledSoftmaxError

TINY = dict(sizes=(300,), n=32, dim=8, num_sampled=16, repeats=2, warmup=1)
# S of the bound: the sampled losses use num_sampled candidates, in-batch negatives the batch's N targets.
EXPECTED_S = {"sampled": 16, "nce": 16, "negative": 16, "inbatch": 32, "full": None, "ova": None, "naive": None,
              "cce": None}


@pytest.fixture(scope="module")
def result() -> bench.BenchResult:
    return bench.run(bench.BenchConfig(**TINY, isolate=False))


def test_one_row_per_loss_and_size_every_registered_loss_and_naive(result):
    peers = ["naive", "cce"] if bench.cce_available() else ["naive"]
    assert [(r["loss"], r["V"]) for r in result.rows] == [(name, 300) for name in [*LOSSES, *peers]]
    assert not result.failed


def test_cce_row_is_an_exact_loss_and_missing_cce_is_one_clear_error(result, monkeypatch):
    """Apple's Cut Cross-Entropy, where installed (the test extras install it), is a row like the exact losses: the
    same (V, d) bound, a finite loss near log V at initialisation; where it is not, naming it is one ConfigError."""
    if bench.cce_available():
        row = next(r for r in result.rows if r["loss"] == "cce")
        full = next(r for r in result.rows if r["loss"] == "full")
        assert row["S"] is None and row["grad"] == "dense"
        assert abs(row["last_loss"] - math.log(300)) < 1.0 and abs(full["last_loss"] - math.log(300)) < 1.0
    monkeypatch.setitem(__import__("sys").modules, "cut_cross_entropy", None)  # as if not installed
    with pytest.raises(ConfigError, match="pip install cut-cross-entropy"):
        bench.run_cell(bench.BenchConfig(**TINY, losses=("cce",), isolate=False), "cce", 300, "cpu")


def test_times_are_positive_and_finite_and_ratio_is_median_over_bound(result):
    for row in result.rows:
        assert len(row["times_ms"]) == TINY["repeats"]
        for key in ("median_ms", "min_ms", "bound_median_ms", "bound_min_ms"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["loss"], key, row[key])
        assert row["min_ms"] <= row["median_ms"]
        assert row["bound_min_ms"] <= row["bound_median_ms"]
        assert row["ratio"] == pytest.approx(row["median_ms"] / row["bound_median_ms"])
        assert math.isfinite(row["last_loss"]), row["loss"]
        assert row["optimizer"] == "sgd"


def test_bound_uses_v_for_exact_losses_and_s_for_sampled_ones(result):
    for row in result.rows:
        if row["loss"] in EXPECTED_S:
            assert row["S"] == EXPECTED_S[row["loss"]], row["loss"]


def test_markdown_table_has_machine_line_header_and_one_row_per_cell(result):
    text = bench.format_markdown(result)
    lines = text.splitlines()
    assert lines[0].startswith("machine: ") and "torch " in lines[0] and "threads" in lines[0] and "device cpu" in lines[0]
    header = "| loss | V | S | optimizer | step ms (median) | min ms | matmul bound ms | ratio | peak extra MB |"
    assert header in lines
    rows = lines[lines.index(header) + 2 :]
    assert len(rows) == len(result.rows)
    for line, row in zip(rows, result.rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == row["loss"] and cells[1] == "300" and len(cells) == 9
        assert float(cells[7]) == pytest.approx(row["ratio"], rel=0.06, abs=0.006)  # printed to 3 digits


def test_adam_picks_sparse_adam_for_sparse_gradient_losses():
    sampled = [name for name, s in EXPECTED_S.items() if s is not None and name in LOSSES][:1]
    cfg = bench.BenchConfig(**TINY, losses=("full", *sampled), optimizer="adam", isolate=False)
    rows = {r["loss"]: r for r in bench.run(cfg).rows}
    assert rows["full"]["optimizer"] == "adam"
    for name in sampled:
        assert rows[name]["optimizer"] == "sparse_adam" and rows[name]["grad"] == "sparse"


def test_isolated_cells_report_peak_memory_that_covers_the_naive_logits():
    n, v = 256, 20_000
    cfg = bench.BenchConfig(losses=("naive", "full"), sizes=(v,), n=n, dim=8, num_sampled=16, repeats=2, warmup=1)
    result = bench.run(cfg)
    assert [r["loss"] for r in result.rows] == ["naive", "full"] and not result.failed
    logits_mb = n * v * 4 / 2**20  # the (N, V) float32 logits the naive reference materialises
    naive = result.rows[0]
    assert naive["peak_extra_mb"] >= 0.9 * logits_mb
    assert all(r["peak_extra_mb"] is not None and r["peak_extra_mb"] >= 0 for r in result.rows)


def test_naive_reference_is_skipped_above_naive_max_v():
    cfg = bench.BenchConfig(**{**TINY, "sizes": (300, 600)}, losses=("naive", "full"), naive_max_v=300)
    assert bench.plan_cells(cfg) == [("naive", 300), ("full", 300), ("full", 600)]


def test_unknown_loss_is_a_config_error_with_did_you_mean():
    with pytest.raises(ConfigError, match='did you mean "sampled"'):
        bench.resolve_losses(("sampeld",))
    with pytest.raises(SampledSoftmaxError):
        bench.run(bench.BenchConfig(**TINY, losses=("nosuch",), isolate=False))


@pytest.mark.parametrize(
    "change", [{"repeats": 0}, {"sizes": ()}, {"n": -1}, {"optimizer": "lamb"}, {"targets": "normal"}, {"lr": 0.0}]
)
def test_bad_config_is_rejected_before_any_cell_runs(change):
    with pytest.raises(ConfigError):
        bench.run(bench.BenchConfig(**{**TINY, **change}, isolate=False))


def test_uniform_and_zipf_targets_are_in_range_and_differ():
    import torch

    gen = torch.Generator().manual_seed(0)
    zipf = bench._make_targets("zipf", 20_000, 1000, gen)
    uniform = bench._make_targets("uniform", 20_000, 1000, gen)
    for t in (zipf, uniform):
        assert t.dtype == torch.long and int(t.min()) >= 0 and int(t.max()) < 1000
    # log-uniform puts log(2)/log(1001) ~ 10% of the mass on class 0; uniform puts 0.1% there
    assert (zipf == 0).float().mean() > 0.05 > (uniform == 0).float().mean()


def test_failed_cell_is_a_table_row_not_a_crash():
    cfg = bench.BenchConfig(**TINY)
    result = bench.BenchResult(machine=bench.machine_info("cpu"), config=dataclasses.asdict(cfg))
    result.rows.append(bench._failed_row(cfg, "full", 300, "cpu", "cell process killed by signal 9 (out of memory?)"))
    assert result.failed and "| full | 300 | - | - | failed: cell process killed by signal 9" in bench.format_markdown(result)


def test_cli_bench_writes_markdown_and_json(tmp_path, capsys):
    out, js = tmp_path / "t.md", tmp_path / "sub" / "t.json"
    argv = ["bench", "--sizes", "300", "-n", "32", "--dim", "8", "--num-sampled", "16", "--repeats", "2"]
    argv += ["--warmup", "1", "--losses", "full,naive", "--no-isolate", "--out", str(out), "--json", str(js)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    data = json.loads(js.read_text())
    assert data["machine"]["torch"] and data["config"]["sizes"] == [300]
    assert [(r["loss"], r["V"]) for r in data["rows"]] == [("full", 300), ("naive", 300)]
    assert out.read_text().strip() == printed.strip()


def test_each_loss_gets_its_kind_of_settings():
    cfg = bench.BenchConfig(**TINY, memory_budget_mb=64.0)
    assert bench._loss_kwargs("sampled", cfg) == {"sampler": "log_uniform", "num_sampled": 16, "sparse": True}
    assert bench._loss_kwargs("inbatch", cfg) == {"sparse": True}  # its candidates are the batch's targets
    assert bench._loss_kwargs("full", cfg) == {"memory_budget_mb": 64.0}
    assert bench._loss_kwargs("negative", cfg)["shared"] is True
    per_example = bench.BenchConfig(**TINY, per_example_negatives=True)
    assert bench._loss_kwargs("negative", per_example)["shared"] is False


def test_step_parts_script_prints_phases_bound_and_operators(capsys):
    """scripts/bench_step_parts.py: the phases of a step add up to the step, next to the bound and the operators."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_step_parts.py"
    spec = importlib.util.spec_from_file_location("bench_step_parts", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["sampled", "2k", "--steps", "3", "--top", "4"]) == 0
    out = capsys.readouterr().out
    phases = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()
              if line.strip().split(" ")[0] in ("zero_grad", "sample", "forward", "backward", "optimizer", "step")}
    assert set(phases) == {"zero_grad", "sample", "forward", "backward", "optimizer", "step"}
    assert abs(sum(v for k, v in phases.items() if k != "step") - phases["step"]) < 1e-2
    assert "ratio" in out and "operators by self time" in out
    assert "aten::mm" in out or "aten::addmm" in out
    # the floor: the bound plus each part outside the products, the sample's the phase above
    bound = float(next(line for line in out.splitlines() if line.split()[:1] == ["bound"]).split()[1])
    floor_line = next(line for line in out.splitlines() if line.split()[:1] == ["floor"])
    parts = dict(re.findall(r"(sample|gather|update|pass) ([0-9.]+)", floor_line))
    assert set(parts) == {"sample", "gather", "update", "pass"}
    assert float(parts["sample"]) == pytest.approx(phases["sample"], abs=1e-3)
    assert float(floor_line.split()[1]) == pytest.approx(bound + sum(map(float, parts.values())), abs=5e-3)
