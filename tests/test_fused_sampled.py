"""The fused CPU path of the sampled losses (`functional._FusedSampledLoss`: product, removal and the loss's last
line in one reused (N, S) buffer) against the plain formula (`tail.generic` of the corrected logits), and the
buffer reuse (`functional._WORKSPACE`) under interleaved graphs, evaluation and retained graphs.

The values themselves are checked against brute-force references in test_losses.py and test_core_edge_cases.py
(which run this path); here the point is that fusion changes nothing, in float64 to rounding and in float32 within
the tolerances the unfused path has against float64.
"""

import pytest
import torch

from sampledsoftmax import CandidateSample, build_loss

V, D, N, S = 50, 6, 13, 9


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _setup(name, dtype, counts, seed=0, n_true=1, S=S):
    g = _gen(seed)
    kwargs = {"num_sampled": S, "generator": _gen(1)}
    if name == "negative":
        kwargs["shared"] = True
    if name == "inbatch":
        kwargs = {"counts": torch.arange(V, 0, -1, dtype=torch.float64)}
    loss = build_loss(name, V, D, reduction="none", **kwargs).to(dtype)
    with torch.no_grad():
        for p in loss.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
    h = torch.randn(N, D, generator=g, dtype=dtype, requires_grad=True)
    t = torch.randint(V, (N, n_true), generator=g)
    if n_true > 1:
        t[0, 1] = -100  # a padded label (ignore_index)
    if name == "inbatch":
        return loss, h, t[:, 0], None
    ids = torch.cat([t[1:4, 0], torch.randint(V, (S - 3,), generator=g)])  # three sure accidental hits
    ids[-1] = -1  # no candidate: a removed column
    smp = CandidateSample(ids, torch.randn(N, n_true, generator=g, dtype=dtype) - 2,
                          torch.randn(S, generator=g, dtype=dtype) - 2,
                          torch.randint(1, 4, (S,), generator=g).to(dtype) if counts else None)
    return loss, h, (t if n_true > 1 else t[:, 0]), smp


def _node_names(t, depth=4):
    names, frontier = set(), [t.grad_fn]
    for _ in range(depth):
        frontier = [f for node in frontier if node is not None for f, _ in node.next_functions] + frontier
        names |= {type(node).__name__ for node in frontier if node is not None}
    return names


def _per_row_and_grads(fn, loss, h, up):
    rows = fn()
    grads = torch.autograd.grad((rows * up).sum(), [h] + list(loss.parameters()))
    return rows.detach(), grads


