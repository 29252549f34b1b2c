"""The fused SGNS step (embeddings/fused.py) against the trainer's generic step: autograd through
NegativeSamplingLoss, sparse gradients and torch.optim.SGD. One step must move both tables (and the bias) as the
generic step does, from the same negatives; a whole run must log the same objective and reach the same exact CE;
ineligible setups must keep the generic step; an interrupted fused run must resume exactly."""

import copy

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import sampledsoftmax.embeddings.train as train_mod
from sampledsoftmax.training.checkpoint import load_checkpoint
from sampledsoftmax.embeddings.fused import can_fuse, fused_sgns_step
from sampledsoftmax.embeddings.model import SkipGram
from sampledsoftmax.embeddings.train import train
from sampledsoftmax.training.builders import build_loss_fn, build_optimizers
from sampledsoftmax.losses import NegativeSamplingLoss
from sampledsoftmax.samplers import UnigramSampler

from test_train import _cfg as _train_cfg  # noqa: E402 - the trainer tests' tiny planted-corpus config


def _cfg(tmp_path, *extra, **kw):
    """The trainer tests' config on the torch fused step (the compiled step has its own tests, test_kernel_step.py)."""
    return _train_cfg(tmp_path, "train.kernel=false", *extra, **kw)


def _scalars(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts the trainer's calls of the fused step (so a test knows which path a run took)."""
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return fused_sgns_step(*args, **kwargs)

    monkeypatch.setattr(train_mod, "fused_sgns_step", counting)
    return calls


# ------------------------------------------------------------------------------------------------ one step


def _setup(collisions, bias, sparse, v=12, d=8, k=5, seed=0):
    """A tiny vocabulary (collisions and repeated rows in every batch), random tables, a seeded generator."""
    torch.manual_seed(seed)
    counts = torch.tensor([2.0 ** (v - i) for i in range(v)])  # steep: frequent words are drawn as negatives a lot
    model = SkipGram(v, d, sparse=sparse)
    loss_fn = NegativeSamplingLoss(v, d, num_sampled=k, sampler=UnigramSampler.from_counts(counts, alpha=0.75),
                                   collisions=collisions, bias=bias, sparse=sparse,
                                   generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        loss_fn.weight.normal_(0, 0.5)
        model.embed.weight.normal_(0, 0.5)
        if bias:
            loss_fn.bias.normal_(0, 0.5)
    return model, loss_fn


def _generic_step(model, loss_fn, c, x, lr, scale):
    """The trainer's step: forward, (loss * scale).backward(), SGD."""
    (opt,) = build_optimizers("sgd", model, loss_fn, lr)
    loss = loss_fn(model(c), x)
    opt.zero_grad(set_to_none=True)
    (loss * scale).backward()
    opt.step()
    return loss.detach()


def _brute_force_step(model, loss_fn, c, x, negs, lr, scale):
    """The word2vec update written pair by pair, in float64, from the pre-step weights (the formula, no autograd)."""
    w_in, w_out = model.embed.weight.detach().double(), loss_fn.weight.detach().double()
    b = None if loss_fn.bias is None else loss_fn.bias.detach().double()
    new_in, new_out = w_in.clone(), w_out.clone()
    new_b = None if b is None else b.clone()
    n, total = len(c), 0.0
    eta = lr * scale / n
    for i in range(n):
        h = w_in[c[i]]
        cols = [(int(x[i]), 1.0)] + [(int(s), 0.0) for s in negs[i]
                                      if not (loss_fn.remove_accidental_hits and int(s) == int(x[i]))]
        for j, label in cols:
            z = float(h @ w_out[j]) + (0.0 if b is None else float(b[j]))
            p = 1 / (1 + torch.exp(torch.tensor(-z, dtype=torch.float64)))
            total += float(torch.nn.functional.softplus(torch.tensor(-z if label else z, dtype=torch.float64)))
            g = eta * (float(p) - label)
            new_in[c[i]] -= g * w_out[j]
            new_out[j] -= g * h
            if new_b is not None:
                new_b[j] -= g
    return total / n, new_in, new_out, new_b


@pytest.mark.parametrize("collisions", ["skip", "resample", "keep"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("sparse", [True, False])
def test_one_fused_step_equals_one_generic_step(collisions, bias, sparse):
    model, loss_fn = _setup(collisions, bias, sparse)
    model_f, loss_f = copy.deepcopy(model), copy.deepcopy(loss_fn)  # deepcopy: same generator state
    g = torch.Generator().manual_seed(3)
    n, v = 50, model.embed.num_embeddings
    c = torch.randint(v, (n,), generator=g)  # 50 centers over 12 words: every row repeated
    x = torch.randint(3, (n,), generator=g)  # contexts among the frequent words: collisions with negatives
    lr, scale = 0.05, 64  # scale = the configured batch size, above N as for an epoch's last batch
    probe = copy.deepcopy(loss_fn)  # the draws both steps are about to make
    raw = probe.sampler(x.view(-1, 1), 5, probe.generator, per_example=True).ids  # (N, K) before any resampling
    assert int((raw == x.view(-1, 1)).sum()) > 0  # the batch exercises the collision rule
    if collisions == "resample":
        probe = copy.deepcopy(loss_fn)
        assert int((probe.sample(x.view(-1, 1)).ids == x.view(-1, 1)).sum()) < int((raw == x.view(-1, 1)).sum())
    assert len(c.unique()) < n and len(x.unique()) < n  # and repeated rows
    ref = _generic_step(model, loss_fn, c, x, lr, scale)
    got = fused_sgns_step(model_f, loss_f, c, x, lr, scale)
    assert got.shape == () and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model_f.embed.weight, model.embed.weight, rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(loss_f.weight, loss_fn.weight, rtol=2e-6, atol=1e-6)
    if bias:
        torch.testing.assert_close(loss_f.bias, loss_fn.bias, rtol=2e-6, atol=1e-6)
    assert torch.equal(loss_f.generator.get_state(), loss_fn.generator.get_state())  # same draws consumed
    assert (model_f.embed.weight - model.embed.weight).abs().max() < 1e-3 * (model.embed.weight).abs().max()



@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("bias", [False, True])
def test_one_fused_step_equals_one_generic_step_on_cuda(bias):
    pair = []
    for _ in range(2):  # two identical copies, each with its own CUDA generator in the same state
        model, loss_fn = _setup("skip", bias, True)
        model, loss_fn = model.cuda(), loss_fn.cuda()
        loss_fn.generator = torch.Generator(device="cuda").manual_seed(1)
        pair.append((model, loss_fn))
    (model, loss_fn), (model_f, loss_f) = pair
    c, x = torch.randint(12, (50,), device="cuda"), torch.randint(3, (50,), device="cuda")
    ref = _generic_step(model, loss_fn, c, x, 0.05, 64)
    got = fused_sgns_step(model_f, loss_f, c, x, 0.05, 64)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model_f.embed.weight, model.embed.weight, rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(loss_f.weight, loss_fn.weight, rtol=2e-6, atol=1e-6)
    if bias:
        torch.testing.assert_close(loss_f.bias, loss_fn.bias, rtol=2e-6, atol=1e-6)

@pytest.mark.parametrize("collisions", ["skip", "keep"])
@pytest.mark.parametrize("bias", [False, True])
def test_one_fused_step_equals_the_word2vec_formula(collisions, bias):
    model, loss_fn = _setup(collisions, bias, sparse=True)
    g = torch.Generator().manual_seed(4)
    c, x = torch.randint(12, (40,), generator=g), torch.randint(3, (40,), generator=g)
    negs = copy.deepcopy(loss_fn).sample(x.view(-1, 1)).ids
    want_loss, want_in, want_out, want_b = _brute_force_step(model, loss_fn, c, x, negs, 0.05, 40)
    w_in0 = model.embed.weight.detach().clone()
    got = fused_sgns_step(model, loss_fn, c, x, 0.05, 40)
    assert float(got) == pytest.approx(want_loss, rel=1e-5)
    assert (want_in - w_in0.double()).abs().max() > 1e-3  # the step moves the weights
    torch.testing.assert_close(model.embed.weight.double(), want_in, rtol=0, atol=2e-6)
    torch.testing.assert_close(loss_fn.weight.double(), want_out, rtol=0, atol=2e-6)
    if bias:
        torch.testing.assert_close(loss_fn.bias.double(), want_b, rtol=0, atol=2e-6)


def test_tied_tables_take_the_summed_gradient_of_the_pre_step_weights():
    model, _ = _setup("skip", False, True)
    tied = NegativeSamplingLoss(12, 8, weight=model.embed.weight, num_sampled=5, sampler="uniform",
                                generator=torch.Generator().manual_seed(0))
    model_f, tied_f = copy.deepcopy((model, tied))
    assert tied_f.weight is model_f.embed.weight
    c, x = torch.randint(12, (30,)), torch.randint(12, (30,))
    ref = _generic_step(model, tied, c, x, 0.05, 30)
    got = fused_sgns_step(model_f, tied_f, c, x, 0.05, 30)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model_f.embed.weight, model.embed.weight, rtol=2e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------ a whole run


def test_fused_run_logs_the_same_objective_and_reaches_the_same_exact_ce(tmp_path, fused_calls):
    plain = train(_cfg(tmp_path, "train.fused=false", name="plain"), quiet=True)
    assert not fused_calls
    fused = train(_cfg(tmp_path, "train.fused=true", name="fused"), quiet=True)
    assert len(fused_calls) == fused["step"] == plain["step"] > 50
    a, b = _scalars(plain["run_dir"]), _scalars(fused["run_dir"])
    for tag in ("train/objective", "eval/full_ce", "eval/top10"):
        (sa, va), (sb, vb) = zip(*a[tag]), zip(*b[tag])
        assert sa == sb, tag
        assert vb == pytest.approx(va, rel=1e-4, abs=1e-4), tag
    assert fused["metrics"]["eval/full_ce"] == pytest.approx(plain["metrics"]["eval/full_ce"], abs=1e-4)
    ce = [v for _, v in b["eval/full_ce"]]
    assert ce[-1] < ce[0] - 0.05  # and it learns
    sa, sb = load_checkpoint(plain["run_dir"] / "last.pt"), load_checkpoint(fused["run_dir"] / "last.pt")
    torch.testing.assert_close(sb["model"]["embed.weight"], sa["model"]["embed.weight"], rtol=0, atol=1e-4)
    torch.testing.assert_close(sb["loss"]["weight"], sa["loss"]["weight"], rtol=0, atol=1e-4)
    assert torch.equal(sa["rng_loss"], sb["rng_loss"])  # the very same negatives were drawn
    assert sa["optimizers"] == sb["optimizers"]  # the optimizer is still there and checkpointed (plain SGD: no state)


# ------------------------------------------------------------------------------------------------ eligibility


def _built(tmp_path, *extra):
    cfg = _cfg(tmp_path, *extra)
    vocab = type("V", (), {"counts": [100 - i for i in range(50)], "__len__": lambda self: 50})()
    model = SkipGram(50, cfg.model.dim, sparse=cfg.optim.name != "adam")
    return cfg, model, build_loss_fn(cfg, vocab, torch.Generator())


@pytest.mark.parametrize("extra", [[], ["loss.remove_accidental_hits=false"], ["loss.sparse=false"],
                                   ["loss.sampler=uniform"], ["loss.sampler=learned_unigram"]])
def test_word2vec_setups_are_eligible(tmp_path, extra):
    assert can_fuse(*_built(tmp_path, *extra))


@pytest.mark.parametrize("extra", [
    ["loss.name=sampled", "loss.num_sampled=8"], ["loss.name=nce", "loss.num_sampled=8"], ["loss.name=full"],
    ["loss.name=inbatch"], ["optim.name=adam"], ["optim.name=adagrad"], ["optim.name=sparse_adam"],
])
def test_other_losses_and_optimizers_are_not_eligible(tmp_path, extra):
    assert not can_fuse(*_built(tmp_path, *extra))


def test_shared_negatives_bias_smoothing_and_dtypes(tmp_path):
    cfg, model, loss_fn = _built(tmp_path)
    shared = NegativeSamplingLoss(50, cfg.model.dim, shared=True, sampler="uniform")
    assert can_fuse(cfg, model, NegativeSamplingLoss(50, cfg.model.dim, bias=True, sampler="uniform"))
    assert not can_fuse(cfg, model, shared)
    assert not can_fuse(cfg, model, NegativeSamplingLoss(50, cfg.model.dim, reduction="sum", sampler="uniform"))
    assert not can_fuse(cfg, copy.deepcopy(model).double(), loss_fn)
    assert not can_fuse(cfg, model, copy.deepcopy(loss_fn).double())
    smoothed = copy.deepcopy(loss_fn)
    smoothed.label_smoothing = 0.1
    assert not can_fuse(cfg, model, smoothed)
    cfg.train.bf16 = True
    assert not can_fuse(cfg, model, loss_fn)


def test_ineligible_run_takes_the_generic_step(tmp_path, fused_calls):
    result = train(_cfg(tmp_path, "optim.name=adagrad", "optim.alpha=0.1", "train.max_steps=12",
                        "train.fused=true"), quiet=True)
    assert result["step"] == 12 and not fused_calls


# ------------------------------------------------------------------------------------------------ resume


def test_interrupted_and_resumed_fused_run_reproduces_the_uninterrupted_run_exactly(tmp_path, fused_calls):
    extra = ["train.fused=true", "loss.num_sampled=16", "loss.sampler=unigram"]
    full = train(_cfg(tmp_path, *extra, name="straight"), quiet=True)
    assert len(fused_calls) == full["step"]
    cut = train(_cfg(tmp_path, *extra, name="cut"), quiet=True, stop_at_step=35)
    assert cut["stopped"] and cut["step"] == 35
    resumed = train(_cfg(tmp_path, *extra, name="cut"), quiet=True, resume=True)
    assert resumed["step"] == full["step"] and len(fused_calls) == 2 * full["step"]
    obj = lambda r: _scalars(r["run_dir"])["train/objective"]  # noqa: E731
    assert obj(full) == obj(resumed)  # every logged value, bit for bit
    a, b = load_checkpoint(full["run_dir"] / "last.pt"), load_checkpoint(resumed["run_dir"] / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k])
    for k in a["loss"]:
        assert torch.equal(a["loss"][k], b["loss"][k])
