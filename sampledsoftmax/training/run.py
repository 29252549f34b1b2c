"""The run machinery every task shares: the run directory, the step/time budget and learning-rate schedule, stop
control (Ctrl-C, SIGTERM/SIGUSR1 preemption, budget, agreed across torchrun ranks), the divergence check, the logger's first line. The loop that
uses them is ``sampledsoftmax.training.loop``; docs/ARCHITECTURE.md shows where each piece sits.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Optional

import torch

from ..errors import ConfigError, DataError, SampledSoftmaxError
from .distributed import init_from_env
from .rundir import FileLock, claim_new, lock_existing
from .tblog import NullLogger, RunLogger


class TrainingDiverged(SampledSoftmaxError):
    """The training objective became NaN or infinite."""


def set_lr(opts: list[torch.optim.Optimizer], lr: float) -> None:
    for group in (g for o in opts for g in o.param_groups):
        group["lr"] = lr


def ensure_finite(modules, step: int, alpha: float) -> None:
    """Raise TrainingDiverged if any parameter is NaN/inf: O(V·d), so called where a checkpoint is written anyway
    (a diverged state never replaces the last good checkpoint)."""
    if not all(bool(torch.isfinite(p).all()) for m in modules for p in m.parameters()):
        raise TrainingDiverged(f"training diverged before step {step} (non-finite weights); lower optim.alpha "
                               f"(now {alpha}) or use optim.name=sparse_adam")


def lr_at(step: int, total: int, alpha: float, min_alpha: float) -> float:
    """word2vec's linear decay from alpha to min_alpha over the run."""
    return lr_at_progress(step / max(total, 1), alpha, min_alpha)


def lr_at_progress(progress: float, alpha: float, min_alpha: float) -> float:
    """Linear decay from alpha (progress 0) to min_alpha (progress >= 1)."""
    return alpha - (alpha - min_alpha) * min(max(progress, 0.0), 1.0)


class Budget:
    """A run's budget: `total` steps and, optionally, `max_seconds` of training time (the steps and the production of
    their batches; evaluation, checkpoints and the first step of a (re)started run are not counted). Progress, which drives the
    learning-rate decay, is whichever of the two is further along, so a wall-clock-budgeted run still decays to
    min_alpha by its end. `seconds` is carried
    across --resume in the checkpoint. A time budget makes the run's length depend on the machine: two runs with
    the same seed stop at different steps."""

    def __init__(self, total: int, max_seconds: Optional[float] = None, seconds: float = 0.0):
        self.total, self.max_seconds, self.seconds = total, max_seconds, seconds
        self.shared: Optional[float] = None  # data-parallel: the ranks' agreed clock (the slowest rank's seconds)
        self._t0: Optional[float] = None
        self._warm = False

    def elapsed(self) -> float:
        return self.seconds if self.shared is None else self.shared

    def progress(self, step: int) -> float:
        p = step / max(self.total, 1)
        if self.max_seconds:
            p = max(p, self.elapsed() / self.max_seconds)
        return p

    def out_of_time(self) -> bool:
        return self.max_seconds is not None and self.elapsed() >= self.max_seconds

    def start_step(self) -> None:
        self._t0 = time.perf_counter()

    def add(self, seconds: float) -> None:
        """Training time spent outside a step: producing its batch (the data pipeline is part of training)."""
        if self._warm:
            self.seconds += seconds

    def end_step(self) -> None:
        if self._t0 is not None:
            if self._warm:  # the first step of a (re)started run is not counted: it pays one-time start-up costs
                self.seconds += time.perf_counter() - self._t0  # (lazy imports: torch.optim's first Adam step
            self._warm = True                                   # alone takes ~1.2 s here), not training time
            self._t0 = None


