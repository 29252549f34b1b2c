"""Step time and peak memory of every registered loss, next to the matrix products it cannot avoid.

One *cell* is one (loss, V). A cell builds the loss (or the naive reference, ``hidden @ W.T + b`` then
``F.cross_entropy``), an optimizer over the loss's parameters, a batch of N hidden states (``requires_grad``) and
N targets, then times ``warmup`` + ``repeats`` full training steps: zero_grad, forward, backward, optimizer step.
Right after, in the same process, it times the *matmul bound*: the three bare products of the loss's size
(``H @ T.T``, ``G @ T``, ``G.T @ H`` with T the (V, d) table for exact losses or an (S, d) gathered table for
sampled ones, S = N for in-batch negatives). ``ratio = step median / bound median`` says how far a loss is from the
arithmetic it has to do.

Memory is "peak extra MB": on CPU the peak RSS of the cell's process minus its RSS once inputs, weights and
optimizer exist (before the first step); on CUDA the ``max_memory_allocated`` delta. On CPU each cell runs in a
fresh child process (forked from a forkserver that has imported torch once; spawn where there is no forkserver),
so one cell's peak (the naive cell at V=1M needs ~15 GB) neither hides nor inherits another's, and a cell killed
for memory fails alone. On CUDA the cells run in this process; one that runs out of memory fails alone too.

Sampled losses share one set of S candidates per batch (negative sampling too, unless ``per_example_negatives``:
then each example draws its own S and the (S, d) bound counts the same flops but not the N x S gathered rows).
Targets are Zipf-like by default: log-uniform over frequency-ranked ids, P(k) = log((k+2)/(k+1)) / log(V+1),
about 1/(k+1) like word counts; ``targets="uniform"`` draws them uniformly. This module measures; it asserts nothing
about speed.

Example::

    >>> from sampledsoftmax.experiments.bench import BenchConfig, run, format_markdown
    >>> result = run(BenchConfig(losses=("full", "naive"), sizes=(300,), n=32, dim=8, repeats=2, isolate=False))
    >>> print(format_markdown(result))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

import torch
import torch.nn.functional as F

from ..errors import ConfigError, SampledSoftmaxError, did_you_mean
from ..losses import LOSSES, build_loss
from ..training.device import resolve_device as _resolve_device
from .child import run_in_child

NAIVE = "naive"
CCE = "cce"
OPTIMIZERS = ("sgd", "adam")
TARGETS = ("zipf", "uniform")
DEVICES = ("auto", "cpu", "cuda")
_COLUMNS = ("loss", "V", "S", "optimizer", "step ms (median)", "min ms", "matmul bound ms", "ratio", "peak extra MB")


@dataclass
class BenchConfig:
    """What to measure. Every field has the CLI option of the same name (``num_sampled`` -> ``--num-sampled``)."""

    losses: tuple[str, ...] | None = None  # None: every registered loss, then the naive reference
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    n: int = 1024
    dim: int = 128
    num_sampled: int = 1024
    repeats: int = 5
    warmup: int = 2
    optimizer: str = "sgd"  # "adam": torch.optim.SparseAdam for sparse-gradient losses, torch.optim.Adam otherwise
    lr: float = 1e-3
    sampler: str = "log_uniform"
    targets: str = "zipf"
    memory_budget_mb: float | None = None  # chunk budget for the exact losses; None: the loss's default
    naive_max_v: int = 1_000_000  # skip the naive reference above this V
    per_example_negatives: bool = False  # "negative": word2vec's S draws per example instead of S shared per batch
    device: str = "auto"
    seed: int = 0
    isolate: bool = True  # CPU: run each cell in a fresh child process (needed for a per-cell peak RSS)

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        positive = {"n": self.n, "dim": self.dim, "num_sampled": self.num_sampled, "repeats": self.repeats}
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ConfigError(f"warmup must be a non-negative integer, got {self.warmup!r}")
        if not self.sizes:
            raise ConfigError("sizes is empty: give at least one class count")
        for v in self.sizes:
            if not isinstance(v, int) or isinstance(v, bool) or v < 2:
                raise ConfigError(f"sizes: every class count must be an integer >= 2, got {v!r}")
        for name, value, choices in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("targets", self.targets, TARGETS),
            ("device", self.device, DEVICES),
        ):
            if value not in choices:
                raise ConfigError(f'{name} "{value}" is not one of {", ".join(choices)}{did_you_mean(value, choices)}')
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        if self.memory_budget_mb is not None and not self.memory_budget_mb > 0:
            raise ConfigError(f"memory_budget_mb must be positive, got {self.memory_budget_mb!r}")
        if self.naive_max_v < 0:
            raise ConfigError(f"naive_max_v must be >= 0, got {self.naive_max_v!r}")
        if self.losses is not None and not self.losses:
            raise ConfigError("losses is empty: name at least one loss")


@dataclass
class BenchResult:
    """The machine line, the config it ran with, and one row (a dict) per (loss, V) cell."""

    machine: dict[str, Any]
    config: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row.get("error")]

    def to_json(self) -> dict[str, Any]:
        return {"machine": self.machine, "config": self.config, "rows": self.rows}


# ----------------------------------------------------------------------------------------------------------------
# Planning: which cells, on which device


def registered_losses() -> list[str]:
    return list(LOSSES)


def resolve_losses(names: tuple[str, ...] | None) -> list[str]:
    """The loss names to run, in order; ``None`` means every registered loss, the naive reference and, where
    Apple's Cut Cross-Entropy is installed, its row."""
    known = registered_losses() + [NAIVE, CCE]
    if names is None:
        return known if cce_available() else known[:-1]
    out: list[str] = []
    for name in names:
        if name not in known:
            raise ConfigError(f'unknown loss "{name}"{did_you_mean(name, known)}; choose from {", ".join(known)}')
        if name not in out:
            out.append(name)
    return out


