"""Speed/accuracy sweeps: train the skip-gram model once per grid cell and tabulate speed against exact accuracy.

A sweep file (YAML)::

    name: quick
    out_dir: sweeps/quick          # default: sweeps/<name>
    base:                          # --set-style overrides applied to every cell: the same data and budget for all
      - train.max_steps=300
      - model.dim=32
    grid:                          # cell groups; each group's cells are the cartesian product of its lists
      - loss.name: [sampled]
        loss.sampler: [log_uniform, unigram]
        loss.num_sampled: [64]
        data.synthetic.vocab_size: [1000, 10000]
      - loss.name: [full]          # a loss without a sampler is not multiplied by samplers
        data.synthetic.vocab_size: [1000, 10000]
    budgets: [pairs, {seconds: 10}]  # default [pairs]: each cell once with base's train.max_steps, and once
                                     # training for 10 s (cell id suffix "-10s")

``run_sweep(path)`` checks every cell's configuration (``load_config``) before any training starts, then runs the
cells in order, each a real :func:`~sampledsoftmax.embeddings.train.train` in ``<out_dir>/runs/<cell id>`` (one
TensorBoard run with hparams per cell). After each cell its row is merged into ``<out_dir>/results.csv`` (atomically,
under a lock); a re-run skips the cells that already have an ``ok`` row and resumes a cell that was stopped (Ctrl-C,
SIGTERM, SIGUSR1) from its checkpoint, so an interrupted sweep goes on where it stopped; the files of an attempt killed
before its first checkpoint are removed first, so a cell's curve is always one attempt's. A cell that raises is
recorded as ``failed: <message>`` and the sweep goes on. Several sweep processes may work on one sweep directory at
once (one machine or several sharing a filesystem; ``--shard K/N`` splits the grid deterministically for a job
array): each cell is claimed by one process, and the tables and plots are rebuilt from every worker's rows. ``<out_dir>/results.md`` holds the same table in
markdown, sorted by V then loss, and the PNG plots of :mod:`sampledsoftmax.experiments.plots` (step time, peak memory and CE
against V, the speed-accuracy frontier, the sampled-objective bias against S) are drawn at the end.

Each cell trains in its own child process (its peak memory is its own; a crash or OOM kill is a failed row).
Budgets: ``train.max_steps`` gives every cell the same number of training pairs; ``train.max_seconds`` (with a
large max_steps) the same training time, so the two budgets answer "quality per step" and "quality per second".
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import re
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml

from ..embeddings.config import load_config
from ..lm.config import load_lm_config
from ..lm.train import train_lm
from ..embeddings.train import train
from ..errors import ConfigError, SampledSoftmaxError, did_you_mean
from ..training.builders import resolve_num_sampled
from ..training.config import read_yaml
from ..training.device import peak_mem_mb, resolve_device
from ..training.rundir import FileLock, holder
from ..training.signals import stop_signal_name
from . import curves
from .child import run_in_child
from .plots import plot_sweep

TOP_KEYS = ("name", "task", "out_dir", "base", "grid", "budgets")

# task -> (config loader, trainer): skip-gram embeddings (the default) or the language model
TASKS = {"skipgram": (load_config, train), "lm": (load_lm_config, train_lm)}

# a time-budgeted cell runs until its training seconds are spent: its step limit is set out of reach
_UNBOUNDED_STEPS = 10**9

COLUMNS = ["cell", "loss", "sampler", "S", "subtract_log_q", "finish_with_full", "optimizer", "V", "budget", "steps",
           "train_s",
           "eval_s", "wall_s", "pairs_per_sec", "step_ms", "peak_mem_mb", "full_ce", "excess_ce", "target",
           "time_to_target", "top1", "top10", "wordsim", "analogy", "bias_gap", "grad_cosine",
           # language-model cells (task: lm): throughput in tokens, exact held-out bits per byte and per-token
           # perplexity, the tokenizer's own time (not training time)
           "task", "tokens_per_sec", "bpb", "ppl", "tokenizer_s", "status", "run_dir"]

# losses whose sampler / num_sampled settings are used (inbatch takes the batch's contexts; full samples nothing)
_SAMPLING_LOSSES = ("sampled", "nce", "negative")


# ------------------------------------------------------------------------------------------------ the sweep file

class Cell:
    """One grid cell: its id, its own overrides (grid values), the full override list (base + cell) and its task."""

    def __init__(self, cell_id: str, values: dict[str, Any], overrides: list[str], task: str = "skipgram"):
        self.id = cell_id
        self.values = values
        self.overrides = overrides
        self.task = task

    def config(self, runs_root: Path):
        """The cell's training config (the sweep sets its name and runs_root)."""
        return TASKS[self.task][0](None, [*self.overrides, f"name={self.id}", f"runs_root={runs_root}"])

    def __repr__(self) -> str:
        return f"Cell({self.id!r})"


