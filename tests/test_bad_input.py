"""The bad-input battery: every mistake a user can make through the CLI ends in exactly one ``error: ...`` line on
stderr that names the problem and the fix, exit code 2, no traceback, and nothing lost (a run's checkpoint stays
byte for byte what it was; nothing is created for a run that cannot start).

Each case runs the real CLI (``sampledsoftmax.cli.main`` in-process; a subprocess where the process itself must
be constrained). Runs are tiny (V = 50, 2,000 tokens, 2 steps) so the whole file stays well under a minute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sampledsoftmax.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.synthetic.vocab_size=50", "data.synthetic.num_tokens=2000", "data.synthetic.heldout_sentences=10",
        "train.max_steps=2", "train.device=cpu", "eval.every=1000", "train.checkpoint_every=1000"]
TINY_LM = ["data.synthetic.vocab_size=60", "data.synthetic.num_tokens=3000", "data.synthetic.heldout_sentences=10",
           "data.seq_len=8", "optim.batch_size=4", "model.dim=16", "train.max_steps=2", "train.device=cpu",
           "eval.every=1000", "loss.num_sampled=8"]


def sets(*overrides: str) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def one_error(capsys, argv: list[str], *fragments: str) -> str:
    """Run the CLI; check exit code 2, exactly one stderr line `error: ...` holding every fragment, no traceback."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def train_argv(tmp_path: Path, *overrides: str, config=None, resume=False) -> list[str]:
    argv = ["train"] + ([str(config)] if config is not None else [])
    argv += sets(f"runs_root={tmp_path / 'runs'}", *TINY, *overrides) + ["--quiet"]
    return argv + (["--resume"] if resume else [])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A finished tiny skip-gram run (config.yaml, vocab.tsv, last.pt, best.pt): what the resume and export cases
    start from (each copies it, so one case's outcome cannot leak into another)."""
    root = tmp_path_factory.mktemp("trained")
    assert main(train_argv(root, "name=r", "model.dim=16") + []) == 0
    return root / "runs" / "r"


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    dst = tmp_path / "runs" / "r"
    shutil.copytree(trained_run, dst)
    return dst


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of the run, byte for byte; not the lock file, which names whichever process last held it."""
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file() and p.name != ".lock"}


# ------------------------------------------------------------------------------------------------ config files


def _latin1(p: Path) -> None:
    p.write_bytes("name: caf\xe9\n".encode("latin-1"))


CONFIG_FILES = {  # id -> (how to make the path, fragments of the one-line message)
    "missing": (lambda p: None, ["config file", "does not exist", "check the path"]),
    "a-directory": (lambda p: p.mkdir(), ["is a directory", "give a YAML file"]),
    "under-a-regular-file": (lambda p: None, ["is a file, not a directory"]),
    "dangling-symlink": (lambda p: p.symlink_to(p.parent / "gone.yaml"), ["does not exist"]),
    "latin-1": (_latin1, ["not UTF-8 text (byte 9)", "save it as UTF-8"]),
    "utf-16": (lambda p: p.write_bytes("model: {dim: 8}\n".encode("utf-16")), ["not UTF-8 text"]),
    "binary": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)), ["not UTF-8 text"]),
    "empty": (lambda p: p.write_text(""), ["data.sample=0", "data.min_count=1"]),  # bare defaults: real-text ones
    "list-at-top": (lambda p: p.write_text("- a\n- b\n"), ["expected a mapping of keys at the top", "list"]),
    "scalar-at-top": (lambda p: p.write_text("hello\n"), ["expected a mapping of keys at the top", "str"]),
    "bad-yaml": (lambda p: p.write_text("model:\n  dim: [3\n"), ["YAML syntax error", "line"]),
    "tab-indent": (lambda p: p.write_text("model:\n\tdim: 3\n"), ["YAML syntax error", "line 2"]),
    "duplicate-key": (lambda p: p.write_text("model:\n  dim: 3\n  dim: 4\n"), ["duplicate key 'dim'", "line 3"]),
    "two-documents": (lambda p: p.write_text("name: a\n---\nname: b\n"), ["YAML syntax error"]),
    "python-tag": (lambda p: p.write_text("name: !!python/object:os.system x\n"), ["YAML syntax error"]),
    "unknown-top-key": (lambda p: p.write_text("modle: {dim: 8}\n"), ['"modle"', 'did you mean "model"']),
    "unknown-section-key": (lambda p: p.write_text("model: {dimm: 8}\n"), ['"model.dimm"', '"model.dim"']),
    "unknown-nested-key": (lambda p: p.write_text("data: {synthetic: {vocab: 9}}\n"),
                           ['"data.synthetic.vocab"', 'did you mean "data.synthetic.vocab_size"']),
    "section-as-scalar": (lambda p: p.write_text("data: 3\n"), ["data: expected a mapping"]),
    "section-as-list": (lambda p: p.write_text("loss: [full]\n"), ["loss: expected a mapping"]),
    "string-for-int": (lambda p: p.write_text("model: {dim: '64'}\n"), ["model.dim", "expected an integer"]),
    "int-for-string": (lambda p: p.write_text("data: {corpus: 2024}\n"), ["data.corpus", "expected a string"]),
    "float-for-int": (lambda p: p.write_text("model: {dim: 1e6}\n"), ["model.dim", "write 1000000"]),
    "non-string-key": (lambda p: p.write_text("1: 2\n"), ['unknown key "1"']),
    "a-corpus-instead": (lambda p: p.write_text("anarchism originated as a term of abuse " * 150_000),
                         ["is 5.72 MB, far more than a config file holds", "is it a corpus?"]),
}


@pytest.mark.parametrize("case", list(CONFIG_FILES))
def test_a_bad_config_file_is_one_error_line(tmp_path, capsys, case):
    make, fragments = CONFIG_FILES[case]
    path = tmp_path / "c.yaml"
    if case == "under-a-regular-file":
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "c.yaml"
    make(path)
    line = one_error(capsys, train_argv(tmp_path, config=path), *fragments)
    if case not in ("empty",) and not case.startswith(("unknown", "section", "string", "int", "float", "non")):
        assert str(path) in line
    assert not (tmp_path / "runs").exists()  # nothing was created for a run that cannot start


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file: the unreadable case cannot happen")
def test_an_unreadable_config_file_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("name: a\n")
    path.chmod(0)
    one_error(capsys, train_argv(tmp_path, config=path), "permission denied")


def test_the_not_utf8_config_through_the_real_entry_point(tmp_path):
    path = tmp_path / "c.yaml"
    _latin1(path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "sampledsoftmax", "train", str(path)], capture_output=True,
                          text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: cannot read config file") and "not UTF-8" in line


# ------------------------------------------------------------------------------------------------ --set values

OVERRIDES = {  # --set mistakes: (overrides, fragments)
    "malformed-no-equals": (["model.dim"], ["malformed override", "expected key=value"]),
    "malformed-no-key": (["=3"], ["malformed override"]),
    "on-a-section": (["data=3"], ["data is a section", "data.corpus="]),
    "on-a-nested-section": (["data.synthetic=x"], ["data.synthetic is a section"]),
    "below-a-value": (["model.dim.x=1"], ["model.dim is a value"]),
    "unknown-key": (["data.windw=3"], ['"data.windw"', 'did you mean "data.window"']),
    "key-in-another-section": (["window=3"], ['did you mean "data.window"']),
    "bool-for-float": (["optim.alpha=false"], ["optim.alpha", "expected a number", "bool"]),
    "text-for-int": (["model.dim=big"], ["model.dim", "expected an integer"]),
    "infinite": (["optim.alpha=.inf"], ["optim.alpha", "finite"]),
    "zero-dim": (["model.dim=0"], ["model.dim=0", ">= 1"]),
    "heldout-out-of-range": (["data.heldout_fraction=0.7"], ["data.heldout_fraction=0.7", "[0, 0.5)"]),
    "min-alpha-above-alpha": (["optim.min_alpha=0.5"], ["optim.min_alpha=0.5", "[0, 0.025]"]),
    "misspelt-loss": (["loss.name=sampeld"], ['did you mean "sampled"']),
    "excluded-sampler": (["loss.sampler=all"], ["loss.name=full"]),
    "unknown-device": (["train.device=gpu"], ["train.device", "cpu, cuda, auto"]),
    "name-with-slash": (["name=a/b"], ["name='a/b'", "runs_root"]),
    "bad-regex": (["data.token_pattern=[a-z"], ["data.token_pattern", "not a regular expression"]),
    "bf16-on-cpu": (["train.bf16=true"], ["train.bf16 needs a CUDA device"]),
    "num-sampled-not-below-V": (["loss.name=sampled", "loss.num_sampled=500"],
                                ["loss.num_sampled=500 must be below the vocabulary size"]),
}


@pytest.mark.parametrize("case", list(OVERRIDES))
def test_a_bad_set_is_one_error_line(tmp_path, capsys, case):
    overrides, fragments = OVERRIDES[case]
    one_error(capsys, train_argv(tmp_path, *overrides), *fragments)


def test_a_runs_root_that_is_a_file(tmp_path, capsys):
    (tmp_path / "runs").write_text("not a directory")
    one_error(capsys, train_argv(tmp_path), "cannot write the run directory", "set runs_root to a writable")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_on_a_machine_without_it(tmp_path, capsys):
    one_error(capsys, train_argv(tmp_path, "train.device=cuda"), "cuda")


# ----------------------------------------------------------------------------------------------------- corpora


def _corpus(tmp_path: Path, case: str) -> Path:
    d = tmp_path / "corpus"
    d.mkdir()
    if case == "missing":
        return d / "nope.txt"
    if case == "empty-file":
        (d / "e.txt").write_text("")
        return d / "e.txt"
    if case == "empty-directory":
        return d
    if case == "binary-file":
        (d / "x.bin").write_bytes(np.random.default_rng(0).bytes(200_000))
        return d / "x.bin"
    if case == "directory-of-binary-files":
        (d / "a.jpg").write_bytes(np.random.default_rng(1).bytes(50_000))
        (d / "b.pt").write_bytes(np.random.default_rng(2).bytes(50_000))
        return d
    if case == "only-hidden-files":
        (d / ".notes.txt").write_text("the cat sat\n")
        return d
    if case == "legacy-encoding":
        (d / "ru.txt").write_bytes(("привет мир как дела сегодня\n" * 3000).encode("cp1251"))
        return d / "ru.txt"
    if case == "corrupt-gzip":
        (d / "c.txt.gz").write_text("this is not gzip data\n")
        return d / "c.txt.gz"
    if case == "no-matching-tokens":
        (d / "n.txt").write_text("123 456 789\n" * 50)
        return d / "n.txt"
    names = [f"w{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(30)]  # letters: [a-z']+ tokens
    words = " ".join(names[i % 30] for i in range(400))
    if case == "one-word-lines":
        (d / "o.txt").write_text("".join(f"{names[i % 7]}\n" for i in range(300)))
        return d / "o.txt"
    if case == "a-single-word-type":
        (d / "w.txt").write_text("spam spam spam spam\n" * 50)
        return d / "w.txt"
    if case == "one-sentence":  # a single sentence cannot be split into training and held-out parts
        (d / "s.txt").write_text(words + "\n")
        return d / "s.txt"
    (d / "t.txt").write_text((words + "\n") * 40)
    return d / "t.txt"


CORPORA = {  # case -> (extra overrides, fragments)
    "missing": ([], ["does not exist", "set data.corpus"]),
    "empty-file": ([], ["has no tokens matching", "data.token_pattern"]),
    "empty-directory": ([], ["has no files", "point data.corpus"]),
    "binary-file": ([], ["% of its 195 kB is not UTF-8 text", "give a plain-text corpus"]),
    "directory-of-binary-files": ([], ["a.jpg'", "is not UTF-8 text", "remove it from the directory"]),
    "only-hidden-files": ([], ["has no files"]),
    "legacy-encoding": ([], ["is not UTF-8 text", "re-encode"]),
    "corrupt-gzip": ([], ["cannot read corpus file", "Not a gzipped file"]),
    "no-matching-tokens": ([], ["has no tokens matching"]),
    "empty-vocabulary": (["data.min_count=100000"], ["vocabulary of corpus", "is empty", "lower data.min_count"]),
    "vocabulary-cap-ties": (["data.max_final_vocab=1"], ["is empty", "raise data.max_final_vocab"]),
    "empty-heldout": (["data.heldout_fraction=0"], ["no held-out pairs", "raise data.heldout_fraction"]),
    "one-sentence": ([], ["no held-out pairs"]),
    "one-word-lines": (["data.heldout_fraction=0.1"], ["no skip-gram pairs", "no sentence has two words"]),
    "a-single-word-type": ([], ["needs at least 2 classes", "the vocabulary has 1"]),
}


@pytest.mark.parametrize("case", list(CORPORA))
def test_a_bad_corpus_is_one_error_line(tmp_path, capsys, case):
    extra, fragments = CORPORA[case]
    path = _corpus(tmp_path, case)
    argv = train_argv(tmp_path, f"data.corpus={path}", "data.sample=0", "data.min_count=1", *extra)
    one_error(capsys, argv, *fragments)
    assert not list((tmp_path / "runs").glob("*/last.pt"))


# ------------------------------------------------------------------------------------------- evaluation files

EVAL_FILES = {  # case -> (key, file contents (None: missing, "dir": a directory), fragments)
    "missing-wordsim": ("wordsim", None, ["wordsim evaluation file not found", 'or to "gensim"']),
    "wordsim-directory": ("wordsim", "dir", ["not found"]),
    "malformed-wordsim": ("wordsim", b"just words\nno tabs here\n", ["no word pairs", "eval.wordsim"]),
    "wordsim-not-utf8": ("wordsim", "tiger\tcat\t7\ncaf\xe9\tbar\t3\n".encode("latin-1"), ["not UTF-8 text"]),
    "simlex-corrupt-gzip": ("simlex", b"not gzip", ["cannot read eval.simlex file", "not a valid .gz file"]),
    "missing-analogy": ("analogy", None, ["analogy evaluation file not found"]),
    "analogy-before-section": ("analogy", b"a b c d\n: family\nx y z w\n", ["before the first", "Google"]),
    "analogy-without-questions": ("analogy", b": family\n: capitals\n", ["no analogy questions"]),
}


@pytest.mark.parametrize("case", list(EVAL_FILES))
def test_a_bad_evaluation_file_fails_before_the_run_starts(tmp_path, capsys, case):
    key, contents, fragments = EVAL_FILES[case]
    path = tmp_path / ("eval.txt.gz" if case.endswith("gzip") else "eval.txt")
    if contents == "dir":
        path.mkdir()
    elif contents is not None:
        path.write_bytes(contents)
    one_error(capsys, train_argv(tmp_path, f"eval.{key}={path}"), *fragments)
    assert not (tmp_path / "runs").exists()  # checked before the run directory or the data


# ----------------------------------------------------------------------------------------------------- resume

RESUMES = {  # case -> (overrides on the trained run's, fragments)
    "different-loss": (["loss.name=nce"], ["loss.name=negative, not nce", "drop --resume"]),
    "different-dim": (["model.dim=32"], ["model.dim=16, not 32", "--set model.dim=16"]),
    "different-optimizer": (["optim.name=adam"], ["optim.name=sgd, not adam"]),
    "different-sampler": (["loss.sampler=learned_unigram"], ["loss.sampler=unigram, not learned_unigram"]),
    "different-vocabulary": (["data.synthetic.seed=5"], ["different vocabulary", "start a new run"]),
}


@pytest.mark.parametrize("case", list(RESUMES))
def test_resume_with_a_config_the_run_cannot_take_keeps_the_run(run_copy, capsys, case):
    overrides, fragments = RESUMES[case]
    before = snapshot(run_copy)
    root = run_copy.parents[1]
    one_error(capsys, train_argv(root, "name=r", "model.dim=16", *overrides, "train.max_steps=4", resume=True),
              *fragments)
    assert snapshot(run_copy) == before  # last.pt, best.pt, config.yaml, vocab.tsv: byte for byte


def test_resume_with_nothing_to_resume(tmp_path, capsys):
    one_error(capsys, train_argv(tmp_path, "name=none", resume=True), "nothing to resume", "drop --resume")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_resume_from_a_damaged_checkpoint_keeps_it(run_copy, capsys, damage):
    last = run_copy / "last.pt"
    data = last.read_bytes()
    last.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint\n", "empty": b""}[damage])
    before = snapshot(run_copy)
    one_error(capsys, train_argv(run_copy.parents[1], "name=r", "model.dim=16", "train.max_steps=4", resume=True),
              "cannot read checkpoint", "last.pt")
    assert snapshot(run_copy) == before


def test_out_of_disk_while_checkpointing_keeps_the_last_checkpoint(run_copy):
    """A real write failure: the resumed run's process may write no file beyond half the size of its checkpoint
    (RLIMIT_FSIZE; the event file it appends to stays far below), so its checkpoint write fails as on a full disk.
    One line, exit 2, and the previous last.pt and best.pt are intact, with no temporary file left behind."""
    before = snapshot(run_copy)
    limit = len(before["last.pt"]) // 2
    argv = ["train", *sets(f"runs_root={run_copy.parent}", "name=r", *TINY, "model.dim=16", "train.max_steps=4",
                           "train.fused=false"), "--resume", "--quiet"]
    script = (f"import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
              "from sampledsoftmax.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: File too large") and "free some space" in line, line
    after = snapshot(run_copy)
    assert after["last.pt"] == before["last.pt"] and after["best.pt"] == before["best.pt"]
    assert not [p.name for p in run_copy.iterdir() if ".tmp" in p.name]


def test_out_of_disk_anywhere_is_one_line(run_copy, capsys, monkeypatch):
    import errno

    import sampledsoftmax.training.checkpoint as checkpoint

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    before = snapshot(run_copy)
    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    one_error(capsys, train_argv(run_copy.parents[1], "name=r", "model.dim=16", "train.max_steps=4", resume=True),
              "No space left on device", "free some space")
    assert snapshot(run_copy)["last.pt"] == before["last.pt"]


# ----------------------------------------------------------------------------------------------------- export


def test_export_of_a_missing_run_directory(tmp_path, capsys):
    one_error(capsys, ["export", tmp_path / "nope"], "does not exist", "written by sampledsoftmax train")


def test_export_of_a_directory_without_vocab(tmp_path, capsys):
    one_error(capsys, ["export", tmp_path], "vocab.tsv is missing", "RUN_DIR must be a run directory")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_export_of_a_damaged_checkpoint(run_copy, capsys, damage):
    last = run_copy / "last.pt"
    last.write_bytes(last.read_bytes()[:100] if damage == "truncated" else b"\x00" * 64)
    one_error(capsys, ["export", run_copy], "cannot read checkpoint", "last.pt")


def test_export_of_a_missing_best_checkpoint(run_copy, capsys):
    (run_copy / "best.pt").unlink()
    one_error(capsys, ["export", run_copy, "--checkpoint", "best"], "no checkpoint", "best.pt")


def test_export_with_the_vocabulary_of_another_run(run_copy, capsys):
    (run_copy / "vocab.tsv").write_text("a\t3\nb\t2\n")
    one_error(capsys, ["export", run_copy], "2 words", "different runs")


def test_export_with_a_malformed_vocabulary(run_copy, capsys):
    (run_copy / "vocab.tsv").write_text("no tab here\n")
    one_error(capsys, ["export", run_copy], "vocab.tsv:1", "word<TAB>count")


@pytest.mark.parametrize("where", ["under-a-regular-file", "a-directory"])
def test_export_to_an_unwritable_out(run_copy, tmp_path, capsys, where):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    out = tmp_path / "file" / "v.txt" if where == "under-a-regular-file" else tmp_path / "dir"
    one_error(capsys, ["export", run_copy, "--out", out], "cannot write the vectors", "--out")
    assert (tmp_path / "file").read_text() == "x" and list((tmp_path / "dir").iterdir()) == []


# ------------------------------------------------------------------------------------------------------ sweep

SWEEPS = {  # case -> (sweep file text (None: missing), extra argv, fragments)
    "missing": (None, [], ["cannot read sweep file", "does not exist"]),
    "unknown-key": ("name: s\ngrid:\n  - loss.name: [full]\nbudget: [pairs]\n", [],
                    ['unknown sweep key "budget"', 'did you mean "budgets"']),
    "empty-grid": ("name: s\ngrid: []\n", [], ["grid: expected a list of cell groups"]),
    "bad-budget": ("name: s\ngrid:\n  - loss.name: [full]\nbudgets: [{seconds: -1}]\n", [], ["budgets:"]),
    "cell-with-unknown-key": ("name: s\ngrid:\n  - loss.nme: [full]\n", [],
                              ["sweep cell", '"loss.nme"', 'did you mean "loss.name"']),
    "a-list": ("- a\n- b\n", [], ["sweep file", "expected a mapping"]),
    "nested-grid-value": ("name: s\ngrid:\n  - loss.name: [[full]]\n", [], ["non-empty list of scalar values"]),
    "malformed-set": ("name: s\ngrid:\n  - loss.name: [full]\n", ["--set", "model.dim"], ["malformed override"]),
}


@pytest.mark.parametrize("case", list(SWEEPS))
def test_a_bad_sweep_is_one_error_line_before_any_cell_trains(tmp_path, capsys, case):
    text, extra, fragments = SWEEPS[case]
    path = tmp_path / "sweep.yaml"
    if text is not None:
        path.write_text(text.replace("name: s\n", f"name: s\nout_dir: {tmp_path / 'out'}\n"))
    one_error(capsys, ["sweep", path, "--quiet", *extra], *fragments)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------- train-lm

LM_CASES = {
    "bad-arch": (["model.arch=gru"], ["model.arch", "'gru'", "lstm, transformer"]),
    "unknown-key": (["model.arhc=lstm"], ['"model.arhc"', 'did you mean "model.arch"']),
    "heads-do-not-divide-dim": (["model.arch=transformer", "model.dim=30"], ["divisible by model.num_heads"]),
    "seq-len-too-long": (["data.seq_len=100000"], ["seq_len", "smaller"]),
    "num-sampled-not-below-V": (["loss.num_sampled=5000"], ["loss.num_sampled=5000", "below the vocabulary size"]),
    "too-large-a-model": (["model.dim=10000000000"], ["model.dim=10000000000", "needs ~", "TB", "available",
                                                       "lower model.dim"]),
}


@pytest.mark.parametrize("case", list(LM_CASES))
def test_train_lm_mistakes_are_one_error_line(tmp_path, capsys, case):
    overrides, fragments = LM_CASES[case]
    argv = ["train-lm", *sets(f"runs_root={tmp_path / 'runs'}", *TINY_LM, *overrides), "--quiet"]
    one_error(capsys, argv, *fragments)


# ------------------------------------------------------------------------------------------------------ bench

BENCH = {
    "bad-sizes": (["--sizes", "1x"], ["--sizes", "'1x'", "not a positive count"]),
    "empty-sizes": (["--sizes", ","], ["--sizes", "empty"]),
    "unknown-loss": (["--losses", "foo"], ['unknown loss "foo"', "choose from"]),
    "negative-repeats": (["--repeats", "-1"], ["--repeats", "'-1'"]),
    "nan-lr": (["--lr", "nan"], ["--lr", "not a positive number"]),
    "out-under-a-file": (["--out", "FILE/bench.md"], ["--out", "is a file, not a directory"]),
}


@pytest.mark.parametrize("case", list(BENCH))
def test_bench_mistakes_are_one_error_line_before_any_timing(tmp_path, capsys, case):
    argv, fragments = BENCH[case]
    (tmp_path / "FILE").write_text("x")
    argv = [a.replace("FILE", str(tmp_path / "FILE")) for a in argv]
    one_error(capsys, ["bench", "--sizes", "300", "--repeats", "1", *argv], *fragments)


# ----------------------------------------------------------------------------------------------------- memory

# The machine's memory cannot hold these; each is refused before anything big is allocated. (Sizes far beyond any
# machine's memory: were a check missing, the allocator would refuse at once instead of the OOM killer striking.)
MEMORY = {
    "model-dim": (["model.dim=10000000000"], ["model.dim=10000000000 x V=", "needs ~", "TB", "available",
                                               "at most model.dim=", "lower model.dim"]),
    "planted-vocab-size": (["data.synthetic.vocab_size=2000000000"],
                           ["data.synthetic.vocab_size=2000000000", "needs ~140 GB", "lower data.synthetic"]),
    "planted-num-tokens": (["data.synthetic.num_tokens=100000000000"], ["data.synthetic.num_tokens=100000000000",
                                                                         "needs ~", "available"]),
}


@pytest.mark.parametrize("case", list(MEMORY))
def test_a_run_too_large_for_memory_is_refused_at_once(tmp_path, capsys, case):
    from sampledsoftmax.data.hostmem import host_available_bytes

    overrides, fragments = MEMORY[case]
    if case == "planted-vocab-size" and host_available_bytes()[0] > 140e9:
        pytest.skip("this machine could generate a 2-billion-word planted corpus")
    one_error(capsys, train_argv(tmp_path, *overrides), *fragments)
    assert not list((tmp_path / "runs").glob("*/last.pt"))
