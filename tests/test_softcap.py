"""Soft-capped logits y = c · tanh(z / c) (Gemma 2's final-logit soft-capping) in the exact and the sampled losses,
against brute-force references written from the formula (values and gradients, float64)."""

import math

import pytest
import torch

from sampledsoftmax import CandidateSample, FullSoftmaxLoss, InputError, NCELoss, OneVsAllLoss, SampledSoftmaxLoss

V, D, CAP = 30, 5, 2.5


def _params(seed=0, n=7, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, D, generator=g, dtype=dtype) * 2  # logits well past the cap: tanh is far from linear
    w = torch.randn(V, D, generator=g, dtype=dtype)
    b = torch.randn(V, generator=g, dtype=dtype)
    t = torch.randint(V, (n,), generator=g)
    return h, w, b, t


def _capped(x):
    return CAP * math.tanh(float(x) / CAP) if not torch.is_tensor(x) else CAP * torch.tanh(x / CAP)


def ref_exact(h, w, b, t, eps=0.0):
    out = []
    for i in range(h.shape[0]):
        y = torch.stack([_capped(h[i] @ w[j] + b[j]) for j in range(V)])
        logp = y - torch.logsumexp(y, 0)
        out.append(-(1 - eps) * logp[t[i]] - eps / V * logp.sum())
    return torch.stack(out)


def ref_sampled(h, w, b, t, ids, lqt, lqs):
    out = []
    for i in range(h.shape[0]):
        zs = [_capped(h[i] @ w[t[i]] + b[t[i]]) - lqt[i, 0]]
        zs += [_capped(h[i] @ w[c] + b[c]) - lqs[j] for j, c in enumerate(ids.tolist()) if c != int(t[i])]
        z = torch.stack(zs)
        out.append(torch.logsumexp(z, 0) - z[0])
    return torch.stack(out)


def ref_nce(h, w, b, t, ids, lqt, lqs):
    ls = torch.nn.functional.logsigmoid
    out = []
    for i in range(h.shape[0]):
        tot = -ls(_capped(h[i] @ w[t[i]] + b[t[i]]) - lqt[i, 0])
        for j, c in enumerate(ids.tolist()):
            tot = tot - ls(-(_capped(h[i] @ w[c] + b[c]) - lqs[j]))
        out.append(tot)
    return torch.stack(out)


def _loss(cls, w, b, **kw):
    loss = cls(V, D, logit_softcap=CAP, **kw).double()
    with torch.no_grad():
        loss.weight.copy_(w)
        loss.bias.copy_(b)
    return loss


def _grads(val, params):
    return torch.autograd.grad(val, params)


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("budget", [None, 0.002])  # 0.002 MB: one row per block, so the rows are chunked
def test_exact_softcapped_matches_reference(eps, budget):
    h, w, b, t = _params()
    loss = _loss(FullSoftmaxLoss, w, b, label_smoothing=eps, memory_budget_mb=budget, reduction="sum")
    hh = h.clone().requires_grad_()
    got = loss(hh, t)
    hr, wr, br = (x.clone().requires_grad_() for x in (h, w, b))
    ref = ref_exact(hr, wr, br, t, eps).sum()
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    for a, r in zip(_grads(got, [hh, loss.weight, loss.bias]), _grads(ref, [hr, wr, br])):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-10)
    # the capped loss is not the uncapped one (the test would pass vacuously with the cap ignored)
    plain = torch.nn.functional.cross_entropy(h @ w.T + b, t, reduction="sum", label_smoothing=eps)
    assert abs(float(plain) - float(got.detach())) > 0.1


def test_exact_nll_and_reduction_none_with_ignored_rows():
    h, w, b, t = _params(1)
    t[2] = -100
    loss = _loss(FullSoftmaxLoss, w, b, reduction="none", memory_budget_mb=0.002)
    hh = h.clone().requires_grad_()
    got = loss(hh, t)  # (N,)
    ref = ref_exact(h, w, b, t.clamp_min(0)) * (t >= 0)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(loss.exact_nll(h, t), ref, rtol=1e-10, atol=1e-10)
    up = torch.linspace(0.5, 2.0, h.shape[0], dtype=h.dtype)  # a non-uniform upstream gradient
    (g,) = torch.autograd.grad((got * up).sum(), hh)
    hr = h.clone().requires_grad_()
    (gr,) = torch.autograd.grad((ref_exact(hr, w, b, t.clamp_min(0)) * (t >= 0) * up).sum(), hr)
    torch.testing.assert_close(g, gr, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(loss.logits(h), _capped(h @ w.T + b))


@pytest.mark.parametrize("cls,ref", [(SampledSoftmaxLoss, ref_sampled), (NCELoss, ref_nce)])
def test_sampled_losses_cap_before_the_log_q_correction(cls, ref):
    h, w, b, t = _params(2)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(V, (9,), generator=g)
    ids[0] = t[0]  # an accidental hit (removed by sampled softmax, kept by NCE)
    lqt = torch.randn(h.shape[0], 1, generator=g, dtype=h.dtype)
    lqs = torch.randn(9, generator=g, dtype=h.dtype)
    loss = _loss(cls, w, b, reduction="sum")
    hh = h.clone().requires_grad_()
    got = loss(hh, t, sample=CandidateSample(ids, lqt, lqs, None))
    hr, wr, br = (x.clone().requires_grad_() for x in (h, w, b))
    want = ref(hr, wr, br, t, ids, lqt, lqs).sum()
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    for a, r in zip(_grads(got, [hh, loss.weight, loss.bias]), _grads(want, [hr, wr, br])):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-10)


def test_softcap_refused_where_unsupported():
    with pytest.raises(InputError, match="logit_softcap"):
        OneVsAllLoss(V, D, logit_softcap=CAP)
    with pytest.raises(InputError, match="positive"):
        FullSoftmaxLoss(V, D, logit_softcap=0.0)
    loss = FullSoftmaxLoss(V, D, logit_softcap=CAP)
    with pytest.raises(InputError, match="exact_nll_and_rank"):
        loss.exact_nll_and_rank(torch.randn(2, D), torch.tensor([0, 1]))
