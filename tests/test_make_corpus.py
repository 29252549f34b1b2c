"""Tests for scripts/make_corpus.py: text extraction and cleaning (HTML, reST, POD, dictd, WordNet, SWORD, fortune,
plain text), the prose filter, file selection, licences, token counting and the manifest, reproducibility, the
--max-tokens cap, error reporting, and an offline end-to-end run on a .deb built by the test.

No network: every input is written by the test; apt is monkeypatched where the code would consult it.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_corpus.py"


def _load():
    name = "make_corpus_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses and worker processes look the module up by name
    spec.loader.exec_module(mod)
    return mod


mc = _load()


def cleaned(paragraphs):
    return mc.clean_paragraphs(paragraphs)


# ---- HTML ------------------------------------------------------------------------------------------------------------

HTML_DOC = """<!DOCTYPE html>
<html><head><title>Ignored title</title><style>p { color: red; }</style>
<script>var x = "the script text is not prose";</script></head>
<body>
<div class="related" role="navigation"><a href="x">Previous topic in the navigation bar of the page</a></div>
<h1>Introduction<a class="headerlink" href="#intro">¶</a></h1>
<p>Caf&eacute; owners &amp; their guests don&#8217;t like the <code>open()</code> call
   when it is   slow &gt; fast.</p>
<pre>for (int i = 0; i &lt; n; i++) { printf("this is code in a pre block"); }</pre>
<div class="highlight-python"><div class="highlight">
<span>print("code inside a highlight div is dropped")</span></div></div>
<ul><li>The first item of the list is here<li>The second item of the list is there</ul>
<p>A paragraph with a line<br>break in the middle of it and more words after.</p>
<table><tr><td>x</td><td>42</td></tr></table>
</body></html>
"""


def test_html_blocks_entities_and_dropped_code():
    lines = cleaned(mc.html_to_paragraphs(HTML_DOC))
    assert lines == [
        "Café owners & their guests don't like the open() call when it is slow > fast.",
        "The first item of the list is here",
        "The second item of the list is there",
        "A paragraph with a line",
        "break in the middle of it and more words after.",
    ]
    text = " ".join(mc.html_to_paragraphs(HTML_DOC))
    for gone in ("Ignored title", "script text", "printf", "highlight div", "navigation bar", "¶", "color"):
        assert gone not in text


def test_html_unclosed_optional_end_tag_with_skip_class_does_not_swallow_page():
    doc = '<p class="toc">An unclosed paragraph with a skip class<p>The following paragraph is still kept here.</p>'
    assert cleaned(mc.html_to_paragraphs(doc)) == ["An unclosed paragraph with a skip class",
                                                    "The following paragraph is still kept here."]


# ---- reST ------------------------------------------------------------------------------------------------------------

RST_DOC = """.. SPDX-License-Identifier: GPL-2.0

.. _kobject:

=====================
The title of the page
=====================

This is the first paragraph, which spans
two lines and uses ``literal text``, a :c:func:`kobject_init` role,
a :ref:`labelled reference <some-target>` and a `link <https://example.com>`_ too.

For example, the code below is a literal block::

    int main(void)
    {
            return 0;
    }

This paragraph follows the literal block and is kept in the output.

.. code-block:: c

   static int the_code_block_is_dropped(void);

   return the_code_block_is_dropped();

.. note::

   The body of a note is kept because it is prose for the reader.

.. toctree::
   :maxdepth: 2

   intro
   usage

- A bullet item that is long enough
  to be joined with its continuation line.
- Another bullet item with **strong** and *emphasis* in it.

+----------+----------+
| a table  | is here  |
+----------+----------+

>>> print("a doctest is dropped")
a doctest is dropped

