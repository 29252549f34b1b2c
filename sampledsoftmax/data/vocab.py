"""The frequency-sorted vocabulary: word id = frequency rank, so log-uniform (Zipfian) candidate sampling is meaningful.

Order: count descending, ties broken by the word in code-point order (``sorted`` on ``str``). Ties are not broken by
first occurrence, so the ids do not depend on file order or on how the corpus was cut into chunks.

``max_final_vocab`` works as in gensim (``Word2Vec.prepare_vocab``): the effective minimum count is raised to
``count of the (max_final_vocab + 1)-th most frequent word + 1`` (when there are more words than that), i.e. every
word tied with the first word that does not fit is dropped too. So ``len(vocab) <= max_final_vocab``, possibly
fewer, and the result does not depend on how ties are ordered.

Files: ``save`` writes a TSV, one ``word<TAB>count`` line per word in id order (atomic: temporary file + rename);
words cannot contain whitespace (the tokenizer guarantees it; ``Vocab`` checks it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError, DataError
from .textfile import read_text

__all__ = ["Vocab", "ids_in_range"]

_WHITESPACE = re.compile(r"\s")

CountsLike = Union[Mapping[str, int], Iterable[Tuple[str, int]]]


class Vocab:
    """Words and their counts, id = rank by count (descending; ties by word).

    Attributes:
        words: ``list[str]``, ``words[i]`` is the word with id ``i``.
        counts: ``np.ndarray`` int64 ``(V,)``, non-increasing.
        word2id: ``dict[str, int]`` (built on first use).

    Example:
        >>> v = Vocab.from_counts({"the": 5, "cat": 2, "a": 5, "rare": 1}, min_count=2)
        >>> v.words, v.counts.tolist(), v.word2id["cat"]
        (['a', 'the', 'cat'], [5, 5, 2], 2)
    """

    def __init__(self, words: Sequence[str], counts) -> None:
        words = list(words)
        counts = np.asarray(counts, dtype=np.int64).reshape(-1)  # (V,)
        if len(words) != len(counts):
            raise ValueError(f"Vocab: {len(words)} words but {len(counts)} counts")
        if len(counts) > 1 and np.any(np.diff(counts) > 0):
            raise ValueError("Vocab: counts must be sorted in non-increasing order (id = frequency rank)")
        if len(counts) and counts[-1] < 0:
            raise ValueError("Vocab: counts must be >= 0")
        if len(set(words)) != len(words):
            raise ValueError("Vocab: words must be unique")
        bad = _WHITESPACE.search("".join(words))
        if bad is not None:
            raise DataError(
                "a vocabulary word contains whitespace: the token pattern must not match spaces, tabs or newlines; "
                "fix data.token_pattern"
            )
        self.words: list[str] = words
        self.counts: np.ndarray = counts
        self.counts.flags.writeable = False

    @classmethod
    def from_counts(cls, counter_like: CountsLike, min_count: int = 1,
                    max_final_vocab: Optional[int] = None) -> "Vocab":
        """Vocabulary of the words with ``count >= min_count``, capped gensim-style by ``max_final_vocab``.

        ``counter_like``: a mapping word -> count (``collections.Counter``, dict) or an iterable of (word, count).
        """
        items = counter_like.items() if isinstance(counter_like, Mapping) else counter_like
        words, counts = select_words(*_unzip(items), min_count=min_count, max_final_vocab=max_final_vocab)
        return cls(words, counts)

    @cached_property
    def word2id(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.word2id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return self.words == other.words and np.array_equal(self.counts, other.counts)

    __hash__ = None  # mutable-looking container; use .hash() for a content digest

    def __repr__(self) -> str:
        head = ", ".join(f"{w}:{c}" for w, c in zip(self.words[:5], self.counts[:5].tolist()))
        return f"Vocab(V={len(self)}, total={int(self.counts.sum())}, [{head}{', ...' if len(self) > 5 else ''}])"

    @property
    def total(self) -> int:
        """Sum of the counts of the kept words (what word2vec's subsampling divides by)."""
        return int(self.counts.sum())

    def hash(self) -> str:
        """sha256 (hex) of the words (JSON list, UTF-8) followed by the counts (little-endian int64)."""
        h = hashlib.sha256()
        h.update(json.dumps(self.words, ensure_ascii=False).encode("utf-8"))
        h.update(self.counts.astype("<i8").tobytes())
        return h.hexdigest()

    def to_tsv(self) -> str:
        return "".join(f"{w}\t{c}\n" for w, c in zip(self.words, self.counts.tolist()))

    @classmethod
    def from_tsv(cls, text: str, source: str = "<string>") -> "Vocab":
        words, counts = [], []
        for lineno, line in enumerate(text.splitlines(), 1):
            word, sep, count = line.rpartition("\t")
            if not sep or not count.strip().isdigit():
                raise DataError(f"{source}:{lineno}: expected 'word<TAB>count'; is this a vocabulary file saved by "
                                "Vocab.save?")
            words.append(word)
            counts.append(int(count))
        try:
            return cls(words, counts)
        except ValueError as e:
            if isinstance(e, DataError):
                raise
            raise DataError(f"{source}: not a valid vocabulary file ({e})") from None

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write ``word<TAB>count`` lines in id order; atomic (temporary file, then ``os.replace``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(self.to_tsv(), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Vocab":
        path = Path(path)
        text = read_text(path, "vocabulary file", "give the vocab.tsv of a run directory (written by Vocab.save)")
        return cls.from_tsv(text, source=str(path))


def ids_in_range(ids: np.ndarray, num_words: int) -> bool:
    """Whether every entry of `ids` is a word id in [0, num_words) or the sentence break -1 (one pass each for min
    and max). The corpus readers check their ids with it once, when the data is built, which is why the trainers
    build their losses without a per-step range check (training/builders.py)."""
    return len(ids) == 0 or (int(ids.min()) >= -1 and int(ids.max()) < num_words)


def _unzip(items: Iterable[Tuple[str, int]]) -> Tuple[list, list]:
    words, counts = [], []
    for w, c in items:
        words.append(w)
        counts.append(c)
    return words, counts


def select_words(words: Sequence[str], counts, min_count: int = 1,
                 max_final_vocab: Optional[int] = None, return_index: bool = False):
    """Keep and order words by the vocabulary rule; ``words`` need not be sorted.

    Returns ``(kept_words, kept_counts)``, or with ``return_index`` also ``index`` (int64 ``(V,)``) with
    ``kept_words[i] == words[index[i]]``. Effective minimum count (gensim):
    ``max(min_count, counts_sorted_desc[max_final_vocab] + 1)`` when ``len(words) > max_final_vocab``.
    """
    if isinstance(min_count, bool) or int(min_count) != min_count or min_count < 1:
        raise ConfigError(f"data.min_count={min_count!r} must be an integer >= 1")
    if max_final_vocab is not None and (isinstance(max_final_vocab, bool) or int(max_final_vocab) != max_final_vocab
                                        or max_final_vocab < 1):
        raise ConfigError(f"data.max_final_vocab={max_final_vocab!r} must be null or an integer >= 1")
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)  # (N,)
    effective = int(min_count)
    if max_final_vocab is not None and len(counts) > max_final_vocab:
        # the (max_final_vocab+1)-th largest count, without a full sort
        kth = np.partition(counts, len(counts) - 1 - max_final_vocab)[len(counts) - 1 - max_final_vocab]
        effective = max(effective, int(kth) + 1)
    idx = np.flatnonzero(counts >= effective)  # (V,) unsorted; the sorts below are over kept words only
    kept = [words[i] for i in idx.tolist()]
    by_word = np.asarray(sorted(range(len(kept)), key=kept.__getitem__), dtype=np.int64)  # (V,) alphabetical
    by_count = np.argsort(-counts[idx[by_word]], kind="stable")  # (V,) count descending, stable keeps ties by word
    index = idx[by_word[by_count]]  # (V,)
    out_words = [words[i] for i in index.tolist()]
    out_counts = counts[index]
    return (out_words, out_counts, index) if return_index else (out_words, out_counts)
