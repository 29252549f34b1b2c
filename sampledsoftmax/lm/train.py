"""Train a small next-token language model with any of the losses, evaluated by exact held-out perplexity.

It reuses the embedding trainer's pieces: corpus reading and the planted corpus, the loss/optimizer builders,
TensorBoard logging, atomic checkpoints, Ctrl-C handling and the learning-rate schedule. The model returns hidden
states (B, T, d); the loss owns (or, with `model.tie_weights`, borrows the token embedding as) the output layer.
Evaluation is the exact full-softmax perplexity over every held-out token, whatever the training loss.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..embeddings.checkpoint import load_checkpoint, save_checkpoint
from ..embeddings.train import (
    Budget,
    RunControl,
    TrainingDiverged,
    build_loss_fn,
    build_optimizers,
    check_world_size,
    ensure_finite,
    interruptible,
    lr_at_progress,
    open_logger,
    peak_mem_mb,
    set_lr,
    start_run,
    unique_params,
)
from ..errors import ConfigError
from .config import LMConfig, lm_config_to_dict
from .data import LMBatches, eval_batches, sentences_to_stream
from .model import build_lm


class _Counts:
    """What build_loss_fn needs of a vocabulary: its size and the class frequencies (the EOS token included)."""

    def __init__(self, counts: np.ndarray):
        self.counts = counts

    def __len__(self) -> int:
        return len(self.counts)


def build_lm_data(cfg: LMConfig):
    """-> (words, train stream, held-out stream, class counts); class id V = end of sentence."""
    d = cfg.data
    if d.corpus == "synthetic":
        from ..embeddings.synthetic import PlantedCorpus

        ids, heldout_ids, vocab = PlantedCorpus(d.synthetic).generate()
    else:
        from ..embeddings.corpus import load_corpus

        cache = Path(d.cache_dir) if d.cache_dir else Path(cfg.runs_root) / ".cache"
        enc = load_corpus(d.corpus, lowercase=d.lowercase, token_pattern=d.token_pattern, min_count=d.min_count,
                          max_final_vocab=d.max_final_vocab, heldout_fraction=d.heldout_fraction,
                          seed=cfg.train.seed, cache_dir=cache)
        ids, heldout_ids, vocab = enc.ids, enc.heldout_ids, enc.vocab
    eos = len(vocab)
    train_stream = sentences_to_stream(ids, eos)
    heldout_stream = sentences_to_stream(heldout_ids, eos)
    counts = np.bincount(train_stream, minlength=eos + 1).astype(np.int64)
    counts = np.maximum(counts, 1)  # every class samplable; the log-unigram bias init stays finite
    return list(vocab.words) + ["</s>"], train_stream, heldout_stream, counts


@torch.no_grad()
def exact_perplexity(cfg: LMConfig, model, loss_fn, stream: np.ndarray, device) -> dict[str, float]:
    """Exact full-softmax cross entropy over every held-out token (chunked over V), and its perplexity."""
    model.eval()
    total, count = 0.0, 0
    try:
        for i, (x, y) in enumerate(eval_batches(stream, cfg.eval.batch_size, cfg.data.seq_len)):
            if cfg.eval.max_batches is not None and i >= cfg.eval.max_batches:
                break
            x, y = x.to(device), y.to(device)
            nll = loss_fn.exact_nll(model(x), y)  # (B, T), 0 on padding
            total += float(nll.double().sum())
            count += int((y != loss_fn.ignore_index).sum())
    finally:
        model.train()
    ce = total / max(count, 1)
    return {"eval/full_ce": ce, "eval/ppl": math.exp(min(ce, 700.0)), "eval/tokens": float(count)}


def train_lm(cfg: LMConfig, *, resume: bool = False, quiet: bool = False, stop_at_step: Optional[int] = None) -> dict:
    """Train the configured LM; returns the run directory, step and final metrics."""
    from ..distributed import shard_batches

    ddp, device, run_dir, (words, train_stream, heldout_stream, counts) = start_run(cfg, resume, build_lm_data)
    v, mc = len(words), cfg.model
    if cfg.loss.name != "full" and cfg.loss.name != "inbatch" and cfg.loss.num_sampled >= v:
        raise ConfigError(f"loss.num_sampled={cfg.loss.num_sampled} must be below the vocabulary size {v}")
    kw = dict(num_layers=mc.num_layers, dropout=mc.dropout)
    if mc.arch == "transformer":
        kw.update(num_heads=mc.num_heads, max_len=cfg.data.seq_len)
    model = build_lm(mc.arch, v, mc.dim, **kw).to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.train.seed)
    loss_fn = build_loss_fn(cfg, _Counts(counts), gen, weight=model.embed.weight if mc.tie_weights else None).to(device)
    opts = build_optimizers(cfg.optim.name, model, loss_fn, cfg.optim.alpha)
    batches = LMBatches(train_stream, cfg.optim.batch_size, cfg.data.seq_len, cfg.train.seed)
    if batches.num_batches() == 0:
        raise ConfigError(f"the corpus is too short for one batch of optim.batch_size={cfg.optim.batch_size} "
                          f"sequences of data.seq_len={cfg.data.seq_len}; lower them")
    if batches.num_batches() < ddp.world:
        raise ConfigError(f"the corpus has {batches.num_batches()} batch(es) per epoch, fewer than the "
                          f"{ddp.world} processes; lower optim.batch_size or use fewer processes")
    total = cfg.train.max_steps or cfg.train.epochs * (batches.num_batches() // ddp.world)
    budget = Budget(total, cfg.train.max_seconds)
    step, epoch, batch, best = 0, 0, 0, math.inf
    if resume:
        state = load_checkpoint(run_dir / "last.pt")
        if state.get("loss_name") != cfg.loss.name or state.get("num_classes") != v:
            raise ConfigError("the checkpoint was trained with another loss or vocabulary; start a new run")
        check_world_size(state, ddp)
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        for o, s in zip(opts, state["optimizers"]):
            o.load_state_dict(s)
        step, epoch, batch, best = state["step"], state["epoch"], state["batch"], state["best_ce"]
        budget.seconds = state.get("train_seconds", 0.0)
        torch.set_rng_state(state["rng_torch"])
        gen.set_state(state["rng_loss"])

    def checkpoint(name: str = "last.pt") -> None:
        if not ddp.is_main:  # the ranks hold the same weights; rank 0 writes
            return
        ensure_finite((model, loss_fn), step, cfg.optim.alpha)
        save_checkpoint({
            "model": model.state_dict(), "loss": loss_fn.state_dict(), "optimizers": [o.state_dict() for o in opts],
            "step": step, "epoch": epoch, "batch": batch, "best_ce": best, "rng_torch": torch.get_rng_state(),
            "rng_loss": gen.get_state(), "config": lm_config_to_dict(cfg), "loss_name": cfg.loss.name,
            "num_classes": v, "train_seconds": budget.seconds, "world_size": ddp.world, "format": 1,
        }, run_dir / name)

    def evaluate() -> dict[str, float]:
        nonlocal best
        if not ddp.is_main:  # rank 0 evaluates; the others wait for it at the next collective
            return {}
        m = exact_perplexity(cfg, model, loss_fn, heldout_stream, device)
        log.scalars(m, step)
        log.flush()
        if m["eval/full_ce"] < best:
            best = m["eval/full_ce"]
            checkpoint("best.pt")
        return m

    log = open_logger(ddp, run_dir, total, step, quiet, f"LM run {run_dir}: V={v} arch={mc.arch} loss={cfg.loss.name}",
                      cfg.runs_root)
    if not resume:
        log.hparams({**lm_config_to_dict(cfg), "world_size": ddp.world})
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cfg.train.bf16 else nullcontext()
    params = unique_params(model, loss_fn)
    clip = not (cfg.loss.sparse and loss_fn.is_sampled)  # clip_grad_norm_ needs dense gradients
    metrics: dict[str, float] = {}
    run_sum, run_n, n_tok, n_steps, t_log = 0.0, 0, 0, 0, time.perf_counter()
    stopped = False
    try:
        with interruptible() as flag:
            ctl = RunControl(ddp, budget, flag)
            while step < total and not ctl.out_of_time() and (cfg.train.max_steps or epoch < cfg.train.epochs):
                stream = batches.epoch_batches(epoch, start_batch=batch * ddp.world)
                for x, y in shard_batches(stream, ddp.rank, ddp.world):
                    if step >= total or ctl.should_stop() or step == stop_at_step:
                        break
                    lr = lr_at_progress(budget.progress(step), cfg.optim.alpha, cfg.optim.min_alpha)
                    set_lr(opts, lr)
                    if step % cfg.eval.every == 0:
                        metrics = evaluate()
                        t_log, n_tok, n_steps = time.perf_counter(), 0, 0  # evaluation is not throughput
                    if step % cfg.train.checkpoint_every == 0 and step > 0:
                        checkpoint()
                    budget.start_step()
                    x, y = x.to(device), y.to(device)
                    with amp:
                        loss = loss_fn(model(x), y)  # hidden (B, T, d), targets (B, T)
                    for o in opts:
                        o.zero_grad(set_to_none=True)
                    (loss / ddp.world).backward()  # summed over ranks below: the global batch's mean
                    ctl.exchange(params)
                    if clip:
                        torch.nn.utils.clip_grad_norm_(params, 1.0)
                    for o in opts:
                        o.step()
                    run_sum, run_n = run_sum + loss.detach().double(), run_n + 1  # summed on device, read on log steps
                    n_tok, n_steps, step, batch = n_tok + y.numel(), n_steps + 1, step + 1, batch + 1
                    budget.end_step()
                    if step % cfg.train.log_every == 0:
                        dt = time.perf_counter() - t_log
                        obj_sum, tok_sum = ddp.sum([float(run_sum), n_tok])
                        values = {"train/objective": obj_sum / (run_n * ddp.world), "train/lr": lr,
                                  "perf/tokens_per_sec": tok_sum / dt, "perf/step_ms": 1000 * dt / max(1, n_steps),
                                  "sys/peak_mem_mb": peak_mem_mb(device)}
                        if not math.isfinite(values["train/objective"]):
                            raise TrainingDiverged(f"training diverged at step {step}; lower optim.alpha "
                                                   f"(now {cfg.optim.alpha})")
                        log.scalars(values, step)
                        log.progress(step, values)
                        run_sum, run_n, n_tok, n_steps, t_log = 0.0, 0, 0, 0, time.perf_counter()
                else:
                    epoch, batch = epoch + 1, 0
                    continue
                break
            stopped = ctl.interrupted() or (stop_at_step is not None and step == stop_at_step and step < total)
            if not stopped:
                metrics = evaluate()
            checkpoint()
            ddp.barrier()  # nobody leaves before rank 0 has written the final checkpoint
    finally:
        log.close()
    if stopped:
        log.message(f"stopped at step {step}: checkpoint saved; continue with --resume")
    return {"run_dir": run_dir, "step": step, "stopped": stopped, "metrics": metrics, "best_ce": best,
            "train_seconds": budget.seconds}
