"""The fault battery: what a cluster does to a job. Stop signals (SIGTERM, SIGUSR1, SIGINT) and SIGKILL at random
moments, inside checkpoint writes too, for both trainers and a 2-process torchrun run; two starts with one name;
two sweeps on one directory and a job array's shards; a resume of a live run; damaged caches; a corpus that changes
between a run and its resume.

The promise checked each time: the run resumes from the step it was at (a stop signal) or from its last checkpoint
(SIGKILL), and the resumed run equals the uninterrupted one bit for bit; no two processes ever train in one run
directory; every cell of a sweep runs exactly once. Random moments come from seeded generators, so a failure
reproduces."""

from __future__ import annotations

import csv
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from sampledsoftmax.cli import main
from sampledsoftmax.embeddings.config import load_config
from sampledsoftmax.embeddings.train import train
from sampledsoftmax.experiments.sweep import parse_shard, run_sweep
from sampledsoftmax.lm.config import load_lm_config
from sampledsoftmax.lm.train import train_lm
from sampledsoftmax.training.checkpoint import load_checkpoint
from sampledsoftmax.training.signals import stop_on_signals

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 180

# word2vec's compiled step in order (train.deterministic): a run and its resume are bit-identical
SG = ["data.synthetic.vocab_size=300", "data.synthetic.num_tokens=20000", "data.synthetic.num_topics=5",
      "data.synthetic.heldout_sentences=50", "model.dim=16", "optim.batch_size=128", "train.epochs=2",
      "train.log_every=10", "eval.every=200", "train.checkpoint_every=1000000", "train.checkpoint_seconds=0",
      "eval.projector_words=20", "train.device=cpu", "train.deterministic=true"]
LM = ["data.synthetic.vocab_size=200", "data.synthetic.num_tokens=12000", "data.synthetic.num_topics=4",
      "data.synthetic.heldout_sentences=40", "data.seq_len=16", "model.dim=32", "optim.batch_size=16",
      "train.epochs=3", "train.log_every=10", "eval.every=50", "train.checkpoint_every=1000000",
      "train.checkpoint_seconds=0", "train.device=cpu", "loss.num_sampled=40"]


def _sg(tmp_path, name, *extra):
    return load_config(None, [f"runs_root={tmp_path}", f"name={name}", *SG, *extra])


def _lm(tmp_path, name, *extra):
    return load_lm_config(None, [f"runs_root={tmp_path}", f"name={name}", *LM, *extra])


def _sets(overrides) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return env


