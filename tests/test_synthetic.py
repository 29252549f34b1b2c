"""The planted corpus: its closed-form Bayes optimum against dense enumeration and against pair frequencies counted in a
large generated corpus; its sampler, vocabulary, determinism, scale (V = 1M) and the standard error of `bayes_ce`."""

from __future__ import annotations

import math
import time
import tracemalloc
from dataclasses import dataclass, replace

import numpy as np
import pytest

from sampledsoftmax.data.synthetic import PlantedCorpus
from sampledsoftmax.errors import ConfigError, InputError


@dataclass
class Cfg:  # the attribute names of config.SyntheticConfig; the planted corpus accepts any such object
    vocab_size: int = 30
    num_tokens: int = 60_000
    num_topics: int = 3
    sentence_length: int = 6
    zipf_exponent: float = 1.0
    topic_strength: float = 2.0
    heldout_sentences: int = 400_000
    seed: int = 0


# ------------------------------------------------------------------------------------------------ independent helpers


def dense_topic_table(pc: PlantedCorpus, gen_words: np.ndarray) -> np.ndarray:
    """p(w|z) [K, n] by the definition, over the given generator words (renormalised): (w+1)^-s · e^{β[home(w)=z]}."""
    K = pc.num_topics
    w = np.asarray(gen_words)
    un = (w + 1.0) ** -pc.zipf_exponent * np.exp(pc.topic_strength * (pc.home[w][None, :] == np.arange(K)[:, None]))
    return un / un.sum(axis=1, keepdims=True)  # (K, n)


def dense_p_star(ptab: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """p*(c|w) [n, n] = Σ_z p(z|w) p(c|z) with p(z|w) ∝ π_z p(w|z), by brute-force sums."""
    post = prior[:, None] * ptab  # (K, n) ∝ p(z|w)
    post = post / post.sum(axis=0, keepdims=True)
    return post.T @ ptab  # (n, n)


def sentences(ids: np.ndarray, L: int) -> np.ndarray:
    """(n, L) sentences from the -1-separated encoding; checks the separators are where the format says."""
    padded = np.append(ids, -1).reshape(-1, L + 1)
    assert np.all(padded[:, L] == -1) and np.all(padded[:, :L] >= 0)
    return padded[:, :L]


def window_pairs(sent: np.ndarray, window: int) -> dict:
    """All (center, context) pairs of each sentence with 0 < |i - j| <= window, brute force over position pairs:
    {(i, j): (centers (n,), contexts (n,))}, one entry per ordered position pair."""
    L = sent.shape[1]
    return {(i, j): (sent[:, i], sent[:, j]) for i in range(L) for j in range(L) if 0 < abs(i - j) <= window}


def one_pair_per_sentence(pairs: dict, rng: np.random.Generator, offsets=None):
    """One pair per sentence, the position pair chosen uniformly and independently of the words. Sentences are i.i.d.,
    so these pairs are i.i.d. draws of the pair distribution: conditional on its center, each context is an independent
    draw of p*(.|w), which is what a chi-square goodness-of-fit test needs (pairs of one sentence are dependent)."""
    keys = [k for k in pairs if offsets is None or abs(k[0] - k[1]) in offsets]
    n = len(pairs[keys[0]][0])
    pick = rng.integers(len(keys), size=n)
    cen = np.stack([pairs[k][0] for k in keys])[pick, np.arange(n)]
    ctx = np.stack([pairs[k][1] for k in keys])[pick, np.arange(n)]
    return cen.astype(np.int64), ctx.astype(np.int64)


def chi_square_z(centers, contexts, cond: np.ndarray, min_center: int = 200) -> tuple[float, int]:
    """Pearson chi-square of the context counts of every center with >= min_center pairs against cond[w] (rows:
    conditional distributions), cells with expected count < 5 pooled into one. Returns the Wilson-Hilferty normal
    score of the total statistic (≈ N(0, 1) when cond is right) and the degrees of freedom."""
    n = cond.shape[0]
    table = np.zeros((n, cond.shape[1]))
    np.add.at(table, (centers, contexts), 1.0)
    stat, df = 0.0, 0
    for w in np.flatnonzero(table.sum(axis=1) >= min_center):
        nw = table[w].sum()
        exp = nw * cond[w]
        big = exp >= 5
        obs_c = np.append(table[w][big], table[w][~big].sum())
        exp_c = np.append(exp[big], exp[~big].sum())
        keep = exp_c > 0
        assert np.all(obs_c[~keep] == 0), "a pair the model gives probability 0"
        stat += float(((obs_c[keep] - exp_c[keep]) ** 2 / exp_c[keep]).sum())
        df += int(keep.sum()) - 1
    a = 2.0 / (9.0 * df)
    return ((stat / df) ** (1.0 / 3.0) - (1.0 - a)) / math.sqrt(a), df


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def tiny():
    """V = 30, K = 3, 10k training sentences (every word seen), 400k held-out sentences of 6 words."""
    pc = PlantedCorpus(Cfg())
    return pc, pc.generate_arrays()


# ------------------------------------------------------------------------------------------------ closed forms


@pytest.mark.parametrize("strength,K", [(2.0, 3), (0.7, 5), (4.0, 1), (3.0, 40)])
def test_closed_form_matches_dense_enumeration(strength, K):
    pc = PlantedCorpus(Cfg(num_topics=K, topic_strength=strength, zipf_exponent=1.3, heldout_sentences=10))
    V = pc.vocab_size
    gen = np.arange(V)
    ptab = dense_topic_table(pc, gen)
    pstar = dense_p_star(ptab, np.full(K, 1.0 / K))
    w, c = np.meshgrid(gen, gen, indexing="ij")
    got = np.exp(pc.log_p_context_generator(w, c))  # (V, V)
    np.testing.assert_allclose(got, pstar, rtol=1e-12, atol=0)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-13)  # p*(.|w) sums to 1 over generator words
    z = np.arange(K)
    lp = pc.model.log_p_word_given_topic(gen[None, :], z[:, None])  # (K, V)
    np.testing.assert_allclose(np.exp(lp), ptab, rtol=1e-12)


