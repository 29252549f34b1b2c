"""The trainer's configuration: nested dataclasses hold every default; YAML files and ``--set a.b=c`` override them.

    cfg = load_config("configs/text8.yaml", ["loss.name=sampled", "loss.num_sampled=1024"])
    save_config(cfg, cfg.run_dir / "config.yaml")           # the resolved config; load_config reads it back equal

Loading is strict (nanoGPT's rule): an unknown key, a value of the wrong type or out of range is a ConfigError whose
one-line message names the dotted key (``data.window``), the value and what is allowed, with a did-you-mean for
misspelt keys and names. Types come from the dataclasses' annotations: ``int``, ``float``, ``bool``, ``str``,
``Optional[...]`` (accepts null) and nested sections. A bool is not an int; an int is accepted for a float; so is a
numeric string, because YAML 1.1 (PyYAML) reads ``1e-3`` (no dot) as the string "1e-3".

``load_config(None)`` is the quickstart run: the dataclass defaults with :data:`QUICKSTART` applied (the same values
as ``configs/quickstart.yaml``; a test keeps them equal), so the trainer runs with no file at all. The dataclass
defaults themselves are word2vec/gensim's for real text: they fail validation with ``data.corpus: synthetic``,
whose exact Bayes optimum needs ``data.sample=0`` and ``data.min_count=1``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union, get_args, get_origin, get_type_hints

import yaml

from sampledsoftmax.errors import ConfigError, did_you_mean

OPTIMIZERS = ("sgd", "adagrad", "adam", "sparse_adam")
DEVICES = ("cpu", "cuda", "auto")
# registry names that are not skip-gram choices, and why (the message of the error)
EXCLUDED_LOSSES = {"ova": "ova (one-vs-all) is a multi-label loss, not a skip-gram loss"}
EXCLUDED_SAMPLERS = {
    "inbatch": "in-batch candidates are chosen with loss.name=inbatch, not as a sampler",
    "all": "'all' samples every class: use loss.name=full for the exact softmax",
}


@dataclass
class SyntheticConfig:
    """The planted corpus (``sampledsoftmax.embeddings.synthetic``): Zipfian words, topic-conditioned sentences."""

    vocab_size: int = 10_000
    num_tokens: int = 1_000_000
    num_topics: int = 50
    sentence_length: int = 20
    zipf_exponent: float = 1.0
    topic_strength: float = 5.0
    heldout_sentences: int = 2_000
    seed: int = 0


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
    heldout_fraction: float = 0.01  # fraction of sentences (lines) held out, real text
    max_heldout_pairs: int = 20_000
    cache_dir: Optional[str] = None  # None: <runs_root>/.cache


@dataclass
class ModelConfig:
    dim: int = 100


@dataclass
class LossConfig:
    name: str = "negative"  # a name in sampledsoftmax.LOSSES except "ova"
    sampler: str = "unigram"  # a name in sampledsoftmax.SAMPLERS except "all" and "inbatch"
    num_sampled: int = 5
    ns_exponent: float = 0.75
    subtract_log_q: bool = True
    remove_accidental_hits: Optional[bool] = None  # None: the loss's default
    sparse: bool = True
    memory_budget_mb: Optional[float] = None  # None: the loss's default
    label_smoothing: float = 0.0


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adagrad | adam | sparse_adam
    alpha: float = 0.025
    min_alpha: float = 0.0001
    batch_size: int = 1024


@dataclass
class TrainConfig:
    epochs: int = 5
    max_steps: Optional[int] = None
    max_seconds: Optional[float] = None  # a wall-clock budget for the training steps (evaluation excluded)
    seed: int = 0
    device: str = "auto"  # cpu | cuda | auto
    bf16: bool = False
    log_every: int = 100
    checkpoint_every: int = 2000
    fused: bool = True  # skip-gram SGNS + SGD: steps without autograd, same result (embeddings/fused.py); not LM


@dataclass
class EvalConfig:
    every: int = 1000
    batch_size: int = 4096
    wordsim: Optional[str] = None  # each of these three: a path, or "gensim" (the copy in gensim's test data)
    simlex: Optional[str] = None
    analogy: Optional[str] = None
    analogy_restrict: int = 300_000
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
    "loss": {"name": "negative", "num_sampled": 5},
    "train": {"epochs": 2, "device": "cpu", "log_every": 100, "checkpoint_every": 1000},
    "eval": {"every": 500, "projector_words": 500},
}


# ------------------------------------------------------------------------------------------------ dict -> dataclass

_FLOAT_TEXT = re.compile(r"[-+]?(\d[\d_]*(\.[\d_]*)?|\.\d[\d_]*)([eE][-+]?\d+)?")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` and return it converted (int -> float, "1e-3" -> 0.001)."""
    if get_origin(tp) in (Union, types.UnionType):  # Optional[X], X | None
        if value is None:
            return None
        (tp,) = [a for a in get_args(tp) if a is not type(None)]
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, {} if value is None else value, key + ".")
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float:
        number = value
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            number = float(value.strip())
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            if not math.isfinite(number):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            return float(number)
    if tp is str and isinstance(value, str):
        return value
    hints = {int: "an integer (write 1000000 or 1_000_000, not 1e6)", float: "a number", bool: "true or false",
             str: "a string (quote it in YAML)"}
    if tp not in hints:
        raise TypeError(f"config field {key} has an unsupported annotation {tp!r}")  # a bug in the dataclasses
    hint = hints[tp]
    raise ConfigError(f"{key}: expected {hint}, got {value!r} ({_type_name(value)})")


