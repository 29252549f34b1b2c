#!/usr/bin/env python
"""Pairs per second of the compiled SGNS step (embeddings/sgns_kernel.py) against the fused torch step
(embeddings/fused.py), and optionally gensim, on the same shapes; plus the kernel's compile and cached-load times.

    .venv/bin/python scripts/bench_sgns_kernel.py                       # d=50,100,300, batch 1024,16384, threads 1,2
    .venv/bin/python scripts/bench_sgns_kernel.py --seconds 1 --gensim  # longer windows, and gensim's Cython loop

Setup: V=30,000 words with Zipf counts (count ∝ 1/rank), a synthetic corpus of --tokens tokens drawn from them, cut
into sentences of 1,000; the pairs are the trainer's own (`SkipGramPairs`: window 5, reduced window, sample 1e-3),
so centers and contexts have the subsampled unigram distribution of real text. Negatives: K=5 from unigram^0.75
(the loss's `UnigramSampler`), collisions "skip", no bias. Tables: input uniform ±0.5/d, output zeros, as word2vec.

Methods:
- kernel: `kernel_sgns_step` (the trainer's call: loss computed, mean returned as a tensor), threads chunks Hogwild.
- kernel, no loss: `sgns_update(compute_loss=False)`, the update alone (saves a log1p per logit).
- fused torch: `fused_sgns_step` with torch.set_num_threads(threads).
- gensim (--gensim): `Word2Vec.train` on the same corpus (sg=1, negative=5, window=5, sample=1e-3, the same d,
  workers=threads); its pairs are the same expected count (our pair count of the corpus / its train seconds, ~).
HogBatch (Ji et al. 2016) is not benchmarked: see the note printed at the end.

Timing: each cell runs for --seconds, in windows of ~50 ms; it reports the best window (the least disturbed by other
processes on a shared machine) and the mean over all windows, as pairs/s of wall time, and pairs per CPU-second of
the process (all its threads: with one thread, the cost of a pair whatever else runs; with two, the work spent).
On a machine where other processes hold the cores the wall-time columns differ a lot, and threads=2 can be slower
than 1: report such numbers as "measured under contention".

JIT: a fresh process with an empty NUMBA_CACHE_DIR times its first `sgns_update` (compilation) and one with threads=2
(the same compiled chunk kernel, run by two threads), then a second process with that cache times the same calls
(the cached load).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a checkout without installing

import torch  # noqa: E402

from sampledsoftmax.embeddings import sgns_kernel as sk  # noqa: E402
from sampledsoftmax.embeddings.fused import fused_sgns_step  # noqa: E402
from sampledsoftmax.embeddings.model import SkipGram  # noqa: E402
from sampledsoftmax.embeddings.pairs import SkipGramPairs  # noqa: E402
from sampledsoftmax.losses import NegativeSamplingLoss  # noqa: E402
from sampledsoftmax.samplers import UnigramSampler  # noqa: E402

K, WINDOW, SAMPLE, LR = 5, 5, 1e-3, 0.025
HOGBATCH_NOTE = (
    "HogBatch (Ji et al. 2016, pWord2Vec) is not implemented: it shares one negative set among the contexts of one "
    "window and turns their updates into small GEMMs, which needs the pairs of a window next to each other. Our "
    "pair stream (embeddings/pairs.py) shuffles the pairs of each 65k-token chunk, so a 1,024-pair batch holds "
    "almost no two pairs of one window; grouping a batch by word instead needs a sort per batch (a large share of "
    "the ~0.3-0.5 us a pair costs here) and changes the estimator (negatives shared across unrelated pairs). Worth "
    "trying only with a window-ordered pair stream.")


def corpus(vocab: int, tokens: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (N,) with -1 every 1,000 tokens (sentence breaks) and the vocabulary counts (V,)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    ids = rng.choice(vocab, size=tokens, p=p / p.sum())  # (N,)
    counts = np.bincount(ids, minlength=vocab).astype(np.int64) + 1  # + 1: every word in the vocabulary
    ids = np.insert(ids, np.arange(1000, tokens, 1000), -1)
    return ids, counts


def batches(ids, counts, batch: int, limit_pairs: int) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = SkipGramPairs(ids, counts, window=WINDOW, sample=SAMPLE, batch_size=batch, seed=0)
    out = []
    for c, x in pairs.epoch_batches(0):
        if len(c) == batch:
            out.append((c, x))
        if len(out) * batch >= limit_pairs:
            break
    return out


def rate(step, batch: int, seconds: float, window: float = 0.05) -> tuple[float, float, float]:
    """(best-window, mean, per CPU-second) pairs/s of calling step(i) for `seconds`."""
    step(0)  # warm: compilation, first-touch, torch's lazy init
    best, pairs_all, t_all, i = 0.0, 0, 0.0, 1
    cpu0 = time.process_time()
    while t_all < seconds:
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < window:
            step(i)
            i += 1
            n += 1
        dt = time.perf_counter() - t0
        best = max(best, n * batch / dt)
        pairs_all += n * batch
        t_all += dt
    return best, pairs_all / t_all, pairs_all / max(time.process_time() - cpu0, 1e-9)


def bench_cells(args, ids, counts) -> list[dict]:
    sampler = UnigramSampler.from_counts(torch.tensor(counts, dtype=torch.float64), alpha=0.75)
    noise = sk.NoiseTable.from_sampler(sampler)
    rows = []
    for d in args.dims:
        for batch in args.batches:
            data = batches(ids, counts, batch, max(16 * batch, 1 << 18))
            tdata = [(torch.from_numpy(c), torch.from_numpy(x)) for c, x in data]
            for threads in args.threads:
                torch.manual_seed(0)
                model = SkipGram(args.vocab, d)
                loss_fn = NegativeSamplingLoss(args.vocab, d, num_sampled=K, sampler=sampler,
                                               generator=torch.Generator().manual_seed(0))
                with torch.no_grad():
                    loss_fn.weight.zero_()
                w_in, w_out = model.embed.weight.detach().numpy(), loss_fn.weight.detach().numpy()

                def kernel(i):
                    c, x = tdata[i % len(tdata)]
                    sk.kernel_sgns_step(model, loss_fn, c, x, LR, batch, noise, lr_end=LR, seed=0, step=i,
                                        threads=threads)

                def kernel_noloss(i):
                    c, x = data[i % len(data)]
                    sk.sgns_update(w_in, w_out, None, c, x, lr_start=LR, noise=noise, seed=0, step=i,
                                   threads=threads, compute_loss=False)

                def fused(i):
                    c, x = tdata[i % len(tdata)]
                    fused_sgns_step(model, loss_fn, c, x, LR, batch)

                methods = [("kernel", kernel), ("kernel, no loss", kernel_noloss)]
                if not args.no_fused:
                    methods.append(("fused torch", fused))
                for name, step in methods:
                    torch.set_num_threads(threads)
                    best, mean, cpu = rate(step, batch, args.seconds)
                    rows.append(dict(d=d, batch=batch, threads=threads, method=name, best=best, mean=mean, cpu=cpu))
                    print(f"  d={d:<4} batch={batch:<6} threads={threads}  {name:<16} best {best / 1e6:6.2f}M  "
                          f"mean {mean / 1e6:6.2f}M pairs/s  {cpu / 1e6:6.2f}M pairs/CPU-s", flush=True)
                if args.gensim and batch == args.batches[0]:  # gensim has no batches: once per d, threads
                    mean, cpu = bench_gensim(ids, counts, d, threads)
                    rows.append(dict(d=d, batch="-", threads=threads, method="gensim (~)", best=mean, mean=mean,
                                     cpu=cpu))
                    print(f"  d={d:<4} batch={'-':<6} threads={threads}  {'gensim (~)':<16} "
                          f"      {mean / 1e6:6.2f}M pairs/s  {cpu / 1e6:6.2f}M pairs/CPU-s (one epoch)", flush=True)
    return rows


_GENSIM_CACHE: dict = {}


def bench_gensim(ids, counts, d: int, threads: int) -> tuple[float, float]:
    """gensim's skip-gram negative sampling on the same corpus: our pair count / its train seconds, and / its CPU
    seconds (all its threads, the job producer included)."""
    from gensim.models import Word2Vec

    if "sentences" not in _GENSIM_CACHE:
        words = np.array([f"w{i}" for i in range(len(counts))], dtype=object)
        cut = np.flatnonzero(ids < 0)
        _GENSIM_CACHE["sentences"] = [list(words[s[s >= 0]]) for s in np.split(ids, cut)]
        _GENSIM_CACHE["pairs"] = SkipGramPairs(ids, counts, window=WINDOW, sample=SAMPLE, seed=0).num_pairs(0)
    sentences = _GENSIM_CACHE["sentences"]
    model = Word2Vec(vector_size=d, window=WINDOW, min_count=1, sample=SAMPLE, sg=1, negative=K, workers=threads,
                     seed=0)
    model.build_vocab(sentences)
    t0, cpu0 = time.perf_counter(), time.process_time()
    model.train(sentences, total_examples=len(sentences), epochs=1)
    pairs = _GENSIM_CACHE["pairs"]
    return pairs / (time.perf_counter() - t0), pairs / max(time.process_time() - cpu0, 1e-9)


JIT_PROBE = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from sampledsoftmax.embeddings import sgns_kernel as sk
    sk._kernels()
    t1 = time.perf_counter()
    noise = sk.NoiseTable.from_cdf(np.linspace(0.01, 1.0, 100))
    w_in, w_out = np.zeros((100, 16), np.float32), np.zeros((100, 16), np.float32)
    c = np.arange(1000) % 100
    sk.sgns_update(w_in, w_out, None, c, c, lr_start=0.01, noise=noise, threads=1)
    t2 = time.perf_counter()
    sk.sgns_update(w_in, w_out, None, c, c, lr_start=0.01, noise=noise, threads=2)
    t3 = time.perf_counter()
    print(json.dumps({"import numba": t1 - t0, "first call": t2 - t1, "threads=2 call": t3 - t2}))
""")


