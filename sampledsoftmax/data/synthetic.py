"""The planted corpus: a synthetic skip-gram corpus whose Bayes-optimal held-out cross entropy is known exactly.

It measures accuracy at class counts (1k ... 1M) where no real corpus exists here: a trained model's exact held-out
cross entropy minus `bayes_ce` is its *excess loss*, >= 0 in expectation for every model.

Generative model (V generator words w = 0..V-1, K topics, s = zipf_exponent, β = topic_strength >= 0)
----------------------------------------------------------------------------------------------------
- Topic prior: uniform, π_z = 1/K.
- Base frequencies (Zipf): b_w = (w+1)^-s / Σ_v (v+1)^-s.
- Home topics: home(w) = perm(w) mod K for a seeded random permutation, so every topic is home to V/K words (±1)
  with Zipf ranks spread at random. Affinity a_{z,w} = e^β if home(w) = z, else 1. With A = e^β - 1:

      p(w|z) = b_w · (1 + A·[home(w) = z]) / Y_z,      Y_z = Σ_w b_w (1 + A·[home(w) = z]) = 1 + A·H_z,
      H_z    = Σ_{w: home(w) = z} b_w                  (the base mass of topic z's home words).

  This structured form needs O(V + K) memory (no K × V table) and O(1) work per (w, z).
- A sentence: z ~ π, then `sentence_length` (L) words i.i.d. from p(·|z). Sampling p(·|z) exactly as a mixture:
  p(·|z) = (1/Y_z)·b + (A·H_z/Y_z)·b[home = z]/H_z, i.e. with probability λ_z = A·H_z/Y_z draw from the base
  distribution restricted to z's home words, otherwise from the base distribution itself (the weights sum to
  (1 + A·H_z)/Y_z = 1). Each draw is one `searchsorted` of a uniform into a cumulative table: the base CDF, or the
  CDF of the words grouped by home topic, where topic z owns the segment [C_z, C_z + H_z). All tokens of a chunk of
  sentences are drawn at once; exact up to float64 rounding of the cumulative sums.

The Bayes-optimal context distribution, and why it is exact
-----------------------------------------------------------
Given z the words of a sentence are i.i.d., so for ANY two distinct positions i != j of one sentence
P(x_i = w, x_j = c) = Σ_z π_z p(w|z) p(c|z), whatever the window, dynamic window or position. Hence

      p*(c|w) = Σ_z p(z|w) p(c|z),      p(z|w) ∝ π_z p(w|z),

and in closed form, with r_z = π_z / Y_z, t_z = π_z / Y_z², R = Σ_z r_z, T = Σ_z t_z (b_w cancels in p(z|w)):

      p*(c|w) = b_c · (T + A·t_{h(w)} + A·t_{h(c)} + A²·[h(w) = h(c)]·t_{h(w)}) / (R + A·r_{h(w)}),   h = home,

      p(c)    = Σ_z π_z p(c|z) = b_c · (R + A·r_{h(c)})      (the marginal unigram; also the denominator above).

O(1) per pair. Summing the numerator over c gives T + A·t_{h(w)} + A·Σ_z t_z H_z + A²·t_{h(w)} H_{h(w)} =
Σ_z t_z Y_z + A·t_{h(w)} Y_{h(w)} = R + A·r_{h(w)}: it sums to 1. Cross entropy E[-log p*(C|W)] over pairs drawn
this way is the least any predictor of c from w can reach (Gibbs' inequality); E[-log p(C)] - that = I(W; C) > 0 when
β > 0 and K > 1, and p* = p(c) exactly when β = 0. `expected_ce()` gives both expectations exactly in O(V + K²).

How strong the structure is: a draw comes from the home component with probability λ_z ≈ A/(K + A), so β must
exceed about log K to matter. At K = 50, s = 1 (V = 10k or 1M alike): β = 2 → I(W; C) ≈ 0.003 nats (almost a
unigram corpus), β = 4 → 0.4, β = 5 → 1.3, β = 6 → 2.4, β = 8 → 3.6; I(W; C) <= H(Z) = log K.

The vocabulary, and the held-out part
-------------------------------------
The vocabulary is the set O of generator words that occur in the training sentences (min_count 1), named
"w<generator index>" and sorted by observed count descending, ties by the word in code-point order (as `Vocab`), so
vocab id = rank. `vocab_to_gen` maps vocab id -> generator index. A model normalises over O only, so the optimum it
can reach on held-out pairs is the model restricted to O. Restricting keeps the same structure, with b replaced by b·[w ∈ O]
renormalised (Y_z, H_z, r, t recomputed over O):

      p_O(w|z) = p(w|z) / P_z(O) for w in O,       and p*_O(c|w), p_O(c) by the formulas above over O.

Held-out sentences (`heldout_sentences` of them, from an independent seed stream) are drawn from this restricted
model: z ~ π, L words i.i.d. from p_O(·|z) — equivalently, a held-out word unseen in training is redrawn (never
dropped). Dropping it instead (as real text must) would leave sentences of random, topic-dependent length and make
p* over all generator words an upper bound off by about the unseen mass (2.6% of tokens, 0.027 nats at V = 1M,
10M tokens, s = 1, K = 50), not the optimum. `log_p_context` and `bayes_ce` therefore use p*_O, exact for the
held-out pairs; `log_p_context_generator` gives p* over all V generator words (they agree when every word was seen).

Conditions under which `bayes_ce` is the exact optimum of the reported held-out cross entropy:
- pairs are taken within one sentence (never across a -1 break); any window, with or without a dynamic window, and
  the pairs may be any content-independent (e.g. seeded uniform) subset of them;
- no frequent-word subsampling of held-out pairs (keeping a token with a word-dependent probability tilts p(c|w)),
  and none in training either (data.sample = 0), or the model is trained toward a different target;
- min_count = 1 (the vocabulary is every word seen in training; held-out words are drawn from it).
`bayes_ce`'s standard error treats the pairs as independent; pairs sharing a sentence share its topic and are
positively correlated, so it is somewhat optimistic. The mean is unbiased.

Encoding: `ids` is np.int32 vocab ids with one -1 between consecutive sentences (no leading or trailing -1); the
training part has ceil(num_tokens / L) sentences of exactly L words, the held-out part `heldout_sentences` of them.
Memory at V = 1M: a handful of O(V) float64/int arrays plus the token arrays (4 bytes a token, drawn in chunks of
~1M tokens) and the vocabulary's word strings: peak ~75 MiB for 200k tokens, ~220 MiB for 10M (tracemalloc).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..errors import ConfigError, InputError
from .hostmem import describe_bytes, host_available_bytes
from .vocab import Vocab, ids_in_range

_CHUNK_TOKENS = 1 << 20  # tokens drawn per vectorised chunk: bounds the float64 temporaries to ~8 MB each
_MAX_TOPIC_STRENGTH = 50.0  # e^50 ~ 5e21; A² ~ 3e43 still far from float64 overflow


@dataclass
class SyntheticConfig:
    """The planted corpus's settings (the ``data.synthetic`` config section): Zipfian words, topic-conditioned sentences."""

    vocab_size: int = 10_000
    num_tokens: int = 1_000_000
    num_topics: int = 50
    sentence_length: int = 20
    zipf_exponent: float = 1.0
    topic_strength: float = 5.0
    heldout_sentences: int = 2_000
    seed: int = 0
    # every generator word is a class, also those the training part never draws (count 0, ranked last): the
    # output layer then really has vocab_size classes (at V = 1M, 3M tokens leave ~half of them unseen)
    keep_unseen: bool = False


