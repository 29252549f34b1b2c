"""The one training loop. Every task (skip-gram embeddings, the language model, ...) runs on it.

A task is an object with these members (see ``sampledsoftmax/embeddings/train.py`` and ``sampledsoftmax/lm/train.py``;
docs/ARCHITECTURE.md shows where it sits):

- ``cfg`` (with the shared ``loss``/``optim``/``train`` sections and an ``eval.every``), ``model``, ``loss_fn``,
  ``opts`` (the optimizers), ``generator`` (the loss's sampling generator), ``total`` (steps of the run),
  ``unit`` ("pairs", "tokens": what ``perf/<unit>_per_sec`` counts);
- ``batches(epoch, start_batch)``: the epoch's deterministic batch stream from batch ``start_batch`` (unsharded: the
  loop keeps this rank's share);
- ``step(batch, lr, ctl, index) -> (loss, n)``: optimisation step number ``index`` (autograd through :func:`autograd_step`, or a fused
  step of the task's own); ``loss`` is the batch's mean objective as a 0-dim tensor (no host sync), ``n`` the
  examples it covered;
- ``evaluate(step) -> dict``: exact held-out metrics, with ``eval/full_ce`` (rank 0 only calls it);
- ``state() -> dict`` and ``check_resumable(state)``: what the task adds to a checkpoint, and its check on resume;
- ``on_new_run(run_dir)`` and ``finish(log, step)``: files written beside a new run's config, and rank 0's extras
  at the end of a completed run.

The order of a step is nanoGPT's: set the learning rate, evaluate/checkpoint on their cadence, step, log.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .config import config_to_dict, save_config
from .device import peak_mem_mb
from .distributed import shard_batches
from .schedule import CurvePoints, check_finish_with_full, switch_to_full
from .run import Budget, RunControl, TrainingDiverged, check_world_size, ensure_finite, lr_at_progress, \
    open_logger, set_lr
from .signals import stop_on_signals, stop_signal_name


@dataclass
class Progress:
    """Where a run is: what a checkpoint saves besides the weights, and what the loop advances."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of this epoch done (per rank)
    best: float = math.inf  # best eval/full_ce so far
    run_n: int = 0  # steps in the running objective since the last log
    eval_seconds: float = 0.0  # spent evaluating so far (not training time)
    curve_done: int = 0  # learning-curve points evaluated (schedule.CurvePoints)
    finishing: bool = False  # switched to the exact softmax (loss.finish_with_full)
    run_sum: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))  # float64: no
    # saturation, and summed on the device: no per-step host sync


def autograd_step(task, batch_loss: torch.Tensor, scale: float, ctl: RunControl, clip: Optional[float] = None):
    """The generic step after the forward pass: zero the gradients, backward of ``batch_loss * scale``, sum the
    gradients over torchrun's ranks (and agree on stops), clip the dense gradients' norm if asked, step every
    optimizer."""
    for o in task.opts:
        o.zero_grad(set_to_none=True)
    (batch_loss * scale).backward()
    ctl.exchange(task.params)
    if clip is not None:  # over the dense gradients: clip_grad_norm_ takes no sparse ones (sampled rows, embeddings)
        torch.nn.utils.clip_grad_norm_([p for p in task.params if p.grad is not None and not p.grad.is_sparse], clip)
    for o in task.opts:
        o.step()


