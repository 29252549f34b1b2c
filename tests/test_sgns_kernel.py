"""The compiled SGNS step (embeddings/sgns_kernel.py) against word2vec's per-pair rule written out in float64, its
in-kernel noise against the loss's sampler, and its determinism.

Statistical tests reject at p = 1e-6 (chi-square with the Wilson–Hilferty quantile, as test_samplers.py); every
stream is seeded, so a run is reproducible.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

from sampledsoftmax.embeddings import sgns_kernel as sk  # noqa: E402
from sampledsoftmax.embeddings.fused import fused_sgns_step  # noqa: E402
from sampledsoftmax.embeddings.model import SkipGram  # noqa: E402
from sampledsoftmax.errors import InputError  # noqa: E402
from sampledsoftmax.losses import NegativeSamplingLoss  # noqa: E402
from sampledsoftmax.samplers import LearnedUnigramSampler, LogUniformSampler, UniformSampler, UnigramSampler  # noqa

V, D, N, K = 50, 8, 30, 3
ROOT = Path(__file__).resolve().parents[1]


def _chi2_quantile(df: int) -> float:
    """Wilson–Hilferty upper 1e-6 quantile of chi-square(df)."""
    z = 4.753424308822899
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def assert_multinomial(ids: np.ndarray, probs: np.ndarray) -> None:
    """Chi-square goodness of fit of the draws `ids` to `probs` (classes of probability 0 must never appear)."""
    observed = np.bincount(ids.reshape(-1), minlength=len(probs)).astype(np.float64)
    assert observed[probs == 0].sum() == 0, "a class with probability 0 was drawn"
    keep = probs > 0
    expected = observed.sum() * probs[keep] / probs[keep].sum()
    assert expected.min() >= 5, "test set-up: too few expected counts"
    stat = float(((observed[keep] - expected) ** 2 / expected).sum())
    assert stat < _chi2_quantile(int(keep.sum()) - 1), stat


def _counts(v: int = V) -> torch.Tensor:
    return torch.tensor([1000.0 * 0.93 ** i for i in range(v)], dtype=torch.float64)  # Zipf-like, 1000 .. ~30


def _tables(bias: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    w_in = rng.normal(0, 0.4, (V, D)).astype(np.float32)
    w_out = rng.normal(0, 0.4, (V, D)).astype(np.float32)
    b = rng.normal(0, 0.5, V).astype(np.float32) if bias else None
    return w_in, w_out, b


def _batch(seed: int = 1, n: int = N):
    """Pairs with repeated centers and contexts, a center equal to its context, contexts among frequent words."""
    rng = np.random.default_rng(seed)
    centers = rng.integers(0, 12, n)  # (N,) 12 words: rows repeat
    contexts = rng.integers(0, 4, n)  # (N,) frequent words: they collide with the negatives
    centers[3] = contexts[3] = 2  # a center equal to its context
    centers[7], contexts[7] = contexts[5], centers[5]  # a pair and its mirror
    return centers, contexts


def _negatives(contexts, seed: int = 2, k: int = K):
    """Given negatives: frequent ids (collisions and a negative repeated within a pair) and a few -1 (none)."""
    rng = np.random.default_rng(seed)
    negs = rng.integers(0, 6, (len(contexts), k))  # (N, K)
    negs[0] = contexts[0]  # every negative of pair 0 collides
    negs[1, :2] = 9  # twice the same negative in one pair
    negs[2, 1] = -1
    return negs


def reference_update(w_in, w_out, bias, centers, contexts, negs, lr_start, lr_end, collisions):
    """word2vec's rule, pair by pair, in float64, from the formulas: for pair i with h = w_in[c_i] and the outputs
    (context, label 1) then each kept negative (label 0), in order, against the current weights:
    z = h·w_out[o] + b[o], g = η_i (label − σ(z)), neu1e += g w_out[o], w_out[o] += g h, b[o] += g;
    then w_in[c_i] += neu1e. η_i = lr_start + (lr_end − lr_start) i / N. Returns the tables and the summed loss."""
    w_in, w_out = w_in.astype(np.float64), w_out.astype(np.float64)
    b = None if bias is None else bias.astype(np.float64)
    n, total = len(centers), 0.0
    for i in range(n):
        c, t = int(centers[i]), int(contexts[i])
        eta = lr_start + (lr_end - lr_start) * i / n
        h = w_in[c].copy()
        neu1e = np.zeros_like(h)
        outs = [(t, 1.0)] + [(int(o), 0.0) for o in negs[i]
                             if o >= 0 and not (collisions != "keep" and int(o) == t)]
        for o, label in outs:
            z = float(h @ w_out[o]) + (0.0 if b is None else float(b[o]))
            total += math.log1p(math.exp(-z)) if label else math.log1p(math.exp(z))  # -log σ(±z)
            g = eta * (label - 1.0 / (1.0 + math.exp(-z)))
            neu1e += g * w_out[o]
            w_out[o] += g * h
            if b is not None:
                b[o] += g
        w_in[c] += neu1e
    return w_in, w_out, b, total


def _assert_tables_close(got, want, before):
    for g, w, b0 in zip(got, want, before):
        if g is None:
            continue
        assert np.abs(w - b0).max() > 1e-2  # the step moves the table: the comparison means something
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ the update rule


@pytest.mark.parametrize("collisions", ["skip", "keep", "resample"])
@pytest.mark.parametrize("bias", [False, True])
def test_update_equals_the_per_pair_formula_given_the_negatives(collisions, bias):
    w_in, w_out, b = _tables(bias)
    centers, contexts = _batch()
    negs = _negatives(contexts)
    assert (negs == contexts[:, None]).sum() > 3 and len(np.unique(centers)) < N  # collisions and repeated rows
    want_in, want_out, want_b, want_loss = reference_update(w_in, w_out, b, centers, contexts, negs, 0.9, 0.3,
                                                            collisions)
    before = (w_in.copy(), w_out.copy(), None if b is None else b.copy())
    loss = sk.sgns_update(w_in, w_out, b, centers, contexts, lr_start=0.9, lr_end=0.3, negatives=negs,
                          collisions=collisions)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    _assert_tables_close((w_in, w_out, b), (want_in, want_out, want_b), before)


@pytest.mark.parametrize("collisions", ["skip", "keep", "resample"])
@pytest.mark.parametrize("bias", [False, True])
def test_in_kernel_draws_are_the_drawn_negatives_and_follow_the_formula(collisions, bias):
    noise = sk.NoiseTable.from_sampler(UnigramSampler.from_counts(_counts()))
    centers, contexts = _batch()
    negs = noise.draw_negatives(contexts, K, collisions, seed=5, step=11)  # (N, K)
    tables = [_tables(bias) for _ in range(2)]
    before = tuple(None if t is None else t.copy() for t in tables[0])
    loss_drawn = sk.sgns_update(*tables[0], centers, contexts, lr_start=0.8, lr_end=0.2, noise=noise,
                                num_negatives=K, collisions=collisions, seed=5, step=11)
    loss_given = sk.sgns_update(*tables[1], centers, contexts, lr_start=0.8, lr_end=0.2, negatives=negs,
                                collisions=collisions)
    assert loss_drawn == loss_given
    for a, b in zip(*tables):
        assert a is None or np.array_equal(a, b)  # bit-identical: the same negatives in the same order
    want = reference_update(*before, centers, contexts, negs, 0.8, 0.2, collisions)
    _assert_tables_close(tables[0], want[:3], before)
    assert loss_drawn == pytest.approx(want[3], rel=1e-5)


def test_compute_loss_off_changes_no_update():
    centers, contexts = _batch()
    negs = _negatives(contexts)
    a, b = _tables(True), _tables(True)
    assert math.isnan(sk.sgns_update(*a, centers, contexts, lr_start=0.5, negatives=negs, compute_loss=False))
    sk.sgns_update(*b, centers, contexts, lr_start=0.5, negatives=negs)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_torch_tensors_are_updated_in_place():
    w_in, w_out, b = (torch.from_numpy(t) for t in _tables(True))
    w_in.requires_grad_(True)  # a Parameter-like table: the kernel works on its data
    centers, contexts = _batch()
    ref = [t.detach().clone().numpy() for t in (w_in, w_out, b)]
    negs = _negatives(contexts)
    sk.sgns_update(w_in, w_out, b, torch.from_numpy(centers), torch.from_numpy(contexts), lr_start=0.5,
                   negatives=negs)
    want = reference_update(*ref, centers, contexts, negs, 0.5, 0.5, "skip")
    _assert_tables_close([t.detach().numpy() for t in (w_in, w_out, b)], want[:3], ref)


def test_bad_inputs_are_input_errors():
    w_in, w_out, b = _tables(True)
    centers, contexts = _batch()
    negs = _negatives(contexts)
    with pytest.raises(InputError, match="C-contiguous"):
        sk.sgns_update(np.asfortranarray(w_in), w_out, b, centers, contexts, lr_start=0.1, negatives=negs)
    with pytest.raises(InputError, match="float32"):
        sk.sgns_update(w_in.astype(np.float64), w_out, b, centers, contexts, lr_start=0.1, negatives=negs)
    with pytest.raises(InputError, match="contexts must lie"):
        sk.sgns_update(w_in, w_out, b, centers, contexts + V, lr_start=0.1, negatives=negs)
    with pytest.raises(InputError, match="exactly one"):
        sk.sgns_update(w_in, w_out, b, centers, contexts, lr_start=0.1)
    with pytest.raises(InputError, match="collisions"):
        sk.sgns_update(w_in, w_out, b, centers, contexts, lr_start=0.1, negatives=negs, collisions="drop")


# ------------------------------------------------------------------------------------------------ the noise


def test_lookup_is_the_samplers_inverse_cdf_rule():
    sampler = UnigramSampler.from_counts(torch.cat([_counts(), torch.zeros(3), _counts(7)]))  # zero-weight classes
    noise = sk.NoiseTable.from_sampler(sampler)
    cdf = sampler.cdf.numpy()
    # random u, every cdf value, and the largest double below each: the boundaries where the rule matters
    u = np.concatenate([np.random.default_rng(0).random(20000), cdf[:-1], np.nextafter(cdf[:-1], 0), [0.0]])
    u = np.floor(u * 2.0**53) / 2.0**53  # 53-bit uniforms, as both draw
    want = torch.searchsorted(sampler.cdf, torch.from_numpy(u), right=True).clamp_(max=len(cdf) - 1).numpy()
    assert np.array_equal(noise.lookup(u), want)


@pytest.mark.parametrize("make", [lambda: UnigramSampler.from_counts(torch.cat([_counts(), torch.zeros(2)])),
                                  lambda: UniformSampler(V), lambda: LogUniformSampler(V)],
                         ids=["unigram", "uniform", "log_uniform"])
def test_in_kernel_draws_follow_the_samplers_distribution(make):
    sampler = make()
    noise = sk.NoiseTable.from_sampler(sampler)
    probs = sampler.log_prob(torch.arange(sampler.num_classes)).exp().double().numpy()  # (V,)
    np.testing.assert_allclose(noise.probs, probs, rtol=1e-5, atol=1e-12)
    contexts = np.full(40000, sampler.num_classes - 1)  # a rare context: "keep" draws are i.i.d. from q
    negs = noise.draw_negatives(contexts, 5, "keep", seed=3, step=0)
    assert_multinomial(negs, probs)
    torch_draws = sampler.draw(200000, torch.Generator().manual_seed(0)).numpy()  # the sampler's own, for scale
    assert_multinomial(torch_draws, probs)


def test_resample_removes_collisions_and_draws_from_the_rest():
    sampler = UnigramSampler.from_counts(_counts())
    noise = sk.NoiseTable.from_sampler(sampler)
    probs = sampler.probs.double().numpy()
    contexts = np.zeros(40000, np.int64)  # the most frequent class: ~7% of draws collide
    skip = noise.draw_negatives(contexts, 5, "skip", seed=1)
    assert 0.5 * probs[0] < (skip == -1).mean() < 2 * probs[0]  # skip: a collision is dropped
    assert not (skip == 0).any()
    res = noise.draw_negatives(contexts, 5, "resample", seed=1)
    assert (res >= 1).all()  # every collision redrawn
    rest = probs.copy()
    rest[0] = 0.0
    assert_multinomial(res, rest)  # q conditioned on "not the context"
    # a class that is (almost) all the mass: after 64 rounds the collision is skipped, as the loss's mask does
    heavy = sk.NoiseTable.from_cdf(np.array([1.0 - 1e-12, 1.0]))
    assert (heavy.draw_negatives(np.zeros(10, np.int64), 3, "resample") == -1).all()


def test_draws_depend_on_seed_step_and_pair_only():
    noise = sk.NoiseTable.from_sampler(UnigramSampler.from_counts(_counts()))
    contexts = np.random.default_rng(0).integers(0, V, 1000)
    one = noise.draw_negatives(contexts, 5, "resample", seed=7, step=3, threads=1)
    two = noise.draw_negatives(contexts, 5, "resample", seed=7, step=3, threads=2)
    assert np.array_equal(one, two)
    assert np.array_equal(noise.draw_negatives(contexts[:500], 5, "resample", seed=7, step=3), one[:500])
    assert not np.array_equal(noise.draw_negatives(contexts, 5, "resample", seed=7, step=4), one)
    assert not np.array_equal(noise.draw_negatives(contexts, 5, "resample", seed=8, step=3), one)
    # inside the update too: at rate 0 the tables stay put and the loss is a function of the draws alone
    w_in, w_out, b = _tables(True)
    centers = np.random.default_rng(1).integers(0, V, 1000)
    loss = {t: sk.sgns_update(w_in, w_out, b, centers, contexts, lr_start=0.0, noise=noise, collisions="resample",
                              seed=7, step=3, threads=t) for t in (1, 2)}
    assert loss[2] == pytest.approx(loss[1], rel=1e-12)
    given = sk.sgns_update(w_in, w_out, b, centers, contexts, lr_start=0.0, negatives=one, collisions="resample")
    assert given == pytest.approx(loss[1], rel=1e-12)


def test_unsupported_samplers_are_refused():
    with pytest.raises(InputError, match="LearnedUnigramSampler"):
        sk.NoiseTable.from_sampler(LearnedUnigramSampler(V))
    with pytest.raises(InputError, match="unique"):
        sk.NoiseTable.from_sampler(UnigramSampler.from_counts(_counts(), unique="multiplicity"))


# ------------------------------------------------------------------------------------------------ threads


def test_deterministic_mode_is_bit_identical_run_to_run():
    noise = sk.NoiseTable.from_sampler(UnigramSampler.from_counts(_counts()))
    rng = np.random.default_rng(0)
    centers, contexts = rng.integers(0, V, 5000), rng.integers(0, V, 5000)
    runs = []
    for threads, deterministic in ((2, True), (2, True), (1, False), (1, False)):
        w = _tables(True)
        loss = sk.sgns_update(*w, centers, contexts, lr_start=0.05, lr_end=0.01, noise=noise, seed=1, step=2,
                              threads=threads, deterministic=deterministic)
        runs.append((loss, w))
    for loss, w in runs[1:]:
        assert loss == runs[0][0]
        assert all(np.array_equal(a, b) for a, b in zip(w, runs[0][1]))


def test_hogwild_threads_compute_the_same_step_up_to_races():
    noise = sk.NoiseTable.from_sampler(UnigramSampler.from_counts(_counts()))
    rng = np.random.default_rng(0)
    centers, contexts = rng.integers(0, V, 4000), rng.integers(0, V, 4000)
    runs = {}
    for threads in (1, 2):
        w = _tables(False)
        runs[threads] = sk.sgns_update(*w, centers, contexts, lr_start=5e-4, noise=noise, threads=threads), w
    assert runs[2][0] == pytest.approx(runs[1][0], rel=1e-2)
    w0 = _tables(False)
    for a, b, before in zip(runs[1][1][:2], runs[2][1][:2], w0[:2]):
        # the chunks reorder the pairs (O(lr^2) apart) and a Hogwild race may lose one pair's write to a row (O(lr)
        # on that row: an element-wise max bound failed ~1 in 5 runs): bound the whole table's difference instead;
        # a thread that skipped or repeated its chunk would be ~50 % off (threads see each other's stale rows)
        assert np.linalg.norm(b - a) < 0.1 * np.linalg.norm(a - before)  # measured 0.01-0.04


# ------------------------------------------------------------------------------------------------ the trainer's view


def _model_and_loss(collisions="skip", bias=False):
    torch.manual_seed(0)
    model = SkipGram(V, D)
    loss_fn = NegativeSamplingLoss(V, D, num_sampled=K, sampler=UnigramSampler.from_counts(_counts()),
                                   collisions=collisions, bias=bias, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.embed.weight.normal_(0, 0.4)
        loss_fn.weight.normal_(0, 0.4)
        if bias:
            loss_fn.bias.normal_(0, 0.5)
    return model, loss_fn


@pytest.mark.parametrize("bias", [False, True])
def test_a_small_step_agrees_with_the_fused_torch_step_to_first_order(bias):
    """Per-pair (sequential) and batched (pre-step weights) SGD differ only at O(lr²): same negatives, tiny lr."""
    model, loss_fn = _model_and_loss("skip", bias)
    model_f, loss_f = copy.deepcopy((model, loss_fn))
    centers, contexts = (torch.from_numpy(a) for a in _batch())
    negs = copy.deepcopy(loss_fn).sample(contexts.view(-1, 1)).ids  # (N, K): what the fused step will draw
    before = [t.detach().clone() for t in (model.embed.weight, loss_fn.weight)]
    lr, scale = 1e-3, N  # η = lr per pair
    want = fused_sgns_step(model_f, loss_f, centers, contexts, lr, scale)
    total = sk.sgns_update(model.embed.weight, loss_fn.weight, loss_fn.bias, centers, contexts, lr_start=lr,
                           negatives=negs)
    assert total / N == pytest.approx(float(want), rel=1e-3)
    for got, ref, b0 in zip((model.embed.weight, loss_fn.weight), (model_f.embed.weight, loss_f.weight), before):
        delta_got, delta_ref = (got - b0).detach(), (ref - b0).detach()
        assert delta_ref.abs().max() > 1e-4
        assert (delta_got - delta_ref).abs().max() < 0.02 * delta_ref.abs().max()


def test_kernel_sgns_step_is_the_update_at_the_trainers_rate():
    model, loss_fn = _model_and_loss("resample", bias=True)
    assert sk.kernel_supports(model, loss_fn) == (True, "")
    noise = sk.NoiseTable.from_sampler(loss_fn.sampler)
    copy_tables = [t.detach().clone().numpy() for t in (model.embed.weight, loss_fn.weight, loss_fn.bias)]
    gen_state = loss_fn.generator.get_state()
    centers, contexts = (torch.from_numpy(a) for a in _batch())
    got = sk.kernel_sgns_step(model, loss_fn, centers, contexts, 0.05, 64, noise, lr_end=0.04, seed=3, step=9)
    total = sk.sgns_update(*copy_tables, centers, contexts, lr_start=0.05 * 64 / N, lr_end=0.04 * 64 / N,
                           noise=noise, num_negatives=K, collisions="resample", seed=3, step=9)
    assert got.shape == () and got.dtype == torch.float32
    assert float(got) == pytest.approx(total / N, rel=1e-6)
    for t, ref in zip((model.embed.weight, loss_fn.weight, loss_fn.bias), copy_tables):
        assert np.array_equal(t.detach().numpy(), ref)
    assert torch.equal(loss_fn.generator.get_state(), gen_state)  # the loss's generator is not consumed


def test_kernel_supports_says_why_not():
    model, loss_fn = _model_and_loss()
    shared = NegativeSamplingLoss(V, D, num_sampled=K, shared=True, sampler=UnigramSampler.from_counts(_counts()))
    assert sk.kernel_supports(model, shared)[0] is False
    learned = NegativeSamplingLoss(V, D, num_sampled=K, sampler=LearnedUnigramSampler(V))
    ok, why = sk.kernel_supports(model, learned)
    assert not ok and "LearnedUnigramSampler" in why
    assert sk.kernel_supports(model.double(), loss_fn)[0] is False


# ------------------------------------------------------------------------------------------------ without numba


def test_without_numba_the_module_imports_and_says_why():
    code = textwrap.dedent("""
        import sys
        sys.modules["numba"] = None  # any `import numba` now fails, as on a machine without it
        from sampledsoftmax.embeddings import sgns_kernel as sk
        from sampledsoftmax.errors import InputError
        ok, why = sk.available()
        assert ok is False and "numba is not installed" in why, why
        try:
            sk.sgns_update(None, None, None, [0], [0], lr_start=0.1, negatives=[[0]])
        except InputError as err:
            assert "numba is not installed" in str(err)
        else:
            raise AssertionError("no error")
        print("ok", why)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_importing_the_module_does_not_import_numba():
    code = "import sys; import sampledsoftmax.embeddings.sgns_kernel; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
