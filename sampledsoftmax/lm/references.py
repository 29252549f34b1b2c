"""Reference numbers that give a language model's held-out bits per byte a scale, on the same held-out text.

Three references, from cheap to strong, each in bits per byte (bpb) of the held-out text so that models over
different vocabularies compare on one axis:

- :func:`compressor_bpb`: gzip, bz2 and xz, each given the training text as context (and alone).
- :func:`unigram_bpb`: the add-one unigram model of the training counts.
- :func:`kneser_ney_bpb`: an interpolated Kneser–Ney n-gram model of the training id stream (vectorised numpy:
  20M training tokens at V = 130k in seconds, see its docstring).

The token-level references score ``heldout[start:]`` (``start=1`` by default: the LM evaluation has no context
for the first token and skips it too) and divide the bits by ``heldout_bytes[start:].sum()``, the bytes of text
those tokens stand for. Only numpy and the standard library: this module imports no torch.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["compressor_bpb", "unigram_bpb", "kneser_ney_bpb"]

# xz -9e: a 64 MiB dictionary holds all of the default 16 MiB context (-6's 8 MiB sees only its last half:
# +1.5% bits on 65 MB of Zipf words, +0.3% on 9 MB of docs), and EXTREME costs within 10% of -9's time
# (~1.2 MB/s here) for up to 0.5% fewer bits on real text: the strongest xz a reader knows, at no real cost.
XZ_PRESET = 9 | lzma.PRESET_EXTREME
_COMPRESSORS = {  # xz first: the longest jobs start first in the thread pool
    "xz": lambda data: lzma.compress(data, format=lzma.FORMAT_XZ, preset=XZ_PRESET),
    "bz2": lambda data: bz2.compress(data, compresslevel=9),
    "gzip": lambda data: gzip.compress(data, compresslevel=9, mtime=0),  # mtime=0: the same bytes every run
}


def _text_bytes(lines: Sequence[str]) -> bytes:
    # surrogateescape: lines decoded with errors="surrogateescape" give back their original bytes
    return ("\n".join(lines) + "\n").encode("utf-8", errors="surrogateescape") if len(lines) else b""


def compressor_bpb(train_lines: List[str], heldout_lines: List[str], *,
                   context_bytes: int = 16 << 20) -> Dict[str, float]:
    """Bits per byte of the held-out text under gzip, bz2 and xz, with the training text as context and alone.

    Texts are the lines joined with ``"\\n"`` plus a trailing ``"\\n"``, encoded as UTF-8 (``surrogateescape``:
    lines read with that error handler give back their original bytes). With ``held`` the held-out bytes and
    ``ctx`` the last ``context_bytes`` bytes of the training text, for each compressor ``C``:

    - ``"gzip"``, ``"bz2"``, ``"xz"``: ``(len(C(ctx + held)) - len(C(ctx))) * 8 / len(held)``, the extra bits
      the compressor spends on the held-out text once it has read the context (container headers cancel).
    - ``"gzip_alone"``, ``"bz2_alone"``, ``"xz_alone"``: ``len(C(held)) * 8 / len(held)``, what ``C -9 < heldout
      | wc -c`` gives (headers included).

    ``C`` is ``gzip -9`` (deflate: a 32 KiB window, so only the last 32 KiB of context matter), ``bz2 -9``
    (900 kB blocks: held-out text sees at most the context that shares its first block; how much depends on where
    the context ends), and ``xz -9e`` (LZMA2, 64 MiB dictionary: the whole default context; see ``XZ_PRESET``).
    ``context_bytes=0`` gives an empty context. The nine compressions run in threads (the compressors release the
    GIL). A 16 MiB context and 2.6 MB of held-out text: ~45 s of CPU, 90% of it xz (~1.2 MB/s), ~22 s on 2 cores.

    Example:
        >>> lines = ["the cat sat on the mat"] * 200
        >>> out = compressor_bpb(lines, lines)
        >>> out["xz"] < out["xz_alone"] < 8.0
        True
    """
    if not isinstance(context_bytes, (int, np.integer)) or isinstance(context_bytes, bool) or context_bytes < 0:
        raise ValueError(f"context_bytes must be a non-negative int, got {context_bytes!r}")
    held = _text_bytes(heldout_lines)
    if not held:
        raise ValueError("the held-out text is empty: bits per byte are undefined")
    train = _text_bytes(train_lines)
    ctx = train[len(train) - context_bytes:] if context_bytes else b""
    jobs = {(name, part): (fn, data) for name, fn in _COMPRESSORS.items()
            for part, data in (("ctx", ctx), ("both", ctx + held), ("alone", held))}
    with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        sizes = dict(zip(jobs, pool.map(lambda job: len(job[0](job[1])), jobs.values())))
    out = {name: (sizes[name, "both"] - sizes[name, "ctx"]) * 8 / len(held) for name in ("gzip", "bz2", "xz")}
    out.update({name + "_alone": sizes[name, "alone"] * 8 / len(held) for name in ("gzip", "bz2", "xz")})
    return out


def _check_ids(name: str, ids, num_classes: int) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer array of token ids, got {ids.dtype} {ids.shape}")
    if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= num_classes):
        raise ValueError(f"{name} ids must lie in [0, {num_classes}), got [{int(ids.min())}, {int(ids.max())}]")
    return ids.astype(np.int64, copy=False)


def _scored_bytes(heldout: np.ndarray, heldout_bytes, start: int) -> float:
    """The byte count of heldout[start:], after checking `start` and `heldout_bytes` against `heldout`."""
    if not isinstance(start, (int, np.integer)) or isinstance(start, bool) or not 0 <= start < len(heldout):
        raise ValueError(f"start must be an int in [0, len(heldout) = {len(heldout)}), got {start!r}")
    nbytes = np.asarray(heldout_bytes)
    if nbytes.shape != heldout.shape or not (np.issubdtype(nbytes.dtype, np.integer)
                                             or np.issubdtype(nbytes.dtype, np.floating)):
        raise ValueError(f"heldout_bytes must be numbers with the shape of heldout {heldout.shape}, "
                         f"got {nbytes.dtype} {nbytes.shape}")
    if len(nbytes) and not (nbytes >= 0).all():
        raise ValueError("heldout_bytes must be non-negative")
    total = float(nbytes[start:].sum(dtype=np.float64))
    if not total > 0:
        raise ValueError("heldout_bytes[start:] sums to 0: bits per byte are undefined")
    return total


def unigram_bpb(counts: np.ndarray, heldout: np.ndarray, heldout_bytes: np.ndarray, *, start: int = 1) -> float:
    """Bits per byte of ``heldout[start:]`` under the add-one unigram model of the training counts.

    ``p(c) = (counts[c] + 1) / (N + V)`` with ``N = counts.sum()`` and ``V = len(counts)`` classes (every class,
    seen or not, gets p > 0). Returns ``sum_t -log2 p(heldout[t]) / heldout_bytes[start:].sum()`` over
    ``t >= start``. ``counts`` are typically ``np.bincount(train, minlength=V)``.

    Example:
        >>> round(unigram_bpb(np.array([1, 0]), np.array([0, 0, 1]), np.array([1, 1, 1])), 6)  # p = 2/3, 1/3
        1.084963
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or not len(counts) or not (np.issubdtype(counts.dtype, np.integer)
                                                    or np.issubdtype(counts.dtype, np.floating)):
        raise ValueError(f"counts must be a non-empty 1-D array of numbers, got {counts.dtype} {counts.shape}")
    if not (counts >= 0).all():
        raise ValueError("counts must be non-negative")
    heldout = _check_ids("heldout", heldout, len(counts))
    nbytes = _scored_bytes(heldout, heldout_bytes, start)
    counts = counts.astype(np.float64)
    log2p = np.log2(counts[heldout[start:]] + 1.0) - np.log2(counts.sum() + len(counts))  # (M - start,)
    return float(-log2p.sum() / nbytes)