def jit_times() -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("first call (compile)", "second process (cached)"):
            res = subprocess.run([sys.executable, "-c", JIT_PROBE, str(ROOT)], env=env, capture_output=True,
                                 text=True, check=True)
            out[label] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dims", type=lambda s: [int(v) for v in s.split(",")], default=[50, 100, 300])
    ap.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[1024, 16384])
    ap.add_argument("--threads", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2])
    ap.add_argument("--vocab", type=int, default=30_000)
    ap.add_argument("--tokens", type=int, default=1_000_000, help="synthetic corpus size")
    ap.add_argument("--seconds", type=float, default=0.3, help="timing per cell")
    ap.add_argument("--no-fused", action="store_true", help="skip the torch step")
    ap.add_argument("--no-jit", action="store_true", help="skip the compile / cached-load timing")
    ap.add_argument("--gensim", action="store_true", help="also time gensim's Word2Vec.train (one epoch)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)

    ok, why = sk.available()
    if not ok:
        sys.exit(f"error: {why}")
    print(f"{why}, torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"V={args.vocab:,}, K={K}, window={WINDOW}, sample={SAMPLE}")
    jit = {} if args.no_jit else jit_times()
    for label, t in jit.items():
        print(f"JIT {label}: import numba {t['import numba']:.2f} s, first sgns_update {t['first call']:.2f} s, "
              f"then one with threads=2 {t['threads=2 call']:.2f} s")
    ids, counts = corpus(args.vocab, args.tokens)
    rows = bench_cells(args, ids, counts)
    print()
    print("| d | batch | threads | method | pairs/s (best 50 ms) | pairs/s (mean) | pairs per CPU-second |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['d']} | {r['batch']} | {r['threads']} | {r['method']} | {r['best']:,.0f} | {r['mean']:,.0f} | "
              f"{r['cpu']:,.0f} |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(HOGBATCH_NOTE)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "jit": jit}, indent=1))


if __name__ == "__main__":
    main()