def run(task, ddp, run_dir: Path, *, resume: bool, quiet: bool, stop_at_step: Optional[int], what: str) -> dict:
    """Train `task` to the end of its budget, or until a stop signal (Ctrl-C, SIGTERM, SIGUSR1: checkpoint at the
    next step boundary, then stop) or `stop_at_step` (which checkpoints and stops the same way). Returns the run
    directory, the step reached, whether it stopped early and on which signal, the last metrics and the best CE."""
    cfg = task.cfg
    budget = Budget(task.total, cfg.train.max_seconds)
    p = Progress(run_sum=torch.zeros((), dtype=torch.float64, device=task.device))
    finish_with_full = check_finish_with_full(cfg, task.loss_fn)
    if resume:
        _restore(task, ddp, run_dir, p, budget)
    else:
        save_config(cfg, run_dir / "config.yaml")
        task.on_new_run(run_dir)
    curve = CurvePoints(cfg.eval.curve_points, p.curve_done)
    log = open_logger(ddp, run_dir, task.total, p.step, quiet, what, cfg.runs_root)
    if not resume:
        log.hparams({**config_to_dict(cfg), "world_size": ddp.world})
    metrics: dict[str, float] = {}
    meter = _Meter()
    stopped = False
    saved = _Saved(cfg.train.checkpoint_seconds)
    try:
        with stop_on_signals() as flag:
            ctl = RunControl(ddp, budget, flag)
            while p.step < task.total and not ctl.out_of_time() and (cfg.train.max_steps or p.epoch < cfg.train.epochs):
                stream = task.batches(p.epoch, start_batch=p.batch * ddp.world)
                for batch in _timed(shard_batches(stream, ddp.rank, ddp.world), budget):  # may span epochs
                    if p.step >= task.total or ctl.should_stop() or p.step == stop_at_step:
                        break
                    progress = budget.progress(p.step)
                    if finish_with_full and not p.finishing and progress >= 1 - finish_with_full:
                        switch_to_full(task)  # the same output layer, the exact softmax from here on
                        p.finishing = True
                    lr = lr_at_progress(progress, cfg.optim.alpha, cfg.optim.min_alpha)
                    set_lr(task.opts, lr)
                    if curve.due(progress) | (p.step % cfg.eval.every == 0):  # `|`: due() always advances
                        p.curve_done = curve.done
                        metrics = evaluate(task, ddp, run_dir, p, budget, log)
                        meter.reset()  # evaluation is not training throughput
                    if p.step > 0 and (p.step % cfg.train.checkpoint_every == 0 or saved.due()):
                        checkpoint(task, ddp, run_dir, p, budget)  # a hard kill loses at most this much
                        saved.reset()
                    budget.start_step()
                    loss, n = task.step(batch, lr, ctl, p.step)
                    p.run_sum += loss.detach().double()
                    p.run_n, p.step, p.batch = p.run_n + 1, p.step + 1, p.batch + 1
                    meter.add(n)
                    budget.end_step()
                    if p.step % cfg.train.log_every == 0:
                        log_step(task, ddp, p, meter, lr, log)
                else:
                    p.epoch, p.batch = p.epoch + 1, 0
                    continue
                break  # stopped inside the epoch
            stopped = ctl.interrupted() or (stop_at_step is not None and p.step == stop_at_step < task.total)
            if not stopped:
                metrics = evaluate(task, ddp, run_dir, p, budget, log)
                if ddp.is_main:
                    task.finish(log, p.step)
            checkpoint(task, ddp, run_dir, p, budget)
            ddp.barrier()  # nobody leaves before rank 0 has written the final checkpoint
            if stopped:
                log.message(f"stopped at step {p.step}" + (f" on {stop_signal_name(flag['signal'])}" if flag["signal"]
                            else "") + f": checkpoint saved in {run_dir}; continue with --resume")
    finally:
        log.close()
    return {"run_dir": run_dir, "step": p.step, "stopped": stopped, "signal": flag["signal"] if stopped else None,
            "metrics": metrics, "best_ce": p.best, "train_seconds": budget.seconds}


def _timed(batches, budget: Budget):
    """The batches, with the time spent producing each added to the training time (evaluation happens between
    batches and stays out)."""
    it = iter(batches)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        budget.add(time.perf_counter() - t0)
        yield batch


class _Saved:
    """The wall-clock checkpoint cadence (`train.checkpoint_seconds`; None or 0: steps only)."""

    def __init__(self, seconds: Optional[float]):
        self.seconds = seconds
        self.reset()

    def reset(self) -> None:
        self.t0 = time.monotonic()

    def due(self) -> bool:
        return bool(self.seconds) and time.monotonic() - self.t0 >= self.seconds


