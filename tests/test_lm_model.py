"""Tests for sampledsoftmax.lm: causal models, training with every loss, tied-weight gradients, LM batches.

The learning test runs a few hundred Adam steps on a stream with a known entropy (x[n+1] = x[n] + 1 or + 2 mod V,
a fair coin each step: log 2 nats per token against log V ≈ 3.9 at the start), and asks every loss to bring the
*exact* held-out NLL well below where it started. Every stream and model is seeded.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from sampledsoftmax import LOSSES, build_loss
from sampledsoftmax.errors import ConfigError, DataError
from sampledsoftmax.lm import MODELS, LMBatches, build_lm, eval_batches, sentences_to_stream
from sampledsoftmax.lm import data as lm_data
from sampledsoftmax.lm import model as lm_model

V, D = 50, 32
SKIPGRAM_LOSSES = ("full", "sampled", "nce", "negative", "inbatch")
SMALL = {"lstm": {}, "transformer": {"num_layers": 2, "num_heads": 4, "max_len": 64}}


def make_model(name: str, vocab: int = V, dim: int = D, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_lm(name, vocab, dim, **{**SMALL[name], **kw})


def coin_chain(n: int, seed: int) -> np.ndarray:
    """x[i+1] = x[i] + 1 or x[i] + 2 (mod V), a fair coin per step: entropy log 2 per token. Vectorised."""
    rng = np.random.default_rng(seed)
    steps = 1 + rng.integers(0, 2, size=n)  # (n,)
    steps[0] = int(rng.integers(V))
    return np.cumsum(steps) % V  # (n,) int64


# -- models -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("train_mode", [False, True])
def test_shapes_and_causality(name, train_mode):
    model = make_model(name).train(train_mode)
    g = torch.Generator().manual_seed(1)
    b, t_len = 3, 12
    ids = torch.randint(V, (b, t_len), generator=g)
    with torch.no_grad():
        h = model(ids)
        assert h.shape == (b, t_len, D) and h.dtype == torch.float32
        for t in (0, 4, t_len - 2):
            future = ids.clone()
            future[:, t + 1 :] = (ids[:, t + 1 :] + 1 + torch.randint(V - 1, (b, t_len - t - 1), generator=g)) % V
            assert torch.equal(model(future)[:, : t + 1], h[:, : t + 1]), f"position <= {t} saw a later token"
            present = ids.clone()
            present[:, t] = (ids[:, t] + 1) % V
            hp = model(present)
            assert torch.equal(hp[:, :t], h[:, :t])
            assert not torch.isclose(hp[:, t], h[:, t]).all(dim=-1).any(), f"position {t} ignores its own token"


def test_build_lm_errors_and_embed():
    for name in MODELS:
        m = make_model(name)
        assert isinstance(m.embed, torch.nn.Embedding) and m.embed.weight.shape == (V, D)
    with pytest.raises(ConfigError, match='did you mean "lstm"'):
        build_lm("lstn", V, D)
    with pytest.raises(ConfigError, match='did you mean "num_layers"'):
        build_lm("lstm", V, D, num_layer=2)
    with pytest.raises(ConfigError, match="num_heads"):
        build_lm("lstm", V, D, num_heads=4)  # a transformer argument: named, not a TypeError
    with pytest.raises(ConfigError, match="divisible"):
        build_lm("transformer", V, 30, num_heads=4)
    with pytest.raises(Exception, match="max_len"):
        make_model("transformer", max_len=8)(torch.zeros(1, 9, dtype=torch.long))


# -- every loss trains the LM ---------------------------------------------------------------------------------------


def loss_kwargs(name: str, seed: int) -> dict:
    kw = {"sparse": False}
    if LOSSES[name].is_sampled:
        kw["generator"] = torch.Generator().manual_seed(seed)
        if name != "inbatch":  # inbatch's candidates are the batch's own targets
            kw.update(num_sampled=V // 4, sampler="uniform")
    return kw


def heldout_nll(model, loss_fn, stream) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in eval_batches(stream, batch_size=8, seq_len=16):
            nll = loss_fn.exact_nll(model(x), y)  # (B, T), 0 where ignored
            assert torch.all(nll[y == -100] == 0)
            total, count = total + float(nll.sum()), count + int((y != -100).sum())
    model.train()
    return total / count


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("loss_name", SKIPGRAM_LOSSES)
def test_every_loss_lowers_exact_perplexity(model_name, loss_name):
    assert loss_name in LOSSES
    torch.manual_seed(0)
    model = make_model(model_name)
    loss_fn = build_loss(loss_name, V, D, **loss_kwargs(loss_name, seed=1))
    if loss_name == "nce":
        # NCE's logits learn to be self-normalised log-probabilities: start the bias at log(1/V) (the usual NCE
        # init), or Adam spends ~400 steps of lr 1e-2 walking it there, a shift the exact softmax cannot see
        with torch.no_grad():
            loss_fn.bias.fill_(-math.log(V))
    opt = torch.optim.Adam(list(model.parameters()) + list(loss_fn.parameters()), lr=1e-2)
    train, heldout = coin_chain(20_000, seed=2), coin_chain(2_000, seed=3)
    before = heldout_nll(model, loss_fn, heldout)
    assert abs(before - math.log(V)) < 0.5  # a fresh model is near uniform
    batches = LMBatches(train, batch_size=16, seq_len=16, seed=0)
    g = torch.Generator().manual_seed(4)
    step = 0
    for epoch in range(10):
        for x, y in batches.epoch_batches(epoch):
            y = y.masked_fill(torch.rand(y.shape, generator=g) < 0.1, -100)  # (B, T) some targets ignored
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step == 300:
                break
        if step == 300:
            break
    assert torch.isfinite(loss)
    after = heldout_nll(model, loss_fn, heldout)
    # entropy is log 2 ≈ 0.69; demand most of the way down from log 50 ≈ 3.9
    assert after < before - 2.0, f"{loss_name}/{model_name}: exact NLL {before:.3f} -> {after:.3f}"


# -- tied embeddings ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("loss_name", ["full", "sampled"])
def test_tied_gradient_is_input_plus_output_side(model_name, loss_name):
    model = make_model(model_name).double()
    kw = {"generator": torch.Generator(), "num_sampled": 12, "sampler": "uniform"} if loss_name == "sampled" else {}
    loss_fn = build_loss(loss_name, V, D, weight=model.embed.weight, **kw).double()
    assert loss_fn.weight is model.embed.weight
    g = torch.Generator().manual_seed(5)
    x = torch.randint(V, (4, 10), generator=g)
    y = torch.randint(V, (4, 10), generator=g)
    y[0, -3:] = -100

    def reseed():
        if loss_name == "sampled":
            loss_fn.generator.manual_seed(7)  # the same candidates in both computations

    reseed()
    loss_fn(model(x), y).backward()
    tied = model.embed.weight.grad.clone()

    w_in = model.embed.weight.detach().clone().requires_grad_()
    w_out = model.embed.weight.detach().clone().requires_grad_()
    reseed()
    hidden = functional_call(model, {"embed.weight": w_in}, (x,))
    functional_call(loss_fn, {"weight": w_out}, (hidden, y)).backward()
    assert w_in.grad.abs().sum() > 0 and w_out.grad.abs().sum() > 0
    assert not torch.allclose(w_in.grad, tied) and not torch.allclose(w_out.grad, tied)
    torch.testing.assert_close(tied, w_in.grad + w_out.grad, rtol=1e-10, atol=1e-12)


# -- data -----------------------------------------------------------------------------------------------------------


def test_sentences_to_stream_maps_breaks_only():
    ids = np.array([-1, 3, 0, -1, -1, 7, 2, 2, -1], dtype=np.int32)
    out = sentences_to_stream(ids, eos_id=8)
    assert out.dtype == np.int64 and out.shape == ids.shape
    np.testing.assert_array_equal(out[ids == -1], 8)
    np.testing.assert_array_equal(out[ids != -1], ids[ids != -1])
    assert sentences_to_stream(np.empty(0, dtype=np.int32), 8).shape == (0,)
    with pytest.raises(ValueError, match="eos_id"):
        sentences_to_stream(ids, eos_id=7)  # id 7 would collide with the eos id


def test_lm_batches_windows_shift_and_cover():
    b, t_len, n_windows = 3, 5, 13
    stream = np.arange(n_windows * (t_len + 1) + 4)  # a 4-token tail that fits no window
    batches = LMBatches(stream, batch_size=b, seq_len=t_len, seed=11)
    assert batches.num_batches() == n_windows // b  # the last partial batch is dropped
    seen = []
    for x, y in batches.epoch_batches(0):
        assert x.shape == y.shape == (b, t_len) and x.dtype == y.dtype == torch.int64
        assert torch.equal(y[:, :-1], x[:, 1:])
        rows = torch.cat([x, y[:, -1:]], 1).numpy()  # (B, T+1) the windows
        starts = rows[:, 0]
        assert np.all(starts % (t_len + 1) == 0)  # windows sit on the fixed grid: no overlap, no shift
        np.testing.assert_array_equal(rows, starts[:, None] + np.arange(t_len + 1))
        seen.extend(starts // (t_len + 1))
    assert len(seen) == len(set(seen)) == batches.num_batches() * b and max(seen) < n_windows


def _as_list(it):
    return [(x.clone(), y.clone()) for x, y in it]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def test_lm_batches_deterministic_and_resumable():
    stream = coin_chain(3000, seed=0)
    a = LMBatches(stream, batch_size=4, seq_len=7, seed=3)
    b = LMBatches(stream.copy(), batch_size=4, seq_len=7, seed=3)
    e3 = _as_list(a.epoch_batches(3))
    assert len(e3) == a.num_batches() == 3000 // 8 // 4
    assert _same(e3, _as_list(b.epoch_batches(3)))
    assert not _same(e3, _as_list(a.epoch_batches(4)))
    assert not _same(e3, _as_list(LMBatches(stream, 4, 7, seed=4).epoch_batches(3)))
    for k in (1, 5, a.num_batches() - 1, a.num_batches()):
        assert _same(_as_list(a.epoch_batches(3, start_batch=k)), e3[k:])
    assert _as_list(a.epoch_batches(3, start_batch=a.num_batches() + 2)) == []


def test_lm_batches_errors():
    with pytest.raises(DataError, match="batch_size"):
        LMBatches(np.arange(24), batch_size=5, seq_len=4, seed=0)  # 24 // 5 = 4 windows < 5
    assert LMBatches(np.arange(20), batch_size=4, seq_len=4, seed=0).num_batches() == 1
    with pytest.raises(ValueError, match="sentences_to_stream"):
        LMBatches(np.array([1, 2, -1, 3] * 10), batch_size=1, seq_len=3, seed=0)
    with pytest.raises(ConfigError, match="seq_len"):
        LMBatches(np.arange(20), batch_size=1, seq_len=0, seed=0)


@pytest.mark.parametrize("n", [2, 17, 1 + 2 * 3 * 4, 60])
def test_eval_batches_pad_and_cover_each_token_once(n):
    b, t_len = 3, 4
    stream = np.arange(100, 100 + n)
    xs, ys = zip(*eval_batches(stream, batch_size=b, seq_len=t_len))
    for x, y in zip(xs, ys):
        assert x.shape == y.shape == (b, t_len) and x.dtype == y.dtype == torch.int64
    x, y = torch.cat(xs).reshape(-1).numpy(), torch.cat(ys).reshape(-1).numpy()
    real = y != -100
    n_real = int(real.sum())
    assert n_real == n - 1 and real[:n_real].all()  # every target but the first token, padding only at the end
    np.testing.assert_array_equal(y[real], stream[1:])  # each exactly once, in order
    np.testing.assert_array_equal(x[real], stream[:-1])  # inputs are the previous tokens
    assert len(ys) == math.ceil((n - 1) / (b * t_len))
    assert list(eval_batches(stream[:1], b, t_len)) == []


def test_docstring_examples_run():
    for module in (lm_model, lm_data):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__
