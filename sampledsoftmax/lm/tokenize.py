"""Real text → LM token ids that cover the whole text at any vocabulary size V, with the bytes each held-out token
covers (for bits per byte), cached.

Lines and split (:func:`heldout_lines`). The corpus (a file, a directory, ``.gz``/``.bz2``/``.xz``: read by
:func:`..data.corpus.iter_texts`, so undecodable bytes are U+FFFD and binary files are refused) is cut at "\\n"; a
trailing "\\r" is removed; lines that are empty or whitespace only are skipped. Of the ``S`` remaining lines,
``k = round(heldout_fraction · S)`` (at least 1, at most ``S - 1``) are held out, chosen uniformly without
replacement by ``np.random.default_rng([seed, 0x48454C44])``; both parts keep the corpus order. The split depends
on the corpus, ``heldout_fraction`` and ``seed`` only, never on the tokenizer or V, so bits per byte compare
across vocabularies. ``lowercase`` (``str.lower``) is applied to the lines after the split, before any tokenizer.

Streams. Each line's token ids followed by the end-of-line class EOS: ``train`` for the training lines, ``heldout``
for the held-out ones (int32). Class ids are ranks by training count (descending; ties by the tokenizer's own id
for tokenizers, by the class name for ``word``), EOS and ``<unk>`` included, so log-uniform sampling means what it
says. ``counts[c]`` is the number of times class ``c`` occurs in ``train`` (0 allowed).

Tokenizers (``tokenizer=``):

- ``"bpe"``: byte-level BPE trained with Hugging Face ``tokenizers`` on the training lines only (pre-tokenizer
  ``ByteLevel(add_prefix_space=False)``, decoder ``ByteLevel``, initial alphabet all 256 bytes, one special token
  ``<|endoftext|>`` = EOS; text that spells it is text). **V counts everything**: ``vocab_size = 1 (EOS) + 256
  (bytes) + merges``, so the smallest is 257 (no merge: a byte-level model); the trained vocabulary has exactly
  ``vocab_size`` classes, or the corpus cannot fill it (its BPE runs out of pairs) and a DataError names the
  largest V it reaches.
- a path to a Hugging Face ``tokenizer.json``: its whole vocabulary (added tokens included) are the classes, plus
  EOS: its ``<|endoftext|>``, ``</s>`` or ``<eos>`` (the first present), else a new class ``</s>``. It is applied
  with its normalizer, pre-tokenizer and model, without truncation, padding or post-processor tokens, and with
  special tokens in the text treated as text (``encode_special_tokens``). ``vocab_size``, if given, must equal V.
- ``"word"``: tokens ``re.findall(r"\\w+|[^\\w\\s]", line)`` (every non-space character is covered: words and
  single punctuation marks). Classes: the training tokens with count >= ``min_count``, at most ``vocab_size - 2``
  of them (the most frequent; ties by the word), plus ``<unk>`` and EOS (``</s>``), each placed by its own training
  count (``<unk>``'s = training tokens that map to it). Out-of-vocabulary tokens become ``<unk>``, never dropped.
  The vocabulary size is a cap: a corpus with fewer words gives a smaller V (``stats["vocab_size"]``).

Bytes (``heldout_bytes``, int32, one per held-out token; ``heldout_bytes.sum()`` is the size of the text that the
held-out tokens stand for, the denominator of bits per byte):

- byte-level tokenizers (``bpe``, or a file whose decoder is ``ByteLevel``): a token covers the bytes it decodes to
  (its length in the byte alphabet); EOS covers the newline, 1 byte. Decoding a line's tokens gives the line's
  exact bytes (lossless), so a line covers ``len(line.encode()) + 1``.
- any other tokenizer file: a token covers the bytes it adds to the decoded text after an ordinary token (so the
  space a WordPiece or Metaspace decoder puts before it counts); EOS covers the rest of its line: decoded line
  bytes + 1 minus the line's tokens, so each line covers exactly ``len(decode(line_ids).encode()) + 1``. Where the
  decode does not give the line back (a lowercasing normalizer, unknown tokens) the bytes are those of the decoded
  text: ``stats["lossless"]`` is False and ``stats["heldout_lossy_lines"]`` counts those lines.
- ``word``: a token covers ``len(token.encode()) + 1`` (itself and the one space or newline after it; ``<unk>``
  its own word's), EOS 0: each line covers ``len(" ".join(tokens) + "\\n")``, the whitespace-normalised text
  (``stats["lossless"]`` is False).

Cache: with ``cache_dir``, the result is stored as ``cache_dir/lm-tokens-<key>.npz`` (a temporary file, then
``os.replace``) and, for ``bpe``, the trained tokenizer as ``lm-tokens-<key>.tokenizer.json`` beside it
(``stats["tokenizer_file"]``; usable as ``tokenizer=`` later). The key is a sha256 over each corpus file's
resolved path, size and modification time (as :mod:`..data.corpus`), the tokenizer kind (and a tokenizer file's
content hash), vocab_size, lowercase, min_count, heldout_fraction, seed and the cache format. An unreadable cache
file is rebuilt with a warning.

Memory and time: the lines are held as Python strings (about the text's size plus ~50 bytes a line); encoding goes
in batches of lines through the tokenizer's batch API (no Python code per token); the streams are int32.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import chain, count
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np

from ..data.corpus import corpus_files, iter_texts
from ..errors import ConfigError, DataError, SampledSoftmaxError, did_you_mean

__all__ = ["TokenizedCorpus", "tokenize_corpus", "heldout_lines", "read_lines", "split_lines", "WORD_PATTERN",
           "BPE_EOS", "WORD_EOS", "UNK"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

CACHE_FORMAT = 1
WORD_PATTERN = r"\w+|[^\w\s]"
BPE_EOS = "<|endoftext|>"
WORD_EOS = "</s>"
UNK = "<unk>"
EOS_NAMES = (BPE_EOS, "</s>", "<eos>")  # a tokenizer file's own end-of-text token, first present wins
KINDS = ("bpe", "word")
MIN_BPE_VOCAB = 256 + 1  # every byte and EOS: V with no merge at all
_HELDOUT_TAG = 0x48454C44  # "HELD", as data.corpus: the held-out stream of the seed
_BATCH_CHARS = 1 << 21  # characters of text per tokenizer batch call (bounds the Encoding objects alive at once)
_MISSING_TOKENIZERS = "{what} needs the tokenizers package: pip install 'sampledsoftmax[lm]'"


@dataclass
class TokenizedCorpus:
    """A corpus as LM token streams over V frequency-sorted classes; see the module docstring."""

    words: list[str]  # (V,) class names, id = rank by training count; EOS (and <unk>) included in that order
    train: np.ndarray  # (N,) int32: each training line's ids, then EOS
    heldout: np.ndarray  # (M,) int32: the same for the held-out lines
    heldout_bytes: np.ndarray  # (M,) int32: UTF-8 bytes of text each held-out token covers
    counts: np.ndarray  # (V,) int64: count of each class in `train`
    eos: int  # the end-of-line class
    unk: Optional[int]  # word level: the <unk> class; None for subword tokenizers
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return len(self.words)


# ---- lines and the held-out split -------------------------------------------------------------------------------

def read_lines(path: PathLike, stats: Optional[dict] = None) -> list[str]:
    """The corpus's non-empty lines, in order: cut at "\\n", a trailing "\\r" removed, empty and whitespace-only
    lines skipped. ``stats`` gets :func:`iter_texts`'s ``files``, ``bytes``, ``undecodable_bytes``."""
    lines: list[str] = []
    carry = ""
    for text in iter_texts(path, stats=stats):  # pieces end at whitespace, a file's last piece with "\n"
        parts = (carry + text).split("\n")
        carry = parts.pop()
        lines.extend(p.rstrip("\r") for p in parts if p and not p.isspace())
    if carry and not carry.isspace():  # iter_texts ends every file with "\n"; kept in case that ever changes
        lines.append(carry.rstrip("\r"))
    return lines


