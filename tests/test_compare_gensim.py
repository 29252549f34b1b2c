"""scripts/compare_gensim.py end to end on a tiny generated corpus: both rows present, numbers finite, vocabularies
identical (the script gives gensim exactly the sentences our trainer trains on)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tiny_corpus(path: Path) -> None:
    """~25k tokens over words of WordSim-353 and of the first analogy section, in topic-coherent sentences, so that
    both evaluations have known words (finite numbers)."""
    from gensim.test.utils import datapath

    pairs = [line.split("\t")[:2] for line in Path(datapath("wordsim353.tsv")).read_text().splitlines()[2:60]]
    analog = [line.split() for line in Path(datapath("questions-words.txt")).read_text().splitlines()[1:40]]
    topics = [[a.lower(), b.lower()] for a, b in pairs] + [[w.lower() for w in q] for q in analog]
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(2500):
        topic = topics[rng.integers(len(topics))]
        other = topics[rng.integers(len(topics))]
        words = [topic[i] for i in rng.integers(len(topic), size=6)]
        words += [other[i] for i in rng.integers(len(other), size=4)]
        lines.append(" ".join(rng.permutation(words)))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _number(cell: str) -> float:
    return float(cell.strip().lstrip("~").replace(",", ""))


def test_compare_gensim_end_to_end(tmp_path):
    pytest.importorskip("gensim")
    corpus = tmp_path / "tiny.txt"
    _tiny_corpus(corpus)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compare_gensim.py"), "--corpus", str(corpus), "--epochs", "1",
         "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (out / "results.md").read_text()
    assert text.split("\n\n")[0] in proc.stdout  # the table is printed too
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] in ("gensim", "ours"):
            rows[cells[0]] = cells
    assert set(rows) == {"gensim", "ours"}, text
    for name, cells in rows.items():
        epochs, vocab, vocab_s, train_s, words_s, ratio, pairs_s, wordsim, analogy = map(_number, cells[1:])
        assert epochs == 1
        assert vocab == rows["gensim"][2] or vocab == _number(rows["gensim"][2])
        for value in (vocab_s, train_s, words_s, ratio, pairs_s, wordsim, analogy):
            assert math.isfinite(value), (name, cells)
        assert train_s > 0 and words_s > 0 and pairs_s > 0
        assert -1 <= wordsim <= 1 and 0 <= analogy <= 1
    assert _number(rows["gensim"][6]) == 1.0  # the ratio column is relative to gensim

    result = json.loads((out / "results.json").read_text())
    assert result["vocab_identical"], result["notes"]
    g, o = result["runs"]
    assert g["method"] == "gensim" and o["method"] == "ours"
    assert g["analogy_answered"] > 0 and o["analogy_answered"] == g["analogy_answered"]
    # words/s is raw words per epoch x epochs / train s, the same numerator for both
    for row in result["rows"]:
        assert row["words_per_s"] * row["train_s"] == pytest.approx(g["raw_words_per_epoch"], rel=1e-9)
    # our pairs come from the trainer's own log: about one batch of 1024 per step
    assert o["pairs"] == pytest.approx(o["steps"] * 1024, rel=0.05)
