"""Tests for sampledsoftmax.data.corpus and .vocab: reading, tokenizer, vocabulary, held-out split, cache.

Every corpus is written to a temporary directory by the test itself. Expected values are computed independently
(a whole-text tokenisation, hand-written vocabularies, gensim's own vocabulary rule where gensim is installed).
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sampledsoftmax.data.corpus import (
    MAX_SENTENCE_TOKENS,
    EncodedCorpus,
    corpus_files,
    iter_texts,
    load_corpus,
    tokenize,
)
from sampledsoftmax.data.vocab import Vocab
from sampledsoftmax.errors import ConfigError, DataError

TEXT = (
    "The quick brown fox jumps over the lazy dog. The dog's owner, naïve as ever, said: \"Don't!\"\n"
    "Über café — 日本語 text; the fox ran.\n"
    "\n"
    "   leading spaces and\ttabs\tand   the end"  # no final newline
)


def write(path: Path, text: str = TEXT, opener=open) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with opener(path, "wb") as fh:
        fh.write(text.encode("utf-8"))
    return path


def sentences(ids: np.ndarray, vocab: Vocab) -> list[list[str]]:
    """Decode an ids array (-1 = break) into sentences of words."""
    out, cur = [], []
    for i in ids.tolist():
        if i < 0:
            out.append(cur)
            cur = []
        else:
            cur.append(vocab.words[i])
    out.append(cur)
    return out


def load(path, **kw) -> EncodedCorpus:
    args = dict(min_count=1, heldout_fraction=0.0, cache_dir=None)
    args.update(kw)
    return load_corpus(path, **args)


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


# ---- tokenizer and reading -------------------------------------------------------------------------------------------

def test_tokenize_lowercases_then_matches():
    assert tokenize("The Dog's DOG, 3 dogs.") == ["the", "dog's", "dog", "dogs"]
    assert tokenize("The Dog's", lowercase=False) == ["he", "og's"]  # pattern [a-z']+ applied to the raw text
    assert tokenize("Über café", token_pattern=r"\w+") == ["über", "café"]


@pytest.mark.parametrize("pattern, fragment", [("(a)+", "capturing"), ("[a-z]*", "empty string"), ("[a-z", "valid")])
def test_bad_token_pattern_is_a_config_error(tmp_path, pattern, fragment):
    path = write(tmp_path / "c.txt")
    with pytest.raises(ConfigError) as e:
        load(path, token_pattern=pattern)
    msg = one_line(e)
    assert "data.token_pattern" in msg and fragment in msg


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 7, 64, 1 << 20])
def test_chunks_end_at_whitespace_and_never_cut_a_token(tmp_path, chunk_bytes):
    path = write(tmp_path / "c.txt")
    stats: dict = {}
    chunks = list(iter_texts(path, chunk_bytes=chunk_bytes, stats=stats))
    assert "".join(chunks) == TEXT + "\n"  # multi-byte characters split by a read are decoded whole
    assert all(c[-1].isspace() for c in chunks)
    per_chunk = [t for c in chunks for t in tokenize(c, token_pattern=r"\w+")]
    assert per_chunk == tokenize(TEXT, token_pattern=r"\w+")
    assert stats == {"files": 1, "bytes": len(TEXT.encode("utf-8")), "undecodable_bytes": 0}
    if chunk_bytes < 8:
        assert len(chunks) > 5  # the boundaries were really exercised


def test_encoding_does_not_depend_on_chunk_size(tmp_path):
    words = [f"w{'abcdefghij'[i % 10]}{'abcdefghij'[i // 10 % 10]}" for i in range(100)]
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, size=rng.integers(1, 40))) for _ in range(300)]
    path = write(tmp_path / "c.txt", "\n".join(lines) + "\n")
    ref = load(path, min_count=3, heldout_fraction=0.1)
    for chunk_bytes in (5, 97, 4096):
        got = load(path, min_count=3, heldout_fraction=0.1, chunk_bytes=chunk_bytes)
        assert got.vocab == ref.vocab
        np.testing.assert_array_equal(got.ids, ref.ids)
        np.testing.assert_array_equal(got.heldout_ids, ref.heldout_ids)


def test_lines_are_sentences_and_file_end_is_a_line_end(tmp_path):
    c = load(write(tmp_path / "c.txt"))
    assert c.ids.dtype == np.int32 and c.heldout_ids.dtype == np.int32 and len(c.heldout_ids) == 0
    expected = [tokenize(line) for line in TEXT.split("\n")]
    assert sentences(c.ids, c.vocab) == [s for s in expected if s]  # the empty line is dropped
    assert c.ids[0] != -1 and c.ids[-1] != -1 and not np.any((c.ids[1:] == -1) & (c.ids[:-1] == -1))
    assert c.stats["raw_tokens"] == sum(map(len, expected)) == c.stats["train_tokens"]
    assert c.stats["sentences"] == 3 and c.stats["cache"] == "off"


@pytest.mark.parametrize("suffix, opener", [(".gz", gzip.open), (".bz2", bz2.open), (".xz", lzma.open)])
def test_compressed_files_are_read_transparently(tmp_path, suffix, opener):
    plain = load(write(tmp_path / "c.txt"))
    packed_path = write(tmp_path / f"c.txt{suffix}", opener=opener)
    assert packed_path.read_bytes() != TEXT.encode("utf-8")
    packed = load(packed_path, chunk_bytes=5)
    assert packed.vocab == plain.vocab
    np.testing.assert_array_equal(packed.ids, plain.ids)


def test_corrupt_gzip_is_a_data_error(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataError) as e:
        load(path)
    assert str(path) in one_line(e)


def test_directory_is_read_recursively_in_sorted_order_skipping_hidden(tmp_path):
    root = tmp_path / "corpus"
    write(root / "b.txt", "bravo bravo")
    write(root / "a" / "z.txt.gz", "alpha zulu", opener=gzip.open)
    write(root / "a" / "y.txt", "alpha yankee\n")
    write(root / "c.bz2", "charlie", opener=bz2.open)
    write(root / ".hidden.txt", "hidden")
    write(root / ".cache" / "x.txt", "hidden")
    files = corpus_files(root)
    assert [f.relative_to(root).as_posix() for f in files] == ["a/y.txt", "a/z.txt.gz", "b.txt", "c.bz2"]
    c = load(root)
    assert sentences(c.ids, c.vocab) == [["alpha", "yankee"], ["alpha", "zulu"], ["bravo", "bravo"], ["charlie"]]
    assert c.stats["files"] == 4 and "hidden" not in c.vocab


def test_undecodable_bytes_are_replaced_and_counted(tmp_path, caplog):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9 ok \xff\xfe bien\n" + "née".encode("utf-8") + b" \xc3")  # \xc3: truncated at EOF
    with caplog.at_level(logging.WARNING):
        c = load(path, chunk_bytes=3)
    assert c.stats["undecodable_bytes"] == 4
    assert sentences(c.ids, c.vocab) == [["caf", "ok", "bien"], ["n", "e"]]
    warnings = [r for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(warnings) == 1 and "4 undecodable bytes" in warnings[0].getMessage()


def test_long_lines_are_split_every_max_sentence_tokens_raw_tokens(tmp_path):
    n = 2 * MAX_SENTENCE_TOKENS + 5
    # every 7th token is rare (dropped by min_count=2) but still counts towards the 10,000-token split, as in gensim
    toks = [("rare" + "abcdefghijklmnopqrstuvwxyz"[i // 7 % 26] + "abcdefghijklmnopqrstuvwxyz"[i // 182 % 26]
             + "abcdefghijklmnopqrstuvwxyz"[i // 4732 % 26]) if i % 7 == 0 else "common"
            for i in range(n)]
    assert max(Counter(t for t in toks if t.startswith("rare")).values()) == 1
    path = write(tmp_path / "long.txt", "short line\n" + " ".join(toks) + "\nlast")
    c = load(path, chunk_bytes=1000, min_count=2)  # chunks cut mid-line: the token count carries over
    lens = [len(s) for s in sentences(c.ids, c.vocab)]
    kept = [sum(t == "common" for t in toks[a:a + MAX_SENTENCE_TOKENS]) for a in range(0, n, MAX_SENTENCE_TOKENS)]
    assert lens == kept  # "short", "line" and "last" occur once: dropped, and so are their sentences
    assert c.stats["sentences"] == 2 + 3


# ---- vocabulary ------------------------------------------------------------------------------------------------------

def test_vocab_sorted_by_count_then_word():
    v = Vocab.from_counts({"b": 3, "a": 3, "c": 5, "d": 1, "e": 3})
    assert v.words == ["c", "a", "b", "e", "d"]
    assert v.counts.tolist() == [5, 3, 3, 3, 1] and v.counts.dtype == np.int64
    assert v.word2id == {"c": 0, "a": 1, "b": 2, "e": 3, "d": 4} and len(v) == 5
    assert Vocab.from_counts([("x", 2), ("y", 2)]).words == ["x", "y"]


def test_vocab_min_count_and_max_final_vocab_follow_gensim():
    counts = {"a": 10, "b": 7, "c": 7, "d": 7, "e": 4, "f": 2, "g": 1}
    assert Vocab.from_counts(counts, min_count=4).words == ["a", "b", "c", "d", "e"]
    assert Vocab.from_counts(counts, max_final_vocab=5).words == ["a", "b", "c", "d", "e"]
    # 3 words allowed, but b, c, d are tied with the 4th: gensim raises the effective min_count to 7 + 1
    assert Vocab.from_counts(counts, max_final_vocab=3).words == ["a"]
    assert Vocab.from_counts(counts, max_final_vocab=4).words == ["a", "b", "c", "d"]
    assert Vocab.from_counts(counts, min_count=8, max_final_vocab=6).words == ["a"]
    assert len(Vocab.from_counts(counts, max_final_vocab=100)) == 7
    with pytest.raises(ConfigError, match="data.min_count"):
        Vocab.from_counts(counts, min_count=0)


def test_vocab_matches_gensim_vocabulary_rule():
    gensim_models = pytest.importorskip("gensim.models")
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(60)]
    sents = [list(rng.choice(words, size=20, p=np.arange(60, 0, -1) / 1830)) for _ in range(100)]
    counts = Counter(w for s in sents for w in s)
    for min_count, cap in [(1, None), (5, None), (1, 25), (3, 10)]:
        model = gensim_models.Word2Vec(vector_size=4, min_count=min_count, max_final_vocab=cap, workers=1)
        model.build_vocab(sents)
        ours = Vocab.from_counts(counts, min_count=min_count, max_final_vocab=cap)
        assert set(ours.words) == set(model.wv.index_to_key)
        assert [model.wv.get_vecattr(w, "count") for w in ours.words] == ours.counts.tolist()


def test_vocab_save_load_hash(tmp_path):
    v = Vocab.from_counts({"the": 9, "naïve": 2, "café": 2, "x": 1})
    v.save(tmp_path / "sub" / "vocab.tsv")
    assert (tmp_path / "sub" / "vocab.tsv").read_text(encoding="utf-8").splitlines()[0] == "the\t9"
    w = Vocab.load(tmp_path / "sub" / "vocab.tsv")
    assert w == v and w.hash() == v.hash() and len(v.hash()) == 64
    assert Vocab(v.words, [9, 2, 2, 2]).hash() != v.hash()
    assert v.words == ["the", "café", "naïve", "x"]
    assert Vocab(["the", "naïve", "café", "x"], v.counts).hash() != v.hash()
    with pytest.raises(DataError):
        Vocab.load(tmp_path / "missing.tsv")
    (tmp_path / "bad.tsv").write_text("word without count\n")
    with pytest.raises(DataError, match="bad.tsv:1"):
        Vocab.load(tmp_path / "bad.tsv")


def test_vocab_rejects_unsorted_duplicates_and_whitespace():
    with pytest.raises(ValueError, match="non-increasing"):
        Vocab(["a", "b"], [1, 2])
    with pytest.raises(ValueError, match="unique"):
        Vocab(["a", "a"], [2, 1])
    with pytest.raises(DataError, match="whitespace"):
        Vocab(["a b"], [1])


def test_token_pattern_matching_whitespace_is_a_data_error(tmp_path):
    with pytest.raises(DataError) as e:
        load(write(tmp_path / "c.txt", "ab cd\nef gh\n"), token_pattern=r"[a-z]+ [a-z]+")
    assert "data.token_pattern" in one_line(e)


# ---- held-out split --------------------------------------------------------------------------------------------------

def numbered_corpus(tmp_path: Path, n: int) -> Path:
    """Line i spells i in 'digit words' (da..dj) and ends with 'end': every line is a distinct sentence made only of
    words that also occur in the training part."""
    digits = [f"d{ch}" for ch in "abcdefghij"]
    lines = [" ".join(digits[int(ch)] for ch in f"{i:04d}") + " end" for i in range(n)]
    return write(tmp_path / "numbered.txt", "\n".join(lines) + "\n")


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.37])
def test_heldout_split_disjoint_and_of_requested_fraction(tmp_path, fraction):
    n = 1000
    path = numbered_corpus(tmp_path, n)
    c = load(path, heldout_fraction=fraction, seed=3)
    train = [tuple(s) for s in sentences(c.ids, c.vocab)]
    held = [tuple(s) for s in sentences(c.heldout_ids, c.vocab)]
    assert len(set(train)) == len(train) and len(set(held)) == len(held)
    assert not set(train) & set(held)
    assert len(train) + len(held) == n
    assert len(held) == round(fraction * n) == c.stats["heldout_sentences"]
    # counts come from the training part only
    assert c.vocab.counts.sum() == len(train) * 5 == c.stats["train_tokens"]
    assert c.vocab.counts[c.vocab.word2id["end"]] == len(train)
    again = load(path, heldout_fraction=fraction, seed=3)
    np.testing.assert_array_equal(again.heldout_ids, c.heldout_ids)
    other = load(path, heldout_fraction=fraction, seed=4)
    assert not np.array_equal(other.heldout_ids, c.heldout_ids)


def test_heldout_words_unseen_in_training_are_dropped(tmp_path):
    path = write(tmp_path / "c.txt", "common words here\n" * 20 + "common unique zzz\n")
    for seed in range(40):
        c = load(path, heldout_fraction=0.05, seed=seed)  # one of 21 sentences held out
        if "zzz" not in c.vocab:  # the special sentence went to the held-out part
            assert sentences(c.heldout_ids, c.vocab) == [["common"]]
            return
    pytest.fail("no seed held out the last sentence")  # probability (20/21)**40 ~ 0.14: the seeds are fixed


def test_heldout_fraction_zero_and_tiny(tmp_path):
    path = numbered_corpus(tmp_path, 10)
    assert len(load(path, heldout_fraction=0.0).heldout_ids) == 0
    assert load(path, heldout_fraction=0.001).stats["heldout_sentences"] == 1  # at least one when > 0
    with pytest.raises(ConfigError, match="heldout_fraction"):
        load(path, heldout_fraction=1.0)


# ---- cache -----------------------------------------------------------------------------------------------------------

def test_cache_hit_on_second_load_and_invalidated_by_a_change(tmp_path):
    path = numbered_corpus(tmp_path, 200)
    cache = tmp_path / "cache"
    first = load(path, heldout_fraction=0.1, cache_dir=cache)
    assert first.stats["cache"] == "miss" and Path(first.stats["cache_path"]).is_file()
    second = load(path, heldout_fraction=0.1, cache_dir=cache)
    assert second.stats["cache"] == "hit" and second.stats["cache_path"] == first.stats["cache_path"]
    assert second.vocab == first.vocab and second.vocab.hash() == first.vocab.hash()
    np.testing.assert_array_equal(second.ids, first.ids)
    np.testing.assert_array_equal(second.heldout_ids, first.heldout_ids)
    assert second.ids.dtype == np.int32
    assert {k: v for k, v in second.stats.items() if k not in ("cache", "seconds")} == \
        {k: v for k, v in first.stats.items() if k not in ("cache", "seconds")}
    # another setting: another entry
    assert load(path, heldout_fraction=0.1, cache_dir=cache, min_count=2).stats["cache"] == "miss"
    # a changed file: a miss, and the new content
    with open(path, "a") as fh:
        fh.write("brand new words\n")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = load(path, heldout_fraction=0.1, cache_dir=cache)
    assert third.stats["cache"] == "miss" and third.stats["sentences"] == 201
    assert load(path, heldout_fraction=0.1, cache_dir=cache).stats["cache"] == "hit"
    # same size, new content and modification time: a miss
    text = path.read_text()
    path.write_text(text.replace("brand", "grand"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    assert path.stat().st_size == st.st_size
    assert load(path, heldout_fraction=0.1, cache_dir=cache).stats["cache"] == "miss"


def test_unreadable_cache_is_rebuilt(tmp_path):
    path = numbered_corpus(tmp_path, 50)
    first = load(path, cache_dir=tmp_path / "cache")
    Path(first.stats["cache_path"]).write_bytes(b"garbage")
    again = load(path, cache_dir=tmp_path / "cache")
    assert again.stats["cache"] == "miss"
    np.testing.assert_array_equal(again.ids, first.ids)


# ---- errors ----------------------------------------------------------------------------------------------------------

def test_missing_path(tmp_path):
    with pytest.raises(DataError) as e:
        load(tmp_path / "nope.txt")
    msg = one_line(e)
    assert "nope.txt" in msg and "data.corpus" in msg


def test_empty_corpus(tmp_path):
    path = write(tmp_path / "empty.txt", "123 456 ... !!!\n\n")
    with pytest.raises(DataError) as e:
        load(path)
    msg = one_line(e)
    assert "empty.txt" in msg and "no tokens" in msg and "data.token_pattern" in msg
    with pytest.raises(DataError, match="no tokens"):
        load(write(tmp_path / "zero.txt", ""))


def test_empty_directory(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    write(tmp_path / "d" / ".only_hidden", "words here")
    with pytest.raises(DataError) as e:
        load(tmp_path / "d")
    msg = one_line(e)
    assert str(tmp_path / "d") in msg and "no files" in msg


def test_vocabulary_empty_after_min_count(tmp_path):
    path = write(tmp_path / "c.txt", "each word once\n")
    with pytest.raises(DataError) as e:
        load(path, min_count=2)
    msg = one_line(e)
    assert "c.txt" in msg and "lower data.min_count" in msg
    with pytest.raises(DataError, match="max_final_vocab"):
        load(path, max_final_vocab=2)  # all three tied at count 1


# ---------------------------------------------------------------------------------------------- binary corpora


@pytest.mark.parametrize("kind", ["random", "utf16", "cp1251", "zeros"])
def test_a_corpus_file_that_is_not_text_is_refused_with_its_fraction(tmp_path, kind):
    data = {"random": np.random.default_rng(0).bytes(300_000),
            "utf16": ("the cat sat on the mat\n" * 5000).encode("utf-16"),
            "cp1251": ("привет мир как дела\n" * 5000).encode("cp1251"),
            "zeros": bytes(200_000)}[kind]
    path = tmp_path / "x.bin"
    path.write_bytes(data)
    with pytest.raises(DataError) as info:
        load(path)
    message = str(info.value)
    assert f"data.corpus '{path}'" in message and "is not UTF-8 text" in message and "plain-text" in message
    assert "%" in message and "\n" not in message


def test_the_text_check_reads_the_first_mebibyte_after_decompression(tmp_path):
    text = "the cat sat on the mat\n" * 60_000  # 1.4 MB of text, then binary
    path = write(tmp_path / "c.txt.gz", text, gzip.open)
    with gzip.open(path, "ab") as fh:
        fh.write(np.random.default_rng(0).bytes(100_000))
    c = load(path, chunk_bytes=1 << 16)  # binary after the first MiB is not examined: read as undecodable text
    assert c.stats["undecodable_bytes"] > 0 and "cat" in c.vocab
    binary = tmp_path / "b.bin.gz"
    with gzip.open(binary, "wb") as fh:
        fh.write(np.random.default_rng(1).bytes(100_000))
    with pytest.raises(DataError, match=r"b\.bin\.gz'.*of its 97\.7 kB is not UTF-8 text"):
        load(binary, chunk_bytes=1000)  # the check waits for the whole probe, across many small reads


def test_a_binary_file_inside_a_corpus_directory_is_named(tmp_path):
    write(tmp_path / "a.txt", "alpha beta\n")
    (tmp_path / "z.pdf").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(DataError) as info:
        load(tmp_path)
    assert f"corpus file '{tmp_path / 'z.pdf'}' in data.corpus '{tmp_path}'" in str(info.value)
    assert "remove it from the directory" in str(info.value)


def test_latin1_text_is_still_read_with_its_undecodable_bytes_counted(tmp_path):
    path = tmp_path / "fr.txt"
    path.write_bytes(("Le café était très chaud à midi, où ça?\n" * 2000).encode("latin-1"))  # 15 % undecodable
    c = load(path)
    assert c.stats["undecodable_bytes"] == 6 * 2000 and "chaud" in c.vocab


def test_non_text_fraction_counts_undecodable_bytes_and_controls():
    from sampledsoftmax.data.textfile import non_text_fraction

    assert non_text_fraction(b"") == 0.0 and non_text_fraction("plain\ttext\r\n\f".encode()) == 0.0
    assert non_text_fraction("é".encode()[:1]) == 0.0  # a character cut at the end of the sample is text
    assert non_text_fraction(b"ab\xff\x00") == 0.5
    assert non_text_fraction("日本".encode()) == 0.0


# ------------------------------------------------------------------------------------------ ids and subsampling


def test_cached_ids_outside_the_vocabulary_are_a_damaged_cache_and_rebuilt(tmp_path, caplog):
    from sampledsoftmax.data import corpus as corpus_mod

    path = write(tmp_path / "c.txt", "a b c\nb c\n")
    first = load_corpus(path, min_count=1, heldout_fraction=0.0, cache_dir=tmp_path / "cache")
    (cache,) = (tmp_path / "cache").glob("corpus-*.npz")
    bad = EncodedCorpus(first.vocab, first.ids + 7, first.heldout_ids, dict(first.stats))
    corpus_mod._save_cache(cache, bad)
    with caplog.at_level(logging.WARNING):
        again = load_corpus(path, min_count=1, heldout_fraction=0.0, cache_dir=tmp_path / "cache")
    assert again.stats["cache"] == "miss" and np.array_equal(again.ids, first.ids)
    assert any("unreadable" in r.getMessage() for r in caplog.records)


def test_keep_probability_lives_in_the_data_layer_and_matches_the_pair_streams():
    from sampledsoftmax.data.subsample import keep_probability, subsampled_counts
    from sampledsoftmax.embeddings import pairs

    counts = np.array([1000, 300, 50, 7, 0])
    for sample in (0.0, 1e-3, 0.05):
        np.testing.assert_array_equal(keep_probability(counts, sample), pairs.keep_probability(counts, sample))
        np.testing.assert_allclose(subsampled_counts(counts, sample), counts * keep_probability(counts, sample))
    assert np.array_equal(subsampled_counts(counts, 0.0), counts)


def zipf_corpus(tmp_path, sentences: int, seed: int):
    """A text file of `sentences` lines of 50 words drawn from a Zipf(1) law over 200 words."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(200)])
    zipf = 1.0 / np.arange(1, 201)
    tokens = words[rng.choice(200, size=(sentences, 50), p=zipf / zipf.sum())]
    path = tmp_path / "zipf.txt"
    path.write_text("\n".join(" ".join(line) for line in tokens) + "\n")
    return path