def test_restricted_model_matches_dense_enumeration():
    """Words unseen in training leave the vocabulary; p*_O (vocab ids) is p* of the model renormalised over it."""
    pc = PlantedCorpus(Cfg(vocab_size=200, num_topics=4, num_tokens=600, zipf_exponent=1.5, heldout_sentences=10))
    g = pc.generate_arrays()
    V_obs = len(g.words)
    assert 0 < V_obs < 200 and g.stats["unseen_words"] == 200 - V_obs and 0 < g.stats["unseen_mass"] < 1
    ptab = dense_topic_table(pc, pc.vocab_to_gen)  # (K, V_obs) p(w|z) restricted to the vocabulary, renormalised
    pstar = dense_p_star(ptab, np.full(4, 0.25))
    w, c = np.meshgrid(np.arange(V_obs), np.arange(V_obs), indexing="ij")
    got = np.exp(pc.log_p_context(w, c))
    np.testing.assert_allclose(got, pstar, rtol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-13)
    np.testing.assert_allclose(np.exp(pc.log_p_unigram(np.arange(V_obs))), ptab.mean(axis=0), rtol=1e-12)
    # the unseen mass of the stats is Σ_z π_z P_z(words outside the vocabulary), by the dense table over all words
    full = dense_topic_table(pc, np.arange(200))
    unseen = np.setdiff1d(np.arange(200), pc.vocab_to_gen)
    assert g.stats["unseen_mass"] == pytest.approx(full[:, unseen].sum(axis=1).mean(), rel=1e-12)


def test_no_topic_strength_means_p_star_is_the_unigram(tiny):
    pc = PlantedCorpus(Cfg(topic_strength=0.0, heldout_sentences=2000))
    g = pc.generate_arrays()
    pairs = window_pairs(sentences(g.heldout_ids, 6), 2)
    cen = np.concatenate([p[0] for p in pairs.values()])
    ctx = np.concatenate([p[1] for p in pairs.values()])
    np.testing.assert_allclose(pc.log_p_context(cen, ctx), pc.log_p_unigram(ctx), rtol=0, atol=1e-13)
    assert pc.bayes_ce(cen, ctx)[0] == pytest.approx(pc.unigram_ce(ctx)[0], abs=1e-12)


# ------------------------------------------------------------------------------------------------ sampling


