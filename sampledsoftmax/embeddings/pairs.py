"""Skip-gram (center, context) pairs, generated with vectorised numpy: no Python loop per token or per pair.

Input: ``ids`` int (N,) token ids with ``-1`` marking a sentence break (as :func:`.corpus.load_corpus` and the
synthetic corpus produce them), and the vocabulary ``counts`` (V,).

One epoch of :class:`SkipGramPairs`, as word2vec.c / gensim:

1. **Frequent-word subsampling**: token ``t`` of word ``w`` is kept with probability ``keep_probability(counts,
   sample)[w]`` and the dropped tokens are removed *before* windowing (so windows reach over dropped words). Uniforms
   from ``np.random.default_rng([seed, epoch, 0])``, one per token in corpus order. Breaks are always kept.
2. **Windows**: the kept stream is cut into chunks of ``chunk_tokens`` (2**16) center positions. In chunk ``c`` every
   center ``i`` draws ``b_i ~ U{1..window}`` (gensim's reduced window; ``b_i = window`` when ``dynamic_window`` is
   off) from ``np.random.default_rng([seed, epoch, 1, c])``, and emits the pairs ``(x_i, x_j)`` for
   ``0 < |i - j| <= b_i`` with no break between ``i`` and ``j``. Contexts are read across chunk edges, so chunking
   loses no pair. Per offset ``o = 1..window`` all centers of the chunk are handled at once.
3. **Shuffle**: the pairs of a chunk are shuffled uniformly (same generator, after its window draws), and the chunks
   are visited in the order ``np.random.default_rng([seed, epoch, 2]).permutation(num_chunks)``. A batch is thus a
   uniform sample of one ~65k-token stretch of text, and consecutive stretches are far apart. Chunks are this small
   because a shuffle that fits in the CPU cache is ~4x cheaper per pair than one over 2**20 tokens (~6M pairs).
   ``mix_chunks = K > 1``: the visiting order is cut into groups of K consecutive chunks, and the pairs of a group
   are shuffled together once more (``np.random.default_rng([seed, epoch, 3, g])`` for group ``g``): a batch is then
   a uniform sample of K stretches from anywhere in the corpus. On text whose topic changes by the page (manuals,
   Wikipedia articles, the Debian corpus) a batch of one stretch is one topic, and ~500 consecutive batches drag the
   output layer toward it: the held-out CE of a short run rises where a mixed stream lets it fall. K = 1 is word2vec's
   sequential stream (and the cheapest).
4. **Batches**: the pair stream of the epoch (chunks concatenated in that order) is cut into batches of
   ``batch_size`` pairs; only the epoch's last batch may be shorter. Batches are numpy int64 ``(B,)`` arrays.

Everything is a function of ``(seed, epoch)``: ``epoch_batches(epoch, start_batch=k)`` yields exactly the batches
``k, k+1, ...`` of ``epoch_batches(epoch)``. It finds the chunk holding pair ``k * batch_size`` by *counting* the
pairs of the chunks before it (the window draws alone, ``sum_i min(b_i, left_i) + min(b_i, right_i)``), without
generating them.

Subsampling formula (word2vec.c, gensim ``sample``): with ``f_w = count_w / sum(counts)``,
``keep_w = min(1, (sqrt(f_w / sample) + 1) * sample / f_w)``; ``sample = 0`` keeps everything.

:func:`heldout_pairs`: every pair within the full window (no subsampling, no reduced window), or drawn as the training
stream draws them (subsampling, reduced windows), optionally capped to ``max_pairs`` by a seeded uniform choice
without replacement, then shuffled.
"""

from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np

from ..data.subsample import keep_probability  # noqa: F401  (re-exported: part of this module's API)
from ..errors import ConfigError, DataError

__all__ = ["keep_probability", "SkipGramPairs", "heldout_pairs"]

DEFAULT_CHUNK_TOKENS = 1 << 16
_SUBSAMPLE, _WINDOWS, _ORDER, _MIX = 0, 1, 2, 3  # tags of the per-epoch random streams
_HELDOUT_PAIRS_TAG = 0x50414952  # "PAIR"
_BLOCK = 1 << 20  # tokens per block where a loop over blocks bounds memory

