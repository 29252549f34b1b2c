"""The strict config system every task shares: nested dataclasses hold every default; YAML files and ``--set a.b=c``
override them; and the config sections that every trainer has (loss, optim, train).

Loading is strict (nanoGPT's rule): an unknown key, a value of the wrong type or out of range is a ConfigError whose
one-line message names the dotted key (``data.window``), the value and what is allowed, with a did-you-mean for
misspelt keys and names. Types come from the dataclasses' annotations: ``int``, ``float``, ``bool``, ``str``,
``Optional[...]`` (accepts null) and nested sections. A bool is not an int; an int is accepted for a float; so is a
numeric string, because YAML 1.1 (PyYAML) reads ``1e-3`` (no dot) as the string "1e-3".

A task's config module defines its root dataclass, its ``validate`` and a ``load_*`` function on top of :func:`load`
(see ``sampledsoftmax/embeddings/config.py`` and ``sampledsoftmax/lm/config.py``; the layering is in
docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union, get_args, get_origin, get_type_hints

import yaml

from ..data.textfile import read_text
from ..errors import ConfigError, did_you_mean

OPTIMIZERS = ("sgd", "adagrad", "adam", "sparse_adam")
MAX_YAML_BYTES = 4 << 20  # a config or sweep file is a few kB; a larger "config" is a corpus given by mistake
DEVICES = ("cpu", "cuda", "auto")
# registry names that no trainer offers, and why (the message of the error)
EXCLUDED_LOSSES = {"ova": "ova (one-vs-all) is a multi-label loss, not a skip-gram loss or a next-token loss"}
EXCLUDED_SAMPLERS = {
    "inbatch": "in-batch candidates are chosen with loss.name=inbatch, not as a sampler",
    "all": "'all' samples every class: use loss.name=full for the exact softmax",
}


@dataclass
class LossConfig:
    name: str = "negative"  # a name in sampledsoftmax.LOSSES except "ova"
    sampler: str = "unigram"  # a name in sampledsoftmax.SAMPLERS except "all" and "inbatch"
    # candidates per step of the losses that sample (sampled, nce, negative); null (the default) = the loss's own
    # default at the run's vocabulary size V, so that loss.name alone switches losses: negative 5 (word2vec),
    # sampled and nce ~1 % of V within [64, 1024] (training/builders.py:resolve_num_sampled); must be < V
    num_sampled: Optional[int] = None
    ns_exponent: float = 0.75
    subtract_log_q: bool = True
    remove_accidental_hits: Optional[bool] = None  # None: the loss's default
    sparse: bool = True
    memory_budget_mb: Optional[float] = None  # None: the loss's default
    label_smoothing: float = 0.0
    # the last fraction of the run (of its steps or training seconds, whichever budget is further along) trains
    # with the exact softmax on the same output layer: 0 = never, 0.1 = the last 10 % (a sampled loss only)
    finish_with_full: float = 0.0


@dataclass
class OptimConfig:
    """The optimizer and its learning rate (training/builders.py:build_optimizers).

    `name`, and what it runs on the trainers' tables (the input table: the skip-gram model's word embedding or the
    LM's token embedding; the output table: the loss's [V, d] weight and bias):

    - ``sgd``: torch.optim.SGD (no momentum) on every parameter. Sparse row gradients (the skip-gram input table;
      a sampled loss's output table with loss.sparse) update only the rows of the step. No optimizer state.
    - ``adagrad``: torch.optim.Adagrad on every parameter, row updates for sparse gradients as SGD; one dense
      accumulator per parameter (V x d per table).
    - ``sparse_adam``: torch.optim.SparseAdam for the tables with sparse gradients (the skip-gram input table, a
      sampled loss's output table with loss.sparse): "lazy" Adam, only the rows of the step move, and their
      moments; torch.optim.Adam for every other parameter. Two dense moments per parameter (2 x V x d per table).
    - ``adam``: in the skip-gram trainer the input table is then built with dense gradients and updated by dense
      torch.optim.Adam, an O(V x d) update of every row on every step; a sampled output table with loss.sparse
      still goes to SparseAdam. In train-lm (whose token embedding is always dense) adam and sparse_adam differ
      only for a sampled output table with loss.sparse. Two moments per parameter.

    `alpha`, the learning rate at the start of the run, decayed linearly to `min_alpha` over the run's budget, is
    passed to the optimizer as its lr; what a unit of it means depends on how the trainer scales the loss:

    - skip-gram trainer (`train`) with ``sgd``: the loss is SUMMED over the pairs of the (global) batch, so alpha
      is word2vec's per-pair rate: each pair moves its rows by alpha x its own gradient, whatever the batch size
      (word2vec/gensim's alpha = 0.025).
    - skip-gram trainer with ``adagrad``, ``adam``, ``sparse_adam``: the loss is the batch MEAN (these optimizers
      are invariant to the loss's scale, so alpha is their usual step size, e.g. 0.001-0.01 for Adam).
    - LM trainer (`train-lm`), every optimizer: the loss is the MEAN over the batch's tokens, so with ``sgd`` alpha
      is a per-batch rate (a per-token rate of alpha / (batch_size x seq_len)); with Adam the usual step size.
    """

    name: str = "sgd"  # sgd | adagrad | adam | sparse_adam: what each runs is in the docstring above
    alpha: float = 0.025  # skip-gram + sgd: per pair (summed loss); otherwise per step on the batch mean
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
    # also checkpoint once this many seconds of wall time have passed since the last one (null or 0: steps only),
    # so a hard kill (SIGKILL, a node failure) loses minutes, not thousands of steps; SIGTERM always checkpoints
    checkpoint_seconds: Optional[float] = 300.0
    fused: bool = True  # skip-gram SGNS + SGD: steps without autograd, same result (embeddings/fused.py); not LM
    # skip-gram SGNS + SGD on the CPU: word2vec's compiled per-pair loop (embeddings/sgns_kernel.py, numba) in place
    # of the torch step; its negatives come from the loss's noise distribution keyed by (seed, step), not from the
    # loss's generator. false: the torch fused step (the autograd path's exact draws)
    kernel: bool = True
    threads: int = 0  # the compiled step's Hogwild threads; 0: one per CPU core
    # the compiled step in order, one thread: a run and its resume are bit-identical (Hogwild threads are not)
    deterministic: bool = False


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


def _from_dict(cls: type, raw: Any, prefix: str = "", base: Any = None, root: Optional[type] = None) -> Any:
    """Build dataclass `cls` from a mapping; every key must be a field. Keys not given keep the value in `base`
    (default: `cls()`), so a section's defaults set by its parent's `default_factory` survive a partial override."""
    root = root or cls
    where = prefix[:-1] or "the config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {raw!r} ({_type_name(raw)})")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k in raw:
        if k not in names:
            raise ConfigError(_unknown_key(k, prefix, names, root))
    base = cls() if base is None else base
    values = {}
    for k, v in raw.items():
        if dataclasses.is_dataclass(hints[k]) and isinstance(v, dict):
            values[k] = _from_dict(hints[k], v, f"{prefix}{k}.", getattr(base, k), root)
        else:
            values[k] = _convert(v, hints[k], f"{prefix}{k}")
    return dataclasses.replace(base, **values)


def _leaf_keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        tp = get_type_hints(cls)[f.name]
        out += _leaf_keys(tp, f"{prefix}{f.name}.") if dataclasses.is_dataclass(tp) else [f"{prefix}{f.name}"]
    return out


def _unknown_key(name: Any, prefix: str, siblings: Sequence[str], root: type) -> str:
    """'unknown key "data.windw" (did you mean "data.window"?)', or a key of that name in another section."""
    hint = did_you_mean(str(name), siblings)
    if hint:
        hint = hint.replace(' "', f' "{prefix}', 1)
    else:
        elsewhere = [k for k in _leaf_keys(root) if k.rsplit(".", 1)[-1] == str(name)]
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


def read_yaml(path: Union[str, Path], what: str = "config file", strict: bool = True) -> dict:
    """The mapping at the top of the YAML file `path` ({} for an empty file). Every way of failing is one ConfigError
    naming the file (`what` says which kind): missing, unreadable, not UTF-8, a syntax error (with its line), a key
    given twice in one mapping (`strict`), or something other than a mapping at the top."""
    name = str(path)
    text = read_text(path, what, "check the path: give a YAML file", error=ConfigError, max_bytes=MAX_YAML_BYTES)
    try:
        raw = yaml.load(text, Loader=_StrictLoader if strict else yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{what} {name!r}{line}: YAML syntax error: {problem}") from None
    except ConfigError as e:
        raise ConfigError(f"{what} {name!r}: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {name!r}: expected a mapping of keys at the top, got {_type_name(raw)}")
    return raw


def apply_override(raw: dict, text: str, root: type) -> None:
    """Set one ``a.b=c`` in the raw mapping; the value is YAML (``loss.num_sampled=64``, ``eval.wordsim=null``).
    Keys are checked against the dataclass `root` (a task's config class)."""
    key, eq, value_text = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise ConfigError(f"malformed override {text!r}: expected key=value, e.g. loss.name=sampled")
    parts = key.split(".")
    cls, node = root, raw
    for i, part in enumerate(parts):
        prefix = "".join(p + "." for p in parts[:i])
        if cls is None:
            raise ConfigError(f"{key}: {prefix[:-1]} is a value, not a section with keys")
        names = [f.name for f in dataclasses.fields(cls)]
        if part not in names:
            raise ConfigError(_unknown_key(part, prefix, names, root))
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
            current = node.get(part)
            if current is not None and not isinstance(current, dict) and dataclasses.is_dataclass(tp):
                # the file gave the section a value: an override must not silently replace the user's mistake
                raise ConfigError(f"{prefix}{part}: expected a mapping of keys, got {current!r} "
                                  f"({_type_name(current)}); fix the config file (e.g. {prefix}{part}: {{...}})")
            if not isinstance(current, dict):
                node[part] = {}
            cls, node = (tp if dataclasses.is_dataclass(tp) else None), node[part]


def load(cls: type, path: Optional[Union[str, Path]], overrides: Sequence[str] = (),
         defaults: Optional[dict] = None) -> Any:
    """Build the config dataclass `cls`: its defaults, then the YAML file at `path` (None: the mapping `defaults`,
    or nothing), then each ``key=value`` override. Types are checked here; ranges are the caller's `validate`."""
    raw = read_yaml(path) if path is not None else _deepcopy(defaults or {})
    for text in overrides:
        apply_override(raw, text, cls)
    return _from_dict(cls, raw)


def _deepcopy(d: dict) -> dict:
    return {k: _deepcopy(v) if isinstance(v, dict) else v for k, v in d.items()}


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict of builtins (YAML/JSON-ready), every key present."""
    return dataclasses.asdict(cfg)


# What a checkpoint's saved state is shaped by: the weights (model.*, except dropout, which has none), the loss's
# parameters and buffers (loss.name, loss.sampler) and the optimizers and their parameter groups (optim.name; and
# loss.sparse under Adam, which splits the parameters between SparseAdam and Adam by it). A resumed run must keep
# these; everything else (rates, budgets, evaluation, ...) may change.
RESUME_KEYS = ("model.", "loss.name", "loss.sampler", "loss.sparse", "optim.name")
_RESUME_FREE = ("model.dropout",)
_SPLIT_BY_SPARSITY = ("adam", "sparse_adam")


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _yaml_text(value: Any) -> str:
    return "null" if value is None else ("true" if value else "false") if isinstance(value, bool) else str(value)


def check_resume_config(saved: dict, cfg: Any, run_dir: Union[str, Path]) -> None:
    """Raise a one-line ConfigError when `cfg` changes a key of :data:`RESUME_KEYS` from the value in `saved`, the
    run's config as ``config_to_dict`` wrote it (its config.yaml, or a checkpoint's "config"): the saved weights,
    loss state or optimizer state would not load. Keys missing from `saved` (an older run) are not compared."""
    before, now = _flat(saved), _flat(config_to_dict(cfg))
    for key, value in now.items():
        if not key.startswith(RESUME_KEYS) or key in _RESUME_FREE or key not in before or before[key] == value:
            continue
        if key == "loss.sparse" and now.get("optim.name") not in _SPLIT_BY_SPARSITY:
            continue  # SGD and Adagrad keep one parameter group whatever the gradients' layout
        old = _yaml_text(before[key])
        raise ConfigError(f"cannot --resume {run_dir}: it was trained with {key}={old}, not {_yaml_text(value)}; "
                          f"resume with --set {key}={old}, or drop --resume to start a new run")


def check_resumable_run(cfg: Any) -> None:
    """Before any data is built: `cfg` against the config.yaml of the run it resumes (runs_root/name), by
    :func:`check_resume_config`. A run without a readable config.yaml is left to the checkpoint's own checks."""
    run_dir = Path(cfg.runs_root) / cfg.name
    try:
        saved = read_yaml(run_dir / "config.yaml", "run config")
    except ConfigError:
        return
    check_resume_config(saved, cfg, run_dir)


def save_config(cfg: Any, path: Union[str, Path]) -> Path:
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


def check_choice(key: str, value: str, choices: Sequence[str], excluded: Optional[dict] = None) -> None:
    if value in choices:
        return
    if excluded and value in excluded:
        raise ConfigError(f"{key}={value!r} is not allowed: {excluded[value]}; choose from {', '.join(choices)}")
    raise ConfigError(f"{key}: unknown value {value!r}{did_you_mean(value, choices)}; choose from {', '.join(choices)}")