def _check_split(heldout_fraction: float, seed: int) -> None:
    if isinstance(heldout_fraction, bool) or not isinstance(heldout_fraction, (int, float)) \
            or not 0.0 < heldout_fraction < 0.5:
        raise ConfigError(f"data.heldout_fraction={heldout_fraction!r} must be a number in (0, 0.5), e.g. 0.02")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be an integer >= 0")


def split_lines(lines: list[str], heldout_fraction: float, seed: int, path: PathLike = "corpus"
                ) -> tuple[list[str], list[str]]:
    """(training lines, held-out lines) of a list of non-empty lines; see the module docstring."""
    _check_split(heldout_fraction, seed)
    s = len(lines)
    if s < 2:
        raise DataError(f"corpus {path} has {s} non-empty line{'s' if s != 1 else ''}; a language model needs at "
                        "least 2 (one to train on, one held out): give a text with more lines")
    k = int(min(max(round(heldout_fraction * s), 1), s - 1))
    held = np.zeros(s, dtype=bool)
    held[np.random.default_rng([int(seed), _HELDOUT_TAG]).choice(s, size=k, replace=False)] = True
    return ([line for line, h in zip(lines, held.tolist()) if not h],
            [line for line, h in zip(lines, held.tolist()) if h])


def heldout_lines(path: PathLike, heldout_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(training lines, held-out lines) exactly as :func:`tokenize_corpus` splits the corpus at ``path`` (before
    lowercasing), e.g. for the compressors' bits per byte on ``"".join(line + "\\n" for line in held)``."""
    _check_split(heldout_fraction, seed)
    return split_lines(read_lines(path), heldout_fraction, seed, path)


# ---- tokenizers (Hugging Face) ---------------------------------------------------------------------------------

def _import_tokenizers(what: str):
    try:
        import tokenizers
    except ImportError:
        raise ConfigError(_MISSING_TOKENIZERS.format(what=what)) from None
    return tokenizers


def _train_bpe(lines: list[str], vocab_size: int):
    tk = _import_tokenizers("data.tokenizer=bpe")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tk.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    _text_is_text(tok)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BPE_EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer=trainer, length=len(lines))
    reached = tok.get_vocab_size(with_added_tokens=True)
    if reached < vocab_size:
        raise DataError(f"data.vocab_size={vocab_size} is more than this corpus supports: its BPE stops at "
                        f"V={reached} (EOS + 256 bytes + {reached - MIN_BPE_VOCAB} merges); lower "
                        "data.vocab_size")
    return tok


