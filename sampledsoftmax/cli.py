"""The command line: ``sampledsoftmax <command> [options]`` (also ``python -m sampledsoftmax``).

A command is one ``_cmd_<name>(args) -> int`` function and one ``_add_<name>(subparsers)`` parser block, listed
in ``COMMANDS``. Torch-using modules are imported inside the command functions, so building the parser, ``--help``
and usage errors import nothing heavy from this module.

A user mistake (any ``SampledSoftmaxError``, or a bad option) prints one line, ``error: <message>``, to stderr and
exits 2; so does a full disk (or quota, or read-only filesystem) wherever a write fails. A programming error keeps
its traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from sampledsoftmax.errors import SampledSoftmaxError

PROG = "sampledsoftmax"


class UsageError(SampledSoftmaxError):
    """A bad command line (unknown option, missing value, value of the wrong form)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors raise, so ``main`` prints them as one line and exits 2."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


# ------------------------------------------------------------------------------------------------ option types


def _count(text: str) -> int:
    """A positive integer; ``_`` separators and k/M suffixes allowed: ``100_000``, ``100k``, ``1M``, ``2.5k``."""
    t = text.strip().lower().replace("_", "")
    scale = {"k": 10**3, "m": 10**6}.get(t[-1:], 1)
    if scale != 1:
        t = t[:-1]
    try:
        value = float(t) * scale if ("." in t or "e" in t) else int(t) * scale
    except ValueError:
        value = 0.0
    if not (1 <= value < 2**63) or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive count (examples: 10000, 100k, 1M)")
    return int(value)


def _count_list(text: str) -> tuple[int, ...]:
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"{text!r} is empty: give comma-separated counts, e.g. 10k,100k,1M")
    return tuple(_count(p) for p in parts)


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _name_list(text: str) -> tuple[str, ...] | None:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} is empty: give comma-separated names, or 'all'")
    return None if names == ("all",) else names


# ----------------------------------------------------------------------------------------------------- bench


def _add_bench(sub: argparse._SubParsersAction) -> None:
    # Defaults mirror sampledsoftmax.experiments.bench.BenchConfig (a test keeps them equal); repeated here so that building
    # the parser and --help do not import torch.
    sizes = (10_000, 100_000, 1_000_000)
    p = sub.add_parser(
        "bench",
        help="step time and peak memory of every loss against its matmul bound",
        description="Time forward + backward + optimizer step of every registered loss (and the naive "
        "`hidden @ W.T + b` + cross_entropy reference, and Apple's Cut Cross-Entropy where it is installed) at each "
        "class count V, next to the bare matrix products "
        "the loss cannot avoid, and print a markdown table. Targets are Zipf-like (log-uniform over ranks) "
        "unless --targets uniform.",
    )
    p.add_argument("--losses", type=_name_list, default=None,
                   help="comma-separated loss names (the registered losses, 'naive' and 'cce'), or 'all' (default)")
    p.add_argument("--sizes", type=_count_list, default=sizes,
                   help=f"class counts V, comma-separated; k and M suffixes accepted (default: {','.join(map(str, sizes))})")
    p.add_argument("-n", "--batch-size", dest="n", type=_count, default=1024, help="batch size N (default: %(default)s)")
    p.add_argument("--dim", type=_count, default=128, help="hidden size d (default: %(default)s)")
    p.add_argument("--num-sampled", type=_count, default=1024,
                   help="candidates S for the sampled losses (default: %(default)s)")
    p.add_argument("--repeats", type=_count, default=5,
                   help="timed steps per cell; median and min are reported (default: %(default)s)")
    p.add_argument("--warmup", type=_nonneg_int, default=2, help="untimed steps per cell first (default: %(default)s)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                   help="sgd (default), or adam: torch.optim.SparseAdam for sparse-gradient losses, Adam otherwise")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate (default: %(default)s)")
    p.add_argument("--sampler", default="log_uniform",
                   help="sampler name for sampled, nce and negative (default: %(default)s)")
    p.add_argument("--targets", choices=("zipf", "uniform"), default="zipf",
                   help="how targets are drawn (default: %(default)s)")
    p.add_argument("--memory-budget-mb", type=_positive_float, default=None,
                   help="chunk budget of the exact losses, full and ova (default: the loss's own)")
    p.add_argument("--naive-max-v", type=_count, default=1_000_000,
                   help="skip the naive reference above this V (default: %(default)s)")
    p.add_argument("--per-example-negatives", action="store_true",
                   help="negative: word2vec's S negatives per example (N*S rows) instead of S shared per batch")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto (default): cuda if available, else cpu")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed of inputs, weights and samplers (default: 0)")
    p.add_argument("--no-isolate", dest="isolate", action="store_false",
                   help="CPU: run every cell in this process (quicker; peak memory less reliable)")
    p.add_argument("--out", metavar="FILE.md", default=None, help="also write the table to this file")
    p.add_argument("--json", metavar="FILE", default=None, help="write machine, config and rows as JSON")
    p.set_defaults(func=_cmd_bench)


