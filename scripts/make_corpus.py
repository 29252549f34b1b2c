#!/usr/bin/env python3
"""Build a reproducible real-English text corpus from Debian documentation and dictionary packages.

    python3 scripts/make_corpus.py OUT_DIR [--packages a,b=1.2-3,c] [--max-tokens N] [--download-dir DIR] [--jobs N]

Each package is fetched with ``apt-get download`` (no root needed; only ``apt-get update`` needs root, and it is run
once, as root, when apt's package lists are missing), unpacked with ``dpkg-deb -x`` into a temporary directory, and
its English text is extracted, cleaned and filtered:

* HTML (stdlib ``html.parser``): text of block elements, one paragraph per block; ``<pre>``, scripts, navigation,
  sidebars and code/listing containers (Sphinx ``highlight``, DocBook ``programlisting``/``screen``/``synopsis``,
  asciidoc ``listingblock``...) are dropped; entities decoded.
* reStructuredText: literal blocks (after ``::``), doctest blocks, grid tables, comments, targets and non-prose
  directives (``code-block``, ``toctree``, ``kernel-doc``, ``flat-table``...) are dropped; admonitions (``note``,
  ``warning``...) kept; inline markup (roles, ``literals``, links, emphasis) reduced to its text.
* POD (perl-doc): verbatim (indented) paragraphs, ``=begin``/``=for`` blocks and ``X<>`` index entries are dropped;
  ``=head``/``=item`` text and formatting codes reduced to their text.
* dictd databases (``.index`` + ``.dict.dz``, e.g. dict-gcide): entries decoded in file order; headword lines,
  pronunciations ``\\pron\\``, bracketed etymologies and source tags (``[1913 Webster]``), ``{cross refs}`` braces and
  quotation attributions (``--Shak.``) removed; each sense/paragraph becomes a line.
* WordNet ``data.*`` files: "lemma, lemma: gloss." and each quoted example sentence.
* SWORD zText Bible modules (sword-text-*): one verse per line, OSIS markup and footnotes removed.
* plain text (kernel .txt / ABI files): blank-line paragraphs; paragraphs that look like code are dropped.

Paragraphs over MAX_LINE_TOKENS tokens are cut at sentence ends. Every line then passes one filter
(:func:`keep_line`): at least ``MIN_WORDS`` tokens, mostly ASCII letters among its non-space characters, few code
symbols, and English function words among its tokens (this drops code, tables, index lists
and other languages). Exact duplicate lines are dropped corpus-wide (first occurrence kept).

Tokens are counted as the trainer does by default: ``re.findall(r"[a-z']+", line.lower())``.

Output in OUT_DIR: ``corpus.txt`` (UTF-8, one paragraph per line, original case), ``SOURCES.md`` (package, version,
licence read from ``usr/share/doc/<pkg>/copyright``, files used, tokens), ``manifest.json`` (the same facts, the
.deb sha256s, per-file token counts, the sha256 of corpus.txt). Nothing time-dependent is written, so the same
package versions give byte-identical outputs: pin them with ``--packages name=version,...`` (the versions are in the
manifest) and keep the .debs with ``--download-dir``.

Text extraction functions are importable (``importlib``) and need no network; see tests/test_make_corpus.py.
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import hashlib
import html
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unicodedata
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

EXTRACTOR_VERSION = 1  # bump when the cleaning changes what a given package version yields

#: Default packages, in output order: natural prose first (a --max-tokens cap keeps the front), then reference
#: dictionaries, then technical documentation.
DEFAULT_PACKAGES = (
    "sword-text-web",
    "sword-text-kjv",
    "fortunes",
    "dict-devil",
    "dict-jargon",
    "dict-foldoc",
    "dict-gcide",
    "wordnet-base",
    "debian-handbook",
    "debian-reference-en",
    "developers-reference",
    "debian-policy",
    "linux-doc-6.1",
    "python3.11-doc",
    "python-django-doc",
    "postgresql-doc-15",
    "perl-doc",
    "git-doc",
    "openjdk-17-doc",
    "erlang-doc",
    "lilypond-doc-html",
    "apache2-doc",
    "exim4-doc-html",
    "postfix-doc",
    "bind9-doc",
    "bash-doc",
    "gnu-standards",
    "python-sqlalchemy-doc",
    "python-scipy-doc",
    "sphinx-doc",
    "maxima-doc",
    "octave-doc",
)

TOKEN_RE = re.compile(r"[a-z']+")  # = sampledsoftmax.embeddings.corpus.DEFAULT_TOKEN_PATTERN, applied to lower()
MIN_WORDS = 4
MIN_LETTER_FRACTION = 0.6
MIN_STOPWORD_FRACTION = 0.1
MAX_LINE_TOKENS = 300  # longer paragraphs are cut at sentence ends (a SWORD entry can hold a whole chapter)

STOPWORDS = frozenset(
    """a about above after again against all also an and any are as at be because been before being below between
    both but by can could did do does doing down during each either few for from further had has have having he her
    here hers him his how i if in into is it its itself may me might more most must my no nor not of off on once
    only or other our out over own same shall she should so some such than that the their them then there these they
    this those through thus to too under until up upon us very was we were what when where which while who whom why
    will with within without would you your""".split()
)

ERROR_EXIT = 2


class CorpusError(Exception):
    """A user-facing failure: printed as one ``error:`` line, exit code 2."""


# ---- line normalisation and filtering --------------------------------------------------------------------------------

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u2032": "'", "\u201c": '"', "\u201d": '"',
                         "\u201e": '"', "\u00ab": '"', "\u00bb": '"', "\u00b6": " ", "\ufeff": " ", "\u00ad": ""})
_WS_RE = re.compile(r"\s+")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def normalize(text: str) -> str:
    """NFKC, typographic quotes to ASCII (so "don’t" is one token), pilcrows/soft hyphens removed, whitespace runs
    (including newlines) to one space, stripped."""
    text = _CONTROL_RE.sub("", unicodedata.normalize("NFKC", text).translate(_QUOTES))
    return _WS_RE.sub(" ", text).strip()


def tokens(line: str) -> list[str]:
    """The trainer's default tokenisation: lowercase, then ``[a-z']+``."""
    return TOKEN_RE.findall(line.lower())


def count_tokens(line: str) -> int:
    return len(TOKEN_RE.findall(line.lower()))


def keep_line(line: str) -> bool:
    """English prose test for one normalised paragraph.

    Keeps it when it has at least MIN_WORDS tokens, at least MIN_LETTER_FRACTION of its non-space characters are
    ASCII letters (drops code, tables, numbers, non-Latin scripts), and at least one token in ten is an English
    function word (drops identifier lists, code without symbols, other Latin-script languages)."""
    toks = tokens(line)
    if len(toks) < MIN_WORDS:
        return False
    compact = line.replace(" ", "")
    letters = sum(1 for c in compact if ("a" <= c <= "z") or ("A" <= c <= "Z"))
    if letters < MIN_LETTER_FRACTION * len(compact):
        return False
    symbols = sum(line.count(c) for c in "={}<>$\\|[]~^")
    if symbols >= 2 and symbols >= 0.08 * len(toks):
        return False
    stop = sum(1 for t in toks if t in STOPWORDS)
    return stop >= 1 and stop >= MIN_STOPWORD_FRACTION * len(toks)


_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


def split_long(paragraph: str, max_tokens: int = MAX_LINE_TOKENS) -> list[str]:
    """A paragraph of more than ``max_tokens`` tokens cut at sentence ends into lines of at most about
    ``max_tokens`` tokens each (a single longer sentence stays whole); shorter paragraphs unchanged."""
    if count_tokens(paragraph) <= max_tokens:
        return [paragraph]
    out: list[str] = []
    cur: list[str] = []
    n = 0
    for sentence in _SENTENCE_END_RE.split(paragraph):
        k = count_tokens(sentence)
        if cur and n + k > max_tokens:
            out.append(" ".join(cur))
            cur, n = [], 0
        cur.append(sentence)
        n += k
    if cur:
        out.append(" ".join(cur))
    return out


def clean_paragraphs(paragraphs: Iterable[str]) -> list[str]:
    """Normalise each paragraph, cut very long ones (:func:`split_long`), keep the lines that pass
    :func:`keep_line`."""
    out = []
    for p in paragraphs:
        p = normalize(p)
        if not p:
            continue
        for line in split_long(p):
            if keep_line(line):
                out.append(line)
    return out


# ---- reading files ---------------------------------------------------------------------------------------------------

def read_bytes(path: Path) -> bytes:
    if path.name.endswith(".gz") or path.name.endswith(".dz"):
        with gzip.open(path, "rb") as f:
            return f.read()
    return path.read_bytes()


def decode(data: bytes) -> str:
    """UTF-8 (BOM dropped), else Latin-1 (old documentation)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_text(path: Path) -> str:
    return decode(read_bytes(path))