def _popen(args, cwd, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sampledsoftmax", *args], cwd=cwd, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    assert sa["step"] == sb["step"]
    for part in ("model", "loss"):
        assert sa[part].keys() == sb[part].keys()
        for k in sa[part]:
            assert torch.equal(sa[part][k], sb[part][k]), (part, k)


def _signal_self_during(fn, sig, delay):
    """fn() with `sig` sent to this process after `delay` seconds, the stop handlers installed first (as the CLI
    does, so a signal during start-up stops the run at step 0). Waits for the signal before returning."""
    with stop_on_signals():
        timer = threading.Timer(delay, os.kill, (os.getpid(), sig))
        timer.start()
        try:
            return fn()
        finally:
            timer.join()
            time.sleep(0.01)  # let the handler run inside the block


# ------------------------------------------------------------------------------------------------ stop signals

@pytest.mark.parametrize("task", ["skipgram", "lm"])
def test_a_stop_signal_at_a_random_moment_resumes_from_that_step_and_equals_the_straight_run(tmp_path, task):
    make, run = (_sg, train) if task == "skipgram" else (_lm, train_lm)
    straight = run(make(tmp_path, "straight"), quiet=True)
    t0 = time.perf_counter()  # a second, warm run: how long the runs below take (start-up included)
    again = run(make(tmp_path, "again"), quiet=True)
    duration = time.perf_counter() - t0
    assert_same_weights(straight["run_dir"] / "last.pt", again["run_dir"] / "last.pt")  # reproducible at all
    rng = random.Random(task)
    stops = 0
    for trial, sig in enumerate([signal.SIGTERM, signal.SIGUSR1, signal.SIGINT]):
        name = f"cut{trial}"
        out = _signal_self_during(lambda: run(make(tmp_path, name), quiet=True), sig, rng.uniform(0, 0.7 * duration))
        if out["stopped"]:
            stops += 1
            assert out["signal"] == sig
            state = load_checkpoint(out["run_dir"] / "last.pt")
            assert state["step"] == out["step"] < straight["step"]  # the step it was at: no periodic checkpoint
            out = run(make(tmp_path, name), quiet=True, resume=True)
        assert out["step"] == straight["step"]
        assert_same_weights(straight["run_dir"] / "last.pt", out["run_dir"] / "last.pt")
    assert stops >= 1  # the moments fell inside the runs (start-up included), not all after their end


def test_sigterm_through_the_cli_checkpoints_says_so_and_exits_75(tmp_path):
    args = ["train", *_sets([f"runs_root={tmp_path}", "name=pre", *SG, "train.epochs=200", "train.log_every=1"])]
    p = _popen(args, tmp_path)
    seen = ""
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        line = p.stderr.readline()
        seen += line
        if line.startswith("step 5") or not line:
            break
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=TIMEOUT)
    assert p.returncode == 75, seen + err
    (line,) = [x for x in err.splitlines() if x.startswith("stopped at step")]
    assert "on SIGTERM" in line and "--resume" in line and "Traceback" not in err
    step = int(line.split()[3].rstrip(":"))
    assert load_checkpoint(tmp_path / "pre" / "last.pt")["step"] == step >= 5


@pytest.mark.parametrize("task", ["skipgram", "lm"])
def test_sigkill_at_random_moments_even_inside_checkpoint_writes_never_corrupts_and_resume_equals(tmp_path, task):
    """A checkpoint every step, so kills land inside writes; after each kill the last checkpoint loads and the run
    resumes from it; the final weights equal the uninterrupted run's."""
    make, run, cmd = (_sg, train, "train") if task == "skipgram" else (_lm, train_lm, "train-lm")
    every = ["train.checkpoint_every=1"]
    straight = run(make(tmp_path, "straight", *every), quiet=True)
    overrides = [f"runs_root={tmp_path}", "name=killed", *(SG if task == "skipgram" else LM), *every]
    rng = random.Random(7)
    kills = 0
    for _ in range(2):
        resume = (tmp_path / "killed" / "last.pt").exists()
        p = _popen([cmd, "--quiet", *(["--resume"] if resume else []), *_sets(overrides)], tmp_path)
        start = time.time()
        while not (tmp_path / "killed" / "last.pt").exists() and p.poll() is None and time.time() - start < 60:
            time.sleep(0.02)  # training has begun (the first checkpoints are written)
        time.sleep(rng.uniform(0.0, 0.8))
        p.kill()
        p.communicate(timeout=TIMEOUT)
        kills += p.returncode == -signal.SIGKILL
        state = load_checkpoint(tmp_path / "killed" / "last.pt")  # never a torn file
        assert 0 < state["step"] <= straight["step"]
    assert kills >= 1
    out = run(make(tmp_path, "killed", *every), quiet=True, resume=True)
    assert out["step"] == straight["step"]
    assert_same_weights(straight["run_dir"] / "last.pt", out["run_dir"] / "last.pt")
    leftovers = [f.name for f in (tmp_path / "killed").iterdir() if f.name.endswith(".tmp")]
    assert len(leftovers) <= 2  # a kill inside a write leaves at most its temporary file, never a damaged last.pt


