"""Every loss against a brute-force reference written from its formula (values and gradients), plus the interface
contract shared by all losses: reduction/ignore_index parity, exact evaluation, tied weights, sparse gradients,
half precision and clear errors."""

import pytest
import torch
import torch.nn.functional as F

from sampledsoftmax import (
    LOSSES,
    AdaptiveSoftmaxLoss,
    AllClassesSampler,
    CandidateSample,
    FullSoftmaxLoss,
    InBatchSoftmaxLoss,
    InputError,
    LogUniformSampler,
    NCELoss,
    NegativeSamplingLoss,
    OneVsAllLoss,
    SampledSoftmaxLoss,
    UniformSampler,
    UnigramSampler,
    build_loss,
)

V, D = 40, 6


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _sample(ids, log_q_true, log_q_sampled, counts=None):
    return CandidateSample(ids=ids, log_q_true=log_q_true, log_q_sampled=log_q_sampled, counts=counts)


def _setup(seed=0, n=9, n_true=1, dtype=torch.float64, s=12, per_example=False):
    g = _gen(seed)
    h = torch.randn(n, D, generator=g, dtype=dtype)
    w = torch.randn(V, D, generator=g, dtype=dtype)
    b = torch.randn(V, generator=g, dtype=dtype)
    t = torch.stack([torch.randperm(V, generator=g)[:n_true] for _ in range(n)])  # (n, T) distinct per row
    ids = torch.randint(V, (n, s) if per_example else (s,), generator=g)
    ids[..., 0] = t[0, 0] if not per_example else t[:, 0]  # force accidental hits
    lqt = torch.randn(n, n_true, generator=g, dtype=dtype)
    lqs = torch.randn(ids.shape, generator=g, dtype=dtype)
    return h, w, b, t, _sample(ids, lqt, lqs)


def _with_params(loss, w, b):
    loss = loss.to(w.dtype)
    with torch.no_grad():
        loss.weight.copy_(w)
        if loss.bias is not None:
            loss.bias.copy_(b)
    return loss


# ------------------------------------------------------------------ brute-force references (loops over rows)


def ref_sampled_softmax(h, w, b, t, smp, remove_hits=True, subtract_log_q=True):
    out = []
    for i in range(h.shape[0]):
        zs, ys = [], []
        T = t.shape[1]
        for j in range(T):
            zs.append(h[i] @ w[t[i, j]] + b[t[i, j]] - (smp.log_q_true[i, j] if subtract_log_q else 0))
            ys.append(1.0 / T)
        ids = smp.ids[i] if smp.ids.dim() == 2 else smp.ids
        lqs = smp.log_q_sampled[i] if smp.ids.dim() == 2 else smp.log_q_sampled
        for j, c in enumerate(ids.tolist()):
            if remove_hits and c in t[i].tolist():
                continue  # removed: the column does not exist
            zs.append(h[i] @ w[c] + b[c] - (lqs[j] if subtract_log_q else 0))
            ys.append(0.0)
        z = torch.stack(zs)
        lse = torch.logsumexp(z, 0)
        out.append(-sum(y * (zz - lse) for y, zz in zip(ys, z)))
    return torch.stack(out)


def _log_sigmoid(x):
    return -torch.log1p(torch.exp(-x)) if x > 0 else x - torch.log1p(torch.exp(x))


def ref_nce(h, w, b, t, smp, remove_hits=False):
    out = []
    T = t.shape[1]
    for i in range(h.shape[0]):
        tot = 0
        for j in range(T):
            z = h[i] @ w[t[i, j]] + b[t[i, j]] - smp.log_q_true[i, j]
            y = 1.0 / T
            tot = tot - y * _log_sigmoid(z) - (1 - y) * _log_sigmoid(-z)
        for j, c in enumerate(smp.ids.tolist()):
            if remove_hits and c in t[i].tolist():
                continue
            z = h[i] @ w[c] + b[c] - smp.log_q_sampled[j]
            tot = tot - _log_sigmoid(-z)
        out.append(tot)
    return torch.stack(out)


