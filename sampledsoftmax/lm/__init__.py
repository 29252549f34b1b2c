"""A small causal language model trained with the same losses as the embeddings.

`model` holds the networks (hidden states only: the loss owns the output layer, which may be tied to
`model.embed.weight`); `data` turns corpus ids into next-token batches. The model's vocabulary is the corpus
vocabulary V plus one end-of-sentence id, V (see `data`).
"""

from .data import IGNORE_INDEX, LMBatches, eval_batches, sentences_to_stream
from .model import MODELS, LSTMLM, TransformerLM, build_lm

__all__ = [
    "LSTMLM",
    "TransformerLM",
    "MODELS",
    "build_lm",
    "sentences_to_stream",
    "LMBatches",
    "eval_batches",
    "IGNORE_INDEX",
]
