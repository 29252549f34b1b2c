"""Tests for sampledsoftmax.lm.references: the compressors', unigram and Kneser–Ney bits per byte.

Kneser–Ney is checked against a brute force written plainly from the formulas with Python dicts (every held-out
position, orders 1-3, unseen contexts and unseen ids, histories across line ends or reset at eos), against a
bigram worked by hand, and for a distribution that sums to 1 over all classes in every context.
"""

from __future__ import annotations

import bz2
import doctest
import gzip
import lzma
import math
import random
from collections import defaultdict

import numpy as np
import pytest

from sampledsoftmax.lm import references
from sampledsoftmax.lm.references import compressor_bpb, kneser_ney_bpb, unigram_bpb


# ---- brute force, from the formulas -----------------------------------------------------------------------------

def brute_history(stream, t, order, eos):
    """The history tuple of position t: up to order-1 tokens back, not past the latest eos before t (kept)."""
    begin = max(0, t - (order - 1))
    if eos is not None:
        for j in range(t - 1, begin - 1, -1):
            if stream[j] == eos:
                begin = j
                break
    return tuple(stream[begin:t])


def brute_kn(train, V, order, discount=None, eos=None):
    """p(w, history) of interpolated Kneser–Ney, with plain dicts; see kneser_ney_bpb's docstring."""
    train = [int(x) for x in train]
    events = [(brute_history(train, t, order, eos), train[t]) for t in range(len(train))]
    counts = {k: defaultdict(int) for k in range(1, order + 1)}
    for h, w in events:
        if len(h) == order - 1:  # top order: raw counts
            counts[order][h + (w,)] += 1
    for k in range(1, order):
        left = defaultdict(set)  # k-gram -> the distinct ids seen right before it (within a history)
        for h, w in events:
            if len(h) >= k:
                gram = h[len(h) - k:] + (w,)  # a (k+1)-gram
                left[gram[1:]].add(gram[0])
            if len(h) == k - 1:  # no left neighbour inside the history: raw count
                counts[k][h + (w,)] += 1
        for gram, ids in left.items():
            counts[k][gram] += len(ids)
    D = {}
    for k in range(1, order + 1):
        if discount is not None:
            D[k] = discount
        else:
            n1 = sum(1 for c in counts[k].values() if c == 1)
            n2 = sum(1 for c in counts[k].values() if c == 2)
            D[k] = n1 / (n1 + 2 * n2) if n1 else 0.5

    def p(k, w, g):  # p_k(w | g), g has k-1 ids
        lower = 1.0 / V if k == 1 else p(k - 1, w, g[1:])
        total = sum(c for gram, c in counts[k].items() if gram[:-1] == g)
        if total == 0:
            return lower
        distinct = sum(1 for gram, c in counts[k].items() if gram[:-1] == g and c > 0)
        return (max(counts[k].get(g + (w,), 0) - D[k], 0) + D[k] * distinct * lower) / total

    def prob(w, history):
        return p(len(history) + 1, w, tuple(history))

    return prob, D


def brute_probs(train, held, V, order, discount=None, eos=None):
    prob, D = brute_kn(train, V, order, discount, eos)
    held = [int(x) for x in held]
    return [prob(held[t], brute_history(held, t, order, eos)) for t in range(len(held))], D


def model_probs(train, held, V, order, discount=None, eos=None):
    levels = references._fit_levels(np.asarray(train, np.int64), V, order, discount, eos)
    return 2.0 ** references._log2_probs(levels, np.asarray(held, np.int64), V, eos), [lv.discount for lv in levels]


def random_stream(n, V, seed, skew=True):
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, V + 1) if skew else np.ones(V)
    return rng.choice(V, size=n, p=weights / weights.sum())


# ---- Kneser–Ney -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("eos", [None, 0])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_kneser_ney_equals_brute_force_at_every_position(order, eos):
    V = 8
    train = random_stream(300, V - 1, seed=order)  # id V-1 never occurs in training
    held = random_stream(120, V, seed=10 + order, skew=False)
    held[[5, 50, 51]] = V - 1  # unseen ids, also as history: unseen contexts
    got, d_got = model_probs(train, held, V, order, eos=eos)
    want, d_want = brute_probs(train, held, V, order, eos=eos)
    assert d_got == pytest.approx(list(d_want.values()), rel=1e-15, abs=0)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    assert (got > 0).all()
    seen = {tuple(train[i:i + order - 1]) for i in range(len(train))}
    unseen = [t for t in range(order - 1, len(held)) if tuple(held[t - order + 1:t]) not in seen]
    if order > 1:
        assert unseen, "the data must include unseen contexts"

    nbytes = np.random.default_rng(0).integers(1, 5, size=len(held))
    out = kneser_ney_bpb(train, held, nbytes, V, order=order, eos=eos, start=2)
    bits = -sum(math.log2(q) for q in want[2:])
    assert out["bpb"] == pytest.approx(bits / nbytes[2:].sum(), rel=1e-12)
    assert out["ppl"] == pytest.approx(2 ** (bits / (len(held) - 2)), rel=1e-12)
    assert out["order"] == order and out["tokens"] == len(held) - 2 and out["seconds"] >= 0