# ---- interpolated Kneser–Ney ------------------------------------------------------------------------------------

_MAX_KEY = 2 ** 63  # n-gram keys are base-V int64 numbers: V ** order must not exceed this


def _history_lengths(stream: np.ndarray, order: int, eos: Optional[int]) -> np.ndarray:
    """L[t]: how many tokens before t the model conditions on: min(t, order - 1), or with `eos`, only back to the
    most recent eos before t (kept as the first history token, like <s>)."""
    t = np.arange(len(stream), dtype=np.int64)  # (N,)
    if eos is None:
        return np.minimum(t, order - 1).astype(np.int8)
    last = np.maximum.accumulate(np.where(stream == eos, t, 0))  # (N,) index of the latest eos at or before t
    before = np.concatenate([[0], last[:-1]])  # (N,) the latest eos strictly before t, 0 if none
    return np.minimum(t - before, order - 1).astype(np.int8)


def _gram_keys(stream: np.ndarray, num_classes: int, order: int) -> List[np.ndarray]:
    """keys[k][t] = stream[t-k+1 .. t] as a base-V number (int64), for t >= k - 1 (-1 before); keys[0] unused."""
    keys = [np.empty(0, np.int64), stream]
    for k in range(2, order + 1):
        key = np.full(len(stream), -1, dtype=np.int64)  # (N,)
        key[k - 1:] = keys[k - 1][k - 2:-1] * num_classes + stream[k - 1:]
        keys.append(key)
    return keys


