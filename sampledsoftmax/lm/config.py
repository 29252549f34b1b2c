"""Configuration of the language-model task, on the shared strict config system (``sampledsoftmax.training.config``:
nested dataclasses hold every default; YAML and `--set a.b=c` override; unknown keys, wrong types and bad values are
one-line errors naming the key). The loss, optim and train sections are the shared ones; data, model and eval are
this task's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from ..data.synthetic import SyntheticConfig
from ..errors import ConfigError
from ..training.config import (
    DEVICES,
    OPTIMIZERS,
    LossConfig,
    OptimConfig,
    TrainConfig,
    check_choice,
    config_to_dict,
    load,
    loss_choices,
    sampler_choices,
)

ARCHS = ("lstm", "transformer")


TOKENIZERS = ("word", "bpe")  # or the path of a Hugging Face tokenizer.json


@dataclass
class LMDataConfig:
    corpus: str = "synthetic"  # "synthetic" (the planted corpus) or a path: file (.txt/.gz/.bz2) or directory
    synthetic: SyntheticConfig = field(default_factory=lambda: SyntheticConfig(vocab_size=2000, num_tokens=200_000,
                                                                               num_topics=20, heldout_sentences=500))
    # real text (lm/tokenize.py): "bpe" (byte-level BPE trained on the training split, `tokenizers` package), "word"
    # (words and punctuation; out-of-vocabulary words become <unk>, never dropped), or a tokenizer.json of your own
    tokenizer: str = "word"
    # the number of classes, end-of-line (and word level's <unk>) included; bpe: required; word: a cap (null: every
    # word seen min_count times)
    vocab_size: Optional[int] = None
    lowercase: Optional[bool] = None  # null: word level lowercases, bpe and tokenizer.json keep the text as it is
    min_count: int = 1  # word level
    heldout_fraction: float = 0.02  # of the corpus's non-empty lines, the same whatever the tokenizer (bits per byte)
    seq_len: int = 32
    cache_dir: Optional[str] = None  # default: runs_root/.cache (tokenizer and encoded corpus, reused across runs)


@dataclass
class LMModelConfig:
    arch: str = "lstm"  # lstm | transformer
    dim: int = 128
    num_layers: int = 1
    num_heads: int = 4  # transformer only
    dropout: float = 0.0
    tie_weights: bool = True  # the loss borrows the token embedding as its output table
    # an untied output table's start: 0 = zeros; > 0 = normal entries of this standard deviation (seeded by
    # train.seed); ignored with tie_weights (the table is the embedding)
    output_init: float = 0.0


@dataclass
class LMEvalConfig:
    every: int = 200
    curve_points: int = 0  # also evaluate at this many log-spaced points of the run's progress (1 % ... 100 %)
    batch_size: int = 64
    max_batches: Optional[int] = None  # cap on held-out batches per evaluation (None: all)


@dataclass
class LMConfig:
    name: str = "lm"
    runs_root: str = "runs"
    data: LMDataConfig = field(default_factory=LMDataConfig)
    model: LMModelConfig = field(default_factory=LMModelConfig)
    # num_sampled: null, the loss's default at the run's V (training/builders.py:resolve_num_sampled)
    loss: LossConfig = field(default_factory=lambda: LossConfig(name="sampled", sampler="log_uniform", sparse=False))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adam", alpha=0.002, min_alpha=0.0001,
                                                                   batch_size=32))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, log_every=50, checkpoint_every=500))
    eval: LMEvalConfig = field(default_factory=LMEvalConfig)


def load_lm_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> LMConfig:
    """Defaults, then the YAML file, then each `key=value` override; validated."""
    return validate_lm(load(LMConfig, path, overrides))


def lm_config_to_dict(cfg: LMConfig) -> dict:
    return config_to_dict(cfg)


def validate_lm(cfg: LMConfig) -> LMConfig:
    def positive(key: str, value, minimum=1) -> None:
        if value is not None and value < minimum:
            raise ConfigError(f"{key}={value} must be >= {minimum}")

    for key, value in (("data.seq_len", cfg.data.seq_len), ("model.dim", cfg.model.dim),
                       ("model.num_layers", cfg.model.num_layers), ("model.num_heads", cfg.model.num_heads),
                       ("loss.num_sampled", cfg.loss.num_sampled), ("optim.batch_size", cfg.optim.batch_size),
                       ("train.epochs", cfg.train.epochs), ("train.max_steps", cfg.train.max_steps),
                       ("train.log_every", cfg.train.log_every), ("train.checkpoint_every", cfg.train.checkpoint_every),
                       ("eval.every", cfg.eval.every), ("eval.batch_size", cfg.eval.batch_size),
                       ("eval.max_batches", cfg.eval.max_batches), ("data.min_count", cfg.data.min_count)):
        positive(key, value)
    if cfg.train.max_seconds is not None and not cfg.train.max_seconds > 0:
        raise ConfigError(f"train.max_seconds={cfg.train.max_seconds} must be > 0")
    if cfg.train.checkpoint_seconds is not None and not cfg.train.checkpoint_seconds >= 0:
        raise ConfigError(f"train.checkpoint_seconds={cfg.train.checkpoint_seconds} must be >= 0 (0: steps only)")
    if not cfg.model.output_init >= 0.0:
        raise ConfigError(f"model.output_init={cfg.model.output_init} must be >= 0 (0 = a zero output table)")
    if not 0.0 <= cfg.model.dropout < 1.0:
        raise ConfigError(f"model.dropout={cfg.model.dropout} must be in [0, 1)")
    if not 0.0 < cfg.data.heldout_fraction < 0.5:
        raise ConfigError(f"data.heldout_fraction={cfg.data.heldout_fraction} must be in (0, 0.5)")
    if not cfg.optim.alpha > 0 or not 0 <= cfg.optim.min_alpha <= cfg.optim.alpha:
        raise ConfigError(f"optim.alpha={cfg.optim.alpha} must be > 0 and optim.min_alpha={cfg.optim.min_alpha} "
                          f"in [0, optim.alpha]")
    if cfg.model.arch == "transformer" and cfg.model.dim % cfg.model.num_heads:
        raise ConfigError(f"model.dim={cfg.model.dim} must be divisible by model.num_heads={cfg.model.num_heads}")
    d = cfg.data
    if d.tokenizer not in TOKENIZERS and not d.tokenizer.endswith(".json"):
        raise ConfigError(f"data.tokenizer={d.tokenizer!r}: expected word, bpe or the path of a tokenizer.json")
    if d.vocab_size is not None and d.vocab_size < 2:
        raise ConfigError(f"data.vocab_size={d.vocab_size} must be >= 2")
    if d.corpus != "synthetic" and d.tokenizer == "bpe" and d.vocab_size is None:
        raise ConfigError("data.tokenizer=bpe needs data.vocab_size, the number of classes (e.g. 32000)")
    check_choice("model.arch", cfg.model.arch, ARCHS)
    check_choice("loss.name", cfg.loss.name, loss_choices())
    check_choice("loss.sampler", cfg.loss.sampler, sampler_choices())
    check_choice("optim.name", cfg.optim.name, OPTIMIZERS)
    check_choice("train.device", cfg.train.device, DEVICES)
    return cfg
