"""Real text → token ids: streaming reader, tokenizer, frequency-sorted vocabulary, held-out split, cache.

Reading (:func:`iter_texts`): a file, or every file under a directory (recursively, sorted by path; names starting
with "." are skipped, files and folders alike). ``.gz``, ``.bz2`` and ``.xz`` are decompressed transparently (by
suffix). Files are read in binary chunks of ``chunk_bytes`` (16 MiB) and decoded as UTF-8 incrementally, so a
multi-byte character split by a read is decoded whole; undecodable bytes become U+FFFD and are counted. A file
whose first 1 MiB (after decompression) is more than 30 % non-text (undecodable bytes and control characters:
:func:`.textfile.non_text_fraction`) is refused with a DataError naming it and the fraction: it is binary, or text
in another encoding, and training on it would train on replacement characters. Each yielded
text is cut just after its last ASCII whitespace character (the rest is carried into the next text), so no token is
ever cut in two (except inside a run of over 64 Mi characters without whitespace, which is no text). text8 is one
100 MB line and is never read line by line. A file's end is a line end.

Tokenizer (:func:`tokenize`): ``text.lower()`` when ``lowercase``, then ``re.findall(token_pattern)``. The pattern
must match neither the empty string, nor whitespace, and must have no capturing groups (use ``(?:...)``); it is
applied to each chunk separately, so it should not look beyond whitespace (the default ``[a-z']+`` does not).

Sentences: every line (ending at "\\n") is a sentence; a line of more than ``MAX_SENTENCE_TOKENS`` = 10,000 tokens
is split into sentences of 10,000 tokens (gensim's ``MAX_WORDS_IN_BATCH``; text8 becomes ~1,700 sentences). The
count is over raw tokens, before out-of-vocabulary words are dropped, as in gensim. Empty sentences are dropped.

Encoding (:func:`load_corpus`), one pass over the text: each chunk's tokens are mapped to provisional ids by a
``defaultdict`` whose default factory hands out the next id (the lookup and the insertion of a new word both run in
C, no Python code per token), into an int32 array. Then, vectorised over the whole array: sentence numbering,
held-out choice, counts (``np.bincount`` over the training part), the vocabulary (:mod:`.vocab`: id = rank), and a
remapping table provisional id → rank. Out-of-vocabulary tokens are dropped (gensim does so before windowing).

Held-out split: ``round(heldout_fraction * S)`` of the ``S`` sentences, chosen uniformly without replacement by
``np.random.default_rng([seed, 0x48454C44])``; at least one when ``heldout_fraction > 0`` and ``S >= 2``, and
never all. The vocabulary and its counts come from the training sentences only (held-out words unseen in training
are dropped, like any out-of-vocabulary word).

Output: ``ids`` int32 ``(N,)``: training token ids with ``-1`` between sentences (none leading, trailing or
doubled); ``heldout_ids`` the same for held-out sentences.

Cache: when ``cache_dir`` is given, the result is stored in ``cache_dir/corpus-<key>.npz`` (written to a temporary
file and renamed). The key is a sha256 over: each file's resolved path, size and modification time (ns) — not the
content, so touching a file invalidates the cache, and an edit that keeps both size and mtime is not seen — and
lowercase, token_pattern, min_count, max_final_vocab, heldout_fraction, seed, MAX_SENTENCE_TOKENS and the cache
format. ``chunk_bytes`` does not change the result and is not in the key.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import hashlib
import json
import logging
import lzma
import os
import re
import threading
import time
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

import numpy as np

from ..errors import ConfigError, DataError, SampledSoftmaxError
from .textfile import MAX_NON_TEXT_FRACTION, TEXT_PROBE_BYTES, non_text_fraction
from .vocab import Vocab, ids_in_range, select_words

__all__ = [
    "DEFAULT_TOKEN_PATTERN",
    "MAX_SENTENCE_TOKENS",
    "DEFAULT_CHUNK_BYTES",
    "EncodedCorpus",
    "corpus_files",
    "iter_texts",
    "compile_token_pattern",
    "tokenize",
    "load_corpus",
]

log = logging.getLogger(__name__)

DEFAULT_TOKEN_PATTERN = r"[a-z']+"
MAX_SENTENCE_TOKENS = 10_000
DEFAULT_CHUNK_BYTES = 16 << 20
CACHE_FORMAT = 1
_HELDOUT_TAG = 0x48454C44  # "HELD": separates the held-out stream from any other use of the seed
_BREAK = 0  # provisional id of the line-break token "\n"
_ASCII_WHITESPACE = " \n\t\r\f\v"
_MAX_RUN = 1 << 26  # a run of more characters than this (or 4 chunks) without whitespace is cut anyway (binary junk)
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open, ".lzma": lzma.open}

PathLike = Union[str, os.PathLike]


# ---- reading ---------------------------------------------------------------------------------------------------------

_decode_errors = threading.local()


def _count_and_replace(exc: UnicodeError):
    """Codec error handler: like errors="replace" (one U+FFFD), counting the undecodable bytes."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    _decode_errors.n = getattr(_decode_errors, "n", 0) + (exc.end - exc.start)
    return "\ufffd", exc.end


