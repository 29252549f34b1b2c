"""The output layer + loss and the optimizers of a run, by the config's short names (`loss.name`, `loss.sampler`,
`optim.name`), the same for every task; and the one place that turns `loss.num_sampled: null` into the loss's
default number of candidates (:func:`resolve_num_sampled`)."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch

from ..data.subsample import subsampled_counts
from ..losses import LOSSES, build_loss
from ..samplers import build_sampler
from ..errors import ConfigError

SAMPLING_LOSSES = ("sampled", "nce", "negative")  # the losses that draw loss.num_sampled candidates
NEGATIVE_DEFAULT = 5  # word2vec's / gensim's `negative`
SAMPLED_MIN, SAMPLED_MAX = 64, 1024  # the range of the sampled/nce default, ~1 % of V rounded up to a power of 2


def default_num_sampled(loss_name: str, num_classes: int) -> Optional[int]:
    """The number of candidates a loss draws when `loss.num_sampled` is null; None for a loss that draws none.

    - negative: 5, word2vec's and gensim's default (Mikolov et al. 2013: 5-20 for small data, 2-5 for large).
    - sampled, nce: about 1 % of V, rounded up to a power of two, within [64, 1024]. 64 is TensorFlow's choice in
      its word2vec examples (50k words) and, measured here, already brings sampled softmax within 0.02 nats of the
      exact softmax at V = 2000 and level with it per step at V = 10k (README, docs/results); Jean et al. (2015)
      sample a few % of their 500k words. Above 1024 the candidates' (N, S) work starts to dominate a step on a
      CPU while the gradient's bias hardly moves (the README's V = 57k and V = 1M runs use 1024), so a larger S is
      the user's choice. V = 2000 → 64, 10k → 128, 100k → 1024, 1M → 1024.

    Every default is also capped at V // 2: where S comes near V the exact softmax costs no more and is exact.
    """
    if loss_name == "negative":
        s = NEGATIVE_DEFAULT
    elif loss_name in ("sampled", "nce"):
        s = min(SAMPLED_MAX, max(SAMPLED_MIN, 2 ** math.ceil(math.log2(max(num_classes / 100, 1)))))
    else:
        return None
    return max(1, min(s, num_classes // 2))


def resolve_num_sampled(loss_name: str, num_classes: int, configured: Optional[int]) -> Optional[int]:
    """S for `loss_name` over `num_classes` classes: `configured` (`loss.num_sampled`) when set, else the loss's
    default (:func:`default_num_sampled`); None for the losses that draw no candidates (full, inbatch, adaptive).
    Raises ConfigError when the configured S is not below V (the trainers, the sweep's rows and anything else that
    reports S call this one function)."""
    if loss_name not in SAMPLING_LOSSES:
        return None
    if num_classes < 2:
        raise ConfigError(f"loss.name={loss_name} needs at least 2 classes, but the vocabulary has {num_classes}; "
                          f"use a larger corpus or lower data.min_count")
    if configured is None:
        return default_num_sampled(loss_name, num_classes)
    if configured >= num_classes:
        raise ConfigError(f"loss.num_sampled={configured} must be below the vocabulary size {num_classes}; lower "
                          f"loss.num_sampled (or set it to null for the loss's default) or lower data.min_count")
    return configured


def target_counts(cfg, vocab) -> np.ndarray:
    """The frequencies (unnormalised, float64 (V,)) with which the task's batches deliver each class as a target:
    the vocabulary's counts, times word2vec's keep probability when the task subsamples frequent words
    (`data.sample` > 0, the skip-gram trainer: its contexts come from the subsampled stream). This is what the
    in-batch softmax's candidates (the batch's own targets) are drawn from, so it is what its log-Q corrects by."""
    sample = float(getattr(cfg.data, "sample", 0.0) or 0.0)  # the LM task has no subsampling
    return subsampled_counts(vocab.counts, sample)


def build_loss_fn(cfg, vocab, generator: torch.Generator, weight: Optional[torch.Tensor] = None):
    """The output layer + loss from the registry, by `loss.name`; the sampler from `loss.sampler`.

    `vocab` needs `len()` and `counts` (class frequencies, id = rank). `weight` borrows an output table (tied
    embeddings); otherwise the table starts at zero, as word2vec's, or, with `model.output_init` = std > 0, at normal
    entries of that deviation drawn from their own generator seeded by `train.seed` (the same table on every rank;
    the training generator's stream is untouched).

    The loss is built with `validate=False`: its per-call range check of the targets (and of sampled ids) is a
    host sync on every training step, and both trainers' ids are in range by construction: every id is a rank in
    the vocabulary the loss is built over (`data.corpus.load_corpus` and `data.synthetic.PlantedCorpus` map tokens
    through the vocabulary and check the result once, when the data is built; the LM's end-of-sentence id is V-1
    and its padding is ignore_index), and the samplers draw in [0, V).
    """
    lc, v, dim = cfg.loss, len(vocab), cfg.model.dim
    cls = LOSSES[lc.name]
    kw: dict[str, Any] = {"validate": False}
    if weight is not None:
        kw["weight"] = weight
    if lc.name == "full":
        kw.update(label_smoothing=lc.label_smoothing, memory_budget_mb=lc.memory_budget_mb)
    elif lc.name == "adaptive":  # torch's adaptive softmax: its own head/tail layers, no [V, d] table
        kw.update(memory_budget_mb=lc.memory_budget_mb)
    elif lc.name == "inbatch":
        # the candidates are the batch's own targets: correct by the distribution they are drawn from, the
        # counts of the stream the batches come from (subsampled when data.sample > 0), not the raw counts
        kw.update(counts=torch.from_numpy(target_counts(cfg, vocab)), subtract_log_q=lc.subtract_log_q,
                  sparse=lc.sparse, generator=generator)
    else:
        num_sampled = resolve_num_sampled(lc.name, v, lc.num_sampled)
        skw = {"alpha": lc.ns_exponent} if lc.sampler in ("unigram", "learned_unigram") else {}
        sampler = build_sampler(lc.sampler, v, counts=torch.tensor(vocab.counts, dtype=torch.float64), **skw)
        kw.update(sampler=sampler, num_sampled=num_sampled, sparse=lc.sparse, generator=generator)
        if lc.remove_accidental_hits is not None and lc.name != "negative":
            kw["remove_accidental_hits"] = lc.remove_accidental_hits
        if lc.name == "sampled":
            kw.update(subtract_log_q=lc.subtract_log_q, label_smoothing=lc.label_smoothing)
        if lc.name == "negative" and lc.remove_accidental_hits is False:
            kw["collisions"] = "keep"
    loss_fn = build_loss(lc.name, v, dim, **kw)
    with torch.no_grad():
        if weight is None and loss_fn.weight is not None:
            std = float(getattr(cfg.model, "output_init", 0.0))
            if std > 0:
                init = torch.Generator().manual_seed(cfg.train.seed)
                loss_fn.weight.copy_(torch.empty(loss_fn.weight.shape, dtype=loss_fn.weight.dtype)
                                     .normal_(0.0, std, generator=init))
            else:
                loss_fn.weight.zero_()  # word2vec's output table starts at zero
        if loss_fn.bias is not None:
            # start from the unigram model of the targets the batches deliver, log p(c) (subsampled frequencies when
            # data.sample > 0): a self-normalising loss (NCE) otherwise keeps the rarely sampled classes near logit 0,
            # far above their log-probability, for most of a run
            # (a class never seen in training, count 0, starts at half a count: finite, below every seen class)
            counts = torch.from_numpy(target_counts(cfg, vocab)).clamp_min(0.5)
            loss_fn.bias.copy_((counts / counts.sum()).log())
    assert loss_fn.is_sampled == cls.is_sampled
    return loss_fn


def unique_params(*modules: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The modules' parameters in order, each once (a table tied between the model and the loss appears twice)."""
    return list({id(p): p for m in modules for p in m.parameters()}.values())


def build_optimizers(name: str, model: torch.nn.Module, loss_fn, lr: float) -> list[torch.optim.Optimizer]:
    """SGD and Adagrad take sparse and dense gradients; Adam/SparseAdam split them (SparseAdam updates only the rows
    in the batch, Adam the dense rest)."""
    params = unique_params(model, loss_fn)
    if name == "sgd":
        return [torch.optim.SGD(params, lr=lr)]
    if name == "adagrad":
        return [torch.optim.Adagrad(params, lr=lr)]
    sparse_ids = {id(model.embed.weight)} if getattr(model.embed, "sparse", False) else set()
    if getattr(loss_fn, "sparse", False):
        # a table tied to a dense part of the model (the LM's tie_weights) gets a dense gradient: Adam's
        dense_in_model = {id(p) for p in model.parameters()} - sparse_ids
        sparse_ids |= {id(p) for p in loss_fn.parameters() if id(p) not in dense_in_model}
    sparse = [p for p in params if id(p) in sparse_ids]
    dense = [p for p in params if id(p) not in sparse_ids]
    opts: list[torch.optim.Optimizer] = []
    if sparse:
        opts.append(torch.optim.SparseAdam(sparse, lr=lr))
    if dense:
        opts.append(torch.optim.Adam(dense, lr=lr))
    return opts
