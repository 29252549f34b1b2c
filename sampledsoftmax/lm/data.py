"""Language-model batches from a token stream, made with vectorised numpy (no Python loop per token).

Vocabulary. The corpus code (`data.corpus.load_corpus`, `data.synthetic.PlantedCorpus`) gives int32
word ids in ``[0, V)`` with ``-1`` between sentences. :func:`sentences_to_stream` turns every ``-1`` into the
end-of-sentence id ``eos_id = V``, so the model and the loss see **V + 1 classes**: the V corpus words, then
end-of-sentence as the last id (which keeps the corpus's frequency ranks, so log-uniform sampling stays meaningful
for the words). No end-of-sentence is added before the first or after the last sentence: the stream has exactly the
length of ``ids``.

Training (:class:`LMBatches`). The stream is cut into ``W = len(stream) // (seq_len + 1)`` contiguous,
non-overlapping windows of ``seq_len + 1`` tokens, in order (the last ``len(stream) % (seq_len + 1)`` tokens are
unused); window ``w`` gives inputs ``window[:-1]`` and next-token targets ``window[1:]``. Each epoch visits the windows
in the order ``np.random.default_rng([seed, epoch]).permutation(W)``, ``batch_size`` windows per batch; the last
partial batch is dropped. Everything is a function of ``(seed, epoch)``, so ``epoch_batches(epoch, start_batch=k)``
yields exactly batches ``k, k + 1, ...`` of ``epoch_batches(epoch)`` (resume). A window's first token is never a
target (it has no context inside the window): the price of non-overlapping windows.

Evaluation (:func:`eval_batches`). Every token but the first is a target exactly once: window ``i`` has inputs
``stream[i·T : i·T + T]`` and targets ``stream[i·T + 1 : i·T + T + 1]`` (consecutive windows share one token, the
last target of one being the first input of the next). The tail window and the last batch are padded to a full
``(batch_size, seq_len)`` with input id 0 and target ``IGNORE_INDEX`` (-100), so ``exact_nll(...).sum() /
(targets != -100).sum()`` averages over real tokens only. Padding sits after every real position of its row, so a
causal model's hidden states at real positions do not see it.
"""

from __future__ import annotations

from typing import Iterator, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError

__all__ = ["IGNORE_INDEX", "sentences_to_stream", "LMBatches", "eval_batches"]

IGNORE_INDEX = -100  # the losses' default ignore_index

Batch = Tuple[Tensor, Tensor]  # inputs (B, T) int64, targets (B, T) int64


