"""Small causal language models that return hidden states: the output layer belongs to the loss (docs/ARCHITECTURE.md).

    model = build_lm("lstm", V + 1, 128)                       # V words + the end-of-sentence id V (see data.py)
    loss_fn = build_loss("sampled", V + 1, 128, weight=model.embed.weight, num_sampled=256)   # tied embeddings
    loss = loss_fn(model(inputs), targets)                     # inputs, targets (B, T) -> scalar

Both models expose `.embed`, the token `nn.Embedding`, so a loss can borrow its weight (tied input and output
embeddings). hidden[:, t] depends on ids[:, :t+1] only.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from ..errors import ConfigError, InputError, did_you_mean

__all__ = ["LSTMLM", "TransformerLM", "MODELS", "build_lm"]


def _check_sizes(vocab_size, dim, num_layers, dropout) -> None:
    for key, value in (("vocab_size", vocab_size), ("dim", dim), ("num_layers", num_layers)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{key} must be a positive int, got {value!r}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")


def _check_ids(ids: Tensor) -> None:
    if not torch.is_tensor(ids) or ids.dim() != 2 or ids.is_floating_point():
        raise InputError(f"ids must be an integer tensor of shape (B, T), got {getattr(ids, 'shape', type(ids))}")


class LSTMLM(nn.Module):
    """Token embedding -> dropout -> `num_layers` LSTM layers (d -> d) -> dropout. `forward(ids (B, T)) -> (B, T, d)`.

    The hidden size equals the embedding size so the output layer can be tied to `embed.weight`. Every window
    starts from a zero state (the batches are shuffled windows, not a continuous stream). The embedding is
    initialised uniform in ±0.1 (Zaremba et al. 2014; AWD-LSTM), small enough to serve as a tied output layer.

    Shape:
        ids (B, T) int64 -> hidden (B, T, dim) float

    Example:
        >>> LSTMLM(100, 16)(torch.randint(100, (2, 7))).shape
        torch.Size([2, 7, 16])
    """

    def __init__(self, vocab_size: int, dim: int, *, num_layers: int = 1, dropout: float = 0.0, sparse: bool = False):
        super().__init__()
        _check_sizes(vocab_size, dim, num_layers, dropout)
        self.vocab_size, self.dim = vocab_size, dim
        self.embed = nn.Embedding(vocab_size, dim, sparse=sparse)  # sparse: row gradients, O(batch) steps
        self.drop = nn.Dropout(dropout)
        # nn.LSTM's own dropout acts between layers only; self.drop covers its input and output
        self.lstm = nn.LSTM(dim, dim, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        with torch.no_grad():
            self.embed.weight.uniform_(-0.1, 0.1)

    def forward(self, ids: Tensor) -> Tensor:
        _check_ids(ids)
        x = self.drop(self.embed(ids))  # (B, T, d)
        h, _ = self.lstm(x)  # (B, T, d)
        return self.drop(h)


class TransformerLM(nn.Module):
    """GPT-style decoder: token + learned position embeddings -> dropout -> `num_layers` pre-norm
    `nn.TransformerEncoderLayer`s under a causal mask (GELU, feed-forward 4·d) -> final LayerNorm.

    `forward(ids (B, T)) -> (B, T, d)` with T <= max_len. Embeddings are initialised N(0, 0.02) as in GPT-2, so
    tied output logits start near zero (the final LayerNorm gives hidden states of unit scale).

    Shape:
        ids (B, T) int64 -> hidden (B, T, dim) float

    Example:
        >>> TransformerLM(100, 16, num_heads=2)(torch.randint(100, (2, 7))).shape
        torch.Size([2, 7, 16])
    """

    def __init__(self, vocab_size: int, dim: int, *, num_layers: int = 2, num_heads: int = 4, max_len: int = 512,
                 dropout: float = 0.0, sparse: bool = False):
        super().__init__()
        _check_sizes(vocab_size, dim, num_layers, dropout)
        for key, value in (("num_heads", num_heads), ("max_len", max_len)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{key} must be a positive int, got {value!r}")
        if dim % num_heads:
            raise ConfigError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.vocab_size, self.dim, self.max_len = vocab_size, dim, max_len
        self.embed = nn.Embedding(vocab_size, dim, sparse=sparse)  # sparse: row gradients, O(batch) steps
        self.pos = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            dim, num_heads, dim_feedforward=4 * dim, dropout=dropout, activation="gelu", batch_first=True,
            norm_first=True,
        )
        # nested tensors only help with padding masks, and are not supported with norm_first
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        with torch.no_grad():
            self.embed.weight.normal_(0.0, 0.02)
            self.pos.weight.normal_(0.0, 0.02)

    def forward(self, ids: Tensor) -> Tensor:
        _check_ids(ids)
        t = ids.shape[1]
        if t > self.max_len:
            raise InputError(f"sequence length {t} exceeds the model's max_len={self.max_len}")
        positions = torch.arange(t, device=ids.device)  # (T,)
        x = self.drop(self.embed(ids) + self.pos(positions))  # (B, T, d)
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=ids.device, dtype=x.dtype)  # (T, T) 0 / -inf
        h = self.layers(x, mask=mask, is_causal=True)  # (B, T, d)
        return self.norm(h)


MODELS: dict[str, type[nn.Module]] = {"lstm": LSTMLM, "transformer": TransformerLM}


def build_lm(name: str, vocab_size: int, dim: int, **kwargs) -> nn.Module:
    """Build a language model by its short name in `MODELS` ("lstm", "transformer").

    `vocab_size` counts every id the model reads, i.e. the corpus vocabulary + 1 for the end-of-sentence id.
    Keyword arguments go to the model's constructor; an unknown name or argument is a ConfigError.

    Example:
        >>> build_lm("transformer", 101, 32, num_layers=1, num_heads=2).embed.weight.shape
        torch.Size([101, 32])
    """
    if name not in MODELS:
        raise ConfigError(f'unknown model "{name}"{did_you_mean(str(name), MODELS)}; choose from {", ".join(MODELS)}')
    cls = MODELS[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "vocab_size", "dim")]
    for key in kwargs:
        if key not in allowed:
            raise ConfigError(f'model "{name}" takes no argument "{key}"{did_you_mean(key, allowed)}; it takes {", ".join(allowed)}')
    return cls(vocab_size, dim, **kwargs)