_ERRORS = "sampledsoftmax.count_replace"
codecs.register_error(_ERRORS, _count_and_replace)


def corpus_files(path: PathLike) -> list[Path]:
    """The files of a corpus: ``[path]`` for a file, else every file under the directory (recursive, sorted by path,
    skipping names that start with ".")."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"corpus {p} does not exist; set data.corpus to a text file (.txt, .gz, .bz2), a directory "
                        'of them, or "synthetic"')
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise DataError(f"corpus {p} is neither a file nor a directory; point data.corpus at a text file or a "
                        "directory of them")
    files = []
    for root, dirs, names in os.walk(p, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(root) / n for n in names if not n.startswith(".") and (Path(root) / n).is_file())
    files.sort(key=lambda f: f.relative_to(p).parts)
    if not files:
        raise DataError(f"corpus directory {p} has no files (names starting with '.' are skipped); put text files "
                        "(.txt, .gz, .bz2) in it or point data.corpus at a file")
    return files


def _last_whitespace(text: str) -> int:
    return max(text.rfind(c) for c in _ASCII_WHITESPACE)


def _size_text(n: int) -> str:
    return f"{n / 2**20:.3g} MB" if n >= 2**20 else f"{n / 2**10:.3g} kB" if n >= 2**10 else f"{n} bytes"


def _check_is_text(path: Path, root: Path, sample: bytes) -> None:
    """Refuse a corpus file whose first TEXT_PROBE_BYTES (after decompression) are mostly not UTF-8 text: a binary
    file would otherwise train, silently, on replacement characters and the few letters among its bytes."""
    fraction = non_text_fraction(sample)
    if fraction <= MAX_NON_TEXT_FRACTION:
        return
    where = (f"the first {_size_text(len(sample))}" if len(sample) >= TEXT_PROBE_BYTES
             else f"its {_size_text(len(sample))}")
    if path == root:
        raise DataError(f"data.corpus {str(path)!r}: {fraction:.0%} of {where} is not UTF-8 text; give a plain-text "
                        "corpus (.txt, .gz, .bz2; re-encode other encodings to UTF-8)")
    raise DataError(f"corpus file {str(path)!r} in data.corpus {str(root)!r}: {fraction:.0%} of {where} is not "
                    "UTF-8 text; remove it from the directory, or re-encode it to UTF-8")


def _read_file(path: Path, chunk_bytes: int, stats: dict, root: Optional[Path] = None) -> Iterator[str]:
    opener = _OPENERS.get(path.suffix.lower(), open)
    decoder = codecs.getincrementaldecoder("utf-8")(errors=_ERRORS)
    carry = ""
    probe: Optional[bytearray] = bytearray()  # the file's first TEXT_PROBE_BYTES, until they are checked
    try:
        with opener(path, "rb") as fh:
            while True:
                raw = fh.read(chunk_bytes)
                final = not raw
                if probe is not None:
                    probe += raw[: TEXT_PROBE_BYTES - len(probe)]
                    if final or len(probe) >= TEXT_PROBE_BYTES:
                        _check_is_text(path, path if root is None else root, bytes(probe))
                        probe = None
                before = getattr(_decode_errors, "n", 0)
                text = carry + decoder.decode(raw, final=final)
                stats["undecodable_bytes"] += getattr(_decode_errors, "n", 0) - before
                stats["bytes"] += len(raw)
                if final:
                    if text:
                        yield text if text.endswith("\n") else text + "\n"  # a file's end is a line end
                    return
                cut = _last_whitespace(text)
                if cut < 0 and len(text) < max(4 * chunk_bytes, _MAX_RUN):
                    carry = text  # no whitespace yet: one long token, keep reading (bounded)
                    continue
                cut = cut if cut >= 0 else len(text) - 1
                yield text[: cut + 1]
                carry = text[cut + 1:]
    except (OSError, EOFError, lzma.LZMAError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read corpus file {path}: {e}; fix the file (permissions, compression) or "
                        "remove it from the corpus") from None


def iter_texts(path: PathLike, chunk_bytes: int = DEFAULT_CHUNK_BYTES, stats: Optional[dict] = None) -> Iterator[str]:
    """Stream the text of a file or directory (see the module docstring) in pieces of about ``chunk_bytes``.

    Every piece ends at whitespace, and a file's last piece ends with "\\n". ``stats`` (optional dict) is updated
    with ``files``, ``bytes`` (bytes read after decompression) and ``undecodable_bytes`` (replaced by U+FFFD).
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    files = corpus_files(path)
    stats = {} if stats is None else stats
    for key in ("files", "bytes", "undecodable_bytes"):
        stats.setdefault(key, 0)
    for f in files:
        stats["files"] += 1
        yield from _read_file(f, chunk_bytes, stats, Path(path))