@pytest.mark.parametrize("V,K,strength", [(30, 3, 2.0), (300, 7, 1.0), (30, 40, 3.0)])
def test_sampler_draws_p_word_given_topic(V, K, strength):
    """Words drawn for a known topic follow p(w|z) (chi-square per topic, against the dense table)."""
    pc = PlantedCorpus(Cfg(vocab_size=V, num_topics=K, topic_strength=strength))
    topics = np.repeat(np.arange(K), 40_000)
    words = pc.model.sample(topics, np.random.default_rng(1))
    assert words.min() >= 0 and words.max() < V
    z, df = chi_square_z(topics, words, dense_topic_table(pc, np.arange(V)), min_center=1)
    assert abs(z) < 4.5, (z, df)
    # power: the same counts are far from the base distribution when topics matter
    base = ((np.arange(V) + 1.0) ** -1.0)
    z_base, _ = chi_square_z(topics, words, np.tile(base / base.sum(), (K, 1)), min_center=1)
    assert z_base > 20


# ------------------------------------------------------------------------------------------------ the entropy check


def test_pair_frequencies_match_p_star(tiny):
    """Pairs within sentences (window 2, every offset) of a large generated corpus have the conditional frequencies
    p*(c|w). Training part: all generator words; held-out part: the vocabulary model (here every word was seen)."""
    pc, g = tiny
    assert g.stats["unseen_words"] == 0
    V = len(g.words)
    w, c = np.meshgrid(np.arange(V), np.arange(V), indexing="ij")
    cond = np.exp(pc.log_p_context(w, c))  # (V, V) in vocab ids
    rng = np.random.default_rng(5)
    held = window_pairs(sentences(g.heldout_ids, 6), 2)
    for offsets in ({1}, {2}):  # pairs at distance 1 and at distance 2 (both directions) have the same law
        z, df = chi_square_z(*one_pair_per_sentence(held, rng, offsets), cond)
        assert abs(z) < 4.5, (offsets, z, df)
    # power: the marginal (unigram) predictor is rejected by the same test on the same pairs
    unigram = np.tile(np.exp(pc.log_p_unigram(np.arange(V))), (V, 1))
    z_uni, _ = chi_square_z(*one_pair_per_sentence(held, rng), unigram)
    assert z_uni > 20
    # the training sentences (drawn from the model over all generator words) agree too
    train = window_pairs(sentences(g.ids, 6), 2)
    z, df = chi_square_z(*one_pair_per_sentence(train, rng), cond, min_center=100)
    assert abs(z) < 4.5, (z, df)


def test_heldout_pairs_follow_the_vocabulary_model():
    """With words unseen in training, held-out pairs follow p*_O (vocab ids), and every held-out id is in the vocab."""
    cfg = Cfg(vocab_size=200, num_topics=4, num_tokens=600, zipf_exponent=1.5, sentence_length=4,
              heldout_sentences=300_000)
    pc = PlantedCorpus(cfg)
    g = pc.generate_arrays()
    V_obs = len(g.words)
    assert V_obs < 200
    sent = sentences(g.heldout_ids, 4)
    assert sent.max() < V_obs
    w, c = np.meshgrid(np.arange(V_obs), np.arange(V_obs), indexing="ij")
    cond = np.exp(pc.log_p_context(w, c))
    z, df = chi_square_z(*one_pair_per_sentence(window_pairs(sent, 2), np.random.default_rng(2)), cond)
    assert abs(z) < 4.5, (z, df)


