"""Learning-curve evaluation points and the switch to the exact softmax at the end of a run
(`training/schedule.py`), alone and through the skip-gram trainer, resumes included."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from sampledsoftmax import FullSoftmaxLoss, SampledSoftmaxLoss, UniformSampler
from sampledsoftmax.embeddings.model import SkipGram
from sampledsoftmax.embeddings.train import train
from sampledsoftmax.errors import ConfigError
from sampledsoftmax.training.builders import build_optimizers
from sampledsoftmax.training.checkpoint import load_checkpoint
from sampledsoftmax.training.schedule import CurvePoints, switch_to_full

from test_train import _cfg, _scalars


def test_curve_points_are_log_spaced_from_one_percent():
    c = CurvePoints(8)
    assert len(c.points) == 7 and c.points[0] == pytest.approx(0.01)
    ratios = [b / a for a, b in zip(c.points, c.points[1:])]
    assert ratios == pytest.approx([100 ** (1 / 7)] * 6)
    assert c.points[-1] * ratios[0] == pytest.approx(1.0)  # the next point would be the end of the run
    assert not c.due(0.005) and c.due(0.01) and not c.due(0.011)
    assert c.due(0.5) and c.done == 6  # several points passed at once: one evaluation
    assert CurvePoints(8, done=6).points == c.points and not CurvePoints(8, done=7).due(0.99)
    assert CurvePoints(0).points == [] and CurvePoints(1).points == []


def test_a_run_evaluates_at_the_curve_points_and_reports_evaluation_time(tmp_path):
    out = train(_cfg(tmp_path, "loss.name=sampled", "loss.num_sampled=20", "train.max_steps=200",
                     "eval.every=100000", "eval.curve_points=8"), quiet=True)
    s = _scalars(out["run_dir"])
    steps = [st for st, _ in s["eval/full_ce"]]
    expected = sorted({0} | {math.ceil(200 * 0.01 ** (1 - i / 7)) for i in range(7)} | {200})
    assert steps == expected  # 0 (eval.every), the 7 points, the end
    train_s = [v for _, v in s["eval/train_seconds"]]
    eval_s = [v for _, v in s["eval/eval_seconds"]]
    assert train_s == sorted(train_s) and train_s[0] == 0.0 and train_s[-1] > 0
    assert eval_s == sorted(eval_s) and all(b > a for a, b in zip(eval_s, eval_s[1:]))  # every eval costs time
    assert out["train_seconds"] == pytest.approx(train_s[-1], rel=1e-6)  # eval time is not training time


def _task(optim: str, v=40, d=6, seed=0):
    torch.manual_seed(seed)
    model = SkipGram(v, d, sparse=optim != "adam")
    with torch.no_grad():
        model.embed.weight.normal_()
    loss = SampledSoftmaxLoss(v, d, sampler=UniformSampler(v), num_sampled=5, sparse=True,
                              generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss.weight.normal_()
        loss.bias.normal_()
    cfg = SimpleNamespace(optim=SimpleNamespace(name=optim),
                          loss=SimpleNamespace(label_smoothing=0.0, memory_budget_mb=None, name="sampled"))
    opts = build_optimizers(optim, model, loss, 0.1)
    return SimpleNamespace(cfg=cfg, model=model, loss_fn=loss, opts=opts, params=None, fused=True)


def _step(task, c, x, scale=1.0):
    for o in task.opts:
        o.zero_grad(set_to_none=True)
    (task.loss_fn(task.model(c), x) * scale).backward()
    for o in task.opts:
        o.step()


def test_switch_to_full_is_the_exact_softmax_on_the_same_layer_sgd():
    task = _task("sgd")
    c, x = torch.randint(40, (16,)), torch.randint(40, (16,))
    _step(task, c, x)
    w, b = task.loss_fn.weight, task.loss_fn.bias
    switch_to_full(task)
    assert isinstance(task.loss_fn, FullSoftmaxLoss) and not task.fused
    assert task.loss_fn.weight is w and task.loss_fn.bias is b  # shared, not copied
    assert {id(p) for p in task.params} == {id(task.model.embed.weight), id(w), id(b)}
    # one SGD step of the switched task = a hand-written full-softmax SGD step
    h0, w0, b0 = task.model.embed.weight.detach().clone(), w.detach().clone(), b.detach().clone()
    hh = h0[c].clone().requires_grad_()
    ww, bb = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    F.cross_entropy(hh @ ww.T + bb, x).backward()
    _step(task, c, x)
    lr = 0.1
    assert torch.allclose(w, w0 - lr * ww.grad, atol=1e-6) and torch.allclose(b, b0 - lr * bb.grad, atol=1e-6)
    expected_h = h0.index_add(0, c, -lr * hh.grad)
    assert torch.allclose(task.model.embed.weight, expected_h, atol=1e-6)


def test_switch_to_full_moves_sparse_adam_moments_to_dense_adam():
    task = _task("sparse_adam")
    c, x = torch.randint(40, (16,)), torch.randint(40, (16,))
    _step(task, c, x)
    _step(task, c, x)
    w = task.loss_fn.weight
    before = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in task.opts[0].state[w].items()}
    switch_to_full(task)
    kinds = sorted(type(o).__name__ for o in task.opts)
    assert kinds == ["Adam", "SparseAdam"]
    adam = next(o for o in task.opts if isinstance(o, torch.optim.Adam))
    st = adam.state[w]
    assert torch.equal(st["exp_avg"], before["exp_avg"]) and torch.equal(st["exp_avg_sq"], before["exp_avg_sq"])
    assert float(st["step"]) == float(before["step"]) == 2
    sparse = next(o for o in task.opts if isinstance(o, torch.optim.SparseAdam))
    assert [p for g in sparse.param_groups for p in g["params"]] == [task.model.embed.weight]
    _step(task, c, x)  # dense gradients for the output layer, sparse for the input table: both optimizers step
    assert float(adam.state[w]["step"]) == 3


def test_finish_with_full_in_the_trainer_and_resume_across_the_switch(tmp_path):
    extra = ["loss.name=sampled", "loss.num_sampled=20", "train.max_steps=40", "train.checkpoint_every=10",
             "loss.finish_with_full=0.25", "optim.name=sparse_adam", "optim.alpha=0.01"]
    full = train(_cfg(tmp_path, *extra, name="a"), quiet=True)
    state = load_checkpoint(full["run_dir"] / "last.pt")
    assert state["finishing"] and set(state["loss"]) == {"weight", "bias"}  # the exact softmax's state
    for cut in (25, 35):  # interrupted before and after the switch (at step 30)
        name = f"b{cut}"
        train(_cfg(tmp_path, *extra, name=name), quiet=True, stop_at_step=cut)
        assert load_checkpoint(tmp_path / name / "last.pt")["finishing"] == (cut > 30)
        resumed = train(_cfg(tmp_path, *extra, name=name), quiet=True, resume=True)
        assert resumed["metrics"]["eval/full_ce"] == full["metrics"]["eval/full_ce"]
        after = lambda run: [v for s, v in _scalars(run)["train/objective"] if s > cut]  # noqa: E731
        assert after(resumed["run_dir"]) == after(full["run_dir"])
    # the objective logged after the switch is the exact CE of the training batches: close to the eval CE
    obj = dict(_scalars(full["run_dir"])["train/objective"])
    assert abs(obj[40] - full["metrics"]["eval/full_ce"]) < 0.5


@pytest.mark.parametrize("bad, message", [
    (["loss.name=full", "loss.finish_with_full=0.1"], "needs a sampled loss"),
    (["loss.name=sampled", "loss.num_sampled=20", "loss.finish_with_full=1.0"], "must be in [0, 1)"),
])
def test_finish_with_full_refuses_what_it_cannot_do(tmp_path, bad, message):
    with pytest.raises(ConfigError) as e:
        train(_cfg(tmp_path, *bad), quiet=True)
    assert message in str(e.value)
