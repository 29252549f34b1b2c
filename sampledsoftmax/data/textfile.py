"""Reading the user's text files, with every way of failing as one line that names the file and the fix.

Two entry points, one for each kind of file:

- :func:`read_text`: a small UTF-8 file read whole (a YAML config, a sweep file, ``vocab.tsv``, a word-similarity
  or analogy set; ``.gz``/``.bz2`` decompressed with ``compressed=True``). A missing path, a directory, a path
  under a regular file, no permission, a corrupt archive or bytes that are not UTF-8 each raise `error` (a
  SampledSoftmaxError subclass) with one line: ``cannot read <what> '<path>': <why>; <fix>``.
- :func:`non_text_fraction`: how much of a sample of bytes is not text (undecodable as UTF-8, or control
  characters other than whitespace), which the corpus reader (:mod:`.corpus`) checks on the first
  :data:`TEXT_PROBE_BYTES` of every corpus file before it tokenises anything: a binary file given as a corpus is
  refused instead of trained on replacement characters.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import lzma
import os
import re
from pathlib import Path
from typing import Optional, Union

from ..errors import DataError

__all__ = ["read_text", "non_text_fraction", "TEXT_PROBE_BYTES", "MAX_NON_TEXT_FRACTION"]

TEXT_PROBE_BYTES = 1 << 20  # the first 1 MiB of a corpus file decides whether it is text
# More than this fraction of non-text bytes and a corpus file is refused. UTF-8 text has none (markup, tabs and
# accented letters are text); a Western text saved as latin-1 has 0.01-0.05 (0.15 at its densest in accents:
# accepted, with the undecodable bytes counted and logged); random bytes, compressed data, checkpoints, .npy files
# and UTF-16 give 0.5-0.55, executables ~0.9, and a Cyrillic or Greek text in a legacy 8-bit code page ~0.8
# (refused: it must be re-encoded to UTF-8 before its words can be tokenised).
MAX_NON_TEXT_FRACTION = 0.3

_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# C0 controls and DEL, except the whitespace ones (\t \n \v \f \r), which text does not contain, and the
# lone surrogates U+DC80..U+DCFF that surrogateescape decoding makes of undecodable bytes
_NON_TEXT = re.compile("[\x00-\x08\x0e-\x1f\x7f\udc80-\udcff]")


def _why(exc: OSError, path: Path) -> str:
    if isinstance(exc, FileNotFoundError):
        return "it does not exist"
    if isinstance(exc, IsADirectoryError) or path.is_dir():
        return "it is a directory, not a file"
    if isinstance(exc, NotADirectoryError):
        return "a part of the path before its last name is a file, not a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or str(exc) or type(exc).__name__


def read_text(path: Union[str, os.PathLike], what: str, fix: str, *, error: type = DataError,
              compressed: bool = False, encoding: str = "utf-8", max_bytes: Optional[int] = None) -> str:
    """The whole text of the file `path` (UTF-8 unless `encoding`); any failure raises `error` with one line naming
    `what` (e.g. "config file"), the path, why, and `fix` (what the user should do, e.g. "check the path"). With
    `compressed`, ``.gz``/``.bz2``/``.xz`` files are decompressed (by suffix). Line ends are left as they are.
    `max_bytes`: a file larger than this is refused unread (a corpus given where a config belongs)."""
    p = Path(path)
    name = str(path)
    opener = _OPENERS.get(p.suffix.lower(), open) if compressed else open
    try:
        if p.is_dir():
            raise IsADirectoryError(21, "Is a directory", name)
        if max_bytes is not None and p.is_file() and p.stat().st_size > max_bytes:
            size = p.stat().st_size
            raise error(f"cannot read {what} {name!r}: it is {size / 2**20:.3g} MB, far more than a {what} holds "
                        f"(at most {max_bytes / 2**20:.3g} MB; is it a corpus?); {fix}")
        with opener(p, "rb") as fh:
            raw = fh.read()
    except OSError as e:  # gzip.BadGzipFile is an OSError
        why = _why(e, p)
        if not isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)) \
                and p.suffix.lower() in _OPENERS and compressed:
            why = f"it is not a valid {p.suffix} file ({why})"
        raise error(f"cannot read {what} {name!r}: {why}; {fix}") from None
    except (EOFError, lzma.LZMAError) as e:
        raise error(f"cannot read {what} {name!r}: it is a damaged {p.suffix} file ({e}); {fix}") from None
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        label = "UTF-8" if codecs.lookup(encoding).name == "utf-8" else encoding
        raise error(f"cannot read {what} {name!r}: it is not {label} text (byte {e.start}); save it as {label} "
                    f"(e.g. iconv -t {label.lower()}), or give the right file") from None


def non_text_fraction(sample: bytes) -> float:
    """The fraction of `sample`'s bytes that are not text: bytes undecodable as UTF-8 plus control characters
    other than whitespace (NUL, ...). A multi-byte character cut at the end of the sample counts as text.
    0.0 for an empty sample."""
    if not sample:
        return 0.0
    # surrogateescape turns each undecodable byte into one lone surrogate: count those and the controls
    text = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape").decode(sample, final=False)
    return len(_NON_TEXT.findall(text)) / len(sample)