def _load_tokenizer_file(path: Path):
    tk = _import_tokenizers(f"data.tokenizer={str(path)!r} (a tokenizer file)")
    try:
        tok = tk.Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises plain Exceptions for bad JSON and unknown structures
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DataError(f"cannot load tokenizer file {str(path)!r}: {why}; give a Hugging Face tokenizers JSON "
                        "(tokenizer.json, as saved by Tokenizer.save)") from None
    tok.no_truncation()
    tok.no_padding()
    _text_is_text(tok)
    return tok


def _text_is_text(tok) -> None:
    """A special token's spelling in the corpus ("<|endoftext|>") is encoded as text, not as the special token."""
    if hasattr(tok, "encode_special_tokens"):  # tokenizers >= 0.15.1
        tok.encode_special_tokens = True


def _batches(lines: list[str]) -> Iterator[list[str]]:
    start, size = 0, 0
    for i, line in enumerate(lines):
        size += len(line)
        if size >= _BATCH_CHARS:
            yield lines[start: i + 1]
            start, size = i + 1, 0
    if start < len(lines):
        yield lines[start:]


def _encode_lines(tok, lines: list[str], eos: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, lengths): each line's tokenizer ids followed by ``eos`` (int32, (sum(lengths) + len(lines),)), and the
    number of ids of each line without its EOS (int64, (len(lines),))."""
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # _fast: no offsets (tokenizers >= 0.20)
    parts, lengths = [], []
    for batch in _batches(lines):
        id_lists = [e.ids for e in encode(batch, add_special_tokens=False)]
        n = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))  # (L,)
        flat = np.fromiter(chain.from_iterable(id_lists), dtype=np.int32, count=int(n.sum()))  # (n.sum(),)
        del id_lists
        out = np.empty(len(flat) + len(n), dtype=np.int32)  # (n.sum() + L,)
        is_eos = np.zeros(len(out), dtype=bool)
        is_eos[np.cumsum(n + 1) - 1] = True
        out[is_eos] = eos
        out[~is_eos] = flat
        parts.append(out)
        lengths.append(n)
    if not parts:
        return np.zeros(0, np.int32), np.zeros(0, np.int64)
    return np.concatenate(parts), np.concatenate(lengths)


def _byte_level_map() -> dict[str, int]:
    """GPT-2's byte ↔ printable character table (what the ByteLevel pre-tokenizer and decoder use): char → byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _is_byte_level(tok) -> bool:
    decoder = json.loads(tok.to_str()).get("decoder") or {}
    if decoder.get("type") == "Sequence":
        return [d.get("type") for d in decoder.get("decoders", [])] == ["ByteLevel"]
    return decoder.get("type") == "ByteLevel"