# ---- HTML ------------------------------------------------------------------------------------------------------------

_HTML_BLOCK = frozenset(
    "address article aside blockquote body br caption center dd details dialog div dl dt fieldset figcaption figure "
    "footer form h1 h2 h3 h4 h5 h6 header hr html li main ol p section summary table tbody td tfoot th thead title tr "
    "ul".split())
_HTML_SKIP_TAGS = frozenset("script style head pre nav noscript svg math button select textarea template iframe "
                            "object xmp listing samp kbd".split())
_HTML_SKIP_CLASSES = frozenset(
    """highlight literal-block literal_block doctest programlisting screen synopsis cmdsynopsis funcsynopsis
    classsynopsis fieldsynopsis methodsynopsis sphinxsidebar sphinxsidebarwrapper related footer headerlink
    navheader navfooter navigation nav navbar breadcrumbs toc contents topic-contents sidebar menu sig sig-object
    listingblock literalblock verbatim example-code codehilite sourcecode sourceCode code-block linenos lineno
    example-contents docnav member-signature type-signature inheritance inherited-list sub-title top-nav sub-nav
    legal-copy flex-header summary notes mw-editsection index indextable toctree-wrapper search""".split())
_HTML_SKIP_IDS = frozenset("sidebar navigation nav footer header toc search searchbox quick-search breadcrumbs "
                           "menu".split())
_HTML_OPTIONAL_END = frozenset("p li dt dd tr td th option colgroup tbody thead tfoot".split())


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._buf: list[str] = []
        self._skip_tag: Optional[str] = None
        self._skip_depth = 0

    def _flush(self) -> None:
        if self._buf:
            self.paragraphs.append("".join(self._buf))
            self._buf = []

    def _skips(self, tag: str, attrs) -> bool:
        if tag in _HTML_SKIP_TAGS:
            return True
        if tag in _HTML_OPTIONAL_END:  # an unclosed <p class=...> would swallow the rest of the page
            return False
        for name, value in attrs:
            if not value:
                continue
            if name == "class":
                for c in value.split():
                    if c in _HTML_SKIP_CLASSES or c.startswith("highlight"):
                        return True
            elif name == "id" and value in _HTML_SKIP_IDS:
                return True
            elif name == "role" and value in ("navigation", "search", "banner", "contentinfo"):
                return True
        return False

    def handle_starttag(self, tag, attrs):
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth += 1
            return
        if tag in _HTML_BLOCK:
            self._flush()
        if self._skips(tag, attrs):
            self._flush()
            self._skip_tag, self._skip_depth = tag, 1

    def handle_startendtag(self, tag, attrs):
        if self._skip_tag is None and tag in _HTML_BLOCK:
            self._flush()

    def handle_endtag(self, tag):
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth -= 1
                if self._skip_depth == 0:
                    self._skip_tag = None
            return
        if tag in _HTML_BLOCK:
            self._flush()

    def handle_data(self, data):
        if self._skip_tag is None:
            self._buf.append(data)

    def close(self):
        super().close()
        self._flush()


def html_to_paragraphs(text: str) -> list[str]:
    """Raw paragraphs (not yet normalised or filtered) of an HTML document."""
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    return parser.paragraphs


# ---- reStructuredText ------------------------------------------------------------------------------------------------

_RST_KEEP_DIRECTIVES = frozenset(
    "note warning important tip hint attention caution danger error admonition seealso epigraph highlights "
    "pull-quote topic sidebar rubric container only versionadded versionchanged deprecated centered "
    "hlist glossary".split())
_RST_DIRECTIVE_RE = re.compile(r"^(\s*)\.\.\s+(?:\|[^|]+\|\s+)?([\w:.+-]+)::(?:\s+(.*))?$")
_RST_EXPLICIT_RE = re.compile(r"^(\s*)\.\.(?:\s|$)")
_RST_ADORNMENT_RE = re.compile(r"^\s*([=\-~^\"'`#*+_.:<>])\1{2,}\s*$")
_RST_TABLE_RE = re.compile(r"^\s*(\+[-=+:]+\+?|\|.*\||[=\s]*={3,}[=\s]*|[-\s]*-{3,}\s+-{3,}[-\s]*)\s*$")
_RST_BULLET_RE = re.compile(r"^(\s*)(?:[-*+\u2022]|\d+[.)]|#\.|\(\d+\)|\(?[a-z][.)])\s+(\S.*)$")
_RST_FIELD_RE = re.compile(r"^\s*:[^:`\s][^:`]*:(?:\s+(.*))?$")
_RST_ROLE_RE = re.compile(r":[\w:+.-]+:`([^`]*)`")
_RST_LINK_RE = re.compile(r"`([^`<]*?)\s*<[^`>]*>`__?")
_RST_REF_RE = re.compile(r"`([^`]+)`__?")
_RST_LITERAL_RE = re.compile(r"``(.+?)``")
_RST_INTERP_RE = re.compile(r"`([^`]+)`")
_RST_STRONG_RE = re.compile(r"\*\*(\S(?:.*?\S)?)\*\*")
_RST_EMPH_RE = re.compile(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])")
_RST_SUBST_RE = re.compile(r"\|(\w[^|]*?)\|(?:__?)?")
_RST_FOOTREF_RE = re.compile(r"\s?\[(?:#[\w-]*|\d+|\*)\]_")
_RST_TARGET_TAIL_RE = re.compile(r"\b(\w+)__?(?=[\s.,;:!?)]|$)")


def _rst_role_text(m: re.Match) -> str:
    t = m.group(1)
    t = re.sub(r"\s*<[^<>]*>\s*$", "", t)  # :ref:`text <target>`
    return t.lstrip("~!")