# ---- tokenizer -------------------------------------------------------------------------------------------------------

def _checked_pattern(token_pattern: str) -> re.Pattern:
    try:
        pat = re.compile(token_pattern)
    except (re.error, TypeError) as e:
        raise ConfigError(f"data.token_pattern={token_pattern!r} is not a valid regular expression: {e}") from None
    if pat.groups:
        raise ConfigError(f"data.token_pattern={token_pattern!r} has capturing groups; use non-capturing (?:...)")
    if pat.fullmatch("") is not None:
        raise ConfigError(f"data.token_pattern={token_pattern!r} matches the empty string; use + instead of *")
    return pat


def compile_token_pattern(token_pattern: str = DEFAULT_TOKEN_PATTERN, line_breaks: bool = False) -> re.Pattern:
    """The validated pattern; with ``line_breaks``, ``(?:token_pattern)|\\n`` so that line ends come out as "\\n"."""
    _checked_pattern(token_pattern)
    return re.compile(f"(?:{token_pattern})|\n") if line_breaks else re.compile(token_pattern)


def tokenize(text: str, lowercase: bool = True, token_pattern: str = DEFAULT_TOKEN_PATTERN) -> list[str]:
    """``re.findall(token_pattern, text.lower() if lowercase else text)``.

    >>> tokenize("The cat's HAT, 2 times.")
    ['the', "cat's", 'hat', 'times']
    """
    return compile_token_pattern(token_pattern).findall(text.lower() if lowercase else text)


# ---- encoding --------------------------------------------------------------------------------------------------------

@dataclass
class EncodedCorpus:
    """A tokenised, encoded corpus. ``ids``/``heldout_ids``: int32 token ids with -1 between sentences."""

    vocab: Vocab
    ids: np.ndarray  # (N,) int32, training sentences
    heldout_ids: np.ndarray  # (M,) int32, held-out sentences
    stats: dict[str, Any] = field(default_factory=dict)


def _encode_chunk(tokens: list, table: defaultdict, carry: int) -> tuple[np.ndarray, int]:
    """Provisional ids of one chunk's tokens (``_BREAK`` at line ends), with a break inserted before every
    ``MAX_SENTENCE_TOKENS``-th token of a line. ``carry``: tokens of the current line seen in earlier chunks."""
    arr = np.fromiter(map(table.__getitem__, tokens), dtype=np.int32, count=len(tokens))  # (n,)
    if len(arr) == 0:
        return arr, carry
    is_break = arr == _BREAK  # (n,)
    words_so_far = np.cumsum(~is_break, dtype=np.int64)  # (n,) words up to and including i
    # words before the current line's first word: a break's count, or -carry before the chunk's first break
    line_base = np.maximum.accumulate(np.where(is_break, words_so_far, -carry))  # (n,)
    pos_in_line = words_so_far - line_base - 1  # (n,) meaningful at word positions
    split = ~is_break & (pos_in_line > 0) & (pos_in_line % MAX_SENTENCE_TOKENS == 0)
    new_carry = int(words_so_far[-1] - line_base[-1])
    if split.any():
        arr = np.insert(arr, np.flatnonzero(split), _BREAK)
    return arr, new_carry


def _join_sentences(ids: np.ndarray, sentence: np.ndarray) -> np.ndarray:
    """Word ids with their (non-decreasing) sentence numbers → ids with -1 wherever the sentence changes."""
    starts = np.flatnonzero(sentence[1:] != sentence[:-1]) + 1  # (S-1,)
    return np.insert(ids.astype(np.int32, copy=False), starts, -1)


