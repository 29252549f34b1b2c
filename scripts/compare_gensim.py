#!/usr/bin/env python
"""Side by side on this machine: gensim's skip-gram with negative sampling and ours, same corpus, same settings.

    .venv/bin/python scripts/compare_gensim.py --epochs 5 --repeats 3 --ours-threads default,1 --out runs/compare_gensim

Both train gensim's/word2vec's defaults on the same sentences: skip-gram, negative=5 (unigram^0.75), window=5
(reduced window), vector_size=100, min_count=5, sample=1e-3, alpha 0.025 -> 0.0001 linearly, the same epochs;
gensim with ``workers`` threads (default 2), ours through the CLI (``sampledsoftmax train configs/text8.yaml --set
...``, then ``sampledsoftmax export``), as a user runs it. Runs alternate (gensim, ours, gensim, ours, ...) and the
table holds the medians. ``--ours-threads default,1`` adds a row for our trainer with one torch thread
(OMP_NUM_THREADS=1): its steps are small ops, and two OpenMP threads stall whenever another process holds a core.

The corpus is tokenised once by our tokenizer (lowercase, ``[a-z']+``), cut into sentences of at most 10,000
tokens (gensim truncates longer ones, we split them) and written one sentence a line to OUT/corpus.txt: our trainer
reads that file. Our trainer holds out 1% of the sentences for its exact evaluation; gensim is given exactly the other
99% (the held-out choice is recomputed here as ``sampledsoftmax.data.corpus`` makes it, and checked: both
vocabularies must come out identical, words and counts, else the table says so).

Measured:
- train s: training only. gensim: ``model.train()``. Ours: the sum of the trainer's own per-interval timings
  (``perf/step_ms`` in its TensorBoard log, every ``train.log_every`` steps; they exclude evaluation, and the last
  partial interval is extrapolated at the median step time), i.e. pair generation + forward + backward + SGD step.
- vocab s: building the vocabulary (gensim: ``build_vocab``; ours: ``load_corpus`` without cache, the same work
  the trainer does before its first step). Reported apart.
- words/s: gensim's raw words per epoch (every token of the training sentences, out-of-vocabulary ones included:
  ``model.corpus_total_words``) x epochs / train s. The same numerator for both.
- pairs/s (ours): skip-gram pairs trained / train s. gensim's column is the same pair count divided by its time
  (marked ~): it draws the same expected number of pairs (same subsampling and window rules), but does not count them.
- WordSim-353 Spearman and Google-analogy accuracy by gensim's own ``evaluate_word_pairs`` /
  ``evaluate_word_analogies`` (restrict_vocab=30000) on both KeyedVectors; ours loaded from the exported
  word2vec file.

Corpora: ``--corpus head500`` (default) is gensim's test corpus ``head500.noblanks.cor`` (331k words of Wikipedia,
stemmed: "anarch", "philosophi", so most WordSim/analogy words are out of vocabulary); ``--corpus enwiki`` extracts
the plain text of gensim's test Wikipedia dump (``enwiki-...-shortened.bz2``, 106 articles, ~450k words, not stemmed)
with gensim's WikiCorpus; any other value is a path to a plain-text file. Nothing is downloaded.

Writes OUT/results.md (the table and notes), OUT/results.json (every run), OUT/runs/ (our runs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a checkout without installing

from sampledsoftmax.data import corpus as corpus_mod  # noqa: E402

MAX_SENTENCE = corpus_mod.MAX_SENTENCE_TOKENS  # 10,000: gensim's MAX_WORDS_IN_BATCH
HELDOUT_FRACTION = 0.01  # configs/text8.yaml's data.heldout_fraction
SEED = 0  # our train.seed; the held-out split depends on it
RESTRICT = 30_000
LOG_EVERY = 50  # our train.log_every: the timing intervals (fewer steps: a tenth of the run)

# gensim's Word2Vec arguments, and ours with the same meaning (configs/text8.yaml sets most of them already)
GENSIM_ARGS = dict(sg=1, hs=0, negative=5, ns_exponent=0.75, window=5, vector_size=100, min_count=5, sample=1e-3,
                   alpha=0.025, min_alpha=0.0001)
OUR_OVERRIDES = ["loss.name=negative", "loss.sampler=unigram", "loss.num_sampled=5", "loss.ns_exponent=0.75",
                 "data.window=5", "data.dynamic_window=true", "model.dim=100", "data.min_count=5", "data.sample=0.001",
                 "optim.name=sgd", "optim.alpha=0.025", "optim.min_alpha=0.0001", "optim.batch_size=1024",
                 "data.lowercase=true", "data.token_pattern=[a-z']+", f"data.heldout_fraction={HELDOUT_FRACTION}",
                 f"train.seed={SEED}", "train.device=cpu",
                 "eval.every=1000000000",  # evaluate at the start and the end only
                 "eval.wordsim=gensim", "eval.simlex=null", "eval.analogy=gensim", f"eval.analogy_restrict={RESTRICT}"]


# ------------------------------------------------------------------------------------------------------ corpus


def gensim_test_file(name: str) -> Path:
    from gensim.test.utils import datapath

    return Path(datapath(name))


def source_text(spec: str, out: Path) -> Path:
    """The corpus named by --corpus as a plain-text file."""
    if spec == "head500":
        return gensim_test_file("head500.noblanks.cor")
    if spec == "enwiki":
        target = out / "enwiki.txt"
        if not target.is_file():
            from gensim.corpora.wikicorpus import WikiCorpus

            dump = gensim_test_file("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
            wiki = WikiCorpus(str(dump), dictionary={}, processes=1)
            tmp = target.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                for tokens in wiki.get_texts():  # one article a line
                    f.write(" ".join(tokens) + "\n")
            os.replace(tmp, target)
        return target
    path = Path(spec)
    if not path.is_file():
        raise SystemExit(f"error: --corpus {spec!r} is neither head500, enwiki nor a file")
    return path


def prepare_sentences(src: Path, out: Path) -> tuple[list[list[str]], Path]:
    """Tokenise `src` with our tokenizer, one sentence per line of at most MAX_SENTENCE tokens; write OUT/corpus.txt.

    Returns all sentences (in file order) and the path. Re-tokenising corpus.txt gives the same sentences."""
    sentences = []
    with open(src, encoding="utf-8", errors="replace") as f:
        for line in f:
            tokens = corpus_mod.tokenize(line)
            for i in range(0, len(tokens), MAX_SENTENCE):
                sentences.append(tokens[i:i + MAX_SENTENCE])
    if not sentences:
        raise SystemExit(f"error: corpus {src} has no tokens")
    path = out / "corpus.txt"
    path.write_text("".join(" ".join(s) + "\n" for s in sentences), encoding="utf-8")
    return sentences, path


def training_sentences(sentences: list[list[str]]) -> list[list[str]]:
    """The sentences our trainer trains on: all but its held-out ones (corpus.py's choice, recomputed)."""
    n = len(sentences)
    k = corpus_mod._heldout_count(n, HELDOUT_FRACTION)
    held = np.zeros(n, dtype=bool)
    held[np.random.default_rng([SEED, corpus_mod._HELDOUT_TAG]).choice(n, size=k, replace=False)] = True
    return [s for s, h in zip(sentences, held) if not h]


# ------------------------------------------------------------------------------------------------------ evaluation


def evaluate_kv(kv) -> dict:
    """WordSim-353 Spearman and Google analogy accuracy by gensim's own code (restrict_vocab=RESTRICT)."""
    import logging

    logging.getLogger("gensim").setLevel(logging.ERROR)
    pearson, spearman, oov_pct = kv.evaluate_word_pairs(str(gensim_test_file("wordsim353.tsv")),
                                                        restrict_vocab=RESTRICT)
    acc, sections = kv.evaluate_word_analogies(str(gensim_test_file("questions-words.txt")), restrict_vocab=RESTRICT)
    total = sections[-1]
    answered = len(total["correct"]) + len(total["incorrect"])
    return {"wordsim": float(spearman[0]), "wordsim_oov_pct": float(oov_pct),
            "analogy": float(acc), "analogy_answered": answered}


# ------------------------------------------------------------------------------------------------------ gensim


def run_gensim(sentences: list[list[str]], epochs: int, workers: int, seed: int) -> dict:
    from gensim.models import Word2Vec

    model = Word2Vec(workers=workers, epochs=epochs, seed=seed, **GENSIM_ARGS)
    t0 = time.perf_counter()
    model.build_vocab(sentences)
    t1 = time.perf_counter()
    effective, raw = model.train(sentences, total_examples=model.corpus_count, epochs=epochs)
    t2 = time.perf_counter()
    wv = model.wv
    return {"method": "gensim", "vocab_s": t1 - t0, "train_s": t2 - t1, "raw_words": int(raw),
            "raw_words_per_epoch": int(model.corpus_total_words), "effective_words": int(effective),
            "vocab_size": len(wv), "vocab": {w: int(wv.get_vecattr(w, "count")) for w in wv.index_to_key},
            **evaluate_kv(wv)}


# ------------------------------------------------------------------------------------------------------ ours


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def train_seconds(scalars: dict, total_steps: int, batch_size: int) -> tuple[float, int]:
    """(training seconds, pairs) from the trainer's per-interval perf/step_ms and perf/pairs_per_sec."""
    step_ms = scalars["perf/step_ms"]
    pps = dict(scalars["perf/pairs_per_sec"])
    seconds, pairs, prev = 0.0, 0.0, 0
    for step, ms in step_ms:
        dt = (step - prev) * ms / 1000
        seconds += dt
        pairs += pps[step] * dt
        prev = step
    rest = total_steps - prev  # the last partial interval is not logged
    seconds += rest * statistics.median(ms for _, ms in step_ms) / 1000
    pairs += rest * batch_size
    return seconds, int(round(pairs))


def run_ours(corpus_path: Path, epochs: int, out: Path, tag: str, threads: str = "default",
             log_every: int = 50, extra: tuple = (), batch_size: int = 1024) -> dict:
    exe = [sys.executable, "-m", "sampledsoftmax"]
    overrides = [f"data.corpus={corpus_path}", f"train.epochs={epochs}", f"name={tag}", f"runs_root={out / 'runs'}",
                 f"data.cache_dir={out / 'cache'}", *OUR_OVERRIDES, f"train.log_every={log_every}", *extra]
    cmd = [*exe, "train", str(ROOT / "configs" / "text8.yaml"), "--quiet"]
    for o in overrides:
        cmd += ["--set", o]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if threads != "default":  # torch's intra-op threads (the trainer has no key for it)
        env["OMP_NUM_THREADS"] = threads
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"error: our trainer failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    m = re.search(r"^run: (.+?)  step (\d+)  (.*)$", proc.stdout, re.M)
    if not m:
        raise SystemExit(f"error: cannot parse the trainer's output:\n{proc.stdout}")
    run_dir, steps = Path(m.group(1)), int(m.group(2))
    in_trainer = dict(kv.split("=", 1) for kv in m.group(3).split())
    seconds, pairs = train_seconds(_scalars(run_dir), steps, batch_size)
    from sampledsoftmax.training.checkpoint import load_checkpoint

    # the trainer's own clock of the steps alone (pair generation excluded), where it keeps one: a cross-check
    steps_only_s = load_checkpoint(run_dir / "last.pt").get("train_seconds")
    vec = run_dir / "vectors.bin"
    exp = subprocess.run([*exe, "export", str(run_dir), "--format", "word2vec-binary", "--out", str(vec)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    if exp.returncode != 0:
        raise SystemExit(f"error: export failed:\n{exp.stdout}\n{exp.stderr}")
    from gensim.models import KeyedVectors

    kv = KeyedVectors.load_word2vec_format(str(vec), binary=True, fvocab=str(vec) + ".vocab")
    method = "ours" if threads == "default" else f"ours (torch threads={threads})"
    if extra:
        method += " " + " ".join(extra)
    return {"method": method, "cli_wall_s": wall, "train_s": seconds, "steps_only_s": steps_only_s, "steps": steps,
            "pairs": pairs,
            "run_dir": str(run_dir), "vocab_size": len(kv),
            "vocab": {w: int(kv.get_vecattr(w, "count")) for w in kv.index_to_key},
            "in_trainer_wordsim": float(in_trainer.get("eval/wordsim", "nan")),
            "in_trainer_analogy": float(in_trainer.get("eval/analogy", "nan")),
            **evaluate_kv(kv)}


def our_vocab_seconds(corpus_path: Path, epochs: int, batch_size: int = 1024) -> tuple[float, int]:
    """Building our vocabulary and encoded corpus (load_corpus, no cache): what the trainer does before step 0.
    Also returns the number of steps the run will take (the trainer's own count: epochs x batches of epoch 0)."""
    from sampledsoftmax.embeddings.pairs import SkipGramPairs

    t0 = time.perf_counter()
    enc = corpus_mod.load_corpus(corpus_path, min_count=5, heldout_fraction=HELDOUT_FRACTION, seed=SEED,
                                 cache_dir=None)
    seconds = time.perf_counter() - t0
    pairs = SkipGramPairs(enc.ids, enc.vocab.counts, window=5, sample=1e-3, batch_size=batch_size, seed=SEED)
    return seconds, epochs * pairs.num_batches(0)


# ------------------------------------------------------------------------------------------------------ report


def _fmt(x: float, spec: str) -> str:
    return "nan" if x is None or not math.isfinite(x) else format(x, spec)


def summarise(runs: list[dict], epochs: int) -> list[dict]:
    """Median over repeats per method (gensim first), plus the derived rates."""
    methods = list(dict.fromkeys(r["method"] for r in runs))
    g = [r for r in runs if r["method"] == "gensim"]
    words = g[0]["raw_words_per_epoch"] * epochs
    pairs = statistics.median(r["pairs"] for r in runs if "pairs" in r)  # ours: every variant trains the same pairs
    rows = []
    for name in methods:
        rs = [r for r in runs if r["method"] == name]
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        train_s = med("train_s")
        rows.append({"method": name, "epochs": epochs, "vocab_size": rs[0]["vocab_size"], "vocab_s": med("vocab_s"),
                     "train_s": train_s, "words_per_s": words / train_s, "pairs_per_s": pairs / train_s,
                     "pairs_exact": name != "gensim", "wordsim": med("wordsim"), "analogy": med("analogy"),
                     "runs": len(rs)})
    for r in rows:
        r["ratio"] = r["words_per_s"] / rows[0]["words_per_s"]
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| method | epochs | vocab | vocab s | train s | words/s | ratio to gensim | pairs/s | WordSim ρ | "
            "analogy acc |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    lines = []
    for r in rows:
        pairs = _fmt(r["pairs_per_s"], ",.0f") if r["pairs_exact"] else "~" + _fmt(r["pairs_per_s"], ",.0f")
        lines.append(f"| {r['method']} | {r['epochs']} | {r['vocab_size']:,} | {_fmt(r['vocab_s'], '.2f')} | "
                     f"{_fmt(r['train_s'], '.2f')} | {_fmt(r['words_per_s'], ',.0f')} | {_fmt(r['ratio'], '.3f')} | "
                     f"{pairs} | {_fmt(r['wordsim'], '.3f')} | {_fmt(r['analogy'], '.4f')} |")
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default="head500",
                   help="head500 (gensim's test corpus, default), enwiki (gensim's test Wikipedia dump), or a path")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=1, help="alternating runs of each (default: 1); medians reported")
    p.add_argument("--workers", type=int, default=2, help="gensim's worker threads (default: 2)")
    p.add_argument("--ours-threads", default="default",
                   help="comma-separated torch thread counts for our trainer, one table row each; 'default' is "
                        "torch's own choice (e.g. default,1)")
    p.add_argument("--ours-set", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra --set for our trainer (repeatable), e.g. train.fused=false for the autograd path")
    p.add_argument("--dim", type=int, default=100, help="vector size, both trainers (default: 100)")
    p.add_argument("--batch-size", type=int, default=1024,
                   help="our optim.batch_size: pairs per step (the compiled SGNS step updates pair by pair, so this "
                        "is only its block size; default: 1024)")
    p.add_argument("--out", default="runs/compare_gensim")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1 or args.workers < 1 or args.dim < 1 or args.batch_size < 1:
        raise SystemExit("error: --epochs, --repeats, --workers, --dim and --batch-size must be >= 1")
    GENSIM_ARGS["vector_size"] = args.dim
    OUR_OVERRIDES[:] = [o for o in OUR_OVERRIDES if not o.startswith(("model.dim=", "optim.batch_size="))] + [
        f"model.dim={args.dim}", f"optim.batch_size={args.batch_size}"]
    variants = [t.strip() for t in args.ours_threads.split(",") if t.strip()]
    if not variants or any(t != "default" and not (t.isdigit() and int(t) >= 1) for t in variants):
        raise SystemExit(f"error: --ours-threads {args.ours_threads!r}: give 'default' or positive integers")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    src = source_text(args.corpus, out)
    sentences, corpus_path = prepare_sentences(src, out)
    train_sents = training_sentences(sentences)
    runs = []
    for i in range(args.repeats):  # alternate, so drifting machine load hits both alike
        g = run_gensim(train_sents, args.epochs, args.workers, seed=SEED + i)
        print(f"[{i + 1}/{args.repeats}] gensim: train {g['train_s']:.2f} s", flush=True)
        runs.append(g)
        for threads in variants:
            vocab_s, steps = our_vocab_seconds(corpus_path, args.epochs, args.batch_size)
            o = run_ours(corpus_path, args.epochs, out, tag=f"ours-r{i}-t{threads}", threads=threads,
                         log_every=max(1, min(LOG_EVERY, steps // 10)), extra=tuple(args.ours_set),
                         batch_size=args.batch_size)
            o["vocab_s"] = vocab_s
            print(f"[{i + 1}/{args.repeats}] {o['method']}: train {o['train_s']:.2f} s "
                  f"(CLI wall {o['cli_wall_s']:.1f} s)", flush=True)
            runs.append(o)

    gv, ov = runs[0]["vocab"], runs[1]["vocab"]
    same_words = set(gv) == set(ov)
    same_counts = same_words and all(gv[w] == ov[w] for w in gv)
    rows = summarise(runs, args.epochs)
    ours = [r for r in runs if r["method"] != "gensim"]
    cli_wall = statistics.median(r["cli_wall_s"] for r in ours)
    steps = ours[0]["steps"]
    import torch

    notes = [
        f"corpus: {src} ({len(sentences):,} sentences; training: {len(train_sents):,} sentences, "
        f"{runs[0]['raw_words_per_epoch']:,} raw words per epoch; 1% held out by our trainer, withheld from gensim "
        "too)",
        f"vocabularies: gensim {len(gv):,}, ours {len(ov):,}; "
        + ("identical words and counts" if same_counts else
           f"DIFFERENT ({len(set(gv) ^ set(ov))} words in one only): the comparison is not like for like"),
        f"repeats: {args.repeats} alternating (medians); gensim workers={args.workers}; "
        f"torch threads by default={torch.get_num_threads()}; {os.cpu_count()} CPUs; "
        f"{platform.processor() or platform.machine()}; python {platform.python_version()}, torch {torch.__version__}",
        f"dim {args.dim}; ours: {steps:,} steps of {args.batch_size} pairs; whole CLI run (start-up, vocabulary, exact evaluation at the start and "
        f"the end, checkpoints; export not included) {cli_wall:.1f} s median",
        "train s: training only (gensim: model.train; ours: sum of the trainer's perf/step_ms intervals); "
        "words/s = raw words per epoch x epochs / train s, the same numerator for both; "
        "gensim's pairs/s (~) = our pair count / gensim's train s (same expected pairs)",
        "WordSim ρ / analogy acc: gensim's evaluate_word_pairs / evaluate_word_analogies (restrict_vocab=30000) on "
        f"both; answered analogies: gensim {runs[0]['analogy_answered']}, ours {runs[1]['analogy_answered']}; "
        f"WordSim pairs out of vocabulary: {runs[0]['wordsim_oov_pct']:.1f}%; cross-check, our trainer's own "
        f"evaluate.py on the same vectors: WordSim {ours[0]['in_trainer_wordsim']:.4g}, analogy "
        f"{ours[0]['in_trainer_analogy']:.4g} (gensim's code: {ours[0]['wordsim']:.4g}, {ours[0]['analogy']:.4g})",
    ]
    table = markdown(rows)
    text = table + "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print()
    print(text)
    (out / "results.md").write_text(text, encoding="utf-8")
    slim = [{k: v for k, v in r.items() if k != "vocab"} for r in runs]
    (out / "results.json").write_text(json.dumps({"rows": rows, "runs": slim, "vocab_identical": same_counts,
                                                  "notes": notes}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
