"""The trainer end to end: every loss trains on the same data by one config key, TensorBoard files read back with
tensorboard's own reader, interrupted + resumed runs reproduce uninterrupted ones exactly, exported vectors load in
gensim, and user mistakes end in one `error:` line with exit code 2."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sampledsoftmax.cli import main
from sampledsoftmax.training.checkpoint import load_checkpoint
from sampledsoftmax.embeddings.config import load_config
from sampledsoftmax.embeddings.train import train
from sampledsoftmax.training.builders import build_loss_fn, build_optimizers
from sampledsoftmax.embeddings.model import SkipGram

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "data.synthetic.vocab_size=300", "data.synthetic.num_tokens=20000", "data.synthetic.num_topics=5",
    "data.synthetic.heldout_sentences=100", "model.dim=16", "optim.batch_size=256", "train.epochs=1",
    "train.log_every=10", "eval.every=20", "train.checkpoint_every=30", "eval.projector_words=50", "train.device=cpu",
]


def _cfg(tmp_path, *extra, name="t"):
    return load_config(None, [f"runs_root={tmp_path}", f"name={name}", *TINY, *extra])


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.parametrize("loss", ["negative", "sampled", "nce", "inbatch", "full", "adaptive"])
def test_every_loss_trains_and_logs_the_same_exact_metric(tmp_path, loss):
    extra = ["loss.num_sampled=20", "loss.sampler=log_uniform"] if loss in ("sampled", "nce") else []
    if loss == "adaptive":  # torch's adaptive softmax: dense head/tail layers, trained with Adam
        extra += ["optim.name=sparse_adam", "optim.alpha=0.005"]
    result = train(_cfg(tmp_path, f"loss.name={loss}", *extra), quiet=True)
    s = _scalars(result["run_dir"])
    for tag in ("train/objective", "train/lr", "perf/pairs_per_sec", "perf/step_ms", "sys/peak_mem_mb",
                "eval/full_ce", "eval/ppl", "eval/top1", "eval/top10", "eval/bayes_ce", "eval/excess_ce"):
        assert tag in s, tag
    ce = [v for _, v in s["eval/full_ce"]]
    assert ce[-1] < ce[0] - 0.05, ce  # learning, measured exactly
    assert all(np.isfinite(ce))
    # excess = exact CE - Bayes CE, the Bayes CE being the same on every eval
    (bayes,) = {v for _, v in s["eval/bayes_ce"]}
    for (_, e), (_, c) in zip(s["eval/excess_ce"], s["eval/full_ce"]):
        assert e == pytest.approx(c - bayes, abs=1e-5)
    if loss not in ("full", "adaptive"):
        assert "bias/grad_cosine" in s and "bias/exact_minus_objective" in s
    assert (result["run_dir"] / "config.yaml").is_file() and (result["run_dir"] / "last.pt").is_file()
    assert (result["run_dir"] / "best.pt").is_file()


def test_hparams_projector_and_custom_scalars_in_the_same_run(tmp_path):
    result = train(_cfg(tmp_path), quiet=True)
    run_dir = result["run_dir"]
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    plugins = set(acc.PluginTagToContent("hparams"))
    assert "_hparams_/experiment" in plugins and "_hparams_/session_start_info" in plugins
    assert acc.PluginTagToContent("custom_scalars")
    assert not list(run_dir.glob("*/events.out.tfevents*"))  # hparams in this run, not in a sub-run
    assert (run_dir / "projector_config.pbtxt").is_file()


def _objectives(run_dir):
    return _scalars(run_dir)["train/objective"]


@pytest.mark.parametrize("loss", ["negative", "sampled"])
def test_interrupted_and_resumed_run_reproduces_the_uninterrupted_run_exactly(tmp_path, loss):
    extra = [f"loss.name={loss}", "loss.num_sampled=16", "loss.sampler=unigram",
             "train.deterministic=true"]  # the compiled SGNS step's Hogwild threads are not bit-reproducible
    full = train(_cfg(tmp_path, *extra, name="straight"), quiet=True)
    cut = train(_cfg(tmp_path, *extra, name="cut"), quiet=True, stop_at_step=35)
    assert cut["stopped"] and cut["step"] == 35
    resumed = train(_cfg(tmp_path, *extra, name="cut"), quiet=True, resume=True)
    assert resumed["step"] == full["step"]
    assert _objectives(full["run_dir"]) == _objectives(resumed["run_dir"])  # every logged value, bit for bit
    a = load_checkpoint(full["run_dir"] / "last.pt")
    b = load_checkpoint(resumed["run_dir"] / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k])
    for k in a["loss"]:
        assert torch.equal(a["loss"][k], b["loss"][k])


def test_checkpoint_loads_with_weights_only_and_holds_the_run_state(tmp_path):
    result = train(_cfg(tmp_path), quiet=True)
    state = torch.load(result["run_dir"] / "last.pt", weights_only=True)
    for key in ("model", "loss", "optimizers", "step", "epoch", "batch", "rng_torch", "rng_loss", "config", "vocab_hash"):
        assert key in state
    assert state["config"]["loss"]["name"] == "negative"


def test_resume_with_another_loss_or_vocabulary_is_a_clear_error(tmp_path, capsys):
    train(_cfg(tmp_path), quiet=True, stop_at_step=15)
    code = main(["train", "--resume", "--quiet", "--set", f"runs_root={tmp_path}", "--set", "name=t",
                 *sum((["--set", s] for s in TINY), []), "--set", "loss.name=nce"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "loss.name=negative" in err[0] and err[0].startswith("error:")
    code = main(["train", "--resume", "--quiet", "--set", f"runs_root={tmp_path}", "--set", "name=t",
                 *sum((["--set", s] for s in TINY), []), "--set", "data.synthetic.seed=5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "different vocabulary" in err[0]


def test_a_new_run_never_overwrites_an_old_one(tmp_path):
    a = train(_cfg(tmp_path), quiet=True)
    b = train(_cfg(tmp_path), quiet=True)
    assert a["run_dir"] != b["run_dir"] and b["run_dir"].name == "t-1"


@pytest.mark.parametrize("binary", [False, True])
def test_export_loads_in_gensim_with_counts(tmp_path, binary):
    gensim_models = pytest.importorskip("gensim.models")
    result = train(_cfg(tmp_path), quiet=True)
    out = tmp_path / ("v.bin" if binary else "v.txt")
    fmt = "word2vec-binary" if binary else "word2vec"
    assert main(["export", str(result["run_dir"]), "--format", fmt, "--out", str(out)]) == 0
    kv = gensim_models.KeyedVectors.load_word2vec_format(str(out), binary=binary, fvocab=str(out) + ".vocab")
    state = load_checkpoint(result["run_dir"] / "last.pt")
    vec = state["model"]["embed.weight"].numpy()
    words = [line.split("\t")[0] for line in (result["run_dir"] / "vocab.tsv").read_text().splitlines()]
    assert kv.index_to_key == words
    np.testing.assert_allclose(kv.vectors, vec, rtol=1e-6)
    counts = [kv.get_vecattr(w, "count") for w in kv.index_to_key]
    assert counts == sorted(counts, reverse=True)  # frequency order


def test_real_text_corpus_trains(tmp_path):
    rng = np.random.default_rng(0)
    words = np.array([f"word{i}" for i in range(200)])
    p = 1.0 / np.arange(1, 201)
    lines = [" ".join(rng.choice(words, size=15, p=p / p.sum())) for _ in range(2000)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n")
    cfg = load_config(None, [f"runs_root={tmp_path}", "name=text", f"data.corpus={corpus}", "data.min_count=2",
                             "data.sample=1e-3", "data.heldout_fraction=0.05", "data.token_pattern=[a-z0-9']+",
                             "model.dim=16", "optim.batch_size=256", "train.epochs=1", "eval.every=50",
                             "train.log_every=10"])
    result = train(cfg, quiet=True)
    s = _scalars(result["run_dir"])
    assert "eval/full_ce" in s and "eval/excess_ce" not in s  # no Bayes optimum for real text


CONFIGS = [p for p in sorted((ROOT / "configs").glob("*.yaml")) if not p.name.startswith(("lm_", "sweep"))]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads_and_builds(path):
    cfg = load_config(str(path))
    v = min(cfg.data.synthetic.vocab_size if cfg.data.corpus == "synthetic" else 5000, 20_000)  # keep it cheap

    class _Vocab:
        counts = np.arange(v, 0, -1, dtype=np.int64)

        def __len__(self):
            return v

    loss_fn = build_loss_fn(cfg, _Vocab(), torch.Generator().manual_seed(0))
    model = SkipGram(v, cfg.model.dim, sparse=cfg.optim.name != "adam")
    opts = build_optimizers(cfg.optim.name, model, loss_fn, cfg.optim.alpha)
    h = model(torch.arange(8))
    loss = loss_fn(h, torch.arange(8, 16))
    loss.backward()
    for o in opts:
        o.step()
    assert torch.isfinite(loss)


class _CountsVocab:
    def __init__(self, v):
        self.counts = np.arange(v, 0, -1, dtype=np.int64)

    def __len__(self):
        return len(self.counts)


@pytest.mark.parametrize("loss", ["full", "sampled", "nce", "negative", "inbatch"])
def test_output_init_zero_by_default_and_seeded_normal_when_set(tmp_path, loss):
    v, dim = 4000, 16
    zero = build_loss_fn(_cfg(tmp_path, f"loss.name={loss}", f"model.dim={dim}"), _CountsVocab(v),
                         torch.Generator().manual_seed(0))
    assert torch.count_nonzero(zero.weight) == 0  # word2vec's zero table, unchanged by the option's existence
    g_a, g_b = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = build_loss_fn(_cfg(tmp_path, f"loss.name={loss}", f"model.dim={dim}", "model.output_init=0.25"),
                      _CountsVocab(v), g_a)
    b = build_loss_fn(_cfg(tmp_path, f"loss.name={loss}", f"model.dim={dim}", "model.output_init=0.25"),
                      _CountsVocab(v), g_b)
    c = build_loss_fn(_cfg(tmp_path, f"loss.name={loss}", f"model.dim={dim}", "model.output_init=0.25",
                           "train.seed=1"), _CountsVocab(v), torch.Generator().manual_seed(0))
    w = a.weight.detach()
    assert torch.equal(w, b.weight) and not torch.equal(w, c.weight)  # seeded by train.seed
    assert abs(w.mean().item()) < 0.01 and w.std().item() == pytest.approx(0.25, rel=0.02)  # 64k normal draws
    assert abs(torch.corrcoef(torch.stack([w[:-1].flatten(), w[1:].flatten()]))[0, 1].item()) < 0.02
    # the training generator's stream is not consumed by the draw: the sampled ids stay what they were
    assert torch.equal(g_a.get_state(), torch.Generator().manual_seed(0).get_state())


def test_output_init_off_the_saddle_moves_the_input_vectors_at_the_first_step(tmp_path):
    """From a zero output table the exact softmax's input-vector gradient is exactly zero (W^T (p - y) = 0); from
    a random one it is not: the point of the option."""
    v, dim = 500, 8
    grads = {}
    for std in (0.0, 0.1):
        cfg = _cfg(tmp_path, "loss.name=full", f"model.dim={dim}", f"model.output_init={std}")
        loss_fn = build_loss_fn(cfg, _CountsVocab(v), torch.Generator().manual_seed(0))
        h = SkipGram(v, dim, sparse=False)(torch.arange(32))
        h.retain_grad()
        loss_fn(h, torch.arange(32, 64)).backward()
        grads[std] = h.grad.abs().max().item()
    assert grads[0.0] == 0.0 and grads[0.1] > 1e-3


def test_lm_output_init_untied_table(tmp_path):
    from sampledsoftmax.lm.config import load_lm_config
    from sampledsoftmax.errors import ConfigError

    cfg = load_lm_config(str(ROOT / "configs/lm_quick.yaml"), ["model.tie_weights=false", "model.output_init=0.05"])
    loss_fn = build_loss_fn(cfg, _CountsVocab(300), torch.Generator().manual_seed(0))
    assert loss_fn.weight.std().item() == pytest.approx(0.05, rel=0.1)
    with pytest.raises(ConfigError, match="model.output_init=-1.0 must be >= 0"):
        load_lm_config(str(ROOT / "configs/lm_quick.yaml"), ["model.output_init=-1.0"])


# ------------------------------------------------------------------ the command line: one error line, exit code 2


def _cli(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "sampledsoftmax", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("args, fragment", [
    (["train", "--set", "loss.nmae=full"], 'loss.nmae'),
    (["train", "--set", "data.corpus=/nonexistent/corpus.txt", "--set", "data.sample=0.001", "--set", "data.min_count=1"],
     "/nonexistent/corpus.txt"),
    (["train", "--set", "model.dim=-3"], "model.dim"),
    (["train", "missing.yaml"], "missing.yaml"),
    (["train", "--set", "eval.wordsim=/nonexistent/ws.tsv", "--set", "train.max_steps=5"], "/nonexistent/ws.tsv"),
    (["train", "--set", "loss.name=sampled", "--set", "loss.num_sampled=5000", "--set", "data.synthetic.vocab_size=300",
      "--set", "data.synthetic.num_tokens=5000"], "loss.num_sampled"),
    (["export", "nowhere"], "nowhere"),
])
def test_user_mistakes_give_one_error_line_and_exit_2(tmp_path, args, fragment):
    r = _cli([*args, "--set", f"runs_root={tmp_path}"] if args[0] == "train" else args, tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_empty_corpus_and_unwritable_run_dir(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    r = _cli(["train", "--set", f"data.corpus={empty}", "--set", "data.sample=0.001", "--set", f"runs_root={tmp_path}"], tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "empty" in r.stderr.lower(), r.stderr
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: use a path under a regular file instead
            target = tmp_path / "afile"
            target.write_text("")
            root = str(target / "runs")
        else:
            root = str(locked / "runs")
        r = _cli(["train", "--set", f"runs_root={root}", "--set", "train.max_steps=2"], tmp_path)
    finally:
        locked.chmod(0o700)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "runs_root" in r.stderr, r.stderr


def test_ctrl_c_saves_a_checkpoint_and_resume_continues(tmp_path):
    args = ["train", "--set", f"runs_root={tmp_path}", "--set", "name=sig", *sum((["--set", s] for s in TINY), []),
            "--set", "train.epochs=30", "--set", "train.log_every=1"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "sampledsoftmax", *args], cwd=tmp_path, stderr=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    seen = ""
    while time.time() < deadline:  # wait until training steps are being logged
        line = p.stderr.readline()
        seen += line
        if line.startswith("step 5"):
            break
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, seen + err
    assert "Traceback" not in err and "--resume" in err
    state = load_checkpoint(tmp_path / "sig" / "last.pt")
    assert 5 <= state["step"]
    r = _cli([*args, "--resume", "--quiet", "--set", f"train.max_steps={state['step'] + 5}"], tmp_path)
    assert r.returncode == 0, r.stderr


def test_divergence_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    # NCE's shared negatives each take one update per pair of the batch: summed SGD at a large rate blows up
    args = ["train", "--quiet", "--set", f"runs_root={tmp_path}", "--set", "name=div", *sum((["--set", s] for s in TINY), []),
            "--set", "loss.name=nce", "--set", "loss.num_sampled=64", "--set", "optim.alpha=1.0",
            "--set", "train.checkpoint_every=5", "--set", "train.epochs=3"]
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "training diverged" in err[0] and "optim.alpha" in err[0]
    state = load_checkpoint(tmp_path / "div" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_wall_clock_budget_stops_training_and_still_evaluates(tmp_path):
    """train.max_seconds: the run stops once the training steps (evaluation excluded) have used the budget, the
    learning rate decays by time rather than by the (unreachable) step count, and the final exact eval runs."""
    cfg = _cfg(tmp_path, "train.max_steps=1000000", "train.max_seconds=1.0", "eval.every=1000000",
               "train.log_every=1", "optim.min_alpha=0.0")
    t0 = time.perf_counter()
    result = train(cfg, quiet=True)
    assert time.perf_counter() - t0 < 60
    assert 0 < result["step"] < 1_000_000
    assert 1.0 <= result["train_seconds"] < 10.0
    s = _scalars(result["run_dir"])
    lrs = [v for _, v in s["train/lr"]]
    assert lrs[0] > lrs[-1] and lrs[-1] < 0.5 * cfg.optim.alpha  # decayed by elapsed time, not by step/1e6
    assert [st for st, _ in s["eval/full_ce"]] == [0, result["step"]]
    state = load_checkpoint(Path(result["run_dir"]) / "last.pt")
    assert state["train_seconds"] == pytest.approx(result["train_seconds"])


def test_budget_progress_takes_the_further_of_steps_and_time():
    from sampledsoftmax.training.run import Budget, lr_at_progress

    b = Budget(total=100, max_seconds=10.0, seconds=2.0)
    assert b.progress(50) == 0.5 and b.progress(10) == pytest.approx(0.2) and not b.out_of_time()
    b.seconds = 10.0
    assert b.out_of_time() and b.progress(0) == 1.0
    assert not Budget(total=100).out_of_time() and Budget(total=100).progress(25) == 0.25
    assert lr_at_progress(0.0, 0.1, 0.0) == 0.1 and lr_at_progress(0.5, 0.1, 0.0) == pytest.approx(0.05)
    assert lr_at_progress(2.0, 0.1, 0.01) == pytest.approx(0.01)
