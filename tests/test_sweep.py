"""The sweep runner: a tiny grid on the planted corpus (V=200, a few steps per cell)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from sampledsoftmax.experiments import sweep as sweep_mod
from sampledsoftmax.errors import ConfigError
from sampledsoftmax.experiments.sweep import COLUMNS, cell_id, load_sweep, run_sweep

BASE = [
    "data.synthetic.vocab_size=200", "data.synthetic.num_tokens=20000", "data.synthetic.num_topics=5",
    "data.synthetic.heldout_sentences=50", "model.dim=8", "optim.batch_size=256", "train.max_steps=10",
    "train.log_every=5", "train.device=cpu", "eval.every=10", "eval.projector_words=10",
]


def write_sweep(tmp_path: Path, grid: list, base=BASE, **top) -> Path:
    import yaml

    doc = {"name": "t", "out_dir": str(tmp_path / "out"), "base": list(base), "grid": grid, **top}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


GRID = [
    {"loss.name": ["sampled"], "loss.sampler": ["uniform"], "loss.num_sampled": [16, 500]},  # 500 >= V: fails
    {"loss.name": ["full"]},
]


def test_cell_ids_and_grid_groups(tmp_path):
    assert cell_id({"loss.name": "sampled", "loss.sampler": "log_uniform", "loss.num_sampled": 1024,
                    "data.synthetic.vocab_size": 10000}) == "sampled-log_uniform-S1024-V10000"
    assert cell_id({"data.synthetic.vocab_size": 1000, "loss.name": "full"}) == "full-V1000"
    grid = [{"loss.name": ["sampled"], "loss.sampler": ["uniform", "unigram"], "loss.num_sampled": [16, 32],
             "loss.subtract_log_q": [True, False]},
            {"loss.name": ["full"], "data.synthetic.vocab_size": [200, 300]}]
    sw = load_sweep(write_sweep(tmp_path, grid))
    ids = [c.id for c in sw.cells]
    assert len(ids) == 8 + 2 and len(set(ids)) == len(ids)  # full is not multiplied by samplers
    assert "sampled-unigram-S32-nologq" in ids and "full-V300" in ids
    assert sw.out_dir == tmp_path / "out"


def test_sweep_runs_records_failures_and_resumes(tmp_path, monkeypatch, capsys):
    path = write_sweep(tmp_path, GRID)
    rows = run_sweep(path)
    out = tmp_path / "out"
    assert [r["cell"] for r in rows] == ["sampled-uniform-S16", "sampled-uniform-S500", "full"]
    csv_rows = read_csv(out / "results.csv")
    assert list(csv_rows[0]) == COLUMNS
    assert [r["cell"] for r in csv_rows] == [r["cell"] for r in rows]
    ok = {r["cell"]: r for r in csv_rows if r["status"] == "ok"}
    assert set(ok) == {"sampled-uniform-S16", "full"}
    bad = next(r for r in csv_rows if r["cell"] == "sampled-uniform-S500")
    assert bad["status"].startswith("failed: ") and "num_sampled" in bad["status"] and "\n" not in bad["status"]
    for r in ok.values():
        assert r["V"] == "200" and r["steps"] == "10"
        for col in ("wall_s", "pairs_per_sec", "step_ms", "peak_mem_mb", "full_ce", "excess_ce", "top1", "top10"):
            assert r[col] != "" and float(r[col]) >= 0, col
        run_dir = Path(r["run_dir"])
        assert run_dir.parent == out / "runs" and run_dir.name == r["cell"]
        assert list(run_dir.glob("events.out.tfevents.*")), "one TensorBoard run per cell"
    assert ok["sampled-uniform-S16"]["sampler"] == "uniform" and ok["sampled-uniform-S16"]["S"] == "16"
    assert ok["full"]["sampler"] == "" and ok["full"]["S"] == ""
    assert all(r["optimizer"] == "sgd 0.025" for r in ok.values())  # optim.name and optim.alpha of the cell
    assert all(r["budget"] == "pairs" and float(r["train_s"]) > 0 for r in ok.values())
    sampled = ok["sampled-uniform-S16"]  # the sampled-vs-exact bias diagnostics of the final evaluation
    assert sampled["bias_gap"] not in ("", "nan") and -1 <= float(sampled["grad_cosine"]) <= 1
    assert ok["full"]["bias_gap"] == "" and ok["full"]["wordsim"] == ""
    # plots written with the results: the curves (one evaluation per cell here), time to target, step time and
    # memory; no bias.png (one S value per sampler: S=500 failed), none of the dropped frontier/ce_vs_V plots
    for png in ("curves.png", "time_to_target.png", "step_time_vs_V.png", "peak_mem_vs_V.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 150_000, png
    assert (out / "curves.csv").is_file()
    assert not any((out / png).exists() for png in ("bias.png", "frontier.png", "ce_vs_V.png"))
    md = (out / "results.md").read_text()
    assert md.count("\n") == 2 + 3 and md.startswith("| cell | loss |")
    err = capsys.readouterr().err
    assert "[1/3] sampled-uniform-S16 ... done in" in err and "ETA" in err and "[2/3]" in err and "failed" in err

    # a re-run trains only the failed cell again; finished cells keep their rows and their single run directory
    calls = []
    real = sweep_mod.run_cell
    monkeypatch.setattr(sweep_mod, "run_cell", lambda cell, *a, **k: calls.append(cell.id) or real(cell, *a, **k))
    rows2 = run_sweep(path, quiet=True)
    assert calls == ["sampled-uniform-S500"]
    assert sorted(p.name for p in (out / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")) == \
        ["full", "sampled-uniform-S16", "sampled-uniform-S500"]
    assert [r["cell"] for r in rows2] == [r["cell"] for r in rows]
    assert {r["cell"]: r["wall_s"] for r in read_csv(out / "results.csv") if r["status"] == "ok"} == \
        {k: v["wall_s"] for k, v in ok.items()}


def test_typo_fails_fast_before_any_cell(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_mod, "run_cell", lambda *a, **k: pytest.fail("a cell ran before validation"))
    grid = [{"loss.name": ["full"]}, {"loss.name": ["sampled"], "loss.num_sampeld": [16]}]
    with pytest.raises(ConfigError, match=r"num_sampeld.*did you mean") as e:
        run_sweep(write_sweep(tmp_path, grid))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="loss.name"):
        run_sweep(write_sweep(tmp_path, [{"loss.name": ["sampeld"]}]))
    assert not (tmp_path / "out" / "results.csv").exists()


@pytest.mark.parametrize("doc, match", [
    ({"grdi": [{"loss.name": ["full"]}]}, r'unknown sweep key "grdi".*did you mean "grid"'),
    ({"grid": []}, "grid"),
    ({"grid": [["loss.name=full"]]}, r"grid\[0\]"),
    ({"grid": [{"loss.name": []}]}, r"grid\[0\]\.loss\.name"),
    ({"grid": [{"loss.name": [["full"]]}]}, r"grid\[0\]\.loss\.name"),
    ({"grid": [{"loss.name": ["full"]}], "base": "model.dim=8"}, "base"),
    ({"grid": [{"loss.name": ["full"]}, {"loss.name": ["full"]}]}, "duplicate"),
])
def test_malformed_sweep_files(tmp_path, doc, match):
    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "t", **doc}), encoding="utf-8")
    with pytest.raises(ConfigError, match=match):
        load_sweep(path)


def test_shipped_sweep_files_validate():
    root = Path(__file__).resolve().parent.parent / "configs"
    quick = load_sweep(root / "sweep_quick.yaml")
    assert len(quick.cells) == 36
    full = load_sweep(root / "sweep.yaml")
    assert len({c.id for c in full.cells}) == len(full.cells) == 58
    with pytest.raises(ConfigError, match="data.corpus 'data/text8' does not exist"):  # the user's corpus
        load_sweep(root / "sweep_text.yaml")
    text = load_sweep(root / "sweep_text.yaml", [f"data.corpus={root / 'sweep_text.yaml'}"])  # any existing file
    assert len({c.id for c in text.cells}) == len(text.cells) == 20
    converged = load_sweep(root / "sweep_converged.yaml")
    assert [c.id for c in converged.cells] == ["full-adam", "sampled-unigram-S1024-sparse_adam", "nce-S64-sparse_adam"]


def test_the_converged_sweep_trains_on_the_headline_sweeps_10k_corpus():
    """sweep_converged.yaml is read against sweep.yaml's V = 10k cells: the same planted corpus and model size."""
    import yaml

    root = Path(__file__).resolve().parent.parent / "configs"

    def settings(name):
        base = yaml.safe_load((root / name).read_text())["base"]
        return dict(item.split("=", 1) for item in base if item.startswith(("data.", "model.", "optim.batch_size")))

    full, converged = settings("sweep.yaml"), settings("sweep_converged.yaml")
    assert converged.pop("data.synthetic.vocab_size") == "10000"
    assert converged == full