def _token_bytes(tok, names: list[Optional[str]]) -> np.ndarray:
    """(n_orig,) int64: bytes each tokenizer id adds to a decoded text (0 for ids that are no token)."""
    if _is_byte_level(tok):  # exactly what decoders.ByteLevel does: its alphabet → 1 byte a char, else UTF-8
        chars = _byte_level_map()
        return np.array([0 if t is None else len(t) if all(c in chars for c in t) else len(t.encode("utf-8"))
                         for t in names], dtype=np.int64)
    ids = [i for i, t in enumerate(names) if t is not None]
    alone = tok.decode_batch([[i] for i in ids], skip_special_tokens=False)
    anchor = next((i for i, s in zip(ids, alone) if s.isascii() and s.isalnum()), None)
    out = np.zeros(len(names), dtype=np.int64)
    if anchor is None:  # no ordinary token to decode after: each token's own decoded bytes
        out[ids] = [len(s.encode("utf-8")) for s in alone]
        return out
    base = len(tok.decode([anchor], skip_special_tokens=False).encode("utf-8"))
    after = tok.decode_batch([[anchor, i] for i in ids], skip_special_tokens=False)
    out[ids] = [max(len(s.encode("utf-8")) - base, 0) for s in after]
    return out


def _frequency_ranks(counts: np.ndarray, classes: np.ndarray, tie: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order ``classes`` by descending count, ties by ascending ``tie``: (order (V,), rank (len(counts),), -1 for
    ids that are no class)."""
    order = classes[np.lexsort((tie[classes], -counts[classes]))]  # (V,)
    rank = np.full(len(counts), -1, dtype=np.int64)
    rank[order] = np.arange(len(order))
    return order, rank


def _tokenizer_classes(tok) -> tuple[list[Optional[str]], int, int]:
    """(names, eos, n_tok): the name of every tokenizer id (None for an id no token has) with EOS appended when the
    tokenizer has none of :data:`EOS_NAMES`; EOS's id; the number of the tokenizer's own ids."""
    vocab = tok.get_vocab(with_added_tokens=True)  # token → id
    n_tok = max(vocab.values()) + 1 if vocab else 0
    names: list[Optional[str]] = [None] * n_tok
    for t, i in vocab.items():
        names[i] = t
    eos_name = next((e for e in EOS_NAMES if e in vocab), None)
    if eos_name is not None:
        return names, vocab[eos_name], n_tok
    return names + [WORD_EOS], n_tok, n_tok  # a new class after the tokenizer's ids


def _tokenizer_corpus(tok, train_lines: list[str], held_lines: list[str]) -> dict:
    names, eos_orig, n_tok = _tokenizer_classes(tok)
    n_orig = len(names)
    t0 = time.perf_counter()
    train_orig, _ = _encode_lines(tok, train_lines, eos_orig)
    held_orig, held_len = _encode_lines(tok, held_lines, eos_orig)
    if max(int(train_orig.max()), int(held_orig.max())) >= n_orig:
        raise DataError("the tokenizer produced ids beyond its vocabulary; give a tokenizer file whose model and "
                        "vocabulary agree")
    valid = np.array([t is not None for t in names])  # (n_orig,)
    counts_orig = np.bincount(train_orig, minlength=n_orig).astype(np.int64)  # (n_orig,)
    order, rank = _frequency_ranks(counts_orig, np.flatnonzero(valid), np.arange(n_orig))
    rank = rank.astype(np.int32)  # (n_orig,) tokenizer id → class, -1 for ids no token has
    train, heldout = rank[train_orig], rank[held_orig]  # (N,), (M,)
    del train_orig
    if min(int(train.min()), int(heldout.min())) < 0:
        raise DataError("the tokenizer produced ids that are in none of its vocabulary's tokens; give a tokenizer "
                        "file whose model and vocabulary agree")

    # bytes: each token's decoded bytes; each line's EOS takes the rest of its decoded line (1 when lossless)
    table = np.zeros(n_orig, dtype=np.int64)
    table[:n_tok] = _token_bytes(tok, names[:n_tok])
    per_token = table[held_orig]  # (M,)
    ends = np.cumsum(held_len + 1) - 1  # (L,) EOS positions
    per_token[ends] = 0
    line_sum = np.add.reduceat(per_token, ends - held_len) if len(ends) else np.zeros(0, np.int64)  # (L,)
    line_ids = np.split(held_orig, ends + 1)[:-1]
    decoded = tok.decode_batch([a[:-1].tolist() for a in line_ids], skip_special_tokens=False)
    target = np.fromiter((len(d.encode("utf-8")) + 1 for d in decoded), dtype=np.int64, count=len(decoded))
    per_token[ends] = target - line_sum
    lossy = sum(d != line for d, line in zip(decoded, held_lines))
    result = dict(words=[names[i] for i in order.tolist()], train=train, heldout=heldout,
                  heldout_bytes=per_token.astype(np.int32),
                  counts=counts_orig[order], eos=int(rank[eos_orig]), unk=None,
                  stats={"lossless": lossy == 0, "heldout_lossy_lines": int(lossy), "heldout_oov_rate": None})
    result["stats"]["encode_seconds"] = time.perf_counter() - t0
    return result


# ---- word level -------------------------------------------------------------------------------------------------

def _word_encode(lines: list[str], table: defaultdict, pattern: re.Pattern) -> np.ndarray:
    """Provisional ids (``table``: token → id, "\\n" = 0 = EOS) of each line's tokens and its EOS, int32."""
    parts = []
    for batch in _batches(lines):
        tokens = pattern.findall("\n".join(batch) + "\n")
        parts.append(np.fromiter(map(table.__getitem__, tokens), dtype=np.int32, count=len(tokens)))
        del tokens
    return np.concatenate(parts) if parts else np.zeros(0, np.int32)


def _word_corpus(train_lines: list[str], held_lines: list[str], vocab_size: Optional[int], min_count: int) -> dict:
    t0 = time.perf_counter()
    pattern = re.compile(f"(?:{WORD_PATTERN})|\n")
    table: defaultdict = defaultdict(count(1).__next__)
    table["\n"] = 0
    train_prov = _word_encode(train_lines, table, pattern)
    num_train_types = len(table)
    held_prov = _word_encode(held_lines, table, pattern)
    types = list(table)  # provisional id → token
    counts = np.bincount(train_prov, minlength=len(types)).astype(np.int64)  # (T,)
    counts[0] = 0

    candidates = np.flatnonzero(counts >= min_count)  # (C,) training words (id 0, EOS, has count 0)
    candidates = candidates[candidates > 0]
    by_word = sorted(candidates.tolist(), key=types.__getitem__)
    word_rank = np.zeros(len(types), dtype=np.int64)
    word_rank[by_word] = np.arange(len(by_word))
    _, top = _frequency_ranks(counts, candidates, word_rank)
    cap = len(candidates) if vocab_size is None else vocab_size - 2
    kept = candidates[(top[candidates] < cap)]  # the `cap` most frequent words

    # the classes: kept words, <unk>, EOS; ranked by training count, ties by name
    names = [types[i] for i in kept.tolist()] + [UNK, WORD_EOS]
    num_words = int(np.count_nonzero(train_prov))
    class_counts = np.concatenate([counts[kept], [num_words - int(counts[kept].sum()), len(train_lines)]])
    by_name = np.empty(len(names), dtype=np.int64)
    by_name[sorted(range(len(names)), key=names.__getitem__)] = np.arange(len(names))
    order, rank = _frequency_ranks(class_counts, np.arange(len(names)), by_name)
    unk, eos = int(rank[len(kept)]), int(rank[len(kept) + 1])
    remap = np.full(len(types), unk, dtype=np.int32)  # provisional id → class; out of vocabulary → <unk>
    remap[kept] = rank[: len(kept)]
    remap[0] = eos

    word_bytes = np.fromiter((len(t.encode("utf-8")) + 1 for t in types), dtype=np.int32, count=len(types))
    word_bytes[0] = 0  # EOS: the newline is already counted as the last word's following separator
    heldout = remap[held_prov]
    held_words = int(np.count_nonzero(held_prov))
    oov = int(np.count_nonzero(heldout == unk))
    return dict(words=[names[i] for i in order.tolist()], train=remap[train_prov], heldout=heldout,
                heldout_bytes=word_bytes[held_prov], counts=class_counts[order].astype(np.int64), eos=eos, unk=unk,
                stats={"lossless": False, "heldout_lossy_lines": None, "types": num_train_types - 1,
                       "heldout_oov_rate": oov / held_words if held_words else 0.0,
                       "encode_seconds": time.perf_counter() - t0})


# ---- cache ------------------------------------------------------------------------------------------------------

def _cache_key(files: list[Path], settings: dict) -> str:
    listing = []
    for f in files:
        st = f.stat()
        listing.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"format": CACHE_FORMAT, "files": listing, "pattern": WORD_PATTERN, **settings},
                      sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _text_array(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_cache(path: Path, corpus: TokenizedCorpus, tokenizer_json: str) -> None:
    meta = {"eos": corpus.eos, "unk": corpus.unk, "stats": corpus.stats}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, train=corpus.train, heldout=corpus.heldout, heldout_bytes=corpus.heldout_bytes,
                     counts=corpus.counts, words=_text_array(json.dumps(corpus.words)),
                     meta=_text_array(json.dumps(meta)), tokenizer_json=_text_array(tokenizer_json))

    _atomic_write(path, write)


