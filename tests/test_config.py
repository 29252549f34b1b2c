"""Config loading: defaults, YAML and --set overrides, strict types, range checks, round trip, shipped configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
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

from sampledsoftmax.training.builders import default_num_sampled, resolve_num_sampled

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
    assert (real.data.window, real.data.sample, real.data.min_count) == (5, 1e-3, 5)
    # loss.num_sampled is null, "the loss's default": gensim's negative=5 for the default loss
    assert real.loss.num_sampled is None and resolve_num_sampled(real.loss.name, 71_290, None) == 5


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


# ------------------------------------------------------------------------------------- loss.num_sampled default


def test_num_sampled_null_means_each_loss_its_own_default():
    assert [resolve_num_sampled("negative", v, None) for v in (50, 2000, 10**6)] == [5, 5, 5]  # word2vec's
    sampled = [resolve_num_sampled("sampled", v, None) for v in (50, 300, 2000, 9_872, 57_288, 100_000, 10**6)]
    assert sampled == [25, 64, 64, 128, 1024, 1024, 1024]  # ~1 % of V in [64, 1024], below V / 2
    assert [resolve_num_sampled("nce", v, None) for v in (2000, 10**6)] == [64, 1024]
    for name in ("full", "inbatch", "adaptive"):  # they draw no candidates
        assert resolve_num_sampled(name, 2000, None) is None and default_num_sampled(name, 2000) is None
    assert resolve_num_sampled("sampled", 2000, 500) == 500  # a configured S is kept
    with pytest.raises(ConfigError, match=r"loss\.num_sampled=2000 must be below the vocabulary size 2000"):
        resolve_num_sampled("sampled", 2000, 2000)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        resolve_num_sampled("negative", 1, None)


def test_loss_name_alone_switches_losses_with_a_sensible_num_sampled():
    import torch

    from sampledsoftmax.training.builders import build_loss_fn

    class _Vocab:
        counts = np.arange(2000, 0, -1)

        def __len__(self):
            return 2000

    def built(*overrides):
        return build_loss_fn(load_config(None, list(overrides)), _Vocab(), torch.Generator()).num_sampled

    assert load_config(None).loss.num_sampled is None
    assert built() == 5 and built("loss.name=sampled") == 64 and built("loss.name=nce") == 64
    # the README's commands keep meaning what they say
    assert built("loss.name=sampled", "loss.num_sampled=64") == 64
    assert built("loss.name=sampled", "loss.num_sampled=1024") == 1024
    assert built("loss.name=negative", "loss.num_sampled=15") == 15


def test_shipped_configs_that_set_num_sampled_keep_it():
    from sampledsoftmax.lm.config import load_lm_config

    assert load_config(ROOT / "configs" / "text8.yaml").loss.num_sampled == 5
    assert load_config(ROOT / "configs" / "synthetic_large.yaml").loss.num_sampled == 1024
    assert load_lm_config(ROOT / "configs" / "lm_quick.yaml").loss.num_sampled == 256
    assert load_lm_config(ROOT / "configs" / "lm_large_vocab.yaml").loss.num_sampled == 1024
    # quickstart leaves it to the loss: --set loss.name=sampled then samples 64, not negative sampling's 5
    assert load_config(ROOT / "configs" / "quickstart.yaml").loss.num_sampled is None


def test_loss_trainers_build_without_a_per_step_id_check():
    import torch

    from sampledsoftmax.training.builders import build_loss_fn

    class _Vocab:
        counts = np.arange(300, 0, -1)

        def __len__(self):
            return 300

    for name in ("full", "sampled", "nce", "negative", "inbatch", "adaptive"):
        loss_fn = build_loss_fn(load_config(None, [f"loss.name={name}"]), _Vocab(), torch.Generator())
        assert loss_fn.validate is False, name  # ids are checked once, when the data is built


# ------------------------------------------------------------------------------------------------ resume


def test_resume_config_check_names_the_changed_key(tmp_path):
    from sampledsoftmax.training.config import check_resume_config

    saved = config_to_dict(load_config(None))
    check_resume_config(saved, load_config(None, ["optim.alpha=0.01", "train.max_steps=9", "eval.every=3"]), "r")
    check_resume_config(saved, load_config(None, ["loss.sparse=false"]), "r")  # SGD: one group either way
    adam = config_to_dict(load_config(None, ["optim.name=sparse_adam"]))
    for saved_cfg, override, fragment in [
            (saved, ["model.dim=32"], "model.dim=64, not 32"), (saved, ["optim.name=adam"], "optim.name=sgd"),
            (saved, ["loss.sampler=uniform"], "loss.sampler=unigram"), (saved, ["loss.name=nce"], "loss.name=negative"),
            (adam, ["optim.name=sparse_adam", "loss.sparse=false"], "loss.sparse=true, not false")]:
        with pytest.raises(ConfigError) as info:
            check_resume_config(saved_cfg, load_config(None, override), "runs/quickstart")
        assert fragment in str(info.value) and "runs/quickstart" in str(info.value), str(info.value)
        assert "drop --resume" in str(info.value)
    del saved["model"]  # an older run's config without a key: not compared
    check_resume_config(saved, load_config(None, ["model.dim=32"]), "r")


def test_an_override_never_hides_a_section_the_file_got_wrong(tmp_path):
    with pytest.raises(ConfigError, match=r"data: expected a mapping of keys, got 3 \(int\); fix the config file"):
        load_config(write(tmp_path, "data: 3\n"), ["data.synthetic.vocab_size=50"])
    cfg = load_config(write(tmp_path, "data:\n  corpus: c.txt\nmodel:\n"), ["model.dim=8"])  # an empty section is fine
    assert cfg.model.dim == 8


# ------------------------------------------------------------------------------------------------------ memory


def test_table_bytes_count_weights_dense_gradients_and_optimizer_state():
    from sampledsoftmax.lm.config import load_lm_config
    from sampledsoftmax.training.memory import table_bytes

    v, d = 1000, 10
    table = 4 * v * d
    sgd = table_bytes(load_config(None, ["model.dim=10"]), v)  # negative + SGD: sparse tables, no state, no bias
    assert sgd == {"weights": 2 * table, "gradients": 0, "optimizer": 0}
    full_adam = table_bytes(load_config(None, ["model.dim=10", "loss.name=full", "optim.name=adam"]), v)
    weights = 2 * table + 4 * v  # input, output, bias
    assert full_adam == {"weights": weights, "gradients": weights, "optimizer": 2 * weights}
    sparse_adam = table_bytes(load_config(None, ["model.dim=10", "loss.name=sampled", "optim.name=sparse_adam"]), v)
    assert sparse_adam["gradients"] == 0 and sparse_adam["optimizer"] == 2 * sparse_adam["weights"]
    tied = table_bytes(load_lm_config(None, ["model.dim=10"]), v)  # the LM's default: tied, dense, Adam
    assert tied["weights"] == table + 4 * v and tied["gradients"] == tied["weights"]
    untied = table_bytes(load_lm_config(None, ["model.dim=10", "model.tie_weights=false"]), v)
    assert untied["weights"] == 2 * table + 4 * v


def test_check_fits_says_what_fits(monkeypatch):
    from sampledsoftmax.training import memory

    cfg = load_config(None, ["model.dim=1000", "optim.name=adagrad"])
    memory.check_fits(cfg, 2000, "cpu")  # 2 tables of 8 MB + accumulators: fits anywhere
    monkeypatch.setattr(memory, "host_available_bytes", lambda: (10_000_000, "this machine has 10 MB available"))
    with pytest.raises(ConfigError) as info:
        memory.check_fits(cfg, 2000, "cpu")
    message = str(info.value)
    for fragment in ("model.dim=1000 x V=2000 needs ~32 MB", "optimizer 16 MB", "this machine has 10 MB available",
                     "at most model.dim=312 fits", "lower model.dim or data.synthetic.vocab_size",
                     "optim.name=sgd"):
        assert fragment in message, message


def test_the_planted_corpus_checks_its_memory_before_allocating(monkeypatch):
    from sampledsoftmax.data import synthetic

    syn = synthetic.SyntheticConfig(vocab_size=1_000_000, num_tokens=100_000)
    need = synthetic.planted_corpus_bytes(synthetic._check(syn))
    assert 70e6 <= need <= 80e6  # measured peak: 74 MB
    monkeypatch.setattr(synthetic, "host_available_bytes", lambda: (need - 1, "this machine has little available"))
    with pytest.raises(ConfigError, match=r"data\.synthetic\.vocab_size=1000000 .* needs ~70\.6 MB to generate"):
        synthetic.PlantedCorpus(syn)


def test_host_memory_is_shared_by_a_torchrun_jobs_local_processes(monkeypatch):
    from sampledsoftmax.data import hostmem

    monkeypatch.setattr(hostmem, "_machine_available", lambda: 8_000_000_000)
    monkeypatch.setattr(hostmem, "_CGROUPS", ())
    assert hostmem.host_available_bytes() == (8_000_000_000, "this machine has 8 GB available")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert hostmem.host_available_bytes()[0] == 2_000_000_000
    assert hostmem.describe_bytes(1.6e12) == "1.6 TB" and hostmem.describe_bytes(2.5e15) == "2,500 TB"
