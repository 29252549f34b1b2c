"""Edge cases of the core that cut across every loss: shared negatives with resampling, double backward, deduplicated
samples under label smoothing, empty batches, float64 end to end, autocast, and the memory of the exact losses.

Every value is checked against a brute-force reference written from the loss's formula (F.cross_entropy on the full
logits, explicit sums over the candidates), gradients included.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from sampledsoftmax import (
    LOSSES,
    AllClassesSampler,
    CandidateSample,
    FullSoftmaxLoss,
    InputError,
    LogUniformSampler,
    NCELoss,
    NegativeSamplingLoss,
    OneVsAllLoss,
    SampledSoftmaxLoss,
    UnigramSampler,
    build_loss,
)
from sampledsoftmax.functional import chunked_one_vs_all, chunked_softmax_cross_entropy, chunked_topk
from sampledsoftmax.samplers import InBatchSampler, LearnedUnigramSampler, build_sampler

V, D = 40, 6
F64 = dict(rtol=1e-12, atol=1e-12)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _build(name, **kw):
    extra = {} if not LOSSES[name].is_sampled or name == "inbatch" else {"num_sampled": 8, "generator": _gen(0)}
    if name == "inbatch":
        extra["counts"] = torch.arange(V, 0, -1, dtype=torch.float64)  # a fixed correction: no streaming state
    return build_loss(name, V, D, **extra, **kw)


def _params(loss):
    return [p for p in loss.parameters()]


def _randomise(loss, seed=1):
    with torch.no_grad():
        for p in loss.parameters():
            p.copy_(torch.randn(p.shape, generator=_gen(seed), dtype=p.dtype))
    return loss


def _copy(p):
    return None if p is None else torch.nn.Parameter(p.detach().clone())


def _sample_for(loss, t):
    if not loss.is_sampled:
        return None
    return loss.sample(t.reshape(-1, 1))


def ref_rows(name, loss, h, t, smp):
    """Per-row loss of `loss` (default arguments, one true class, nothing ignored) from its formula: (N,)."""
    if name == "adaptive":
        return -loss.asm.log_prob(h.to(loss.asm.head.weight.dtype)).gather(1, t[:, None])[:, 0]
    w, b = loss.weight, loss.bias
    bias = (lambda ids: b[ids]) if b is not None else (lambda ids: 0.0)
    if name == "full":
        return F.cross_entropy(h @ w.T + bias(slice(None)), t, reduction="none", label_smoothing=loss.label_smoothing)
    if name == "ova":
        y = F.one_hot(t, V).to(h.dtype)
        return F.binary_cross_entropy_with_logits(h @ w.T + bias(slice(None)), y, reduction="none").sum(1)
    ids = smp.ids
    z_t = (h * w[t]).sum(-1) + bias(t)  # (N,)
    if ids.dim() == 1:
        z_s = h @ w[ids].T + bias(ids)  # (N, S)
        hit = ids[None, :] == t[:, None]
    else:
        z_s = (w[ids] * h[:, None, :]).sum(-1) + bias(ids)  # (N, S)
        hit = ids == t[:, None]
    if loss.subtract_log_q:
        z_t = z_t - smp.log_q_true.reshape(-1).to(h.dtype)
        z_s = z_s - smp.log_q_sampled.to(h.dtype)
    keep = ~hit if loss.remove_accidental_hits else torch.ones_like(hit)
    if name in ("sampled", "inbatch"):
        logits = torch.cat([z_t[:, None], z_s.masked_fill(~keep, -math.inf)], 1)
        return -logits.log_softmax(1)[:, 0]
    # nce (labels 1/T = 1) and negative sampling: BCE(z_t, 1) + Σ_kept BCE(z_s, 0)
    return F.softplus(-z_t) + (F.softplus(z_s) * keep).sum(1)


# ------------------------------------------------------------------ 1. shared negatives and collisions="resample"


def test_shared_negatives_with_resample_are_refused_naming_the_fix():
    with pytest.raises(InputError, match=r"use collisions='skip' with shared negatives"):
        NegativeSamplingLoss(V, D, shared=True, collisions="resample")
    with pytest.raises(InputError, match=r"shared=False"):
        build_loss("negative", V, D, shared=True, collisions="resample")
    # the combinations that are well defined still build
    NegativeSamplingLoss(V, D, shared=True, collisions="skip")
    NegativeSamplingLoss(V, D, shared=False, collisions="resample")


def test_per_example_resample_draws_from_q_conditioned_on_not_the_target():
    """fastText's rule, row by row: the resampled negatives of a row follow q restricted to the other classes."""
    q = torch.tensor([0.5, 0.3, 0.2] + [0.0] * (V - 3), dtype=torch.float64)
    loss = NegativeSamplingLoss(V, D, sampler=UnigramSampler(q), num_sampled=4000, collisions="resample",
                                generator=_gen(3))
    t = torch.tensor([[0], [1]])
    ids = loss.sample(t).ids  # (2, 4000)
    assert not (ids == t).any()
    for row, target in enumerate((0, 1)):
        others = [c for c in range(3) if c != target]
        frac = (ids[row] == others[0]).double().mean().item()
        want = q[others[0]].item() / (1 - q[target].item())
        assert abs(frac - want) < 5.5 * math.sqrt(want * (1 - want) / 4000)