Batch = Tuple[np.ndarray, np.ndarray]


def _check_ids(ids, num_classes: Optional[int]) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
    if len(ids):
        lo, hi = int(ids.min()), int(ids.max())
        if lo < -1 or (num_classes is not None and hi >= num_classes):
            raise ValueError(f"ids must lie in [-1, {num_classes}) (-1 = sentence break), got [{lo}, {hi}]")
    return ids


def _unpack(packed: np.ndarray) -> Batch:
    """``center << 32 | context`` int64 ``(P,)`` -> (centers, contexts)."""
    return packed >> 32, packed & 0xFFFFFFFF


def _subsample(ids: np.ndarray, keep_ext: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """word2vec's subsampling of a token stream: token ``t`` kept when a uniform is below ``keep_ext[t]``
    (``keep_ext`` (V+1,): the keep probabilities with 1 appended, so a break, -1, is always kept). One uniform per
    token, drawn in order, ``_BLOCK`` tokens at a time (the same result for any block size)."""
    parts = []
    for a in range(0, len(ids), _BLOCK):
        block = ids[a:a + _BLOCK]
        parts.append(block[rng.random(len(block)) < keep_ext[block]])
    return np.concatenate(parts) if parts else ids[:0]


def _window_room(ext: np.ndarray, window: int) -> Tuple[np.ndarray, np.ndarray]:
    """Words available left/right of every position of ``ext`` within its sentence, clipped to ``window``.

    Positions nearer than ``window`` to an end of ``ext`` are exact only if that end is an end of the corpus; callers
    pad ``ext`` by ``window`` tokens on each side. Breaks get 0 both ways. Returns two int32 ``(len(ext),)``.
    """
    n = len(ext)
    pos = np.arange(n, dtype=np.int32)  # (n,)
    is_break = ext < 0
    prev_break = np.maximum.accumulate(np.where(is_break, pos, -1))  # (n,) last break at or before i, else -1
    next_break = np.minimum.accumulate(np.where(is_break, pos, n)[::-1])[::-1]  # (n,) first break at or after i
    left = np.minimum(pos - prev_break - 1, window)
    right = np.minimum(next_break - pos - 1, window)
    np.maximum(left, 0, out=left)  # a break: -1 -> 0
    np.maximum(right, 0, out=right)
    return left, right


class SkipGramPairs:
    """The training stream of skip-gram pairs of a corpus (see the module docstring for the exact procedure).

    Args:
        ids: int ``(N,)`` token ids, ``-1`` = sentence break.
        counts: ``(V,)`` word counts (the vocabulary's), for subsampling.
        window: maximum distance between center and context (gensim ``window``).
        sample: subsampling threshold (gensim ``sample``); 0 disables it.
        dynamic_window: draw each center's window ``b ~ U{1..window}`` (gensim/word2vec) instead of the full one.
        batch_size: pairs per batch.
        seed: with the epoch, determines everything.
        chunk_tokens: center positions per chunk (memory per chunk: <= 3 * 8 * 2 * window * chunk_tokens bytes).
        mix_chunks: chunks whose pairs are shuffled together (memory: that many chunks' pairs at once).

    Example:
        >>> p = SkipGramPairs(np.array([0, 1, 2, -1, 1, 0]), np.array([2, 2, 1]), window=1, sample=0,
        ...                   dynamic_window=False, batch_size=4, seed=0)
        >>> p.num_pairs(0), [len(c) for c, x in p.epoch_batches(0)]
        (6, [4, 2])
    """

    def __init__(self, ids, counts, window: int = 5, sample: float = 1e-3, dynamic_window: bool = True,
                 batch_size: int = 1024, seed: int = 0, chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                 mix_chunks: int = 1) -> None:
        for name, value in (("data.window", window), ("optim.batch_size", batch_size), ("chunk_tokens", chunk_tokens),
                            ("data.mix_chunks", mix_chunks)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ConfigError(f"{name}={value!r} must be an integer >= 1")
        if isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise ConfigError(f"seed={seed!r} must be an integer >= 0")
        self.counts = np.asarray(counts, dtype=np.int64)  # (V,)
        self.ids = _check_ids(ids, len(self.counts))  # (N,)
        self.window, self.sample, self.dynamic_window = int(window), float(sample), bool(dynamic_window)
        self.batch_size, self.seed, self.chunk_tokens = int(batch_size), int(seed), int(chunk_tokens)
        self.mix_chunks = int(mix_chunks)
        # keep[-1] = 1: indexing with a break (-1) reads the appended entry, so breaks are always kept
        self._keep = np.append(keep_probability(self.counts, self.sample), 1.0)  # (V+1,)
        words = self.ids >= 0
        if not np.any(words[:-1] & words[1:]):
            raise DataError("the corpus has no skip-gram pairs: no sentence has two words; use a larger corpus or "
                            "lower data.min_count")
        self._state: Optional[tuple] = None  # (epoch, kept stream, chunk pair counts or None)

    # ---- per-epoch state ---------------------------------------------------------------------------------------------

    def subsampled_ids(self, epoch: int) -> np.ndarray:
        """The epoch's token stream after subsampling (int, breaks kept): ``(N',)``."""
        return self._epoch(epoch)[1]

    def _epoch(self, epoch: int) -> tuple:
        if self._state is not None and self._state[0] == epoch:
            return self._state
        if self.sample == 0:
            kept = self.ids
        else:
            kept = _subsample(self.ids, self._keep, np.random.default_rng([self.seed, epoch, _SUBSAMPLE]))
        self._state = (epoch, kept, None)
        return self._state

    def _num_chunks(self, kept: np.ndarray) -> int:
        return -(-len(kept) // self.chunk_tokens)

    def _chunk_room(self, kept: np.ndarray, epoch: int, chunk: int):
        """Padded slice of the stream around chunk ``chunk``, the centers' offset in it, and how many contexts each
        center has to its left and right (its reduced window applied), plus the chunk's generator."""
        s = chunk * self.chunk_tokens
        e = min(s + self.chunk_tokens, len(kept))
        lo = max(0, s - self.window)
        ext = kept[lo:min(len(kept), e + self.window)]  # (n + <= 2 window,)
        left, right = _window_room(ext, self.window)
        off = s - lo
        left, right = left[off:off + e - s], right[off:off + e - s]  # (n,)
        rng = np.random.default_rng([self.seed, epoch, _WINDOWS, chunk])
        if self.dynamic_window and self.window > 1:
            b = rng.integers(1, self.window + 1, size=e - s, dtype=np.int32)  # (n,) reduced window
            np.minimum(left, b, out=left)
            np.minimum(right, b, out=right)
        return ext, off, left, right, rng

    def chunk_pair_counts(self, epoch: int) -> np.ndarray:
        """Number of pairs of each chunk (storage order), int64 ``(num_chunks,)``, counted without generating."""
        ep, kept, counts = self._epoch(epoch)
        if counts is None:
            counts = np.zeros(self._num_chunks(kept), dtype=np.int64)
            for c in range(len(counts)):
                _, _, left, right, _ = self._chunk_room(kept, epoch, c)
                counts[c] = int(left.sum(dtype=np.int64)) + int(right.sum(dtype=np.int64))
            self._state = (ep, kept, counts)
        return counts

    def num_pairs(self, epoch: int) -> int:
        """Exact number of pairs in ``epoch``."""
        return int(self.chunk_pair_counts(epoch).sum())

    def num_batches(self, epoch: int) -> int:
        return -(-self.num_pairs(epoch) // self.batch_size)

    def estimated_pairs_per_epoch(self) -> int:
        """Pairs per epoch for a learning-rate schedule: the exact count of epoch 0 (other epochs differ only by the
        randomness of subsampling and window draws, relatively ~1/sqrt(pairs))."""
        return self.num_pairs(0)

    # ---- generation --------------------------------------------------------------------------------------------------

    def chunk_pairs(self, epoch: int, chunk: int) -> Batch:
        """All pairs of one chunk, shuffled: (centers, contexts), int64 ``(P,)`` each."""
        return _unpack(self._chunk_packed(epoch, chunk))

    def _chunk_packed(self, epoch: int, chunk: int) -> np.ndarray:
        """The chunk's pairs, shuffled, each packed into one int64 ``center << 32 | context``: ``(P,)``."""
        ep, kept, _ = self._epoch(epoch)
        ext, off, left, right, rng = self._chunk_room(kept, epoch, chunk)
        # a pair is packed into one int64, center << 32 | context (ids < 2**31): one array to fill and shuffle
        ext = ext.astype(np.int64)  # (n + 2w,)
        ext_high = ext << 32  # (n + 2w,)
        total = int(left.sum(dtype=np.int64)) + int(right.sum(dtype=np.int64))
        packed = np.empty(total, dtype=np.int64)  # (P,)
        pos = np.arange(off, off + len(left), dtype=np.int64)  # (n,) center positions in ext
        k = 0
        for o in range(1, self.window + 1):  # per offset, all centers at once
            for room, sign in ((left, -1), (right, 1)):
                p = pos[room >= o]  # (m,) centers with a context at distance o on this side
                m = len(p)
                if m:
                    np.bitwise_or(ext_high[p], ext[p + sign * o], out=packed[k:k + m])
                    k += m
        assert k == total
        # pairs are shuffled in place; chunks are small (2**16 tokens) so this stays in cache
        rng.shuffle(packed)
        return packed

    def chunk_order(self, epoch: int) -> np.ndarray:
        """The order in which the epoch visits its chunks: int64 ``(num_chunks,)``."""
        kept = self._epoch(epoch)[1]
        return np.random.default_rng([self.seed, epoch, _ORDER]).permutation(self._num_chunks(kept))

    def _unit_pairs(self, epoch: int, order: np.ndarray, unit: int) -> Batch:
        """The pairs of the `unit`-th group of ``mix_chunks`` chunks in visiting order, shuffled together (one chunk
        when ``mix_chunks`` is 1: its own shuffle only)."""
        k = self.mix_chunks
        chunks = order[unit * k:(unit + 1) * k]
        if k == 1:
            return self.chunk_pairs(epoch, int(chunks[0]))
        packed = np.concatenate([self._chunk_packed(epoch, int(c)) for c in chunks])  # (P,)
        np.random.default_rng([self.seed, epoch, _MIX, unit]).shuffle(packed)
        return _unpack(packed)

    def epoch_batches(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Batches ``start_batch, start_batch + 1, ...`` of ``epoch``: (centers, contexts) int64 ``(B,)`` each."""
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        order = self.chunk_order(epoch)
        k = self.mix_chunks
        units = -(-len(order) // k)
        bs = self.batch_size
        first, skip = 0, 0
        if start_batch > 0:
            sizes = self.chunk_pair_counts(epoch)[order]  # (C,) in visiting order
            sizes = np.add.reduceat(sizes, np.arange(0, len(sizes), k)) if len(sizes) else sizes  # (units,)
            ends = np.cumsum(sizes)  # (units,)
            start = start_batch * bs
            if len(ends) == 0 or start >= ends[-1]:
                return
            first = int(np.searchsorted(ends, start, side="right"))  # the unit holding pair `start`
            skip = start - (int(ends[first - 1]) if first else 0)
        pend_c = pend_x = None  # the head of a batch that spans units (< bs pairs)
        for q in range(first, units):
            c, x = self._unit_pairs(epoch, order, q)
            if q == first and skip:
                c, x = c[skip:], x[skip:]
            i = 0
            if pend_c is not None:
                need = bs - len(pend_c)
                if len(c) < need:
                    pend_c, pend_x = np.concatenate([pend_c, c]), np.concatenate([pend_x, x])
                    continue
                yield np.concatenate([pend_c, c[:need]]), np.concatenate([pend_x, x[:need]])
                pend_c = pend_x = None
                i = need
            while len(c) - i >= bs:
                yield c[i:i + bs], x[i:i + bs]
                i += bs
            if i < len(c):
                pend_c, pend_x = c[i:], x[i:]
        if pend_c is not None:
            yield pend_c, pend_x


def heldout_pairs(ids, window: int, max_pairs: Optional[int] = None, seed: int = 0, block: int = _BLOCK, *,
                  keep=None, dynamic_window: bool = False) -> Batch:
    """Every pair ``(ids[i], ids[j])``, ``0 < |i - j| <= window``, same sentence; by default no subsampling, no
    reduced window ("all pairs").

    Drawn like the training stream instead (so that the held-out cross entropy measures the model against the
    distribution its batches come from): ``keep`` (float ``(V,)``, ``keep_probability(counts, sample)``) drops
    token ``t`` with probability ``1 - keep[t]`` first (breaks stay), and ``dynamic_window`` gives each center a
    reduced window ``b_i ~ U{1..window}``: pair ``(i, j)`` is kept when ``|i - j| <= b_i``. Both draws come from
    ``np.random.default_rng([seed, 0x50414952, 1])``, independent of ``block``.

    With ``max_pairs`` (None: no cap) and more pairs than that, ``max_pairs`` of them are chosen uniformly without
    replacement by ``np.random.default_rng([seed, 0x50414952])``; the result is shuffled by the same generator.
    Returns (centers, contexts), int64 ``(P,)`` each. Memory: ``block`` positions (2**20) per offset at a time, plus
    the output (and one int8 per position with ``dynamic_window``).
    """
    ids = _check_ids(ids, None)
    if isinstance(window, bool) or int(window) != window or window < 1:
        raise ConfigError(f"data.window={window!r} must be an integer >= 1")
    if max_pairs is not None and (isinstance(max_pairs, bool) or int(max_pairs) != max_pairs or max_pairs < 0):
        raise ConfigError(f"data.max_heldout_pairs={max_pairs!r} must be null or an integer >= 0")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    window = int(window)
    draw = np.random.default_rng([seed, _HELDOUT_PAIRS_TAG, 1])
    if keep is not None:
        ids = _subsample(ids, np.append(np.asarray(keep, dtype=np.float64), 1.0), draw)
    n = len(ids)
    word = ids >= 0  # (n,)
    sentence = np.cumsum(~word, dtype=np.int64)  # (n,) changes at every break
    reach = None  # (n,) each center's reduced window
    if dynamic_window and window > 1:
        reach = draw.integers(1, window + 1, size=n, dtype=np.int8)

    def valid(o: int, left_is_center: bool, a: int) -> np.ndarray:  # pairs (i, i + o) for i in [a, a + block)
        b = min(a + block, n - o)
        ok = word[a:b] & word[a + o:b + o] & (sentence[a:b] == sentence[a + o:b + o])
        if reach is not None:  # the center's reduced window must reach the context
            ok &= (reach[a:b] if left_is_center else reach[a + o:b + o]) >= o
        return ok

    keys = [(o, left_is_center, a) for o in range(1, window + 1) for left_is_center in (True, False)
            for a in range(0, max(n - o, 0), block)]  # enumeration order: independent of the block size
    sizes = {k: int(np.count_nonzero(valid(*k))) for k in keys}
    total = sum(sizes.values())
    rng = np.random.default_rng([seed, _HELDOUT_PAIRS_TAG])
    chosen = None
    if max_pairs is not None and total > max_pairs:
        chosen = np.sort(rng.choice(total, size=int(max_pairs), replace=False))  # (P,) indices into the enumeration
    centers, contexts, base = [], [], 0
    for k in keys:
        o, left_is_center, a = k
        size = sizes[k]
        if size == 0:
            continue
        sel = a + np.flatnonzero(valid(*k))  # (size,) left positions
        if chosen is not None:
            lo, hi = np.searchsorted(chosen, [base, base + size])
            sel = sel[chosen[lo:hi] - base]
        base += size
        c, x = (sel, sel + o) if left_is_center else (sel + o, sel)
        centers.append(ids[c])
        contexts.append(ids[x])
    if not centers:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    centers_all = np.concatenate(centers).astype(np.int64, copy=False)
    contexts_all = np.concatenate(contexts).astype(np.int64, copy=False)
    perm = rng.permutation(len(centers_all))
    return centers_all[perm], contexts_all[perm]