def _from_dict(cls: type, raw: Any, prefix: str = "", base: Any = None) -> Any:
    """Build dataclass `cls` from a mapping; every key must be a field. Keys not given keep the value in `base`
    (default: `cls()`), so a section's defaults set by its parent's `default_factory` survive a partial override."""
    where = prefix[:-1] or "the config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {raw!r} ({_type_name(raw)})")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k in raw:
        if k not in names:
            raise ConfigError(_unknown_key(k, prefix, names))
    base = cls() if base is None else base
    values = {}
    for k, v in raw.items():
        if dataclasses.is_dataclass(hints[k]) and isinstance(v, dict):
            values[k] = _from_dict(hints[k], v, f"{prefix}{k}.", getattr(base, k))
        else:
            values[k] = _convert(v, hints[k], f"{prefix}{k}")
    return dataclasses.replace(base, **values)


def _leaf_keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        tp = get_type_hints(cls)[f.name]
        out += _leaf_keys(tp, f"{prefix}{f.name}.") if dataclasses.is_dataclass(tp) else [f"{prefix}{f.name}"]
    return out


def _unknown_key(name: Any, prefix: str, siblings: Sequence[str]) -> str:
    """'unknown key "data.windw" (did you mean "data.window"?)', or a key of that name in another section."""
    hint = did_you_mean(str(name), siblings)
    if hint:
        hint = hint.replace(' "', f' "{prefix}', 1)
    else:
        elsewhere = [k for k in _leaf_keys(Config) if k.rsplit(".", 1)[-1] == str(name)]
        hint = f' (did you mean "{elsewhere[0]}"?)' if elsewhere else ""
    section = f"section {prefix[:-1]!r}" if prefix else "the top level"
    return f'unknown key "{prefix}{name}"{hint}; keys of {section}: {", ".join(siblings)}'


# --------------------------------------------------------------------------------------------------- load / save


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML silently keeps the last)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1}): give each key once")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _read_yaml(path: Union[str, Path]) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror or e}") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file {str(path)!r}{line}: YAML syntax error: {problem}") from None
    except ConfigError as e:
        raise ConfigError(f"config file {str(path)!r}: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping of keys at the top, got {_type_name(raw)}")
    return raw