def _heldout_count(num_sentences: int, fraction: float) -> int:
    if fraction <= 0 or num_sentences < 2:
        return 0
    return int(min(max(round(fraction * num_sentences), 1), num_sentences - 1))


def _encode(texts: Iterable[str], path: PathLike, lowercase: bool, token_pattern: str, min_count: int,
            max_final_vocab: Optional[int], heldout_fraction: float, seed: int) -> tuple[Vocab, np.ndarray,
                                                                                          np.ndarray, dict]:
    pattern = compile_token_pattern(token_pattern, line_breaks=True)
    table: defaultdict = defaultdict(count(_BREAK + 1).__next__)
    table["\n"] = _BREAK
    parts, carry = [], 0
    for text in texts:
        tokens = pattern.findall(text.lower() if lowercase else text)
        arr, carry = _encode_chunk(tokens, table, carry)
        parts.append(arr)
        del tokens
    prov = np.concatenate(parts) if parts else np.zeros(0, np.int32)  # (n,) provisional ids, _BREAK at breaks
    del parts
    is_break = prov == _BREAK
    raw_sentence = np.cumsum(is_break, dtype=np.int32)[~is_break]  # (W,) line/segment number per word
    words = prov[~is_break]  # (W,)
    del prov, is_break
    if len(words) == 0:
        raise DataError(f"corpus {path} has no tokens matching data.token_pattern={token_pattern!r} (lowercase="
                        f"{lowercase}); check the corpus's contents or data.token_pattern")
    # number the non-empty sentences 0..S-1
    new_sentence = np.empty(len(words), dtype=bool)
    new_sentence[0] = True
    np.not_equal(raw_sentence[1:], raw_sentence[:-1], out=new_sentence[1:])
    sentence = np.cumsum(new_sentence, dtype=np.int32) - 1  # (W,)
    del raw_sentence, new_sentence
    num_sentences = int(sentence[-1]) + 1

    rng = np.random.default_rng([seed, _HELDOUT_TAG])
    k = _heldout_count(num_sentences, heldout_fraction)
    held_sentence = np.zeros(num_sentences, dtype=bool)
    held_sentence[rng.choice(num_sentences, size=k, replace=False)] = True
    held = held_sentence[sentence]  # (W,)
    train = ~held

    type_words = list(table.keys())  # insertion order = provisional id order
    type_counts = np.bincount(words[train], minlength=len(type_words))  # (T,)
    type_counts[_BREAK] = 0
    kept_words, kept_counts, index = select_words(type_words, type_counts, min_count, max_final_vocab,
                                                  return_index=True)
    if not kept_words:
        top = int(type_counts.max())
        fix = ("lower data.min_count" if top < min_count else "raise data.max_final_vocab (every word is tied with "
               "the first one that does not fit)")
        raise DataError(f"vocabulary of corpus {path} is empty: min_count={min_count}, max_final_vocab="
                        f"{max_final_vocab}, the most frequent word occurs {top} times; {fix}")
    vocab = Vocab(kept_words, kept_counts)
    remap = np.full(len(type_words), -1, dtype=np.int32)  # provisional id -> rank, -1 = out of vocabulary
    remap[index] = np.arange(len(index), dtype=np.int32)

    out = []
    for part in (train, held):
        mapped = remap[words[part]]
        keep = mapped >= 0
        out.append(_join_sentences(mapped[keep], sentence[part][keep]))
    train_oov = int(train.sum()) - int(np.count_nonzero(out[0] >= 0))
    stats = {
        "raw_tokens": int(len(words)),
        "types": len(type_words) - 1,
        "sentences": num_sentences,
        "heldout_sentences": k,
        "train_tokens": int(np.count_nonzero(out[0] >= 0)),
        "heldout_tokens": int(np.count_nonzero(out[1] >= 0)),
        "oov_dropped": train_oov,
        "vocab_size": len(vocab),
    }
    return vocab, out[0], out[1], stats


