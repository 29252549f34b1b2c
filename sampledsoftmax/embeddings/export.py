"""Export word vectors in the word2vec format that gensim, fastText and word2vec.c read.

    text:   "V d\\n", then per word "word x_1 ... x_d\\n" (each x as %.9g: float32 round-trips exactly)
    binary: "V d\\n", then per word "word " + d little-endian float32 + "\\n" (word2vec.c's layout)
    <path>.vocab: "word count\\n" per word (word2vec.c's -save-vocab, gensim's `fvocab`)

Rows are written in vocabulary id order, which the Vocab contract makes frequency order (id = rank). Both files
are written to temporary files next to the targets and renamed into place only when complete, so an interrupted
export (or a full disk) leaves the previous files (or none) behind, never a partial one; a path that cannot be
written (a directory, under a regular file, no permission, no space) is one DataError line. Load with:

    KeyedVectors.load_word2vec_format(path, binary=..., fvocab=path + ".vocab")
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import torch

from ..errors import DataError, InputError

__all__ = ["export_word2vec", "atomic_write_paths"]

_WHITESPACE = re.compile(r"\s")


@contextmanager
def atomic_write_paths(*paths: Path) -> Iterator[list[Path]]:
    """Yield temporary paths next to `paths`; on success rename each onto its target, on any exit by an exception
    (KeyboardInterrupt included) delete them and leave the targets untouched."""
    tmps = [p.with_name(f".{p.name}.tmp{os.getpid()}") for p in paths]
    try:
        yield tmps
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        raise


def _chunk_f32(vectors, start: int, stop: int) -> np.ndarray:
    chunk = vectors[start:stop]
    if torch.is_tensor(chunk):
        chunk = chunk.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(chunk, dtype="<f4")  # (rows, d)


def export_word2vec(
    vectors, vocab, path: Union[str, os.PathLike], binary: bool = False, *, chunk_rows: int = 16_384
) -> tuple[Path, Path]:
    """Write `vectors` (row i = word i of `vocab`) in word2vec text or binary format, and `<path>.vocab` with counts.

    `vectors` is a numpy array, a torch tensor, or anything with `.shape` and row slicing; it is read and written
    `chunk_rows` rows at a time. `vocab` has `.words` (by id) and `.counts`. A word that is empty or contains
    whitespace cannot be represented in the format: DataError (before anything is written). Parent directories are
    created. Returns (vectors file, vocab file).

    Shape:
        vectors [V, d], vocab.words V words, vocab.counts (V,) int
    """
    words = list(vocab.words)
    counts = np.asarray(vocab.counts)
    shape = tuple(vectors.shape)
    if len(shape) != 2 or shape[0] != len(words) or shape[1] < 1:
        raise InputError(
            f"vectors has shape {shape} but the vocabulary has {len(words)} words; expected ({len(words)}, d)"
        )
    if counts.shape != (len(words),) or (counts.size and not np.issubdtype(counts.dtype, np.integer)):
        raise InputError(f"vocab.counts must be {len(words)} integers, got shape {counts.shape} dtype {counts.dtype}")
    _check_words(words)
    if chunk_rows < 1:
        raise InputError(f"chunk_rows must be >= 1, got {chunk_rows}")
    path = Path(path)
    vocab_path = path.with_name(path.name + ".vocab")
    try:
        _write(vectors, words, counts, path, vocab_path, binary, chunk_rows)
    except OSError as e:  # a full disk, no permission, a path under a regular file, ...: nothing is left behind
        raise DataError(f"cannot write the vectors to {str(path)!r}: {_why(e, path)}; give an output path in a "
                        "writable directory with free space (export --out PATH)") from None
    return path, vocab_path


def _why(exc: OSError, path: Path) -> str:
    if path.is_dir():
        return "it is a directory (give a file path, e.g. DIR/vectors.txt)"
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        return "a part of its directory path is a file, not a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or str(exc)


def _write(vectors, words: list[str], counts: np.ndarray, path: Path, vocab_path: Path, binary: bool,
           chunk_rows: int) -> None:
    num_words, dim = vectors.shape
    if path.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write_paths(path, vocab_path) as (tmp, tmp_vocab):
        with open(tmp, "wb") as f:
            f.write(f"{num_words} {dim}\n".encode())
            line_fmt = "%s " + " ".join(["%.9g"] * dim) + "\n"
            for start in range(0, num_words, chunk_rows):
                rows = _chunk_f32(vectors, start, start + chunk_rows)  # (rows, d)
                names = words[start : start + chunk_rows]
                if binary:
                    raw = rows.tobytes()
                    step = 4 * dim
                    f.write(b"".join(
                        w.encode() + b" " + raw[i * step : (i + 1) * step] + b"\n" for i, w in enumerate(names)
                    ))
                else:
                    f.write("".join(line_fmt % (w, *row) for w, row in zip(names, rows.tolist())).encode())
            f.flush()
            os.fsync(f.fileno())
        with open(tmp_vocab, "wb") as f:
            f.write("".join(f"{w} {int(n)}\n" for w, n in zip(words, counts.tolist())).encode())
            f.flush()
            os.fsync(f.fileno())


def _check_words(words: list[str]) -> None:
    if not words:
        raise DataError("the vocabulary is empty: nothing to export")
    bad = [w for w in words if not w or _WHITESPACE.search(w)] if (
        min(map(len, words)) == 0 or _WHITESPACE.search("".join(words))
    ) else []
    if bad:
        raise DataError(
            f"cannot export word {bad[0]!r} ({len(bad)} such words): the word2vec format separates words by "
            "whitespace; use a token_pattern that produces no whitespace or empty tokens"
        )
