"""Tests for sampledsoftmax.lm.tokenize: the held-out split of lines, byte-level BPE, word level, a user's
tokenizer.json, covered bytes (bits per byte), the cache, and the missing-package error.

Every corpus is written to tmp_path by the test. Expected values come from the definitions: lines cut by hand,
tokens decoded back with the saved tokenizer, vocabularies and counts from collections.Counter.
"""

from __future__ import annotations

import gzip
import logging
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers")

from sampledsoftmax.errors import ConfigError, DataError  # noqa: E402
from sampledsoftmax.lm.tokenize import BPE_EOS, UNK, WORD_EOS, heldout_lines, tokenize_corpus  # noqa: E402

COMMON = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
          "they you were her she there been one all we their").split()
PUNCT = [",", ".", "!", "?", ";", "'s", "—", "(", ")"]
UNICODE = ["café", "naïve", "Über", "日本語", "中文字", "😀", "👩‍👩‍👧", "e\u0301", "שלום", "ﬁ", "Ω"]


def make_text(n_lines: int = 120, seed: int = 0, rare: int = 400) -> str:
    """Zipf-like lines of common words, rare words, punctuation and some unicode, with blank lines, whitespace-only
    lines, CRLF line ends, tabs and runs of spaces."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_lines):
        words = []
        for _ in range(int(rng.integers(1, 14))):
            r = rng.random()
            if r < 0.6:
                words.append(COMMON[min(int(rng.zipf(1.3)) - 1, len(COMMON) - 1)])
            elif r < 0.75:
                words.append(f"w{int(rng.integers(rare))}")
            elif r < 0.9:
                words.append(str(rng.choice(PUNCT)))
            else:
                words.append(str(rng.choice(UNICODE)))
        sep = "\t" if i % 17 == 0 else "   " if i % 11 == 0 else " "
        out.append(sep.join(words) + ("\r" if i % 13 == 0 else ""))
        if i % 19 == 0:
            out.append("")
        if i % 23 == 0:
            out.append(" \t ")
    return "\n".join(out) + "\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def reference_lines(text: str) -> list[str]:
    """The non-empty lines by the definition: cut at \\n, drop one trailing \\r, skip blank ones."""
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    return [line for line in lines if line.strip()]


def word_tokens(line: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", line)


def is_subsequence(part: list[str], whole: list[str]) -> bool:
    it = iter(whole)
    return all(any(x == y for y in it) for x in part)


def line_segments(ids: np.ndarray, eos: int) -> list[np.ndarray]:
    """The ids of each line (without its EOS) of a stream that ends every line with EOS."""
    ends = np.flatnonzero(ids == eos)
    assert len(ids) and ids[-1] == eos
    return [piece[:-1] for piece in np.split(ids, ends + 1)[:-1]]


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write(tmp_path / "corpus.txt", make_text())


@pytest.fixture
def bpe(corpus, tmp_path):
    c = tokenize_corpus(corpus, tokenizer="bpe", vocab_size=320, heldout_fraction=0.1, cache_dir=tmp_path / "cache")
    return c, tokenizers.Tokenizer.from_file(c.stats["tokenizer_file"])


def decode_lines(c, tok, ids: np.ndarray) -> list[str]:
    to_tok = np.array([tok.token_to_id(w) for w in c.words])  # class → tokenizer id
    return [tok.decode(to_tok[seg].tolist(), skip_special_tokens=False) for seg in line_segments(ids, c.eos)]


# ---- the split --------------------------------------------------------------------------------------------------

def test_split_keeps_every_line_in_order_and_holds_out_the_fraction(tmp_path):
    text = make_text(200)
    path = write(tmp_path / "c.txt", text)
    ref = reference_lines(text)
    train, held = heldout_lines(path, 0.1, seed=3)
    assert sorted(train + held) == sorted(ref)
    assert is_subsequence(train, ref) and is_subsequence(held, ref)
    assert len(held) == round(0.1 * len(ref))
    assert all("\r" not in line and "\n" not in line for line in train + held)


def test_split_is_deterministic_per_seed(corpus):
    assert heldout_lines(corpus, 0.1, 0) == heldout_lines(corpus, 0.1, 0)
    assert heldout_lines(corpus, 0.1, 0)[1] != heldout_lines(corpus, 0.1, 1)[1]


def test_split_holds_out_at_least_one_line_and_never_all(tmp_path):
    path = write(tmp_path / "two.txt", "first line\n\n   \nsecond line\n")
    train, held = heldout_lines(path, 0.01, 0)
    assert len(held) == 1 and len(train) == 1 and sorted(train + held) == ["first line", "second line"]


def test_split_does_not_depend_on_the_tokenizer_or_vocab_size(corpus):
    _, held = heldout_lines(corpus, 0.1, 5)
    line_bytes = [len(line.encode("utf-8")) + 1 for line in held]
    for kwargs in ({"tokenizer": "bpe", "vocab_size": 300}, {"tokenizer": "bpe", "vocab_size": 340},
                   {"tokenizer": "word"}, {"tokenizer": "word", "vocab_size": 10}):
        c = tokenize_corpus(corpus, heldout_fraction=0.1, seed=5, **kwargs)
        segments = line_segments(c.heldout, c.eos)
        assert len(segments) == len(held)
        starts = np.cumsum([0] + [len(s) + 1 for s in segments])
        per_line = np.add.reduceat(c.heldout_bytes, starts[:-1])
        if kwargs["tokenizer"] == "bpe":
            assert per_line.tolist() == line_bytes
        else:
            assert [len(s) for s in segments] == [len(word_tokens(line)) for line in held]
            assert per_line.tolist() == [len((" ".join(word_tokens(line)) + "\n").encode()) for line in held]


def test_split_reads_directories_and_compressed_files(tmp_path):
    a, b = make_text(40, seed=1), make_text(30, seed=2)
    write(tmp_path / "d" / "a.txt", a)
    (tmp_path / "d" / "sub").mkdir()
    with gzip.open(tmp_path / "d" / "sub" / "b.txt.gz", "wb") as fh:
        fh.write(b.rstrip("\n").encode())  # no final newline: a file's end is a line end
    train, held = heldout_lines(tmp_path / "d", 0.2, 0)
    assert sorted(train + held) == sorted(reference_lines(a) + reference_lines(b))


@pytest.mark.parametrize("fraction", [0, 0.0, 0.5, 0.7, -0.1, "0.1", True])
def test_heldout_fraction_outside_the_open_interval_is_a_config_error(corpus, fraction):
    with pytest.raises(ConfigError, match="heldout_fraction") as e:
        tokenize_corpus(corpus, tokenizer="word", heldout_fraction=fraction)
    one_line(e)
    with pytest.raises(ConfigError, match="heldout_fraction"):
        heldout_lines(corpus, fraction, 0)


@pytest.mark.parametrize("text", ["", "\n\n", "   \n\t\n \r\n"])
def test_a_corpus_without_lines_is_a_data_error(tmp_path, text):
    path = write(tmp_path / "empty.txt", text)
    with pytest.raises(DataError, match="0 non-empty lines") as e:
        tokenize_corpus(path, tokenizer="word")
    one_line(e)


def test_a_corpus_of_one_line_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="1 non-empty line;.*at least 2"):
        tokenize_corpus(write(tmp_path / "one.txt", "just one line\n\n"), tokenizer="bpe", vocab_size=300)


def test_a_missing_corpus_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        tokenize_corpus(tmp_path / "nope.txt", tokenizer="word")


# ---- byte-level BPE ---------------------------------------------------------------------------------------------

def test_bpe_has_exactly_vocab_size_classes_in_frequency_order(bpe, corpus):
    c, tok = bpe
    train_lines, held = heldout_lines(corpus, 0.1, 0)
    assert len(c.words) == c.stats["vocab_size"] == 320 and len(set(c.words)) == 320
    assert c.words[c.eos] == BPE_EOS and c.unk is None
    assert c.train.dtype == c.heldout.dtype == c.heldout_bytes.dtype == np.int32 and c.counts.dtype == np.int64
    assert np.array_equal(c.counts, np.bincount(c.train, minlength=320))  # brute-force count of the ids
    assert np.all(np.diff(c.counts) <= 0)
    # ties broken by the tokenizer's own id
    orig = np.array([tok.token_to_id(w) for w in c.words])
    tied = c.counts[1:] == c.counts[:-1]
    assert tied.any() and np.all(orig[1:][tied] > orig[:-1][tied])
    assert c.counts[c.eos] == len(train_lines) and np.count_nonzero(c.heldout == c.eos) == len(held)
    assert c.train[-1] == c.eos and c.heldout[-1] == c.eos
    assert c.stats["train_tokens"] == len(c.train) and c.stats["heldout_tokens"] == len(c.heldout)


def test_bpe_decodes_back_to_the_exact_lines(bpe, corpus):
    c, tok = bpe
    train_lines, held = heldout_lines(corpus, 0.1, 0)
    assert decode_lines(c, tok, c.heldout) == held
    assert decode_lines(c, tok, c.train) == train_lines
    assert c.stats["lossless"] is True and c.stats["heldout_lossy_lines"] == 0


def test_bpe_heldout_bytes_are_the_bytes_of_the_heldout_text(bpe, corpus):
    c, tok = bpe
    _, held = heldout_lines(corpus, 0.1, 0)
    total = sum(len(line.encode("utf-8")) + 1 for line in held)
    assert int(c.heldout_bytes.sum()) == c.stats["heldout_text_bytes"] == total
    assert np.all(c.heldout_bytes[c.heldout == c.eos] == 1)  # EOS covers the newline
    # a token that decodes to whole characters covers the bytes of its decoded text
    to_tok = [tok.token_to_id(w) for w in c.words]
    checked = 0
    for k, b in zip(c.heldout.tolist(), c.heldout_bytes.tolist()):
        if k != c.eos:
            s = tok.decode([to_tok[k]])
            if "\ufffd" not in s:
                assert b == len(s.encode("utf-8"))
                checked += 1
            else:  # part of a multi-byte character: 1 to 3 bytes
                assert 1 <= b <= 3
    assert checked > len(c.heldout) // 2


def test_bpe_heldout_bytes_do_not_depend_on_vocab_size(corpus):
    small = tokenize_corpus(corpus, tokenizer="bpe", vocab_size=257, heldout_fraction=0.1)
    large = tokenize_corpus(corpus, tokenizer="bpe", vocab_size=400, heldout_fraction=0.1)
    assert len(large.heldout) < len(small.heldout)  # more merges, fewer tokens ...
    assert int(small.heldout_bytes.sum()) == int(large.heldout_bytes.sum())  # ... for the same text
    non_eos = small.heldout != small.eos
    assert np.all(small.heldout_bytes[non_eos] == 1)  # V = 257: no merge, one token per byte
    assert len(small.words) == 257 and len(small.heldout) == small.stats["heldout_text_bytes"]


def test_bpe_vocab_size_the_corpus_cannot_fill_names_the_largest(tmp_path):
    path = write(tmp_path / "tiny.txt", "ab ab abc\nabc ab\nbc ab\nabab\n")
    with pytest.raises(DataError, match=r"data.vocab_size=1000 .*stops at V=\d+.*lower data.vocab_size") as e:
        tokenize_corpus(path, tokenizer="bpe", vocab_size=1000, heldout_fraction=0.25)
    largest = int(re.search(r"stops at V=(\d+)", one_line(e)).group(1))
    assert 257 < largest < 1000
    assert len(tokenize_corpus(path, tokenizer="bpe", vocab_size=largest, heldout_fraction=0.25).words) == largest
    with pytest.raises(DataError, match=f"stops at V={largest}"):
        tokenize_corpus(path, tokenizer="bpe", vocab_size=largest + 1, heldout_fraction=0.25)


@pytest.mark.parametrize("vocab_size", [256, 100, 0, 300.0])
def test_bpe_vocab_size_below_bytes_and_eos_is_a_config_error(corpus, vocab_size):
    with pytest.raises(ConfigError, match="vocab_size.*>= 257") as e:
        tokenize_corpus(corpus, tokenizer="bpe", vocab_size=vocab_size)
    one_line(e)


def test_bpe_needs_a_vocab_size(corpus):
    with pytest.raises(ConfigError, match="bpe needs data.vocab_size"):
        tokenize_corpus(corpus, tokenizer="bpe")


def test_bpe_rejects_min_count(corpus):
    with pytest.raises(ConfigError, match="min_count=2 applies to data.tokenizer=word only"):
        tokenize_corpus(corpus, tokenizer="bpe", vocab_size=300, min_count=2)


def test_bpe_round_trips_unicode_and_literal_special_tokens(tmp_path):
    lines = ["Crème brûlée à la café, naïve Ångström ŒUVRE ß ẞ", "日本語のテキストと中文字 한국어", "emoji 😀🎉 👩‍👩‍👧 🇫🇷 ✓",
             "combining e\u0301 and ZWJ\u200dZ, nbsp\u00a0here, RTL שלום عربي", "a literal <|endoftext|> is text",
             "tabs\tand   spaces  ", "\u2028line separator\x0cform feed", "replacement \ufffd char"] * 3
    path = write(tmp_path / "u.txt", "\n".join(lines) + "\n")
    c = tokenize_corpus(path, tokenizer="bpe", vocab_size=300, heldout_fraction=0.3, cache_dir=tmp_path / "cache")
    tok = tokenizers.Tokenizer.from_file(c.stats["tokenizer_file"])
    train_lines, held = heldout_lines(path, 0.3, 0)
    assert decode_lines(c, tok, c.heldout) == held and decode_lines(c, tok, c.train) == train_lines
    assert int(c.heldout_bytes.sum()) == sum(len(line.encode()) + 1 for line in held)
    assert c.counts[c.eos] == len(train_lines)  # the literal "<|endoftext|>" is not an EOS


def test_bpe_training_is_deterministic(corpus):
    a = tokenize_corpus(corpus, tokenizer="bpe", vocab_size=330)
    b = tokenize_corpus(corpus, tokenizer="bpe", vocab_size=330)
    assert a.words == b.words and np.array_equal(a.train, b.train) and np.array_equal(a.heldout, b.heldout)


def test_lowercase_bpe_covers_the_lowercased_text(tmp_path):
    text = "The Cat SAT on the ẞIG Mat\nİstanbul AND Ankara\n" * 4
    path = write(tmp_path / "c.txt", text)
    c = tokenize_corpus(path, tokenizer="bpe", vocab_size=280, lowercase=True, heldout_fraction=0.25)
    _, held = heldout_lines(path, 0.25, 0)
    assert int(c.heldout_bytes.sum()) == sum(len(line.lower().encode()) + 1 for line in held)
    upper = [k for k, w in enumerate(c.words) if w.isascii() and any(ch.isupper() for ch in w)]
    assert upper and np.all(c.counts[upper] == 0)  # the byte tokens "A".."Z" exist but never occur


# ---- word level -------------------------------------------------------------------------------------------------

def word_reference(path: Path, vocab_size=None, min_count=1, lowercase=False):
    """Vocabulary, OOV positions and bytes of the held-out tokens, from Counter and the definitions."""
    train_lines, held = heldout_lines(path, 0.1, 0)
    if lowercase:
        train_lines, held = [s.lower() for s in train_lines], [s.lower() for s in held]
    counts = Counter(t for line in train_lines for t in word_tokens(line))
    ranked = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    kept = set(ranked if vocab_size is None else ranked[: vocab_size - 2])
    return train_lines, held, counts, kept


def test_word_level_drops_no_token_and_maps_oov_to_unk(corpus):
    c = tokenize_corpus(corpus, tokenizer="word", vocab_size=25, heldout_fraction=0.1)
    train_lines, held, counts, kept = word_reference(corpus, vocab_size=25)
    held_tokens = [word_tokens(line) for line in held]
    for line, toks in zip(held, held_tokens):
        assert "".join(toks) == "".join(line.split())  # every non-space character is covered
    assert len(c.heldout) == sum(len(t) + 1 for t in held_tokens)  # each token, plus one EOS a line
    assert len(c.train) == sum(len(word_tokens(line)) + 1 for line in train_lines)
    expected = []
    for toks in held_tokens:
        expected += [t if t in kept else UNK for t in toks] + [WORD_EOS]
    assert [c.words[k] for k in c.heldout.tolist()] == expected
    n_oov = sum(t not in kept for toks in held_tokens for t in toks)
    assert n_oov > 0
    assert c.stats["heldout_oov_rate"] == pytest.approx(n_oov / sum(map(len, held_tokens)))


def test_word_level_heldout_bytes_are_the_space_joined_tokens(corpus):
    c = tokenize_corpus(corpus, tokenizer="word", vocab_size=25, heldout_fraction=0.1)
    _, held, _, _ = word_reference(corpus)
    per_line = [len((" ".join(word_tokens(line)) + "\n").encode("utf-8")) for line in held]
    assert int(c.heldout_bytes.sum()) == c.stats["heldout_text_bytes"] == sum(per_line)
    segments = line_segments(c.heldout, c.eos)
    starts = np.cumsum([0] + [len(s) + 1 for s in segments])
    assert np.add.reduceat(c.heldout_bytes, starts[:-1]).tolist() == per_line
    assert np.all(c.heldout_bytes[c.heldout == c.eos] == 0)
    assert c.stats["lossless"] is False and c.unk is not None


def test_word_level_vocab_cap_and_frequency_order(corpus):
    c = tokenize_corpus(corpus, tokenizer="word", vocab_size=25, heldout_fraction=0.1)
    train_lines, _, counts, kept = word_reference(corpus, vocab_size=25)
    assert len(c.words) == c.stats["vocab_size"] == 25
    assert c.words[c.unk] == UNK and c.words[c.eos] == WORD_EOS
    assert set(c.words) == kept | {UNK, WORD_EOS}
    assert np.array_equal(c.counts, np.bincount(c.train, minlength=25))
    assert c.counts[c.eos] == len(train_lines)
    assert c.counts[c.unk] == sum(n for w, n in counts.items() if w not in kept)
    keys = [(-int(n), w) for n, w in zip(c.counts, c.words)]
    assert keys == sorted(keys)  # descending counts, ties by the word
    for w, n in zip(c.words, c.counts):
        if w not in (UNK, WORD_EOS):
            assert n == counts[w]


def test_word_level_without_cap_keeps_every_word_and_min_count_drops_rare_ones(corpus):
    everything = tokenize_corpus(corpus, tokenizer="word", heldout_fraction=0.1)
    _, _, counts, _ = word_reference(corpus)
    assert len(everything.words) == len(counts) + 2 and everything.counts[everything.unk] == 0
    c = tokenize_corpus(corpus, tokenizer="word", min_count=3, heldout_fraction=0.1)
    _, _, _, kept = word_reference(corpus, min_count=3)
    assert set(c.words) == kept | {UNK, WORD_EOS}
    assert c.counts[c.unk] == sum(n for w, n in counts.items() if n < 3)
    assert len(c.words) < len(everything.words)


def test_word_level_lowercase(corpus):
    c = tokenize_corpus(corpus, tokenizer="word", lowercase=True, heldout_fraction=0.1)
    _, _, counts, kept = word_reference(corpus, lowercase=True)
    assert set(c.words) == kept | {UNK, WORD_EOS} and "über" in c.words and "Über" not in c.words


@pytest.mark.parametrize("vocab_size", [2, 0, 2.5])
def test_word_level_vocab_size_too_small_is_a_config_error(corpus, vocab_size):
    with pytest.raises(ConfigError, match="vocab_size"):
        tokenize_corpus(corpus, tokenizer="word", vocab_size=vocab_size)


# ---- a user's tokenizer.json ------------------------------------------------------------------------------------

def test_own_bpe_saved_and_reloaded_gives_the_same_corpus(bpe, corpus):
    c, _ = bpe
    again = tokenize_corpus(corpus, tokenizer=c.stats["tokenizer_file"], heldout_fraction=0.1)
    assert again.words == c.words and again.eos == c.eos
    for name in ("train", "heldout", "heldout_bytes", "counts"):
        assert np.array_equal(getattr(again, name), getattr(c, name)), name
    assert again.stats["kind"] == "file" and again.stats["lossless"] is True


@pytest.mark.parametrize("content", [b"not json at all {", b'{"a": 1}', b"\x00\xff\xfe garbage", b""])
def test_a_garbage_tokenizer_file_is_a_one_line_data_error(corpus, tmp_path, content):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    with pytest.raises(DataError, match="cannot load tokenizer file .*bad.json") as e:
        tokenize_corpus(corpus, tokenizer=str(bad))
    one_line(e)


def test_a_missing_tokenizer_file_or_unknown_kind(corpus, tmp_path):
    with pytest.raises(DataError, match="nope.json.*does not exist"):
        tokenize_corpus(corpus, tokenizer=str(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match='must be .bpe., .word.*did you mean "bpe"') as e:
        tokenize_corpus(corpus, tokenizer="bep")
    one_line(e)


def train_tokenizer(lines, *, lowercase: bool):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=300, show_progress=False, special_tokens=["</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def test_a_lowercasing_tokenizer_counts_the_bytes_of_its_decoded_text(tmp_path):
    text = "The ẞIG Cat\nAnd SO ON ẞẞ\nplain lower line\n" * 5  # "ẞ": 3 bytes, its lowercase "ß": 2
    path = write(tmp_path / "c.txt", text)
    tok = train_tokenizer(reference_lines(text), lowercase=True)
    tok.save(str(tmp_path / "lower.json"))
    c = tokenize_corpus(path, tokenizer=str(tmp_path / "lower.json"), heldout_fraction=0.4)
    _, held = heldout_lines(path, 0.4, 0)
    decoded = [tok.decode(tok.encode(line, add_special_tokens=False).ids) for line in held]
    assert decoded != held
    assert int(c.heldout_bytes.sum()) == sum(len(d.encode()) + 1 for d in decoded)
    assert int(c.heldout_bytes.sum()) != sum(len(line.encode()) + 1 for line in held)
    lossy = sum(d != h for d, h in zip(decoded, held))
    assert c.stats["lossless"] is False and c.stats["heldout_lossy_lines"] == lossy > 0
    assert c.words[c.eos] == "</s>" and len(c.words) == tok.get_vocab_size()  # its own "</s>" is EOS: none added


def test_a_word_level_tokenizer_with_unknowns_and_no_eos(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "the": 1, "cat": 2, "sat": 3, "on": 4, "mat": 5, ".": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "wl.json"))
    text = "the cat sat on the mat .\nthe dog sat .\na cat on a mat\nthe   cat\n" * 3
    path = write(tmp_path / "c.txt", text)
    c = tokenize_corpus(path, tokenizer=str(tmp_path / "wl.json"), heldout_fraction=0.3)
    _, held = heldout_lines(path, 0.3, 0)
    assert len(c.words) == len(vocab) + 1 and c.words[c.eos] == WORD_EOS  # EOS added as a new class
    decoded = [tok.decode(tok.encode(line, add_special_tokens=False).ids) for line in held]
    segments = line_segments(c.heldout, c.eos)
    starts = np.cumsum([0] + [len(s) + 1 for s in segments])
    per_line = np.add.reduceat(c.heldout_bytes, starts[:-1])
    assert per_line.tolist() == [len(d.encode()) + 1 for d in decoded]
    assert c.stats["lossless"] is False and np.all(c.heldout_bytes >= 0)
    assert np.array_equal(c.counts, np.bincount(c.train, minlength=len(c.words)))
    with pytest.raises(ConfigError, match="does not match the tokenizer file .*V=8"):
        tokenize_corpus(path, tokenizer=str(tmp_path / "wl.json"), vocab_size=100)


# ---- cache ------------------------------------------------------------------------------------------------------

def assert_same(a, b):
    assert a.words == b.words and a.eos == b.eos and a.unk == b.unk
    for name in ("train", "heldout", "heldout_bytes", "counts"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


@pytest.mark.parametrize("kind", ["bpe", "word"])
def test_cache_hit_gives_the_same_corpus(corpus, tmp_path, kind):
    kwargs = dict(tokenizer=kind, vocab_size=300 if kind == "bpe" else 30, cache_dir=tmp_path / "cache")
    first = tokenize_corpus(corpus, **kwargs)
    second = tokenize_corpus(corpus, **kwargs)
    assert first.stats["cache"] == "miss" and second.stats["cache"] == "hit"
    assert second.stats["tokenizer_seconds"] == 0 and (kind == "word" or first.stats["tokenizer_seconds"] > 0)
    assert second.stats["cache_path"] == first.stats["cache_path"]
    assert_same(first, second)
    assert tokenize_corpus(corpus, tokenizer=kind, vocab_size=kwargs["vocab_size"]).stats["cache"] == "off"


def test_cache_hit_needs_no_tokenizers_package_and_restores_the_tokenizer_file(corpus, tmp_path, monkeypatch):
    first = tokenize_corpus(corpus, tokenizer="bpe", vocab_size=300, cache_dir=tmp_path / "cache")
    Path(first.stats["tokenizer_file"]).unlink()
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    second = tokenize_corpus(corpus, tokenizer="bpe", vocab_size=300, cache_dir=tmp_path / "cache")
    assert second.stats["cache"] == "hit" and Path(second.stats["tokenizer_file"]).is_file()
    assert_same(first, second)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong_counts"])
def test_a_damaged_cache_is_rebuilt_with_a_warning(corpus, tmp_path, caplog, damage):
    kwargs = dict(tokenizer="bpe", vocab_size=300, cache_dir=tmp_path / "cache")
    first = tokenize_corpus(corpus, **kwargs)
    path = Path(first.stats["cache_path"])
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 100)
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a well-formed file whose arrays do not fit together
        with np.load(path) as z:
            arrays = dict(z)
        arrays["counts"] = arrays["counts"] + 1
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    with caplog.at_level(logging.WARNING, logger="sampledsoftmax.lm.tokenize"):
        again = tokenize_corpus(corpus, **kwargs)
    assert again.stats["cache"] == "miss"
    assert any("unreadable" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    assert_same(first, again)
    assert tokenize_corpus(corpus, **kwargs).stats["cache"] == "hit"  # the rebuilt file is good


def test_cache_key_separates_settings_and_sees_the_corpus_change(corpus, tmp_path):
    base = dict(tokenizer="bpe", vocab_size=300, cache_dir=tmp_path / "cache")
    a = tokenize_corpus(corpus, **base)
    paths = {a.stats["cache_path"]}
    word = {"tokenizer": "word", "vocab_size": None}
    for change in ({"vocab_size": 310}, {"seed": 1}, {"heldout_fraction": 0.05}, {"lowercase": True}, word,
                   {**word, "min_count": 2}):
        c = tokenize_corpus(corpus, **{**base, **change})
        assert c.stats["cache"] == "miss"
        paths.add(c.stats["cache_path"])
    assert len(paths) == 7
    write(corpus, make_text(seed=9))
    changed = tokenize_corpus(corpus, **base)
    assert changed.stats["cache"] == "miss" and changed.stats["cache_path"] not in paths


def test_cache_key_includes_the_tokenizer_files_content(bpe, corpus, tmp_path):
    c, tok = bpe
    own = tmp_path / "own.json"
    tok.save(str(own))
    first = tokenize_corpus(corpus, tokenizer=str(own), cache_dir=tmp_path / "cache2")
    assert tokenize_corpus(corpus, tokenizer=str(own), cache_dir=tmp_path / "cache2").stats["cache"] == "hit"
    train_tokenizer(reference_lines(make_text(seed=4)), lowercase=False).save(str(own))
    assert tokenize_corpus(corpus, tokenizer=str(own), cache_dir=tmp_path / "cache2").stats["cache"] == "miss"
    assert first.stats["cache"] == "miss"


# ---- the optional dependency ------------------------------------------------------------------------------------

def test_missing_tokenizers_package_is_a_one_line_config_error(corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # `import tokenizers` now raises ImportError
    with pytest.raises(ConfigError) as e:
        tokenize_corpus(corpus, tokenizer="bpe", vocab_size=300)
    assert one_line(e) == "data.tokenizer=bpe needs the tokenizers package: pip install 'sampledsoftmax[lm]'"
    own = write(tmp_path / "t.json", "{}")
    with pytest.raises(ConfigError, match=r"needs the tokenizers package: pip install 'sampledsoftmax\[lm\]'"):
        tokenize_corpus(corpus, tokenizer=str(own))
    assert len(tokenize_corpus(corpus, tokenizer="word").words) > 2  # word level needs no tokenizers