def rst_inline(text: str) -> str:
    """Reduce reST inline markup to its text."""
    text = _RST_ROLE_RE.sub(_rst_role_text, text)
    text = _RST_LITERAL_RE.sub(r"\1", text)
    text = _RST_LINK_RE.sub(r"\1", text)
    text = _RST_REF_RE.sub(r"\1", text)
    text = _RST_INTERP_RE.sub(r"\1", text)
    text = _RST_STRONG_RE.sub(r"\1", text)
    text = _RST_EMPH_RE.sub(r"\1", text)
    text = _RST_FOOTREF_RE.sub("", text)
    text = _RST_SUBST_RE.sub(r"\1", text)
    text = _RST_TARGET_TAIL_RE.sub(r"\1", text)
    return text.replace("\\", "")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def rst_to_paragraphs(text: str) -> list[str]:
    """Raw paragraphs of a reStructuredText document (inline markup already reduced)."""
    out: list[str] = []
    para: list[str] = []
    para_indent = 0
    skip_above: Optional[int] = None  # skip blank lines and lines indented more than this
    skip_to_blank = False

    def flush() -> None:
        nonlocal para, skip_above
        if not para:
            return
        joined = " ".join(s.strip() for s in para)
        para = []
        if joined.endswith("::"):  # the next indented block is a literal (code) block
            joined = joined[:-2].rstrip() if joined[:-2].endswith(" ") or joined == "::" else joined[:-1]
            skip_above = para_indent
        if joined:
            out.append(rst_inline(joined))

    for raw in text.expandtabs(8).splitlines():
        line = raw.rstrip()
        if skip_to_blank:
            if line.strip():
                continue
            skip_to_blank = False
        if skip_above is not None:
            if not line.strip() or _indent(line) > skip_above:
                continue
            skip_above = None
        if not line.strip():
            flush()
            continue
        ind = _indent(line)
        stripped = line.strip()
        m = _RST_DIRECTIVE_RE.match(line)
        if m:
            flush()
            name = m.group(2).lower()
            if name in _RST_KEEP_DIRECTIVES:
                arg = m.group(3)
                if arg and name not in ("only", "container", "hlist", "versionadded", "versionchanged",
                                        "deprecated"):
                    para, para_indent = [arg], ind + 3
            else:
                skip_above = ind
            continue
        if _RST_EXPLICIT_RE.match(line):  # comment, target, footnote, substitution definition
            flush()
            skip_above = ind
            continue
        if _RST_ADORNMENT_RE.match(line) or _RST_TABLE_RE.match(line):
            flush()
            continue
        if stripped.startswith(">>>"):
            flush()
            skip_to_blank = True
            continue
        m = _RST_FIELD_RE.match(line)
        if m:
            flush()
            if m.group(1):
                para, para_indent = [m.group(1)], ind
            continue
        m = _RST_BULLET_RE.match(line)
        if m:
            flush()
            para, para_indent = [m.group(2)], len(m.group(1)) + (len(line) - len(m.group(1)) - len(m.group(2)))
            continue
        if para and ind != para_indent:
            flush()
        if not para:
            para_indent = ind
        para.append(stripped)
    flush()
    return out


# ---- plain text ------------------------------------------------------------------------------------------------------

_CODE_LINE_RE = re.compile(
    r"(?:[;{}]\s*$|^\s*(?:#\s*(?:include|define|if|endif|ifdef)|\$ |# |//|/\*|\*/|\}|\{|<\w)|->|==|!=|\(\);|&&|\|\||"
    r"\b0x[0-9a-fA-F]+\b|^\s*\w+\s*=\s*\S+\s*$)")


def looks_like_code(line: str) -> bool:
    s = line.strip()
    if not s:
        return False
    if _CODE_LINE_RE.search(s):
        return True
    compact = s.replace(" ", "")
    letters = sum(1 for c in compact if c.isalpha())
    return letters < 0.5 * len(compact)


def text_to_paragraphs(text: str) -> list[str]:
    """Raw paragraphs of a plain-text document: blank-line separated blocks; underlines, ASCII tables and blocks
    that look like code (indented deeper than the text and containing a code line, or a third code lines) dropped."""
    lines = text.expandtabs(8).splitlines()
    indents: dict[int, int] = {}
    for ln in lines:
        if ln.strip():
            indents[_indent(ln)] = indents.get(_indent(ln), 0) + 1
    base = max(sorted(indents), key=lambda k: indents[k]) if indents else 0
    out: list[str] = []
    block: list[str] = []

    def flush() -> None:
        nonlocal block
        if block:
            code = sum(1 for b in block if looks_like_code(b))
            deeper = min(_indent(b) for b in block) > base
            if not (code * 3 >= len(block) or (deeper and code)):
                out.append(" ".join(b.strip() for b in block))
            block = []

    for raw in lines:
        line = raw.rstrip()
        if not line.strip():
            flush()
            continue
        if _RST_ADORNMENT_RE.match(line) or _RST_TABLE_RE.match(line):
            flush()
            continue
        m = _RST_BULLET_RE.match(line)
        if m:
            flush()
            block.append(" " * _indent(line) + m.group(2))
            continue
        block.append(line)
    flush()
    return [rst_inline(p) if "``" in p or ":`" in p else p for p in out]


# ---- POD -------------------------------------------------------------------------------------------------------------

_POD_SIMPLE_RE = re.compile(r"([A-Z])<([^<>]*)>")
_POD_ESCAPES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/"}


def _pod_code(letter: str, inner: str) -> str:
    if letter in "XZ":
        return ""
    if letter == "E":
        if inner in _POD_ESCAPES:
            return "\x00" + inner + "\x00"
        if inner.isdigit():
            return chr(int(inner))
        if inner.startswith("0x"):
            return chr(int(inner, 16))
        return html.unescape("&" + inner + ";")
    if letter == "L":
        if "|" in inner:
            return inner.split("|", 1)[0]
        inner = inner.replace('"', "")
        return inner.split("/", 1)[1] if "/" in inner and inner.split("/", 1)[1] else inner.split("/", 1)[0]
    return inner


def pod_inline(text: str) -> str:
    """Reduce POD formatting codes (``C<..>``, ``L<text|target>``, ``E<gt>``, ``X<index>``, ``B<< .. >>``) to text."""
    for n in (4, 3, 2):
        text = re.sub(r"([A-Z])" + "<" * n + r"\s+(.*?)\s+" + ">" * n,
                      lambda m: _pod_code(m.group(1), m.group(2)), text, flags=re.S)
    for _ in range(10):
        new = _POD_SIMPLE_RE.sub(lambda m: _pod_code(m.group(1), m.group(2)), text)
        if new == text:
            break
        text = new
    for name, ch in _POD_ESCAPES.items():
        text = text.replace("\x00" + name + "\x00", ch)
    return text


def pod_to_paragraphs(text: str) -> list[str]:
    """Raw paragraphs of a POD document: ordinary paragraphs and heading/item text; verbatim blocks, ``=begin`` ..
    ``=end`` and ``=for`` paragraphs and code after ``=cut`` dropped."""
    out: list[str] = []
    in_pod = True
    in_begin: Optional[str] = None
    for block in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")):
        if not block.strip():
            continue
        first = block.lstrip("\n")
        if first.startswith("="):
            cmd, _, rest = first[1:].partition(" ")
            cmd = cmd.split("\n", 1)[0]
            if in_begin is not None:
                if cmd == "end":
                    in_begin = None
                continue
            if cmd == "cut":
                in_pod = False
                continue
            in_pod = True
            if cmd == "begin":
                in_begin = rest.strip()
            elif cmd.startswith("head") or cmd == "item":
                rest = rest.strip()
                if rest and rest not in ("*", "-") and not rest.rstrip(".").isdigit():
                    out.append(pod_inline(rest.lstrip("*- ")))
            continue
        if not in_pod or in_begin is not None:
            continue
        if first[:1] in (" ", "\t"):  # verbatim
            continue
        out.append(pod_inline(first))
    return out