def test_real_text_sweep_varies_the_class_count_through_the_vocabulary_cap(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    words = np.array([f"w{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(300)])
    p = 1.0 / np.arange(1, 301)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words, size=12, p=p / p.sum())) for _ in range(1500)) + "\n")
    base = [f"data.corpus={corpus}", "data.min_count=1", "data.sample=0", "data.heldout_fraction=0.05",
            "model.dim=8", "optim.batch_size=256", "train.max_steps=5", "train.log_every=5", "train.device=cpu",
            "eval.every=5", "eval.projector_words=10"]
    grid = [{"loss.name": ["sampled"], "loss.num_sampled": [16], "data.max_final_vocab": [50, 120]}]
    rows = run_sweep(write_sweep(tmp_path, grid, base=base), quiet=True)
    assert [r["cell"] for r in rows] == ["sampled-S16-maxV50", "sampled-S16-maxV120"]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert [int(r["V"]) for r in rows] == [50, 120]  # the trained vocabulary, read back from the run
    assert all(r["excess_ce"] in ("", None) and float(r["full_ce"]) > 0 for r in rows)  # no Bayes CE on real text


def test_equal_pairs_and_equal_wall_clock_budgets(tmp_path):
    """budgets: [pairs, {seconds: N}] runs every cell twice: base's step budget, then N seconds of training."""
    base = [*BASE, "eval.every=100000"]
    grid = [{"loss.name": ["sampled"], "loss.num_sampled": [16]}, {"loss.name": ["full"]}]
    rows = run_sweep(write_sweep(tmp_path, grid, base=base, budgets=["pairs", {"seconds": 0.5}]), quiet=True)
    assert [r["cell"] for r in rows] == ["sampled-S16", "sampled-S16-0.5s", "full", "full-0.5s"]
    assert [r["status"] for r in rows] == ["ok"] * 4
    for r in rows:
        if r["cell"].endswith("-0.5s"):  # trained for the time, however many steps that took
            assert r["budget"] == "seconds" and 0.5 <= float(r["train_s"]) < 10 and 0 < int(r["steps"]) < 10**9
        else:
            assert r["budget"] == "pairs" and int(r["steps"]) == 10


@pytest.mark.parametrize("budgets", [[], "pairs", [{"seconds": 0}], [{"seconds": True}], [{"minutes": 1}],
                                     ["pairs", "pairs"]])
def test_malformed_budgets(tmp_path, budgets):
    with pytest.raises(ConfigError, match="budgets"):
        load_sweep(write_sweep(tmp_path, [{"loss.name": ["full"]}], budgets=budgets))
