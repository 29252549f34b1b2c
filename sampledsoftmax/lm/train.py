"""The language-model task: a small next-token model trained with any of the losses, on the one training loop
(``training.loop``), evaluated by exact held-out perplexity.

The model returns hidden states (B, T, d); the loss owns (or, with `model.tie_weights`, borrows the token embedding
as) the output layer. Evaluation is the exact full-softmax perplexity over every held-out token, whatever the
training loss.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..data.corpus import token_fingerprint
from ..data.synthetic import PlantedCorpus
from ..errors import ConfigError
from ..training import loop
from ..training.builders import build_loss_fn, build_optimizers, unique_params
from ..training.grouped import GROUPED_LOSSES, attach_group, group_sample
from ..training.memory import check_fits
from ..training.run import amp_context, start_run
from .config import LMConfig
from .data import LMBatches, eval_batches, sentences_to_stream
from .model import build_lm


class _Counts:
    """What build_loss_fn needs of a vocabulary: its size and the class frequencies (the EOS token included)."""

    def __init__(self, counts: np.ndarray):
        self.counts = counts

    def __len__(self) -> int:
        return len(self.counts)


@dataclass
class LMData:
    """What the LM trains and evaluates on. Class ids are frequency ranks, end-of-line/sentence included."""

    words: list[str]  # class names, id = index
    train: np.ndarray  # (N,) int64 token stream
    heldout: np.ndarray  # (M,) int64 token stream
    counts: np.ndarray  # (V,) int64 training counts, each >= 1 (every class samplable)
    heldout_bytes: Optional[np.ndarray] = None  # (M,) UTF-8 bytes of text each held-out token covers (real text)
    stats: dict = field(default_factory=dict)  # the tokenizer's: kind, times, cache, OOV rate, ...


def build_lm_data(cfg: LMConfig) -> LMData:
    """The planted corpus (its words; class V = end of sentence), or real text through the configured tokenizer
    (lm/tokenize.py: BPE, words with <unk>, or a tokenizer.json; every token of the text kept, held-out bytes known
    for bits per byte)."""
    d = cfg.data
    if d.corpus == "synthetic":
        ids, heldout_ids, vocab = PlantedCorpus(d.synthetic).generate()
        eos = len(vocab)
        train_stream = sentences_to_stream(ids, eos)
        heldout_stream = sentences_to_stream(heldout_ids, eos)
        counts = np.bincount(train_stream, minlength=eos + 1).astype(np.int64)
        return LMData(list(vocab.words) + ["</s>"], train_stream, heldout_stream, np.maximum(counts, 1))
    from .tokenize import tokenize_corpus

    lowercase = d.lowercase if d.lowercase is not None else d.tokenizer == "word"
    tc = tokenize_corpus(d.corpus, tokenizer=d.tokenizer, vocab_size=d.vocab_size, lowercase=lowercase,
                         min_count=d.min_count, heldout_fraction=d.heldout_fraction, seed=cfg.train.seed,
                         cache_dir=Path(d.cache_dir) if d.cache_dir else Path(cfg.runs_root) / ".cache")
    return LMData(list(tc.words), tc.train.astype(np.int64), tc.heldout.astype(np.int64),
                  np.maximum(tc.counts.astype(np.int64), 1),  # the log-unigram bias init stays finite
                  tc.heldout_bytes.astype(np.int64), dict(tc.stats))


@torch.no_grad()
def exact_perplexity(cfg: LMConfig, model, loss_fn, stream: np.ndarray, device,
                     heldout_bytes: Optional[np.ndarray] = None) -> dict[str, float]:
    """Exact full-softmax cross entropy over every held-out token (chunked over V), its per-token perplexity, and,
    with `heldout_bytes`, bits per byte: the total NLL in bits over the UTF-8 bytes the evaluated tokens cover (a
    unit that does not depend on the tokenizer or V)."""
    model.eval()
    total, count = 0.0, 0
    try:
        for i, (x, y) in enumerate(eval_batches(stream, cfg.eval.batch_size, cfg.data.seq_len)):
            if cfg.eval.max_batches is not None and i >= cfg.eval.max_batches:
                break
            x, y = x.to(device), y.to(device)
            nll = loss_fn.exact_nll(model(x), y)  # (B, T), 0 on padding
            total += float(nll.double().sum())
            count += int((y != loss_fn.ignore_index).sum())
    finally:
        model.train()
    ce = total / max(count, 1)
    out = {"eval/full_ce": ce, "eval/ppl": math.exp(min(ce, 700.0)), "eval/tokens": float(count)}
    if heldout_bytes is not None:  # eval_batches visits the targets stream[1:] in order: these `count` of them
        covered = int(heldout_bytes[1 : 1 + count].sum())
        out["eval/bpb"] = total / math.log(2) / max(covered, 1)
        out["eval/bytes"] = float(covered)
    return out


class LMTask:
    """The LM on the loop: batches of (inputs, next tokens), the autograd step (the dense gradients clipped at global
    norm 1, whatever the loss, before and after loss.finish_with_full's switch), exact held-out perplexity."""

    unit = "tokens"

    def __init__(self, cfg: LMConfig, data, ddp, device: torch.device):
        words, train_stream, self.heldout_stream, counts = data.words, data.train, data.heldout, data.counts
        self.heldout_bytes, self.data_stats = data.heldout_bytes, data.stats
        self.cfg, self.ddp, self.device = cfg, ddp, device
        v, mc = len(words), cfg.model
        self.num_classes = v
        self.fingerprint = token_fingerprint(train_stream, self.heldout_stream)  # a changed corpus: no resume
        check_fits(cfg, v, device)  # before the [V, d] tables and optimizer state are allocated
        # an untied sparse sampled loss: the input table takes row gradients too, so no step costs O(V)
        kw = dict(num_layers=mc.num_layers, dropout=mc.dropout, sparse=cfg.loss.sparse and not mc.tie_weights)
        if mc.arch == "transformer":
            kw.update(num_heads=mc.num_heads, max_len=cfg.data.seq_len)
        self.model = build_lm(mc.arch, v, mc.dim, **kw).to(device)
        self.generator = torch.Generator(device=device).manual_seed(cfg.train.seed)
        tied = self.model.embed.weight if mc.tie_weights else None
        self.loss_fn = build_loss_fn(cfg, _Counts(counts), self.generator, weight=tied).to(device)
        self.opts = build_optimizers(cfg.optim.name, self.model, self.loss_fn, cfg.optim.alpha)
        self.params = unique_params(self.model, self.loss_fn)
        self.data = LMBatches(train_stream, cfg.optim.batch_size, cfg.data.seq_len, cfg.train.seed)
        n = self.data.num_batches()
        if n == 0:
            raise ConfigError(f"the corpus is too short for one batch of optim.batch_size={cfg.optim.batch_size} "
                              f"sequences of data.seq_len={cfg.data.seq_len}; lower them")
        if n < ddp.world:
            raise ConfigError(f"the corpus has {n} batch(es) per epoch, fewer than the {ddp.world} processes; "
                              f"lower optim.batch_size or use fewer processes")
        self.total = cfg.train.max_steps or cfg.train.epochs * (n // ddp.world)
        self.amp = amp_context(cfg)
        self.grouped = ddp.enabled and cfg.loss.name in GROUPED_LOSSES  # ranks share the global sample

    clip = 1.0  # the dense gradients' global norm (loop.autograd_step leaves sparse row gradients as they are)

    def batches(self, epoch: int, start_batch: int):
        stream = self.data.epoch_batches(epoch, start_batch=start_batch)
        return attach_group(stream, self.ddp.world, lambda b: b[1]) if self.grouped else stream

    def step(self, batch, lr: float, ctl, index: int) -> tuple[torch.Tensor, int]:
        group = None
        if self.grouped:
            batch, *group = batch  # (batch, the group's targets, this batch's offset in them)
        x, y = (t.to(self.device) for t in batch)
        sample = group_sample(self.loss_fn, *group, y.numel()) if group and self.loss_fn.is_sampled else None
        with self.amp:
            loss = self.loss_fn(self.model(x), y, sample=sample)  # hidden (B, T, d), targets (B, T)
        loop.autograd_step(self, loss, 1.0 / self.ddp.world, ctl, clip=self.clip)  # the global batch's mean
        return loss, y.numel()

    def evaluate(self, step: int) -> dict[str, float]:
        return exact_perplexity(self.cfg, self.model, self.loss_fn, self.heldout_stream, self.device,
                                self.heldout_bytes)

    def state(self) -> dict:
        return {"num_classes": self.num_classes, "data_fingerprint": self.fingerprint}

    def check_resumable(self, state: dict) -> None:
        if state.get("loss_name") != self.cfg.loss.name or state.get("num_classes") != self.num_classes:
            raise ConfigError("the checkpoint was trained with another loss or vocabulary; start a new run")
        if state.get("data_fingerprint", self.fingerprint) != self.fingerprint:
            raise ConfigError(f"the corpus changed since this run started ({self.cfg.data.corpus}: other text); "
                              "restore it, or start a new run instead of --resume")

    def on_new_run(self, run_dir: Path) -> None:
        """data.json: the classes and the tokenizer's report (kind, V, times apart from training, OOV rate)."""
        report = {"num_classes": self.num_classes, **self.data_stats}
        (run_dir / "data.json").write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")

    def finish(self, log, step: int) -> None:
        pass


def train_lm(cfg: LMConfig, *, resume: bool = False, quiet: bool = False, stop_at_step: Optional[int] = None) -> dict:
    """Train the configured LM; returns the run directory, step and final metrics."""
    with start_run(cfg, resume, build_lm_data) as (ddp, device, run_dir, data):
        task = LMTask(cfg, data, ddp, device)
        what = f"LM run {run_dir}: V={task.num_classes} arch={cfg.model.arch} loss={cfg.loss.name}"
        return loop.run(task, ddp, run_dir, resume=resume, quiet=quiet, stop_at_step=stop_at_step, what=what)