def test_kneser_ney_with_a_given_discount_equals_brute_force():
    V = 6
    train, held = random_stream(200, V, seed=3), random_stream(80, V, seed=4)
    got, d = model_probs(train, held, V, 3, discount=0.8)
    want, _ = brute_probs(train, held, V, 3, discount=0.8)
    assert d == [0.8, 0.8, 0.8]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_kneser_ney_bigram_worked_by_hand():
    # train 0 1 0 2 0 1, D = 0.5. Bigram raw counts: 01:2 10:1 02:1 20:1. Unigram: continuation counts
    # N1+(.0) = |{1, 2}| = 2, N1+(.1) = N1+(.2) = 1, plus the stream's first token 0 (no left neighbour) raw: 3 1 1.
    # p1(0) = (2.5 + 0.5 * 3 / 3) / 5 = 0.6, p1(1) = p1(2) = (0.5 + 0.5) / 5 = 0.2.
    # p(1 | 0) = (1.5 + 0.5 * 2 * 0.2) / 3 = 1.7 / 3;  p(2 | 1) = (0 + 0.5 * 1 * 0.2) / 1 = 0.1.
    out = kneser_ney_bpb(np.array([0, 1, 0, 2, 0, 1]), np.array([0, 1, 2]), np.array([1, 1, 1]), 3,
                         order=2, discount=0.5)
    assert out["bpb"] == pytest.approx((-math.log2(1.7 / 3) - math.log2(0.1)) / 2, rel=1e-14)
    # default discounts: bigram count-of-counts n1 = 3, n2 = 1 -> 3/5; unigram n1 = 2, n2 = 0 -> 1
    assert kneser_ney_bpb(np.array([0, 1, 0, 2, 0, 1]), np.array([0, 1]), np.array([1, 1]), 3,
                          order=2)["discounts"] == [1.0, 0.6]


@pytest.mark.parametrize("order", [1, 2, 3])
def test_kneser_ney_distribution_sums_to_one_in_every_context(order):
    V = 7
    train = random_stream(250, V - 1, seed=20 + order)
    levels = references._fit_levels(train.astype(np.int64), V, order, None, None)
    contexts = [tuple(train[:order - 1]), tuple(train[100:100 + order - 1]), (V - 1,) * (order - 1),
                (0, V - 1)[:order - 1], (V - 1, 0)[:order - 1]]
    for g in contexts:
        # blocks g + (w,) of length `order`: each w's history is exactly g
        held = np.array([x for w in range(V) for x in g + (w,)], np.int64)
        p = 2.0 ** references._log2_probs(levels, held, V, None)[order - 1::order]  # (V,)
        assert len(p) == V and (p > 0).all()
        assert p.sum() == pytest.approx(1.0, abs=1e-12), g
    # a short history at the start of a stream is the lower order's distribution, which sums to 1 as well
    p = [2.0 ** references._log2_probs(levels, np.array([w]), V, None)[0] for w in range(V)]
    assert sum(p) == pytest.approx(1.0, abs=1e-12)


def test_kneser_ney_learns_a_deterministic_stream():
    V = 50
    cycle = np.random.default_rng(1).permutation(V)
    train, held = np.tile(cycle, 40), np.tile(cycle, 4)
    nbytes = np.full(len(held), 5)
    kn = kneser_ney_bpb(train, held, nbytes, V)
    uni = unigram_bpb(np.bincount(train, minlength=V), held, nbytes)
    assert kn["bpb"] < 0.05 * uni  # the next id is certain given the last one
    assert uni == pytest.approx(math.log2(V) / 5, rel=1e-3)  # flat counts: log2 V bits per 5-byte token


def test_kneser_ney_refuses_what_it_cannot_do():
    ids, nb = np.array([0, 1, 2]), np.ones(3)
    with pytest.raises(ValueError, match="at most 2097152 classes"):
        kneser_ney_bpb(ids, ids, nb, (1 << 21) + 1, order=3)
    kneser_ney_bpb(ids, ids, nb, 1 << 21, order=3)  # the limit itself fits: (2^21)^3 = 2^63
    with pytest.raises(ValueError, match="ids must lie in"):
        kneser_ney_bpb(ids, np.array([0, 3]), np.ones(2), 3)
    with pytest.raises(ValueError, match="discount"):
        kneser_ney_bpb(ids, ids, nb, 3, discount=1.5)
    with pytest.raises(ValueError, match="shape of heldout"):
        kneser_ney_bpb(ids, ids, np.ones(2), 3)
    with pytest.raises(ValueError, match="start"):
        kneser_ney_bpb(ids, ids, nb, 3, start=3)
    with pytest.raises(ValueError, match="sums to 0"):
        kneser_ney_bpb(ids, ids, np.array([1, 0, 0]), 3)
    with pytest.raises(ValueError, match="eos"):
        kneser_ney_bpb(ids, ids, nb, 3, eos=3)