# ------------------------------------------------------------------ 2. double backward


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_double_backward_is_right_or_refused(name, reduction):
    """Hessian-vector products through every loss (and a layer in front of it) equal the brute-force reference's, or
    the once_differentiable error is raised; never a silently wrong second derivative."""
    loss = _randomise(_build(name, reduction=reduction).double().eval())
    g = _gen(4)
    x = torch.randn(7, D, generator=g, dtype=torch.float64, requires_grad=True)
    lin = torch.nn.Linear(D, D).double()
    t = torch.randint(V, (7,), generator=g)
    smp = _sample_for(loss, t)
    params = [x, lin.weight] + _params(loss)
    vs = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    up = torch.randn(7, generator=g, dtype=torch.float64)

    def hvp(fn):
        out = fn(lin(x))
        out = out if reduction == "mean" else (out * up).sum()
        gs = torch.autograd.grad(out, params, create_graph=True, allow_unused=True)
        dot = sum((gr * v).sum() for gr, v in zip(gs, vs) if gr is not None)
        hv = torch.autograd.grad(dot, params, allow_unused=True)
        return [torch.zeros_like(p) if x is None else x for p, x in zip(params, hv)]

    try:
        got = hvp(lambda h: loss(h, t, sample=smp))
    except RuntimeError as err:
        assert "once_differentiable" in str(err), err  # the clear error, never a silent constant
        return

    def ref(h):
        rows = ref_rows(name, loss, h, t, smp)
        return rows.mean() if reduction == "mean" else rows

    for a, b in zip(got, hvp(ref)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cls", [NCELoss, NegativeSamplingLoss])
def test_double_backward_with_sparse_row_gradients(cls):
    """Row gathering with sparse gradients is differentiable twice: Hessian-vector products equal the dense ones."""
    g = _gen(5)
    loss = _randomise(cls(V, D, num_sampled=6, sparse=True, generator=g, reduction="sum").double())
    dense = cls(V, D, num_sampled=6, sparse=False, reduction="sum", weight=_copy(loss.weight),
                bias=_copy(loss.bias)).double()
    h = torch.randn(5, D, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(V, (5,), generator=g)
    smp = loss.sample(t.view(-1, 1))
    v_h, v_w = torch.randn(5, D, generator=g, dtype=torch.float64), torch.randn(V, D, generator=g, dtype=torch.float64)

    def hvp(fn):
        gh, gw = torch.autograd.grad(fn(h, t, sample=smp), [h, fn.weight], create_graph=True)
        gw = gw.to_dense() if gw.is_sparse else gw
        return [x.to_dense() if x.is_sparse else x
                for x in torch.autograd.grad((gh * v_h).sum() + (gw * v_w).sum(), [h, fn.weight])]

    for a, b in zip(hvp(loss), hvp(dense)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ 3. unique="multiplicity" with label smoothing


@pytest.mark.parametrize("eps", [0.1, 0.5])
@pytest.mark.parametrize("n_true", [1, 2])
def test_multiplicity_dedup_with_label_smoothing_equals_with_replacement(eps, n_true):
    """Deduplicating the draws (ids + counts) leaves the label-smoothed sampled softmax unchanged, gradients too."""
    g = _gen(6)
    h = torch.randn(9, D, generator=g, dtype=torch.float64)
    t = torch.stack([torch.randperm(V, generator=g)[:n_true] for _ in range(9)])  # (N, T)
    t[2, -1] = -100 if n_true > 1 else t[2, -1]
    draws = torch.randint(8, (30,), generator=g)  # many duplicates
    draws[0] = t[0, 0]  # and an accidental hit
    lq = torch.rand(V, generator=g, dtype=torch.float64).log()
    full_sample = CandidateSample(draws, lq[t.clamp_min(0)], lq[draws])
    uniq, counts = torch.unique(draws, return_counts=True)
    dedup = CandidateSample(uniq, lq[t.clamp_min(0)], lq[uniq], counts.double())
    loss = _randomise(SampledSoftmaxLoss(V, D, label_smoothing=eps, reduction="none").double())
    results = []
    for smp in (dedup, full_sample):
        hg = h.clone().requires_grad_()
        rows = loss(hg, t, sample=smp)
        up = torch.linspace(0.5, 1.5, 9, dtype=torch.float64)
        grads = torch.autograd.grad((rows * up).sum(), [hg, loss.weight, loss.bias])
        results.append((rows, *grads))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **F64)


def test_multiplicity_sampler_with_label_smoothing_is_the_with_replacement_estimator():
    """The same draws from a sampler, with unique="multiplicity" and without: one estimator."""
    counts = torch.arange(V, 0, -1, dtype=torch.float64) ** 2
    t = torch.randint(V, (6,), generator=_gen(7))
    h = torch.randn(6, D, generator=_gen(8), dtype=torch.float64)
    out = []
    for unique in (False, "multiplicity"):
        sampler = UnigramSampler.from_counts(counts, unique=unique, probs_dtype=torch.float64)
        loss = SampledSoftmaxLoss(V, D, sampler=sampler, num_sampled=25, label_smoothing=0.1, generator=_gen(9),
                                  reduction="sum")
        _randomise(loss.double())
        out.append(loss(h, t))
    torch.testing.assert_close(out[0], out[1], **F64)


# ------------------------------------------------------------------ 4. empty batches


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("batch", [(0,), (3, 0)])
def test_empty_batch_gives_zero_loss_and_zero_grads(name, reduction, batch):
    loss = _build(name, reduction=reduction)
    h = torch.randn(*batch, D, requires_grad=True)
    t = torch.zeros(batch, dtype=torch.long)
    out = loss(h, t)
    assert out.shape == (() if reduction != "none" else batch)
    assert out.dtype == torch.float32 and (out == 0).all()
    out.sum().backward()
    assert h.grad is not None and h.grad.shape == h.shape
    for p in loss.parameters():
        assert p.grad is None or not (p.grad.to_dense() if p.grad.is_sparse else p.grad).any()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_empty_batch_exact_nll_topk_logits(name):
    loss = _build(name)
    h = torch.randn(0, D)
    assert loss.exact_nll(h, torch.zeros(0, dtype=torch.long)).shape == (0,)
    assert loss.exact_nll(torch.randn(2, 0, D), torch.zeros(2, 0, 3, dtype=torch.long)).shape == (2, 0, 3)
    ids, probs = loss.predict_topk(h, 3)
    assert ids.shape == (0, 3) and probs.shape == (0, 3) and ids.dtype == torch.long
    assert loss.logits(h).shape == (0, V)


def test_empty_batch_functional():
    h = torch.randn(0, D, requires_grad=True)
    w, b = torch.randn(V, D, requires_grad=True), torch.randn(V, requires_grad=True)
    t = torch.zeros(0, dtype=torch.long)
    assert chunked_softmax_cross_entropy(h, w, b, t).shape == (0,)
    out = chunked_softmax_cross_entropy(h, w, b, t, row_weight=torch.zeros(0))
    out.backward()
    assert out.item() == 0 and not w.grad.any() and not b.grad.any()
    assert chunked_one_vs_all(h, w, b, t.view(0, 1)).shape == (0,)
    ids, probs = chunked_topk(h, w, b, 2)
    assert ids.shape == probs.shape == (0, 2)


def test_empty_sample_columns_are_the_true_columns_alone():
    """A sample with no candidate (S = 0): the softmax runs over the true classes only (loss 0 for T = 1)."""
    loss = SampledSoftmaxLoss(V, D, reduction="none")
    t = torch.tensor([1, 2])
    smp = CandidateSample(torch.zeros(0, dtype=torch.long), torch.zeros(2, 1), torch.zeros(0))
    h = torch.randn(2, D, requires_grad=True)
    out = loss(h, t, sample=smp)
    assert (out == 0).all()
    out.sum().backward()
    assert not h.grad.any()


# ------------------------------------------------------------------ 5. float64 throughout


def _f64_data(seed=10, n=9):
    g = _gen(seed)
    h = torch.randn(n, D, generator=g, dtype=torch.float64)
    w = torch.randn(V, D, generator=g, dtype=torch.float64)
    b = torch.randn(V, generator=g, dtype=torch.float64)
    t = torch.randint(V, (n,), generator=g)
    return h, w, b, t


def _grads_close(out, ref, xs_out, xs_ref):
    torch.testing.assert_close(out, ref, **F64)
    for a, r in zip(torch.autograd.grad(out.sum(), xs_out), torch.autograd.grad(ref.sum(), xs_ref)):
        torch.testing.assert_close(a.to_dense() if a.is_sparse else a, r, **F64)


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kind", ["full", "sampled_all_classes"])
def test_float64_softmax_matches_cross_entropy_to_1e12(eps, reduction, kind):
    h, w, b, t = _f64_data()
    t[[1, 5]] = -100
    if kind == "full":
        loss = FullSoftmaxLoss(V, D, label_smoothing=eps, reduction=reduction)
    else:
        loss = SampledSoftmaxLoss(V, D, sampler=AllClassesSampler(V), num_sampled=None, label_smoothing=eps,
                                  reduction=reduction)
    loss = loss.double()
    with torch.no_grad():
        loss.weight.copy_(w)
        loss.bias.copy_(b)
    hg, hr = h.clone().requires_grad_(), h.clone().requires_grad_()
    wr, br = w.clone().requires_grad_(), b.clone().requires_grad_()
    out = loss(hg, t)
    ref = F.cross_entropy(hr @ wr.T + br, t, label_smoothing=eps, reduction=reduction)
    if reduction == "none":
        ref = ref * (t >= 0)
    assert out.dtype == torch.float64
    _grads_close(out, ref, [hg, loss.weight, loss.bias], [hr, wr, br])


@pytest.mark.parametrize("name", ["sampled", "nce", "negative"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_float64_sampled_losses_with_a_given_sample_match_the_formula_to_1e12(name, reduction):
    h, w, b, t = _f64_data(seed=11)
    loss = _build(name, reduction=reduction).double()
    with torch.no_grad():
        loss.weight.copy_(w)
        if loss.bias is not None:
            loss.bias.copy_(b)
    g = _gen(12)
    shape = (9, 5) if name == "negative" else (12,)
    ids = torch.randint(V, shape, generator=g)
    ids[..., 0] = t[0] if name != "negative" else t
    smp = CandidateSample(ids, torch.randn(9, 1, generator=g, dtype=torch.float64),
                          torch.randn(shape, generator=g, dtype=torch.float64))
    hg, hr = h.clone().requires_grad_(), h.clone().requires_grad_()
    out = loss(hg, t, sample=smp)
    rows = ref_rows(name, loss, hr, t, smp)
    ref = rows.mean() if reduction == "mean" else rows.sum()
    torch.testing.assert_close(out, ref, **F64)
    g_out = torch.autograd.grad(out, [hg, loss.weight])
    g_ref = torch.autograd.grad(ref, [hr, loss.weight])
    for a, r in zip(g_out, g_ref):
        torch.testing.assert_close(a, r, **F64)


def test_float64_one_vs_all_mean_matches_bce_to_1e12():
    h, w, b, t = _f64_data(seed=13)
    loss = OneVsAllLoss(V, D).double()
    with torch.no_grad():
        loss.weight.copy_(w)
        loss.bias.copy_(b)
    hg, hr = h.clone().requires_grad_(), h.clone().requires_grad_()
    out = loss(hg, t)
    ref = F.binary_cross_entropy_with_logits(hr @ w.T + b, F.one_hot(t, V).double(), reduction="none").sum(1).mean()
    torch.testing.assert_close(out, ref, **F64)
    torch.testing.assert_close(torch.autograd.grad(out, hg)[0], torch.autograd.grad(ref, hr)[0], **F64)


@pytest.mark.parametrize("name", ["uniform", "log_uniform", "unigram", "learned_unigram", "all", "inbatch"])
def test_samplers_give_float64_log_q_when_asked(name):
    counts = torch.arange(V, 0, -1, dtype=torch.float64) ** 1.3 + 1e-3
    table = {"probs_dtype": torch.float64} if name in ("unigram", "learned_unigram", "inbatch") else {}
    sampler = build_sampler(name, V, counts=counts, **table)
    target = torch.tensor([[0, 5], [7, -100], [39, 1]])
    num = None if name in ("all", "inbatch") else 16
    smp = sampler(target, num, _gen(14), dtype=torch.float64)
    assert smp.log_q_true.dtype == smp.log_q_sampled.dtype == torch.float64
    if name in ("unigram", "learned_unigram", "inbatch"):
        assert sampler.probs.dtype == torch.float64 and sampler.cdf.dtype == torch.float64
    # exactly the float64 log expected count of the float64 distribution
    s = {"all": None, "inbatch": target.numel()}.get(name, 16)
    if name == "all":
        q = torch.full((V,), 1.0, dtype=torch.float64)
    elif name == "uniform":
        q = torch.full((V,), 16 / V, dtype=torch.float64)
    elif name == "log_uniform":
        k = torch.arange(V, dtype=torch.float64)
        q = 16 * torch.log1p(1 / (k + 1)) / math.log1p(V)
    elif name == "unigram":
        q = 16 * counts**0.75 / (counts**0.75).sum()  # from_counts' default alpha
    elif name == "learned_unigram":
        q = torch.full((V,), 16 / V, dtype=torch.float64)  # nothing learned yet (one call, table refreshed later)
    else:
        q = s * counts / counts.sum()
    valid = target >= 0
    torch.testing.assert_close(smp.log_q_true[valid], q.log()[target[valid]], rtol=1e-13, atol=1e-13)
    ids = smp.ids[smp.ids >= 0]
    torch.testing.assert_close(smp.log_q_sampled[smp.ids >= 0], q.log()[ids], rtol=1e-13, atol=1e-13)


def test_float64_tables_under_half_and_learned_refresh():
    sampler = UnigramSampler.from_counts(torch.arange(1, V + 1).double(), probs_dtype=torch.float64).half()
    assert sampler.probs.dtype == torch.float64
    learned = LearnedUnigramSampler(V, refresh_every=1, probs_dtype=torch.float64)
    learned(torch.tensor([[3, 3]]), 4, _gen(0))
    assert learned.probs.dtype == torch.float64
    torch.testing.assert_close(learned.probs, learned.counts / learned.counts.sum(), rtol=1e-15, atol=0)
    assert InBatchSampler(V, counts=torch.ones(V), probs_dtype=torch.float64).probs.dtype == torch.float64
    with pytest.raises(InputError, match="probs_dtype"):
        UnigramSampler(torch.ones(V), probs_dtype=torch.float16)


@pytest.mark.parametrize("sampler", ["log_uniform", "unigram64"])
def test_float64_loss_draws_float64_log_q_itself(sampler):
    """A float64 loss drawing its own sample uses float64 log expected counts: it equals the formula with float64
    log q on the same draws to 1e-12 (float32 log_q would be off by ~1e-7)."""
    h, w, b, t = _f64_data(seed=15)
    counts = torch.arange(V, 0, -1, dtype=torch.float64) ** 1.1
    make = {"log_uniform": lambda: LogUniformSampler(V),
            "unigram64": lambda: UnigramSampler.from_counts(counts, alpha=0.75, probs_dtype=torch.float64)}[sampler]
    loss = SampledSoftmaxLoss(V, D, sampler=make(), num_sampled=16, generator=_gen(16), reduction="sum").double()
    with torch.no_grad():
        loss.weight.copy_(w)
        loss.bias.copy_(b)
    out = loss(h, t)
    ids = make()(t.view(-1, 1), 16, _gen(16)).ids  # the same draw
    q = make()._log_prob64(torch.arange(V)) + math.log(16)  # float64 log expected counts
    smp = CandidateSample(ids, q[t].view(-1, 1), q[ids])
    torch.testing.assert_close(out, ref_rows("sampled", loss, h, t, smp).sum(), **F64)


# ------------------------------------------------------------------ 6. autocast


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("backward_inside", [False, True])
def test_cpu_autocast_bf16_computes_the_loss_in_fp32(name, backward_inside):
    loss = _randomise(_build(name).eval())
    g = _gen(17)
    x = torch.randn(10, D, generator=g)
    t = torch.randint(V, (10,), generator=g)
    smp = _sample_for(loss, t)
    lin = torch.nn.Linear(D, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = lin(x)
        assert h.dtype == torch.bfloat16
        out = loss(h, t, sample=smp)
        if backward_inside:
            out.backward()
    if not backward_inside:
        out.backward()
    assert out.dtype == torch.float32 and torch.isfinite(out)
    # the same bf16 hidden states, upcast, without autocast: the loss computes exactly that
    ref = loss(h.detach().float(), t, sample=smp)
    torch.testing.assert_close(out.detach(), ref.detach(), rtol=1e-5, atol=1e-5)
    # and the fp32 model: within what bf16 hidden states allow
    ref32 = loss(lin(x), t, sample=smp)
    torch.testing.assert_close(out.detach(), ref32.detach(), rtol=3e-2, atol=3e-2)
    for p in list(lin.parameters()) + _params(loss):
        assert p.grad is not None and p.grad.dtype == p.dtype and torch.isfinite(p.grad.to_dense()).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_cpu_autocast_bf16_exact_nll_topk_logits_in_fp32(name):
    loss = _randomise(_build(name))
    h = torch.randn(5, D, generator=_gen(18))
    t = torch.randint(V, (5,), generator=_gen(19))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll, (ids, probs), z = loss.exact_nll(h, t), loss.predict_topk(h, 3), loss.logits(h)
    assert nll.dtype == probs.dtype == z.dtype == torch.float32
    torch.testing.assert_close(nll, loss.exact_nll(h, t), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(z.detach(), loss.logits(h).detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(probs, loss.predict_topk(h, 3)[1], rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ 7. memory of the exact losses


@pytest.mark.parametrize("cls", [FullSoftmaxLoss, OneVsAllLoss])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_exact_losses_hand_their_precomputed_gradient_over_once(cls, reduction):
    """The [V, d] gradient formed in forward becomes weight.grad itself (no copy), the graph keeps no reference to it
    after backward, and a second backward through a retained graph recomputes (the same gradient, not zeros)."""
    loss = _randomise(cls(V, D, reduction=reduction).double())
    h = torch.randn(9, D, generator=_gen(20), dtype=torch.float64, requires_grad=True)
    t = torch.randint(V, (9,), generator=_gen(21))
    out = loss(h, t)
    node = out.grad_fn
    ptr = node.grads[1].data_ptr()  # the weight gradient formed in forward
    out.backward(retain_graph=True)
    assert node.grads is None  # released: the graph holds no second [V, d] buffer
    assert loss.weight.grad.data_ptr() == ptr  # handed over, not copied
    first = [p.grad.clone() for p in (h, loss.weight, loss.bias)]
    out.backward()
    for f, p in zip(first, (h, loss.weight, loss.bias)):
        torch.testing.assert_close(p.grad, 2 * f, rtol=1e-12, atol=1e-12)
