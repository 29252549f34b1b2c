"""Tests for sampledsoftmax.embeddings.pairs: subsampling, skip-gram pairs, determinism/resume, held-out pairs.

References are written independently: pairs by a Python double loop over a tiny corpus, the keep probability as
word2vec.c computes it. Statistical tests use thresholds derived from the number of draws, never tuned: z-tests at
|z| > 5.5 (two-sided p ~ 4e-8), chi-square at p = 1e-6 (Wilson–Hilferty quantile). Every stream is seeded.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from sampledsoftmax.embeddings.pairs import SkipGramPairs, heldout_pairs, keep_probability
from sampledsoftmax.errors import ConfigError, DataError

Z_MAX = 5.5


def chi2_quantile(df: int, z: float = 4.753) -> float:
    """Wilson–Hilferty approximation of the chi-square quantile at the normal quantile z (4.753: p = 1e-6)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def random_corpus(n: int, vocab: int, seed: int, break_rate: float = 0.08) -> np.ndarray:
    """Token ids with Zipfian words and -1 breaks (doubled and leading/trailing breaks included on purpose)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    ids = rng.choice(vocab, size=n, p=p / p.sum())
    ids[rng.random(n) < break_rate] = -1
    ids[0] = ids[-1] = -1
    return ids


def brute_force_pairs(ids, window: int) -> Counter:
    """All (center, context) with 0 < |i - j| <= window and no break between: a plain double loop."""
    ids = list(ids)
    out: Counter = Counter()
    for i, c in enumerate(ids):
        if c < 0:
            continue
        for j in range(max(0, i - window), min(len(ids), i + window + 1)):
            if j == i:
                continue
            between = ids[min(i, j):max(i, j) + 1]
            if all(t >= 0 for t in between):
                out[(c, ids[j])] += 1
    return out


def collect(batches) -> tuple[np.ndarray, np.ndarray]:
    cs, xs = zip(*batches)
    return np.concatenate(cs), np.concatenate(xs)


def as_counter(centers, contexts) -> Counter:
    return Counter(zip(centers.tolist(), contexts.tolist()))


def counts_of(ids, vocab: int) -> np.ndarray:
    ids = np.asarray(ids)
    return np.bincount(ids[ids >= 0], minlength=vocab)


# ---- keep probability ------------------------------------------------------------------------------------------------

def test_keep_probability_matches_word2vec_c():
    counts = np.array([50_000, 20_000, 3_000, 700, 80, 5, 1, 0])
    train_words = counts.sum()
    for sample in (1e-3, 1e-4, 1e-5):
        expected = []
        for cn in counts.tolist():  # word2vec.c: ran = (sqrt(cn / (sample * train_words)) + 1) * (sample * ...) / cn
            if cn == 0:
                expected.append(1.0)
                continue
            ran = (math.sqrt(cn / (sample * train_words)) + 1) * (sample * train_words) / cn
            expected.append(min(ran, 1.0))
        np.testing.assert_allclose(keep_probability(counts, sample), expected, rtol=1e-12)
    assert keep_probability(counts, 1e-3)[0] < 0.2  # the frequent word is really subsampled here
    np.testing.assert_array_equal(keep_probability(counts, 0.0), np.ones(len(counts)))
    with pytest.raises(ConfigError, match="data.sample"):
        keep_probability(counts, -1e-3)


# ---- pairs against a brute-force reference ---------------------------------------------------------------------------

@pytest.mark.parametrize("window", [1, 2, 5])
@pytest.mark.parametrize("chunk_tokens", [1, 7, 1 << 16])
@pytest.mark.parametrize("batch_size", [1, 13, 100_000])
def test_full_window_pairs_equal_brute_force(window, chunk_tokens, batch_size):
    ids = random_corpus(400, 25, seed=window)
    p = SkipGramPairs(ids, counts_of(ids, 25), window=window, sample=0, dynamic_window=False,
                      batch_size=batch_size, seed=0, chunk_tokens=chunk_tokens)
    batches = list(p.epoch_batches(0))
    centers, contexts = collect(batches)
    assert as_counter(centers, contexts) == brute_force_pairs(ids, window)
    assert all(c.dtype == np.int64 and x.dtype == np.int64 and c.shape == x.shape for c, x in batches)
    assert all(len(c) == batch_size for c, _ in batches[:-1]) and 1 <= len(batches[-1][0]) <= batch_size
    assert len(batches) == p.num_batches(0) and len(centers) == p.num_pairs(0) == p.estimated_pairs_per_epoch()


def test_pairs_and_chunks_are_shuffled():
    n, chunk = 20_000, 2_000
    ids = np.arange(n)  # every token its own word: a pair tells its position
    p = SkipGramPairs(ids, np.ones(n, dtype=np.int64), window=3, sample=0, dynamic_window=False,
                      batch_size=1000, seed=0, chunk_tokens=chunk)
    order = p.chunk_order(0)
    assert sorted(order.tolist()) == list(range(n // chunk)) and order.tolist() != sorted(order.tolist())
    centers, contexts = collect(p.epoch_batches(0))
    per_chunk = int(p.chunk_pair_counts(0)[order[0]])
    assert per_chunk >= 6 * chunk - 12
    np.testing.assert_array_equal(centers[:per_chunk] // chunk, order[0])  # the first chunk visited comes first
    # within a chunk, consecutive pairs are independent: their centers are rarely neighbours (p ~ 7 / 2000)
    near = np.abs(np.diff(centers[:per_chunk])) <= 3
    assert near.mean() < 0.02
    # and the offsets are mixed from the first pairs on
    assert set(np.abs(centers[:30] - contexts[:30]).tolist()) == {1, 2, 3}


def positional_corpus(n: int, seed: int, break_rate: float) -> np.ndarray:
    """ids[i] = i for words (every token its own word), -1 at breaks: a pair tells the positions it came from."""
    ids = np.arange(n)
    ids[np.random.default_rng(seed).random(n) < break_rate] = -1
    return ids


def test_dynamic_windows_stay_within_window_and_sentence_and_are_uniform():
    window, n = 5, 30_000
    ids = positional_corpus(n, seed=2, break_rate=0.01)
    p = SkipGramPairs(ids, np.ones(n, dtype=np.int64), window=window, sample=0, dynamic_window=True,
                      batch_size=4096, seed=7, chunk_tokens=1000)
    centers, contexts = collect(p.epoch_batches(3))
    assert len(centers) == p.num_pairs(3)
    dist = np.abs(centers - contexts)
    assert dist.min() >= 1 and dist.max() <= window
    sentence = np.cumsum(ids < 0)  # sentence number per position
    assert np.all(sentence[centers] == sentence[contexts])  # no pair crosses a break
    assert set(as_counter(centers, contexts)) <= set(brute_force_pairs(ids, window))
    # reduced window b ~ U{1..window}: for centers with room on both sides, b = their farthest context
    b = np.zeros(n, dtype=np.int64)
    np.maximum.at(b, centers, dist)
    room = np.array([all(ids[max(0, i - window):i + window + 1] >= 0) and window <= i < n - window
                     for i in range(n)])
    b_inner = b[room]
    observed = np.bincount(b_inner, minlength=window + 1)[1:]
    expected = len(b_inner) / window
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < chi2_quantile(window - 1), (observed, chi2)
    # and each such center has exactly 2 b contexts: b on each side
    per_center = np.bincount(centers, minlength=n)[room]
    np.testing.assert_array_equal(per_center, 2 * b_inner)


def test_subsampling_keep_rate_matches_keep_probability():
    vocab, n, sample = 40, 200_000, 1e-2
    ids = random_corpus(n, vocab, seed=3, break_rate=0.02)
    counts = counts_of(ids, vocab)
    keep = keep_probability(counts, sample)
    p = SkipGramPairs(ids, counts, window=2, sample=sample, dynamic_window=True, batch_size=512, seed=1)
    kept = p.subsampled_ids(0)
    np.testing.assert_array_equal(kept[kept < 0], ids[ids < 0])  # breaks are never dropped
    got = counts_of(kept, vocab)
    for w in range(5):  # the frequent words, where keep < 1
        assert keep[w] < 0.9
        z = (got[w] - counts[w] * keep[w]) / math.sqrt(counts[w] * keep[w] * (1 - keep[w]))
        assert abs(z) < Z_MAX, (w, got[w], counts[w] * keep[w], z)
    rare = keep >= 1
    np.testing.assert_array_equal(got[rare], counts[rare])
    other = p.subsampled_ids(1)
    assert not np.array_equal(other, kept)  # a new draw each epoch


def test_subsampled_tokens_are_removed_before_windowing():
    ids = random_corpus(2000, 10, seed=4, break_rate=0.05)
    counts = counts_of(ids, 10)
    p = SkipGramPairs(ids, counts, window=2, sample=1e-2, dynamic_window=False, batch_size=64, seed=5,
                      chunk_tokens=37)
    kept = p.subsampled_ids(2)
    assert len(kept) < len(ids) - 200
    assert as_counter(*collect(p.epoch_batches(2))) == brute_force_pairs(kept, 2)


# ---- determinism and resume ------------------------------------------------------------------------------------------

def test_start_batch_resumes_the_exact_stream():
    ids = random_corpus(5000, 60, seed=5)
    counts = counts_of(ids, 60)
    kw = dict(window=4, sample=1e-2, dynamic_window=True, batch_size=37, seed=11, chunk_tokens=300)
    p = SkipGramPairs(ids, counts, **kw)
    full = list(p.epoch_batches(1))
    nb = p.num_batches(1)
    assert len(full) == nb > 20
    sizes = np.cumsum(p.chunk_pair_counts(1)[p.chunk_order(1)])
    across = int(sizes[2] // 37)  # the batch that spans the 3rd and 4th chunks
    for k in sorted({1, 2, across, across + 1, nb // 2, nb - 1}):
        fresh = SkipGramPairs(ids, counts, **kw)  # as after a restart: nothing cached
        resumed = list(fresh.epoch_batches(1, start_batch=k))
        assert len(resumed) == nb - k
        for (c1, x1), (c2, x2) in zip(resumed, full[k:]):
            np.testing.assert_array_equal(c1, c2)
            np.testing.assert_array_equal(x1, x2)
    assert list(p.epoch_batches(1, start_batch=nb)) == []
    # same (seed, epoch): same stream; another epoch or seed: another one
    again = list(SkipGramPairs(ids, counts, **kw).epoch_batches(1))
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(again, full))
    other_epoch = next(iter(p.epoch_batches(2)))[0]
    other_seed = next(iter(SkipGramPairs(ids, counts, **{**kw, "seed": 12}).epoch_batches(1)))[0]
    assert not np.array_equal(other_epoch, full[0][0]) and not np.array_equal(other_seed, full[0][0])


def test_chunking_does_not_change_the_pairs_of_an_epoch():
    ids = random_corpus(3000, 30, seed=6)
    counts = counts_of(ids, 30)
    sets = []
    for chunk_tokens in (50, 1 << 16):
        p = SkipGramPairs(ids, counts, window=3, sample=1e-2, dynamic_window=False, batch_size=100, seed=2,
                          chunk_tokens=chunk_tokens)
        sets.append(as_counter(*collect(p.epoch_batches(0))))
    assert sets[0] == sets[1]  # subsampling depends on (seed, epoch) only, and no pair is lost at chunk edges


@pytest.mark.parametrize("mix", [3, 4])
def test_mixed_chunks_keep_the_epochs_pairs_mix_the_stretches_and_resume_exactly(mix):
    """data.mix_chunks = K: the same pairs as K = 1 (a permutation of the epoch), a batch drawn from K chunks at once,
    and start_batch still yields exactly the stream's tail (including a batch that spans two groups)."""
    n, chunk = 6000, 200
    ids = positional_corpus(n, seed=14, break_rate=0.0)  # the center's id is its position: its chunk is id // 200
    kw = dict(window=2, sample=0, dynamic_window=True, batch_size=64, seed=3, chunk_tokens=chunk)
    one = SkipGramPairs(ids, np.ones(n, dtype=np.int64), **kw)
    mixed = SkipGramPairs(ids, np.ones(n, dtype=np.int64), **kw, mix_chunks=mix)
    plain, full = list(one.epoch_batches(0)), list(mixed.epoch_batches(0))
    assert as_counter(*collect(iter(full))) == as_counter(*collect(iter(plain)))
    order = one.chunk_order(0)
    first_group = set(order[:mix].tolist())
    for batches, want in ((plain, 1), (full, mix)):  # chunks per batch, over the first group's batches
        spans = [len(set((c // chunk).tolist())) for c, _ in batches[:5]]
        assert max(spans) == want, spans
    assert {int(i) // chunk for centers, _ in full[:5] for i in centers} <= first_group
    sizes = np.cumsum(one.chunk_pair_counts(0)[order])
    across = int(sizes[mix - 1] // 64)  # the batch spanning the first and second groups
    for k in sorted({1, across, across + 1, len(full) - 1}):
        fresh = SkipGramPairs(ids, np.ones(n, dtype=np.int64), **kw, mix_chunks=mix)
        resumed = list(fresh.epoch_batches(0, start_batch=k))
        assert len(resumed) == len(full) - k
        for (c1, x1), (c2, x2) in zip(resumed, full[k:]):
            np.testing.assert_array_equal(c1, c2)
            np.testing.assert_array_equal(x1, x2)
    with pytest.raises(ConfigError, match="data.mix_chunks"):
        SkipGramPairs(ids, np.ones(n, dtype=np.int64), **kw, mix_chunks=0)


# ---- held-out pairs --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [1, 5, 1 << 20])
def test_heldout_pairs_equal_brute_force_when_uncapped(block):
    ids = random_corpus(500, 20, seed=8)
    for window in (1, 3, 5):
        c, x = heldout_pairs(ids, window, None, seed=0, block=block)
        assert c.dtype == np.int64 and x.dtype == np.int64
        assert as_counter(c, x) == brute_force_pairs(ids, window)
        c2, x2 = heldout_pairs(ids, window, max_pairs=10**9, seed=0, block=block)
        assert as_counter(c2, x2) == as_counter(c, x)


def test_heldout_pairs_capped_uniformly():
    ids = positional_corpus(3000, seed=9, break_rate=0.05)
    full = set(as_counter(*heldout_pairs(ids, 4, None)))
    c, x = heldout_pairs(ids, 4, max_pairs=1000, seed=3, block=100)
    chosen = as_counter(c, x)
    assert len(c) == 1000 and max(chosen.values()) == 1 and set(chosen) <= full  # distinct pairs: no repeats
    c2, x2 = heldout_pairs(ids, 4, max_pairs=1000, seed=3, block=1 << 20)  # the block size does not matter
    np.testing.assert_array_equal(c, c2)
    np.testing.assert_array_equal(x, x2)
    assert set(as_counter(*heldout_pairs(ids, 4, max_pairs=1000, seed=4))) != set(chosen)
    # uniform: the fraction chosen at each distance matches the fraction of all pairs at that distance
    dist_all = Counter(abs(a - b) for a, b in full)
    dist = Counter(np.abs(c - x).tolist())
    for d in range(1, 5):
        pr = dist_all[d] / len(full)
        z = (dist[d] - 1000 * pr) / math.sqrt(1000 * pr * (1 - pr))
        assert abs(z) < Z_MAX
    # and shuffled: the first eval batch is not all one distance
    assert len(set(np.abs(c[:50] - x[:50]).tolist())) > 1
    assert heldout_pairs(ids, 4, max_pairs=0)[0].shape == (0,)
    assert heldout_pairs(np.array([-1, 3, -1, 4]), 2)[0].shape == (0,)


def test_heldout_pairs_drawn_like_training_follow_its_offset_and_keep_distributions():
    """eval.heldout = "training": reduced windows b ~ U{1..W} (an offset o is kept with probability (W-o+1)/W) and
    word2vec's subsampling before windowing, as the training stream has them."""
    window, n = 5, 40_000
    ids = positional_corpus(n, seed=12, break_rate=0.0)  # distinct ids: a pair's offset is |center - context|
    c, x = heldout_pairs(ids, window, None, seed=1, dynamic_window=True)
    full = heldout_pairs(ids, window, None, seed=1)
    assert set(as_counter(c, x)) <= set(as_counter(*full))
    dist = np.bincount(np.abs(c - x), minlength=window + 1)[1:]  # (W,) pairs per offset
    expected = np.bincount(np.abs(full[0] - full[1]), minlength=window + 1)[1:] * (window - np.arange(window)) / window
    chi2 = float(((dist - expected) ** 2 / expected).sum())
    assert chi2 < chi2_quantile(window - 1), (dist, expected)
    c2, x2 = heldout_pairs(ids, window, None, seed=1, block=777, dynamic_window=True)  # the block size: no effect
    np.testing.assert_array_equal(c, c2)
    np.testing.assert_array_equal(x, x2)
    # subsampling: the contexts' word frequencies are counts x keep (breaks kept, so no pair crosses a sentence)
    vocab, sample = 40, 1e-2
    ids = random_corpus(200_000, vocab, seed=13, break_rate=0.02)
    counts = counts_of(ids, vocab)
    keep = keep_probability(counts, sample)
    _, ctx = heldout_pairs(ids, 2, None, seed=2, keep=keep)
    got = np.bincount(ctx, minlength=vocab) / len(ctx)
    want = counts * keep / (counts * keep).sum()
    assert np.abs(got / want - 1).max() < 0.05, got / want
    raw = counts / counts.sum()
    assert got[0] < 0.6 * raw[0]  # the most frequent word: far below its raw frequency, as in training


# ---- errors ----------------------------------------------------------------------------------------------------------

def test_errors():
    ids = np.array([0, 1, 2, -1, 1])
    counts = np.array([1, 2, 1])
    with pytest.raises(ConfigError, match="data.window"):
        SkipGramPairs(ids, counts, window=0)
    with pytest.raises(ConfigError, match="optim.batch_size"):
        SkipGramPairs(ids, counts, batch_size=0)
    with pytest.raises(ValueError, match=r"\[-1, 3\)"):
        SkipGramPairs(np.array([0, 3]), counts)
    with pytest.raises(ValueError, match=r"\[-1, 3\)"):
        SkipGramPairs(np.array([0, -2]), counts)
    with pytest.raises(DataError, match="no skip-gram pairs"):
        SkipGramPairs(np.array([0, -1, 1, -1, 2]), counts)
    with pytest.raises(ValueError, match="start_batch"):
        next(SkipGramPairs(ids, counts).epoch_batches(0, start_batch=-1))
    with pytest.raises(ConfigError, match="data.window"):
        heldout_pairs(ids, 0)