def _load_cache(path: Path) -> tuple[TokenizedCorpus, str]:
    with np.load(path, allow_pickle=False) as z:
        words = json.loads(z["words"].tobytes().decode("utf-8"))
        meta = json.loads(z["meta"].tobytes().decode("utf-8"))
        arrays = {k: z[k] for k in ("train", "heldout", "heldout_bytes", "counts")}
        tokenizer_json = z["tokenizer_json"].tobytes().decode("utf-8")
    corpus = TokenizedCorpus(words=words, eos=meta["eos"], unk=meta["unk"], stats=meta["stats"], **arrays)
    v = len(words)
    ok = (isinstance(words, list) and all(isinstance(w, str) for w in words)
          and all(corpus.__dict__[k].dtype == np.int32 and corpus.__dict__[k].ndim == 1
                  for k in ("train", "heldout", "heldout_bytes"))
          and corpus.counts.dtype == np.int64 and corpus.counts.shape == (v,)
          and corpus.heldout_bytes.shape == corpus.heldout.shape
          and isinstance(corpus.eos, int) and 0 <= corpus.eos < v
          and (corpus.unk is None or isinstance(corpus.unk, int) and 0 <= corpus.unk < v)
          and all(len(a) == 0 or 0 <= int(a.min()) and int(a.max()) < v for a in (corpus.train, corpus.heldout))
          and np.array_equal(np.bincount(corpus.train, minlength=v), corpus.counts))
    if not ok:
        raise ValueError("its arrays do not fit together")  # a damaged cache file: rebuilt by the caller
    return corpus, tokenizer_json


