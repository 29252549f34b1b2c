"""Language models on real text: exact held-out bits per byte checked by brute force at two BPE vocabulary sizes and
at word level, and a tiny LM sweep (BPE on a text the test makes) run end to end with its curves read back."""

from __future__ import annotations

import csv
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("tokenizers", reason="the LM's BPE needs the tokenizers package (pip install 'sampledsoftmax[lm]')")

from sampledsoftmax.cli import main  # noqa: E402
from sampledsoftmax.experiments.sweep import run_sweep  # noqa: E402
from sampledsoftmax.lm.config import load_lm_config  # noqa: E402
from sampledsoftmax.lm.data import eval_batches  # noqa: E402
from sampledsoftmax.lm.tokenize import heldout_lines  # noqa: E402
from sampledsoftmax.lm.train import LMTask, build_lm_data  # noqa: E402
from sampledsoftmax.training.distributed import init_from_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("the of and a to in is was for on that with as by at from his it an were are which this be "
         "river mountain city music game player language system theory station school war king church").split()


def _text(path: Path, lines: int = 1500, seed: int = 0) -> Path:
    """Sentences of Zipf-distributed words with punctuation, capitals and a few accented words: real-looking text."""
    rng = random.Random(seed)
    weights = [1 / (k + 1) for k in range(len(WORDS))]
    out = []
    for _ in range(lines):
        words = rng.choices(WORDS, weights, k=rng.randint(4, 14))
        if rng.random() < 0.1:
            words.append(rng.choice(["café", "naïve", "Zürich", "北京"]))
        out.append(" ".join(words).capitalize() + rng.choice([".", ",", "!", "?"]))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def _cfg(tmp_path, corpus, *extra):
    return load_lm_config(None, [f"runs_root={tmp_path}", "name=lm", f"data.corpus={corpus}", "data.seq_len=16",
                                 "model.dim=16", "optim.batch_size=8", "train.max_steps=3", "train.device=cpu",
                                 "data.heldout_fraction=0.05", "loss.name=full", "eval.batch_size=4", *extra])


@pytest.mark.parametrize("tokenizer", [("bpe", 300), ("bpe", 400), ("word", 30)], ids=["bpe300", "bpe400", "word30"])
def test_bits_per_byte_equals_the_brute_force_sum_over_the_heldout_text(tmp_path, tokenizer):
    kind, v = tokenizer
    corpus = _text(tmp_path / "c.txt")
    cfg = _cfg(tmp_path, corpus, f"data.tokenizer={kind}", f"data.vocab_size={v}")
    data = build_lm_data(cfg)
    ddp, device = init_from_env("cpu")
    torch.manual_seed(0)
    task = LMTask(cfg, data, ddp, device)
    with torch.no_grad():  # a model that is not uniform: random output table
        task.loss_fn.weight.normal_(0, 0.5)
    got = task.evaluate(0)
    # brute force: the evaluation's windows, full logits, log-softmax, the NLL of every real target summed in bits
    task.model.eval()
    nll = 0.0
    with torch.no_grad():
        for x, y in eval_batches(data.heldout, cfg.eval.batch_size, cfg.data.seq_len):
            logits = task.model(x) @ task.loss_fn.weight.T  # (B, T, V)
            if task.loss_fn.bias is not None:
                logits = logits + task.loss_fn.bias
            real = y != -100
            nll -= torch.log_softmax(logits.double(), -1)[real].gather(1, y[real][:, None]).sum().item()
    # ... over the held-out text's bytes, counted from the text itself, less the first token's (never a target)
    _, held = heldout_lines(corpus, cfg.data.heldout_fraction, cfg.train.seed)
    if kind == "bpe":  # lossless: every byte of the held-out lines and their newlines
        text_bytes = sum(len(line.encode("utf-8")) + 1 for line in held)
    else:  # words and punctuation, single-spaced: the text the tokens reconstruct
        tokens = [re.findall(r"\w+|[^\w\s]", line.lower()) for line in held]
        text_bytes = sum(len(" ".join(t).encode("utf-8")) + 1 for t in tokens if t)
    text_bytes -= int(data.heldout_bytes[0])
    assert got["eval/tokens"] == len(data.heldout) - 1
    assert got["eval/bytes"] == text_bytes
    assert got["eval/bpb"] == pytest.approx(nll / math.log(2) / text_bytes, rel=1e-6)
    assert 0 < got["eval/bpb"] < 20


