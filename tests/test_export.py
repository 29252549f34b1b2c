"""Tests for sampledsoftmax.embeddings.export: word2vec text/binary files that gensim loads, written atomically."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sampledsoftmax import DataError
from sampledsoftmax.embeddings.export import export_word2vec


def _vocab_and_vectors(v=300, d=7, seed=0):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(v - 4)] + ["café", "naïve", "don't", "日本"]
    counts = np.sort(rng.integers(1, 10_000, size=v))[::-1].astype(np.int64)
    vectors = rng.normal(size=(v, d)).astype(np.float32)
    vectors[0, :4] = [1e-30, -3.4e38, -0.0, 1 / 3]  # extremes and a value with no short decimal form
    return SimpleNamespace(words=words, counts=counts), vectors


@pytest.mark.parametrize("binary", [False, True])
def test_export_round_trips_through_gensim(tmp_path, binary):
    pytest.importorskip("gensim")
    from gensim.models import KeyedVectors

    vocab, vectors = _vocab_and_vectors()
    path = tmp_path / "sub" / ("vectors.bin" if binary else "vectors.txt")
    out, vocab_path = export_word2vec(vectors, vocab, path, binary=binary, chunk_rows=64)
    assert (out, vocab_path) == (path, tmp_path / "sub" / f"{path.name}.vocab")

    kv = KeyedVectors.load_word2vec_format(str(path), binary=binary, fvocab=str(vocab_path))
    assert kv.index_to_key == vocab.words  # frequency (id) order
    np.testing.assert_array_equal(kv.vectors, vectors)  # bit-exact, text included
    assert [kv.get_vecattr(w, "count") for w in vocab.words] == vocab.counts.tolist()
    assert path.read_bytes().startswith(b"300 7\n")
    assert sorted(os.listdir(tmp_path / "sub")) == sorted([path.name, vocab_path.name])  # no temporary files


def test_export_binary_layout_is_word2vec_c(tmp_path):
    vocab = SimpleNamespace(words=["b", "a"], counts=np.array([5, 2]))
    vectors = np.array([[1.0, -2.0], [0.5, 3.0]], dtype=np.float32)
    export_word2vec(torch.from_numpy(vectors), vocab, tmp_path / "v.bin", binary=True)  # a tensor works too
    rows = [vectors[i].astype("<f4").tobytes() for i in range(2)]
    expected = b"2 2\n" + b"b " + rows[0] + b"\n" + b"a " + rows[1] + b"\n"
    assert (tmp_path / "v.bin").read_bytes() == expected
    assert (tmp_path / "v.bin.vocab").read_text() == "b 5\na 2\n"
    export_word2vec(vectors, vocab, tmp_path / "v.txt")
    assert (tmp_path / "v.txt").read_text() == "2 2\nb 1 -2\na 0.5 3\n"


@pytest.mark.parametrize("bad", ["two words", "tab\tword", "new\nline", "", "nbsp\u00a0word"])
def test_export_rejects_words_the_format_cannot_hold(tmp_path, bad):
    vocab = SimpleNamespace(words=["ok", bad], counts=np.array([2, 1]))
    with pytest.raises(DataError, match="whitespace"):
        export_word2vec(np.zeros((2, 3), np.float32), vocab, tmp_path / "v.txt")
    assert os.listdir(tmp_path) == []


def test_export_shape_mismatch_is_an_error(tmp_path):
    vocab = SimpleNamespace(words=["a", "b"], counts=np.array([2, 1]))
    with pytest.raises(ValueError, match="vocabulary has 2 words"):
        export_word2vec(np.zeros((3, 4), np.float32), vocab, tmp_path / "v.txt")


class _FailingRows:
    """An array-like whose rows past `fail_at` cannot be read: the export dies half-way through the file."""

    def __init__(self, array, fail_at):
        self.array, self.fail_at, self.shape = array, fail_at, array.shape

    def __getitem__(self, rows):
        if rows.stop is not None and rows.stop > self.fail_at:
            raise RuntimeError("device lost")
        return self.array[rows]


@pytest.mark.parametrize("binary", [False, True])
def test_export_is_atomic_when_interrupted(tmp_path, binary):
    vocab, vectors = _vocab_and_vectors()
    path = tmp_path / "vectors.out"
    export_word2vec(vectors[:, :3], vocab, path, binary=binary)  # a previous, complete export
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}

    with pytest.raises(RuntimeError, match="device lost"):
        export_word2vec(_FailingRows(vectors, fail_at=200), vocab, path, binary=binary, chunk_rows=64)
    after = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert after == before  # old files intact, no partial or temporary file left

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with pytest.raises(RuntimeError):
        export_word2vec(_FailingRows(vectors, fail_at=200), vocab, fresh / "v.txt", chunk_rows=64)
    assert os.listdir(fresh) == []


@pytest.mark.parametrize("where", ["a-directory", "under-a-regular-file"])
def test_export_to_a_path_that_cannot_be_written_is_one_data_error(tmp_path, where):
    vocab, vectors = _vocab_and_vectors(v=10)
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    target = tmp_path / "dir" if where == "a-directory" else tmp_path / "file" / "sub" / "v.txt"
    with pytest.raises(DataError) as info:
        export_word2vec(vectors, vocab, target)
    message = str(info.value)
    assert f"cannot write the vectors to '{target}'" in message and "\n" not in message
    assert ("is a directory" if where == "a-directory" else "is a file, not a directory") in message
    assert os.listdir(tmp_path / "dir") == [] and (tmp_path / "file").read_text() == "x"


def test_export_on_a_full_disk_keeps_the_previous_files(tmp_path, monkeypatch):
    import errno

    from sampledsoftmax.embeddings import export

    vocab, vectors = _vocab_and_vectors(v=10)
    path = tmp_path / "v.txt"
    export_word2vec(vectors, vocab, path)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export.os, "fsync", full)
    with pytest.raises(DataError, match=r"No space left on device; give an output path .* free space"):
        export_word2vec(vectors * 0.5, vocab, path)
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before