The end of the document is reached at this point [#]_.
"""


def test_rst_markup_and_code_blocks():
    lines = cleaned(mc.rst_to_paragraphs(RST_DOC))
    assert lines == [
        "The title of the page",
        "This is the first paragraph, which spans two lines and uses literal text, a kobject_init role, a "
        "labelled reference and a link too.",
        "For example, the code below is a literal block:",
        "This paragraph follows the literal block and is kept in the output.",
        "The body of a note is kept because it is prose for the reader.",
        "A bullet item that is long enough to be joined with its continuation line.",
        "Another bullet item with strong and emphasis in it.",
        "The end of the document is reached at this point.",
    ]
    text = " ".join(mc.rst_to_paragraphs(RST_DOC))
    for gone in ("SPDX", "return 0", "the_code_block_is_dropped", "maxdepth", "doctest", "a table", "===="):
        assert gone not in text


def test_rst_expanded_literal_marker():
    assert mc.rst_to_paragraphs("Run this ::\n\n    make all\n\nDone now.\n") == ["Run this", "Done now."]


# ---- POD -------------------------------------------------------------------------------------------------------------

POD_DOC = """=head1 NAME

perlfoo - the example page X<index entry>

=head1 DESCRIPTION

Use C<open> to open a file, see L<perlfunc/open> and L<the manual|perlop>, and compare
C<< lc >> results with E<lt> signs.

    my $verbatim = "this is code";
    print $verbatim;

=begin html

<p>raw html is dropped</p>

=end html

=over 4

=item The first item of the list

The body of the first item is an ordinary paragraph.

=back

=cut

sub not_pod { "after =cut this is code" }
"""


def test_pod():
    lines = cleaned(mc.pod_to_paragraphs(POD_DOC))
    assert lines == [
        "perlfoo - the example page",
        "Use open to open a file, see open and the manual, and compare lc results with < signs.",
        "The first item of the list",
        "The body of the first item is an ordinary paragraph.",
    ]
    text = " ".join(mc.pod_to_paragraphs(POD_DOC))
    for gone in ("index entry", "verbatim", "raw html", "not_pod"):
        assert gone not in text


# ---- dictd -----------------------------------------------------------------------------------------------------------

ABANDON = """Abandon \\A*ban"don\\ ([.a]*b[a^]n"d[u^]n), v. t. [imp. & p. p.
   {Abandoned}; p. pr. & vb. n. {Abandoning}.] [OF.
   abandoner.]
   1. To cast or drive out; to banish; to expel; to reject.
      [Obs.]
      [1913 Webster]

            That he might . . . abandon them from him. --Udall.
      [1913 Webster]

   2. To give up absolutely; to forsake entirely; to renounce
      utterly; to relinquish all connection with {C[ae]sar}.
      [1913 Webster]
"""
DOG = """Dog \\Dog\\, n.
   (Zool.) A quadruped of the genus {Canis}, esp. the domestic dog.
   [1913 Webster]

            What is thy servant, which is but a dog, that he
            should do this great thing?           -- 2 Kings
                                                  viii. 13
      [1913 Webster]