def test_bayes_ce_beats_simple_predictors(tiny):
    pc, g = tiny
    V, K = len(g.words), pc.num_topics
    cen, ctx = one_pair_per_sentence(window_pairs(sentences(g.heldout_ids, 6), 2), np.random.default_rng(3))
    bayes, bayes_se = pc.bayes_ce(cen, ctx)
    uni, _ = pc.unigram_ce(ctx)
    gap = pc.log_p_context(cen, ctx) - pc.log_p_unigram(ctx)  # per pair
    gap_se = gap.std(ddof=1) / math.sqrt(len(gap))
    assert uni - bayes == pytest.approx(gap.mean(), rel=1e-9)
    assert gap.mean() > 10 * gap_se  # strictly better than the unigram predictor
    # and by the right amount: I(W; C) and H(C|W) from the dense tables (all words seen: vocab = generator words)
    ptab = dense_topic_table(pc, pc.vocab_to_gen)  # (K, V), columns in vocab ids
    joint = (ptab.T / K) @ ptab  # (V, V) p(w, c)
    pstar = joint / joint.sum(axis=1, keepdims=True)
    pc_marg = joint.sum(axis=0)
    h_cond = -(joint * np.log(pstar)).sum()
    mi = (joint * (np.log(pstar) - np.log(pc_marg)[None, :])).sum()
    assert abs(bayes - h_cond) < 4 * bayes_se, (bayes, h_cond, bayes_se)
    assert abs(gap.mean() - mi) < 4 * gap_se, (gap.mean(), mi, gap_se)
    # a predictor fitted on the training pairs (add-1/2 smoothed conditional counts) does worse on held-out pairs
    tr = window_pairs(sentences(g.ids, 6), 2)
    table = np.full((V, V), 0.5)
    for a, b in tr.values():
        np.add.at(table, (a, b), 1.0)
    fitted = -np.log(table[cen, ctx] / table[cen].sum(axis=1))
    assert fitted.mean() > bayes
    # and so does the training-count unigram
    assert -np.log(g.counts[ctx] / g.counts.sum()).mean() > bayes


# ------------------------------------------------------------------------------------------------ format, determinism


