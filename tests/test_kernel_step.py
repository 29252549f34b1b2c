"""The compiled SGNS step inside the skip-gram trainer (`train.kernel`): used by default for word2vec's setup on
the CPU, as accurate as the torch step, bit-identical across an interrupt + resume with one thread, and a one-line
fallback to the torch step when it cannot run."""

import pytest
import torch

import sampledsoftmax.embeddings.sgns_kernel as kernel_mod
import sampledsoftmax.embeddings.train as train_mod
from sampledsoftmax.embeddings.train import train
from sampledsoftmax.training.checkpoint import load_checkpoint

from test_train import _cfg, _scalars

pytest.importorskip("numba")


@pytest.fixture
def calls(monkeypatch):
    """Counts the compiled and the torch fused steps the trainer takes."""
    seen = {"kernel": 0, "torch": 0}
    real_k, real_t = train_mod.kernel_sgns_step, train_mod.fused_sgns_step

    def k(*a, **kw):
        seen["kernel"] += 1
        return real_k(*a, **kw)

    def t(*a, **kw):
        seen["torch"] += 1
        return real_t(*a, **kw)

    monkeypatch.setattr(train_mod, "kernel_sgns_step", k)
    monkeypatch.setattr(train_mod, "fused_sgns_step", t)
    return seen


def test_the_kernel_runs_word2vecs_setup_and_learns_as_well_as_the_torch_step(tmp_path, calls):
    compiled = train(_cfg(tmp_path, name="k", *["train.threads=2"]), quiet=True)
    assert calls == {"kernel": compiled["step"], "torch": 0} and compiled["step"] > 50
    torch_step = train(_cfg(tmp_path, "train.kernel=false", name="t"), quiet=True)
    assert calls["torch"] == torch_step["step"] == compiled["step"]
    ce_k, ce_t = compiled["metrics"]["eval/full_ce"], torch_step["metrics"]["eval/full_ce"]
    start = _scalars(compiled["run_dir"])["eval/full_ce"][0][1]
    assert ce_k < start - 0.05 and ce_t < start - 0.05  # both learn, measured exactly
    assert abs(ce_k - ce_t) < 0.05 * (start - ce_t)  # other negatives, the same estimator: within noise
    obj = [v for _, v in _scalars(compiled["run_dir"])["train/objective"]]
    assert all(v == v and v > 0 for v in obj)  # the kernel's loss is logged (finite, positive)


def test_deterministic_kernel_run_is_bit_identical_across_an_interrupt_and_resume(tmp_path):
    extra = ["train.deterministic=true", "train.max_steps=60", "train.checkpoint_every=25"]
    full = train(_cfg(tmp_path, *extra, name="a"), quiet=True)
    train(_cfg(tmp_path, *extra, name="b"), quiet=True, stop_at_step=33)
    resumed = train(_cfg(tmp_path, *extra, name="b"), quiet=True, resume=True)
    a, b = load_checkpoint(full["run_dir"] / "last.pt"), load_checkpoint(resumed["run_dir"] / "last.pt")
    for part in ("model", "loss"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    after = lambda run: [x for x in _scalars(run)["train/objective"] if x[0] > 33]  # noqa: E731
    assert after(full["run_dir"]) == after(resumed["run_dir"])
    again = train(_cfg(tmp_path, *extra, name="c"), quiet=True)  # and run to run
    assert torch.equal(load_checkpoint(again["run_dir"] / "last.pt")["model"]["embed.weight"], a["model"]["embed.weight"])


def test_without_numba_the_trainer_says_so_in_one_line_and_runs_the_torch_step(tmp_path, calls, monkeypatch, capsys):
    monkeypatch.setattr(kernel_mod, "available", lambda: (False, "numba is not installed (pip install numba); "
                                                                 "using the torch step"))
    out = train(_cfg(tmp_path, "train.max_steps=20"), quiet=False)
    assert calls == {"kernel": 0, "torch": out["step"]} and out["step"] == 20
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "compiled SGNS step off" in ln]
    assert len(lines) == 1 and "numba is not installed" in lines[0] and "torch step" in lines[0]


def test_a_loss_the_kernel_cannot_run_takes_the_torch_step(tmp_path, calls):
    out = train(_cfg(tmp_path, "loss.sampler=learned_unigram", "train.max_steps=20"), quiet=True)
    assert calls == {"kernel": 0, "torch": 20} and out["step"] == 20