# ---- dictd -----------------------------------------------------------------------------------------------------------

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def dictd_b64(s: str) -> int:
    """Decode a dictd index number (base 64, most significant digit first)."""
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


_GCIDE_NAMED = {"ae": "ae", "AE": "AE", "oe": "oe", "OE": "OE", "eth": "th", "th": "th", "thorn": "th", "deg": "°",
                "sect": "§", "yogh": "gh", "ng": "ng", "imac": "i", "aum": "a", "add": "a", "udd": "u", "asl": "a",
                "root": "", "pound": "£", "cced": "c"}
_GCIDE_CODE_RE = re.compile(r"\[(?:[=\-~`'\".,*^]([A-Za-z]{1,2})|([A-Za-z]{1,2})\^|([A-Za-z]{2,5}))\]")
_DICT_PRON_RE = re.compile(r"\\[^\\]{0,200}?\\(?:,?\s*\((?:[^()\n]|\([^()\n]*\))*\))?")
# GCIDE run-on forms "-- {Del`e*te"ri*ous*ly}, adv.", marked pronunciations "(mal"a*diz)" and marked words
_DICT_RUNON_RE = re.compile(r"(?:--\s*)?\{[^{}]*[A-Za-z][*`\"][A-Za-z][^{}]*\}(?:\s*,?\s*(?:[a-z]{1,5}\.\s*)+)?")
_DICT_MARKED_PAREN_RE = re.compile(r"\([^()\n]*[A-Za-z][*`\"][A-Za-z][^()\n]*\)")
_DICT_MARKED_WORD_RE = re.compile(r"[A-Za-z]+(?:[*`\"][A-Za-z]+)*[*`][A-Za-z]+(?:[*`\"][A-Za-z]+)*`?")
_DICT_BRACKET_RE = re.compile(r"\[(?:[^\[\]\n]|\n(?![ \t]*\n))*\]")
_DICT_BRACE_RE = re.compile(r"\{([^{}]*)\}")
_DICT_DOMAIN_RE = re.compile(r"<[a-z][a-z ,/-]{0,60}>")
_DICT_ATTRIB_RE = re.compile(r"(?:(?<=\s)|^)--(?:\s?(?=[A-Z0-9]).*|\s*)$")
_DICT_LABEL_RE = re.compile(r"^\s*\((?:[A-Z][A-Za-z]*\.?(?:\s*(?:&|,|and)\s*|\s+)?)+\)\s*")
_DICT_SENSE_RE = re.compile(r"^\s*(?:\d+\.|\([a-z0-9]\))\s+")


def _gcide_code(m: re.Match) -> str:
    if m.group(1) or m.group(2):
        return m.group(1) or m.group(2)
    return _GCIDE_NAMED.get(m.group(3), m.group(0))


def dict_entry_paragraphs(entry: str, headword: Union[str, Sequence[str]] = "") -> list[str]:
    """Raw paragraphs of one dictd entry (GCIDE / FOLDOC / Jargon / Devil's Dictionary style); ``headword``: the
    entry's headword(s), whose header line is dropped when it holds nothing but grammar and spellings."""
    heads = [headword] if isinstance(headword, str) else list(headword)
    text = _GCIDE_CODE_RE.sub(_gcide_code, entry.replace("\r\n", "\n"))
    text = _DICT_PRON_RE.sub("", text)
    text = _DICT_RUNON_RE.sub("", text)
    text = _DICT_MARKED_PAREN_RE.sub("", text)
    text = _DICT_MARKED_WORD_RE.sub("", text)
    for _ in range(3):  # nested brackets, innermost first
        new = _DICT_BRACKET_RE.sub("", text)
        if new == text:
            break
        text = new
    text = _DICT_BRACE_RE.sub(r"\1", text)
    text = _DICT_DOMAIN_RE.sub("", text)
    lines = text.split("\n")
    # headword line: "Abandon , v. t." (what is left of it) or foldoc's bare "16550A"
    while lines and not lines[0].strip():
        lines.pop(0)
    first = lines[0].strip().lower() if lines else ""
    for h in sorted((h.strip() for h in heads if h.strip()), key=len, reverse=True):
        if first.startswith(h.lower()):
            if not keep_line(normalize(first[len(h):])):  # only part of speech, inflections, spellings
                lines.pop(0)
            break
    out: list[str] = []
    para: list[str] = []
    for line in lines:
        if not line.strip():
            if para:
                out.append(" ".join(para))
                para = []
            continue
        if _indent(line.expandtabs(8)) >= 25:  # right-aligned attribution ("--Shak.", "G.J.")
            continue
        line = _DICT_ATTRIB_RE.sub("", line)
        if _DICT_SENSE_RE.match(line):
            if para:
                out.append(" ".join(para))
                para = []
            line = _DICT_SENSE_RE.sub("", line)
        if not para:
            line = _DICT_LABEL_RE.sub("", line)  # "(Zool.)", "(Law)" domain labels
        s = line.strip()
        for prefix in ("Note:", "Syn:"):
            if s.startswith(prefix):
                s = s[len(prefix):].strip()
        if s:
            para.append(s)
    if para:
        out.append(" ".join(para))
    return out


def read_dictd(index_path: Path) -> Iterator[tuple[list[str], str]]:
    """(headwords, entry text) of a dictd database in data-file order, each entry once (with all the headwords that
    point to it, in index order), ``00-database-*`` entries skipped."""
    stem = index_path.name[: -len(".index")]
    data_path = None
    for cand in (stem + ".dict.dz", stem + ".dict", stem + ".dict.gz"):
        if (index_path.parent / cand).exists():
            data_path = index_path.parent / cand
            break
    if data_path is None:
        raise CorpusError(f"dictd index {index_path} has no {stem}.dict.dz beside it")
    data = read_bytes(data_path)
    entries: dict[tuple[int, int], list[str]] = {}
    for line in decode(index_path.read_bytes()).splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        head = parts[0]
        try:
            key = (dictd_b64(parts[1]), dictd_b64(parts[2]))
        except KeyError:
            continue
        if head.startswith("00-database") or head.startswith("00database"):
            entries[key] = []  # marks the header entry: never emitted, even under another headword
            continue
        heads = entries.setdefault(key, [head])
        if heads and head not in heads:
            heads.append(head)
    for (off, length), heads in sorted(entries.items()):
        if heads:
            yield heads, decode(data[off:off + length])


def dictd_to_paragraphs(index_path: Path) -> list[str]:
    out = []
    for head, entry in read_dictd(index_path):
        out.extend(dict_entry_paragraphs(entry, head))
    return out


# ---- WordNet ---------------------------------------------------------------------------------------------------------