def _group(sorted_keys: np.ndarray, weights: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Distinct keys of a sorted array and, per key, its number of occurrences (or the sum of its `weights`)."""
    if not len(sorted_keys):
        return sorted_keys, np.zeros(0, np.int64)
    first = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))  # (U,)
    if weights is None:
        return sorted_keys[first], np.diff(np.append(first, len(sorted_keys)))
    return sorted_keys[first], np.add.reduceat(weights, first)


def _lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[i] where keys[i] == query (keys sorted, distinct), 0 where the query is absent."""
    if not len(keys):
        return np.zeros(len(queries), values.dtype)
    at = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)  # (Q,)
    return np.where(keys[at] == queries, values[at], 0)


class _Level:
    """One order k of the model: the k-grams with their (adjusted) counts, and per context (the first k-1 ids):
    the total count and the number of distinct words that follow it."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray, num_classes: int, discount: Optional[float]):
        self.keys, self.counts = keys, counts  # sorted k-gram keys, their counts (all > 0)
        context = keys // num_classes  # (U,) sorted, as the keys are
        self.contexts, self.totals = _group(context, counts)
        _, self.distinct = _group(context)
        n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
        # Chen & Goodman's estimate; a level with no singletons (tiny data) has nothing to estimate it from
        self.discount = discount if discount is not None else (n1 / (n1 + 2 * n2) if n1 else 0.5)


def _fit_levels(train: np.ndarray, num_classes: int, order: int, discount: Optional[float],
                eos: Optional[int]) -> List[_Level]:
    """The adjusted counts of every order 1..n (see kneser_ney_bpb), from the top order down."""
    hist = _history_lengths(train, order, eos)  # (N,)
    keys = _gram_keys(train, num_classes, order)
    # events with exactly k-1 history tokens (stream start, after an eos) have no left neighbour: raw counts
    short = [np.empty(0, np.int64)] + [keys[k][hist == k - 1] for k in range(1, order)]
    top = keys[order][hist == order - 1]  # every full-history event counts once: raw counts
    del keys, hist
    levels: List[Optional[_Level]] = [None] * (order + 1)
    levels[order] = _Level(*_group(np.sort(top)), num_classes, discount)
    del top
    for k in range(order - 1, 0, -1):
        # the (k+1)-grams of events with >= k history tokens are exactly the keys of level k+1: the number of
        # distinct ones ending in x is x's continuation count N1+(. x)
        suffixes = levels[k + 1].keys % num_classes ** k  # (U,)
        if k == 1:  # ids < V: a histogram instead of a sort
            counts_k = np.bincount(suffixes, minlength=num_classes)
            keys_k = np.flatnonzero(counts_k)
            counts_k = counts_k[keys_k]
        else:
            keys_k, counts_k = _group(np.sort(suffixes))
        del suffixes
        if len(short[k]):
            short_keys, short_counts = _group(np.sort(short[k]))
            merged = np.concatenate([keys_k, short_keys])
            order_ = np.argsort(merged, kind="stable")  # two sorted runs: timsort merges them in linear time
            keys_k, counts_k = _group(merged[order_], np.concatenate([counts_k, short_counts])[order_])
        levels[k] = _Level(keys_k, counts_k, num_classes, discount)
    return levels[1:]


def _log2_probs(levels: List[_Level], heldout: np.ndarray, num_classes: int, eos: Optional[int]) -> np.ndarray:
    """log2 p(heldout[t] | its history) for every position t (vectorised over positions, one pass per order)."""
    order = len(levels)
    hist = _history_lengths(heldout, order, eos)  # (M,)
    keys = _gram_keys(heldout, num_classes, order)
    p = np.full(len(heldout), 1.0 / num_classes)  # (M,) order 0: uniform over all classes
    for k, level in enumerate(levels, start=1):
        at = np.flatnonzero(hist >= k - 1)  # (Q,) positions with a history of k - 1 tokens at least
        context = keys[k - 1][at - 1] if k > 1 else np.zeros(len(at), np.int64)  # (Q,)
        total = _lookup(level.contexts, level.totals, context).astype(np.float64)  # (Q,) 0: unseen context
        distinct = _lookup(level.contexts, level.distinct, context)  # (Q,)
        count = _lookup(level.keys, level.counts, keys[k][at])  # (Q,)
        d = level.discount
        mixed = (np.maximum(count - d, 0.0) + d * distinct * p[at]) / np.where(total > 0, total, 1.0)
        p[at] = np.where(total > 0, mixed, p[at])  # an unseen context backs off entirely to order k - 1
    return np.log2(p)


def kneser_ney_bpb(train: np.ndarray, heldout: np.ndarray, heldout_bytes: np.ndarray, num_classes: int, *,
                   order: int = 3, discount: Optional[float] = None, eos: Optional[int] = None,
                   start: int = 1) -> dict:
    """Bits per byte of ``heldout[start:]`` under an interpolated Kneser–Ney n-gram model of the ``train`` stream.

    The model (interpolated KN with one absolute discount per order, Chen & Goodman 1998 §3, not their modified
    three-discount variant). For order ``k`` with context ``g`` (``k - 1`` ids) and word ``w``::

        p_k(w | g) = (max(c_k(g w) - D_k, 0) + D_k * N_k(g) * p_{k-1}(w | g[1:])) / T_k(g)   if T_k(g) > 0
                   = p_{k-1}(w | g[1:])                                                   otherwise
        p_0(w)     = 1 / num_classes

    with ``T_k(g) = sum_w c_k(g w)`` and ``N_k(g)`` the number of words with ``c_k(g w) > 0``. The counts: at the
    top order ``n`` the raw counts of the training n-grams; at a lower order ``k`` the continuation count
    ``N1+(. x)`` (the number of distinct ids seen right before the k-gram ``x``) plus the raw count of the
    occurrences of ``x`` that have no left neighbour within the model's history (the first k - 1 tokens of the
    stream, and with ``eos`` the k-grams starting at an eos: as SRILM and KenLM keep raw counts for n-grams that
    start with <s>). The uniform ``p_0`` makes every id in ``[0, num_classes)`` probable, unseen ones included.
    ``D_k = n1 / (n1 + 2 n2)`` from the count-of-counts of ``c_k``, or ``discount`` at every order
    (``0 < discount <= 1``). A level without singletons (n1 = 0) gets 0.5, KenLM's ``--discount_fallback``: it
    happens at the unigram level when every word has been seen after two different words or more (20M Zipf
    tokens at V = 130k), where any D in (0, 1] changes little but D > 0 keeps unseen ids probable.

    The history. The stream is read as the LM reads it: the history of position ``t`` is the ``order - 1``
    tokens before it, across line ends (fewer at the start of a stream, where the model uses order ``t + 1``).
    With ``eos`` (an id), histories reset instead: they reach back only to the latest eos, which stays as their
    first token (sentence-wise n-grams with eos as both </s> and <s>). The held-out stream is scored the same way,
    from its own tokens only (no history from the training stream).

    Returns ``{"bpb", "ppl" (2 ** bits per scored token), "order", "seconds" (fit + evaluation), "discounts"
    (D_1 .. D_n), "tokens" (scored)}``.

    Scale. n-grams are base-``num_classes`` int64 keys, so ``num_classes ** order <= 2**63`` (order 3: up to
    2,097,152 classes); counting is sorting (np.sort, grouped with flatnonzero) and scoring is searchsorted,
    vectorised over positions. 20M training tokens of an i.i.d. Zipf(1) stream at V = 130k (17.8M distinct
    trigrams, 9.8M bigrams), order 3: fit ~7 s, 400k held-out tokens ~2 s, ~1.3 GiB peak beyond the inputs
    (one core of a 2-core machine; order 2: fit ~4 s).

    Example:
        >>> ids = np.array([0, 1, 2] * 50)
        >>> out = kneser_ney_bpb(ids, ids, np.ones(len(ids)), num_classes=3)
        >>> out["bpb"] < 0.1, out["order"]
        (True, 3)
    """
    t0 = time.perf_counter()
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(order, (int, np.integer)) or isinstance(order, bool) or order < 1:
        raise ValueError(f"order must be a positive int, got {order!r}")
    if int(num_classes) ** int(order) > _MAX_KEY:
        limit = int(round(_MAX_KEY ** (1.0 / order)))
        while limit ** order > _MAX_KEY:
            limit -= 1
        while (limit + 1) ** order <= _MAX_KEY:
            limit += 1
        raise ValueError(f"order {order} n-grams over {num_classes} classes do not fit the int64 keys "
                         f"(num_classes ** order must be <= 2**63): order {order} supports at most {limit} "
                         f"classes; lower the order")
    if discount is not None and not (isinstance(discount, (int, float, np.number)) and 0 < discount <= 1):
        raise ValueError(f"discount must be a number in (0, 1] or None (estimated per order), got {discount!r}")
    if eos is not None and not (isinstance(eos, (int, np.integer)) and 0 <= eos < num_classes):
        raise ValueError(f"eos must be None or an id in [0, {num_classes}), got {eos!r}")
    num_classes, order = int(num_classes), int(order)
    train = _check_ids("train", train, num_classes)
    heldout = _check_ids("heldout", heldout, num_classes)
    nbytes = _scored_bytes(heldout, heldout_bytes, start)

    levels = _fit_levels(train, num_classes, order, None if discount is None else float(discount), eos)
    bits = -float(_log2_probs(levels, heldout, num_classes, eos)[start:].sum())
    tokens = len(heldout) - start
    return {"bpb": bits / nbytes, "ppl": float(2.0 ** (bits / tokens)), "order": order,
            "seconds": time.perf_counter() - t0, "discounts": [lv.discount for lv in levels], "tokens": tokens}