def resolve_device(device: str) -> str:
    """The bench's device name: "auto" -> cuda if available, else cpu (the trainers' rule)."""
    return _resolve_device(device, "--device").type


def plan_cells(cfg: BenchConfig) -> list[tuple[str, int]]:
    """(loss, V) pairs, smallest V first so the quick cells report early."""
    losses = resolve_losses(cfg.losses)
    return [(loss, v) for v in cfg.sizes for loss in losses if not (loss == NAIVE and v > cfg.naive_max_v)]


def machine_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
        "python": platform.python_version(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------------------------------------------
# One cell


class NaiveSoftmax(torch.nn.Module):
    """The reference a user writes first: materialise all N x V logits, then cross-entropy."""

    is_sampled = False

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(num_classes, dim) * dim**-0.5)
        self.bias = torch.nn.Parameter(torch.zeros(num_classes))

    def forward(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = hidden @ self.weight.T + self.bias  # (N, V)
        return F.cross_entropy(logits, target)


def cce_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("cut_cross_entropy") is not None


class CCESoftmax(torch.nn.Module):
    """Apple's Cut Cross-Entropy (``linear_cross_entropy``), the memory-efficient exact peer: ``impl="torch_compile"``
    on a CPU (its one CPU path; compiled during the warm-up steps), its Triton ``cce`` kernel on CUDA. It has no bias
    term (our exact losses do: the products are the same three)."""

    is_sampled = False

    def __init__(self, num_classes: int, dim: int, device: str) -> None:
        super().__init__()
        try:
            from cut_cross_entropy import linear_cross_entropy
        except ImportError:
            raise ConfigError("loss cce needs Apple's Cut Cross-Entropy: pip install cut-cross-entropy") from None
        self._lce = linear_cross_entropy
        self.impl = "cce" if device == "cuda" else "torch_compile"
        self.weight = torch.nn.Parameter(torch.randn(num_classes, dim) * dim**-0.5)

    def forward(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._lce(hidden, self.weight, target, impl=self.impl)


# What each loss is given: the sampled ones a sampler, S and sparse grads; in-batch negatives take their candidates
# from the batch; the exact ones a chunk budget. A loss registered later is classed by its `is_sampled`.
# Negative sampling shares one set of S negatives per batch like the other sampled losses (so the same (S, d)
# bound applies) unless per_example_negatives: then each example draws its own S, N x S rows in all.
_LOSS_SETTINGS = {
    "sampled": ("sampler", "num_sampled", "sparse"),
    "nce": ("sampler", "num_sampled", "sparse"),
    "negative": ("sampler", "num_sampled", "sparse", "shared"),
    "inbatch": ("sparse",),
    "full": ("memory_budget_mb",),
    "ova": ("memory_budget_mb",),
}


def _loss_kwargs(name: str, cfg: BenchConfig) -> dict[str, Any]:
    """The benchmark's settings, as keyword arguments for ``build_loss(name, ...)``."""
    settings = _LOSS_SETTINGS.get(name)
    if settings is None:
        sampled = getattr(LOSSES[name], "is_sampled", False)
        settings = ("sampler", "num_sampled", "sparse") if sampled else ("memory_budget_mb",)
    values = {"sampler": cfg.sampler, "num_sampled": cfg.num_sampled, "sparse": True,
              "memory_budget_mb": cfg.memory_budget_mb, "shared": not cfg.per_example_negatives}
    return {k: values[k] for k in settings if values[k] is not None}


def _make_targets(kind: str, n: int, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, generator=gen, dtype=torch.float64)  # (N,)
    if kind == "uniform":
        ids = (u * num_classes).long()
    else:  # log-uniform (Zipf-like) over frequency ranks
        ids = torch.exp(u * math.log(num_classes + 1)).floor().long() - 1
    return ids.clamp_(0, num_classes - 1)


def _make_optimizer(name: str, params: list[torch.nn.Parameter], sparse: bool, lr: float):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr), "sgd"
    if sparse:
        return torch.optim.SparseAdam(params, lr=lr), "sparse_adam"
    return torch.optim.Adam(params, lr=lr), "adam"


class _Memory:
    """Peak memory above a baseline: CUDA allocator stats, or process RSS (Linux: VmHWM, reset via clear_refs)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.base = 0.0
        self.reset_ok = False

    def start(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2**20
            return
        self.reset_ok = _reset_peak_rss()
        self.base = _current_rss_mb() if self.reset_ok else _peak_rss_mb()

    def peak_extra_mb(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20 - self.base
        peak = _status_kb("VmHWM") / 1024 if self.reset_ok else _peak_rss_mb()
        return max(peak - self.base, 0.0)


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmHWM") > 0
    except OSError:
        return False


def _status_kb(key: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def _current_rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _timed(fn: Callable[[], Any], warmup: int, repeats: int, sync: Callable[[], None]) -> list[float]:
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _bound_products(hidden: torch.Tensor, table: torch.Tensor, gen: torch.Generator) -> Callable[[], None]:
    """The three products a loss over ``table`` (K rows) must do: logits, grad of hidden, grad of the table."""
    n, k = hidden.shape[0], table.shape[0]
    dev, dt = hidden.device, hidden.dtype
    grad = torch.randn(n, k, generator=gen, dtype=dt).to(dev)  # (N, K) stands in for dL/dlogits
    logits, d_hidden, d_table = (torch.empty(s, dtype=dt, device=dev) for s in ((n, k), hidden.shape, table.shape))

    def products() -> None:
        torch.matmul(hidden, table.T, out=logits)  # (N, K)
        torch.matmul(grad, table, out=d_hidden)  # (N, d)
        torch.matmul(grad.T, hidden, out=d_table)  # (K, d)

    return products


def run_cell(cfg: BenchConfig, loss_name: str, num_classes: int, device: str) -> dict[str, Any]:
    """Time one (loss, V) cell in this process and return its row."""
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    n, d = cfg.n, cfg.dim

    if loss_name in (NAIVE, CCE):
        kwargs: dict[str, Any] = {}
        loss_fn = NaiveSoftmax(num_classes, d) if loss_name == NAIVE else CCESoftmax(num_classes, d, device)
    else:
        kwargs = _loss_kwargs(loss_name, cfg)
        loss_fn = build_loss(loss_name, num_classes=num_classes, dim=d, **kwargs)
    loss_fn = loss_fn.to(dev)
    sampled = bool(getattr(loss_fn, "is_sampled", False))
    sparse = sampled and bool(kwargs.get("sparse"))  # the contract: sampled losses with sparse=True give COO grads
    params = [p for p in loss_fn.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f'loss "{loss_name}" has no trainable parameters to benchmark')
    opt, opt_name = _make_optimizer(cfg.optimizer, params, sparse, cfg.lr)
    hidden = torch.randn(n, d, generator=gen).to(dev).requires_grad_()  # (N, d)
    target = _make_targets(cfg.targets, n, num_classes, gen).to(dev)  # (N,)
    last: list[torch.Tensor] = []

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        hidden.grad = None
        loss = loss_fn(hidden, target)
        loss.backward()
        opt.step()
        last[:] = [loss.detach()]

    memory = _Memory(dev)
    memory.start()
    times = _timed(step, cfg.warmup, cfg.repeats, sync)
    peak_extra = memory.peak_extra_mb() if (dev.type == "cuda" or memory.reset_ok or cfg.isolate) else None
    last_loss = float(last[0])  # one sync, outside the timed steps
    weight = getattr(loss_fn, "weight", None)
    grad_layout = None
    if weight is not None and weight.grad is not None:
        grad_layout = "sparse" if weight.grad.is_sparse else "dense"

    # The bound, in the same process right after; the optimizer's state is dropped first.
    opt.zero_grad(set_to_none=True)
    del opt, step
    num_sampled = None
    if sampled:
        num_sampled = cfg.num_sampled if "num_sampled" in kwargs else n  # in-batch: the batch's N targets
    table_src = weight.detach() if weight is not None else torch.randn(num_classes, d, generator=gen).to(dev)
    if num_sampled is None:
        table = table_src  # (V, d)
    else:
        rows = torch.randint(0, num_classes, (num_sampled,), generator=gen).to(dev)
        table = table_src.index_select(0, rows)  # (S, d), gathered once
    bound = _timed(_bound_products(hidden.detach(), table, gen), cfg.warmup, cfg.repeats, sync)

    median, bound_median = statistics.median(times), statistics.median(bound)
    return {
        "loss": loss_name,
        "V": num_classes,
        "S": num_sampled,
        "N": n,
        "dim": d,
        "optimizer": opt_name,
        "grad": grad_layout,
        "device": device,
        "median_ms": median,
        "min_ms": min(times),
        "times_ms": times,
        "bound_median_ms": bound_median,
        "bound_min_ms": min(bound),
        "ratio": median / bound_median if bound_median > 0 else None,
        "peak_extra_mb": peak_extra,
        "last_loss": last_loss if math.isfinite(last_loss) else None,  # None: the loss was inf/nan
        "error": None,
    }


# ----------------------------------------------------------------------------------------------------------------
# All cells


def run(cfg: BenchConfig, progress: TextIO | None = None) -> BenchResult:
    """Run every cell; on CPU with ``cfg.isolate`` each in a fresh child process. A cell that crashes (or is killed
    for memory) becomes a row with ``error`` set; a user error (bad option) stops the run."""
    cfg.validate()
    device = resolve_device(cfg.device)
    cells = plan_cells(cfg)
    result = BenchResult(machine=machine_info(device), config=dataclasses.asdict(cfg))
    isolate = cfg.isolate and device == "cpu"
    if progress is not None:
        print(f"bench: {len(cells)} cells on {device}" + (", one child process each" if isolate else ""), file=progress)
    for i, (loss_name, num_classes) in enumerate(cells, 1):
        if progress is not None:
            print(f"[{i}/{len(cells)}] {loss_name} V={num_classes} ... ", end="", file=progress, flush=True)
        t0 = time.perf_counter()
        if isolate:
            row = _run_cell_isolated(cfg, loss_name, num_classes, device)
        else:
            try:
                row = run_cell(cfg, loss_name, num_classes, device)
            except torch.OutOfMemoryError as e:
                row = _failed_row(cfg, loss_name, num_classes, device, f"out of memory: {str(e).splitlines()[0]}"[:200])
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
        result.rows.append(row)
        if progress is not None:
            print(_progress_line(row, time.perf_counter() - t0), file=progress, flush=True)
    return result


def _progress_line(row: dict[str, Any], seconds: float) -> str:
    if row.get("error"):
        return f"FAILED: {row['error']}"
    peak = row["peak_extra_mb"]
    mem = f", peak +{peak:.0f} MB" if peak is not None else ""
    return (
        f"{row['median_ms']:.2f} ms (bound {row['bound_median_ms']:.2f} ms, ratio {_fmt_ratio(row['ratio'])}"
        f"{mem}, grad {row['grad']}) [{seconds:.1f}s]"
    )


def _run_cell_isolated(cfg: BenchConfig, loss_name: str, num_classes: int, device: str) -> dict[str, Any]:
    """Run one cell in a fresh child process (``experiments.child``) and return its row; a crash or OOM kill
    becomes a failed row."""
    kind, value = run_in_child(run_cell, cfg, loss_name, num_classes, device)
    if kind == "ok":
        return value
    if kind == "user_error":
        raise SampledSoftmaxError(value)
    why = f"{value} (traceback above)" if kind == "error" else f"cell process {value}"
    return _failed_row(cfg, loss_name, num_classes, device, why)


def _failed_row(cfg: BenchConfig, loss_name: str, num_classes: int, device: str, why: str) -> dict[str, Any]:
    row: dict[str, Any] = {k: None for k in ("S", "optimizer", "grad", "median_ms", "min_ms", "bound_median_ms")}
    row.update(loss=loss_name, V=num_classes, N=cfg.n, dim=cfg.dim, device=device, error=why)
    row.update(times_ms=[], bound_min_ms=None, ratio=None, peak_extra_mb=None, last_loss=None)
    return row


# ----------------------------------------------------------------------------------------------------------------
# Reporting


def machine_line(result: BenchResult) -> str:
    m, c = result.machine, result.config
    gpu = f" ({m['gpu']})" if m.get("gpu") else ""
    return (
        f"machine: {m['cpu_count']} CPUs ({m['cpu_model']}), torch {m['torch']}, {m['threads']} threads, "
        f"device {m['device']}{gpu}; N={c['n']} d={c['dim']} S={c['num_sampled']} targets={c['targets']} "
        f"sampler={c['sampler']} negatives={'per-example' if c['per_example_negatives'] else 'shared'} "
        f"lr={c['lr']} warmup={c['warmup']} repeats={c['repeats']} seed={c['seed']}"
    )


def format_markdown(result: BenchResult) -> str:
    """The machine line, a blank line, then one markdown table row per cell."""
    lines = [machine_line(result), "", "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for row in result.rows:
        if row.get("error"):
            cells = [row["loss"], str(row["V"]), "-", row.get("optimizer") or "-", f"failed: {row['error']}"]
            cells += [""] * (len(_COLUMNS) - len(cells))
        else:
            peak = row["peak_extra_mb"]
            cells = [
                row["loss"],
                str(row["V"]),
                "-" if row["S"] is None else str(row["S"]),
                row["optimizer"],
                _fmt_ms(row["median_ms"]),
                _fmt_ms(row["min_ms"]),
                _fmt_ms(row["bound_median_ms"]),
                _fmt_ratio(row["ratio"]),
                "n/a" if peak is None else f"{peak:.0f}" if peak >= 10 else f"{peak:.1f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt_ms(ms: float) -> str:
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}" if ms >= 0.1 else f"{ms:.3f}"


def _fmt_ratio(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.1f}" if ratio >= 10 else f"{ratio:.2f}"


def write_outputs(result: BenchResult, out: str | None = None, json_path: str | None = None) -> None:
    """Write the markdown table to ``out`` and the rows to ``json_path`` (either may be None)."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(format_markdown(result) + "\n")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result.to_json(), indent=2) + "\n")