def test_torchrun_sigterm_stops_every_rank_at_one_step_and_resume_equals_the_straight_run(tmp_path):
    overrides = [*SG, "train.epochs=30", "train.max_steps=400", "loss.name=sampled", "loss.num_sampled=20",
                 "optim.batch_size=64", "train.log_every=1"]

    def torchrun(name, *extra, wait=True):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
               "-m", "sampledsoftmax", "train", *extra, *_sets([f"runs_root={tmp_path}", f"name={name}", *overrides])]
        p = subprocess.Popen(cmd, cwd=ROOT, env=_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if wait:
            out, err = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, err[-3000:]
        return p

    torchrun("straight", "--quiet")
    p = torchrun("cut", wait=False)
    seen = ""
    while True:  # rank 0's progress lines: training has begun
        line = p.stderr.readline()
        seen += line
        if line.startswith("step 20") or not line:
            break
    p.send_signal(signal.SIGTERM)  # to torchrun's agent, as a scheduler does; it passes SIGTERM to the ranks
    out, err = p.communicate(timeout=TIMEOUT)
    err = seen + err
    assert "stopped at step" in err and "on SIGTERM" in err, err[-3000:]
    step = load_checkpoint(tmp_path / "cut" / "last.pt")["step"]
    assert 20 <= step < 400
    torchrun("cut", "--resume", "--quiet")
    assert_same_weights(tmp_path / "straight" / "last.pt", tmp_path / "cut" / "last.pt")


# ------------------------------------------------------------------------------------------------ one run dir

def test_two_starts_with_one_name_train_in_two_directories(tmp_path):
    args = ["train", *_sets([f"runs_root={tmp_path}", "name=race", *SG, "train.epochs=1"])]
    procs = [_popen(args, tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    dirs = {line.split()[1] for out, _ in outs for line in out.splitlines() if line.startswith("run:")}
    assert dirs == {str(tmp_path / "race"), str(tmp_path / "race-1")}
    for d in dirs:
        assert len(list(Path(d).glob("events.out.tfevents.*"))) == 1  # one process's TensorBoard run each


def test_a_new_run_never_reuses_a_directory_with_files_in_it(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "events.out.tfevents.killed").write_bytes(b"")  # a run killed before its first checkpoint
    (tmp_path / "empty").mkdir()  # an empty directory made beforehand is used
    assert train(_sg(tmp_path, "t", "train.max_steps=3"), quiet=True)["run_dir"].name == "t-1"
    assert train(_sg(tmp_path, "empty", "train.max_steps=3"), quiet=True)["run_dir"].name == "empty"


def test_resume_of_a_live_run_is_refused_with_its_holder_and_allowed_once_it_stops(tmp_path, capsys):
    overrides = [f"runs_root={tmp_path}", "name=live", *SG, "train.epochs=400", "train.checkpoint_every=5"]
    p = _popen(["train", "--quiet", *_sets(overrides)], tmp_path)
    try:
        start = time.time()
        while not (tmp_path / "live" / "last.pt").exists() and time.time() - start < 60:
            time.sleep(0.05)
        code = main(["train", "--resume", "--quiet", *_sets(overrides)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "live process" in err[0] and f"pid {p.pid}" in err[0], err
        # reading the run is allowed while it trains
        assert load_checkpoint(tmp_path / "live" / "last.pt")["step"] > 0
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=TIMEOUT)
    assert p.returncode == 75
    out = train(_sg(tmp_path, "live", "train.epochs=400", "train.checkpoint_every=5",
                    f"train.max_steps={load_checkpoint(tmp_path / 'live' / 'last.pt')['step'] + 3}"),
                quiet=True, resume=True)  # the holder is gone: its lock with it
    assert not out["stopped"]


# ------------------------------------------------------------------------------------------------ sweeps

def _write_sweep(tmp_path, name, cells=4, steps=12, budgets=None) -> Path:
    spec = {"name": name, "out_dir": str(tmp_path / name),
            "base": [*SG, f"train.max_steps={steps}", "eval.curve_points=3", "eval.every=1000000", "train.log_every=4"],
            "grid": [{"loss.name": ["negative", "sampled"][: min(2, cells)], "loss.num_sampled": [8, 16][: max(1, cells // 2)]}]}
    if budgets:
        spec["budgets"] = budgets
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _rows(out_dir: Path) -> list[dict]:
    with open(out_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_two_sweeps_on_one_directory_run_each_cell_once_and_lose_no_row(tmp_path):
    path = _write_sweep(tmp_path, "shared")
    procs = [_popen(["sweep", str(path)], tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    rows = _rows(tmp_path / "shared")
    assert sorted(r["cell"] for r in rows) == sorted({r["cell"] for r in rows}) and len(rows) == 4
    assert all(r["status"] == "ok" for r in rows)
    for r in rows:  # each cell trained by one process, once
        assert len(list(Path(r["run_dir"]).glob("events.out.tfevents.*"))) == 1
    ran = [line for _, err in outs for line in err.splitlines() if " done in " in line]
    assert len(ran) == 4, outs  # four trainings in all, split between the two processes
    alone = run_sweep(_write_sweep(tmp_path, "alone"), quiet=True)
    assert sorted((r["cell"], r["status"], r["steps"]) for r in rows) == \
        sorted((r["cell"], r["status"], str(r["steps"])) for r in alone)


def test_shards_split_the_grid_and_the_tables_hold_every_workers_rows(tmp_path):
    path = _write_sweep(tmp_path, "array")
    first = run_sweep(path, quiet=True, shard=(0, 2))
    assert len(first) == 2  # this worker's cells; the other shard's are not run here
    both = run_sweep(path, quiet=True, shard=(1, 2))
    assert len(both) == 4 and all(r["status"] == "ok" for r in both)
    assert {r["cell"] for r in first}.isdisjoint(set(r["cell"] for r in both) - {r["cell"] for r in first}) 
    assert (tmp_path / "array" / "curves.csv").read_text().count("\n") > 4  # rebuilt from all four cells
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "1", "a/b", "0/0"):
        with pytest.raises(Exception, match="--shard"):
            parse_shard(bad)
    assert main(["sweep", str(path), "--shard", "2/2"]) == 2


def test_a_sweep_stopped_by_sigterm_resumes_its_cell_from_the_checkpoint(tmp_path):
    path = _write_sweep(tmp_path, "pre", cells=2, steps=100000)
    p = _popen(["sweep", str(path)], tmp_path, start_new_session=True)  # not in pytest's process group
    run_dir = tmp_path / "pre" / "runs"
    start = time.time()
    while time.time() - start < 60 and not list(run_dir.glob("*/events.out.tfevents.*")):
        time.sleep(0.05)
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)  # the sweep process only, as Kubernetes does: it passes it on to the cell
    out, err = p.communicate(timeout=TIMEOUT)
    assert p.returncode == 75, err
    assert "stopped on SIGTERM" in err
    (row,) = _rows(tmp_path / "pre")
    assert row["status"].startswith("failed: interrupted at step")
    step = load_checkpoint(Path(row["run_dir"]) / "last.pt")["step"]
    assert step > 0
    # the re-run resumes the cell (fewer steps to do) instead of starting it over in a new directory
    rows = run_sweep(path, quiet=True, overrides=["train.max_steps=" + str(step + 5)])
    assert {r["cell"]: r["status"] for r in rows}[row["cell"]] == "ok"
    resumed = {r["cell"]: r for r in rows}[row["cell"]]
    assert resumed["run_dir"] == row["run_dir"] and int(resumed["steps"]) == step + 5


def test_a_cell_whose_sweep_process_is_killed_checkpoints_and_stops(tmp_path):
    """SIGKILL reaches the sweep process alone (an OOM kill): its cell, in another process, must not train on
    orphaned; it gets SIGTERM, checkpoints and stops, and the next run of the sweep resumes it."""
    path = _write_sweep(tmp_path, "orphan", cells=1, steps=100000)
    p = _popen(["sweep", str(path)], tmp_path, start_new_session=True)
    run_dir = tmp_path / "orphan" / "runs"
    start = time.time()
    while time.time() - start < 60 and not list(run_dir.glob("*/events.out.tfevents.*")):
        time.sleep(0.05)
    time.sleep(0.5)
    p.kill()
    p.communicate(timeout=TIMEOUT)
    (cell_dir,) = run_dir.iterdir()
    start = time.time()
    while time.time() - start < 30 and not (cell_dir / "last.pt").exists():
        time.sleep(0.1)
    assert load_checkpoint(cell_dir / "last.pt")["step"] > 0
    try:
        os.killpg(p.pid, signal.SIGKILL)  # whatever is left of the job (nothing, if the cell stopped)
    except ProcessLookupError:
        pass


def test_a_cell_killed_before_its_first_checkpoint_reruns_from_scratch_with_one_curve(tmp_path):
    """The defect: the re-run reused the cell's directory, and the curve mixed both attempts' evaluations."""
    path = _write_sweep(tmp_path, "killed", cells=1, budgets=[{"seconds": 3}])
    p = _popen(["sweep", str(path)], tmp_path, start_new_session=True)
    run_dir = tmp_path / "killed" / "runs"
    start = time.time()
    while time.time() - start < 60 and not list(run_dir.glob("*/events.out.tfevents.*")):
        time.sleep(0.05)
    time.sleep(1.5)  # a few curve points evaluated; a 3-s cell writes no checkpoint before its end
    os.killpg(p.pid, signal.SIGKILL)  # the whole job: sweep, forkserver and cell
    p.communicate(timeout=TIMEOUT)
    (cell_dir,) = [d for d in run_dir.iterdir() if list(d.glob("events.out.tfevents.*"))]
    assert not (cell_dir / "last.pt").exists()
    rows = run_sweep(path, quiet=True)
    (row,) = [r for r in rows if Path(r["run_dir"]).name == cell_dir.name]
    assert row["status"] == "ok" and Path(row["run_dir"]) == cell_dir
    assert len(list(cell_dir.glob("events.out.tfevents.*"))) == 1  # one attempt's events only
    with open(tmp_path / "killed" / "curves.csv", newline="") as f:
        points = [r for r in csv.DictReader(f) if r["cell"] == row["cell"]]
    steps = [int(r["step"]) for r in points]
    assert steps == sorted(set(steps)) and len(points) == 4  # step 0 and eval.curve_points=3: the re-run alone
    assert float(points[-1]["train_s"]) >= 3.0


# ------------------------------------------------------------------------------------------------ data

def _text_corpus(path: Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghij") for _ in range(4)) for _ in range(60)]
    lines = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(600)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_corpus_cache_is_rebuilt(tmp_path, damage):
    corpus = _text_corpus(tmp_path / "c.txt")
    extra = [f"data.corpus={corpus}", "data.sample=0", "train.max_steps=5", "eval.every=100"]
    first = train(_sg(tmp_path, "a", *extra), quiet=True)
    (cache,) = (tmp_path / ".cache").glob("corpus-*.npz")
    data = cache.read_bytes()
    cache.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data)))
    second = train(_sg(tmp_path, "b", *extra), quiet=True)
    assert second["metrics"]["eval/full_ce"] == first["metrics"]["eval/full_ce"]  # the same data, re-encoded
    assert cache.read_bytes() == data  # rewritten whole


@pytest.mark.parametrize("task", ["train", "train-lm"])
def test_a_corpus_changed_between_a_run_and_its_resume_is_refused(tmp_path, capsys, task):
    corpus = _text_corpus(tmp_path / "c.txt")
    data = [f"data.corpus={corpus}", "data.heldout_fraction=0.1"] + (["data.sample=0"] if task == "train" else [])
    overrides = [f"runs_root={tmp_path}", "name=r", *(SG if task == "train" else LM), *data]
    assert main([task, "--quiet", *_sets([*overrides, "train.max_steps=3"])]) == 0
    lines = corpus.read_text().splitlines()
    first = lines[0].split()
    lines[0] = " ".join([first[1], first[0], *first[2:]])  # two words swapped: the same vocabulary and counts
    corpus.write_text("\n".join(lines) + "\n")
    code = main([task, "--resume", "--quiet", *_sets([*overrides, "train.max_steps=6"])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "corpus changed" in err[0], err
