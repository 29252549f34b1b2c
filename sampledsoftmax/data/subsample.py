"""word2vec's frequent-word subsampling as a distribution: the probability of keeping a token of each word, and the
word frequencies of the stream that survives it.

Formula (word2vec.c, gensim ``sample``): with ``f_w = count_w / sum(counts)``,
``keep_w = min(1, (sqrt(f_w / sample) + 1) * sample / f_w)``; ``sample = 0`` keeps everything.

The skip-gram pair stream (``embeddings/pairs.py``) drops tokens with these probabilities before windowing, so the
contexts of its batches are drawn (up to sentence-edge effects) from ``p_c ∝ count_c · keep_c``, not from the raw
counts: that is the distribution an in-batch softmax must correct for (``training/builders.py``).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

__all__ = ["keep_probability", "subsampled_counts"]


def keep_probability(counts, sample: float) -> np.ndarray:
    """word2vec's probability of keeping a token of each word: float64 ``(V,)``.

    ``f = counts / counts.sum()``; ``keep = (sqrt(f / sample) + 1) * sample / f`` clipped to 1 (words with
    ``f <= sample`` are always kept; a count of 0 gives 1). ``sample = 0``: all ones.
    """
    counts = np.asarray(counts, dtype=np.float64)  # (V,)
    if sample < 0:
        raise ConfigError(f"data.sample={sample!r} must be >= 0")
    total = counts.sum()
    if sample == 0 or total <= 0:
        return np.ones_like(counts)
    f = counts / total
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = (np.sqrt(f / sample) + 1.0) * sample / f
    keep[~(f > 0)] = 1.0
    return np.minimum(keep, 1.0)


def subsampled_counts(counts, sample: float) -> np.ndarray:
    """The expected number of tokens of each word left after subsampling, ``counts * keep_probability``: float64
    ``(V,)``, proportional to the frequencies of the subsampled stream (``counts`` themselves when ``sample = 0``)."""
    counts = np.asarray(counts, dtype=np.float64)  # (V,)
    return counts * keep_probability(counts, sample)