def _apply_override(raw: dict, text: str, root: Optional[type] = None) -> None:
    """Set one ``a.b=c`` in the raw mapping; the value is YAML (``loss.num_sampled=64``, ``eval.wordsim=null``).
    Keys are checked against the dataclass `root` (default: this trainer's Config)."""
    key, eq, value_text = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise ConfigError(f"malformed override {text!r}: expected key=value, e.g. loss.name=sampled")
    parts = key.split(".")
    cls, node = root or Config, raw
    for i, part in enumerate(parts):
        prefix = "".join(p + "." for p in parts[:i])
        if cls is None:
            raise ConfigError(f"{key}: {prefix[:-1]} is a value, not a section with keys")
        names = [f.name for f in dataclasses.fields(cls)]
        if part not in names:
            raise ConfigError(_unknown_key(part, prefix, names))
        tp = get_type_hints(cls)[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                first = _leaf_keys(tp, key + ".")[0]
                raise ConfigError(f"{key} is a section, not a value: set its keys one by one, e.g. {first}=...")
            try:
                value = yaml.safe_load(value_text)
            except yaml.YAMLError:
                value = value_text
            if str in get_args(tp) + (tp,) and value is not None and not isinstance(value, str):
                value = value_text.strip()  # a string field takes the text as written: name=42, token_pattern=[a-z]+
            node[part] = value
        else:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            cls, node = (tp if dataclasses.is_dataclass(tp) else None), node[part]


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> Config:
    """The defaults, then the YAML file at `path` (None: :data:`QUICKSTART`), then each ``key=value`` override;
    validated. Raises ConfigError naming the dotted key (or the file) on any mistake."""
    raw = _read_yaml(path) if path is not None else _deepcopy(QUICKSTART)
    for text in overrides:
        _apply_override(raw, text)
    cfg = _from_dict(Config, raw)
    validate(cfg)
    return cfg


def _deepcopy(d: dict) -> dict:
    return {k: _deepcopy(v) if isinstance(v, dict) else v for k, v in d.items()}


def config_to_dict(cfg: Config) -> dict:
    """Plain nested dict of builtins (YAML/JSON-ready), every key present."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: Union[str, Path]) -> Path:
    """Write the resolved config as YAML (atomically: temporary file, then rename). ``load_config`` reads it back
    to an equal Config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# resolved config: every key, defaults included\n" + yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------------------ validate


def loss_choices() -> list[str]:
    from sampledsoftmax import LOSSES  # the core imports torch: only when validating

    return sorted(set(LOSSES) - set(EXCLUDED_LOSSES))


def sampler_choices() -> list[str]:
    from sampledsoftmax import SAMPLERS

    return sorted(set(SAMPLERS) - set(EXCLUDED_SAMPLERS))


def _check_choice(key: str, value: str, choices: Sequence[str], excluded: Optional[dict] = None) -> None:
    if value in choices:
        return
    if excluded and value in excluded:
        raise ConfigError(f"{key}={value!r} is not allowed: {excluded[value]}; choose from {', '.join(choices)}")
    raise ConfigError(f"{key}: unknown value {value!r}{did_you_mean(value, choices)}; choose from {', '.join(choices)}")


def validate(cfg: Config) -> Config:
    """Range and name checks (types were checked while loading). Raises ConfigError with one line naming the key,
    the value and the allowed range. Checks that need the vocabulary (num_sampled < V) are the trainer's."""
    d, s = cfg.data, cfg.data.synthetic
    at_least = [  # (key, value, minimum); None values (Optional, unset) are skipped
        ("model.dim", cfg.model.dim, 1), ("data.window", d.window, 1), ("data.min_count", d.min_count, 1),
        ("data.max_final_vocab", d.max_final_vocab, 1), ("data.max_heldout_pairs", d.max_heldout_pairs, 1),
        ("data.sample", d.sample, 0), ("data.synthetic.vocab_size", s.vocab_size, 2),
        ("data.synthetic.num_topics", s.num_topics, 1), ("data.synthetic.sentence_length", s.sentence_length, 2),
        ("data.synthetic.num_tokens", s.num_tokens, 1), ("data.synthetic.seed", s.seed, 0),
        ("data.synthetic.zipf_exponent", s.zipf_exponent, 0), ("data.synthetic.topic_strength", s.topic_strength, 0),
        ("data.synthetic.heldout_sentences", s.heldout_sentences, 1),
        ("loss.num_sampled", cfg.loss.num_sampled, 1), ("optim.batch_size", cfg.optim.batch_size, 1),
        ("train.epochs", cfg.train.epochs, 1), ("train.max_steps", cfg.train.max_steps, 1),
        ("train.seed", cfg.train.seed, 0), ("train.log_every", cfg.train.log_every, 1),
        ("train.checkpoint_every", cfg.train.checkpoint_every, 1), ("eval.every", cfg.eval.every, 1),
        ("eval.batch_size", cfg.eval.batch_size, 1), ("eval.analogy_restrict", cfg.eval.analogy_restrict, 1),
        ("eval.projector_words", cfg.eval.projector_words, 0),
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
    _check_choice("loss.name", cfg.loss.name, loss_choices(), EXCLUDED_LOSSES)
    _check_choice("loss.sampler", cfg.loss.sampler, sampler_choices(), EXCLUDED_SAMPLERS)
    _check_choice("optim.name", cfg.optim.name, OPTIMIZERS)
    _check_choice("train.device", cfg.train.device, DEVICES)
    return cfg