class Sweep:
    def __init__(self, name: str, out_dir: Path, base: list[str], cells: list[Cell]):
        self.name, self.out_dir, self.base, self.cells = name, out_dir, base, cells


def _fmt_value(value: Any) -> str:
    """A grid value as it is written in a `key=value` override (YAML scalars: true/false, null)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _id_part(key: str, value: Any) -> str:
    """The readable piece of a cell id for one grid key."""
    if key in ("loss.name", "loss.sampler", "optim.name"):
        return str(value)
    if key == "loss.num_sampled":
        return f"S{value}"
    if key in ("data.synthetic.vocab_size", "data.vocab_size"):
        return f"V{value}"
    if key == "data.tokenizer":
        return str(value) if value in ("word", "bpe") else "tokenizer"
    if key == "data.max_final_vocab":
        return f"maxV{value}"
    if key == "data.min_count":
        return f"min{value}"
    if key == "loss.subtract_log_q":
        return "logq" if value else "nologq"
    if key in ("eval.curve_points", "data.max_heldout_pairs"):  # how a cell is observed, not what it trains
        return ""
    if key == "train.max_seconds":
        return f"{_fmt_value(value)}s"
    if key == "loss.finish_with_full":
        return f"then-full{_fmt_value(value)}"
    return f"{key.rsplit('.', 1)[-1]}{_fmt_value(value)}"


_ID_ORDER = {"loss.name": 0, "loss.sampler": 1, "loss.num_sampled": 2, "loss.subtract_log_q": 3, "loss.finish_with_full": 4, "train.max_seconds": 100,
             "data.synthetic.vocab_size": 99, "data.vocab_size": 99, "data.max_final_vocab": 99, "data.min_count": 99}


def cell_id(values: dict[str, Any]) -> str:
    """e.g. {loss.name: sampled, loss.sampler: log_uniform, loss.num_sampled: 1024, ...vocab_size: 10000}
    -> "sampled-log_uniform-S1024-V10000". Other keys follow in grid order as <last key part><value>."""
    keys = sorted(values, key=lambda k: (_ID_ORDER.get(k, 50), list(values).index(k)))
    text = "-".join(p for p in (_id_part(k, values[k]) for k in keys) if p) or "base"
    return re.sub(r"[^A-Za-z0-9._+=,@-]", "_", text)  # a plain directory name, as Config.name requires


def _parse_budgets(raw: Any) -> list[Optional[float]]:
    """`budgets: [pairs, {seconds: 10}]` -> [None, 10.0]: None is the base's step budget (equal training pairs),
    a number an equal training time in seconds for every cell."""
    hint = "budgets: expected a list of `pairs` and/or `{seconds: N}`, e.g. [pairs, {seconds: 10}]"
    if not isinstance(raw, list) or not raw:
        raise ConfigError(hint)
    out: list[Optional[float]] = []
    for b in raw:
        if b == "pairs":
            out.append(None)
        elif isinstance(b, dict) and list(b) == ["seconds"] and isinstance(b["seconds"], (int, float)) \
                and not isinstance(b["seconds"], bool) and b["seconds"] > 0:
            out.append(float(b["seconds"]))
        else:
            raise ConfigError(f"{hint}; got {b!r}")
    if len(set(out)) != len(out):
        raise ConfigError(f"budgets: {raw!r} lists a budget twice")
    return out


def load_sweep(path: Union[str, Path], overrides: Sequence[str] = ()) -> Sweep:
    """Read and check a sweep file. `overrides` (key=value) are appended to its `base`, so they apply to every
    cell. Every cell's configuration is checked with ``load_config`` here, before anything trains."""
    raw = read_yaml(path, "sweep file")
    for k in raw:
        if k not in TOP_KEYS:
            raise ConfigError(f'unknown sweep key "{k}"{did_you_mean(str(k), TOP_KEYS)}; '
                              f'sweep keys: {", ".join(TOP_KEYS)}')
    name = raw.get("name", Path(path).stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+=,@-]*", name):
        raise ConfigError(f"name={name!r} is not a plain directory name: use letters, digits and ._+=,@-")
    out_dir = raw.get("out_dir") or f"sweeps/{name}"
    if not isinstance(out_dir, str):
        raise ConfigError(f"out_dir: expected a path, got {out_dir!r}")
    base = raw.get("base") or []
    if not isinstance(base, list) or not all(isinstance(b, str) and "=" in b for b in base):
        raise ConfigError("base: expected a list of key=value overrides, e.g. [train.max_steps=300, model.dim=32]")
    for o in overrides:
        if not isinstance(o, str) or "=" not in o:
            raise ConfigError(f"malformed override {o!r}: expected key=value, e.g. train.max_steps=100")
    base = [*base, *overrides]
    for b in base:
        if b.split("=", 1)[0].strip() in ("name", "runs_root"):
            raise ConfigError(f"base: {b.split('=', 1)[0].strip()} is set by the sweep (cell id, <out_dir>/runs)")
    task = raw.get("task", "skipgram")
    if task not in TASKS:
        raise ConfigError(f"task={task!r}: expected one of {', '.join(TASKS)} (skipgram: `sampledsoftmax train` "
                          f"cells; lm: `sampledsoftmax train-lm` cells)")
    budgets = _parse_budgets(raw.get("budgets", ["pairs"]))
    grid = raw.get("grid")
    if isinstance(grid, dict):
        grid = [grid]
    if not isinstance(grid, list) or not grid:
        raise ConfigError("grid: expected a list of cell groups, each a mapping of key -> list of values")
    cells: list[Cell] = []
    for gi, group in enumerate(grid):
        where = f"grid[{gi}]"
        if not isinstance(group, dict) or not group:
            raise ConfigError(f"{where}: expected a mapping of key -> list of values, got {group!r}")
        keys = list(group)
        lists = []
        for k in keys:
            v = group[k]
            if not isinstance(k, str) or k in ("name", "runs_root"):
                raise ConfigError(f"{where}: key {k!r} cannot be swept")
            if not isinstance(v, list):
                v = [v]  # a single value is a one-element list
            if not v or any(isinstance(x, (list, dict)) for x in v):
                raise ConfigError(f"{where}.{k}: expected a non-empty list of scalar values, got {group[k]!r}")
            lists.append(v)
        for seconds in budgets:
            for combo in itertools.product(*lists):
                values = dict(zip(keys, combo))
                overrides = [*base, *(f"{k}={_fmt_value(x)}" for k, x in values.items())]
                cid = cell_id(values)
                if seconds is not None:
                    overrides += [f"train.max_steps={_UNBOUNDED_STEPS}", f"train.max_seconds={seconds}"]
                    cid += f"-{seconds:g}s"
                cells.append(Cell(cid, values, overrides, task))
    seen: dict[str, Cell] = {}
    for c in cells:
        if c.id in seen:
            raise ConfigError(f"grid: two cells have the id {c.id!r} ({seen[c.id].values} and {c.values}); "
                              f"remove the duplicate")
        seen[c.id] = c
    root = Path(out_dir) / "runs"
    for c in cells:  # fail fast: a typo in any cell stops the sweep before the first step of training
        try:
            cfg = c.config(root)
        except ConfigError as e:
            raise ConfigError(f"sweep cell {c.id}: {e}") from None
        if cfg.data.corpus != "synthetic" and not Path(cfg.data.corpus).exists():
            raise ConfigError(f"sweep cell {c.id}: data.corpus {cfg.data.corpus!r} does not exist; point it at a "
                              f"text file or directory with --set data.corpus=PATH")
    return Sweep(name, Path(out_dir), base, cells)