class _Meter:
    """Examples and steps since the last log (or evaluation), for throughput and step time."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.t0, self.n, self.steps = time.perf_counter(), 0, 0

    def add(self, n: int) -> None:
        self.n, self.steps = self.n + n, self.steps + 1


def log_step(task, ddp, p: Progress, meter: _Meter, lr: float, log) -> None:
    """The log block: the running objective (reduced over ranks), throughput, step time, peak memory; the divergence
    check (the last checkpoint still holds the last good state)."""
    dt = time.perf_counter() - meter.t0
    obj_sum, n_sum = ddp.sum([float(p.run_sum), meter.n])  # float(): a host sync, on log steps only
    values = {"train/objective": obj_sum / (p.run_n * ddp.world), "train/lr": lr,
              f"perf/{task.unit}_per_sec": n_sum / dt, "perf/step_ms": 1000 * dt / max(1, meter.steps),
              "sys/peak_mem_mb": peak_mem_mb(task.device)}
    if not math.isfinite(values["train/objective"]):
        raise TrainingDiverged(f"training diverged at step {p.step} (train/objective is {values['train/objective']}); "
                               f"lower optim.alpha (now {task.cfg.optim.alpha}) or use optim.name=sparse_adam")
    log.scalars(values, p.step)
    log.progress(p.step, values)
    p.run_sum.zero_()
    p.run_n = 0
    meter.reset()


def evaluate(task, ddp, run_dir: Path, p: Progress, budget: Budget, log) -> dict[str, float]:
    """Rank 0 evaluates exactly, logs, and keeps best.pt; the other ranks wait for it at the next collective."""
    if not ddp.is_main:
        return {}
    t0 = time.perf_counter()
    m = task.evaluate(p.step)
    p.eval_seconds += time.perf_counter() - t0
    m.update({"eval/train_seconds": budget.elapsed(), "eval/eval_seconds": p.eval_seconds})
    log.scalars(m, p.step)
    log.flush()
    if m["eval/full_ce"] < p.best:
        p.best = m["eval/full_ce"]
        checkpoint(task, ddp, run_dir, p, budget, "best.pt")
    return m


def checkpoint(task, ddp, run_dir: Path, p: Progress, budget: Budget, name: str = "last.pt") -> None:
    """Rank 0 writes the run's whole state atomically (the ranks hold the same weights), after checking that the
    weights are finite: a diverged state never replaces the last good checkpoint."""
    if not ddp.is_main:
        return
    cfg = task.cfg
    ensure_finite((task.model, task.loss_fn), p.step, cfg.optim.alpha)
    save_checkpoint({
        "model": task.model.state_dict(), "loss": task.loss_fn.state_dict(),
        "optimizers": [o.state_dict() for o in task.opts], "step": p.step, "epoch": p.epoch, "batch": p.batch,
        "best_ce": p.best, "run_sum": float(p.run_sum), "run_n": p.run_n, "rng_torch": torch.get_rng_state(),
        "rng_loss": task.generator.get_state(), "config": config_to_dict(cfg), "loss_name": cfg.loss.name,
        "train_seconds": budget.seconds, "world_size": ddp.world, "format": 1, "eval_seconds": p.eval_seconds,
        "curve_done": p.curve_done, "finishing": p.finishing, **task.state(),
    }, run_dir / name)


def _restore(task, ddp, run_dir: Path, p: Progress, budget: Budget) -> None:
    state = load_checkpoint(run_dir / "last.pt")  # every rank reads it: a shared filesystem across machines
    task.check_resumable(state)
    check_world_size(state, ddp)
    if state.get("finishing"):  # switched to the exact softmax before the checkpoint: the same loss and optimizers
        switch_to_full(task)
    task.model.load_state_dict(state["model"])
    task.loss_fn.load_state_dict(state["loss"])
    for o, s in zip(task.opts, state["optimizers"]):
        o.load_state_dict(s)
    p.step, p.epoch, p.batch, p.best = state["step"], state["epoch"], state["batch"], state["best_ce"]
    p.run_sum.fill_(state.get("run_sum", 0.0))
    p.run_n = state.get("run_n", 0)
    p.eval_seconds, p.curve_done = state.get("eval_seconds", 0.0), state.get("curve_done", 0)
    p.finishing = bool(state.get("finishing", False))
    budget.seconds = state.get("train_seconds", 0.0)
    torch.set_rng_state(state["rng_torch"])
    task.generator.set_state(state["rng_loss"])

