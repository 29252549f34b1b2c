"""The skip-gram trainer's configuration, on the shared strict config system (``sampledsoftmax.training.config``).

    cfg = load_config("configs/text8.yaml", ["loss.name=sampled", "loss.num_sampled=1024"])
    save_config(cfg, cfg.run_dir / "config.yaml")           # the resolved config; load_config reads it back equal

The loss, optim and train sections are the shared ones; data, model and eval are this task's. An unknown key, a
wrong type or an out-of-range value is a one-line ConfigError naming the dotted key.

``load_config(None)`` is the quickstart run: the dataclass defaults with :data:`QUICKSTART` applied (the same values
as ``configs/quickstart.yaml``; a test keeps them equal), so the trainer runs with no file at all. The dataclass
defaults themselves are word2vec/gensim's for real text: they fail validation with ``data.corpus: synthetic``,
whose exact Bayes optimum needs ``data.sample=0`` and ``data.min_count=1``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..data.synthetic import SyntheticConfig
from ..errors import ConfigError
from ..training.config import (  # noqa: F401  (re-exported: the names a skip-gram user reaches for)
    DEVICES,
    EXCLUDED_LOSSES,
    EXCLUDED_SAMPLERS,
    OPTIMIZERS,
    LossConfig,
    OptimConfig,
    TrainConfig,
    check_choice,
    config_to_dict,
    load,
    loss_choices,
    sampler_choices,
    save_config,
)


@dataclass
class DataConfig:
    corpus: str = "synthetic"  # "synthetic", or a path: a file (.txt/.gz/.bz2) or a directory of them
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    lowercase: bool = True
    token_pattern: str = r"[a-z']+"  # applied after lowercasing
    min_count: int = 5
    max_final_vocab: Optional[int] = None
    sample: float = 1e-3
    window: int = 5
    dynamic_window: bool = True
    # pairs of this many 65k-token chunks shuffled together: 1 = word2vec's sequential stream (a batch is one stretch
    # of text); 16 on topical text (manuals, Wikipedia) when a short run's held-out CE should not follow the topics
    mix_chunks: int = 1
    heldout_fraction: float = 0.01  # fraction of sentences (lines) held out, real text
    max_heldout_pairs: int = 20_000
    cache_dir: Optional[str] = None  # None: <runs_root>/.cache


@dataclass
class ModelConfig:
    dim: int = 100
    # the output table's start: 0 = zeros (word2vec); > 0 = normal entries of this standard deviation (seeded by
    # train.seed). The exact softmax from zeros sits at a saddle (each table's gradient is proportional to the other,
    # and the input vectors start at +-0.5/dim): on real text it stays at the unigram start for hundreds of steps;
    # e.g. 1/sqrt(dim) starts it off the saddle (configs/sweep_text.yaml)
    output_init: float = 0.0


@dataclass
class EvalConfig:
    every: int = 1000
    # also evaluate at this many log-spaced points of the run's progress (1 % ... 100 % of its steps or training
    # seconds): a learning curve whatever the budget; 0 = only every `every` steps and at the end
    curve_points: int = 0
    batch_size: int = 4096
    wordsim: Optional[str] = None  # each of these three: a path, or "gensim" (the copy in gensim's test data)
    simlex: Optional[str] = None
    analogy: Optional[str] = None
    analogy_restrict: int = 300_000
    # the held-out pairs the exact CE is measured on: "training" = drawn as the training stream draws its pairs
    # (data.sample's subsampling, data.dynamic_window's reduced windows), so the CE measures the model against the
    # distribution it is trained to fit (with "all" and data.sample > 0 the held-out CE RISES while the model learns:
    # it learns the subsampled frequencies); "all" = every pair within data.window, nothing dropped; "auto" = "all" on
    # the planted corpus without subsampling (its contexts do not depend on their offset: all pairs are already the
    # training distribution), "training" otherwise
    heldout: str = "auto"
    bias_diagnostics: bool = True
    projector_words: int = 1000


@dataclass
class Config:
    name: str = "run"
    runs_root: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_root) / self.name


# load_config(None): configs/quickstart.yaml, kept here so an installed package needs no data files
QUICKSTART: dict[str, Any] = {
    "name": "quickstart",
    "data": {"corpus": "synthetic", "sample": 0.0, "min_count": 1,
             "synthetic": {"vocab_size": 2000, "num_tokens": 300_000, "num_topics": 20, "heldout_sentences": 1000}},
    "model": {"dim": 64},
    "loss": {"name": "negative"},  # num_sampled: null, the loss's default (negative 5, sampled/nce 64 at V=2000)
    "train": {"epochs": 2, "device": "cpu", "log_every": 100, "checkpoint_every": 1000},
    "eval": {"every": 500, "projector_words": 500},
}


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> Config:
    """The defaults, then the YAML file at `path` (None: :data:`QUICKSTART`), then each ``key=value`` override;
    validated. Raises ConfigError naming the dotted key (or the file) on any mistake."""
    return validate(load(Config, path, overrides, defaults=QUICKSTART))


def validate(cfg: Config) -> Config:
    """Range and name checks (types were checked while loading). Raises ConfigError with one line naming the key,
    the value and the allowed range. Checks that need the vocabulary (num_sampled < V) are the trainer's."""
    d, s = cfg.data, cfg.data.synthetic
    at_least = [  # (key, value, minimum); None values (Optional, unset) are skipped
        ("model.dim", cfg.model.dim, 1), ("data.window", d.window, 1), ("data.min_count", d.min_count, 1),
        ("data.max_final_vocab", d.max_final_vocab, 1), ("data.max_heldout_pairs", d.max_heldout_pairs, 1),
        ("data.mix_chunks", d.mix_chunks, 1),
        ("data.sample", d.sample, 0), ("data.synthetic.vocab_size", s.vocab_size, 2),
        ("data.synthetic.num_topics", s.num_topics, 1), ("data.synthetic.sentence_length", s.sentence_length, 2),
        ("data.synthetic.num_tokens", s.num_tokens, 1), ("data.synthetic.seed", s.seed, 0),
        ("data.synthetic.zipf_exponent", s.zipf_exponent, 0), ("data.synthetic.topic_strength", s.topic_strength, 0),
        ("data.synthetic.heldout_sentences", s.heldout_sentences, 1),
        ("loss.num_sampled", cfg.loss.num_sampled, 1), ("optim.batch_size", cfg.optim.batch_size, 1),
        ("train.epochs", cfg.train.epochs, 1), ("train.max_steps", cfg.train.max_steps, 1),
        ("train.seed", cfg.train.seed, 0), ("train.log_every", cfg.train.log_every, 1),
        ("train.checkpoint_every", cfg.train.checkpoint_every, 1), ("eval.every", cfg.eval.every, 1),
        ("train.threads", cfg.train.threads, 0), ("eval.curve_points", cfg.eval.curve_points, 0),
        ("eval.batch_size", cfg.eval.batch_size, 1), ("eval.analogy_restrict", cfg.eval.analogy_restrict, 1),
        ("eval.projector_words", cfg.eval.projector_words, 0), ("model.output_init", cfg.model.output_init, 0),
        ("train.checkpoint_seconds", cfg.train.checkpoint_seconds, 0),
    ]
    for key, value, low in at_least:
        if value is not None and value < low:
            raise ConfigError(f"{key}={value!r} is out of range: must be >= {low}")
    if s.num_tokens < s.sentence_length:
        raise ConfigError(f"data.synthetic.num_tokens={s.num_tokens!r} is out of range: must be >= "
                          f"data.synthetic.sentence_length = {s.sentence_length!r} (one sentence)")
    for key, value in [("optim.alpha", cfg.optim.alpha), ("loss.memory_budget_mb", cfg.loss.memory_budget_mb),
                       ("train.max_seconds", cfg.train.max_seconds)]:
        if value is not None and not value > 0:
            raise ConfigError(f"{key}={value!r} is out of range: must be > 0")
    if not 0 <= cfg.optim.min_alpha <= cfg.optim.alpha:
        raise ConfigError(f"optim.min_alpha={cfg.optim.min_alpha!r} is out of range: "
                          f"must be in [0, optim.alpha] = [0, {cfg.optim.alpha!r}]")
    if not 0 <= d.heldout_fraction < 0.5:
        raise ConfigError(f"data.heldout_fraction={d.heldout_fraction!r} is out of range: must be in [0, 0.5)")
    if not 0 <= cfg.loss.label_smoothing <= 1:
        raise ConfigError(f"loss.label_smoothing={cfg.loss.label_smoothing!r} is out of range: must be in [0, 1]")
    for key, value in [("name", cfg.name), ("runs_root", cfg.runs_root), ("data.corpus", d.corpus)]:
        if not value.strip():
            raise ConfigError(f"{key} is empty: give a non-empty string")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+=,@-]*", cfg.name):
        raise ConfigError(f"name={cfg.name!r} is not a plain directory name: use letters, digits and ._+=,@- "
                          f"(group runs with runs_root instead of '/')")
    try:
        matches_empty = re.compile(d.token_pattern).fullmatch("") is not None
    except re.error as e:
        raise ConfigError(f"data.token_pattern={d.token_pattern!r} is not a regular expression: {e}") from None
    if matches_empty:
        raise ConfigError(f"data.token_pattern={d.token_pattern!r} matches the empty string: use + instead of *")
    if d.corpus == "synthetic" and (d.sample != 0 or d.min_count != 1):
        raise ConfigError(f"data.sample={d.sample!r}, data.min_count={d.min_count!r}: the planted corpus's Bayes "
                          f"optimum is exact only without subsampling and min_count: set data.sample=0 and "
                          f"data.min_count=1")
    check_choice("loss.name", cfg.loss.name, loss_choices(), EXCLUDED_LOSSES)
    check_choice("loss.sampler", cfg.loss.sampler, sampler_choices(), EXCLUDED_SAMPLERS)
    check_choice("optim.name", cfg.optim.name, OPTIMIZERS)
    check_choice("train.device", cfg.train.device, DEVICES)
    check_choice("eval.heldout", cfg.eval.heldout, ("auto", "training", "all"))
    return cfg