# ------------------------------------------------------------------------------------------------ results

def _read_results(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [dict(r) for r in csv.DictReader(f)]


def _fmt_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e3 else f"{value:.0f}"
    return str(value)


def write_results(out_dir: Path, rows: list[dict]) -> None:
    """<out_dir>/results.csv (every column, in cell order) and results.md (sorted by V then loss), atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt_cell(r.get(k)) for k in COLUMNS})
    curves.atomic_write(out_dir / "results.csv", buf.getvalue())

    def key(r: dict) -> tuple:
        try:
            v = int(r.get("V") or 0)
        except ValueError:
            v = 0
        return (v, str(r.get("loss", "")), str(r.get("cell", "")))

    md_cols = [c for c in COLUMNS if c != "run_dir"]
    lines = ["| " + " | ".join(md_cols) + " |", "|" + "|".join("---" for _ in md_cols) + "|"]
    for r in sorted(rows, key=key):
        lines.append("| " + " | ".join(_fmt_cell(r.get(c)).replace("|", "\\|") for c in md_cols) + " |")
    curves.atomic_write(out_dir / "results.md", "\n".join(lines) + "\n")


def _scalars(run_dir: Path) -> dict[str, list[float]]:
    from ..training.tbcompat import use_tensorboard_stub

    use_tensorboard_stub()  # tensorboard's reader would import TensorFlow where it is installed
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags().get("scalars", [])
    return {t: [e.value for e in acc.Scalars(t)] for t in tags}


def _trained_vocab_size(run_dir: Path) -> Optional[int]:
    try:
        return sum(1 for line in (run_dir / "vocab.tsv").read_text(encoding="utf-8").splitlines() if line.strip())
    except OSError:
        return None


def _data_report(run_dir: Path) -> dict:
    """An LM run's data.json (its number of classes and its tokenizer's report), or {}."""
    try:
        return json.loads((run_dir / "data.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, SampledSoftmaxError) else f"{type(exc).__name__}: {text}"


def _base_row(cell: Cell, cfg) -> dict:
    lc = cfg.loss
    sampling = lc.name in _SAMPLING_LOSSES
    return {
        "cell": cell.id, "loss": lc.name,
        "sampler": lc.sampler if sampling else "",
        "S": (lc.num_sampled if lc.num_sampled is not None else "default") if sampling else "",  # see _train_cell
        "subtract_log_q": _fmt_value(lc.subtract_log_q) if lc.name in ("sampled", "inbatch") else "",
        "finish_with_full": lc.finish_with_full or "",
        "optimizer": f"{cfg.optim.name} {cfg.optim.alpha:g}",  # name and starting rate, e.g. "sgd 0.025"
        "V": _configured_v(cell, cfg),
        "budget": "seconds" if cfg.train.max_seconds else "pairs",
        "task": cell.task,
    }


def _configured_v(cell: Cell, cfg):
    """The class count the config asks for (the trained one replaces it in the row once the cell has run)."""
    if cfg.data.corpus == "synthetic":
        return cfg.data.synthetic.vocab_size + (1 if cell.task == "lm" else 0)  # the LM adds end of sentence
    return getattr(cfg.data, "vocab_size", None) or ''


def run_cell(cell: Cell, runs_root: Path, quiet: bool = True, isolate: bool = True) -> dict:
    """Train one cell and return its results row (status "ok" or "failed: <message>").

    With `isolate` (the default) the cell trains in a fresh child process (``experiments.child``), so its peak
    memory is its own and a crash or an out-of-memory kill of one cell is a failed row rather than the end of the
    sweep. A stop signal reaches the child's trainer (Ctrl-C from the terminal; SIGTERM and SIGUSR1 forwarded by
    this process), which checkpoints and stops; the row then says "interrupted", and the next run of the sweep
    resumes the cell from its checkpoint."""
    if not isolate:
        return _train_cell(cell, runs_root, quiet)
    t0 = time.perf_counter()
    kind, value = run_in_child(_train_cell, cell, runs_root, quiet, forward_signals=True)
    if kind == "ok":
        return value
    why = value if kind != "died" else f"the cell's process was {value}"
    row = _base_row(cell, cell.config(runs_root))
    row.update(wall_s=time.perf_counter() - t0, status=f"failed: {why}")
    return row


def _attempt(cfg) -> bool:
    """Whether the cell continues an interrupted attempt (its run directory has a checkpoint of this very
    configuration: --resume). Otherwise any earlier attempt's files (a run killed before its first checkpoint, or
    trained with a configuration since changed) are removed, so that the cell's curve is one attempt's alone. The
    caller holds the cell's claim: no other sweep process trains this cell."""
    from ..training.config import check_resumable_run

    run_dir = Path(cfg.runs_root) / cfg.name
    if (run_dir / "last.pt").is_file():
        try:
            check_resumable_run(cfg)
            return True
        except ConfigError:
            pass
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return False