def wordnet_to_paragraphs(text: str) -> list[str]:
    """From a WordNet ``data.<pos>`` file: "lemma, lemma: definition." and each quoted example, per synset."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("  ") or " | " not in line:
            continue
        head, gloss = line.split(" | ", 1)
        fields = head.split()
        try:
            n = int(fields[3], 16)
            lemmas = [re.sub(r"\(\w+\)$", "", fields[4 + 2 * i]).replace("_", " ") for i in range(n)]
        except (IndexError, ValueError):
            lemmas = []
        parts = re.split(r";\s*(?=\")", gloss.strip())
        definition = parts[0].strip().rstrip(";").strip()
        if definition:
            lead = ", ".join(dict.fromkeys(lemmas))
            out.append((lead + ": " if lead else "") + definition + ".")
        for ex in parts[1:]:
            ex = ex.strip().rstrip(";").strip()
            if ex.startswith('"'):
                ex = ex[1:]
                ex = ex[: ex.rindex('"')] if '"' in ex else ex
            if ex:
                out.append(ex)
    return out


# ---- fortune(6) files ----------------------------------------------------------------------------------------------

def fortune_to_paragraphs(text: str) -> list[str]:
    """Entries of a fortune(6) data file (separated by ``%`` lines), attribution lines (``-- Author``) dropped."""
    out = []
    for entry in re.split(r"(?m)^%+[ \t]*$", text):
        lines = [l for l in entry.splitlines() if l.strip() and not re.match(r"^\s+--", l)]
        if lines:
            out.append(" ".join(l.strip() for l in lines))
    return out


# ---- SWORD zText -----------------------------------------------------------------------------------------------------

_OSIS_DROP_RE = re.compile(r"<(note|title)\b[^>]*(?<!/)>.*?</\1>", re.S)
_OSIS_BREAK_RE = re.compile(r"</?(?:div|p|l|lg|lb|br|milestone|chapter|verse|list|item|table|row|cell|head)\b[^>]*>")
_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_PUNCT_RE = re.compile(r"\s+([,.;:!?)\]])")


def osis_to_text(markup: str) -> str:
    """Text of an OSIS/ThML/GBF verse: footnotes and headings removed, tags stripped (structural ones become a
    space, inline ones nothing), entities decoded, no space before punctuation."""
    text = _TAG_RE.sub("", _OSIS_BREAK_RE.sub(" ", _OSIS_DROP_RE.sub(" ", markup)))
    return _SPACE_PUNCT_RE.sub(r"\1", html.unescape(text))


def read_sword_conf(conf_path: Path) -> dict[str, str]:
    conf: dict[str, str] = {}
    for line in decode(conf_path.read_bytes()).splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            conf.setdefault(k.strip(), v.strip())
    return conf


def sword_to_paragraphs(conf_path: Path) -> list[str]:
    """One line per verse of a SWORD zText/zText4 module described by ``mods.d/<name>.conf``."""
    conf = read_sword_conf(conf_path)
    driver = conf.get("ModDrv", "").lower()
    if driver not in ("ztext", "ztext4"):
        raise CorpusError(f"{conf_path}: SWORD driver {conf.get('ModDrv')!r} is not supported (zText, zText4 are)")
    root = conf_path.parent.parent  # usr/share/sword
    data_dir = (root / conf.get("DataPath", "").lstrip("./")).resolve()
    decompress: Callable[[bytes], bytes] = {
        "ZIP": zlib.decompress, "BZIP2": __import__("bz2").decompress, "XZ": __import__("lzma").decompress,
    }.get(conf.get("CompressType", "ZIP").upper(), zlib.decompress)
    vsize, vfmt = (12, "<III") if driver == "ztext4" else (10, "<IIH")
    out = []
    for testament in ("ot", "nt"):
        bzs, bzv, bzz = (data_dir / f"{testament}.{ext}" for ext in ("bzs", "bzv", "bzz"))
        if not (bzs.exists() and bzv.exists() and bzz.exists()):
            continue
        blocks_raw, index, comp = bzs.read_bytes(), bzv.read_bytes(), bzz.read_bytes()
        blocks = [struct.unpack_from("<III", blocks_raw, i) for i in range(0, len(blocks_raw) - 11, 12)]
        cache: dict[int, bytes] = {}
        for i in range(0, len(index) - vsize + 1, vsize):
            block, offset, size = struct.unpack_from(vfmt, index, i)
            if size == 0 or block >= len(blocks):
                continue
            if block not in cache:
                cache.clear()
                boff, bsize, _ = blocks[block]
                cache[block] = decompress(comp[boff:boff + bsize])
            verse = decode(cache[block][offset:offset + size])
            out.append(osis_to_text(verse))
    return out


# ---- file selection --------------------------------------------------------------------------------------------------

_LANG_CODES = frozenset(
    "af am ar as az be bg bn bo br bs ca cs cy da de dz el eo es et eu fa fi fo fr ga gd gl gu he hi hr hu hy ia id "
    "is it ja ka kk km kn ko ku ky lo lt lv mk ml mn mr ms my nb ne nl nn no oc or pa pl ps pt ro ru si sk sl sq sr "
    "sv sw ta te tg th tl tr tt ug uk ur uz vi wa xh zh zu".split())
_LANG_DIRS = _LANG_CODES | {"translations", "zh_cn", "zh_tw", "zh-cn", "zh-tw", "pt_br", "pt-br"}
_LOCALE_RE = re.compile(r"^([a-z]{2,3})[_-](?:[A-Z]{2}|[a-z]{2}|Hans|Hant|Latn|Cyrl)$")
_LANG_SUFFIX_RE = re.compile(r"\.([a-z]{2})(?:[_-][a-zA-Z]{2})?\.html?(?:\.gz)?$"
                             r"|\.html?\.([a-z]{2})(?:[_-][a-zA-Z]{2})?$")


def is_other_language(relpath: str) -> bool:
    """True for files in a non-English translation: a path component that is a language code or locale other than
    English (``fr``, ``de-DE``, ``zh_CN``, ``translations``), or a ``.xx.html`` / ``.html.xx`` suffix, xx != en."""
    parts = relpath.split("/")
    for comp in parts[:-1]:
        c = comp.lower()
        if c in _LANG_DIRS:
            return True
        m = _LOCALE_RE.match(comp)
        if m and m.group(1) in _LANG_CODES:
            return True
    m = _LANG_SUFFIX_RE.search(parts[-1])
    return bool(m and (m.group(1) or m.group(2)) in _LANG_CODES)


_GLOBAL_EXCLUDES = ("*/copyright", "*/changelog*", "*/NEWS*", "*/README.Debian*", "*/_static/*", "*/_images/*",
                    "*/_sources/*", "*/genindex*", "*/search.html", "*/searchindex*", "*/py-modindex.html",
                    "*/modindex.html", "*/bookindex.html", "*/objects.inv")

#: Which files of a package are used and how. Keys are fnmatch patterns over package names (first match wins);
#: rules are (fnmatch pattern over the path relative to the unpacked root, kind); a file's first matching rule wins.
#: ``None`` as rules means "generic": see :func:`generic_rules`.
PACKAGE_SPECS: list[tuple[str, Optional[list[tuple[str, str]]], tuple[str, ...]]] = [
    ("sword-text-*", [("usr/share/sword/mods.d/*.conf", "sword")], ()),
    ("dict-*", [("usr/share/dictd/*.index", "dictd")], ()),
    ("fortunes*", [("usr/share/games/fortunes/*", "fortune")], ("*.dat", "*.u8")),
    ("wordnet-base", [("usr/share/wordnet/data.*", "wordnet")], ()),
    ("linux-doc-*", [("usr/share/doc/*/Documentation/ABI/*.gz", "text"),
                     ("usr/share/doc/*/Documentation/*.rst.gz", "rst"),
                     ("usr/share/doc/*/Documentation/*.txt.gz", "text")],
     ("*/Documentation/devicetree/*", "*/Documentation/features/*", "*/Documentation/*.py.gz",
      "*/Documentation/ABI/*.rst.gz")),
    ("python3*-doc", [("usr/share/doc/python3*/html/*.html", "html")],
     ("*/whatsnew/changelog.html", "*/license.html", "*/copyright.html", "*/bugs.html", "*/contents.html")),
    ("postgresql-doc-*", [("usr/share/doc/postgresql-doc-*/html/*.html", "html")], ()),
    ("perl-doc", [("usr/share/perl/*/pod/*.pod", "pod")], ("*/perltoc.pod",)),
    ("debian-handbook", [("usr/share/doc/debian-handbook/html/en-US/*.html", "html")], ()),
    ("openjdk-*-doc", None, ("*/class-use/*", "*/index-files/*", "*-tree.html", "*/allclasses*", "*/allpackages*",
                             "*-list.html", "*/serialized-form.html", "*/constant-values.html", "*/help-doc.html",
                             "*/legal/*", "*/module-summary.html", "*/package-summary.html")),
    ("lilypond-doc-html", None, ("*/Documentation/internals/*", "*/Documentation/snippets/*")),
]


def generic_rules(relpaths: Sequence[str]) -> list[tuple[str, str]]:
    """Rules for a package with no entry in PACKAGE_SPECS: dictd, SWORD, WordNet data wherever found, plus the
    package's documentation in one format, the first present of HTML, reST, POD (others duplicate it)."""
    rules = [("usr/share/dictd/*.index", "dictd"), ("usr/share/sword/mods.d/*.conf", "sword"),
             ("usr/share/wordnet/data.*", "wordnet")]
    for pats, kind in ((("*.html", "*.htm", "*.html.en", "*.xhtml", "*.html.gz", "*.htm.gz"), "html"),
                       (("*.rst", "*.rst.gz"), "rst"), (("*.pod", "*.pod.gz"), "pod")):
        if any(fnmatch.fnmatchcase(p, pat) for p in relpaths for pat in pats):
            return rules + [(pat, kind) for pat in pats]
    return rules


