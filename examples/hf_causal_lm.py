"""A Hugging Face causal LM trained with sampled softmax, then the exact softmax for the last 10 %, evaluated exactly.

    python3 scripts/make_corpus.py data/debian-en                 # once: 20M tokens of real English (~3 min)
    .venv/bin/python examples/hf_causal_lm.py                     # ~3 min on a 2-core CPU
    .venv/bin/python examples/hf_causal_lm.py --corpus my.txt --vocab-size 32000 --steps 2000

A tiny Llama built from a config (random weights, nothing downloaded), a byte-level BPE tokenizer trained on the
corpus (`sampledsoftmax.lm.tokenize`: ids sorted by frequency, counts kept), `transformers.Trainer` with
`sampledsoftmax.hf.patch(model, "sampled", sampler="unigram", counts=...)` and the `FinishWithExact(0.1)` callback,
then the exact held-out perplexity and bits per byte (the patched model in eval mode computes the full softmax, chunked)
next to the unigram model's. Everything a user changes in their own script is in `main()`.
"""

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch


def rows(stream: np.ndarray, seq: int) -> torch.Tensor:
    """The token stream cut into rows of `seq` tokens (the tail that does not fill a row is dropped)."""
    n = len(stream) // seq
    return torch.from_numpy(stream[: n * seq].astype(np.int64)).view(n, seq)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default="data/debian-en/corpus.txt", help="a text file or directory")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--num-sampled", type=int, default=1024)
    ap.add_argument("--heldout-fraction", type=float, default=0.0005)
    ap.add_argument("--out", default="runs/hf_causal_lm")
    args = ap.parse_args(argv)
    if not Path(args.corpus).exists():
        print(f"error: corpus {args.corpus} not found; make it with `python3 scripts/make_corpus.py data/debian-en` "
              f"or pass --corpus PATH", file=sys.stderr)
        return 2
    try:
        import transformers
    except ImportError:
        print("error: this example needs transformers: pip install 'sampledsoftmax[hf]'", file=sys.stderr)
        return 2
    from sampledsoftmax.errors import SampledSoftmaxError
    from sampledsoftmax.hf import FinishWithExact, patch
    from sampledsoftmax.lm.tokenize import tokenize_corpus

    try:
        corpus = tokenize_corpus(args.corpus, tokenizer="bpe", vocab_size=args.vocab_size,
                                 heldout_fraction=args.heldout_fraction, cache_dir=Path(args.out) / ".cache")
    except SampledSoftmaxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    v = corpus.vocab_size
    print(f"corpus: {len(corpus.train):,} training tokens, {len(corpus.heldout):,} held out, V={v} "
          f"(tokenizing {corpus.stats.get('seconds', 0):.0f} s, cache {corpus.stats.get('cache')})")

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=v, hidden_size=args.dim, intermediate_size=4 * args.dim,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                      max_position_embeddings=args.seq, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config)
    # training: sampled softmax with the unigram proposal (counts of the training tokens); evaluation: exact
    patch(model, "sampled", sampler="unigram", counts=torch.from_numpy(corpus.counts),
          num_sampled=min(args.num_sampled, v))

    train = [dict(input_ids=r, labels=r) for r in rows(corpus.train, args.seq)]
    targs = transformers.TrainingArguments(
        output_dir=args.out, max_steps=args.steps, per_device_train_batch_size=args.batch, learning_rate=3e-3,
        lr_scheduler_type="linear", warmup_steps=min(50, args.steps // 10), weight_decay=0.0, max_grad_norm=1.0,
        logging_steps=max(1, args.steps // 10), save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True, seed=0)
    trainer = transformers.Trainer(model=model, args=targs, train_dataset=train, callbacks=[FinishWithExact(0.1)])
    t0 = time.time()
    trainer.train()
    train_s = time.time() - t0

    # exact held-out evaluation: every predicted token's NLL under the full softmax, summed (reduction="sum")
    patch(model, "full", reduction="sum")
    model.eval()
    held = rows(corpus.heldout, args.seq)
    held_bytes = rows(corpus.heldout_bytes, args.seq)[:, 1:]  # the first token of a row is not predicted
    nll = 0.0
    with torch.no_grad():
        for i in range(0, len(held), 32):
            batch = held[i:i + 32].to(model.device)
            nll += float(model(input_ids=batch, labels=batch).loss)
    tokens, nbytes = held[:, 1:].numel(), int(held_bytes.sum())
    p = corpus.counts / corpus.counts.sum()
    unigram = float(-np.log(np.maximum(p[held[:, 1:].numpy()], 1e-12)).sum())
    print(f"trained {args.steps} steps in {train_s:.0f} s (sampled softmax S={min(args.num_sampled, v)}, "
          f"exact for the last 10 %)")
    print(f"held-out, exact: perplexity {math.exp(nll / tokens):.1f}, {nll / math.log(2) / nbytes:.3f} bits per byte "
          f"over {tokens:,} tokens / {nbytes:,} bytes; the unigram model: {unigram / math.log(2) / nbytes:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
