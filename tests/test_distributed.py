"""Data-parallel training under torchrun, on the CPU with 2 processes over gloo (each test launches its own job).

The reference for every data-parallel result is the single process with the doubled batch: the ranks take
alternate batches of the same stream, so one 2-rank step at batch B sees the pairs of one 1-process step at 2B,
and the shared candidate sample is the same on every rank."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sampledsoftmax.training.distributed import Dist, shard_batches
from sampledsoftmax.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 180  # a hung collective fails the test instead of blocking CI

TINY = ["data.synthetic.vocab_size=300", "data.synthetic.num_tokens=30000", "data.synthetic.num_topics=5",
        "data.synthetic.heldout_sentences=100", "model.dim=16", "train.max_steps=40", "train.log_every=5",
        "eval.every=20", "train.checkpoint_every=1000", "eval.projector_words=20", "train.device=cpu",
        "loss.name=sampled", "loss.num_sampled=20", "loss.sampler=log_uniform"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return env


def torchrun(args: list[str], nproc: int = 2, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           f"--master_port={_free_port()}", *args]
    env = _env()
    env.update(env_extra or {})
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    return proc


def cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sampledsoftmax", *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_shard_batches_interleaves_without_overlap_and_drops_the_last_partial_group():
    items = list(range(7))
    shards = [list(shard_batches(iter(items), r, 2)) for r in range(2)]
    assert shards == [[0, 2, 4], [1, 3, 5]]  # 6 is a group of one: dropped so both ranks take 3 steps
    assert [list(shard_batches(iter(items), r, 3)) for r in range(3)] == [[0, 3], [1, 4], [2, 5]]
    assert list(shard_batches(iter(items), 0, 1)) == items


def test_single_process_dist_is_a_no_op():
    d = Dist()
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.ones(2)
    assert d.all_reduce_grads([p], (1.0, 0.0, 2.5)) == (1.0, 0.0, 2.5)
    assert torch.equal(p.grad, torch.ones(2)) and d.any(True, False) == (True, False) and d.sum([1, 2]) == [1, 2]
    assert d.broadcast("x") == "x" and d.is_main and not d.enabled


def test_gradient_all_reduce_sums_dense_sparse_and_missing_gradients(tmp_path):
    proc = torchrun([str(ROOT / "tests/dist/driver.py"), "grads", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for variant in ("f32", "f64"):  # float32 gathered; float64 with the dense part all-reduced
        box = torch.load(tmp_path / f"grads-{variant}.pt", weights_only=False)
        for i in range(3):  # the sum, written from what each rank sent
            sent = [b["sent"][i] for b in box]
            want = sum(s for s in sent if s is not None)
            for b in box:
                assert b["got"][i].dtype == want.dtype
                torch.testing.assert_close(b["got"][i], want, rtol=0, atol=1e-6)
        assert all(b["sparse_out"] for b in box)  # sparse gradients stay sparse (row-indexed exchange)


def _train_args(tmp_path, name, batch, *extra):
    return ["train", "--quiet", "--set", f"runs_root={tmp_path}", "--set", f"name={name}",
            "--set", f"optim.batch_size={batch}", *[a for o in [*TINY, *extra] for a in ("--set", o)]]


def test_two_ranks_reproduce_one_process_with_the_doubled_batch(tmp_path):
    two = torchrun(["-m", "sampledsoftmax", *_train_args(tmp_path, "two", 128)])
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("run: ") == 1  # rank 0 reports for the job
    one = cli(_train_args(tmp_path, "one", 256))
    assert one.returncode == 0, one.stderr[-3000:]
    s2, s1 = scalars(tmp_path / "two"), scalars(tmp_path / "one")
    for tag in ("train/objective", "eval/full_ce", "eval/top10"):
        steps2, v2 = zip(*s2[tag])
        steps1, v1 = zip(*s1[tag])
        assert steps2 == steps1, tag
        assert v2 == pytest.approx(v1, rel=1e-4, abs=1e-5), tag  # float summation order differs, nothing else
    obj = [v for _, v in s2["train/objective"]]
    assert obj[-1] < obj[0]  # and it trains
    assert len(list((tmp_path / "two").glob("events.out.tfevents.*"))) == 1  # only rank 0 writes TensorBoard
    state = load_checkpoint(tmp_path / "two" / "last.pt")
    assert state["world_size"] == 2 and state["step"] == 40
    # resuming a 2-process run with 1 process is a clear error
    bad = cli([*_train_args(tmp_path, "two", 128), "--resume"])
    assert bad.returncode == 2 and "resume with the same number" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("case", ["negative", "learned_unigram", "inbatch"])
def test_two_ranks_take_their_rows_of_the_global_batchs_sample(tmp_path, case):
    """Per-example negatives and a sampler that learns from the targets: each rank takes its rows of the sample the
    global batch gets (training/grouped.py), so 2 ranks x 128 train exactly as 1 process x 256 (before, every rank
    drew the same negatives for different pairs, and learned_unigram learned from half the targets)."""
    extra = {"negative": ["loss.name=negative", "loss.num_sampled=5", "loss.sampler=unigram",
                          "train.kernel=false", "train.fused=false"],  # the autograd path: the loss's own draws
             "learned_unigram": ["loss.sampler=learned_unigram"],
             "inbatch": ["loss.name=inbatch", "loss.num_sampled=null"]}[case]  # candidates: the global batch's targets
    two = torchrun(["-m", "sampledsoftmax", *_train_args(tmp_path, "two", 128, *extra)])
    assert two.returncode == 0, two.stderr[-3000:]
    one = cli(_train_args(tmp_path, "one", 256, *extra))
    assert one.returncode == 0, one.stderr[-3000:]
    s2, s1 = scalars(tmp_path / "two"), scalars(tmp_path / "one")
    for tag in ("train/objective", "eval/full_ce", "eval/top10"):
        assert [s for s, _ in s2[tag]] == [s for s, _ in s1[tag]], tag
        assert [v for _, v in s2[tag]] == pytest.approx([v for _, v in s1[tag]], rel=1e-4, abs=1e-5), tag
    if case == "learned_unigram":  # the sampler's counts: the global batch's targets on rank 0, as in one process
        a = load_checkpoint(tmp_path / "two" / "last.pt")["loss"]
        b = load_checkpoint(tmp_path / "one" / "last.pt")["loss"]
        counts = [k for k in a if k.endswith("counts")]
        assert counts and all(torch.equal(a[k], b[k]) for k in counts)


def test_two_rank_interrupt_and_resume_equals_the_uninterrupted_run(tmp_path):
    extra = [*TINY, "optim.batch_size=128", "train.checkpoint_every=10"]
    full = torchrun(["-m", "sampledsoftmax", *_train_args(tmp_path, "full", 128, "train.checkpoint_every=10")])
    assert full.returncode == 0, full.stderr[-3000:]
    cut = torchrun([str(ROOT / "tests/dist/driver.py"), "interrupt", str(tmp_path), "name=cut", *extra],
                   env_extra={"STOP_AT": "17"})
    assert cut.returncode == 0, cut.stderr[-3000:]
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "cut" / "last.pt")
    assert a["step"] == b["step"] == 40
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    for k in a["loss"]:
        torch.testing.assert_close(a["loss"][k], b["loss"][k], rtol=0, atol=0)


@pytest.mark.parametrize("loss", [[], ["--set", "loss.name=inbatch", "--set", "loss.num_sampled=null"]],
                         ids=["config", "inbatch"])
def test_two_rank_language_model_matches_one_process_with_the_doubled_batch(tmp_path, loss):
    args = ["train-lm", str(ROOT / "configs/lm_quick.yaml"), "--quiet", "--set", f"runs_root={tmp_path}",
            "--set", "train.max_steps=12", "--set", "train.log_every=4", "--set", "eval.every=12",
            "--set", "train.device=cpu", *loss]
    two = torchrun(["-m", "sampledsoftmax", *args, "--set", "name=two", "--set", "optim.batch_size=8"])
    assert two.returncode == 0, two.stderr[-3000:]
    one = cli([*args, "--set", "name=one", "--set", "optim.batch_size=16"])
    assert one.returncode == 0, one.stderr[-3000:]
    s2, s1 = scalars(tmp_path / "two"), scalars(tmp_path / "one")
    for tag in ("train/objective", "eval/full_ce"):
        assert [v for _, v in s2[tag]] == pytest.approx([v for _, v in s1[tag]], rel=1e-4), tag


def test_vocab_parallel_example_runs_under_torchrun_as_the_readme_says(tmp_path):
    args = [str(ROOT / "examples/vocab_parallel.py"), "--classes", "20000", "--steps", "11", "--num-sampled", "256"]
    two = torchrun(args)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "world 2: 10,000 of 20,000 rows per rank; exact NLL" in two.stdout
    first, last = [float(line.split()[-1]) for line in two.stdout.splitlines() if line.startswith("step ")]
    assert last < first  # the sampled loss falls