def spec_for(package: str) -> tuple[Optional[list[tuple[str, str]]], tuple[str, ...]]:
    for pattern, rules, excludes in PACKAGE_SPECS:
        if fnmatch.fnmatchcase(package, pattern):
            return rules, excludes
    return None, ()


def select_files(root: Path, package: str) -> list[tuple[str, str]]:
    """(relative path, kind) of the files of an unpacked package that feed the corpus, sorted by path."""
    relpaths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            full = Path(dirpath) / name
            if full.is_symlink() or not full.is_file():
                continue
            relpaths.append(full.relative_to(root).as_posix())
    relpaths.sort()
    rules, excludes = spec_for(package)
    if rules is None:
        rules = generic_rules(relpaths)
    chosen = []
    for rel in relpaths:
        if any(fnmatch.fnmatchcase(rel, pat) for pat in _GLOBAL_EXCLUDES + tuple(excludes)):
            continue
        if is_other_language(rel):
            continue
        for pat, kind in rules:
            if fnmatch.fnmatchcase(rel, pat):
                chosen.append((rel, kind))
                break
    return chosen


_PATH_EXTRACTORS: dict[str, Callable[[Path], list[str]]] = {
    "dictd": dictd_to_paragraphs,
    "sword": sword_to_paragraphs,
}
_TEXT_EXTRACTORS: dict[str, Callable[[str], list[str]]] = {
    "html": html_to_paragraphs,
    "rst": rst_to_paragraphs,
    "pod": pod_to_paragraphs,
    "text": text_to_paragraphs,
    "wordnet": wordnet_to_paragraphs,
    "fortune": fortune_to_paragraphs,
}


def extract_file(path: Path, kind: str) -> list[str]:
    """Cleaned, filtered lines of one file (no corpus-wide dedup)."""
    if kind in _PATH_EXTRACTORS:
        raw = _PATH_EXTRACTORS[kind](path)
    elif kind in _TEXT_EXTRACTORS:
        raw = _TEXT_EXTRACTORS[kind](read_text(path))
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return clean_paragraphs(raw)


def _extract_job(args: tuple[str, str]) -> list[str]:
    return extract_file(Path(args[0]), args[1])


# ---- licence ---------------------------------------------------------------------------------------------------------

_LICENCE_PATTERNS = [
    (re.compile(r"PYTHON SOFTWARE FOUNDATION LICENSE", re.I), "PSF-2.0"),
    (re.compile(r"GNU Free Documentation\s+Licen[cs]e,?\s+Version\s+([\d.]+)(\s+or any later)?", re.I),
     lambda m: "GFDL-" + m.group(1) + ("+" if m.group(2) else "")),
    (re.compile(r"GNU Free Documentation\s+Licen[cs]e", re.I), "GFDL"),
    (re.compile(r"\bpublic[\s-]+domain\b", re.I), "public-domain"),
    (re.compile(r"GNU General Public\s+Licen[cs]e.{0,200}?version\s+(\d)(.{0,40}?any later)?", re.I | re.S),
     lambda m: "GPL-" + m.group(1) + ("+" if m.group(2) else "")),
    (re.compile(r"\bGPL[ -]?v?(\d)", re.I), lambda m: "GPL-" + m.group(1)),
    (re.compile(r"GNU General Public\s+Licen[cs]e", re.I), "GPL"),
    (re.compile(r"Artistic Licen[cs]e", re.I), "Artistic"),
    (re.compile(r"Apache Licen[cs]e,?\s+Version\s+([\d.]+)", re.I), lambda m: "Apache-" + m.group(1)),
    (re.compile(r"\bBSD\b"), "BSD"),
    (re.compile(r"Permission is hereby granted, free of charge", re.I), "Expat"),
]


def licence_from_copyright(text: str) -> str:
    """The licence of a package from its ``debian/copyright`` text: the ``License:`` of the ``Files: *`` stanza of a
    machine-readable (DEP-5) file, else the first licence named by a short list of patterns in free-form text."""
    if re.match(r"\s*Format:", text):
        stanzas = re.split(r"\n\s*\n", text)
        first_licence = None
        for st in stanzas:
            files = re.search(r"^Files:\s*(.*)$", st, re.M)
            lic = re.search(r"^License:[ \t]*(\S.*)$", st, re.M)
            if lic and len(lic.group(1).split()) > 8:  # licence text on the field line, not a short name
                lic = None
            if lic and first_licence is None and files:
                first_licence = lic.group(1).strip()
            if files and lic and files.group(1).split() and files.group(1).split()[0] == "*":
                return lic.group(1).strip()
        if first_licence:
            return first_licence
    for pattern, name in _LICENCE_PATTERNS:
        m = pattern.search(text)
        if m:
            return name(m) if callable(name) else name
    return "unknown (see copyright file)"


def package_licence(root: Path, package: str) -> tuple[str, str]:
    """(licence, path of the copyright file read, relative to the unpacked root)."""
    rel = f"usr/share/doc/{package}/copyright"
    p = root / rel
    doc_dir = root / "usr/share/doc" / package
    if doc_dir.is_symlink() and not p.exists():
        return (f"unknown: usr/share/doc/{package} links to {os.readlink(doc_dir)} (another package's copyright)",
                "")
    if not p.exists():
        return "unknown (no copyright file in the package)", ""
    return licence_from_copyright(decode(p.read_bytes())), rel