def test_kneser_ney_cannot_beat_the_entropy_of_iid_data():
    """Gibbs: no normalised model beats the entropy of the source on its samples (up to sampling noise, ~0.03
    bits per token here); on i.i.d. data an n-gram model gains nothing over the unigram either."""
    V = 20_000
    weights = 1.0 / np.arange(1, V + 1)
    weights /= weights.sum()
    entropy = float(-(weights * np.log2(weights)).sum())  # 10.13 bits per token
    train, held = random_stream(200_000, V, seed=5), random_stream(20_000, V, seed=6)
    nbytes = np.full(len(held), 6)
    kn = kneser_ney_bpb(train, held, nbytes, V)["bpb"] * 6  # bits per token
    uni = unigram_bpb(np.bincount(train, minlength=V), held, nbytes) * 6
    assert entropy - 0.15 < kn < 1.05 * uni, (entropy, kn, uni)
    assert entropy - 0.15 < uni


# ---- unigram ----------------------------------------------------------------------------------------------------

def test_unigram_equals_brute_force():
    V = 9
    train = random_stream(100, V - 2, seed=7)
    counts = np.bincount(train, minlength=V)
    held = random_stream(40, V, seed=8, skew=False)
    nbytes = np.random.default_rng(1).integers(1, 7, size=len(held))
    N = len(train)
    bits = sum(-math.log2((sum(1 for x in train if x == w) + 1) / (N + V)) for w in held[3:])
    assert unigram_bpb(counts, held, nbytes, start=3) == pytest.approx(bits / nbytes[3:].sum(), rel=1e-13)
    bits0 = sum(-math.log2((counts[w] + 1) / (N + V)) for w in held)
    assert unigram_bpb(counts, held, nbytes, start=0) == pytest.approx(bits0 / nbytes.sum(), rel=1e-13)
    with pytest.raises(ValueError, match="ids must lie in"):
        unigram_bpb(counts[:5], held, nbytes)


# ---- compressors ------------------------------------------------------------------------------------------------

def random_lines(n, seed, alphabet="abcdefghijklmnopqrstuvwxyz "):
    rnd = random.Random(seed)
    return ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(20, 60))) for _ in range(n)]


def test_compressors_use_the_context():
    lines = random_lines(400, seed=0)  # ~16 kB: inside gzip's 32 KiB window and one bz2 block
    out = compressor_bpb(lines, lines)
    for name in ("gzip", "bz2", "xz"):
        assert out[name] < 0.5 * out[name + "_alone"], (name, out)
        assert 4.0 < out[name + "_alone"] < 6.5, (name, out)  # 27 letters: log2 27 = 4.75 bits at best
    unrelated = compressor_bpb(random_lines(400, seed=1), lines)  # a context that says nothing about it
    for name in ("gzip", "bz2", "xz"):
        assert unrelated[name] > 0.9 * out[name + "_alone"], (name, unrelated)


def test_random_bytes_cost_eight_bits_each():
    rng = np.random.default_rng(2)

    def lines(n):  # random bytes (newlines excepted), as a corpus read with surrogateescape would give them
        raw = rng.integers(0, 256, size=n).astype(np.uint8).tobytes().replace(b"\n", b"")
        return [raw.decode("utf-8", errors="surrogateescape")]

    out = compressor_bpb(lines(100_000), lines(50_000))
    for name, bpb in out.items():
        assert 7.9 < bpb < 8.5, (name, out)


def test_the_definition_literally():
    train = random_lines(300, seed=3) + ["é ü 漢字"]
    held = random_lines(50, seed=4) + ["naïve ☃"]
    ctx_bytes = 1000
    train_text = ("\n".join(train) + "\n").encode()
    held_text = ("\n".join(held) + "\n").encode()
    ctx = train_text[-ctx_bytes:]
    out = compressor_bpb(train, held, context_bytes=ctx_bytes)
    comp = {"gzip": lambda b: gzip.compress(b, 9, mtime=0), "bz2": lambda b: bz2.compress(b, 9),
            "xz": lambda b: lzma.compress(b, preset=references.XZ_PRESET)}
    for name, c in comp.items():
        assert out[name] == (len(c(ctx + held_text)) - len(c(ctx))) * 8 / len(held_text), name
        assert out[name + "_alone"] == len(c(held_text)) * 8 / len(held_text), name
    assert set(out) == {"gzip", "bz2", "xz", "gzip_alone", "bz2_alone", "xz_alone"}
    none = compressor_bpb(train, held, context_bytes=0)
    assert none["xz"] == (len(comp["xz"](held_text)) - len(comp["xz"](b""))) * 8 / len(held_text)
    with pytest.raises(ValueError, match="empty"):
        compressor_bpb(train, [])


def test_docstring_examples():
    assert doctest.testmod(references, raise_on_error=True).attempted >= 3