def _check_output_path(path: str | None, option: str) -> None:
    """A file the command will write at its end: refuse now, not after the work, a path that cannot be written."""
    if path is None:
        return
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise UsageError(f"{option} {path!r} is a directory; give a file path, e.g. {p / 'bench.md'}")
    existing = next((a for a in [parent, *parent.parents] if a.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(f"{option} {path!r}: {str(existing)!r} is a file, not a directory; give a path in a "
                         "writable directory")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path!r}: {str(existing)!r} is not writable; give a path in a writable directory")


def _cmd_bench(args: argparse.Namespace) -> int:
    import dataclasses

    from sampledsoftmax.experiments import bench

    _check_output_path(args.out, "--out")
    _check_output_path(args.json, "--json")
    given = vars(args)
    cfg = bench.BenchConfig(**{f.name: given[f.name] for f in dataclasses.fields(bench.BenchConfig)})
    result = bench.run(cfg, progress=sys.stderr)
    print(bench.format_markdown(result), flush=True)
    bench.write_outputs(result, out=args.out, json_path=args.json)
    if result.failed:
        names = ", ".join(f"{row['loss']} V={row['V']}" for row in result.failed)
        print(f"bench: {len(result.failed)} cell(s) failed: {names}", file=sys.stderr)
        return 1
    return 0


def _add_bench_hf(sub: argparse._SubParsersAction) -> None:
    # Defaults mirror sampledsoftmax.experiments.bench_hf.HFBenchConfig (a test keeps them equal).
    p = sub.add_parser(
        "bench-hf",
        help="training-step time and memory of a Hugging Face LM: HF's own loss, ours, Cut Cross-Entropy",
        description="Train a Llama-style model built from a config (random weights, nothing downloaded) for a few "
        "steps per cell, each cell in its own process: HF's own loss (logits materialised), "
        "sampledsoftmax.hf's exact and sampled patches, Apple's Cut Cross-Entropy, Liger-Kernel on CUDA; print "
        "step time and peak extra memory as a markdown table.",
    )
    p.add_argument("--sizes", type=_count_list, default=(32_000, 128_000, 256_000),
                   help="vocabulary sizes, comma-separated; k and M suffixes accepted (default: 32k,128k,256k)")
    p.add_argument("--rows", type=_name_list, default=None,
                   help="comma-separated of hf,exact,sampled,cce,liger (default: hf,exact,sampled,cce; liger on CUDA)")
    p.add_argument("--dim", type=_count, default=256, help="hidden size (default: %(default)s)")
    p.add_argument("--layers", type=_count, default=2, help="decoder layers (default: %(default)s)")
    p.add_argument("--seq", type=_count, default=512, help="tokens per sequence (default: %(default)s)")
    p.add_argument("--batch", type=_count, default=4, help="sequences per step (default: %(default)s)")
    p.add_argument("--num-sampled", type=_count, default=8192, help="S of the sampled row (default: %(default)s)")
    p.add_argument("--warmup", type=_nonneg_int, default=1, help="untimed steps per cell first (default: %(default)s)")
    p.add_argument("--repeats", type=_count, default=3, help="timed steps per cell (default: %(default)s)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto (default): cuda if available, else cpu")
    p.add_argument("--json", metavar="FILE", default=None, help="write config, machine and rows as JSON")
    p.set_defaults(func=_cmd_bench_hf)


def _cmd_bench_hf(args: argparse.Namespace) -> int:
    from sampledsoftmax.experiments import bench_hf

    _check_output_path(args.json, "--json")
    rows, device = bench_hf.resolve(args.rows, args.device)
    cfg = bench_hf.HFBenchConfig(sizes=args.sizes, rows=rows, dim=args.dim, layers=args.layers, seq=args.seq,
                                 batch=args.batch, num_sampled=args.num_sampled, warmup=args.warmup,
                                 repeats=args.repeats, device=device)
    result = bench_hf.run(cfg)
    print(bench_hf.format_markdown(cfg, result), flush=True)
    if args.json:
        bench_hf.write_json(args.json, cfg, result)
    return 1 if any(r.get("error") for r in result) else 0


# ----------------------------------------------------------------------------------------------------- train


def _add_run_options(p: argparse.ArgumentParser, example: str) -> None:
    """CONFIG, --set, --resume, --quiet: the options every training command shares."""
    p.add_argument("config", nargs="?", default=None, help="YAML config file (default: all defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a config key, e.g. --set {example} (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in runs_root/name from its last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _report_run(result: dict, runs_root: str) -> int:
    """Print the run's final exact metrics and where its TensorBoard logs are. Exit status: 0 when the run is
    complete; after a checkpointed stop 130 (Ctrl-C) or 75 (SIGTERM, SIGUSR1: preempted, run again with --resume)."""
    from sampledsoftmax.training.signals import exit_status

    code = exit_status(result.get("signal")) if result["stopped"] else 0
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports for the job
        return code
    summary = " ".join(f"{k}={v:.4g}" for k, v in result["metrics"].items() if k.startswith("eval/"))
    print(f"run: {result['run_dir']}  step {result['step']}  {summary}")
    print(f"TensorBoard: tensorboard --logdir {runs_root}")
    return code


# the training commands: name -> (help, description, --set example, config loader, trainer), each "module:function"
_TRAINERS = {
    "train": (
        "train skip-gram word embeddings with any loss (YAML config)",
        "Train a skip-gram model as configured in CONFIG (YAML; every key has a default in "
        "sampledsoftmax.embeddings.config and sampledsoftmax.training.config), log to TensorBoard under "
        "runs_root/name, checkpoint, and evaluate every loss by the same exact full-softmax metric. Example: "
        "sampledsoftmax train configs/quickstart.yaml --set loss.name=sampled --set loss.sampler=log_uniform",
        "loss.name=full", "sampledsoftmax.embeddings.config:load_config", "sampledsoftmax.embeddings.train:train"),
    "train-lm": (
        "train a small next-token language model (LSTM or Transformer) with any loss",
        "Train the language model configured in CONFIG (YAML; defaults in sampledsoftmax.lm.config) "
        "with the loss named by loss.name, evaluated by exact held-out perplexity. Example: sampledsoftmax "
        "train-lm configs/lm_quick.yaml --set loss.name=full",
        "model.arch=transformer", "sampledsoftmax.lm.config:load_lm_config", "sampledsoftmax.lm.train:train_lm"),
}


def _add_trainers(sub: argparse._SubParsersAction) -> None:
    for name, (help_text, description, example, loader, trainer) in _TRAINERS.items():
        p = sub.add_parser(name, help=help_text, description=description)
        _add_run_options(p, example)
        p.set_defaults(func=_cmd_train, loader=loader, trainer=trainer, stoppable=True)


def _load(ref: str) -> Callable:
    import importlib

    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)  # the task imports torch: only when it runs


def _cmd_train(args: argparse.Namespace) -> int:
    cfg = _load(args.loader)(args.config, args.overrides)
    if args.resume:  # a config the saved state cannot load into fails now, before the data is built
        from sampledsoftmax.training.config import check_resumable_run

        check_resumable_run(cfg)
    return _report_run(_load(args.trainer)(cfg, resume=args.resume, quiet=args.quiet), cfg.runs_root)


# ----------------------------------------------------------------------------------------------------- export


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a run's word vectors in word2vec format (gensim loads them)",
        description="Write the input vectors of RUN_DIR's last checkpoint (or --checkpoint best) in word2vec "
        "text or binary format, in frequency order, plus a PATH.vocab file of word counts "
        "(gensim: KeyedVectors.load_word2vec_format(PATH, binary=..., fvocab=PATH + '.vocab')).",
    )
    p.add_argument("run_dir", help="a run directory (runs_root/name)")
    p.add_argument("--format", choices=("word2vec", "word2vec-binary"), default="word2vec")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last")
    p.add_argument("--out", default=None, help="output path (default: RUN_DIR/vectors.txt or vectors.bin)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from sampledsoftmax.training.checkpoint import load_checkpoint
    from sampledsoftmax.embeddings.export import export_word2vec
    from sampledsoftmax.data.vocab import Vocab

    run_dir = Path(args.run_dir)
    written_by = "RUN_DIR must be a run directory written by sampledsoftmax train (runs_root/name)"
    if not run_dir.is_dir():
        raise SampledSoftmaxError(f"run directory {str(run_dir)!r} does not exist or is not a directory; {written_by}")
    vocab_path = run_dir / "vocab.tsv"
    if not vocab_path.is_file():  # checked before the (large) checkpoint is read
        raise SampledSoftmaxError(f"{vocab_path} is missing; {written_by} (a train-lm run has no word vectors to "
                                  "export)")
    vocab = Vocab.load(vocab_path)
    state = load_checkpoint(run_dir / f"{args.checkpoint}.pt")
    weight = state.get("model", {}).get("embed.weight") if isinstance(state, dict) else None
    if weight is None or weight.dim() != 2:
        raise SampledSoftmaxError(f"{run_dir / (args.checkpoint + '.pt')} holds no skip-gram input table "
                                  f"(model.embed.weight); {written_by}")
    if weight.shape[0] != len(vocab):
        raise SampledSoftmaxError(f"{args.checkpoint}.pt has {weight.shape[0]} word vectors but {vocab_path} "
                                  f"lists {len(vocab)} words; they come from different runs: export the run "
                                  "directory they were written to")
    vectors = weight.float().numpy()
    binary = args.format == "word2vec-binary"
    out = Path(args.out) if args.out else run_dir / ("vectors.bin" if binary else "vectors.txt")
    export_word2vec(vectors, vocab, out, binary=binary)
    print(f"wrote {out} ({vectors.shape[0]} words x {vectors.shape[1]}) and {out}.vocab")
    return 0


# ----------------------------------------------------------------------------------------------------- sweep


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="train a grid of (loss x sampler x S x V) cells and tabulate speed and exact accuracy",
        description="Run every cell of SWEEP (YAML: name, out_dir, base overrides, grid) as a real training run "
        "on the same data and budget; write OUT_DIR/results.csv and results.md and one TensorBoard run per cell. "
        "Finished cells are skipped on a re-run; a failing cell is recorded and the sweep goes on.",
    )
    p.add_argument("sweep", help="sweep YAML, e.g. configs/sweep_quick.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a trainer key in every cell, e.g. --set train.max_steps=100 (repeatable)")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="run only the cells whose grid index is K modulo N (0 <= K < N), e.g. in a SLURM job array: "
                   "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT with --array=0-<N-1>. Several sweep "
                   "processes may share one sweep directory with or without --shard: each cell is claimed by one")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_sweep, stoppable=True)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from sampledsoftmax.experiments.sweep import parse_shard, run_sweep
    from sampledsoftmax.training.signals import exit_status

    shard = parse_shard(args.shard) if args.shard is not None else None
    rows = run_sweep(args.sweep, args.overrides, quiet=args.quiet, shard=shard)
    failed = [r for r in rows if not str(r.get("status", "")).startswith("ok")]
    print(f"sweep: {len(rows) - len(failed)} cells ok, {len(failed)} failed")
    if rows.stop_signal is not None:
        return exit_status(rows.stop_signal)
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------------ main

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_trainers, _add_sweep, _add_export, _add_bench,
                                                                _add_bench_hf]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Exact and candidate-sampling softmax losses: train, export, benchmark.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sampledsoftmax")
    except PackageNotFoundError:
        return "unknown"


_OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _out_of_space(exc: BaseException | None) -> OSError | None:
    """The OSError "no space left" (or quota, file size limit, read-only filesystem) behind `exc`, if any: torch.save
    reports a full disk as a RuntimeError raised while handling the OSError, so the whole chain is searched."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_SPACE:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit code (0 ok, 1 a benchmark or sweep cell failed, 2 a user error, 130 after
    Ctrl-C, 75 after SIGTERM or SIGUSR1: a training run or sweep that stopped with its checkpoint, to --resume or
    re-run)."""
    ok = False
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "stoppable", False):  # train, train-lm, sweep: stop cleanly on Ctrl-C, SIGTERM, SIGUSR1
            from sampledsoftmax.training.signals import stop_on_signals

            with stop_on_signals():
                code = int(args.func(args) or 0)
        else:
            code = int(args.func(args) or 0)
        ok = True  # returned, not raised: every rank got here (a stop signal is agreed on by all ranks first)
        return code
    except SampledSoftmaxError as e:
        message = " ".join(str(e).split("\n")) or type(e).__name__
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank fails alike: one line, from rank 0
            print(f"error: {message}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help and --version exit 0 through argparse
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a full disk is the user's to fix, wherever the write was; anything else is a bug
        disk = _out_of_space(e)
        if disk is None:
            raise
        where = f" writing {disk.filename}" if disk.filename else ""
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {disk.strerror or 'cannot write'}{where}; free some space or write elsewhere (runs_root, "
                  "--out) and run again (a checkpoint replaces the last one only once complete: it is kept)",
                  file=sys.stderr)
        return 2
    finally:
        if "torch.distributed" in sys.modules:
            from .training.distributed import shutdown

            shutdown(synchronize=ok)