def _train_cell(cell: Cell, runs_root: Path, quiet: bool = True) -> dict:
    cfg = cell.config(runs_root)
    row = _base_row(cell, cfg)
    t0 = time.perf_counter()
    try:
        out = TASKS[cell.task][1](cfg, quiet=quiet, resume=_attempt(cfg))
    except Exception as e:  # noqa: BLE001 - a failed cell is a result; the sweep goes on
        row.update(wall_s=time.perf_counter() - t0, status=f"failed: {_one_line(e)}")
        return row
    wall = time.perf_counter() - t0
    run_dir = Path(out["run_dir"])
    m = out.get("metrics") or {}
    row.update(steps=out["step"], train_s=out.get("train_seconds"), eval_s=m.get("eval/eval_seconds"), wall_s=wall,
               run_dir=str(run_dir),
               full_ce=m.get("eval/full_ce"), excess_ce=m.get("eval/excess_ce"),
               top1=m.get("eval/top1"), top10=m.get("eval/top10"), wordsim=m.get("eval/wordsim"),
               analogy=m.get("eval/analogy"), bias_gap=m.get("bias/exact_minus_objective"),
               grad_cosine=m.get("bias/grad_cosine"))
    if cell.task == "lm":
        data = _data_report(run_dir)
        row.update(bpb=m.get("eval/bpb"), ppl=m.get("eval/ppl"), tokenizer_s=data.get("tokenizer_seconds"))
        v = data.get("num_classes")
    else:
        v = _trained_vocab_size(run_dir)
    if v is not None:
        row["V"] = v
        if cfg.loss.name in _SAMPLING_LOSSES:  # the S the run used (null: the loss's default at this V)
            row["S"] = resolve_num_sampled(cfg.loss.name, v, cfg.loss.num_sampled)
    try:
        s = _scalars(run_dir)
    except Exception:  # noqa: BLE001 - missing perf numbers do not fail a trained cell
        s = {}
    for unit in ("pairs", "tokens"):
        if s.get(f"perf/{unit}_per_sec"):
            row[f"{unit}_per_sec"] = statistics.median(s[f"perf/{unit}_per_sec"])
    if s.get("perf/step_ms"):
        row["step_ms"] = statistics.median(s["perf/step_ms"])
    # the process's peak (RSS on the CPU, allocator peak on CUDA) including evaluation; per cell when isolated
    row["peak_mem_mb"] = peak_mem_mb(resolve_device(cfg.train.device))
    if out.get("stopped"):
        row["status"] = f"failed: interrupted at step {out['step']}"
        row["signal"] = out.get("signal")
    else:
        row["status"] = "ok"
    return row