def ref_negative_sampling(h, w, t, ids, skip_hits=True):
    out = []
    for i in range(h.shape[0]):
        tot = -sum(_log_sigmoid(h[i] @ w[c]) for c in t[i].tolist())
        row = ids[i] if ids.dim() == 2 else ids
        for c in row.tolist():
            if skip_hits and c in t[i].tolist():
                continue
            tot = tot - _log_sigmoid(-(h[i] @ w[c]))
        out.append(tot)
    return torch.stack(out)


def ref_inbatch(h, w, b, t, log_q):
    """Row i: softmax over the batch's targets, its own positive once, every duplicate of it removed."""
    out = []
    n = h.shape[0]
    for i in range(n):
        zs = [h[i] @ w[t[i]] + b[t[i]] - log_q[i]]
        for j in range(n):
            if t[j] == t[i]:
                continue
            zs.append(h[i] @ w[t[j]] + b[t[j]] - log_q[j])
        z = torch.stack(zs)
        out.append(torch.logsumexp(z, 0) - z[0])
    return torch.stack(out)


# ------------------------------------------------------------------ values and gradients vs the references


def _check_grads(loss_val, ref_val, params_got, params_ref, tol=1e-9):
    torch.testing.assert_close(loss_val, ref_val, rtol=tol, atol=tol)
    g_got = torch.autograd.grad(loss_val, params_got)
    g_ref = torch.autograd.grad(ref_val, params_ref)
    for a, r in zip(g_got, g_ref):
        torch.testing.assert_close(a.to_dense() if a.is_sparse else a, r, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("n_true", [1, 3])
@pytest.mark.parametrize("remove_hits", [True, False])
@pytest.mark.parametrize("sparse", [False, True])
def test_sampled_softmax_matches_reference(n_true, remove_hits, sparse):
    h, w, b, t, smp = _setup(seed=1, n_true=n_true)
    loss = _with_params(SampledSoftmaxLoss(V, D, remove_accidental_hits=remove_hits, sparse=sparse, reduction="sum"), w, b).double()
    hg = h.clone().requires_grad_()
    got = loss(hg, t if n_true > 1 else t[:, 0], sample=smp)
    wr, br, hr = w.clone().requires_grad_(), b.clone().requires_grad_(), h.clone().requires_grad_()
    ref = ref_sampled_softmax(hr, wr, br, t, smp, remove_hits=remove_hits).sum()
    _check_grads(got, ref, [hg, loss.weight, loss.bias], [hr, wr, br])


@pytest.mark.parametrize("per_example", [False, True])
def test_sampled_softmax_per_example_candidates(per_example):
    h, w, b, t, smp = _setup(seed=2, per_example=per_example)
    loss = _with_params(SampledSoftmaxLoss(V, D, reduction="none"), w, b).double()
    got = loss(h, t[:, 0], sample=smp)
    torch.testing.assert_close(got, ref_sampled_softmax(h, w, b, t, smp), rtol=1e-10, atol=1e-10)


def test_sampled_softmax_without_log_q():
    h, w, b, t, smp = _setup(seed=3)
    loss = _with_params(SampledSoftmaxLoss(V, D, subtract_log_q=False, reduction="none"), w, b).double()
    torch.testing.assert_close(loss(h, t[:, 0], sample=smp), ref_sampled_softmax(h, w, b, t, smp, subtract_log_q=False))


@pytest.mark.parametrize("n_true", [1, 2])
@pytest.mark.parametrize("remove_hits", [False, True])
def test_nce_matches_reference(n_true, remove_hits):
    h, w, b, t, smp = _setup(seed=4, n_true=n_true)
    loss = _with_params(NCELoss(V, D, remove_accidental_hits=remove_hits, reduction="sum"), w, b).double()
    hg = h.clone().requires_grad_()
    got = loss(hg, t if n_true > 1 else t[:, 0], sample=smp)
    wr, br, hr = w.clone().requires_grad_(), b.clone().requires_grad_(), h.clone().requires_grad_()
    ref = ref_nce(hr, wr, br, t, smp, remove_hits=remove_hits).sum()
    _check_grads(got, ref, [hg, loss.weight, loss.bias], [hr, wr, br])


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("collisions", ["skip", "keep"])
def test_negative_sampling_matches_reference(shared, collisions):
    h, w, _, t, smp = _setup(seed=5, per_example=not shared, s=5)
    loss = NegativeSamplingLoss(V, D, shared=shared, collisions=collisions, reduction="sum").double()
    assert loss.bias is None  # word2vec has no output bias
    with torch.no_grad():
        loss.weight.copy_(w)
    hg = h.clone().requires_grad_()
    got = loss(hg, t[:, 0], sample=smp)
    wr, hr = w.clone().requires_grad_(), h.clone().requires_grad_()
    ref = ref_negative_sampling(hr, wr, t, smp.ids, skip_hits=collisions == "skip").sum()
    _check_grads(got, ref, [hg, loss.weight], [hr, wr])


def test_negative_sampling_resample_draws_no_collisions():
    # a sampler concentrated on 3 classes makes collisions with the targets frequent
    sampler = UnigramSampler(torch.tensor([5.0, 5.0, 5.0] + [0.0] * (V - 3)))
    loss = NegativeSamplingLoss(V, D, sampler=sampler, num_sampled=4, collisions="resample", generator=_gen(0))
    t = torch.tensor([[0], [1], [2], [1]])
    smp = loss.sample(t)
    assert smp.ids.shape == (4, 4)
    assert not (smp.ids == t).any()
    assert set(smp.ids[0].tolist()) <= {1, 2}


def test_inbatch_matches_reference_and_masks_duplicates_by_id():
    g = _gen(6)
    n = 10
    h, w, b = torch.randn(n, D, generator=g, dtype=torch.float64), torch.randn(V, D, generator=g, dtype=torch.float64), torch.randn(V, generator=g, dtype=torch.float64)
    t = torch.tensor([3, 5, 3, 7, 9, 5, 3, 1, 0, 2])  # duplicates of 3 and 5
    counts = torch.arange(1, V + 1, dtype=torch.float64)
    loss = _with_params(InBatchSoftmaxLoss(V, D, counts=counts, reduction="none"), w, b).double()
    got = loss(h, t)
    p = counts / counts.sum()
    ref = ref_inbatch(h, w, b, t, torch.log(n * p[t]))
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)  # the sampler's probs table is fp32 by default
    # without the correction the loss is the plain in-batch softmax (log N cancels, log p does not)
    plain = _with_params(InBatchSoftmaxLoss(V, D, counts=counts, subtract_log_q=False, reduction="none"), w, b).double()
    torch.testing.assert_close(plain(h, t), ref_inbatch(h, w, b, t, torch.zeros(n, dtype=torch.float64)))


