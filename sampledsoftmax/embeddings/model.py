"""The skip-gram model: an input embedding that turns center-word ids into hidden states.

The output layer (the context-word table) belongs to the loss (docs/ARCHITECTURE.md), so the same model trains with every loss.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SkipGram(nn.Module):
    """Center-word embedding. `forward(ids (B,)) -> hidden (B, d)`.

    Initialised as word2vec does (uniform in ±0.5/d). With `sparse=True` its gradient touches only the rows of the
    batch, so a sparse-aware optimizer (SGD, Adagrad, SparseAdam) updates O(B·d) per step instead of O(V·d).
    """

    def __init__(self, num_words: int, dim: int, *, sparse: bool = True):
        super().__init__()
        self.embed = nn.Embedding(num_words, dim, sparse=sparse)
        with torch.no_grad():
            self.embed.weight.uniform_(-0.5 / dim, 0.5 / dim)

    def forward(self, ids: Tensor) -> Tensor:
        return self.embed(ids)  # (B, d)

    @property
    def vectors(self) -> Tensor:
        """The word vectors [V, d] (the input embedding, as word2vec exports)."""
        return self.embed.weight