def sentences_to_stream(ids: np.ndarray, eos_id: int) -> np.ndarray:
    """Corpus ids (int, ``-1`` between sentences) -> an int64 stream with each ``-1`` replaced by ``eos_id``.

    ``eos_id`` is the corpus vocabulary size V (the caller passes it), so the model and loss use V + 1 classes.
    Every other id is kept, in place; nothing is added or removed (consecutive breaks give consecutive eos ids).

    Example:
        >>> sentences_to_stream(np.array([4, 2, -1, 0, 1], dtype=np.int32), eos_id=5).tolist()
        [4, 2, 5, 0, 1]
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
    if len(ids):
        lo, hi = int(ids.min()), int(ids.max())
        if lo < -1 or hi >= eos_id:
            raise ValueError(f"ids must lie in [-1, eos_id={eos_id}) (-1 = sentence break), got [{lo}, {hi}]")
    return np.where(ids < 0, np.int64(eos_id), ids.astype(np.int64, copy=False))  # (N,) int64


def _check_stream(stream) -> np.ndarray:
    stream = np.asarray(stream)
    if stream.ndim != 1 or not np.issubdtype(stream.dtype, np.integer):
        raise ValueError(f"stream must be a 1-D integer array, got {stream.dtype} {stream.shape}")
    if len(stream) and int(stream.min()) < 0:
        raise ValueError("stream contains negative ids; turn sentence breaks into eos ids with sentences_to_stream()")
    return stream.astype(np.int64, copy=False)


def _check_positive(**values) -> None:
    for key, value in values.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{key} must be a positive int, got {value!r}")


class LMBatches:
    """Shuffled, non-overlapping windows of a token stream as (inputs, targets) batches; see the module docstring.

    Args:
        stream: int64 ``(N,)`` token ids (>= 0), e.g. from :func:`sentences_to_stream`.
        batch_size: windows per batch (B).  seq_len: tokens per input row (T).  seed: with the epoch, fixes the order.

    Shape:
        each batch: inputs (B, T) int64, targets (B, T) int64 with ``targets[:, :-1] == inputs[:, 1:]``

    Example:
        >>> batches = LMBatches(np.arange(40), batch_size=2, seq_len=4, seed=0)
        >>> batches.num_batches(), [tuple(x.shape) for x in next(batches.epoch_batches(0))]
        (4, [(2, 4), (2, 4)])
    """

    def __init__(self, stream: np.ndarray, batch_size: int, seq_len: int, seed: int):
        _check_positive(batch_size=batch_size, seq_len=seq_len)
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
        stream = _check_stream(stream)
        self.batch_size, self.seq_len, self.seed = int(batch_size), int(seq_len), int(seed)
        self.num_windows = len(stream) // (seq_len + 1)
        if self.num_windows < batch_size:
            raise DataError(
                f"a stream of {len(stream)} tokens holds {self.num_windows} windows of seq_len + 1 = {seq_len + 1} "
                f"tokens, fewer than batch_size={batch_size}: use a larger corpus or a smaller batch_size or seq_len"
            )
        self.windows = stream[: self.num_windows * (seq_len + 1)].reshape(self.num_windows, seq_len + 1)  # (W, T+1) view

    def num_batches(self) -> int:
        """Batches per epoch: ``num_windows // batch_size`` (the last partial batch is dropped)."""
        return self.num_windows // self.batch_size

    def window_order(self, epoch: int) -> np.ndarray:
        """The order in which ``epoch`` visits the windows: int64 ``(W,)``."""
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_windows)

    def epoch_batches(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Batches ``start_batch, start_batch + 1, ...`` of ``epoch``: (inputs, targets) int64 ``(B, T)`` each."""
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        order = self.window_order(epoch)
        b = self.batch_size
        for k in range(start_batch, self.num_batches()):
            rows = torch.from_numpy(self.windows[order[k * b : (k + 1) * b]])  # (B, T+1) gathered copy
            yield rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


def eval_batches(stream: np.ndarray, batch_size: int, seq_len: int) -> Iterator[Batch]:
    """Every target ``stream[1:]`` exactly once, in order, as padded (inputs, targets) int64 ``(B, T)`` batches.

    Padding (the tail of the last window, and whole rows of the last batch) has input 0 and target -100; see the
    module docstring. A stream of fewer than 2 tokens yields nothing.

    Example:
        >>> [t.tolist() for _, t in eval_batches(np.arange(6), batch_size=2, seq_len=2)]
        [[[1, 2], [3, 4]], [[5, -100], [-100, -100]]]
    """
    _check_positive(batch_size=batch_size, seq_len=seq_len)
    stream = _check_stream(stream)
    num_targets = len(stream) - 1
    per_batch = batch_size * seq_len  # target positions per batch
    for start in range(0, max(num_targets, 0), per_batch):
        n = min(per_batch, num_targets - start)  # real targets in this batch
        inputs = np.zeros(per_batch, dtype=np.int64)  # (B·T,)
        targets = np.full(per_batch, IGNORE_INDEX, dtype=np.int64)  # (B·T,)
        inputs[:n] = stream[start : start + n]
        targets[:n] = stream[start + 1 : start + 1 + n]
        yield (torch.from_numpy(inputs).view(batch_size, seq_len), torch.from_numpy(targets).view(batch_size, seq_len))