def test_inbatch_streaming_estimate_runs_and_updates_only_in_training():
    loss = InBatchSoftmaxLoss(V, D)
    t = torch.randint(V, (16,), generator=_gen(7))
    h = torch.randn(16, D)
    state0 = {k: v.clone() for k, v in loss.sampler.state_dict().items()}
    loss.eval()
    loss(h, t)
    assert all(torch.equal(state0[k], v) for k, v in loss.sampler.state_dict().items())
    loss.train()
    val = loss(h, t)
    assert torch.isfinite(val)
    assert any(not torch.equal(state0[k], v) for k, v in loss.sampler.state_dict().items())


# ------------------------------------------------------------------ the oracle and exact equivalences


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_classes_sampler_equals_full_softmax_exactly(eps, reduction):
    g = _gen(8)
    h = torch.randn(7, 3, D, generator=g)
    t = torch.randint(V, (7, 3), generator=g)
    t[0, 0] = -100
    full = FullSoftmaxLoss(V, D, label_smoothing=eps, reduction=reduction)
    samp = SampledSoftmaxLoss(V, D, sampler=AllClassesSampler(V), num_sampled=None, label_smoothing=eps, reduction=reduction,
                              weight=full.weight, bias=full.bias)
    h1, h2 = h.clone().requires_grad_(), h.clone().requires_grad_()
    a, b_ = full(h1, t), samp(h2, t)
    torch.testing.assert_close(a, b_, rtol=1e-6, atol=1e-6)
    ga = torch.autograd.grad(a.sum(), [h1, full.weight, full.bias])
    gb = torch.autograd.grad(b_.sum(), [h2, full.weight, full.bias])
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_all_classes_oracle_float64_is_exact_to_rounding():
    h, w, b, t, _ = _setup(seed=9)
    full = _with_params(FullSoftmaxLoss(V, D, reduction="none"), w, b).double()
    samp = SampledSoftmaxLoss(V, D, sampler=AllClassesSampler(V), num_sampled=None, weight=full.weight, bias=full.bias, reduction="none")
    torch.testing.assert_close(samp(h, t[:, 0]), full(h, t[:, 0]), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("cls", [SampledSoftmaxLoss, NCELoss])
def test_multiplicity_dedup_equals_with_replacement(cls):
    """A deduplicated sample with multiplicities gives exactly the with-replacement estimator."""
    h, w, b, t, _ = _setup(seed=10)
    g = _gen(11)
    draws = torch.randint(8, (30,), generator=g)  # many duplicates
    lq = torch.rand(V, generator=g, dtype=torch.float64).log()
    full_sample = _sample(draws, lq[t], lq[draws])
    uniq, counts = torch.unique(draws, return_counts=True)
    dedup = _sample(uniq, lq[t], lq[uniq], counts.double())
    loss = _with_params(cls(V, D, reduction="none"), w, b).double()
    torch.testing.assert_close(loss(h, t[:, 0], sample=dedup), loss(h, t[:, 0], sample=full_sample), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ the interface shared by every loss


def _build(name, **kw):
    extra = {} if not LOSSES[name].is_sampled or name == "inbatch" else {"num_sampled": 8, "generator": _gen(0)}
    return build_loss(name, V, D, **extra, **kw)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("ignore_index", [-100, 0])
def test_reduction_and_ignore_index_follow_cross_entropy(name, ignore_index):
    g = _gen(12)
    h = torch.randn(4, 5, D, generator=g)
    t = torch.randint(1, V, (4, 5), generator=g)
    t[0, :2] = ignore_index
    t[3, 4] = ignore_index
    valid = t != ignore_index
    per = {}
    for red in ("none", "sum", "mean"):
        torch.manual_seed(0)  # the same initial output layer for every reduction
        loss = _build(name, reduction=red, ignore_index=ignore_index)
        if loss.weight is not None:  # (the adaptive softmax has no [V, d] table)
            with torch.no_grad():
                loss.weight.copy_(torch.randn(V, D, generator=_gen(14)))
        per[red] = loss(h, t)
    assert per["none"].shape == t.shape
    assert (per["none"][~valid] == 0).all()
    assert torch.isfinite(per["none"]).all()
    torch.testing.assert_close(per["sum"], per["none"].sum())
    torch.testing.assert_close(per["mean"], per["none"].sum() / valid.sum())
    if name == "full":
        logits = h.reshape(-1, D) @ torch.randn(V, D, generator=_gen(14)).T
        ref = F.cross_entropy(logits, t.reshape(-1), ignore_index=ignore_index, reduction="mean")
        torch.testing.assert_close(per["mean"], ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_ignored_gives_zero_loss_and_zero_grad(name, reduction):
    loss = _build(name, reduction=reduction)
    h = torch.randn(6, D, requires_grad=True)
    t = torch.full((6,), -100)
    out = loss(h, t)
    assert torch.isfinite(out).all() and (out == 0).all()
    out.sum().backward()
    assert torch.isfinite(h.grad).all() and (h.grad == 0).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_exact_nll_is_the_same_for_every_loss(name):
    loss = _build(name)
    g = _gen(15)
    h = torch.randn(3, 4, D, generator=g)
    t = torch.randint(V, (3, 4), generator=g)
    t[1, 1] = -100
    nll = loss.exact_nll(h, t)
    logits = loss.logits(h).detach()
    ref = F.cross_entropy(logits.reshape(-1, V), t.reshape(-1), reduction="none").reshape(3, 4)
    assert nll.shape == t.shape
    torch.testing.assert_close(nll, ref, rtol=1e-5, atol=1e-6)
    ids, probs = loss.predict_topk(h, 3)
    ref_p, ref_i = torch.softmax(logits, -1).topk(3, -1)
    assert torch.equal(ids, ref_i)
    torch.testing.assert_close(probs, ref_p)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_forward_does_not_change_objective_in_eval(name):
    loss = _build(name)
    g = _gen(16)
    h, t = torch.randn(8, D, generator=g), torch.randint(V, (8,), generator=g)
    smp = loss.sample(t.view(-1, 1)) if loss.is_sampled else None
    if name == "inbatch":
        loss.eval()  # the streaming estimator must not move between the two calls
        smp = loss.sample(t.view(-1, 1))
        loss.train()
    a = loss(h, t, sample=smp)
    loss.eval()
    b = loss(h, t, sample=smp)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_hidden_gives_finite_loss_and_grads(name, dtype):
    loss = _build(name)
    h = (torch.randn(8, D, generator=_gen(17)) * 3).to(dtype).requires_grad_()
    t = torch.randint(V, (8,), generator=_gen(18))
    out = loss(h, t)
    assert torch.isfinite(out)
    out.backward()
    assert torch.isfinite(h.grad).all()
    assert h.grad.dtype == dtype


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_tied_weight_gets_gradients_from_both_uses(name):
    if name == "adaptive":
        with pytest.raises(InputError, match="cannot take weight="):
            _build(name, weight=torch.nn.Embedding(V, D).weight)
        return
    emb = torch.nn.Embedding(V, D)
    loss = _build(name, weight=emb.weight)
    assert loss.weight is emb.weight
    x = torch.randint(V, (10,), generator=_gen(19))
    t = torch.randint(V, (10,), generator=_gen(20))
    if loss.is_sampled:
        smp = loss.sample(t.view(-1, 1))
        loss.eval() if name == "inbatch" else None
    else:
        smp = None
    loss(emb(x), t, sample=smp).backward()
    both = emb.weight.grad.clone()
    both = both.to_dense() if both.is_sparse else both
    # the same two contributions computed separately on detached copies
    w_in = emb.weight.detach().clone().requires_grad_()
    w_out = emb.weight.detach().clone().requires_grad_()
    loss2 = _build(name, weight=w_out)
    if loss.bias is not None:
        loss2.bias = loss.bias
    loss2.eval() if name == "inbatch" else None
    loss2(F.embedding(x, w_in), t, sample=smp).backward()
    g_out = w_out.grad.to_dense() if w_out.grad.is_sparse else w_out.grad
    assert g_out.abs().sum() > 0 and w_in.grad.abs().sum() > 0
    torch.testing.assert_close(both, w_in.grad + g_out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in sorted(LOSSES) if LOSSES[n].is_sampled])
def test_sparse_gradients_touch_only_used_rows_and_equal_dense(name):
    t = torch.randint(V, (8,), generator=_gen(21))
    h = torch.randn(8, D, generator=_gen(22))
    grads = {}
    for sparse in (False, True):
        loss = _build(name, sparse=sparse, bias=True)
        torch.nn.init.normal_(loss.weight, generator=_gen(23))
        loss.eval()
        smp = loss.sample(t.view(-1, 1))
        loss(h, t, sample=smp).backward()
        grads[sparse] = (loss.weight.grad, loss.bias.grad, smp)
    wg, bg, smp = grads[True]
    assert wg.is_sparse and bg.is_sparse
    used = set(t.tolist()) | set(smp.ids.reshape(-1).tolist())
    assert set(wg.coalesce().indices()[0].tolist()) <= used
    torch.testing.assert_close(wg.to_dense(), grads[False][0])
    torch.testing.assert_close(bg.to_dense(), grads[False][1])
    # and a sparse-aware optimizer steps on it
    opt = torch.optim.SGD([p for p in (loss.weight, loss.bias)], lr=0.1)
    before = loss.weight.detach().clone()
    opt.step()
    changed = (loss.weight.detach() != before).any(1).nonzero().reshape(-1).tolist()
    assert set(changed) <= used and changed


def test_one_vs_all_module_multilabel():
    g = _gen(24)
    h = torch.randn(5, D, generator=g, dtype=torch.float64)
    t = torch.tensor([[1, 2, -100], [3, -100, -100], [-100, -100, -100], [0, 39, 7], [5, 6, 8]])
    loss = OneVsAllLoss(V, D, reduction="none").double()
    y = torch.zeros(5, V, dtype=torch.float64)
    for i, row in enumerate(t.tolist()):
        for c in row:
            if c >= 0:
                y[i, c] = 1
    ref = F.binary_cross_entropy_with_logits(loss.logits(h), y, reduction="none").sum(1)
    ref[2] = 0  # a row whose labels are all ignored is ignored
    torch.testing.assert_close(loss(h, t), ref)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("bad", [V, V + 7, -1, -5])
def test_out_of_range_target_is_a_clear_value_error(name, bad):
    loss = _build(name)
    t = torch.tensor([0, bad, 2])
    with pytest.raises(ValueError, match=rf"target contains class id {bad}; class ids must be in \[0, {V - 1}\]"):
        loss(torch.randn(3, D), t)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_mismatched_dims_name_the_argument(name):
    loss = _build(name)
    with pytest.raises(InputError, match="hidden has last dimension 5 but the loss was built with dim=6"):
        loss(torch.randn(3, 5), torch.tensor([0, 1, 2]))
    with pytest.raises(InputError, match="target has shape"):
        loss(torch.randn(3, D), torch.tensor([0, 1]))
    with pytest.raises(InputError, match="cannot take weight=" if name == "adaptive" else "weight has shape"):
        build_loss(name, V, D, weight=torch.nn.Parameter(torch.zeros(V, D + 1)))


def test_num_sampled_above_v_with_unique_sampling_is_rejected():
    with pytest.raises(InputError, match=r"num_sampled=50 exceeds num_classes=40.*\[1, 40\]"):
        SampledSoftmaxLoss(V, D, sampler=UniformSampler(V, unique=True), num_sampled=50)


def test_unknown_loss_name_suggests_the_closest():
    with pytest.raises(InputError, match='did you mean "sampled"'):
        build_loss("sampeld", V, D)


def test_sampler_by_name_and_counts():
    counts = torch.arange(V, 0, -1).double()
    loss = build_loss("sampled", V, D, sampler="unigram", counts=counts, num_sampled=16)
    assert isinstance(loss.sampler, UnigramSampler)
    assert isinstance(build_loss("nce", V, D).sampler, LogUniformSampler)


def test_reproducible_with_a_seeded_generator():
    h, t = torch.randn(8, D), torch.randint(V, (8,))
    a = SampledSoftmaxLoss(V, D, num_sampled=8, generator=_gen(1))
    b = SampledSoftmaxLoss(V, D, num_sampled=8, generator=_gen(1), weight=a.weight, bias=a.bias)
    assert torch.equal(a(h, t), b(h, t))


def test_core_import_pulls_in_nothing_beyond_torch():
    """`import sampledsoftmax` (the core) must not import YAML, TensorBoard or anything torch itself does not."""
    import subprocess
    import sys

    code = (
        "import sys, torch; before = set(sys.modules); import sampledsoftmax; "
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    new = set(eval(out))
    assert new <= {"sampledsoftmax", "difflib"}, new


def test_inbatch_rejects_a_foreign_sampler_and_num_sampled():
    with pytest.raises(InputError, match="draws its candidates from the batch"):
        InBatchSoftmaxLoss(V, D, sampler=LogUniformSampler(V))
    with pytest.raises(InputError, match="takes no num_sampled"):
        InBatchSoftmaxLoss(V, D, num_sampled=64)


def test_adaptive_softmax_matches_torch_and_adds_reduction_and_ignore_index():
    g = _gen(30)
    loss = AdaptiveSoftmaxLoss(V, 16, cutoffs=[5, 20], reduction="none")
    h = torch.randn(12, 16, generator=g)
    t = torch.randint(V, (12,), generator=g)
    t[3] = -100
    ref = loss.asm(h, t.clamp_min(0)).output  # torch's own log-prob of each target
    got = loss(h, t)
    torch.testing.assert_close(got[t >= 0], -ref[t >= 0])
    assert got[3] == 0
    # its log-probabilities are normalised, so exact_nll is its exact NLL and equals CE of its logits
    torch.testing.assert_close(loss.exact_nll(h, t), F.cross_entropy(loss.logits(h), t, reduction="none"))
    mean = AdaptiveSoftmaxLoss(V, 16, cutoffs=[5, 20])
    mean.load_state_dict(loss.state_dict())
    torch.testing.assert_close(mean(h, t), got.sum() / (t >= 0).sum())


@pytest.mark.parametrize("name", ["full", "sampled", "nce", "negative", "ova"])
def test_float64_hidden_with_a_float32_table(name):
    """Mixed precision the other way: float64 activations against the float32 table compute in float64 and equal the
    float32-hidden loss on the same sample (to float32 rounding)."""
    loss = _build(name)
    h = torch.randn(8, D, generator=_gen(21), dtype=torch.float64, requires_grad=True)
    t = torch.randint(V, (8,), generator=_gen(22))
    kw = {"sample": loss.sample(t)} if loss.is_sampled else {}
    out = loss(h, t, **kw)
    ref = loss(h.detach().float(), t, **kw)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), ref, rtol=1e-5, atol=1e-5)
    out.backward()
    assert h.grad.dtype == torch.float64 and torch.isfinite(h.grad).all()


@pytest.mark.parametrize("name", ["full", "sampled", "nce", "negative", "inbatch", "ova", "adaptive"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tied", [False, True])
def test_exact_nll_and_rank_in_one_pass_matches_the_dense_softmax(name, dtype, tied):
    """One pass over V gives the exact NLL and the target's rank, greater = #{c : z_c > z_t} and
    ties = #{c != t : z_c = z_t}, against the dense log-softmax, with column blocks forced (a tiny memory budget)
    and ignored targets. tied: integer-valued parameters and hidden states, so many logits tie exactly."""
    torch.manual_seed(0)
    V, d, n = 57, 5, 23
    kw = {"memory_budget_mb": 0.0005} if name in ("full", "ova") else {}
    if name in ("sampled", "nce", "negative"):
        kw["num_sampled"] = 4
    loss = build_loss(name, V, d, **kw).to(dtype)
    with torch.no_grad():
        for p in loss.parameters():
            p.copy_(torch.randint(-1, 2, p.shape)) if tied else p.normal_()
    h = torch.randint(-2, 3, (n, d)).to(dtype) if tied else torch.randn(n, d, dtype=dtype)
    t = torch.randint(V, (n,))
    t[3] = -100
    t[5] = 0
    nll, greater, ties = loss.exact_nll_and_rank(h, t)
    lp = loss.logits(h).double().log_softmax(-1) if name != "adaptive" else loss.logits(h).double()
    valid = t >= 0
    tc = t.clamp_min(0)
    lt = lp.gather(1, tc[:, None])
    ref_nll = -lt[:, 0] * valid
    ref_greater = (lp > lt).sum(1) * valid
    ref_ties = ((lp == lt).sum(1) - 1) * valid
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    assert nll.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.allclose(nll.double(), ref_nll, atol=tol, rtol=tol)
    assert torch.equal(greater, ref_greater) and torch.equal(ties, ref_ties)
    assert torch.equal(nll.double(), loss.exact_nll(h, t).double()) or torch.allclose(nll.double(), loss.exact_nll(h, t).double(), atol=tol, rtol=tol)
    if tied:
        assert ref_ties.sum() > 0  # the tie counts above are not vacuous
    else:
        assert ref_ties.sum() == 0
        ids, _ = loss.predict_topk(h, 10)
        hits10 = (ids == t[:, None]).any(1)
        assert torch.equal(hits10[valid], (greater < 10)[valid])  # no ties: the same top-10 accuracy as predict_topk
