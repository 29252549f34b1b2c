"""The language-model trainer and the README's code: every shipped LM config builds, training lowers the exact
held-out perplexity, interruption + resume reproduces the run, and every Python block of the README runs."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sampledsoftmax.cli import main
from sampledsoftmax.lm.config import load_lm_config
from sampledsoftmax.lm.model import build_lm
from sampledsoftmax.lm.train import _Counts, train_lm
from sampledsoftmax.training.builders import build_loss_fn, build_optimizers

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.synthetic.vocab_size=200", "data.synthetic.num_tokens=12000", "data.synthetic.num_topics=4",
        "data.synthetic.heldout_sentences=40", "data.seq_len=16", "model.dim=32", "optim.batch_size=16",
        "train.epochs=3", "train.log_every=10", "eval.every=25", "train.checkpoint_every=40", "train.device=cpu",
        "loss.num_sampled=40"]


def _cfg(tmp_path, *extra, name="lm"):
    return load_lm_config(None, [f"runs_root={tmp_path}", f"name={name}", *TINY, *extra])


def _scalars(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


LM_CONFIGS = sorted((ROOT / "configs").glob("lm_*.yaml"))


@pytest.mark.parametrize("path", LM_CONFIGS, ids=[p.name for p in LM_CONFIGS])
def test_every_shipped_lm_config_loads_and_builds(path):
    cfg = load_lm_config(path)
    v = 3000  # keep it cheap; the real vocabulary comes from the corpus
    model = build_lm(cfg.model.arch, v, cfg.model.dim, num_layers=cfg.model.num_layers)
    loss_fn = build_loss_fn(cfg, _Counts(np.arange(v, 0, -1)), torch.Generator().manual_seed(0),
                            weight=model.embed.weight if cfg.model.tie_weights else None)
    opts = build_optimizers(cfg.optim.name, model, loss_fn, cfg.optim.alpha)
    x = torch.randint(v, (2, cfg.data.seq_len))
    loss = loss_fn(model(x), x)
    loss.backward()
    for o in opts:
        o.step()
    assert torch.isfinite(loss)
    assert loss_fn.weight is model.embed.weight or not cfg.model.tie_weights


@pytest.mark.parametrize("loss", ["sampled", "full", "nce"])
def test_lm_training_lowers_exact_perplexity(tmp_path, loss):
    result = train_lm(_cfg(tmp_path, f"loss.name={loss}"), quiet=True)
    s = _scalars(result["run_dir"])
    for tag in ("train/objective", "perf/tokens_per_sec", "eval/full_ce", "eval/ppl"):
        assert tag in s
    ppl = [v for _, v in s["eval/ppl"]]
    # step 0 is the unigram model (the bias starts at log-frequencies); the planted topics are worth ~20 % of
    # perplexity within these few steps (sampled: 79.2 -> 63.6); 10 % is far outside evaluation noise
    assert ppl[-1] < 0.9 * ppl[0], ppl


def test_lm_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    full = train_lm(_cfg(tmp_path, name="a"), quiet=True)
    cut = train_lm(_cfg(tmp_path, name="b"), quiet=True, stop_at_step=30)
    assert cut["stopped"]
    resumed = train_lm(_cfg(tmp_path, name="b"), quiet=True, resume=True)
    assert resumed["step"] == full["step"]
    after = lambda run: [x for x in _scalars(run)["train/objective"] if x[0] > 30]  # noqa: E731
    assert after(full["run_dir"]) == after(resumed["run_dir"])
    assert resumed["metrics"]["eval/full_ce"] == full["metrics"]["eval/full_ce"]


def test_lm_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train-lm", "--set", "model.arhc=lstm", "--set", f"runs_root={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "model.arhc" in err[0]


def test_every_python_block_in_the_readme_runs():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
