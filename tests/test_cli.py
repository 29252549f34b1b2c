"""The command line: exit codes, one-line errors, option parsing, and the entry points."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sampledsoftmax import cli

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, script: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, script] if script else [sys.executable, "-m", "sampledsoftmax"]
    # the checkout goes last on the path: an installed (editable) copy or an explicit PYTHONPATH comes first
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, env=env)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def test_bad_option_value_is_one_error_line_and_exit_2():
    assert_one_line_error(run("bench", "--sizes", "abc"), "--sizes", "'abc'")


def test_unknown_loss_is_one_error_line_with_the_choices():
    assert_one_line_error(run("bench", "--losses", "nosuch", "--sizes", "300"), '"nosuch"', "choose from", "naive")


def test_misspelt_loss_gets_did_you_mean():
    assert_one_line_error(run("bench", "--losses", "full,sampeld", "--sizes", "300"), 'did you mean "sampled"')


def test_help_exits_0_and_lists_bench():
    proc = run("--help")
    assert proc.returncode == 0 and "bench" in proc.stdout and proc.stderr == ""
    proc = run("bench", "--help")
    assert proc.returncode == 0 and "--naive-max-v" in proc.stdout and "--json" in proc.stdout


def test_wrapper_script_forwards_to_bench():
    assert_one_line_error(run("--repeats", "0", script=str(ROOT / "scripts" / "bench_losses.py")), "--repeats")


@pytest.mark.parametrize(
    "argv",
    [[], ["nosuchcommand"], ["bench", "--repeats", "0"], ["bench", "--warmup", "-1"], ["bench", "--lr", "nan"],
     ["bench", "--optimizer", "lamb"], ["bench", "--no-such-option"], ["bench", "--sizes", ","]],
)
def test_usage_errors_return_2_in_process(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda_is_a_user_error(capsys):
    assert cli.main(["bench", "--device", "cuda", "--sizes", "300"]) == 2
    assert "cuda" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, value", [("10000", 10_000), ("100_000", 100_000), ("10k", 10_000), ("1M", 1_000_000), ("2.5k", 2500)]
)
def test_counts_accept_separators_and_suffixes(text, value):
    assert cli._count(text) == value


@pytest.mark.parametrize("text", ["abc", "0", "-5", "1.5", "", "k", "1e400", "nan"])
def test_counts_reject_what_is_not_a_positive_integer(text):
    with pytest.raises(argparse.ArgumentTypeError):
        cli._count(text)


def test_losses_all_means_every_loss():
    args = cli.build_parser().parse_args(["bench", "--losses", "all"])
    assert args.losses is None
    args = cli.build_parser().parse_args(["bench", "--losses", " full , naive "])
    assert args.losses == ("full", "naive")


def test_bench_parser_defaults_match_bench_config():
    from sampledsoftmax.experiments.bench import BenchConfig

    args = vars(cli.build_parser().parse_args(["bench"]))
    for f in dataclasses.fields(BenchConfig):
        assert args[f.name] == f.default, f.name


def test_importing_cli_does_not_import_the_commands():
    code = "import sys, sampledsoftmax.cli; print('sampledsoftmax.experiments.bench' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr


def test_a_full_disk_is_found_behind_the_error_torch_raises():
    import errno

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3136 vs 3030")
    except RuntimeError as e:  # what torch.save raises on a full disk: the OSError is its context
        disk = cli._out_of_space(e)
    assert disk is not None and disk.errno == errno.ENOSPC
    assert cli._out_of_space(RuntimeError("a bug")) is None
    assert cli._out_of_space(FileNotFoundError(errno.ENOENT, "gone")) is None


def test_a_full_disk_is_one_error_line_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    import errno

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/last.pt")

    monkeypatch.setattr(cli, "_cmd_export", full)
    assert cli.main(["export", "runs/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: No space left on device writing runs/x/last.pt; free")

    def bug(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "_cmd_export", bug)
    with pytest.raises(ZeroDivisionError):
        cli.main(["export", "runs/x"])


def test_bench_output_paths_are_checked_before_the_benchmark(tmp_path):
    (tmp_path / "file").write_text("x")
    cli._check_output_path(None, "--out")
    cli._check_output_path(str(tmp_path / "new" / "b.md"), "--out")  # a directory still to be made is fine
    with pytest.raises(cli.UsageError, match="is a file, not a directory"):
        cli._check_output_path(str(tmp_path / "file" / "b.md"), "--out")
    with pytest.raises(cli.UsageError, match="is a directory"):
        cli._check_output_path(str(tmp_path), "--json")
