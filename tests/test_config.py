"""Config loading: defaults, YAML and --set overrides, strict types, range checks, round trip, shipped configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sampledsoftmax import LOSSES, SAMPLERS
from sampledsoftmax.embeddings.config import (
    QUICKSTART,
    Config,
    ConfigError,
    DataConfig,
    config_to_dict,
    load_config,
    loss_choices,
    sampler_choices,
    save_config,
    validate,
)

ROOT = Path(__file__).resolve().parents[1]


def iter_config_files() -> list[Path]:
    """Every shipped embedding-trainer config, ``configs/*.yaml`` and ``*.yml`` (sorted), for tests that load and
    build each one. Language-model configs (``lm_*``) and sweep configs (``sweep*``) have tests of their own."""
    return sorted(p for p in (ROOT / "configs").iterdir()
                  if p.suffix in (".yaml", ".yml") and not p.name.startswith(("lm_", "sweep")))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------------- defaults


def test_quickstart_default_validates_and_real_text_defaults_validate():
    cfg = load_config(None)
    assert cfg.name == "quickstart" and cfg.data.sample == 0.0 and cfg.data.min_count == 1
    assert cfg.run_dir == Path("runs") / "quickstart"
    # the dataclass defaults are gensim's for real text: valid once the corpus is a path
    real = Config(data=DataConfig(corpus="data/text8"))
    assert validate(real) is real
    assert (real.data.window, real.data.sample, real.data.min_count, real.loss.num_sampled) == (5, 1e-3, 5, 5)


def test_bare_defaults_on_the_synthetic_corpus_ask_for_sample_0_and_min_count_1():
    with pytest.raises(ConfigError, match=r"set data\.sample=0 and data\.min_count=1"):
        validate(Config())


def test_quickstart_file_equals_the_embedded_default():
    assert load_config(ROOT / "configs" / "quickstart.yaml") == load_config(None)
    assert QUICKSTART["name"] == "quickstart"


def test_choices_come_from_the_registries_minus_the_excluded():
    assert set(loss_choices()) == set(LOSSES) - {"ova"} and "negative" in loss_choices()
    assert set(sampler_choices()) == set(SAMPLERS) - {"all", "inbatch"} and "log_uniform" in sampler_choices()


# --------------------------------------------------------------------------------------------------- overrides


def test_yaml_overrides_defaults_and_keeps_the_rest(tmp_path):
    cfg = load_config(write(tmp_path, "name: a\ndata:\n  corpus: corpus.txt\n  window: 8\nloss: {name: full}\n"))
    assert (cfg.name, cfg.data.corpus, cfg.data.window, cfg.loss.name) == ("a", "corpus.txt", 8, "full")
    assert cfg.data.min_count == 5 and cfg.model.dim == 100 and cfg.optim.alpha == 0.025  # defaults kept


def test_empty_yaml_file_and_empty_section_mean_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "data:\n  corpus: x.txt\nmodel:\n"), ["name=b"])
    assert cfg.model.dim == 100 and cfg.name == "b"
    with pytest.raises(ConfigError, match=r"data\.sample=0"):  # empty file: bare defaults, synthetic corpus
        load_config(write(tmp_path, ""))


def test_set_overrides_nested_keys_with_yaml_typed_values(tmp_path):
    path = write(tmp_path, "data: {corpus: c.txt, window: 8}\n")
    cfg = load_config(path, ["data.window=3", "loss.name=sampled", "loss.num_sampled=64", "optim.alpha=0.5",
                             "data.synthetic.vocab_size=1_000", "loss.remove_accidental_hits=false",
                             "eval.wordsim=gensim", "data.max_final_vocab=null", "data.window=4"])
    assert cfg.data.window == 4  # later overrides win, over the file too
    assert (cfg.loss.name, cfg.loss.num_sampled, cfg.optim.alpha) == ("sampled", 64, 0.5)
    assert cfg.data.synthetic.vocab_size == 1000 and cfg.loss.remove_accidental_hits is False
    assert cfg.eval.wordsim == "gensim" and cfg.data.max_final_vocab is None
    assert type(cfg.optim.alpha) is float and type(cfg.loss.num_sampled) is int


def test_set_on_a_string_key_takes_the_text_as_written():
    cfg = load_config(None, ["name=42", "data.token_pattern=[a-z]+", "data.cache_dir=/tmp/c"])
    assert (cfg.name, cfg.data.token_pattern, cfg.data.cache_dir) == ("42", "[a-z]+", "/tmp/c")
    assert load_config(None, ["data.cache_dir=null"]).data.cache_dir is None


def test_int_is_accepted_for_a_float_and_yaml11_numeric_strings_too(tmp_path):
    cfg = load_config(write(tmp_path, "data: {corpus: c.txt, sample: 1e-3}\noptim: {alpha: 1, min_alpha: 5E-5}\n"))
    assert cfg.data.sample == 1e-3 and type(cfg.data.sample) is float
    assert cfg.optim.alpha == 1.0 and type(cfg.optim.alpha) is float and cfg.optim.min_alpha == 5e-5
    assert load_config(None, ["loss.memory_budget_mb=2.5e2"]).loss.memory_budget_mb == 250.0


# ------------------------------------------------------------------------------------------------------ errors

ERRORS = [  # (overrides on the quickstart, fragments the one-line message must contain)
    (["data.windw=3"], ['"data.windw"', 'did you mean "data.window"']),
    (["loss.nme=full"], ['"loss.nme"', 'did you mean "loss.name"']),
    (["data.synthetic.vocab=9"], ['"data.synthetic.vocab"', 'did you mean "data.synthetic.vocab_size"']),
    (["window=3"], ['"window"', 'did you mean "data.window"']),
    (["data=3"], ["data is a section", "data.corpus="]),
    (["data.synthetic=x"], ["data.synthetic is a section"]),
    (["model.dim.x=1"], ["model.dim.x", "model.dim is a value"]),
    (["model.dim"], ["malformed override", "expected key=value"]),
    (["=3"], ["malformed override", "expected key=value"]),
    (["model.dim=true"], ["model.dim", "expected an integer", "bool"]),
    (["model.dim=64.0"], ["model.dim", "expected an integer", "float"]),
    (["model.dim=1e6"], ["model.dim", "expected an integer"]),
    (["optim.alpha=false"], ["optim.alpha", "expected a number", "bool"]),
    (["optim.alpha=fast"], ["optim.alpha", "expected a number", "'fast'"]),
    (["optim.alpha=.inf"], ["optim.alpha", "finite"]),
    (["train.bf16=1"], ["train.bf16", "expected true or false"]),
    (["model.dim=null"], ["model.dim", "null"]),
    (["model.dim=0"], ["model.dim=0", ">= 1"]),
    (["data.window=0"], ["data.window=0", ">= 1"]),
    (["loss.num_sampled=0"], ["loss.num_sampled=0", ">= 1"]),
    (["optim.alpha=0"], ["optim.alpha=0.0", "> 0"]),
    (["optim.min_alpha=-1e-4"], ["optim.min_alpha=-0.0001", "[0, optim.alpha]"]),
    (["optim.min_alpha=0.5"], ["optim.min_alpha=0.5", "[0, 0.025]"]),
    (["data.corpus=c.txt", "data.sample=-1e-3"], ["data.sample=-0.001", ">= 0"]),
    (["data.corpus=c.txt", "data.min_count=0"], ["data.min_count=0", ">= 1"]),
    (["optim.batch_size=0"], ["optim.batch_size=0", ">= 1"]),
    (["train.epochs=0"], ["train.epochs=0", ">= 1"]),
    (["data.heldout_fraction=0.5"], ["data.heldout_fraction=0.5", "[0, 0.5)"]),
    (["data.heldout_fraction=-0.1"], ["data.heldout_fraction=-0.1", "[0, 0.5)"]),
    (["train.max_steps=0"], ["train.max_steps=0", ">= 1"]),
    (["data.synthetic.num_tokens=10"], ["data.synthetic.num_tokens=10", "sentence_length"]),
    (["loss.name=sampeld"], ["loss.name", "'sampeld'", 'did you mean "sampled"', "negative"]),
    (["loss.name=ova"], ["loss.name='ova'", "multi-label", "not a skip-gram loss"]),
    (["loss.sampler=unigramm"], ["loss.sampler", 'did you mean "unigram"']),
    (["loss.sampler=inbatch"], ["loss.sampler='inbatch'", "loss.name=inbatch"]),
    (["loss.sampler=all"], ["loss.sampler='all'", "loss.name=full"]),
    (["optim.name=adamw"], ["optim.name", "'adamw'", 'did you mean "adam"', "sparse_adam"]),
    (["train.device=gpu"], ["train.device", "'gpu'", "cpu, cuda, auto"]),
    (["data.sample=1e-3"], ["data.sample=0.001", "set data.sample=0 and data.min_count=1"]),
    (["data.min_count=5"], ["data.min_count=5", "set data.sample=0 and data.min_count=1"]),
    (["data.token_pattern=[a-z"], ["data.token_pattern", "not a regular expression"]),
    (["data.token_pattern=\\w*"], ["data.token_pattern", "empty string"]),
    (["name=a/b"], ["name='a/b'", "runs_root"]),
    (["loss.label_smoothing=2"], ["loss.label_smoothing=2.0", "[0, 1]"]),
]


@pytest.mark.parametrize("overrides, fragments", ERRORS, ids=[" ".join(o) for o, _ in ERRORS])
def test_every_mistake_is_one_line_naming_the_key(overrides, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("text, fragments", [
    ("model:\n  dimm: 3\n", ['"model.dimm"', 'did you mean "model.dim"']),
    ("data: 3\n", ["data: expected a mapping", "3"]),
    ("model: {dim: '64'}\n", ["model.dim", "expected an integer", "'64'"]),
    ("data: {corpus: 2024}\n", ["data.corpus", "expected a string", "2024"]),
    ("- a\n- b\n", ["c.yaml", "expected a mapping"]),
    ("model:\n  dim: [3\n", ["c.yaml", "line", "YAML syntax error"]),
    ("model:\n  dim: 3\n  dim: 4\n", ["c.yaml", "duplicate key 'dim'", "line 3"]),
])
def test_yaml_file_mistakes_name_the_key_or_the_file(tmp_path, text, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_optional_fields_accept_null_and_their_type(tmp_path):
    cfg = load_config(write(tmp_path, "data: {corpus: c, max_final_vocab: 30000, cache_dir: null}\n"
                                      "loss: {memory_budget_mb: 64, remove_accidental_hits: null}\n"))
    assert cfg.data.max_final_vocab == 30000 and cfg.data.cache_dir is None
    assert cfg.loss.memory_budget_mb == 64.0 and cfg.loss.remove_accidental_hits is None
    with pytest.raises(ConfigError, match=r"data\.max_final_vocab=0 .*>= 1"):
        load_config(write(tmp_path, "data: {corpus: c, max_final_vocab: 0}\n"))


# -------------------------------------------------------------------------------------------------- round trip


def test_save_load_round_trip_gives_an_equal_config(tmp_path):
    cfg = load_config(None, ["loss.name=sampled", "loss.sampler=log_uniform", "loss.num_sampled=100",
                             "data.max_final_vocab=1500", "loss.memory_budget_mb=1e2", "eval.analogy=q.txt",
                             "data.token_pattern=[a-z0-9']+", "optim.min_alpha=1e-7", "train.max_steps=10"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert path.exists() and not list(path.parent.glob(".*tmp*"))
    again = load_config(path)
    assert again == cfg and config_to_dict(again) == config_to_dict(cfg)
    assert set(config_to_dict(cfg)) == {f.name for f in dataclasses.fields(Config)}
    text = path.read_text()
    assert "vocab_size: 2000" in text and "label_smoothing" in text  # every key written, defaults included


# --------------------------------------------------------------------------------------------- shipped configs


def test_the_shipped_configs_are_there():
    names = {p.name for p in iter_config_files()}
    assert {"quickstart.yaml", "text8.yaml", "synthetic_large.yaml"} <= names


@pytest.mark.parametrize("path", iter_config_files(), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path, tmp_path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    assert load_config(save_config(cfg, tmp_path / "c.yaml")) == cfg


def test_shipped_configs_say_what_they_promise():
    text8 = load_config(ROOT / "configs" / "text8.yaml")
    assert text8.data.corpus == "data/text8" and text8.model.dim == 100 and text8.data.window == 5
    assert (text8.loss.name, text8.loss.num_sampled) == ("negative", 5)
    assert (text8.data.sample, text8.data.min_count) == (1e-3, 5)
    assert text8.eval.wordsim == text8.eval.simlex == text8.eval.analogy == "gensim"
    large = load_config(ROOT / "configs" / "synthetic_large.yaml")
    assert large.data.synthetic.vocab_size == 1_000_000
    assert (large.loss.name, large.loss.sampler, large.loss.num_sampled) == ("sampled", "log_uniform", 1024)
    quick = load_config(None)
    assert quick.data.synthetic.vocab_size == 2000 and quick.model.dim == 64 and quick.loss.name == "negative"