"""
HEADER = "00-database-short\n   A tiny test dictionary for the corpus builder\n"


def b64(n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    digits = ""
    while True:
        digits = alphabet[n % 64] + digits
        n //= 64
        if n == 0:
            return digits


def write_dictd(directory: Path, name: str = "tiny", entries=((("00-database-short",), HEADER),
                                                               (("Abandon", "abandon"), ABANDON),
                                                               (("Dog",), DOG))) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = b""
    index = []
    for heads, text in entries:
        raw = text.encode("utf-8")
        for h in heads:
            index.append(f"{h}\t{b64(len(data))}\t{b64(len(raw))}")
        data += raw
    with gzip.open(directory / f"{name}.dict.dz", "wb") as f:  # dictzip files are gzip files
        f.write(data)
    (directory / f"{name}.index").write_text("\n".join(sorted(index, key=str.lower, reverse=True)) + "\n")
    return directory / f"{name}.index"


def test_dictd_b64():
    assert mc.dictd_b64("A") == 0
    assert mc.dictd_b64("BA") == 64
    assert mc.dictd_b64("I79") == 8 * 64 * 64 + 59 * 64 + 61
    for n in (0, 1, 63, 64, 4095, 123456789):
        assert mc.dictd_b64(b64(n)) == n


def test_dictd_decoding_and_gcide_cleaning(tmp_path):
    index = write_dictd(tmp_path)
    heads = [h for h, _ in mc.read_dictd(index)]
    assert heads == [["Abandon", "abandon"], ["Dog"]]  # data-file order, the header skipped, headwords merged
    assert cleaned(mc.dictd_to_paragraphs(index)) == [
        "To cast or drive out; to banish; to expel; to reject.",
        "That he might . . . abandon them from him.",
        "To give up absolutely; to forsake entirely; to renounce utterly; to relinquish all connection with Caesar.",
        "A quadruped of the genus Canis, esp. the domestic dog.",
        "What is thy servant, which is but a dog, that he should do this great thing?",
    ]


def test_dictd_missing_data_file(tmp_path):
    (tmp_path / "lonely.index").write_text("word\tA\tB\n")
    with pytest.raises(mc.CorpusError, match="lonely.dict.dz"):
        list(mc.read_dictd(tmp_path / "lonely.index"))


def test_dictd_gcide_run_ons_and_marked_pronunciations():
    entry = ("malady \\mal\"a*dy\\ (m[a^]l\"[.a]*d[y^]), n.; pl. {Maladies}\n   (m[a^]l\"[.a]*d[i^]z). [F. maladie.]\n"
             "   1. Any disease of the human body; a distemper, disorder, or\n      indisposition. --\n"
             "   {Mal\"a*di*ous*ly}, adv.\n      [1913 Webster]\n")
    assert cleaned(mc.dict_entry_paragraphs(entry, ["Malady", "malady"])) == [
        "Any disease of the human body; a distemper, disorder, or indisposition."]


def test_dictd_foldoc_style_entry():
    entry = ("16550A\n\n   <hardware> A version of the {16550} {UART}.  Superseded by the\n   {16650} which is "
             "faster than it.\n\n   (2003-07-05)\n")
    assert cleaned(mc.dict_entry_paragraphs(entry, "16550A")) == [
        "A version of the 16550 UART. Superseded by the 16650 which is faster than it."]


# ---- WordNet, fortune, SWORD, plain text -----------------------------------------------------------------------------

def test_wordnet_gloss_and_examples():
    text = ("  1 This software and database is being provided to you, the LICENSEE, by Princeton\n"
            "00045646 04 n 02 rally 1 rallying 1 003 @ 00036762 n 0000 | the feat of mustering strength for a "
            'renewed effort; "he singled to start a rally in the 9th inning"; "he feared the rallying of their '
            'troops"  \n')
    assert mc.wordnet_to_paragraphs(text) == [
        "rally, rallying: the feat of mustering strength for a renewed effort.",
        "he singled to start a rally in the 9th inning",
        "he feared the rallying of their troops",
    ]


def test_fortune_entries():
    text = ("A clash of doctrine is not a disaster -- it is an opportunity.\n%\nThe state of some systems is\n"
            "worse than any other box in the room.\n\t\t-- Bernd Eckenfels\n%\n")
    assert cleaned(mc.fortune_to_paragraphs(text)) == [
        "A clash of doctrine is not a disaster -- it is an opportunity.",
        "The state of some systems is worse than any other box in the room.",
    ]


VERSES = [
    '<div type="book" osisID="Gen"/><title type="main">The Book of the Beginning</title>',
    '<w lemma="strong:H7225">In the beginning</w> <w lemma="strong:H0430">God</w> created the heavens and '
    'the earth<note placement="foot">a footnote that is dropped</note>.',
    "Now the earth was formless and empty, and darkness was on the surface of the deep.",
]


def write_sword(root: Path, name: str = "engtest") -> Path:
    """A minimal SWORD zText module: one compressed block holding the verses of the Old Testament."""
    data_dir = root / "usr/share/sword/modules/texts/ztext" / name
    data_dir.mkdir(parents=True)
    block = b""
    bzv = struct.pack("<IIH", 0, 0, 0)  # an empty entry, as in real modules
    for v in VERSES:
        raw = v.encode("utf-8")
        bzv += struct.pack("<IIH", 0, len(block), len(raw))
        block += raw
    comp = zlib.compress(block)
    (data_dir / "ot.bzz").write_bytes(comp)
    (data_dir / "ot.bzs").write_bytes(struct.pack("<III", 0, len(comp), len(block)))
    (data_dir / "ot.bzv").write_bytes(bzv)
    conf = root / "usr/share/sword/mods.d" / f"{name}.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(f"[{name}]\nDataPath=./modules/texts/ztext/{name}/\nModDrv=zText\nSourceType=OSIS\n"
                    "CompressType=ZIP\nLang=en\n")
    return conf


def test_sword_ztext(tmp_path):
    conf = write_sword(tmp_path)
    assert cleaned(mc.sword_to_paragraphs(conf)) == [
        "In the beginning God created the heavens and the earth.",
        "Now the earth was formless and empty, and darkness was on the surface of the deep.",
    ]


def test_plain_text_drops_code_paragraphs():
    text = ("Memory barriers are needed because the CPU may reorder the accesses.\n"
            "They are explained in the sections below.\n\n"
            "\tstruct foo *p = READ_ONCE(gp);\n\tif (p != NULL)\n\t\tdo_something(p->a);\n\n"
            "=====================\n\n"
            "The second paragraph of the text is also kept in the output.\n")
    assert cleaned(mc.text_to_paragraphs(text)) == [
        "Memory barriers are needed because the CPU may reorder the accesses. They are explained in the sections "
        "below.",
        "The second paragraph of the text is also kept in the output.",
    ]


# ---- filter, tokens, selection, licences -----------------------------------------------------------------------------

@pytest.mark.parametrize("line,keep", [
    ("The quick brown fox jumps over the lazy dog.", True),
    ("A mean, worthless fellow; a wretch.", True),
    ("Too short here", False),
    ("for (i = 0; i < n; i++) { total += x[i]; }", False),
    ("os.path.join(path, *paths) returns_value callable", False),
    ("Die Katze sitzt auf der Matte und schläft den ganzen Tag.", False),
    ("日本語のテキストはここにあります。これは英語ではありません。", False),
    ("12 34 56 78 90 12 34 56 of the", False),
    ("STORE *A = 5, x = LOAD *D x = LOAD *D, STORE *A = 5", False),
])
def test_keep_line(line, keep):
    assert mc.keep_line(mc.normalize(line)) is keep


def test_split_long():
    sentence = "The cat sat on the mat and looked at the dog. "
    para = (sentence * 50).strip()  # 50 sentences of 11 tokens: 9 sentences (99 tokens) a line
    pieces = mc.split_long(para, max_tokens=100)
    assert all(mc.count_tokens(p) <= 100 for p in pieces) and len(pieces) == 6
    assert " ".join(pieces) == para
    assert mc.split_long("Short one. Another.", max_tokens=100) == ["Short one. Another."]
    one = "word " * 50
    assert mc.split_long(one.strip(), max_tokens=10) == [one.strip()]  # no sentence end: left whole
    assert all(mc.count_tokens(l) <= mc.MAX_LINE_TOKENS for l in mc.clean_paragraphs([" ".join([para] * 4)]))


def test_normalize():
    assert mc.normalize("  don\u2019t\u00a0stop \ufb01ne\n  text\u00b6 ") == "don't stop fine text"


def _trainer_corpus_module():
    """The trainer's corpus module (it may live in sampledsoftmax.data or sampledsoftmax.embeddings)."""
    for mod in ("sampledsoftmax.data.corpus", "sampledsoftmax.embeddings.corpus"):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        return m
    pytest.skip("sampledsoftmax corpus module not importable")