class RunControl:
    """When a run stops: a stop signal (`flag`, from :func:`stop_on_signals`) and the wall-clock `budget`.

    Under torchrun every rank must stop at the same step, or one would wait forever in a collective; so the decisions
    are the ranks' agreed ones, which :meth:`exchange` (the per-step gradient exchange) brings along with the training
    clock. In a single process they are simply the local flag and clock, read at the top of each step."""

    def __init__(self, ddp, budget: Budget, flag: dict):
        self.ddp, self.budget, self.flag = ddp, budget, flag
        self._agreed = (False, budget.out_of_time())  # (a stop signal on some rank, training time spent)

    def _state(self) -> tuple[bool, bool]:
        return self._agreed if self.ddp.enabled else (self.flag["stop"], self.budget.out_of_time())

    def out_of_time(self) -> bool:
        return self._state()[1]

    def interrupted(self) -> bool:
        return self._state()[0] or self.flag["stop"]

    def should_stop(self) -> bool:
        return any(self._state())

    def exchange(self, params: list[torch.nn.Parameter]) -> None:
        """After backward: sum the gradients over the ranks and agree on the stop flag and the clock (no-op alone)."""
        stop_any, clock = self.ddp.all_reduce_grads(params, (self.flag["stop"], self.budget.seconds))
        if self.ddp.enabled:
            self.budget.shared = clock  # the same learning rate and stop time on every rank
            self._agreed = (stop_any > 0, self.budget.out_of_time())


@contextmanager
def start_run(cfg, resume: bool, build_data_fn):
    """The start every trainer shares: join torchrun's job if there is one (see sampledsoftmax.training.distributed),
    check the device, claim (or, to resume, lock) the run directory on rank 0 (every rank gets its path; see
    training.rundir), seed, and build the data, rank 0 first so that it fills the corpus cache the others then load.
    Yields (ddp, device, run_dir, data); the run directory's lock is released when the block ends."""
    ddp, device = init_from_env(cfg.train.device)
    if cfg.train.bf16 and device.type != "cuda":
        raise ConfigError("train.bf16 needs a CUDA device; set train.bf16=false on the CPU")
    run_dir, lock = prepare_run_dir(cfg, resume) if ddp.is_main else (None, None)
    try:
        run_dir = ddp.broadcast(run_dir)
        torch.manual_seed(cfg.train.seed)  # the same on every rank: identical initial weights
        if not ddp.is_main:
            ddp.barrier()
        data = build_data_fn(cfg)
        if ddp.is_main:
            ddp.barrier()
        yield ddp, device, run_dir, data
    finally:
        if lock is not None:
            lock.release()


def check_world_size(state: dict, ddp) -> None:
    if state.get("world_size", 1) != ddp.world:
        raise ConfigError(f"the checkpoint was written by {state.get('world_size', 1)} process(es); resume "
                          f"with the same number (now {ddp.world})")


def open_logger(ddp, run_dir: Path, total: int, step: int, quiet: bool, what: str, runs_root) -> Any:
    """Rank 0's RunLogger (a NullLogger on the other ranks), with the run's first line."""
    log = RunLogger(run_dir, total_steps=total, start_step=step, quiet=quiet) if ddp.is_main else NullLogger()
    log.message(f"{what} steps={total}" + (f" x {ddp.world} processes" if ddp.enabled else "")
                + f"; TensorBoard: tensorboard --logdir {runs_root}")
    return log


def prepare_run_dir(cfg, resume: bool) -> tuple[Path, FileLock]:
    """The run directory and its lock (training.rundir). A new run claims a free directory atomically and never
    reuses one that holds anything (it gets the next free suffix); a resumed run locks its own, refused while
    another live process trains in it."""
    run_dir = Path(cfg.runs_root) / cfg.name
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise DataError(f"nothing to resume in {run_dir} (no last.pt); drop --resume to start a new run")
        return run_dir, lock_existing(run_dir)
    return claim_new(run_dir)


def amp_context(cfg):
    """bf16 autocast for the forward pass when `train.bf16` (CUDA only; start_run checks), else a no-op."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if cfg.train.bf16 else nullcontext()