# ------------------------------------------------------------------------------------------------ several workers
# Several `sampledsoftmax sweep` processes may work on one sweep directory at once (on one machine, or on several
# sharing a filesystem; `--shard K/N` splits the cells of a job array between them). Each cell is claimed by an
# flock on <out_dir>/.claims/<cell id>.lock for as long as it trains (a dead worker's claim is released by the
# kernel); results.csv is read, merged and rewritten under <out_dir>/.results.lock, so no row is lost.

def parse_shard(text: str) -> tuple[int, int]:
    """"K/N" -> (K, N) with 0 <= K < N: this worker runs the cells whose grid index is K modulo N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or int(m.group(2)) < 1:
        raise ConfigError(f"--shard {text!r}: expected K/N with N >= 1, e.g. --shard 0/4 (SLURM: --shard "
                          "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT with --array=0-<N-1>)")
    k, n = int(m.group(1)), int(m.group(2))
    if k >= n:
        raise ConfigError(f"--shard {text}: K must be 0..{n - 1} (shards count from 0; SLURM: --array=0-{n - 1})")
    return k, n


def _locks_dir(out_dir: Path) -> Path:
    d = out_dir / ".claims"
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot write the sweep directory {out_dir}: {e.strerror}; set out_dir (or run from) a "
                          "writable directory") from None
    return d


def _results_lock(out_dir: Path) -> FileLock:
    """Exclusive access to results.csv/md, curves.csv and the plots (blocking; held for milliseconds, or for the
    tables and plots at a worker's end)."""
    return FileLock.try_acquire(_locks_dir(out_dir) / "results.lock", wait=True)


def _ordered(sweep: Sweep, by_cell: dict[str, dict]) -> list[dict]:
    """Rows in grid order, then the rows of cells no longer in the grid (kept)."""
    ids = [c.id for c in sweep.cells]
    return [by_cell[i] for i in ids if i in by_cell] + [r for k, r in by_cell.items() if k not in set(ids)]


def _merge_row(sweep: Sweep, row: dict) -> None:
    """Add (or replace) one cell's row in results.csv, keeping every other worker's rows."""
    with _results_lock(sweep.out_dir):
        by_cell = {r.get("cell"): r for r in _read_results(sweep.out_dir / "results.csv")}
        by_cell[row["cell"]] = row
        write_results(sweep.out_dir, _ordered(sweep, by_cell))


def _is_ok(sweep: Sweep, cell: Cell) -> bool:
    rows = _read_results(sweep.out_dir / "results.csv")  # replaced atomically: readable without the lock
    return any(r.get("cell") == cell.id and r.get("status") == "ok" for r in rows)


def run_sweep(path: Union[str, Path], overrides: Sequence[str] = (), quiet: bool = False,
              shard: Optional[tuple[int, int]] = None) -> list[dict]:
    """Run the cells of the sweep file at `path` that are not "ok" in <out_dir>/results.csv yet, and return every
    row of results.csv (all workers'), in grid order. `overrides` (key=value) apply to every cell; `shard` (K, N)
    keeps the cells whose grid index is K modulo N. A cell another process is training is skipped (module notes
    above); an interrupted cell resumes from its checkpoint. Progress goes to stderr unless `quiet`; each cell's
    trainer always runs quietly. The tables, curves and plots are rebuilt at the end from every worker's rows."""
    from ..training.signals import stop_on_signals

    sweep = load_sweep(path, overrides)
    out_dir = sweep.out_dir
    runs_root = out_dir / "runs"
    claims = _locks_dir(out_dir)
    n = len(sweep.cells)
    mine = [(k, c) for k, c in enumerate(sweep.cells, 1) if shard is None or (k - 1) % shard[1] == shard[0]]
    spent: list[float] = []
    busy: list[str] = []

    def say(text: str, end: str = "\n") -> None:
        if not quiet:
            print(text, file=sys.stderr, flush=True, end=end)

    done_before = sum(_is_ok(sweep, c) for _, c in mine)
    part = f", shard {shard[0]}/{shard[1]}: {len(mine)} of them" if shard else ""
    say(f"sweep {sweep.name}: {n} cells{part} ({done_before} done before), results in {out_dir}")
    left = len(mine) - done_before
    stop_signal = None
    with stop_on_signals() as stop:
        for k, cell in mine:
            if _is_ok(sweep, cell):
                say(f"[{k}/{n}] {cell.id} ... skipped (ok in results.csv)")
                continue
            if stop["stop"]:
                break
            claim = FileLock.try_acquire(claims / f"{cell.id}.lock")
            if claim is None:
                busy.append(cell.id)
                say(f"[{k}/{n}] {cell.id} ... skipped (another process is training it: {holder(claims / (cell.id + '.lock'))})")
                continue
            with claim:
                if _is_ok(sweep, cell):  # finished by another worker between our read and our claim
                    say(f"[{k}/{n}] {cell.id} ... skipped (ok in results.csv)")
                    continue
                say(f"[{k}/{n}] {cell.id} ...", end="")
                t0 = time.perf_counter()
                row = run_cell(cell, runs_root, quiet=True)
                dt = time.perf_counter() - t0
                signum = row.pop("signal", None)
                _merge_row(sweep, row)
            spent.append(dt)
            left -= 1
            status = str(row["status"])
            what = f"done in {dt:.1f} s" if status == "ok" else f"failed in {dt:.1f} s: {status[len('failed: '):]}"
            say(f" {what} (ETA {statistics.mean(spent) * left:.0f} s)")
            if status.startswith("failed: interrupted") or stop["stop"]:
                stop_signal = stop["signal"] or signum or signal.SIGINT  # a re-run resumes with this cell
                break
        if stop["stop"] and stop_signal is None:  # the signal came between two cells
            stop_signal = stop["signal"] or signal.SIGINT
    if stop_signal is None and any(c.task == "lm" for c in sweep.cells):
        lm_references(sweep, say)
    with _results_lock(out_dir):
        result = _ordered(sweep, {r.get("cell"): r for r in _read_results(out_dir / "results.csv")})
        points = curves.collect(result)  # every evaluation of every ok cell, from the cells' own TensorBoard runs
        curves.add_time_to_target(result, points)
        write_results(out_dir, result)
        curves.write_curves(out_dir, points)
        plots = plot_sweep(out_dir, result)
    if plots:
        say(f"sweep {sweep.name}: results in {out_dir / 'results.md'}; plots: {', '.join(p.name for p in plots)}")
    if busy:
        say(f"sweep {sweep.name}: {len(busy)} cell(s) were being trained by other processes; their rows join "
            "results.csv when they finish (run the sweep again afterwards to rebuild the tables and plots)")
    if stop_signal is not None:
        say(f"sweep {sweep.name}: stopped on {stop_signal_name(stop_signal)}; run it again to continue (the "
            "interrupted cell resumes from its checkpoint)")
    return SweepResult(result, stop_signal)


# ------------------------------------------------------------------------------------------------ LM references

REFERENCE_COLUMNS = ["reference", "V", "bpb", "ppl", "seconds", "data"]


def lm_references(sweep: Sweep, say=lambda text: None) -> list[dict]:
    """An LM sweep on real text: the numbers that give its bits per byte a scale, on the very held-out text of its
    cells: per tokenization (each V), the unigram model every cell starts from and an interpolated Kneser–Ney
    trigram model of the training tokens; per corpus, gzip, bz2 and xz given the training text as context
    (lm/references.py). Written to <out_dir>/references.csv and references.md; settings already there are kept."""
    from ..lm.references import compressor_bpb, kneser_ney_bpb, unigram_bpb
    from ..lm.tokenize import heldout_lines
    from ..lm.train import build_lm_data

    path = sweep.out_dir / "references.csv"
    rows = _read_results(path)
    done = {(r.get("reference"), r.get("data")) for r in rows}
    settings: dict[str, Any] = {}
    for c in sweep.cells:
        cfg = c.config(sweep.out_dir / "runs")
        d = cfg.data
        if c.task != "lm" or d.corpus == "synthetic":
            continue
        key = f"{d.corpus}|{d.tokenizer}|{d.vocab_size}|{d.lowercase}|{d.min_count}|{d.heldout_fraction}|{cfg.train.seed}"
        settings.setdefault(key, cfg)
    corpora = {(cfg.data.corpus, cfg.data.heldout_fraction, cfg.train.seed): cfg for cfg in settings.values()}
    for key, cfg in settings.items():
        if ("kneser_ney_3", key) in done:
            continue
        t0 = time.perf_counter()
        data = build_lm_data(cfg)  # the cells' cached tokenization
        v = len(data.words)
        uni = unigram_bpb(data.counts, data.heldout, data.heldout_bytes)
        rows.append({"reference": "unigram", "V": v, "bpb": uni, "seconds": time.perf_counter() - t0, "data": key})
        kn = kneser_ney_bpb(data.train, data.heldout, data.heldout_bytes, v, order=3)
        rows.append({"reference": "kneser_ney_3", "V": v, "bpb": kn["bpb"], "ppl": kn["ppl"],
                     "seconds": kn["seconds"], "data": key})
        say(f"sweep {sweep.name}: references at V={v}: unigram {uni:.4f}, Kneser-Ney trigram {kn['bpb']:.4f} bits/byte")
    for corpus, fraction, seed in corpora:
        key = f"{corpus}|{fraction}|{seed}"
        if ("xz", key) in done:
            continue
        t0 = time.perf_counter()
        train_lines, held = heldout_lines(corpus, fraction, seed)
        for name, bpb in compressor_bpb(train_lines, held).items():
            rows.append({"reference": name, "V": "", "bpb": bpb, "seconds": time.perf_counter() - t0, "data": key})
        say(f"sweep {sweep.name}: compressors on the held-out text done in {time.perf_counter() - t0:.0f} s")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=REFERENCE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt_cell(r.get(k)) for k in REFERENCE_COLUMNS})
    with _results_lock(sweep.out_dir):
        curves.atomic_write(path, buf.getvalue())
        lines = ["| reference | V | bits per byte | perplexity |", "|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r.get('reference')} | {r.get('V') or 'any'} | {_fmt_cell(_float(r.get('bpb')))} | "
                         f"{_fmt_cell(_float(r.get('ppl')))} |")
        curves.atomic_write(sweep.out_dir / "references.md", "\n".join(lines) + "\n")
    return rows


def _float(value: Any) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class SweepResult(list):
    """The rows of results.csv (a list), and `stop_signal`: the signal that stopped this worker early, or None."""

    def __init__(self, rows: list[dict], stop_signal=None):
        super().__init__(rows)
        self.stop_signal = stop_signal