def test_bits_per_byte_compares_across_vocabularies_on_the_same_bytes(tmp_path):
    corpus = _text(tmp_path / "c.txt")
    totals = set()
    for v in (300, 400):
        data = build_lm_data(_cfg(tmp_path, corpus, "data.tokenizer=bpe", f"data.vocab_size={v}"))
        assert len(data.words) == v
        totals.add(int(data.heldout_bytes.sum()))
    assert len(totals) == 1  # the same held-out text, whatever V


def test_word_level_keeps_every_token(tmp_path):
    corpus = _text(tmp_path / "c.txt")
    data = build_lm_data(_cfg(tmp_path, corpus, "data.tokenizer=word", "data.vocab_size=20"))
    _, held = heldout_lines(corpus, 0.05, 0)
    n_tokens = sum(len(re.findall(r"\w+|[^\w\s]", line.lower())) + 1 for line in held)  # + end of line
    assert len(data.heldout) == n_tokens  # out-of-vocabulary words are <unk>, not dropped
    assert data.stats["heldout_oov_rate"] > 0


def test_a_tiny_lm_sweep_runs_end_to_end_and_its_curves_read_back(tmp_path):
    corpus = _text(tmp_path / "c.txt", lines=2000)
    spec = {"name": "lm_tiny", "task": "lm", "out_dir": str(tmp_path / "sweep"),
            "base": [f"data.corpus={corpus}", "data.tokenizer=bpe", "data.heldout_fraction=0.05", "data.seq_len=16",
                     "model.dim=16", "model.tie_weights=false", "loss.sparse=true", "optim.batch_size=8",
                     "train.max_steps=12", "train.device=cpu", "eval.every=1000000", "eval.curve_points=3",
                     "eval.batch_size=8", "train.log_every=4"],
            "grid": [{"loss.name": ["full", "sampled"], "data.vocab_size": [300, 400]}]}
    path = tmp_path / "lm_tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    rows = run_sweep(path, quiet=True)
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), rows
    assert sorted(int(r["V"]) for r in rows) == [300, 300, 400, 400]
    for r in rows:
        assert float(r["bpb"]) > 0 and float(r["tokens_per_sec"]) > 0 and r["task"] == "lm"
        assert float(r["tokenizer_s"]) >= 0
    with open(tmp_path / "sweep" / "curves.csv", newline="") as f:
        points = list(csv.DictReader(f))
    assert len(points) == 4 * 4  # step 0 and 3 curve points per cell
    assert all(float(p["bpb"]) > 0 for p in points)
    for r in rows:  # time to target in bits per byte
        assert r["target"] not in ("", None)
    assert (tmp_path / "sweep" / "curves.png").is_file()
    with open(tmp_path / "sweep" / "references.csv", newline="") as f:
        refs = {(r["reference"], r["V"]): float(r["bpb"]) for r in csv.DictReader(f)}
    assert {name for name, _ in refs} == {"unigram", "kneser_ney_3", "gzip", "bz2", "xz", "gzip_alone", "bz2_alone",
                                          "xz_alone"}
    for v in ("300", "400"):
        # every cell starts at the unigram model (the output bias holds its log-frequencies): its step-0 point
        starts = [float(p["bpb"]) for p in points if p["step"] == "0" and p["V"] == v and p["loss"] == "sampled"]
        assert starts and all(abs(b - refs[("unigram", v)]) < 0.05 for b in starts), (starts, refs)
        assert refs[("kneser_ney_3", v)] < refs[("unigram", v)]  # the trigram model knows the text's repetitions
    # the README's tables come from this script
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "results_lm_tables.py"), str(tmp_path / "sweep")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("**V = ") == 2 and "kneser_ney_3" in out.stdout and "| full |" in out.stdout
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "results_lm_tables.py"), "--converged",
                          str(tmp_path / "sweep")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    full_row = [line for line in out.stdout.splitlines() if line.startswith("| full |")]
    assert out.stdout.count("**V = ") == 2 and len(full_row) == 2 and all("| +0.000 |" in r for r in full_row)
    # the tokenizer ran once per V (cached for the second loss)
    caches = list((tmp_path / "sweep" / "runs" / ".cache").glob("*"))
    assert caches


@pytest.mark.parametrize("overrides, fragment", [
    (["data.tokenizer=bpe", "data.vocab_size=1000000"], "vocab_size"),
    (["data.tokenizer=bpe"], "needs data.vocab_size"),
    (["data.tokenizer=nope"], "data.tokenizer"),
])
def test_lm_text_mistakes_are_one_error_line(tmp_path, capsys, overrides, fragment):
    corpus = _text(tmp_path / "c.txt", lines=300)
    argv = ["train-lm", "--quiet", "--set", f"runs_root={tmp_path}", "--set", f"data.corpus={corpus}",
            *[a for o in overrides for a in ("--set", o)]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and fragment in err[0], err