@pytest.mark.parametrize("name", ["sampled", "nce", "negative", "inbatch"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("counts", [False, True])
@pytest.mark.parametrize("n_true", [1, 2])
def test_fused_path_equals_the_plain_formula(name, dtype, counts, n_true):
    if name == "inbatch" and (counts or n_true > 1):
        pytest.skip("in-batch candidates are the batch's targets: no multiplicities, one label")
    loss, h, t, smp = _setup(name, dtype, counts, n_true=n_true)
    up = torch.randn(N, generator=_gen(5), dtype=dtype)  # a non-uniform upstream gradient (reduction="none")
    fused = loss(h, t, sample=smp) if smp is not None else loss(h, t)
    assert "_FusedSampledLossBackward" in _node_names(fused)
    if name == "inbatch":
        loss.sampler.eval()  # the same correction on both calls
        smp = loss.sample(t.view(-1, 1), dtype)
    tt = t if t.dim() == 2 else t.view(-1, 1)
    tt = torch.where(tt == -100, -1, tt)  # the internal padding id
    got = _per_row_and_grads(lambda: loss._per_row(h, tt, smp), loss, h, up)
    want = _per_row_and_grads(lambda: loss.tail.generic(loss.corrected_logits(h, tt, smp)), loss, h, up)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(got[0], want[0], **tol)
    for a, b in zip(got[1], want[1]):
        torch.testing.assert_close(a.to_dense() if a.is_sparse else a, b.to_dense() if b.is_sparse else b, **tol)


@pytest.mark.parametrize("name", ["nce", "negative"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_logistic_tail_over_many_factors_equals_softplus(name, dtype, scale):
    """The logistic tail sums softplus as Σ max(z, 0) − log Π max(σ, 1 − σ) over 64 factors at a time (S = 150: two
    whole products and a remainder). Its loss against log(1 + e^z) summed in float64 from the same logits: float64
    to rounding, float32 within its tolerance, also with logits of magnitude ~30 (where F.softplus itself returns z
    above its threshold of 20, and most terms fall below float32's resolution next to 1); gradients as unfused."""
    loss, h, t, smp = _setup(name, dtype, counts=False, S=150)
    with torch.no_grad():
        loss.weight.mul_(scale)
    up = torch.randn(N, generator=_gen(6), dtype=dtype)
    tt = t.view(-1, 1)
    got = _per_row_and_grads(lambda: loss._per_row(h, tt, smp), loss, h, up)

    def exact():  # log(1 + e^z) as logaddexp(z, 0): no threshold, unlike F.softplus
        s = loss.corrected_logits(h, tt, smp)
        y = loss.tail.labels(s.true_removed, s.true.dtype)
        zero_t, zero_s = torch.zeros_like(s.true), torch.zeros_like(s.sampled)
        return (torch.logaddexp(s.true, zero_t) - y * s.true).sum(1) + torch.logaddexp(s.sampled, zero_s).sum(1)

    want = _per_row_and_grads(exact, loss, h, up)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(got[0], want[0], **tol)
    for a, b in zip(got[1], want[1]):
        torch.testing.assert_close(a.to_dense() if a.is_sparse else a, b.to_dense() if b.is_sparse else b, **tol)


@pytest.mark.parametrize("name", ["sampled", "nce"])
def test_fused_path_recomputes_for_a_retained_graph(name):
    loss, h, t, smp = _setup(name, torch.float64, counts=True)
    out = (loss(h, t, sample=smp) * torch.arange(N)).sum()
    first = torch.autograd.grad(out, [h, loss.weight], retain_graph=True)
    second = torch.autograd.grad(out, [h, loss.weight])
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        assert a.abs().sum() > 0


def test_reused_buffer_is_never_handed_out_while_a_graph_still_needs_it():
    """Two graphs alive at once (forward A, forward B, an evaluation, backward B, backward A) give the gradients
    each gives alone: a buffer goes back to the pool only after its backward's products."""
    a_loss, h_a, t_a, s_a = _setup("sampled", torch.float64, counts=False, seed=2)
    b_loss, h_b, t_b, s_b = _setup("nce", torch.float64, counts=False, seed=3)
    alone_a = torch.autograd.grad(a_loss(h_a, t_a, sample=s_a).sum(), [h_a, a_loss.weight])
    alone_b = torch.autograd.grad(b_loss(h_b, t_b, sample=s_b).sum(), [h_b, b_loss.weight])
    out_a = a_loss(h_a, t_a, sample=s_a).sum()
    out_b = b_loss(h_b, t_b, sample=s_b).sum()
    with torch.no_grad():
        a_loss(h_a, t_a, sample=s_a)  # an evaluation in between takes (and gives back) a buffer
    both_b = torch.autograd.grad(out_b, [h_b, b_loss.weight])
    a_loss(h_a, t_a, sample=s_a).sum().backward()  # another step of A takes the buffer B gave back
    both_a = torch.autograd.grad(out_a, [h_a, a_loss.weight])
    for x, y in zip(alone_a + alone_b, both_a + both_b):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cols", [1, 7, 1031])
def test_softmax_in_place_is_the_softmax(dtype, cols):
    """The fused path runs the CPU softmax kernel with its output on its input; it must stay row by row."""
    z = torch.randn(37, cols, generator=_gen(4), dtype=dtype) * 10
    want = torch.softmax(z, 1)
    torch.ops.aten._softmax.out(z, 1, False, out=z)
    torch.testing.assert_close(z, want, rtol=0, atol=0)


def test_workspace_keeps_the_largest_block_and_only_a_small_second_one():
    from sampledsoftmax.functional import _SECOND_BUFFER_BYTES, _Workspace

    ws = _Workspace()
    big = ws.take((_SECOND_BUFFER_BYTES // 4 + 10,), torch.float32, "cpu")  # just over the second-buffer limit
    bigger = ws.take((_SECOND_BUFFER_BYTES // 4 + 20,), torch.float32, "cpu")
    small_a, small_b = ws.take((1000,), torch.float32, "cpu"), ws.take((2000,), torch.float32, "cpu")
    ws.give(big)
    ws.give(bigger)
    assert [b.numel() for b in ws.free[(torch.float32, "cpu")]] == [bigger.numel()]  # never two big blocks
    ws.give(small_a)
    ws.give(small_b)
    assert [b.numel() for b in ws.free[(torch.float32, "cpu")]] == [bigger.numel(), 2000]
    again = ws.take((500,), torch.float32, "cpu")  # the smallest buffer that fits
    assert again.data_ptr() == small_b.data_ptr()
    ws.give(again)
    ws.give(again)  # twice: kept once
    assert len(ws.free[(torch.float32, "cpu")]) == 2