# ---- apt / dpkg ------------------------------------------------------------------------------------------------------

@dataclass
class PackageRequest:
    name: str
    version: Optional[str] = None  # pinned with name=version


def parse_packages(spec: str) -> list[PackageRequest]:
    out = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, version = item.partition("=")
        if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", name):
            raise CorpusError(f"--packages: {name!r} is not a Debian package name; give a comma-separated list "
                              "such as dict-gcide,wordnet-base or dict-gcide=0.48.5+nmu2")
        out.append(PackageRequest(name, version or None))
    if not out:
        raise CorpusError("--packages is empty; give a comma-separated list of package names")
    return out


def _run(cmd: list[str], cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    except FileNotFoundError:
        raise CorpusError(f"{cmd[0]} not found; run this on Debian/Ubuntu (apt and dpkg), or pass --download-dir "
                          "holding the .deb files (dpkg-deb is still needed)") from None


def deb_fields(deb: Path) -> dict[str, str]:
    r = _run(["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture"])
    if r.returncode != 0:
        raise CorpusError(f"dpkg-deb cannot read {deb}: {r.stderr.strip().splitlines()[-1:]}; delete the file and "
                          "run again to download it anew")
    fields = {}
    for line in r.stdout.splitlines():
        k, _, v = line.partition(":")
        fields[k.strip()] = v.strip()
    return fields


def apt_lists_present() -> bool:
    lists = Path("/var/lib/apt/lists")
    return lists.is_dir() and any("Packages" in p.name for p in lists.iterdir())


def apt_candidates(names: Sequence[str]) -> dict[str, Optional[str]]:
    """Candidate version apt would download for each package (None: unknown to apt)."""
    r = _run(["apt-cache", "policy", *names])
    found: dict[str, Optional[str]] = {n: None for n in names}
    current = None
    for line in r.stdout.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
        elif current and line.strip().startswith("Candidate:"):
            v = line.split(":", 1)[1].strip()
            if current in found:
                found[current] = None if v == "(none)" else v
    return found


def _version_newer(a: str, b: str) -> bool:
    return _run(["dpkg", "--compare-versions", a, "gt", b]).returncode == 0


def existing_debs(download_dir: Path, name: str) -> dict[str, Path]:
    """version -> .deb of package ``name`` already in download_dir."""
    out = {}
    for deb in sorted(download_dir.glob(f"{name}_*.deb")):
        f = deb_fields(deb)
        if f.get("Package") == name:
            out[f["Version"]] = deb
    return out


def obtain_deb(req: PackageRequest, candidate: Optional[str], download_dir: Path) -> Path:
    """The .deb for a request: reused from download_dir when the wanted version is there, else apt-get download."""
    have = existing_debs(download_dir, req.name)
    want = req.version or candidate
    if want and want in have:
        return have[want]
    if want is None:
        if have:  # apt does not know the package (no lists, other machine): use the newest .deb we have
            best = None
            for v in have:
                if best is None or _version_newer(v, best):
                    best = v
            return have[best]
        raise CorpusError(f"package {req.name!r} is not known to apt (no candidate version); check the name with "
                          f"`apt-cache search {req.name}`, run `apt-get update` (as root), or drop it "
                          "from --packages")
    target = f"{req.name}={want}" if req.version else req.name
    r = _run(["apt-get", "download", "-o", "APT::Sandbox::User=root", target], cwd=download_dir)
    if r.returncode != 0:
        msg = " ".join(l.strip() for l in r.stderr.splitlines() if l.startswith("E:")) or r.stderr.strip()[-300:]
        fix = (f"check the version with `apt-cache policy {req.name}`" if req.version else
               f"run `apt-get update` (as root) and check the name with `apt-cache policy {req.name}`")
        raise CorpusError(f"apt-get download {target} failed ({msg}); {fix}, or pass --download-dir with the .deb")
    have = existing_debs(download_dir, req.name)
    if want in have:
        return have[want]
    if len(have) == 1 and not req.version:  # apt's candidate changed between policy and download
        return next(iter(have.values()))
    raise CorpusError(f"apt-get download {target} left no {req.name}_*.deb in {download_dir}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- assembly --------------------------------------------------------------------------------------------------------

@dataclass
class SourceStats:
    package: str
    version: str = ""
    architecture: str = ""
    deb_sha256: str = ""
    licence: str = ""
    copyright_file: str = ""
    kinds: dict[str, int] = field(default_factory=dict)  # kind -> number of files
    files: list[list] = field(default_factory=list)  # [relative path, kind, lines, tokens]
    lines: int = 0
    tokens: int = 0
    duplicates_dropped: int = 0
    truncated: bool = False

    def as_json(self) -> dict:
        return {"package": self.package, "version": self.version, "architecture": self.architecture,
                "deb_sha256": self.deb_sha256, "licence": self.licence, "copyright_file": self.copyright_file,
                "files_used": len(self.files), "kinds": dict(sorted(self.kinds.items())), "lines": self.lines,
                "tokens": self.tokens, "duplicates_dropped": self.duplicates_dropped, "truncated": self.truncated,
                "files": self.files}


class CorpusWriter:
    """Appends lines to corpus.txt, dropping exact duplicates corpus-wide, counting tokens, honouring a cap."""

    def __init__(self, path: Path, max_tokens: Optional[int] = None):
        self.path = path
        self.f = open(path, "w", encoding="utf-8", newline="\n")
        self.seen: set[int] = set()
        self.max_tokens = max_tokens
        self.tokens = 0
        self.lines = 0
        self.full = False

    def add(self, lines: Iterable[str], stats: SourceStats) -> tuple[int, int]:
        """Write new lines; returns (lines, tokens) written from this batch."""
        n_lines = n_tok = 0
        for line in lines:
            if self.full:
                stats.truncated = True
                break
            key = int.from_bytes(hashlib.blake2b(line.encode("utf-8"), digest_size=8).digest(), "little")
            if key in self.seen:
                stats.duplicates_dropped += 1
                continue
            t = count_tokens(line)
            if self.max_tokens is not None and self.tokens + t > self.max_tokens:
                self.full = True
                stats.truncated = True
                break
            self.seen.add(key)
            self.f.write(line + "\n")
            self.tokens += t
            self.lines += 1
            n_lines += 1
            n_tok += t
        return n_lines, n_tok

    def close(self) -> None:
        self.f.close()


def assemble_package(root: Path, stats: SourceStats, writer: CorpusWriter, jobs: int = 1,
                     log: Callable[[str], None] = lambda s: None) -> None:
    """Extract one unpacked package (directory ``root``) into the writer, filling ``stats``."""
    chosen = select_files(root, stats.package)
    if not stats.licence:
        stats.licence, stats.copyright_file = package_licence(root, stats.package)
    args = [(str(root / rel), kind) for rel, kind in chosen]
    if jobs > 1 and len(args) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as ex:
            chunk = max(1, min(16, len(args) // (4 * jobs)))
            results: Iterable[list[str]] = ex.map(_extract_job, args, chunksize=chunk)
            _consume(chosen, results, stats, writer)
    else:
        _consume(chosen, map(_extract_job, args), stats, writer)
    log(f"{stats.package}: {len(stats.files)} files, {stats.lines} lines, {stats.tokens} tokens")


def _consume(chosen, results, stats: SourceStats, writer: CorpusWriter) -> None:
    for (rel, kind), lines in zip(chosen, results):
        if writer.full:
            stats.truncated = True
            break
        n_lines, n_tok = writer.add(lines, stats)
        stats.kinds[kind] = stats.kinds.get(kind, 0) + 1
        stats.files.append([rel, kind, n_lines, n_tok])
        stats.lines += n_lines
        stats.tokens += n_tok


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def write_reports(out_dir: Path, sources: list[SourceStats], writer: CorpusWriter, options: dict) -> dict:
    corpus = out_dir / "corpus.txt"
    digest = sha256_file(corpus)
    manifest = {
        "format": 1,
        "extractor_version": EXTRACTOR_VERSION,
        "tokenizer": {"lowercase": True, "token_pattern": TOKEN_RE.pattern},
        "filter": {"min_words": MIN_WORDS, "min_letter_fraction": MIN_LETTER_FRACTION,
                   "min_stopword_fraction": MIN_STOPWORD_FRACTION, "max_line_tokens": MAX_LINE_TOKENS,
                   "corpus_wide_exact_dedup": True},
        "options": options,
        "corpus": {"file": "corpus.txt", "sha256": digest, "bytes": corpus.stat().st_size, "lines": writer.lines,
                   "tokens": writer.tokens},
        "packages": [s.as_json() for s in sources],
        "total_tokens": writer.tokens,
        "total_lines": writer.lines,
        "reproduce": "python3 scripts/make_corpus.py OUT_DIR --packages "
                     + ",".join(f"{s.package}={s.version}" for s in sources if s.version)
                     + (f" --max-tokens {options['max_tokens']}" if options.get("max_tokens") else ""),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    rows = ["# Sources of corpus.txt", "",
            f"{_fmt_int(writer.tokens)} tokens (`[a-z']+` on lowercased text), {_fmt_int(writer.lines)} lines, "
            f"sha256 `{digest}`.", "",
            "| package | version | licence | files used | lines | tokens | share |",
            "| --- | --- | --- | --- | ---: | ---: | ---: |"]
    for s in sources:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(s.kinds.items())) or "none"
        share = f"{100 * s.tokens / writer.tokens:.1f}%" if writer.tokens else "-"
        note = " (cut by --max-tokens)" if s.truncated else ""
        rows.append(f"| {s.package} | {s.version} | {s.licence.replace('|', '/')} | {kinds}{note} | "
                    f"{_fmt_int(s.lines)} | {_fmt_int(s.tokens)} | {share} |")
    rows.append(f"| **total** | | | {sum(len(s.files) for s in sources)} files | {_fmt_int(writer.lines)} | "
                f"**{_fmt_int(writer.tokens)}** | 100% |")
    rows += ["", "Licences are read from each package's `usr/share/doc/<package>/copyright` (the `Files: *` "
             "stanza of machine-readable files); see those files for the full terms. Rebuild byte-identically with:",
             "", "```", manifest["reproduce"], "```", ""]
    (out_dir / "SOURCES.md").write_text("\n".join(rows), encoding="utf-8")
    return manifest


def build_from_dirs(out_dir: Path, roots: Sequence[tuple[str, Path, dict]], max_tokens: Optional[int] = None,
                    jobs: int = 1, log: Callable[[str], None] = lambda s: None) -> dict:
    """Assemble a corpus from already unpacked packages: ``roots`` = [(package, directory, facts)] where facts may
    give version, architecture, deb_sha256. Writes corpus.txt, SOURCES.md and manifest.json; returns the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = CorpusWriter(out_dir / "corpus.txt", max_tokens)
    sources = []
    try:
        for name, root, facts in roots:
            stats = SourceStats(name, **facts)
            sources.append(stats)
            if writer.full:
                stats.truncated = True
                continue
            assemble_package(Path(root), stats, writer, jobs, log)
    finally:
        writer.close()
    return write_reports(out_dir, sources, writer, {"max_tokens": max_tokens})


def build(out_dir: Path, requests: Sequence[PackageRequest], download_dir: Optional[Path], max_tokens: Optional[int],
          jobs: int, log: Callable[[str], None]) -> dict:
    if shutil.which("dpkg-deb") is None:
        raise CorpusError("dpkg-deb not found; run this on Debian/Ubuntu (package dpkg)")
    names = [r.name for r in requests]
    candidates: dict[str, Optional[str]] = {n: None for n in names}
    if shutil.which("apt-cache"):
        if not apt_lists_present():
            if os.geteuid() == 0:
                log("apt package lists missing: running apt-get update")
                r = _run(["apt-get", "update"])
                if r.returncode != 0:
                    raise CorpusError("apt-get update failed: " + (r.stderr.strip().splitlines() or ["?"])[-1])
            elif download_dir is None:
                raise CorpusError("apt's package lists are missing; run `sudo apt-get update` once, or pass "
                                  "--download-dir holding the .deb files")
        candidates = apt_candidates(names)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="make_corpus-") as tmp:
        ddir = Path(download_dir) if download_dir else Path(tmp) / "debs"
        ddir.mkdir(parents=True, exist_ok=True)
        # fail fast, before any long work, on a package apt cannot provide and no .deb is there for
        for req in requests:
            if not (req.version or candidates.get(req.name)) and not existing_debs(ddir, req.name):
                obtain_deb(req, None, ddir)  # raises the explanatory error
        writer = CorpusWriter(out_dir / "corpus.txt", max_tokens)
        sources = []
        try:
            for req in requests:
                stats = SourceStats(req.name)
                sources.append(stats)
                if writer.full:
                    stats.truncated = True
                    continue
                deb = obtain_deb(req, candidates.get(req.name), ddir)
                f = deb_fields(deb)
                stats.version, stats.architecture, stats.deb_sha256 = f["Version"], f.get("Architecture", ""), \
                    sha256_file(deb)
                root = Path(tmp) / "unpacked" / req.name
                root.mkdir(parents=True)
                r = _run(["dpkg-deb", "-x", str(deb), str(root)])
                if r.returncode != 0:
                    raise CorpusError(f"dpkg-deb -x {deb} failed: {r.stderr.strip()[-300:]}; delete the file and "
                                      "run again")
                t0 = time.monotonic()
                assemble_package(root, stats, writer, jobs, lambda s: log(f"{s} ({time.monotonic() - t0:.0f}s)"))
                shutil.rmtree(root, ignore_errors=True)
        finally:
            writer.close()
        return write_reports(out_dir, sources, writer, {"max_tokens": max_tokens})


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path, help="output directory (corpus.txt, SOURCES.md, manifest.json)")
    ap.add_argument("--packages", default=",".join(DEFAULT_PACKAGES),
                    help="comma-separated Debian packages, optionally pinned as name=version (default: %(default)s)")
    ap.add_argument("--max-tokens", type=int, default=None, help="stop once the corpus has this many tokens")
    ap.add_argument("--download-dir", type=Path, default=None,
                    help="keep/reuse the .deb files here (default: a temporary directory)")
    ap.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="extraction processes")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    t0 = time.monotonic()
    try:
        if args.max_tokens is not None and args.max_tokens <= 0:
            raise CorpusError("--max-tokens must be a positive number of tokens")
        manifest = build(args.out_dir, parse_packages(args.packages), args.download_dir, args.max_tokens,
                         max(1, args.jobs), log)
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return ERROR_EXIT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    log(f"wrote {args.out_dir / 'corpus.txt'}: {manifest['total_tokens']:,} tokens, {manifest['total_lines']:,} "
        f"lines in {time.monotonic() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