class GeneratedCorpus(NamedTuple):
    ids: np.ndarray  # (n_train·(L+1) - 1,) int32 vocab ids, -1 between sentences
    heldout_ids: np.ndarray  # (n_heldout·(L+1) - 1,) int32 vocab ids, -1 between sentences
    words: list  # (V_obs,) "w<generator index>", sorted by observed count descending
    counts: np.ndarray  # (V_obs,) int64 training counts, non-increasing
    stats: dict


class TopicModel:
    """The structured topic model over a support of n words: p(w|z) = b_w (1 + A·[home(w) = z]) / Y_z.

    `mass` (n,) positive (normalised here to b), `home` (n,) topic of each word, `prior` (K,), A = e^β - 1 >= 0.
    Exposes exact sampling of words given topics and the O(1)-per-pair closed forms in the module docstring.
    """

    def __init__(self, mass: np.ndarray, home: np.ndarray, prior: np.ndarray, A: float):
        mass = np.asarray(mass, dtype=np.float64)
        if mass.ndim != 1 or len(mass) == 0 or not np.all(mass > 0):
            raise ValueError("mass must be a non-empty vector of positive numbers")
        self.n = len(mass)
        self.K = len(prior)
        self.A = float(A)
        self.prior = np.asarray(prior, dtype=np.float64)  # (K,)
        self.home = np.asarray(home)  # (n,)
        self.b = mass / mass.sum()  # (n,)
        self.log_b = np.log(self.b)  # (n,)
        self.H = np.bincount(self.home, weights=self.b, minlength=self.K)  # (K,) home mass of each topic
        self.Y = 1.0 + self.A * self.H  # (K,) normaliser of p(·|z)
        self.r = self.prior / self.Y  # (K,)
        self.t = self.prior / self.Y**2  # (K,)
        self.R = float(self.r.sum())
        self.T = float(self.t.sum())
        self._samplers_built = False

    # ---------------------------------------------------------------------------------------- probabilities

    def log_p_word_given_topic(self, words: np.ndarray, topics: np.ndarray) -> np.ndarray:
        """log p(w|z) = log b_w + log(1 + A·[home(w) = z]) - log Y_z, elementwise (broadcasting)."""
        words, topics = np.asarray(words), np.asarray(topics)
        same = self.home[words] == topics
        return self.log_b[words] + np.where(same, math.log1p(self.A), 0.0) - np.log(self.Y[topics])

    def log_p_context(self, centers: np.ndarray, contexts: np.ndarray) -> np.ndarray:
        """log p*(c|w) by the closed form: O(1) per pair, float64, shape of the (broadcast) inputs."""
        hw, hc = self.home[centers], self.home[contexts]
        A, t_w = self.A, self.t[hw]
        num = self.T + A * t_w + A * self.t[hc] + (A * A) * np.where(hw == hc, t_w, 0.0)
        den = self.R + A * self.r[hw]
        return self.log_b[contexts] + np.log(num) - np.log(den)

    def log_p_unigram(self, words: np.ndarray) -> np.ndarray:
        """log p(c) = log b_c + log(R + A·r_{home(c)}): the marginal of every position."""
        return self.log_b[words] + np.log(self.R + self.A * self.r[self.home[words]])

    def entropies(self) -> dict:
        """Exact expectations over pairs (w, c) of one sentence, in nats, in O(n + K²):

        H(C|W) = E[-log p*(C|W)] (the Bayes-optimal cross entropy), H(C) = E[-log p(C)] (the unigram predictor's) and
        I(W; C) = H(C) - H(C|W). p*(c|w) = b_c f(h(w), h(c)) depends on w only through z = h(w), and
        P(h(W) = z) = H_z (R + A r_z), so with S_z = Σ_{h(c)=z} b_c log b_c:
        H(C|W) = -Σ_z H_z (R + A r_z) Σ_z' f(z, z') (S_z' + H_z' log f(z, z')),
        H(C)   = -Σ_z (R + A r_z) (S_z + H_z log(R + A r_z)).
        """
        A, K = self.A, self.K
        S = np.bincount(self.home, weights=self.b * self.log_b, minlength=K)  # (K,)
        marg = self.R + A * self.r  # (K,) p(c) / b_c for c of each home topic
        h_c = -float(np.sum(marg * (S + self.H * np.log(marg))))
        h_cw = 0.0
        rows = max(1, (1 << 22) // K)  # bound the (rows, K) temporaries
        for z0 in range(0, K, rows):
            z = np.arange(z0, min(K, z0 + rows))
            num = self.T + A * self.t[z][:, None] + A * self.t[None, :]  # (rows, K)
            num[np.arange(len(z)), z] += A * A * self.t[z]
            f = num / marg[z][:, None]  # (rows, K) p*(c|w) / b_c
            g = np.sum(f * (S[None, :] + self.H[None, :] * np.log(f)), axis=1)  # (rows,)
            h_cw -= float(np.sum(self.H[z] * marg[z] * g))
        return {"bayes_ce": h_cw, "unigram_ce": h_c, "mutual_information": h_c - h_cw}

    # ---------------------------------------------------------------------------------------- sampling

    def _build_samplers(self) -> None:
        self.cdf_base = np.cumsum(self.b)  # (n,)
        self.by_home = np.argsort(self.home, kind="stable")  # (n,) words grouped by home topic
        self.cdf_home = np.cumsum(self.b[self.by_home])  # (n,)
        ends = np.cumsum(np.bincount(self.home, minlength=self.K))  # (K,) segment ends in by_home
        self.seg_start = ends - np.bincount(self.home, minlength=self.K)  # (K,)
        self.seg_end = ends  # (K,)
        start_mass = np.concatenate([[0.0], self.cdf_home])[self.seg_start]  # (K,) C_z
        self.seg_c0 = start_mass
        self.seg_mass = np.concatenate([[0.0], self.cdf_home])[self.seg_end] - start_mass  # (K,) H_z, as tabulated
        self.mix_home = self.A * self.H / self.Y  # (K,) λ_z: probability of a draw from the home words
        self._samplers_built = True

    def sample(self, topics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One word index (in 0..n-1) per entry of `topics`, drawn from p(·|z) by the exact two-part mixture."""
        if not self._samplers_built:
            self._build_samplers()
        topics = np.asarray(topics)
        u = rng.random(topics.shape)  # (N,) the inverse-CDF uniform
        from_home = rng.random(topics.shape) < self.mix_home[topics]  # (N,) which mixture component
        out = np.searchsorted(self.cdf_base, u * self.cdf_base[-1], side="right")  # (N,) base draws
        np.minimum(out, self.n - 1, out=out)  # a u·total that rounds up to the total
        if from_home.any():
            z = topics[from_home]  # (M,)
            x = self.seg_c0[z] + u[from_home] * self.seg_mass[z]  # (M,) uniform on topic z's segment
            pos = np.searchsorted(self.cdf_home, x, side="right")  # (M,)
            pos = np.clip(pos, self.seg_start[z], self.seg_end[z] - 1)  # rounding at the segment's edges
            out[from_home] = self.by_home[pos]
        return out


_PLANTED_BYTES_PER_WORD = 70  # generator arrays per generator word (below)
_VOCAB_BYTES_PER_WORD = 200  # a vocabulary entry (its name, Python string, count, ids) per kept word
_TOKEN_BYTES = 4  # int32 ids


def planted_corpus_bytes(p: dict) -> int:
    """A lower bound on the host memory that generating the planted corpus takes, from its checked settings `p`
    (:func:`_check`): ~70 bytes a generator word (the Zipf masses, home topics, log-masses, the two cumulative tables
    and their index, counts and id maps: O(V + K) float64/int arrays, no V x K table), 4 bytes a token (training and
    held-out, one -1 break a sentence) and, with ``keep_unseen``, ~200 bytes a word for the vocabulary of every
    generator word. Measured (peak RSS): vocab_size 1M with 100k tokens 74 MB; 4M with keep_unseen 1.1 GB; 10k with
    40M tokens 232 MB."""
    length = p["sentence_length"]
    tokens = (-(-p["num_tokens"] // length) + p["heldout_sentences"]) * (length + 1)
    total = _PLANTED_BYTES_PER_WORD * p["vocab_size"] + _TOKEN_BYTES * tokens
    if p.get("keep_unseen"):
        total += _VOCAB_BYTES_PER_WORD * p["vocab_size"]
    return total


def _check_fits(p: dict) -> None:
    """ConfigError, before anything is allocated, when the corpus cannot be generated in the host memory left."""
    need = planted_corpus_bytes(p)
    have, where = host_available_bytes()
    if need > have:
        raise ConfigError(f"the planted corpus with data.synthetic.vocab_size={p['vocab_size']} and "
                          f"data.synthetic.num_tokens={p['num_tokens']} needs ~{describe_bytes(need)} to generate, "
                          f"{where}; lower data.synthetic.vocab_size or data.synthetic.num_tokens")


def _check(cfg: Any) -> dict:
    """Read and validate the SyntheticConfig attributes (any object with these names)."""
    names = (
        "vocab_size", "num_tokens", "num_topics", "sentence_length", "zipf_exponent", "topic_strength",
        "heldout_sentences", "seed",
    )
    out = {}
    for name in names:
        if not hasattr(cfg, name):
            raise ConfigError(f"data.synthetic.{name} is missing from the synthetic corpus config")
        out[name] = getattr(cfg, name)
    ints = {
        "vocab_size": (1, 2**31 - 1), "num_tokens": (1, None), "num_topics": (1, None), "sentence_length": (2, None),
        "heldout_sentences": (0, None), "seed": (0, None),
    }
    for name, (lo, hi) in ints.items():
        v = out[name]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ConfigError(f"data.synthetic.{name} must be an integer, got {v!r}")
        if v < lo or (hi is not None and v > hi):
            rng_txt = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise ConfigError(f"data.synthetic.{name} must be {rng_txt}, got {v}")
        out[name] = int(v)
    for name, lo, hi in (("zipf_exponent", 0.0, None), ("topic_strength", 0.0, _MAX_TOPIC_STRENGTH)):
        v = out[name]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v):
            raise ConfigError(f"data.synthetic.{name} must be a finite number, got {v!r}")
        if v < lo or (hi is not None and v > hi):
            rng_txt = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise ConfigError(f"data.synthetic.{name} must be {rng_txt}, got {v}")
        out[name] = float(v)
    return out


class PlantedCorpus:
    """The planted corpus of the module docstring. `generate()` draws it; then `log_p_context` / `bayes_ce` score
    held-out pairs (vocab ids) against the exact Bayes optimum p*_O(c|w).

    Attributes after `generate()`: `vocab_to_gen` (V_obs,) int64 vocab id -> generator index; `gen_to_vocab` (V,)
    int64 generator index -> vocab id or -1; `model` (TopicModel over all V generator words), `observed` (TopicModel
    over the vocabulary, indexed by vocab id).

    Example::

        pc = PlantedCorpus(SyntheticConfig(vocab_size=1000, num_tokens=100_000))
        ids, heldout_ids, vocab = pc.generate()
        mean, se = pc.bayes_ce(centers, contexts)   # held-out pairs in vocab ids
    """

    def __init__(self, cfg: Any):
        p = _check(cfg)
        _check_fits({**p, "keep_unseen": bool(getattr(cfg, "keep_unseen", False))})
        self.vocab_size = p["vocab_size"]
        self.num_tokens = p["num_tokens"]
        self.num_topics = p["num_topics"]
        self.sentence_length = p["sentence_length"]
        self.zipf_exponent = p["zipf_exponent"]
        self.topic_strength = p["topic_strength"]
        self.heldout_sentences = p["heldout_sentences"]
        self.seed = p["seed"]
        self.keep_unseen = bool(getattr(cfg, "keep_unseen", False))
        ss_model, self._ss_train, self._ss_heldout = np.random.SeedSequence(self.seed).spawn(3)
        V, K = self.vocab_size, self.num_topics
        rng = np.random.default_rng(ss_model)
        self.home = (rng.permutation(V) % K).astype(np.int32)  # (V,) balanced random home topics
        mass = np.arange(1, V + 1, dtype=np.float64) ** -self.zipf_exponent  # (V,) (w+1)^-s
        self.prior = np.full(K, 1.0 / K)  # (K,) uniform
        self.A = math.expm1(self.topic_strength)
        self.model = TopicModel(mass, self.home, self.prior, self.A)
        self.observed: TopicModel | None = None
        self.vocab_to_gen: np.ndarray | None = None
        self.gen_to_vocab: np.ndarray | None = None
        self.stats: dict = {}

    # -------------------------------------------------------------------------------------------- generation

    def _sentences(self, model: TopicModel, n_sent: int, rng: np.random.Generator, out: np.ndarray) -> None:
        """Fill out[:, :L] (out is (n_sent, L+1) int32) with n_sent sentences drawn from `model`, chunk by chunk."""
        L = self.sentence_length
        per_chunk = max(1, _CHUNK_TOKENS // L)
        for s0 in range(0, n_sent, per_chunk):
            n = min(per_chunk, n_sent - s0)
            z = rng.integers(self.num_topics, size=n)  # (n,) one topic per sentence
            words = model.sample(np.repeat(z, L), rng)  # (n·L,)
            out[s0 : s0 + n, :L] = words.reshape(n, L)

    def generate_arrays(self) -> GeneratedCorpus:
        """Draw the corpus: training and held-out ids (vocab ids, -1 between sentences), words, counts, stats.

        Deterministic in cfg.seed: the model, the training sentences and the held-out sentences each come from their
        own child of SeedSequence(seed).
        """
        t0 = time.perf_counter()
        V, L = self.vocab_size, self.sentence_length
        n_train = -(-self.num_tokens // L)  # ceil: at least num_tokens training tokens
        buf = np.empty((n_train, L + 1), dtype=np.int32)  # (n_train, L+1): L words then the -1 break
        self._sentences(self.model, n_train, np.random.default_rng(self._ss_train), buf)
        counts_gen = np.zeros(V, dtype=np.int64)  # (V,)
        per_chunk = max(1, _CHUNK_TOKENS // L)
        for s0 in range(0, n_train, per_chunk):
            counts_gen += np.bincount(buf[s0 : s0 + per_chunk, :L].ravel(), minlength=V)
        observed_gen = np.arange(V) if self.keep_unseen else np.flatnonzero(counts_gen)  # (V_obs,)
        names = np.char.add("w", observed_gen.astype(f"U{len(str(V - 1))}"))  # (V_obs,)
        order = np.lexsort((names, -counts_gen[observed_gen]))  # count descending, ties: word in code-point order
        self.vocab_to_gen = observed_gen[order].astype(np.int64)  # (V_obs,)
        self.gen_to_vocab = np.full(V, -1, dtype=np.int64)  # (V,)
        self.gen_to_vocab[self.vocab_to_gen] = np.arange(len(self.vocab_to_gen))
        g2v = self.gen_to_vocab.astype(np.int32)
        for s0 in range(0, n_train, per_chunk):
            buf[s0 : s0 + per_chunk, :L] = g2v[buf[s0 : s0 + per_chunk, :L]]
        buf[:, L] = -1
        ids = buf.reshape(-1)[:-1]  # (n_train·(L+1) - 1,) no trailing break
        counts = counts_gen[self.vocab_to_gen]  # (V_obs,)
        words = names[order].tolist()
        del names

        # the model restricted to the vocabulary, indexed by vocab id: held-out sentences and p*_O come from it
        self.observed = TopicModel(self.model.b[self.vocab_to_gen], self.home[self.vocab_to_gen], self.prior, self.A)
        n_held = self.heldout_sentences
        hbuf = np.empty((n_held, L + 1), dtype=np.int32)  # (n_held, L+1)
        self._sentences(self.observed, n_held, np.random.default_rng(self._ss_heldout), hbuf)
        hbuf[:, L] = -1
        heldout_ids = hbuf.reshape(-1)[:-1] if n_held else np.empty(0, dtype=np.int32)

        # P_z(O^c) = 1 - (B_O + A·H_z^O) / Y_z; averaged over π
        b_obs = self.model.b[self.vocab_to_gen]  # (V_obs,)
        B_O = float(b_obs.sum())
        H_O = np.bincount(self.home[self.vocab_to_gen], weights=b_obs, minlength=self.num_topics)  # (K,)
        unseen_by_topic = 1.0 - (B_O + self.A * H_O) / self.model.Y  # (K,)
        stats = {
            "train_sentences": n_train,
            "train_tokens": n_train * L,
            "heldout_sentences": n_held,
            "heldout_tokens": n_held * L,
            "vocab_size": len(words),
            "unseen_words": V - len(words),
            "unseen_mass": float(self.prior @ unseen_by_topic),
            "seconds": time.perf_counter() - t0,
        }
        self.stats = stats
        return GeneratedCorpus(ids, heldout_ids, words, counts, stats)

    def generate(self):
        """`(ids, heldout_ids, vocab)`: `generate_arrays()` with the vocabulary as a `Vocab(words, counts)`."""
        g = self.generate_arrays()

        vocab = Vocab(g.words, g.counts)
        if list(vocab.words) != g.words:  # ids are ranks in OUR order; a re-sorting Vocab would break them
            raise RuntimeError("Vocab reordered the planted corpus's words; ids would not match the vocabulary")
        # checked once here: the trainers' losses do not check ids per step
        assert ids_in_range(g.ids, len(vocab)) and ids_in_range(g.heldout_ids, len(vocab)), "ids outside the vocab"
        return g.ids, g.heldout_ids, vocab

    # -------------------------------------------------------------------------------------------- scoring

    def _require_generated(self) -> TopicModel:
        if self.observed is None:
            raise RuntimeError("call generate() first: the vocabulary (and so p*_O) is fixed by the training part")
        return self.observed

    def _ids(self, ids, n: int, what: str) -> np.ndarray:
        a = np.asarray(ids)
        if a.dtype.kind not in "iu":
            raise InputError(f"{what} must be integer ids, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= n):
            raise InputError(f"{what} must be ids in [0, {n}), got values in [{a.min()}, {a.max()}]")
        return a.astype(np.int64, copy=False)

    def log_p_context(self, center_ids, context_ids) -> np.ndarray:
        """log p*_O(c|w) in vocab ids (float64, shape of the broadcast inputs): the exact Bayes-optimal log
        probability of context c given center w for pairs of the held-out sentences, normalised over the vocabulary."""
        m = self._require_generated()
        w = self._ids(center_ids, m.n, "center ids")
        c = self._ids(context_ids, m.n, "context ids")
        return m.log_p_context(w, c)

    def log_p_unigram(self, context_ids) -> np.ndarray:
        """log p_O(c) in vocab ids: the marginal (unigram) predictor of held-out words, ignoring the center."""
        m = self._require_generated()
        return m.log_p_unigram(self._ids(context_ids, m.n, "context ids"))

    def log_p_context_generator(self, center_gen, context_gen) -> np.ndarray:
        """log p*(c|w) over all V generator words (generator indices), before restriction to the vocabulary."""
        w = self._ids(center_gen, self.vocab_size, "center generator indices")
        c = self._ids(context_gen, self.vocab_size, "context generator indices")
        return self.model.log_p_context(w, c)

    def expected_ce(self) -> dict:
        """Exact expected cross entropies of held-out pairs (no Monte-Carlo noise), see `TopicModel.entropies`:
        {"bayes_ce": H(C|W), "unigram_ce": H(C), "mutual_information": I(W; C)} under the vocabulary model."""
        return self._require_generated().entropies()

    @staticmethod
    def _mean_se(nll: np.ndarray) -> tuple[float, float]:
        n = nll.size
        if n == 0:
            raise InputError("no pairs to score: pass at least one (center, context) pair")
        se = float(nll.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        return float(nll.mean()), se

    def bayes_ce(self, centers, contexts) -> tuple[float, float]:
        """(mean, standard error) of -log p*_O(c|w) over the given pairs: the Monte-Carlo estimate of the Bayes-optimal
        held-out cross entropy in nats (unbiased); se = sample std (ddof 1) / sqrt(n), pairs taken as independent."""
        return self._mean_se(-self.log_p_context(centers, contexts))

    def unigram_ce(self, contexts) -> tuple[float, float]:
        """(mean, standard error) of -log p_O(c): the cross entropy of the best predictor that ignores the center."""
        return self._mean_se(-self.log_p_unigram(contexts))