def test_inbatch_log_q_is_the_subsampled_context_distribution_of_the_pair_stream(tmp_path):
    """The in-batch softmax's candidates are the batch's contexts, drawn from the subsampled stream: its log-Q must
    be log(N · p_context) with p_context ∝ count · keep, which the pair stream itself shows."""
    import torch

    from sampledsoftmax.embeddings.config import load_config
    from sampledsoftmax.embeddings.train import build_data
    from sampledsoftmax.training.builders import build_loss_fn

    path = zipf_corpus(tmp_path, sentences=2000, seed=0)
    batch = 512
    cfg = load_config(None, [f"data.corpus={path}", "data.sample=1e-3", "data.min_count=1", "loss.name=inbatch",
                             "data.heldout_fraction=0.01", f"optim.batch_size={batch}", f"runs_root={tmp_path}",
                             "data.cache_dir=null"])
    data = build_data(cfg)
    v = len(data.vocab)
    seen = np.zeros(v)
    for epoch in range(4):  # the contexts of every pair of 4 epochs (each with its own subsampling)
        for _, contexts in data.pairs.epoch_batches(epoch):
            seen += np.bincount(contexts, minlength=v)
    p_context = seen / seen.sum()  # (V,) empirical

    loss_fn = build_loss_fn(cfg, data.vocab, torch.Generator().manual_seed(0))
    ids = torch.arange(v).repeat(-(-batch // v))[:batch]  # a batch of N = 512 targets covering every class
    log_q = loss_fn.sample(ids.view(-1, 1)).log_q_true.view(-1)[:v].double().numpy()  # (V,) log expected counts
    frequent = seen >= 5_000  # words seen as a context 5k+ times: the empirical log-frequency is within ~0.05
    assert frequent.sum() >= 20
    error = log_q[frequent] - np.log(batch * p_context[frequent])
    assert np.abs(error).max() < 0.08 and np.abs(error).mean() < 0.03, error
    # raw counts (the stream before subsampling) would be off by log(keep) ~ -2.5 nats for the most frequent words
    raw = np.log(batch * data.vocab.counts / data.vocab.counts.sum())
    assert np.abs(raw[frequent] - np.log(batch * p_context[frequent])).max() > 1.0


def test_heldout_pairs_and_the_initial_bias_follow_the_training_streams_distribution(tmp_path):
    """With data.sample > 0 the batches' contexts come from the subsampled stream: the held-out pairs are drawn the
    same way (eval.heldout: training, the default) and the output bias starts at that stream's log-frequencies. Before,
    both used the raw counts, so the exact held-out CE of every loss rose from its step-0 value while the model
    learnt the subsampled frequencies it is trained on."""
    import torch

    from sampledsoftmax.embeddings.config import load_config
    from sampledsoftmax.embeddings.train import build_data
    from sampledsoftmax.training.builders import build_loss_fn

    path = zipf_corpus(tmp_path, sentences=4000, seed=1)
    base = [f"data.corpus={path}", "data.sample=1e-3", "data.min_count=1", "loss.name=full",
            "data.heldout_fraction=0.2", "data.max_heldout_pairs=1000000", f"runs_root={tmp_path}",
            "data.cache_dir=null"]  # eval.heldout: auto = training on real text
    data = build_data(load_config(None, base))
    v = len(data.vocab)
    train = np.zeros(v)
    for _, contexts in data.pairs.epoch_batches(0):
        train += np.bincount(contexts, minlength=v)
    train /= train.sum()
    held = np.bincount(data.eval_contexts.numpy(), minlength=v) / len(data.eval_contexts)
    top = slice(0, 5)  # the frequent words, where subsampling matters (keep ~ 0.2-0.5)
    assert np.abs(held[top] / train[top] - 1).max() < 0.1, held[top] / train[top]
    raw = build_data(load_config(None, [*base, "eval.heldout=all"]))  # every pair: the raw frequencies
    held_raw = np.bincount(raw.eval_contexts.numpy(), minlength=v) / len(raw.eval_contexts)
    assert held_raw[0] > 1.5 * train[0]
    loss_fn = build_loss_fn(load_config(None, base), data.vocab, torch.Generator().manual_seed(0))
    p0 = torch.softmax(loss_fn.bias.detach().double(), 0).numpy()  # the initial model: a unigram over the classes
    assert np.abs(p0[top] / train[top] - 1).max() < 0.1, p0[top] / train[top]


def test_heldout_auto_is_all_pairs_on_the_planted_corpus_and_like_training_otherwise():
    from sampledsoftmax.embeddings.config import load_config
    from sampledsoftmax.embeddings.train import build_data

    tiny = ["data.synthetic.vocab_size=200", "data.synthetic.num_tokens=20000", "data.synthetic.heldout_sentences=50",
            "data.max_heldout_pairs=1000000"]

    def pairs(*extra):
        d = build_data(load_config(None, [*tiny, *extra]))
        return d.eval_centers.numpy(), d.eval_contexts.numpy()

    auto, every = pairs(), pairs("eval.heldout=all")
    assert all(np.array_equal(a, b) for a, b in zip(auto, every))  # planted, no subsampling: every pair
    like = pairs("eval.heldout=training")
    assert len(like[0]) < 0.8 * len(every[0])  # reduced windows keep (W+1)/2W of the pairs
