"""Vocab-parallel losses (sampledsoftmax.parallel) on 2 gloo processes against the single-process losses.

The test spawns two worker processes (this file run as a script) that form a gloo group through a FileStore (no port
to pick, so no port race), run every scenario below and write which failed; each scenario is then one test here.
Every scenario builds the parallel loss from the same full table as a single-process reference (`from_full`), feeds
both the same inputs and the same explicit `sample=`, and compares the loss, the gradient of `hidden` and the shard's
rows of the weight and bias gradients. The references are `losses.py`'s losses and, where stated, the formula
itself (`F.cross_entropy`). A hang fails the test after the gloo timeout instead of blocking the suite.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # when run as a worker script
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from sampledsoftmax import (  # noqa: E402
    AllClassesSampler,
    CandidateSample,
    FullSoftmaxLoss,
    InputError,
    NCELoss,
    NegativeSamplingLoss,
    SampledSoftmaxLoss,
    UnigramSampler,
)
from sampledsoftmax.parallel import (  # noqa: E402
    VOCAB_PARALLEL_LOSSES,
    VocabParallelFullSoftmaxLoss,
    VocabParallelNCELoss,
    VocabParallelNegativeSamplingLoss,
    VocabParallelSampledSoftmaxLoss,
    build_vocab_parallel_loss,
    shard_range,
)

WORLD = 2
GLOO_TIMEOUT_S = 30  # a collective that never completes fails after this
TOTAL_TIMEOUT_S = 180
V, D, N = 11, 5, 13  # V odd: the shards are [0, 6) and [6, 11)
TOL64 = 1e-10
TOL32 = dict(rtol=1e-4, atol=1e-6)

PAIRS = {
    "full": (VocabParallelFullSoftmaxLoss, FullSoftmaxLoss),
    "sampled": (VocabParallelSampledSoftmaxLoss, SampledSoftmaxLoss),
    "nce": (VocabParallelNCELoss, NCELoss),
    "negative": (VocabParallelNegativeSamplingLoss, NegativeSamplingLoss),
}


class Ctx(NamedTuple):
    rank: int
    world: int
    solo: object  # a group holding only this rank


SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


# ------------------------------------------------------------------ helpers (run inside the workers)


def _data(seed, n=N, v=V, d=D, dtype=torch.float64, bias=True):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=dtype)
    w = torch.randn(v, d, generator=g, dtype=dtype)
    b = torch.randn(v, generator=g, dtype=dtype) if bias else None
    t = torch.randint(v, (n,), generator=g)
    return h, w, b, t, g


def _pair(kind, w, b, group=None, **kw):
    """(vocab-parallel loss sharded from w, b; single-process loss holding copies of w, b)."""
    par_cls, ref_cls = PAIRS[kind]
    par = par_cls.from_full(w, b, process_group=group, **kw)
    ref = ref_cls(w.shape[0], w.shape[1], weight=nn.Parameter(w.clone()),
                  bias=False if b is None else nn.Parameter(b.clone()), **kw)
    return par, ref


def _dense(g):
    return g.to_dense() if g.is_sparse else g


def _close(got, want, what, tol=None):
    kw = dict(rtol=tol, atol=tol) if isinstance(tol, float) else (tol or dict(rtol=TOL64, atol=TOL64))
    torch.testing.assert_close(got, want, **kw, msg=lambda m: f"{what}: {m}")


def _same_on_every_rank(x, what, group=None):
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    assert all(torch.equal(p, parts[0]) for p in parts), f"{what} differs between ranks: {parts}"


def _compare(par, ref, h, t, *, sample=None, upstream=None, tol=None, group=None):
    """Loss and gradients (hidden, shard rows of weight and bias) of `par` equal those of `ref`."""
    kw = {} if sample is None else {"sample": sample}
    hp, hr = h.clone().requires_grad_(), h.clone().requires_grad_()
    lp, lr = par(hp, t, **kw), ref(hr, t, **kw)
    _close(lp.detach(), lr.detach(), "loss", tol)
    _same_on_every_rank(lp.detach(), "loss", group)
    up = torch.ones_like(lr) if upstream is None else upstream
    (lp * up).sum().backward()
    (lr * up).sum().backward()
    _close(hp.grad, hr.grad, "grad of hidden", tol)
    s, e = par.shard_start, par.shard_end
    _close(_dense(par.weight.grad), _dense(ref.weight.grad)[s:e], "grad of the weight shard", tol)
    if ref.bias is not None:
        _close(_dense(par.bias.grad), _dense(ref.bias.grad)[s:e], "grad of the bias shard", tol)
    return lp.detach(), hp.grad


def _raises(fn, match):
    try:
        fn()
    except InputError as err:
        msg = str(err)
        assert "\n" not in msg, f"error message is not one line: {msg!r}"
        assert match in msg, f"expected {match!r} in {msg!r}"
        return msg
    raise AssertionError(f"no InputError (expected one matching {match!r})")


# ------------------------------------------------------------------ exact softmax


@scenario
def full_mean_ignore_index_odd_V(ctx):
    h, w, b, t, _ = _data(0)
    t[[2, 7]] = -100
    par, ref = _pair("full", w, b)
    assert (par.shard_end - par.shard_start) == (6 if ctx.rank == 0 else 5)
    loss, _ = _compare(par, ref, h, t)
    # the formula itself (loose here; float64_mean_equals_cross_entropy_to_1e12 checks it to 1e-12)
    _close(loss, F.cross_entropy(h @ w.T + b, t), "loss vs F.cross_entropy", 1e-6)


@scenario
def full_sum_ignore_index_is_a_class_id(ctx):
    h, w, b, t, _ = _data(1)
    t[:4] = 3  # class 3 is the pad id here
    par, ref = _pair("full", w, b, reduction="sum", ignore_index=3)
    loss, _ = _compare(par, ref, h, t)
    _close(loss, F.cross_entropy(h @ w.T + b, t, reduction="sum", ignore_index=3), "loss vs F.cross_entropy")


@scenario
def full_none_batched_hidden_upstream_grad(ctx):
    h, w, b, t, g = _data(2, n=14)
    h3, t3 = h.view(2, 7, D), t.view(2, 7).clone()
    t3[1, 2] = -100
    up = torch.randn(2, 7, generator=g, dtype=h.dtype)
    par, ref = _pair("full", w, b, reduction="none")
    loss, _ = _compare(par, ref, h3, t3, upstream=up)
    assert loss.shape == (2, 7)
    want = F.cross_entropy((h @ w.T + b), t3.reshape(-1), reduction="none").view(2, 7)
    _close(loss, want, "per-row loss vs F.cross_entropy")


@scenario
def full_label_smoothing(ctx):
    h, w, b, t, _ = _data(3)
    t[5] = -100
    par, ref = _pair("full", w, b, label_smoothing=0.2, reduction="sum")
    loss, _ = _compare(par, ref, h, t)
    _close(loss, F.cross_entropy(h @ w.T + b, t, label_smoothing=0.2, reduction="sum"), "loss vs F.cross_entropy")


@scenario
def full_all_targets_on_one_shard(ctx):
    h, w, b, t, g = _data(4)
    for lo, hi in ((6, 11), (0, 6)):  # every target owned by rank 1, then every one by rank 0
        t = torch.randint(lo, hi, (N,), generator=g)
        par, ref = _pair("full", w, b)
        _compare(par, ref, h, t)


@scenario
def full_column_blocks(ctx):
    # a tiny memory budget forces row blocks of 32 and single-column blocks: the online log-sum-exp path
    h, w, b, t, _ = _data(5, n=40, v=37)
    par, ref = _pair("full", w, b, memory_budget_mb=1e-4, label_smoothing=0.1)
    _compare(par, ref, h, t)


@scenario
def full_all_ignored_gives_zero(ctx):
    h, w, b, t, _ = _data(6)
    t[:] = -100
    par, ref = _pair("full", w, b)
    loss, gh = _compare(par, ref, h, t)
    assert float(loss) == 0.0 and not gh.any()
    assert not par.weight.grad.any()


@scenario
def full_float32_no_bias(ctx):
    h, w, _, _, g = _data(7, n=64, v=1001, d=16, dtype=torch.float32, bias=False)
    t = torch.randint(1001, (64,), generator=g)
    par, ref = _pair("full", w, None)
    assert par.bias is None
    _compare(par, ref, h, t, tol=TOL32)


@scenario
def full_exact_nll_topk_logits(ctx):
    h, w, b, t, g = _data(8)
    par, ref = _pair("full", w, b)
    multi = torch.stack([t, torch.randint(V, (N,), generator=g), torch.full((N,), -100)], 1)  # (N, 3) with padding
    _close(par.exact_nll(h, multi), ref.exact_nll(h, multi), "exact_nll")
    ids, probs = par.predict_topk(h, 4)
    ids_ref, probs_ref = ref.predict_topk(h, 4)
    assert torch.equal(ids, ids_ref), (ids, ids_ref)
    _close(probs, probs_ref, "predict_topk probabilities", dict(rtol=1e-5, atol=1e-7))
    # logits: gathered from the shards, and differentiable back into hidden and the shard
    hp, hr = h.clone().requires_grad_(), h.clone().requires_grad_()
    zp, zr = par.logits(hp), ref.logits(hr)
    _close(zp.detach(), zr.detach(), "logits")
    up = torch.randn(zr.shape, generator=g, dtype=h.dtype)
    (zp * up).sum().backward()
    (zr * up).sum().backward()
    _close(hp.grad, hr.grad, "grad of hidden through logits()")
    s, e = par.shard_start, par.shard_end
    _close(par.weight.grad, ref.weight.grad[s:e], "grad of the weight shard through logits()")


@scenario
def exact_nll_and_rank_over_shards_counts_greater_and_ties(ctx):
    """exact_nll_and_rank over the whole sharded table: the NLL and the target's rank (greater = #{c : z_c > z_t},
    ties = #{c != t : z_c = z_t}) of the full logits, whichever shard holds the target and the classes tied with it.
    Integer-valued hidden states and table, so ties are exact and span both shards."""
    g = torch.Generator().manual_seed(12)
    h = torch.randint(-2, 3, (N, D), generator=g).double()
    w = torch.randint(-1, 2, (V, D), generator=g).double()
    b = torch.randint(-1, 2, (V,), generator=g).double()
    t = torch.randint(V, (N,), generator=g)
    t[:3] = torch.tensor([0, V - 1, -100])  # the first and last class, and an ignored entry
    for kind, bias, kw in (("full", b, {}), ("full", None, {"memory_budget_mb": 1e-4}), ("sampled", b, {}),
                           ("negative", None, {})):
        par, ref = _pair(kind, w, bias, **kw)
        z = h @ w.T + (bias if bias is not None else 0)  # (N, V) exact integers
        valid, tc = t >= 0, t.clamp_min(0)
        zt = z.gather(1, tc[:, None])
        want = ((z.logsumexp(1) - zt[:, 0]) * valid, (z > zt).sum(1) * valid, ((z == zt).sum(1) - 1) * valid)
        got = par.exact_nll_and_rank(h, t)
        assert len(got) == 3
        _close(got[0], want[0], f"{kind} exact NLL")
        assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2]), (kind, got, want)
        for x, r in zip(got, ref.exact_nll_and_rank(h, t)):  # the single-process loss's numbers
            _close(x.double(), r.double(), f"{kind} against the single-process loss")
            _same_on_every_rank(x, f"{kind} exact_nll_and_rank")
        assert want[2].sum() > 0 and (want[1] > 0).any()  # not vacuous
    zero, _ = _pair("full", torch.zeros(V, D, dtype=torch.float64), None)
    _, greater, ties = zero.exact_nll_and_rank(h, t)  # every logit ties
    assert torch.equal(greater, torch.zeros(N, dtype=torch.long)) and torch.equal(ties, (V - 1) * (t >= 0))
    empty = zero.exact_nll_and_rank(h[:0], t[:0])
    assert [tuple(x.shape) for x in empty] == [(0,)] * 3


@scenario
def full_second_backward_is_refused_not_silent(ctx):
    # mean/sum hand their precomputed gradients to the first backward; a second one must raise, not return zeros
    h, w, b, t, _ = _data(9)
    par, ref = _pair("full", w, b)
    hp = h.clone().requires_grad_()
    loss = par(hp, t)
    loss.backward(retain_graph=True)
    try:
        loss.backward()
    except RuntimeError as err:
        assert "twice" in str(err), err
    else:
        raise AssertionError("a second backward through the reduced full softmax did not raise")
    # reduction="none" recomputes in backward: twice is fine and accumulates exactly twice the gradient
    par_none, ref_none = _pair("full", w, b, reduction="none")
    hp, hr = h.clone().requires_grad_(), h.clone().requires_grad_()
    lp, lr = par_none(hp, t).sum(), ref_none(hr, t).sum()
    for _ in range(2):
        lp.backward(retain_graph=True)
        lr.backward(retain_graph=True)
    _close(hp.grad, hr.grad, "grad of hidden after two backward passes")
    s, e = par_none.shard_start, par_none.shard_end
    _close(par_none.weight.grad, ref_none.weight.grad[s:e], "grad of the weight shard after two backward passes")


# ------------------------------------------------------------------ candidate-sampling losses


def _shared_sample(g, n=N, t_cols=1, dtype=torch.float64, counts=False):
    """Shared candidates with accidental hits on both shards and a duplicated id: 2 (rank 0), 8 (rank 1, twice)."""
    ids = torch.tensor([2, 8, 8, 5, 10, 0, 7, 9])
    lqt = torch.randn(n, t_cols, generator=g, dtype=dtype)
    lqs = torch.randn(ids.shape, generator=g, dtype=dtype)
    if counts:
        ids = torch.tensor([0, 2, 5, 7, 8, 9, 10])
        lqs = torch.randn(ids.shape, generator=g, dtype=dtype)
        return CandidateSample(ids, lqt, lqs, torch.tensor([1.0, 3.0, 1.0, 2.0, 1.0, 4.0, 1.0]))
    return CandidateSample(ids, lqt, lqs)


def _targets_with_hits(t):
    t = t.clone()
    t[0], t[1], t[2] = 2, 8, 10  # true classes that are also sampled, on both shards
    return t


@scenario
def sampled_softmax_log_q_and_hits_across_shards(ctx):
    h, w, b, t, g = _data(10)
    t = _targets_with_hits(t)
    t[4] = -100
    sample = _shared_sample(g)
    for subtract_log_q in (True, False):
        par, ref = _pair("sampled", w, b, subtract_log_q=subtract_log_q)
        _compare(par, ref, h, t, sample=sample)
    # accidental hits kept: the removal is really exercised (the losses must differ)
    par_keep, ref_keep = _pair("sampled", w, b, remove_accidental_hits=False)
    loss_keep, _ = _compare(par_keep, ref_keep, h, t, sample=sample)
    loss_rm, _ = _compare(*_pair("sampled", w, b), h, t, sample=sample)
    assert not torch.allclose(loss_keep, loss_rm)


@scenario
def sampled_softmax_multilabel_counts_smoothing(ctx):
    h, w, b, t, g = _data(11)
    t3 = torch.stack([_targets_with_hits(t), torch.randint(V, (N,), generator=g), torch.full((N,), -100)], 1)
    t3[3, 0] = -100  # a row whose first label is padding
    t3[:, 1] = torch.where(t3[:, 1] == t3[:, 0], -100, t3[:, 1])  # labels of a row distinct
    sample = _shared_sample(g, t_cols=3, counts=True)
    up = torch.randn(N, generator=g, dtype=h.dtype)
    par, ref = _pair("sampled", w, b, label_smoothing=0.1, reduction="none", ignore_index=-100)
    _compare(par, ref, h, t3, sample=sample, upstream=up)


@scenario
def sampled_softmax_sparse_gradients(ctx):
    h, w, b, t, g = _data(12)
    sample = _shared_sample(g)
    par, ref = _pair("sampled", w, b, sparse=True)
    _compare(par, ref, h, _targets_with_hits(t), sample=sample)
    assert par.weight.grad.is_sparse and par.bias.grad.is_sparse
    assert par.weight.grad.shape == (par.shard_end - par.shard_start, D)


@scenario
def sampled_softmax_float32(ctx):
    h, w, b, _, g = _data(13, n=64, v=1001, d=16, dtype=torch.float32)
    t = torch.randint(1001, (64,), generator=g)
    ids = torch.cat([t[:8], torch.randint(1001, (120,), generator=g)])  # hits on whichever shards own them
    sample = CandidateSample(ids, torch.randn(64, 1, generator=g), torch.randn(128, generator=g))
    _compare(*_pair("sampled", w, b), h, t, sample=sample, tol=TOL32)


@scenario
def sampled_softmax_all_classes_is_the_full_softmax(ctx):
    # every class as a candidate, log-Q 0, hits removed: exactly the full softmax (the formula, not a loss class)
    h, w, b, t, _ = _data(14)
    par = VocabParallelSampledSoftmaxLoss.from_full(w, b, sampler=AllClassesSampler(V), num_sampled=None)
    loss, _ = _compare(par, _pair("full", w, b)[1], h, t)
    _close(loss, F.cross_entropy(h @ w.T + b, t), "loss vs F.cross_entropy", 1e-6)


@scenario
def sampled_softmax_draws_the_same_sample_on_every_rank(ctx):
    h, w, b, t, _ = _data(15)
    counts = torch.arange(V, 0, -1).double()
    # rank 1 asks for another seed: group rank 0's wins, so the ranks still draw alike
    par = VocabParallelSampledSoftmaxLoss.from_full(
        w, b, sampler=UnigramSampler.from_counts(counts), num_sampled=6, seed=123 if ctx.rank == 0 else 999
    )
    assert par.seed == 123
    ref = SampledSoftmaxLoss(V, D, weight=nn.Parameter(w.clone()), bias=nn.Parameter(b.clone()),
                             sampler=UnigramSampler.from_counts(counts), num_sampled=6,
                             generator=torch.Generator().manual_seed(123))
    for _ in range(3):  # the generators advance alike
        par.weight.grad = par.bias.grad = ref.weight.grad = ref.bias.grad = None
        _compare(par, ref, h, t)


@scenario
def nce_keep_and_remove_hits(ctx):
    h, w, b, t, g = _data(16)
    t = _targets_with_hits(t)
    sample = _shared_sample(g)
    for remove in (False, True):
        _compare(*_pair("nce", w, b, remove_accidental_hits=remove), h, t, sample=sample)


@scenario
def negative_sampling_per_example_and_shared(ctx):
    h, w, _, t, g = _data(17, bias=False)
    ids = torch.randint(V, (N, 5), generator=g)
    ids[:, 0] = t  # a collision in every row, on whichever shard owns it
    sample = CandidateSample(ids, torch.zeros(N, 1), torch.zeros(N, 5))
    for collisions in ("skip", "keep"):
        par, ref = _pair("negative", w, None, collisions=collisions)
        assert par.bias is None
        _compare(par, ref, h, t, sample=sample)
    _compare(*_pair("negative", w, None, shared=True), h, _targets_with_hits(t), sample=_shared_sample(g))


@scenario
def negative_sampling_resample_drawn_internally(ctx):
    h, w, _, t, _ = _data(18, bias=False)
    counts = torch.arange(V, 0, -1).double()
    par = VocabParallelNegativeSamplingLoss.from_full(
        w, None, sampler=UnigramSampler.from_counts(counts), collisions="resample", seed=7
    )
    ref = NegativeSamplingLoss(V, D, weight=nn.Parameter(w.clone()), sampler=UnigramSampler.from_counts(counts),
                               collisions="resample", generator=torch.Generator().manual_seed(7))
    _compare(par, ref, h, t)


# ------------------------------------------------------------------ empty batches, float64, double backward, autocast


@scenario
def empty_batch_every_loss(ctx):
    # no example at all: 0 (an empty tensor for "none") with zero gradients, on every rank, as a single process
    h, w, b, _, g = _data(24)
    h0, t0 = h[:0], torch.zeros(0, dtype=torch.long)
    samples = {"full": None, "sampled": _shared_sample(g, n=0), "nce": _shared_sample(g, n=0),
               "negative": CandidateSample(torch.zeros(0, 5, dtype=torch.long), torch.zeros(0, 1), torch.zeros(0, 5))}
    for kind, sample in samples.items():
        for reduction in ("mean", "sum", "none"):
            bias = None if kind == "negative" else b
            par, ref = _pair(kind, w, bias, reduction=reduction)
            loss, gh = _compare(par, ref, h0, t0, sample=sample)
            assert loss.shape == ((0,) if reduction == "none" else ()) and not loss.any() and gh.shape == (0, D)
            assert par.weight.grad is None or not _dense(par.weight.grad).any()
        # and a loss drawing its own sample
        par = _pair(kind, w, None if kind == "negative" else b)[0]
        _same_on_every_rank(par(h0, t0).detach(), f"{kind} loss of an empty batch")
    par = _pair("full", w, b)[0]
    assert par.exact_nll(h0, t0).shape == (0,)
    ids, probs = par.predict_topk(h0, 3)
    assert ids.shape == probs.shape == (0, 3)
    assert par.logits(h0).shape == (0, V)


@scenario
def float64_mean_equals_cross_entropy_to_1e12(ctx):
    # the mean over non-ignored rows is weighted in the loss's dtype: fp64 end to end
    h, w, b, t, _ = _data(25)
    t[[2, 7]] = -100
    for eps in (0.0, 0.2):
        par = VocabParallelFullSoftmaxLoss.from_full(w, b, label_smoothing=eps)
        hp, hr = h.clone().requires_grad_(), h.clone().requires_grad_()
        wr, br = w.clone().requires_grad_(), b.clone().requires_grad_()
        loss, ref = par(hp, t), F.cross_entropy(hr @ wr.T + br, t, label_smoothing=eps)
        _close(loss.detach(), ref.detach(), "loss vs F.cross_entropy", 1e-12)
        loss.backward()
        ref.backward()
        s, e = par.shard_start, par.shard_end
        _close(hp.grad, hr.grad, "grad of hidden vs F.cross_entropy", 1e-12)
        _close(par.weight.grad, wr.grad[s:e], "grad of the weight shard vs F.cross_entropy", 1e-12)
    samp = VocabParallelSampledSoftmaxLoss.from_full(w, b, sampler=AllClassesSampler(V), num_sampled=None,
                                                     label_smoothing=0.2)
    _close(samp(h, t), F.cross_entropy(h @ w.T + b, t, label_smoothing=0.2), "all-classes sampled vs F.cross_entropy",
           1e-12)


@scenario
def double_backward_is_refused_not_silent(ctx):
    h, w, b, t, g = _data(26)
    for kind, sample in (("full", None), ("sampled", _shared_sample(g))):
        for reduction in ("mean", "none"):
            par = _pair(kind, w, b, reduction=reduction)[0]
            hp = h.clone().requires_grad_()
            kw = {} if sample is None else {"sample": sample}
            (gh,) = torch.autograd.grad(par(hp, t, **kw).sum(), hp, create_graph=True)
            try:
                torch.autograd.grad((gh * gh).sum(), [hp, par.weight], allow_unused=True)
            except RuntimeError as err:
                assert "once_differentiable" in str(err), err
            else:
                raise AssertionError(f"double backward through the vocab-parallel {kind} ({reduction}) did not raise")


@scenario
def autocast_bf16_computes_in_fp32(ctx):
    h, w, b, t, g = _data(27, dtype=torch.float32)
    shared = _shared_sample(g, dtype=torch.float32)
    samples = {"full": None, "sampled": shared, "nce": shared,
               "negative": CandidateSample(torch.randint(V, (N, 5), generator=g), torch.zeros(N, 1), torch.zeros(N, 5))}
    hb = h.to(torch.bfloat16)
    for kind, sample in samples.items():
        smoothing = {"label_smoothing": 0.1} if kind in ("full", "sampled") else {}
        par = _pair(kind, w, None if kind == "negative" else b, **smoothing)[0]
        kw = {} if sample is None else {"sample": sample}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = par(hb, t, **kw)
        assert loss.dtype == torch.float32, (kind, loss.dtype)
        _close(loss.detach(), par(hb.float(), t, **kw).detach(), f"{kind} under autocast vs the upcast input", 1e-5)
        loss.backward()
        assert par.weight.grad.dtype == torch.float32


@scenario
def error_shared_negatives_cannot_be_resampled(ctx):
    _raises(lambda: VocabParallelNegativeSamplingLoss(V, D, shared=True, collisions="resample"),
            "use collisions='skip' with shared negatives")


# ------------------------------------------------------------------ a group of one, the registry


@scenario
def world_size_one_group(ctx):
    h, w, b, t, g = _data(19)
    full, ref = _pair("full", w, b, group=ctx.solo)
    assert (full.world_size, full.shard_start, full.shard_end) == (1, 0, V)
    _compare(full, ref, h, t, group=ctx.solo)
    par = VocabParallelSampledSoftmaxLoss.from_full(w, b, process_group=ctx.solo, num_sampled=5, seed=3)
    ref = SampledSoftmaxLoss(V, D, weight=nn.Parameter(w.clone()), bias=nn.Parameter(b.clone()), num_sampled=5,
                             generator=torch.Generator().manual_seed(3))
    _compare(par, ref, h, t, group=ctx.solo)


@scenario
def registry_builds_every_loss(ctx):
    for name, cls in VOCAB_PARALLEL_LOSSES.items():
        kw = {} if name == "full" else {"num_sampled": 4}
        loss = build_vocab_parallel_loss(name, V, D, **kw)
        assert type(loss) is cls
        assert loss.weight.shape == (shard_range(V, ctx.rank, ctx.world)[1] - shard_range(V, ctx.rank, ctx.world)[0], D)
        assert (loss.bias is None) == (name == "negative")
        h, _, _, t, _ = _data(20, dtype=torch.float32)
        _same_on_every_rank(loss(h, t).detach(), f"{name} loss with its own sample")
    _raises(lambda: build_vocab_parallel_loss("full", V, D, sampler="uniform"), "exact")
    _raises(lambda: build_vocab_parallel_loss("sampeld", V, D), "did you mean")


# ------------------------------------------------------------------ errors: one line, on every rank, no hang


@scenario
def error_shard_shape_on_one_rank(ctx):
    rows = shard_range(V, ctx.rank, ctx.world)[1] - shard_range(V, ctx.rank, ctx.world)[0]
    bad = rows + (1 if ctx.rank == 1 else 0)
    msg = _raises(lambda: VocabParallelFullSoftmaxLoss(V, D, weight=nn.Parameter(torch.zeros(bad, D))),
                  "weight shard has shape" if ctx.rank == 1 else "another rank")
    assert ctx.rank == 0 or f"({rows}, {D})" in msg


@scenario
def error_ranks_disagree_on_num_classes(ctx):
    _raises(lambda: VocabParallelFullSoftmaxLoss(V + ctx.rank, D), "disagree on num_classes")


@scenario
def error_target_out_of_range(ctx):
    h, w, b, t, _ = _data(21)
    t[3] = V
    par = VocabParallelFullSoftmaxLoss.from_full(w, b)
    _raises(lambda: par(h, t), f"class id {V}")


@scenario
def error_ranks_disagree_on_target_or_hidden(ctx):
    h, w, b, t, _ = _data(22)
    par = VocabParallelFullSoftmaxLoss.from_full(w, b)
    t2 = t.clone()
    if ctx.rank == 1:
        t2[0] = (t2[0] + 1) % V
    _raises(lambda: par(h, t2), "disagree on the target")
    h2 = h + 1e-3 * ctx.rank
    _raises(lambda: par(h2, t), "disagree on the hidden states")
    # validate=False trusts the caller: no check, no error
    VocabParallelFullSoftmaxLoss.from_full(w, b, validate=False)(h2, t)


@scenario
def error_softcap_refused(ctx):
    # the sharded passes (exact loss, evaluation, top-k) have no soft-capping: refused, not silently ignored
    for name in VOCAB_PARALLEL_LOSSES:
        _raises(lambda: build_vocab_parallel_loss(name, V, D, logit_softcap=30.0), "logit_softcap")


@scenario
def error_generators_disagree(ctx):
    h, w, b, t, _ = _data(23)
    par = VocabParallelSampledSoftmaxLoss.from_full(
        w, b, num_sampled=6, generator=torch.Generator().manual_seed(ctx.rank)
    )
    _raises(lambda: par(h, t), "disagree on the sample ids")


# ------------------------------------------------------------------ the pytest side


def _worker(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=GLOO_TIMEOUT_S))
    solo = [dist.new_group([r]) for r in range(world)][rank]  # every rank creates every group, in order
    ctx = Ctx(rank, world, solo)
    results = {}
    for name, fn in SCENARIOS.items():
        t0 = time.perf_counter()
        try:
            fn(ctx)
            results[name] = (None, time.perf_counter() - t0)
        except Exception:
            results[name] = (traceback.format_exc(), time.perf_counter() - t0)
        dist.barrier()
    with open(out, "wb") as f:
        pickle.dump(results, f)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_results():
    """Run every scenario on 2 gloo processes once; -> {name: [(error or None, seconds) per rank]}."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        outs = [os.path.join(tmp, f"rank{r}.pkl") for r in range(WORLD)]
        procs = [
            subprocess.Popen([sys.executable, __file__, "--worker", str(r), str(WORLD), os.path.join(tmp, "store"),
                              outs[r]], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for r in range(WORLD)
        ]
        deadline = time.monotonic() + TOTAL_TIMEOUT_S
        logs = []
        try:
            for p in procs:
                logs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail(f"the {WORLD} gloo workers did not finish within {TOTAL_TIMEOUT_S} s")
        if any(p.returncode != 0 or not os.path.exists(o) for p, o in zip(procs, outs)):
            pytest.fail("a gloo worker crashed:\n" + "\n".join(f"--- rank {r}\n{log[-4000:]}" for r, log in enumerate(logs)))
        per_rank = []
        for o in outs:
            with open(o, "rb") as f:
                per_rank.append(pickle.load(f))
    return {name: [res[name] for res in per_rank] for name in SCENARIOS}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_two_ranks(two_rank_results, name):
    errors = [f"rank {r}:\n{err}" for r, (err, _) in enumerate(two_rank_results[name]) if err is not None]
    assert not errors, "\n".join(errors)


def test_shard_range_partitions_the_classes():
    for v in range(1, 40):
        for world in range(1, min(v, 6) + 1):
            ranges = [shard_range(v, r, world) for r in range(world)]
            assert ranges[0][0] == 0 and ranges[-1][1] == v
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous, in rank order
            sizes = [e - s for s, e in ranges]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    with pytest.raises(InputError):
        shard_range(10, 2, 2)


def test_needs_an_initialised_group():
    if dist.is_available() and dist.is_initialized():
        pytest.skip("a process group is initialised in this process")
    for cls in (VocabParallelFullSoftmaxLoss, VocabParallelSampledSoftmaxLoss):
        with pytest.raises(InputError, match="init_process_group"):
            cls(V, D)


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "--worker":
    _worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
