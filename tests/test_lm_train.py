"""The language-model trainer and the README's code: every shipped LM config builds, training lowers the exact
held-out perplexity, interruption + resume reproduces the run (the README's code runs in tests/test_docs.py)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.optim.optimizer import register_optimizer_step_pre_hook

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


def test_sparse_sampled_loss_with_a_tied_table_trains_under_adam(tmp_path):
    """The tied output table also gets the embedding's dense gradient: it must go to Adam, not SparseAdam (which
    refused the first step: "SparseAdam does not support dense gradients"); the bias stays sparse."""
    cfg = _cfg(tmp_path, "loss.name=sampled", "loss.sparse=true", "model.tie_weights=true", "optim.name=adam",
               "train.max_steps=30")
    result = train_lm(cfg, quiet=True)
    s = _scalars(result["run_dir"])
    ppl = [v for _, v in s["eval/ppl"]]
    assert ppl[-1] < ppl[0], ppl


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


def test_lm_clips_at_norm_1_after_a_sparse_sampled_loss_switches_to_the_full_softmax(tmp_path, monkeypatch):
    """Every step clips the dense gradients at global norm 1 (clip_grad_norm_ takes no sparse tensor: the sampled
    loss's table rows and the sparse input table are left out), before loss.finish_with_full's switch and after it
    (the defect: clipping stayed off after the switch). Seen from the optimizers (a global step pre-hook: the
    gradients they are about to apply) and from clip_grad_norm_ (the norm before clipping)."""
    from sampledsoftmax.losses import FullSoftmaxLoss
    from sampledsoftmax.training import loop

    tasks = []
    switch = loop.switch_to_full

    def switch_and_see(task):
        switch(task)
        tasks.append(task)

    monkeypatch.setattr(loop, "switch_to_full", switch_and_see)
    clip = torch.nn.utils.clip_grad_norm_
    clipped = []  # (switched?, max_norm, the norm before clipping)

    def clip_and_see(params, max_norm, *args, **kwargs):
        norm = clip(params, max_norm, *args, **kwargs)
        clipped.append((bool(tasks), float(max_norm), float(norm)))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_and_see)
    applied = []  # per optimizer step: (switched?, any sparse gradient, the norm of the gradients it applies)

    def see_step(opt, args, kwargs):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        dense = [g for g in grads if not g.is_sparse]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in dense])) if dense else 0.0
        applied.append((bool(tasks), len(dense) < len(grads), float(norm)))

    handle = register_optimizer_step_pre_hook(see_step)
    try:
        train_lm(_cfg(tmp_path, "loss.name=sampled", "loss.sparse=true", "loss.finish_with_full=0.5",
                      "model.tie_weights=false", "model.output_init=3.0", "train.max_steps=12", "eval.every=100"),
                 quiet=True)  # a large output table: gradients of norm well above 1
    finally:
        handle.remove()
    (task,) = tasks
    assert isinstance(task.loss_fn, FullSoftmaxLoss) and task.clip == 1.0
    before = [a for a in applied if not a[0]]
    after = [a for a in applied if a[0]]
    assert before and any(sparse for _, sparse, _ in before)  # the sampled loss's sparse rows before the switch
    assert len(after) >= 5
    # per step, the optimizers' dense gradients together: at most norm 1 (each optimizer sees a part of them)
    assert all(norm <= 1.0 + 1e-5 for _, _, norm in applied), applied
    assert len(clipped) == 12 and all(c[1] == 1.0 for c in clipped)  # every one of the 12 steps clips
    assert {c[0] for c in clipped} == {False, True}  # before and after the switch
    assert max(c[2] for c in clipped if c[0]) > 1.0  # some gradient was larger than 1: the clip did something
