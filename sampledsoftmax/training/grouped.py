"""Data parallel: every rank takes its rows of the candidate sample that one process would draw for the whole global
batch, so N ranks at batch B train on exactly what one process at batch N·B does (see ``distributed``).

Every rank reads the same deterministic batch stream and keeps every N-th batch (``shard_batches``), so each rank
can see the targets of the whole group of N batches without any communication. :func:`attach_group` hands each
batch its group's targets and its row offset; :func:`group_sample` draws the sample of the global batch (from the
loss's sampler and generator, which are seeded alike on every rank, so every rank draws the same) and keeps this
rank's rows. Hence:

- per-example negatives (word2vec's negative sampling) are the global batch's draws, different on every rank (drawn
  from one shared generator with the local batch alone, every rank would repeat the same negative matrix);
- a shared sample is the one the global batch would get, also with collisions resampled against every target;
- a sampler that learns from the targets (``learned_unigram``) sees the global batch's targets on every rank, so the
  ranks' samplers stay identical;
- in-batch negatives are the global batch's targets (its log-Q: expected counts in a batch of the global size), as
  one process at N·B has them, not each rank's local half.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch

from ..samplers import CandidateSample
from .distributed import groups_of

# losses whose candidates come from loss_fn.sample (in-batch: the global batch's targets; full samples nothing)
GROUPED_LOSSES = ("sampled", "nce", "negative", "inbatch")


def attach_group(stream: Iterable, world: int, target_of: Callable) -> Iterator[tuple]:
    """Yield ``(batch, group_targets, offset)`` for every batch of `stream`: the flattened targets of its group of
    `world` consecutive batches (the group ``shard_batches`` deals out) and the position of the batch's first target
    in them. An incomplete last group is dropped, as ``shard_batches`` drops it."""
    for group in groups_of(stream, world):
        targets = [torch.as_tensor(target_of(x)).reshape(-1) for x in group]
        flat = torch.cat(targets)  # (N_global,)
        offset = 0
        for x, t in zip(group, targets):
            yield x, flat, offset
            offset += t.numel()


def group_sample(loss_fn, group_targets: torch.Tensor, offset: int, n: int) -> CandidateSample:
    """This rank's rows [offset, offset + n) of the sample the loss draws for the group's targets."""
    t = group_targets.to(loss_fn.weight.device).long()
    t = t.masked_fill(t == loss_fn.ignore_index, -1).reshape(-1, 1)  # padding, as the loss's own _flatten marks it
    s = loss_fn.sample(t)
    rows = slice(offset, offset + n)
    per_example = s.ids.dim() == 2
    return CandidateSample(
        ids=s.ids[rows] if per_example else s.ids,
        log_q_true=s.log_q_true[rows],
        log_q_sampled=s.log_q_sampled[rows] if per_example else s.log_q_sampled,
        counts=None if s.counts is None else (s.counts[rows] if per_example else s.counts),
    )
