"""The chunked exact computations against their definitions, in values and gradients, for every block layout."""

import math

import pytest
import torch
import torch.nn.functional as F

from sampledsoftmax.functional import (
    _blocks,
    chunked_one_vs_all,
    chunked_softmax_cross_entropy,
    chunked_topk,
    gather_rows,
    mask_value,
)

# budgets in MB that force: everything in one block / several row blocks / column blocks (online log-sum-exp)
V, D, N = 301, 7, 100
BUDGETS = {"one_block": 64, "row_blocks": V * 4 * 40 / 2**20, "col_blocks": 4 * 32 * 40 / 2**20}


def test_budgets_cover_the_three_layouts():
    layouts = {name: _blocks(N, V, int(mb * 2**20)) for name, mb in BUDGETS.items()}
    assert layouts["one_block"] == (N, V)
    assert layouts["row_blocks"][1] == V and layouts["row_blocks"][0] < N
    assert layouts["col_blocks"][1] < V


def _data(dtype=torch.float64, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, D, generator=g, dtype=dtype).requires_grad_()
    w = torch.randn(V, D, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(V, generator=g, dtype=dtype).requires_grad_() if bias else None
    t = torch.randint(V, (N,), generator=g)
    return h, w, b, t


def _grads(out, *xs):
    return torch.autograd.grad(out, [x for x in xs if x is not None], retain_graph=True)


@pytest.mark.parametrize("budget", list(BUDGETS))
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("bias", [True, False])
def test_softmax_ce_values_and_grads_match_cross_entropy(budget, eps, bias):
    h, w, b, t = _data(bias=bias)
    z = h @ w.T + (b if b is not None else 0)
    ref_rows = F.cross_entropy(z, t, reduction="none", label_smoothing=eps)
    rows = chunked_softmax_cross_entropy(h, w, b, t, label_smoothing=eps, memory_budget_mb=BUDGETS[budget])
    torch.testing.assert_close(rows, ref_rows, rtol=1e-10, atol=1e-10)

    # reduced path (gradients computed in forward) with arbitrary row weights
    rw = torch.rand(N, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = (ref_rows * rw).sum()
    got = chunked_softmax_cross_entropy(h, w, b, t, row_weight=rw, label_smoothing=eps, memory_budget_mb=BUDGETS[budget])
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    for g_got, g_ref in zip(_grads(got * 3.0, h, w, b), _grads(ref * 3.0, h, w, b)):
        torch.testing.assert_close(g_got, g_ref, rtol=1e-10, atol=1e-10)

    # per-row path (gradients recomputed in backward) with an arbitrary upstream gradient
    up = torch.randn(N, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    rows = chunked_softmax_cross_entropy(h, w, b, t, label_smoothing=eps, memory_budget_mb=BUDGETS[budget])
    for g_got, g_ref in zip(_grads((rows * up).sum(), h, w, b), _grads((ref_rows * up).sum(), h, w, b)):
        torch.testing.assert_close(g_got, g_ref, rtol=1e-10, atol=1e-10)


def test_softmax_ce_fp32_within_1e5_of_cross_entropy():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(64, 32, generator=g, requires_grad=True)
    w = torch.randn(5000, 32, generator=g, requires_grad=True)
    b = torch.randn(5000, generator=g, requires_grad=True)
    t = torch.randint(5000, (64,), generator=g)
    ref = F.cross_entropy(h @ w.T + b, t)
    got = chunked_softmax_cross_entropy(h, w, b, t, row_weight=torch.full((64,), 1 / 64), memory_budget_mb=0.1)
    assert abs(got.item() - ref.item()) <= 1e-5 * max(1.0, abs(ref.item()))
    for a, r in zip(_grads(got, h, w, b), _grads(ref, h, w, b)):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


def test_softmax_ce_gradcheck_float64():
    g = torch.Generator().manual_seed(4)
    h = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(11, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(11, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.tensor([0, 3, 10, 3, 7])
    rw = torch.rand(5, dtype=torch.float64, generator=g)
    tiny = 4 * 2 * 3 / 2**20  # forces column blocks of 3 classes (with 2 rows)
    for budget in (None, tiny):
        assert torch.autograd.gradcheck(
            lambda h, w, b: chunked_softmax_cross_entropy(h, w, b, t, row_weight=rw, label_smoothing=0.2, memory_budget_mb=budget),
            (h, w, b),
        )
        assert torch.autograd.gradcheck(
            lambda h, w, b: chunked_softmax_cross_entropy(h, w, b, t, memory_budget_mb=budget), (h, w, b)
        )


def test_softmax_ce_stays_finite_at_huge_logits():
    # logits of ±1e4: a naive exp() overflows; the log-sum-exp must not
    h = torch.tensor([[1.0], [-1.0]])
    w = torch.tensor([[1e4], [-1e4], [0.0]])
    t = torch.tensor([0, 2])
    rows = chunked_softmax_cross_entropy(h, w, None, t)
    torch.testing.assert_close(rows, F.cross_entropy(h @ w.T, t, reduction="none"))
    assert torch.isfinite(rows).all()


def test_worked_examples_from_the_seed():
    # one hidden unit of 1 and a weight column equal to the logits: row i's logits are [2, 1, 0.1]
    ones = torch.ones(3, 1)
    probs = torch.exp(-chunked_softmax_cross_entropy(ones, torch.tensor([[2.0], [1.0], [0.1]]), None, torch.tensor([0, 1, 2])))
    torch.testing.assert_close(probs, torch.tensor([0.6590, 0.2424, 0.0986]), atol=5e-5, rtol=0)
    # cross entropy of a predicted distribution p vs class 0 is -log p_0: feed logits log p (p sums to 1)
    ce = chunked_softmax_cross_entropy(torch.ones(1, 1), torch.tensor([[0.7], [0.2], [0.1]]).log(), None, torch.tensor([0]))
    assert round(ce.item(), 3) == 0.357
    # [0.1, 0.3, 0.7] sums to 1.1: the softmax renormalises, so CE = -log(0.1 / 1.1); the seed's 2.303 = -log 0.1
    ce = chunked_softmax_cross_entropy(torch.ones(1, 1), torch.tensor([[0.1], [0.3], [0.7]]).log(), None, torch.tensor([0]))
    assert round(ce.item() - math.log(1.1), 3) == 2.303


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_hidden_is_finite_and_close(dtype):
    h, w, b, t = _data(dtype=torch.float32, seed=5)
    rows = chunked_softmax_cross_entropy(h.detach().to(dtype).requires_grad_(), w, b, t, row_weight=torch.ones(N) / N)
    ref = F.cross_entropy(h @ w.T + b, t)
    assert torch.isfinite(rows)
    assert abs(rows.item() - ref.item()) < 0.05 * abs(ref.item())


@pytest.mark.parametrize("budget", list(BUDGETS))
def test_one_vs_all_matches_bce_sum(budget):
    h, w, b, _ = _data(seed=6)
    g = torch.Generator().manual_seed(7)
    tgt = torch.stack([torch.randperm(V, generator=g)[:3] for _ in range(N)])  # (N, 3) distinct labels per row
    tgt[0, 2] = -1  # padding
    tgt[1, :] = -1  # a row without labels: all-negative
    y = torch.zeros(N, V, dtype=torch.float64)
    for i in range(N):
        for c in tgt[i]:
            if c >= 0:
                y[i, c] = 1.0
    z = h @ w.T + b
    ref_rows = F.binary_cross_entropy_with_logits(z, y, reduction="none").sum(1)
    rows = chunked_one_vs_all(h, w, b, tgt, memory_budget_mb=BUDGETS[budget])
    torch.testing.assert_close(rows, ref_rows, rtol=1e-10, atol=1e-10)
    rw = torch.rand(N, dtype=torch.float64, generator=g)
    got = chunked_one_vs_all(h, w, b, tgt, row_weight=rw, memory_budget_mb=BUDGETS[budget])
    ref = (ref_rows * rw).sum()
    for a, r in zip(_grads(got, h, w, b), _grads(ref, h, w, b)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)
    up = torch.randn(N, dtype=torch.float64, generator=g)
    rows = chunked_one_vs_all(h, w, b, tgt, memory_budget_mb=BUDGETS[budget])
    for a, r in zip(_grads((rows * up).sum(), h, w, b), _grads((ref_rows * up).sum(), h, w, b)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("budget", list(BUDGETS))
def test_topk_matches_full_softmax(budget):
    h, w, b, _ = _data(dtype=torch.float32, seed=8)
    with torch.no_grad():
        p = torch.softmax(h @ w.T + b, 1)
    ids, probs = chunked_topk(h.detach(), w.detach(), b.detach(), 5, memory_budget_mb=BUDGETS[budget])
    ref_p, ref_i = p.topk(5, dim=1)
    assert torch.equal(ids, ref_i)
    torch.testing.assert_close(probs, ref_p, rtol=1e-5, atol=1e-7)


def test_gather_rows_sparse_grad_touches_only_gathered_rows():
    w = torch.randn(50, 4, requires_grad=True)
    b = torch.randn(50, requires_grad=True)
    ids = torch.tensor([3, 7, 3, 49])
    rows, brows = gather_rows(ids, w, b, sparse=True)
    (rows.sum(1) * torch.arange(4.0) + brows).sum().backward()
    assert w.grad.is_sparse and b.grad.is_sparse
    dense_w = torch.zeros(50, 4)
    dense_w[3] += 0 + 2
    dense_w[7] += 1
    dense_w[49] += 3
    torch.testing.assert_close(w.grad.to_dense(), dense_w)
    assert set(w.grad.coalesce().indices()[0].tolist()) == {3, 7, 49}
    dense_b = torch.zeros(50)
    dense_b[3], dense_b[7], dense_b[49] = 2.0, 1.0, 1.0
    torch.testing.assert_close(b.grad.to_dense(), dense_b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_mask_value_is_finite_and_exp_underflows(dtype):
    m = torch.tensor(mask_value(dtype), dtype=dtype)
    assert torch.isfinite(m) and torch.isfinite(m - 100) and torch.isfinite(m * 1.5)
    assert torch.exp(m.float() - 50).item() == 0.0


@pytest.mark.parametrize("eps", [0.0, 0.15])
@pytest.mark.parametrize("with_counts", [False, True])
def test_candidate_softmax_matches_log_softmax_of_masked_logits_and_gradchecks(eps, with_counts):
    from sampledsoftmax.functional import Removed, SampledLogits, candidate_softmax_cross_entropy

    g = torch.Generator().manual_seed(9)
    n, t_, s_ = 6, 2, 5
    true = torch.randn(n, t_, dtype=torch.float64, generator=g, requires_grad=True)
    samp = torch.randn(n, s_, dtype=torch.float64, generator=g, requires_grad=True)
    true_removed = torch.zeros(n, t_, dtype=torch.bool)
    true_removed[0, 1] = True
    samp_removed = torch.rand(n, s_, generator=g) < 0.3
    counts = torch.randint(1, 4, (s_,), generator=g).double() if with_counts else None
    neg = mask_value(torch.float64)

    def build(a, b):  # as sampled_logits hands them over: removed entries at the finite mask value
        return SampledLogits(a.masked_fill(true_removed, neg), b.masked_fill(samp_removed, neg), true_removed,
                             Removed(dense=samp_removed), counts)

    sl = build(true, samp)
    got = candidate_softmax_cross_entropy(sl, eps)
    # reference: TF layout, log-multiplicity added, smoothing over the non-removed draws (a column drawn m times
    # is m draws: it gets m times the smoothing mass, each draw at its own log-probability, as without dedup)
    log_mult_s = counts.log() if with_counts else torch.zeros(s_, dtype=torch.float64)
    log_mult = torch.cat([torch.zeros(n, t_, dtype=torch.float64), log_mult_s.expand(n, s_)], 1)
    z = torch.cat([true, samp], 1) + log_mult
    removed = torch.cat([true_removed, samp_removed], 1)
    z = z.masked_fill(removed, -math.inf)
    keep = (~removed).double() * log_mult.exp()  # draws per column
    y = torch.cat([sl.labels, torch.zeros(n, s_, dtype=torch.float64)], 1)
    y = (1 - eps) * y + eps * keep / keep.sum(1, keepdim=True)
    ref = -(y * (z.log_softmax(1) - log_mult)).masked_fill(removed, 0).sum(1)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda a, b: candidate_softmax_cross_entropy(build(a, b), eps), (true, samp),
    )


def test_shared_hits_by_binary_search_equals_broadcast_compare():
    from sampledsoftmax.functional import _shared_hits

    g = torch.Generator().manual_seed(10)
    ids = torch.randint(12, (40,), generator=g)  # many duplicates
    ids[3] = -1  # no candidate
    target = torch.randint(12, (25, 3), generator=g)
    target[0] = -1  # padding row
    target[1, 2] = -1
    ref = (ids.view(1, -1, 1) == target.unsqueeze(1)).any(-1) & (ids >= 0)  # (-1 padding vs -1 id excluded)
    rows, cols = _shared_hits(ids, target)
    got = torch.zeros_like(ref)
    got[rows, cols] = True
    pairs = ((ids.view(1, -1, 1) == target.unsqueeze(1)) & (ids.view(1, -1, 1) >= 0)).sum()  # (row, label, col)
    assert torch.equal(got, ref) and len(rows) == int(pairs)
    assert not got[0].any()


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_softmax_ce_over_many_cache_tiles_matches_cross_entropy(monkeypatch, eps):
    import sampledsoftmax.functional as fn

    monkeypatch.setattr(fn, "_TILE_BYTES", 1)  # the minimum tile width (256 classes): V=1000 -> 4 tiles, last partial
    g = torch.Generator().manual_seed(11)
    h = torch.randn(40, 5, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(1000, 5, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(1000, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.randint(1000, (40,), generator=g)
    t[:4] = torch.tensor([0, 255, 256, 999])  # targets on tile edges
    rw = torch.rand(40, dtype=torch.float64, generator=g)
    ref_rows = F.cross_entropy(h @ w.T + b, t, reduction="none", label_smoothing=eps)
    for budget in (64, 1000 * 8 * 20 / 2**20):  # one block of rows / blocks of 20 rows
        rows = chunked_softmax_cross_entropy(h, w, b, t, label_smoothing=eps, memory_budget_mb=budget)
        torch.testing.assert_close(rows, ref_rows, rtol=1e-10, atol=1e-10)
        got = chunked_softmax_cross_entropy(h, w, b, t, row_weight=rw, label_smoothing=eps, memory_budget_mb=budget)
        for a, r in zip(_grads(got, h, w, b), _grads((ref_rows * rw).sum(), h, w, b)):
            torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)
        up = torch.randn(40, dtype=torch.float64, generator=g)
        for a, r in zip(_grads((rows * up).sum(), h, w, b), _grads((ref_rows * up).sum(), h, w, b)):
            torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)


def _tied_data(dtype, bias, seed):
    """Integer-valued hidden states, table and bias: every logit is an exact small integer in any summation order,
    so equal logits are equal in floating point and ties are plentiful (values in [-2, 2], d = 7)."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randint(-2, 3, (N, D), generator=g).to(dtype)
    w = torch.randint(-1, 2, (V, D), generator=g).to(dtype)
    b = torch.randint(-1, 2, (V,), generator=g).to(dtype) if bias else None
    t = torch.randint(V, (N,), generator=g)
    t[:3] = torch.tensor([0, V - 1, 37])  # the first and last column, and one inside a column block
    return h, w, b, t


@pytest.mark.parametrize("budget", list(BUDGETS))
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nll_and_rank_count_greater_and_tied_logits_as_the_full_logits_do(budget, bias, dtype):
    from sampledsoftmax.functional import chunked_nll_and_rank

    h, w, b, t = _tied_data(dtype, bias, seed=3)
    z = (h @ w.T + (b if b is not None else 0)).double()  # (N, V) exact integers
    zt = z.gather(1, t[:, None])  # (N, 1)
    ref_greater = (z > zt).sum(1)  # #{c : z_c > z_t}
    ref_ties = (z == zt).sum(1) - 1  # #{c != t : z_c == z_t}
    ref_nll = z.logsumexp(1) - zt[:, 0]
    nll, greater, ties = chunked_nll_and_rank(h, w, b, t, memory_budget_mb=BUDGETS[budget])
    assert greater.dtype == ties.dtype == torch.long
    assert torch.equal(greater, ref_greater) and torch.equal(ties, ref_ties)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(nll.double(), ref_nll, rtol=tol, atol=tol)
    assert (ref_ties > 0).sum() > N // 2 and (ref_greater > 0).any() and (ref_greater == 0).any()  # not vacuous


def test_nll_and_rank_of_a_zero_table_ties_every_class():
    from sampledsoftmax.functional import chunked_nll_and_rank

    h, _, _, t = _data(dtype=torch.float32, seed=4)
    nll, greater, ties = chunked_nll_and_rank(h.detach(), torch.zeros(V, D), torch.zeros(V), t,
                                              memory_budget_mb=BUDGETS["col_blocks"])
    assert torch.equal(greater, torch.zeros(N, dtype=torch.long))
    assert torch.equal(ties, torch.full((N,), V - 1))
    torch.testing.assert_close(nll, torch.full((N,), math.log(V)))


def test_expected_topk_hit_is_the_mean_over_the_targets_places_among_its_ties():
    """Ties broken uniformly at random: the target takes each of the places g, g+1, ..., g+e (0-based) with
    probability 1/(e+1), and is a top-k hit at place j iff j < k."""
    from sampledsoftmax.functional import expected_topk_hit

    grid = [(g, e, k) for g in range(7) for e in range(6) for k in range(1, 9)]
    greater = torch.tensor([g for g, _, _ in grid])
    ties = torch.tensor([e for _, e, _ in grid])
    for k in range(1, 9):
        got = expected_topk_hit(greater, ties, k)
        want = torch.tensor([sum(g + j < k for j in range(e + 1)) / (e + 1) for g, e, _ in grid], dtype=torch.float64)
        assert got.dtype == torch.float64
        assert torch.equal(got, want) or torch.allclose(got, want, rtol=0, atol=1e-15)


def _shared_sample(n, t_, s_, v, g, dtype=torch.float64, invalid=True):
    from sampledsoftmax.samplers import CandidateSample

    target = torch.randint(v, (n, t_), generator=g)
    target[0, -1] = -1  # a padded label
    ids = torch.cat([target[1:4, 0], torch.randint(v, (s_ - 3,), generator=g)])  # (S,) three sure hits
    if invalid:
        ids[-1] = -1  # no candidate: a whole removed column
    return target, CandidateSample(ids, torch.randn(n, t_, generator=g, dtype=dtype),
                                   torch.randn(s_, generator=g, dtype=dtype), None)


@pytest.mark.parametrize("remove_hits", [True, False])
@pytest.mark.parametrize("invalid", [True, False])
def test_sampled_block_passes_no_gradient_through_removed_entries(remove_hits, invalid):
    """The one-node CPU product (_SampledBlock) gives what addmm + masked_fill give, in values and in the gradients of
    h, w and b under an upstream gradient that is NOT zero at the removed entries (a user's own loss on s.sampled)."""
    from sampledsoftmax.functional import sampled_logits

    g = torch.Generator().manual_seed(12)
    n, t_, s_, v, d = 9, 2, 11, 30, 4
    h, w, b = (torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True) for shape in ((n, d), (v, d), (v,)))
    target, sample = _shared_sample(n, t_, s_, v, g, invalid=invalid)
    s = sampled_logits(h, w, b, target, sample, remove_accidental_hits=remove_hits)
    assert s.sampled.grad_fn.name().startswith("_SampledBlock")
    # the reference, from the definition: removed = id < 0, or (remove_hits) id equal to one of the row's labels
    ids = sample.ids
    removed = (ids < 0).expand(n, s_)
    if remove_hits:
        removed = removed | ((ids.view(1, -1, 1) == target.unsqueeze(1)).any(-1) & (ids >= 0))
    assert bool(removed[:, -1].all()) == invalid and bool(removed[1:4, :3].diagonal().all()) == remove_hits
    ref = (h @ w[ids.clamp_min(0)].T + b[ids.clamp_min(0)] - sample.log_q_sampled).masked_fill(removed, mask_value(torch.float64))
    torch.testing.assert_close(s.sampled, ref, rtol=1e-12, atol=1e-12)
    up = torch.randn(n, s_, generator=g, dtype=torch.float64)  # nonzero everywhere, removed entries included
    got = torch.autograd.grad((s.sampled * up).sum(), (h, w, b))
    want = torch.autograd.grad((ref * up).sum(), (h, w, b))
    for a, r in zip(got, want):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)


def test_candidate_softmax_hands_its_gradient_over_once_and_recomputes_for_a_retained_graph():
    from sampledsoftmax.functional import candidate_softmax_cross_entropy, sampled_logits

    g = torch.Generator().manual_seed(13)
    n, v, d = 9, 30, 4
    h, w, b = (torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True) for shape in ((n, d), (v, d), (v,)))
    target, sample = _shared_sample(n, 1, 11, v, g)
    out = (candidate_softmax_cross_entropy(sampled_logits(h, w, b, target, sample)) * torch.arange(n)).sum()
    node = out.grad_fn.next_functions[0][0].next_functions[0][0]
    assert type(node).__name__ == "_CandidateSoftmaxCEBackward" and node.grads is not None
    first = torch.autograd.grad(out, (h, w, b), retain_graph=True)
    assert node.grads is None  # handed over: the graph keeps no (N, S) gradient after the first backward
    second = torch.autograd.grad(out, (h, w, b))
    for a, r in zip(first, second):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)
    assert any(bool(x.abs().sum() > 0) for x in first)


@pytest.mark.parametrize("in_place", [True, False])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_softmax_ce_tiles_with_and_without_the_in_place_softmax(monkeypatch, in_place, eps):
    """Both ways a tile is normalised (the CPU's in-place softmax, exp(z − max) elsewhere) give F.cross_entropy's
    values and gradients, over several tiles."""
    import sampledsoftmax.functional as fn

    monkeypatch.setattr(fn, "_TILE_BYTES", 1)  # 256-class tiles: V=700 -> 3 tiles, the last partial
    monkeypatch.setattr(fn, "_softmax_in_place_ok", lambda z: in_place)
    g = torch.Generator().manual_seed(14)
    h = torch.randn(30, 5, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(700, 5, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(700, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.randint(700, (30,), generator=g)
    rw = torch.rand(30, dtype=torch.float64, generator=g)
    ref = (F.cross_entropy(h @ w.T + b, t, reduction="none", label_smoothing=eps) * rw).sum()
    got = chunked_softmax_cross_entropy(h, w, b, t, row_weight=rw, label_smoothing=eps)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    for a, r in zip(_grads(got, h, w, b), _grads(ref, h, w, b)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("in_place", [True, False])
def test_evaluation_over_many_tiles_matches_the_full_logits(monkeypatch, in_place):
    """Exact NLL, rank counts and top-k over 256-class tiles (the last partial), targets on tile edges, ties
    included, with and without the in-place per-tile softmax: the same as on the full (N, V) logits."""
    import sampledsoftmax.functional as fn
    from sampledsoftmax.functional import chunked_nll_and_rank

    monkeypatch.setattr(fn, "_TILE_BYTES", 1)
    monkeypatch.setattr(fn, "_softmax_in_place_ok", lambda z: in_place)
    g = torch.Generator().manual_seed(15)
    h = torch.randint(-2, 3, (40, 3), generator=g).double()  # integer entries: exact logits, real ties
    w = torch.randint(-2, 3, (700, 3), generator=g).double()
    b = torch.randint(-2, 3, (700,), generator=g).double()
    t = torch.randint(700, (40,), generator=g)
    t[:5] = torch.tensor([0, 255, 256, 511, 699])
    z = h @ w.T + b
    nll, greater, ties = chunked_nll_and_rank(h, w, b, t)
    zt = z.gather(1, t[:, None])
    others = torch.ones_like(z, dtype=torch.bool).scatter_(1, t[:, None], False)
    torch.testing.assert_close(nll, torch.logsumexp(z, 1) - zt[:, 0], rtol=1e-12, atol=1e-12)
    assert torch.equal(greater, ((z > zt) & others).sum(1)) and torch.equal(ties, ((z == zt) & others).sum(1))
    hc, wc, bc = (torch.randn(*shape, generator=g, dtype=torch.float64) for shape in ((40, 3), (700, 3), (700,)))
    ids, probs = chunked_topk(hc, wc, bc, 7)  # continuous entries: no ties among the top k
    ref_p, ref_i = torch.softmax(hc @ wc.T + bc, 1).topk(7, dim=1)
    assert torch.equal(ids, ref_i)
    torch.testing.assert_close(probs, ref_p, rtol=1e-12, atol=1e-12)