def test_vocab_sorted_by_observed_count_and_encoding(tiny):
    pc = PlantedCorpus(Cfg(vocab_size=500, num_topics=5, num_tokens=20_000, sentence_length=7, heldout_sentences=50))
    g = pc.generate_arrays()
    L = 7
    sent = sentences(g.ids, L)
    assert g.ids.dtype == np.int32 and g.heldout_ids.dtype == np.int32
    assert sent.shape == (-(-20_000 // L), L) and g.stats["train_tokens"] == sent.size
    assert sentences(g.heldout_ids, L).shape == (50, L)
    assert g.ids[0] != -1 and g.ids[-1] != -1  # -1 only between sentences
    V_obs = len(g.words)
    np.testing.assert_array_equal(np.bincount(sent.ravel(), minlength=V_obs), g.counts)  # counts = observed counts
    assert np.all(g.counts > 0) and np.all(np.diff(g.counts) <= 0)  # sorted: id = rank
    assert g.words == [f"w{i}" for i in pc.vocab_to_gen]
    tie = np.diff(g.counts) == 0
    assert all(g.words[i] < g.words[i + 1] for i in np.flatnonzero(tie))  # ties: word in code-point order
    np.testing.assert_array_equal(pc.gen_to_vocab[pc.vocab_to_gen], np.arange(V_obs))
    assert np.sum(pc.gen_to_vocab >= 0) == V_obs
    assert g.stats["vocab_size"] == V_obs and g.stats["unseen_words"] == 500 - V_obs


def test_generate_returns_a_vocab_the_vocab_module_agrees_with():
    from sampledsoftmax.data.vocab import Vocab

    pc = PlantedCorpus(Cfg(vocab_size=400, num_tokens=5_000, heldout_sentences=20))
    ids, heldout_ids, vocab = pc.generate()
    assert isinstance(vocab, Vocab) and len(vocab) == len(pc.vocab_to_gen)
    # the same order as Vocab's own rule (count descending, ties by word), so ids are ranks either way
    again = Vocab.from_counts(dict(zip(vocab.words, vocab.counts.tolist())), min_count=1)
    assert again.words == vocab.words
    assert ids.max() < len(vocab) and heldout_ids.max() < len(vocab)


def test_deterministic_in_seed():
    cfg = Cfg(vocab_size=1000, num_topics=7, num_tokens=30_000, heldout_sentences=300)
    a = PlantedCorpus(cfg).generate_arrays()
    b = PlantedCorpus(cfg).generate_arrays()
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.heldout_ids, b.heldout_ids)
    assert a.words == b.words and np.array_equal(a.counts, b.counts)
    c = PlantedCorpus(replace(cfg, seed=1)).generate_arrays()
    assert not np.array_equal(a.ids[:1000], c.ids[:1000])


def test_v1m_smoke_shapes_ranges_memory():
    cfg = Cfg(vocab_size=1_000_000, num_topics=50, num_tokens=200_000, sentence_length=20, heldout_sentences=2_000)
    tracemalloc.start()
    t0 = time.perf_counter()
    pc = PlantedCorpus(cfg)
    g = pc.generate_arrays()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 128 * 2**20, f"peak {peak / 2**20:.0f} MiB"  # measured ~75 MiB: O(V) tables; a K x V table is 400 MB
    assert seconds < 30
    V_obs = len(g.words)
    assert g.ids.shape == (10_000 * 21 - 1,) and g.heldout_ids.shape == (2_000 * 21 - 1,)
    assert np.sum(g.ids == -1) == 9_999 and np.sum(g.heldout_ids == -1) == 1_999
    assert g.ids.max() == V_obs - 1 and g.ids.min() == -1 and g.heldout_ids.max() < V_obs
    assert 1_000 < V_obs < 200_000 and g.counts.sum() == 200_000
    assert pc.vocab_to_gen.max() < 1_000_000 and pc.home.max() == 49
    sent = sentences(g.heldout_ids, 20)
    lp = pc.log_p_context(sent[:, 0], sent[:, 1])
    assert np.all(np.isfinite(lp)) and np.all(lp < 0)
    assert 0 < g.stats["unseen_mass"] < 0.5


# ------------------------------------------------------------------------------------------------ bayes_ce, errors


def test_bayes_ce_standard_error(tiny):
    pc, g = tiny
    sent = sentences(g.heldout_ids, 6)[:5000]
    cen, ctx = sent[:, 0], sent[:, 3]
    nll = -pc.log_p_context(cen, ctx)
    mean, se = pc.bayes_ce(cen, ctx)
    assert mean == pytest.approx(nll.mean(), rel=1e-12)
    assert se == pytest.approx(nll.std(ddof=1) / math.sqrt(len(nll)), rel=1e-12)
    # the standard error means what it says: means over disjoint batches of independent pairs scatter by about it
    means = [pc.bayes_ce(sent[i::20, 1], sent[i::20, 4])[0] for i in range(20)]
    se_batch = np.mean([pc.bayes_ce(sent[i::20, 1], sent[i::20, 4])[1] for i in range(20)])
    assert 0.6 < np.std(means, ddof=1) / se_batch < 1.6
    assert math.isnan(pc.bayes_ce(cen[:1], ctx[:1])[1])
    with pytest.raises(InputError):
        pc.bayes_ce(cen[:0], ctx[:0])
    with pytest.raises(InputError):
        pc.log_p_context(np.array([0]), np.array([len(g.words)]))
    with pytest.raises(InputError):
        pc.log_p_context(np.array([0.0]), np.array([1]))


def test_scoring_before_generate_and_bad_config():
    with pytest.raises(RuntimeError, match="generate"):
        PlantedCorpus(Cfg()).bayes_ce(np.array([0]), np.array([1]))
    for bad in (dict(sentence_length=1), dict(topic_strength=-1.0), dict(vocab_size=0), dict(num_topics=True),
                dict(zipf_exponent=float("nan")), dict(heldout_sentences=-1), dict(topic_strength=1e3)):
        with pytest.raises(ConfigError, match="data.synthetic"):
            PlantedCorpus(Cfg(**bad))

    class Missing:
        vocab_size = 10

    with pytest.raises(ConfigError, match="num_tokens"):
        PlantedCorpus(Missing())


@pytest.mark.parametrize("strength,K", [(2.0, 3), (0.0, 4), (5.0, 7)])
def test_expected_ce_matches_dense_enumeration(strength, K):
    pc = PlantedCorpus(Cfg(vocab_size=60, num_topics=K, topic_strength=strength, num_tokens=300, heldout_sentences=1))
    pc.generate_arrays()
    ptab = dense_topic_table(pc, pc.vocab_to_gen)  # (K, V_obs): the vocabulary model
    joint = (ptab.T / K) @ ptab  # (V_obs, V_obs) p(w, c)
    marg = joint.sum(axis=0)
    want_cw = -(joint * np.log(joint / joint.sum(axis=1, keepdims=True))).sum()
    want_c = -(marg * np.log(marg)).sum()
    got = pc.expected_ce()
    assert got["bayes_ce"] == pytest.approx(want_cw, rel=1e-12)
    assert got["unigram_ce"] == pytest.approx(want_c, rel=1e-12)
    assert got["mutual_information"] == pytest.approx(want_c - want_cw, abs=1e-12)
    assert (got["mutual_information"] > 1e-3) == (strength > 0 and K > 1)