# ---- entry point ------------------------------------------------------------------------------------------------

def _resolve_kind(tokenizer: str) -> tuple[str, Optional[Path]]:
    if not isinstance(tokenizer, (str, os.PathLike)):
        raise ConfigError(f"data.tokenizer={tokenizer!r} must be 'bpe', 'word' or the path of a tokenizer.json")
    name = os.fspath(tokenizer)
    if name in KINDS:
        return name, None
    p = Path(name).expanduser()
    if p.is_file():
        return "file", p
    if p.suffix or os.sep in name or (os.altsep and os.altsep in name):
        raise DataError(f"tokenizer file {name!r} does not exist or is not a file; check data.tokenizer's path")
    raise ConfigError(f"data.tokenizer={name!r} must be 'bpe', 'word' or the path of a tokenizer.json"
                      f"{did_you_mean(name, KINDS)}")


def _check_int(key: str, value, low: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{key}={value!r} must be an integer >= {low}")


def tokenize_corpus(path: PathLike, *, tokenizer: str = "bpe", vocab_size: Optional[int] = None,
                    lowercase: bool = False, min_count: int = 1, heldout_fraction: float = 0.02, seed: int = 0,
                    cache_dir: Optional[PathLike] = None) -> TokenizedCorpus:
    """Split, tokenise and encode the corpus at ``path`` for a language model, or load it from the cache.

    Args:
        tokenizer: ``"bpe"`` (byte-level BPE trained on the training lines), ``"word"``, or the path of a Hugging
            Face ``tokenizer.json``; see the module docstring.
        vocab_size: V, the number of classes, EOS (and ``<unk>``) included. Required for ``bpe`` (>= 257); a cap
            for ``word`` (>= 3; None: every word with count >= min_count); for a tokenizer file None or its V.
        lowercase: ``str.lower`` the lines before tokenising.  min_count: ``word`` only (others need 1).
        heldout_fraction: in (0, 0.5), of the non-empty lines.  seed: the held-out choice.
        cache_dir: where to store/find the result (None: no cache).

    ``stats``: kind, tokenizer, vocab_size, lowercase, files, bytes, undecodable_bytes, lines, train_lines,
    heldout_lines, train_tokens and heldout_tokens (EOS included), heldout_text_bytes, heldout_oov_rate (word level,
    else None), lossless, heldout_lossy_lines, tokenizer_seconds (training the tokenizer), read_seconds,
    encode_seconds (all three 0 on a cache hit), seconds, cache ("hit", "miss", "off"), cache_path, tokenizer_file.

    Example:
        >>> c = tokenize_corpus("corpus.txt", tokenizer="bpe", vocab_size=4096)  # doctest: +SKIP
        >>> held = heldout_lines("corpus.txt", 0.02, 0)[1]  # doctest: +SKIP
        >>> c.heldout_bytes.sum() == sum(len(line.encode()) + 1 for line in held)  # doctest: +SKIP
        True
    """
    t_start = time.perf_counter()
    kind, tok_path = _resolve_kind(tokenizer)
    _check_split(heldout_fraction, seed)
    if not isinstance(lowercase, bool):
        raise ConfigError(f"data.lowercase={lowercase!r} must be true or false")
    _check_int("data.min_count", min_count, 1)
    if kind != "word" and min_count != 1:
        raise ConfigError(f"data.min_count={min_count!r} applies to data.tokenizer=word only; set it to 1 for "
                          f"{'bpe' if kind == 'bpe' else 'a tokenizer file'}")
    if kind == "bpe":
        if vocab_size is None:
            raise ConfigError("data.tokenizer=bpe needs data.vocab_size (the number of classes, EOS and the 256 "
                              "bytes included), e.g. 8192")
        _check_int("data.vocab_size", vocab_size, MIN_BPE_VOCAB)
    elif kind == "word":
        _check_int("data.vocab_size", vocab_size, 3, allow_none=True)
    else:
        _check_int("data.vocab_size", vocab_size, 2, allow_none=True)

    files = corpus_files(path)
    settings = {"kind": kind, "vocab_size": None if vocab_size is None else int(vocab_size),
                "lowercase": lowercase, "min_count": int(min_count), "heldout_fraction": float(heldout_fraction),
                "seed": int(seed)}
    if tok_path is not None:
        try:
            settings["tokenizer_sha256"] = hashlib.sha256(tok_path.read_bytes()).hexdigest()
        except OSError as e:
            raise DataError(f"cannot read tokenizer file {str(tok_path)!r}: {e.strerror or e}; check data.tokenizer"
                            ) from None
    cache_path = json_path = None
    if cache_dir is not None:
        key = _cache_key(files, settings)[:32]
        cache_path = Path(cache_dir) / f"lm-tokens-{key}.npz"
        json_path = cache_path.with_name(f"lm-tokens-{key}.tokenizer.json") if kind == "bpe" else None
        if cache_path.is_file():
            try:
                corpus, tokenizer_json = _load_cache(cache_path)
                if json_path is not None and not json_path.is_file():
                    _atomic_write(json_path, lambda tmp: tmp.write_text(tokenizer_json, encoding="utf-8"))
            except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile,
                    SampledSoftmaxError) as e:
                # a truncated or overwritten cache (BadZipFile, EOFError; JSON and UTF-8 errors are ValueErrors)
                log.warning("LM token cache %s is unreadable (%s); rebuilding it", cache_path, e)
            else:
                corpus.stats.update(cache="hit", cache_path=str(cache_path), tokenizer_seconds=0.0,
                                    read_seconds=0.0, encode_seconds=0.0,
                                    tokenizer_file=None if json_path is None else str(json_path),
                                    seconds=time.perf_counter() - t_start)
                return corpus

    tok = None
    if kind == "file":
        tok = _load_tokenizer_file(tok_path)  # before reading: a bad file fails fast
        v = sum(t is not None for t in _tokenizer_classes(tok)[0])
        if v < 2:
            raise DataError(f"tokenizer file {str(tok_path)!r} has an empty vocabulary; give a trained tokenizer")
        if vocab_size is not None and v != vocab_size:
            raise ConfigError(f"data.vocab_size={vocab_size} does not match the tokenizer file {str(tok_path)!r}, "
                              f"which gives V={v} classes (EOS included); set data.vocab_size to {v} or leave it "
                              "unset")
    elif kind == "bpe":
        _import_tokenizers("data.tokenizer=bpe")
    t0 = time.perf_counter()
    read_stats: dict = {}
    train_lines, held_lines = split_lines(read_lines(path, read_stats), heldout_fraction, seed, path)
    if lowercase:
        train_lines, held_lines = [s.lower() for s in train_lines], [s.lower() for s in held_lines]
    read_seconds = time.perf_counter() - t0
    if read_stats["undecodable_bytes"]:
        log.warning("corpus %s: %d undecodable bytes (not UTF-8) were replaced by U+FFFD", path,
                    read_stats["undecodable_bytes"])

    tokenizer_seconds, tokenizer_json = 0.0, ""
    if kind == "word":
        parts = _word_corpus(train_lines, held_lines, vocab_size, min_count)
    else:
        if kind == "bpe":
            t0 = time.perf_counter()
            log.info("training a byte-level BPE of V=%d on %d lines", vocab_size, len(train_lines))
            tok = _train_bpe(train_lines, int(vocab_size))
            tokenizer_seconds = time.perf_counter() - t0
            tokenizer_json = tok.to_str()
        parts = _tokenizer_corpus(tok, train_lines, held_lines)
    stats = parts.pop("stats")
    corpus = TokenizedCorpus(**parts, stats={})
    corpus.stats = {
        "kind": kind, "tokenizer": os.fspath(tokenizer), "vocab_size": corpus.vocab_size, "lowercase": lowercase,
        **read_stats, "lines": len(train_lines) + len(held_lines), "train_lines": len(train_lines),
        "heldout_lines": len(held_lines), "train_tokens": int(len(corpus.train)),
        "heldout_tokens": int(len(corpus.heldout)),
        "heldout_text_bytes": int(corpus.heldout_bytes.sum(dtype=np.int64)), **stats,
        "tokenizer_seconds": tokenizer_seconds, "read_seconds": read_seconds,
    }
    if cache_path is not None:
        try:
            if json_path is not None:
                _atomic_write(json_path, lambda tmp: tmp.write_text(tokenizer_json, encoding="utf-8"))
            _save_cache(cache_path, corpus, tokenizer_json)
        except OSError as e:
            log.warning("cannot write the LM token cache %s (%s); continuing without it", cache_path, e)
            json_path = None
    corpus.stats.update(cache="off" if cache_path is None else "miss",
                        cache_path=None if cache_path is None else str(cache_path),
                        tokenizer_file=None if json_path is None else str(json_path),
                        seconds=time.perf_counter() - t_start)
    return corpus