def test_token_count_matches_trainer_default():
    corpus_mod = _trainer_corpus_module()
    line = "Don't panic: the café's 3 dogs — and O'Brien's cat — ran 10km!"
    assert mc.TOKEN_RE.pattern == corpus_mod.DEFAULT_TOKEN_PATTERN
    expected = corpus_mod.tokenize(line) if hasattr(corpus_mod, "tokenize") else None
    if expected is not None and isinstance(expected, list):
        assert mc.tokens(line) == expected
    assert mc.count_tokens(line) == len(mc.tokens(line))


@pytest.mark.parametrize("path,other", [
    ("usr/share/doc/debian-handbook/html/fr-FR/index.html", True),
    ("usr/share/doc/debian-handbook/html/en-US/index.html", False),
    ("usr/share/doc/apache2-doc/manual/de/mod/core.html", True),
    ("usr/share/doc/linux-doc-6.1/Documentation/translations/zh_CN/index.rst.gz", True),
    ("usr/share/doc/git-doc/git-log.html", False),
    ("usr/share/doc/linux-doc-6.1/Documentation/networking/device_drivers/cpm_qe/x.rst.gz", False),
    ("usr/share/debian-reference/index.en.html", False),
    ("usr/share/debian-reference/index.fr.html", True),
    ("usr/share/doc/python3.11/html/library/os.html.gz", False),
])
def test_is_other_language(path, other):
    assert mc.is_other_language(path) is other


DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: thing

Files: debian/*
License: GPL-2+

Files: *
Copyright: 2020 Someone
License: BSD-3-Clause
 Redistribution and use ...
"""


@pytest.mark.parametrize("text,licence", [
    (DEP5, "BSD-3-Clause"),
    ("GCIDE is free software; you can redistribute it under the terms of the GNU General Public License as "
     "published by the Free Software Foundation; either version 2, or (at your option) any later version.",
     "GPL-2+"),
    ("The Devil's Dictionary is in the public domain, its copyright has expired.", "public-domain"),
    ("PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2 ... GNU General Public License compatible", "PSF-2.0"),
    ("Nothing recognisable here.", "unknown (see copyright file)"),
])
def test_licence_from_copyright(text, licence):
    assert mc.licence_from_copyright(text) == licence


# ---- assembly: manifest, token counts, reproducibility, cap ----------------------------------------------------------

def make_packages(root: Path) -> list:
    """Two fake unpacked packages: a dictd dictionary and an HTML/reST documentation package."""
    dict_root = root / "dict-tiny"
    write_dictd(dict_root / "usr/share/dictd")
    (dict_root / "usr/share/doc/dict-tiny").mkdir(parents=True)
    (dict_root / "usr/share/doc/dict-tiny/copyright").write_text(
        "This dictionary is in the public domain.\n")
    doc_root = root / "tiny-doc"
    d = doc_root / "usr/share/doc/tiny-doc"
    (d / "html/sub").mkdir(parents=True)
    (d / "html/fr").mkdir(parents=True)
    (d / "html/_sources").mkdir(parents=True)
    (d / "copyright").write_text(DEP5)
    (d / "html/b.html").write_text(HTML_DOC)
    (d / "html/sub/a.html").write_text("<p>This page is read first because of its sorted path name.</p>"
                                       "<p>The first item of the list is here</p>")  # duplicate of a b.html line
    (d / "html/fr/c.html").write_text("<p>Ceci est une page en français qui est ignorée par le filtre.</p>")
    (d / "html/_sources/b.rst.txt").write_text(RST_DOC)
    with gzip.open(d / "html/z.html.gz", "wt") as f:
        f.write("<p>A compressed page is decompressed and read like the others are.</p>")
    return [("dict-tiny", dict_root, {"version": "1.0-1"}), ("tiny-doc", doc_root, {"version": "2:3.4-5"})]


def test_select_files(tmp_path):
    roots = make_packages(tmp_path)
    assert mc.select_files(roots[1][1], "tiny-doc") == [
        ("usr/share/doc/tiny-doc/html/b.html", "html"),
        ("usr/share/doc/tiny-doc/html/sub/a.html", "html"),
        ("usr/share/doc/tiny-doc/html/z.html.gz", "html"),
    ]
    assert mc.select_files(roots[0][1], "dict-tiny") == [("usr/share/dictd/tiny.index", "dictd")]


def test_manifest_and_token_counts(tmp_path):
    out = tmp_path / "out"
    manifest = mc.build_from_dirs(out, make_packages(tmp_path / "pkgs"))
    corpus = (out / "corpus.txt").read_text(encoding="utf-8")
    lines = corpus.splitlines()
    assert corpus.endswith("\n") and all(l.strip() == l and l for l in lines)
    assert len(lines) == len(set(lines))  # corpus-wide dedup
    total = sum(mc.count_tokens(l) for l in lines)
    assert manifest["total_tokens"] == total == sum(p["tokens"] for p in manifest["packages"])
    assert manifest["total_lines"] == len(lines) == sum(p["lines"] for p in manifest["packages"])
    assert manifest["corpus"]["sha256"] == hashlib.sha256((out / "corpus.txt").read_bytes()).hexdigest()
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    by_name = {p["package"]: p for p in manifest["packages"]}
    assert by_name["dict-tiny"]["licence"] == "public-domain"
    assert by_name["tiny-doc"]["licence"] == "BSD-3-Clause"
    assert by_name["tiny-doc"]["version"] == "2:3.4-5"
    assert by_name["tiny-doc"]["duplicates_dropped"] == 1
    files = by_name["tiny-doc"]["files"]
    assert [f[0] for f in files] == ["usr/share/doc/tiny-doc/html/b.html", "usr/share/doc/tiny-doc/html/sub/a.html",
                                     "usr/share/doc/tiny-doc/html/z.html.gz"]
    assert sum(f[3] for f in files) == by_name["tiny-doc"]["tokens"]
    assert lines[0] == "To cast or drive out; to banish; to expel; to reject."  # package order kept
    assert "français" not in corpus and "kobject_init" not in corpus  # other language, _sources duplicate
    sources = (out / "SOURCES.md").read_text()
    assert "| dict-tiny | 1.0-1 | public-domain |" in sources
    assert "| tiny-doc | 2:3.4-5 | BSD-3-Clause | 3 html |" in sources
    assert f"**{total:,}**" in sources
    assert "dict-tiny=1.0-1,tiny-doc=2:3.4-5" in manifest["reproduce"]


def test_reproducible(tmp_path):
    roots = make_packages(tmp_path / "pkgs")
    mc.build_from_dirs(tmp_path / "a", roots)
    mc.build_from_dirs(tmp_path / "b", roots, jobs=2)
    for name in ("corpus.txt", "manifest.json", "SOURCES.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_max_tokens_cap(tmp_path):
    roots = make_packages(tmp_path / "pkgs")
    full = mc.build_from_dirs(tmp_path / "full", roots)
    cap = full["packages"][0]["tokens"] + 5
    capped = mc.build_from_dirs(tmp_path / "cap", roots, max_tokens=cap)
    assert capped["total_tokens"] <= cap
    assert capped["packages"][0]["tokens"] == full["packages"][0]["tokens"]
    assert capped["packages"][1]["truncated"] is True
    full_lines = (tmp_path / "full/corpus.txt").read_text().splitlines()
    cap_lines = (tmp_path / "cap/corpus.txt").read_text().splitlines()
    assert cap_lines == full_lines[: len(cap_lines)]
    assert sum(mc.count_tokens(l) for l in cap_lines) == capped["total_tokens"]


def test_trainer_reads_the_corpus(tmp_path):
    corpus_mod = _trainer_corpus_module()
    mc.build_from_dirs(tmp_path / "out", make_packages(tmp_path / "pkgs"))
    enc = corpus_mod.load_corpus(tmp_path / "out" / "corpus.txt", min_count=1)
    assert enc is not None


# ---- CLI errors and an offline end-to-end run ------------------------------------------------------------------------

def test_error_unknown_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mc, "apt_lists_present", lambda: True)
    monkeypatch.setattr(mc, "apt_candidates", lambda names: {n: None for n in names})
    monkeypatch.setattr(mc.shutil, "which", lambda name: "/usr/bin/" + name)
    rc = mc.main([str(tmp_path / "out"), "--packages", "no-such-package-xyz", "--download-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "no-such-package-xyz" in err[0] and "apt-get update" in err[0]


def test_error_download_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mc, "apt_lists_present", lambda: True)
    monkeypatch.setattr(mc, "apt_candidates", lambda names: {n: "1.0" for n in names})
    monkeypatch.setattr(mc.shutil, "which", lambda name: "/usr/bin/" + name)
    real_run = mc._run

    def fake_run(cmd, cwd=None):
        if cmd[:2] == ["apt-get", "download"]:
            return subprocess.CompletedProcess(cmd, 100, "", "E: Failed to fetch http://deb/x.deb  404 Not Found\n")
        return real_run(cmd, cwd)

    monkeypatch.setattr(mc, "_run", fake_run)
    rc = mc.main([str(tmp_path / "out"), "--packages", "dict-gone", "--download-dir", str(tmp_path), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("error: apt-get download dict-gone failed") and "404 Not Found" in err[0]


def test_error_bad_package_name(tmp_path, capsys):
    assert mc.main([str(tmp_path), "--packages", "Bad Name!"]) == 2
    assert capsys.readouterr().err.startswith("error: --packages")


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_end_to_end_from_local_deb(tmp_path, monkeypatch):
    pkg = tmp_path / "build" / "tiny-data"  # no entry in PACKAGE_SPECS: generic rules find dictd and SWORD data
    write_dictd(pkg / "usr/share/dictd")
    (pkg / "usr/share/doc/tiny-data").mkdir(parents=True)
    (pkg / "usr/share/doc/tiny-data/copyright").write_text(DEP5)
    write_sword(pkg)
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN/control").write_text("Package: tiny-data\nVersion: 1:0.1-2\nArchitecture: all\n"
                                        "Maintainer: Test <test@example.com>\nDescription: tiny test dictionary\n")
    debs = tmp_path / "debs"
    debs.mkdir()
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(pkg), str(debs / "tiny-data_0.1-2_all.deb")],
                   check=True, capture_output=True)
    # apt knows nothing about it (as on a machine without the package lists): the .deb in --download-dir is used
    monkeypatch.setattr(mc, "apt_lists_present", lambda: True)
    monkeypatch.setattr(mc, "apt_candidates", lambda names: {n: None for n in names})
    outs = []
    for name in ("one", "two"):
        assert mc.main([str(tmp_path / name), "--packages", "tiny-data", "--download-dir", str(debs), "-q"]) == 0
        outs.append(tmp_path / name)
    manifest = json.loads((outs[0] / "manifest.json").read_text())
    (p,) = manifest["packages"]
    assert p["version"] == "1:0.1-2" and p["licence"] == "BSD-3-Clause"
    assert p["deb_sha256"] == hashlib.sha256((debs / "tiny-data_0.1-2_all.deb").read_bytes()).hexdigest()
    assert p["kinds"] == {"dictd": 1, "sword": 1}
    lines = (outs[0] / "corpus.txt").read_text().splitlines()
    assert "In the beginning God created the heavens and the earth." in lines
    assert "A quadruped of the genus Canis, esp. the domestic dog." in lines
    for name in ("corpus.txt", "manifest.json", "SOURCES.md"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
