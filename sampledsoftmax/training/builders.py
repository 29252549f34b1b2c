"""The output layer + loss and the optimizers of a run, by the config's short names (`loss.name`, `loss.sampler`,
`optim.name`), the same for every task."""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..losses import LOSSES, build_loss
from ..samplers import build_sampler
from ..errors import ConfigError


def build_loss_fn(cfg, vocab, generator: torch.Generator, weight: Optional[torch.Tensor] = None):
    """The output layer + loss from the registry, by `loss.name`; the sampler from `loss.sampler`.

    `vocab` needs `len()` and `counts` (class frequencies, id = rank). `weight` borrows an output table (tied
    embeddings); otherwise the table starts at zero, as word2vec's.
    """
    lc, v, dim = cfg.loss, len(vocab), cfg.model.dim
    cls = LOSSES[lc.name]
    kw: dict[str, Any] = {} if weight is None else {"weight": weight}
    if lc.name == "full":
        kw.update(label_smoothing=lc.label_smoothing, memory_budget_mb=lc.memory_budget_mb)
    elif lc.name == "adaptive":  # torch's adaptive softmax: its own head/tail layers, no [V, d] table
        kw.update(memory_budget_mb=lc.memory_budget_mb)
    elif lc.name == "inbatch":
        # the batch's contexts are drawn from the (subsampled) unigram distribution: correct by the known counts
        kw.update(counts=torch.tensor(vocab.counts, dtype=torch.float64), subtract_log_q=lc.subtract_log_q,
                  sparse=lc.sparse, generator=generator)
    else:
        if lc.num_sampled >= v:
            raise ConfigError(
                f"loss.num_sampled={lc.num_sampled} must be below the vocabulary size {v}; "
                f"lower loss.num_sampled or data.min_count"
            )
        skw = {"alpha": lc.ns_exponent} if lc.sampler in ("unigram", "learned_unigram") else {}
        sampler = build_sampler(lc.sampler, v, counts=torch.tensor(vocab.counts, dtype=torch.float64), **skw)
        kw.update(sampler=sampler, num_sampled=lc.num_sampled, sparse=lc.sparse, generator=generator)
        if lc.remove_accidental_hits is not None and lc.name != "negative":
            kw["remove_accidental_hits"] = lc.remove_accidental_hits
        if lc.name == "sampled":
            kw.update(subtract_log_q=lc.subtract_log_q, label_smoothing=lc.label_smoothing)
        if lc.name == "negative" and lc.remove_accidental_hits is False:
            kw["collisions"] = "keep"
    loss_fn = build_loss(lc.name, v, dim, **kw)
    with torch.no_grad():
        if weight is None and loss_fn.weight is not None:
            loss_fn.weight.zero_()  # word2vec's output table starts at zero
        if loss_fn.bias is not None:
            # start from the unigram model, log p(c): a self-normalising loss (NCE) otherwise keeps the rarely
            # sampled classes near logit 0, far above their log-probability, for most of a run
            # (a class never seen in training, count 0, starts at half a count: finite, below every seen class)
            counts = torch.tensor(vocab.counts, dtype=torch.float64).clamp_min(0.5)
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
        sparse_ids |= {id(p) for p in loss_fn.parameters()}
    sparse = [p for p in params if id(p) in sparse_ids]
    dense = [p for p in params if id(p) not in sparse_ids]
    opts: list[torch.optim.Optimizer] = []
    if sparse:
        opts.append(torch.optim.SparseAdam(sparse, lr=lr))
    if dense:
        opts.append(torch.optim.Adam(dense, lr=lr))
    return opts