def token_fingerprint(*arrays: np.ndarray) -> str:
    """A hash of token-id arrays (their dtype, shape and bytes): what a run trains and evaluates on, recorded in its
    checkpoint so that a resume on a corpus that changed since (even one with the same vocabulary and counts) is
    refused. BLAKE2b: ~1 GB/s, so ~0.1 s for a 20M-token corpus."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


# ---- cache -----------------------------------------------------------------------------------------------------------

def _cache_key(files: list[Path], settings: dict) -> str:
    listing = []
    for f in files:
        st = f.stat()
        listing.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"format": CACHE_FORMAT, "files": listing, "max_sentence_tokens": MAX_SENTENCE_TOKENS,
                       **settings}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _save_cache(path: Path, corpus: EncodedCorpus) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        np.savez(fh, ids=corpus.ids, heldout_ids=corpus.heldout_ids,
                 vocab=np.frombuffer(corpus.vocab.to_tsv().encode("utf-8"), dtype=np.uint8),
                 stats=np.frombuffer(json.dumps(corpus.stats).encode("utf-8"), dtype=np.uint8))
    os.replace(tmp, path)


def _load_cache(path: Path) -> EncodedCorpus:
    with np.load(path, allow_pickle=False) as z:
        vocab = Vocab.from_tsv(z["vocab"].tobytes().decode("utf-8"), source=str(path))
        stats = json.loads(z["stats"].tobytes().decode("utf-8"))
        corpus = EncodedCorpus(vocab, z["ids"], z["heldout_ids"], stats)
    if not (ids_in_range(corpus.ids, len(vocab)) and ids_in_range(corpus.heldout_ids, len(vocab))):
        raise ValueError("token ids outside the cached vocabulary")  # a damaged cache file: rebuilt by the caller
    return corpus


# ---- entry point -----------------------------------------------------------------------------------------------------

def load_corpus(path: PathLike, *, lowercase: bool = True, token_pattern: str = DEFAULT_TOKEN_PATTERN,
                min_count: int = 5, max_final_vocab: Optional[int] = None, heldout_fraction: float = 0.01,
                seed: int = 0, cache_dir: Optional[PathLike] = None,
                chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> EncodedCorpus:
    """Read, tokenise and encode a corpus (file or directory), or load it from the cache (module docstring).

    ``stats`` has ``files, bytes, undecodable_bytes, raw_tokens, types, sentences, heldout_sentences,
    train_tokens, heldout_tokens, oov_dropped, vocab_size`` and ``cache`` ("hit", "miss" or "off"),
    ``cache_path``, ``seconds``. A non-zero ``undecodable_bytes`` is also logged once as a warning.
    """
    t0 = time.perf_counter()
    if not 0.0 <= heldout_fraction < 1.0:
        raise ConfigError(f"data.heldout_fraction={heldout_fraction!r} must be in [0, 1)")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ConfigError(f"seed={seed!r} must be an integer >= 0")
    _checked_pattern(token_pattern)
    select_words([], [], min_count, max_final_vocab)  # validates min_count / max_final_vocab before reading
    files = corpus_files(path)
    settings = {"lowercase": bool(lowercase), "token_pattern": token_pattern, "min_count": int(min_count),
                "max_final_vocab": max_final_vocab, "heldout_fraction": float(heldout_fraction), "seed": int(seed)}
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"corpus-{_cache_key(files, settings)[:32]}.npz"
        if cache_path.is_file():
            try:
                corpus = _load_cache(cache_path)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, SampledSoftmaxError) as e:
                # a truncated or overwritten cache (BadZipFile, EOFError; JSON and UTF-8 errors are ValueErrors)
                log.warning("corpus cache %s is unreadable (%s); rebuilding it", cache_path, e)
            else:
                corpus.stats.update(cache="hit", cache_path=str(cache_path), seconds=time.perf_counter() - t0)
                return corpus
    read_stats: dict = {}
    vocab, ids, heldout_ids, stats = _encode(iter_texts(path, chunk_bytes, read_stats), path, lowercase,
                                             token_pattern, min_count, max_final_vocab, heldout_fraction, seed)
    assert ids_in_range(ids, len(vocab)) and ids_in_range(heldout_ids, len(vocab)), "ids outside the vocabulary"
    stats = {**read_stats, **stats}
    if stats["undecodable_bytes"]:
        log.warning("corpus %s: %d undecodable bytes (not UTF-8) were replaced by U+FFFD", path,
                    stats["undecodable_bytes"])
    corpus = EncodedCorpus(vocab, ids, heldout_ids, stats)
    if cache_path is not None:
        try:
            _save_cache(cache_path, corpus)
        except OSError as e:
            log.warning("cannot write the corpus cache %s (%s); continuing without it", cache_path, e)
    corpus.stats.update(cache="off" if cache_path is None else "miss",
                        cache_path=None if cache_path is None else str(cache_path),
                        seconds=time.perf_counter() - t0)
    return corpus
