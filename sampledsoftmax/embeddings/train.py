"""The skip-gram trainer: config -> data -> model + loss -> training loop -> TensorBoard, checkpoints, vectors.

`loss.name` (full, sampled, nce, negative, inbatch) is the only thing that changes between losses: the loss comes from
the registry, and every loss is evaluated by the same exact full-softmax metric on the same held-out pairs.

Learning rate: `optim.alpha` is the per-pair rate, as in word2vec, decayed linearly to `optim.min_alpha` over the
run. For SGD the batch loss is summed over its pairs (each pair moves the weights by alpha, as in word2vec); for
Adagrad/Adam (scale-invariant) it is the mean. `train/objective` always logs the per-pair mean.
"""

from __future__ import annotations

import math
import resource
import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from .. import LOSSES, build_loss, build_sampler
from ..errors import ConfigError, DataError, SampledSoftmaxError
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, config_to_dict, save_config
from .fused import can_fuse, fused_sgns_step
from .model import SkipGram
from .tblog import NullLogger, RunLogger


class TrainingDiverged(SampledSoftmaxError):
    """The training objective became NaN or infinite."""


# --------------------------------------------------------------------------------------------------- building


@dataclass
class Data:
    vocab: Any  # Vocab
    pairs: Any  # SkipGramPairs: the training stream
    eval_centers: torch.Tensor  # (P,) held-out pairs
    eval_contexts: torch.Tensor  # (P,)
    planted: Any = None  # PlantedCorpus when the corpus is synthetic
    bayes_ce: Optional[tuple[float, float]] = None  # (mean, standard error) on the held-out pairs


def build_data(cfg: Config) -> Data:
    from .pairs import SkipGramPairs, heldout_pairs

    d = cfg.data
    planted = None
    if d.corpus == "synthetic":
        from .synthetic import PlantedCorpus

        planted = PlantedCorpus(d.synthetic)
        ids, heldout_ids, vocab = planted.generate()
    else:
        from .corpus import load_corpus

        cache = Path(d.cache_dir) if d.cache_dir else Path(cfg.runs_root) / ".cache"
        enc = load_corpus(
            d.corpus, lowercase=d.lowercase, token_pattern=d.token_pattern, min_count=d.min_count,
            max_final_vocab=d.max_final_vocab, heldout_fraction=d.heldout_fraction, seed=cfg.train.seed,
            cache_dir=cache,
        )
        ids, heldout_ids, vocab = enc.ids, enc.heldout_ids, enc.vocab
    pairs = SkipGramPairs(
        ids, vocab.counts, window=d.window, sample=d.sample, dynamic_window=d.dynamic_window,
        batch_size=cfg.optim.batch_size, seed=cfg.train.seed,
    )
    centers, contexts = heldout_pairs(heldout_ids, d.window, d.max_heldout_pairs, seed=cfg.train.seed)
    if len(centers) == 0:
        raise DataError(
            "no held-out pairs to evaluate on: the held-out part of the corpus is empty; "
            "raise data.heldout_fraction (or the synthetic corpus's heldout_sentences)"
        )
    bayes = planted.bayes_ce(centers, contexts) if planted is not None else None
    return Data(vocab, pairs, torch.as_tensor(centers), torch.as_tensor(contexts), planted, bayes)


def build_loss_fn(cfg, vocab, generator: torch.Generator, weight: Optional[torch.Tensor] = None):
    """The output layer + loss from the registry, by `loss.name`; the sampler from `loss.sampler`.

    `vocab` needs `len()` and `counts` (class frequencies, id = rank). `weight` borrows an output table (tied
    embeddings); otherwise the table starts at zero, as word2vec's.
    """
    lc, v, dim = cfg.loss, len(vocab), cfg.model.dim
    cls = LOSSES[lc.name]
    kw: dict[str, Any] = {} if weight is None else {"weight": weight}
    if lc.name == "full":
        kw.update(label_smoothing=lc.label_smoothing, memory_budget_mb=lc.memory_budget_mb)
    elif lc.name == "adaptive":  # torch's adaptive softmax: its own head/tail layers, no [V, d] table
        kw.update(memory_budget_mb=lc.memory_budget_mb)
    elif lc.name == "inbatch":
        # the batch's contexts are drawn from the (subsampled) unigram distribution: correct by the known counts
        kw.update(counts=torch.tensor(vocab.counts, dtype=torch.float64), subtract_log_q=lc.subtract_log_q,
                  sparse=lc.sparse, generator=generator)
    else:
        if lc.num_sampled >= v:
            raise ConfigError(
                f"loss.num_sampled={lc.num_sampled} must be below the vocabulary size {v}; "
                f"lower loss.num_sampled or data.min_count"
            )
        skw = {"alpha": lc.ns_exponent} if lc.sampler in ("unigram", "learned_unigram") else {}
        sampler = build_sampler(lc.sampler, v, counts=torch.tensor(vocab.counts, dtype=torch.float64), **skw)
        kw.update(sampler=sampler, num_sampled=lc.num_sampled, sparse=lc.sparse, generator=generator)
        if lc.remove_accidental_hits is not None and lc.name != "negative":
            kw["remove_accidental_hits"] = lc.remove_accidental_hits
        if lc.name == "sampled":
            kw.update(subtract_log_q=lc.subtract_log_q, label_smoothing=lc.label_smoothing)
        if lc.name == "negative" and lc.remove_accidental_hits is False:
            kw["collisions"] = "keep"
    loss_fn = build_loss(lc.name, v, dim, **kw)
    with torch.no_grad():
        if weight is None and loss_fn.weight is not None:
            loss_fn.weight.zero_()  # word2vec's output table starts at zero
        if loss_fn.bias is not None:
            # start from the unigram model, log p(c): a self-normalising loss (NCE) otherwise keeps the rarely
            # sampled classes near logit 0, far above their log-probability, for most of a run
            counts = torch.tensor(vocab.counts, dtype=torch.float64)
            loss_fn.bias.copy_((counts / counts.sum()).log())
    assert loss_fn.is_sampled == cls.is_sampled
    return loss_fn


def unique_params(*modules: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The modules' parameters in order, each once (a table tied between the model and the loss appears twice)."""
    return list({id(p): p for m in modules for p in m.parameters()}.values())


def build_optimizers(name: str, model: SkipGram, loss_fn, lr: float) -> list[torch.optim.Optimizer]:
    """SGD and Adagrad take sparse and dense gradients; Adam/SparseAdam split them (SparseAdam updates only the rows
    in the batch, Adam the dense rest)."""
    params = unique_params(model, loss_fn)
    if name == "sgd":
        return [torch.optim.SGD(params, lr=lr)]
    if name == "adagrad":
        return [torch.optim.Adagrad(params, lr=lr)]
    sparse_ids = {id(model.embed.weight)} if getattr(model.embed, "sparse", False) else set()
    if getattr(loss_fn, "sparse", False):
        sparse_ids |= {id(p) for p in loss_fn.parameters()}
    sparse = [p for p in params if id(p) in sparse_ids]
    dense = [p for p in params if id(p) not in sparse_ids]
    opts: list[torch.optim.Optimizer] = []
    if sparse:
        opts.append(torch.optim.SparseAdam(sparse, lr=lr))
    if dense:
        opts.append(torch.optim.Adam(dense, lr=lr))
    return opts


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available; use train.device=cpu or auto")
    return torch.device(name)


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
    """A run's budget: `total` steps and, optionally, `max_seconds` of training time (the steps themselves;
    evaluation, checkpoints and the first step of a (re)started run are not counted). Progress, which drives the
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

    def end_step(self) -> None:
        if self._t0 is not None:
            if self._warm:  # the first step of a (re)started run is not counted: it pays one-time start-up costs
                self.seconds += time.perf_counter() - self._t0  # (lazy imports: torch.optim's first Adam step
            self._warm = True                                   # alone takes ~1.2 s here), not training time
            self._t0 = None


class RunControl:
    """When a run stops: Ctrl-C (`flag`, from :func:`interruptible`) and the wall-clock `budget`.

    Under torchrun every rank must stop at the same step, or one would wait forever in a collective; so the decisions
    are the ranks' agreed ones, which :meth:`exchange` (the per-step gradient exchange) brings along with the training
    clock. In a single process they are simply the local flag and clock, read at the top of each step."""

    def __init__(self, ddp, budget: Budget, flag: dict):
        self.ddp, self.budget, self.flag = ddp, budget, flag
        self._agreed = (False, budget.out_of_time())  # (Ctrl-C on some rank, training time spent)

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


def start_run(cfg, resume: bool, build_data_fn):
    """The start every trainer shares: join torchrun's job if there is one (see sampledsoftmax.distributed), check
    the device, make the run directory on rank 0 (every rank gets its path), seed, and build the data, rank 0 first
    so that it fills the corpus cache the others then load. Returns (ddp, device, run_dir, data)."""
    from ..distributed import init_from_env

    ddp, device = init_from_env(cfg.train.device)
    if cfg.train.bf16 and device.type != "cuda":
        raise ConfigError("train.bf16 needs a CUDA device; set train.bf16=false on the CPU")
    run_dir = ddp.broadcast(prepare_run_dir(cfg, resume) if ddp.is_main else None)
    torch.manual_seed(cfg.train.seed)  # the same on every rank: identical initial weights
    if not ddp.is_main:
        ddp.barrier()
    data = build_data_fn(cfg)
    if ddp.is_main:
        ddp.barrier()
    return ddp, device, run_dir, data


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


def peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --------------------------------------------------------------------------------------------------- run directory


def prepare_run_dir(cfg: Config, resume: bool) -> Path:
    """The run directory. A new run never overwrites one that has a checkpoint: it gets the next free suffix."""
    run_dir = Path(cfg.runs_root) / cfg.name
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise DataError(f"nothing to resume in {run_dir} (no last.pt); drop --resume to start a new run")
        return run_dir
    base, k = run_dir, 1
    while (run_dir / "last.pt").exists():
        run_dir = base.with_name(f"{base.name}-{k}")
        k += 1
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise DataError(
            f"cannot write the run directory {run_dir}: {exc.strerror}; set runs_root to a writable directory"
        ) from None
    return run_dir


@contextmanager
def interruptible():
    """First Ctrl-C sets a flag that the loop checks between steps (it then checkpoints and stops cleanly); a second
    Ctrl-C interrupts at once."""
    flag = {"stop": False}

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not in the main thread: leave signals alone
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------------------------------- evaluation


def run_eval(cfg: Config, data: Data, model: SkipGram, loss_fn, device: torch.device, step: int) -> dict[str, float]:
    """Exact held-out metrics (the same for every loss), word-similarity/analogy sets, sampled-vs-exact bias."""
    from .evaluate import analogy, bias_diagnostics, exact_metrics, resolve_eval_path, word_similarity

    model.eval()
    loss_fn.eval()  # stateful samplers (learned unigram, in-batch estimates) must not learn from held-out data
    try:
        c, x = data.eval_centers.to(device), data.eval_contexts.to(device)
        m = exact_metrics(loss_fn, model, c, x, cfg.eval.batch_size)
        out = {f"eval/{k}": float(v) for k, v in m.items()}
        if data.bayes_ce is not None:
            out["eval/bayes_ce"] = data.bayes_ce[0]
            out["eval/excess_ce"] = out["eval/full_ce"] - data.bayes_ce[0]
        vectors = model.vectors.detach().float().cpu().numpy()
        for key in ("wordsim", "simlex"):
            value = getattr(cfg.eval, key)
            if value:
                out[f"eval/{key}"] = word_similarity(vectors, data.vocab, resolve_eval_path(value, key))["spearman"]
        if cfg.eval.analogy:
            path = resolve_eval_path(cfg.eval.analogy, "analogy")
            out["eval/analogy"] = analogy(vectors, data.vocab, path, restrict=cfg.eval.analogy_restrict)["accuracy"]
        if cfg.eval.bias_diagnostics and loss_fn.is_sampled:
            n = min(len(c), cfg.eval.batch_size)
            saved = loss_fn.generator
            loss_fn.generator = torch.Generator(device=device).manual_seed(cfg.train.seed + 7919 * step)
            try:  # a separate generator: evaluation never shifts the training stream's random numbers
                b = bias_diagnostics(loss_fn, model, c[:n], x[:n])
            finally:
                loss_fn.generator = saved
            out["bias/exact_minus_objective"] = float(b["exact_minus_objective"])
            out["bias/grad_cosine"] = float(b["grad_cosine"])
        return out
    finally:
        model.train()
        loss_fn.train()


# --------------------------------------------------------------------------------------------------- the loop


def train(cfg: Config, *, resume: bool = False, quiet: bool = False, stop_at_step: Optional[int] = None) -> dict:
    """Train a skip-gram model as configured. Returns the final metrics and the run directory.

    `stop_at_step` checkpoints and stops before that step, as Ctrl-C does (used to test interruption + resume).
    """
    from .evaluate import resolve_eval_path

    for kind in ("wordsim", "simlex", "analogy"):  # a missing evaluation file fails now, not after the first steps
        if getattr(cfg.eval, kind):
            resolve_eval_path(getattr(cfg.eval, kind), kind)
    from ..distributed import shard_batches

    ddp, device, run_dir, data = start_run(cfg, resume, build_data)
    gen = torch.Generator(device=device).manual_seed(cfg.train.seed)  # the same on every rank: one global sample
    opt_name = cfg.optim.name
    model = SkipGram(len(data.vocab), cfg.model.dim, sparse=opt_name != "adam").to(device)
    loss_fn = build_loss_fn(cfg, data.vocab, gen).to(device)
    opts = build_optimizers(opt_name, model, loss_fn, cfg.optim.alpha)
    params = unique_params(model, loss_fn)
    batches_per_epoch = max(1, math.ceil(data.pairs.estimated_pairs_per_epoch() / cfg.optim.batch_size) // ddp.world)
    total = cfg.train.max_steps or cfg.train.epochs * batches_per_epoch
    # SGD: per-pair rate alpha, as word2vec (summed over the global batch); otherwise the global batch's mean
    scale = cfg.optim.batch_size if opt_name == "sgd" else 1.0 / ddp.world
    # word2vec's setup (SGNS + SGD) skips autograd and the optimizer; never under torchrun (gradient exchange)
    fused = cfg.train.fused and not ddp.enabled and can_fuse(cfg, model, loss_fn)
    budget = Budget(total, cfg.train.max_seconds)
    step, epoch, batch, best = 0, 0, 0, math.inf
    run_sum = torch.zeros((), dtype=torch.float64, device=device)  # float64 running objective, no per-step sync
    run_n = 0
    if resume:
        state = load_checkpoint(run_dir / "last.pt")  # every rank reads it: a shared filesystem across machines
        _check_resumable(state, cfg, data)
        check_world_size(state, ddp)
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        for o, s in zip(opts, state["optimizers"]):
            o.load_state_dict(s)
        step, epoch, batch, best = state["step"], state["epoch"], state["batch"], state["best_ce"]
        run_sum.fill_(state["run_sum"])
        run_n = state["run_n"]
        budget.seconds = state.get("train_seconds", 0.0)
        torch.set_rng_state(state["rng_torch"])
        gen.set_state(state["rng_loss"])
    else:
        save_config(cfg, run_dir / "config.yaml")
        data.vocab.save(run_dir / "vocab.tsv")

    def checkpoint(path_name: str = "last.pt") -> None:
        if not ddp.is_main:  # the ranks hold the same weights; rank 0 writes
            return
        ensure_finite((model, loss_fn), step, cfg.optim.alpha)
        save_checkpoint({
            "model": model.state_dict(), "loss": loss_fn.state_dict(), "optimizers": [o.state_dict() for o in opts],
            "step": step, "epoch": epoch, "batch": batch, "best_ce": best, "run_sum": float(run_sum), "run_n": run_n,
            "rng_torch": torch.get_rng_state(), "rng_loss": gen.get_state(), "config": config_to_dict(cfg),
            "vocab_hash": data.vocab.hash(), "loss_name": cfg.loss.name, "train_seconds": budget.seconds,
            "world_size": ddp.world, "format": 1,
        }, run_dir / path_name)

    def evaluate() -> dict[str, float]:
        nonlocal best
        if not ddp.is_main:  # rank 0 evaluates; the others wait for it at the next collective
            return {}
        m = run_eval(cfg, data, model, loss_fn, device, step)
        log.scalars(m, step)
        log.flush()
        if m["eval/full_ce"] < best:
            best = m["eval/full_ce"]
            checkpoint("best.pt")
        return m

    log = open_logger(ddp, run_dir, total, step, quiet, f"run {run_dir}: V={len(data.vocab)} loss={cfg.loss.name}",
                      Path(cfg.runs_root))
    if not resume:
        log.hparams({**config_to_dict(cfg), "world_size": ddp.world})
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cfg.train.bf16 else nullcontext()
    metrics: dict[str, float] = {}
    t_log, n_pairs, n_steps = time.perf_counter(), 0, 0
    stopped = False
    try:
        with interruptible() as flag:
            ctl = RunControl(ddp, budget, flag)
            while step < total and not ctl.out_of_time() and (cfg.train.max_steps or epoch < cfg.train.epochs):
                stream = data.pairs.epoch_batches(epoch, start_batch=batch * ddp.world)
                for centers, contexts in shard_batches(stream, ddp.rank, ddp.world):  # max_steps may span epochs
                    if step >= total or ctl.should_stop() or step == stop_at_step:
                        break
                    lr = lr_at_progress(budget.progress(step), cfg.optim.alpha, cfg.optim.min_alpha)
                    set_lr(opts, lr)
                    if step % cfg.eval.every == 0:
                        metrics = evaluate()
                        t_log, n_pairs, n_steps = time.perf_counter(), 0, 0  # evaluation is not training throughput
                    if step % cfg.train.checkpoint_every == 0 and step > 0:
                        checkpoint()
                    budget.start_step()
                    c = torch.as_tensor(centers, device=device)
                    x = torch.as_tensor(contexts, device=device)
                    if fused:  # the same SGD step, gradients by hand (see embeddings/fused.py)
                        loss = fused_sgns_step(model, loss_fn, c, x, lr, scale)
                    else:
                        with amp:
                            loss = loss_fn(model(c), x)
                        for o in opts:
                            o.zero_grad(set_to_none=True)
                        (loss * scale).backward()
                        ctl.exchange(params)
                        for o in opts:
                            o.step()
                    run_sum += loss.detach().double()
                    run_n += 1
                    n_pairs += len(centers)
                    n_steps += 1
                    step += 1
                    batch += 1
                    budget.end_step()
                    if step % cfg.train.log_every == 0:
                        dt = time.perf_counter() - t_log
                        obj_sum, pairs_sum = ddp.sum([float(run_sum), n_pairs])  # .item(): a sync, on log steps only
                        values = {"train/objective": obj_sum / (run_n * ddp.world),
                                  "train/lr": lr, "perf/pairs_per_sec": pairs_sum / dt,
                                  "perf/step_ms": 1000 * dt / max(1, n_steps),
                                  "sys/peak_mem_mb": peak_mem_mb(device)}
                        if not math.isfinite(values["train/objective"]):  # last.pt still holds the last good state
                            raise TrainingDiverged(
                                f"training diverged at step {step} (train/objective is "
                                f"{values['train/objective']}); lower optim.alpha (now {cfg.optim.alpha}) or use "
                                f"optim.name=sparse_adam")
                        log.scalars(values, step)
                        log.progress(step, values)
                        run_sum.zero_()
                        run_n, n_pairs, n_steps, t_log = 0, 0, 0, time.perf_counter()
                else:
                    epoch, batch = epoch + 1, 0
                    continue
                break  # stopped inside the epoch
            stopped = ctl.interrupted() or (stop_at_step is not None and step == stop_at_step and step < total)
            if not stopped:
                metrics = evaluate()
                if ddp.is_main:
                    k = min(cfg.eval.projector_words, len(data.vocab))
                    log.projector(model.vectors[:k].detach().float().cpu(), data.vocab.words[:k], step)
            checkpoint()
            ddp.barrier()  # nobody leaves before rank 0 has written the final checkpoint
    finally:
        log.close()
    if stopped:
        log.message(f"stopped at step {step}: checkpoint saved; continue with --resume")
    return {"run_dir": run_dir, "step": step, "stopped": stopped, "metrics": metrics, "best_ce": best,
            "train_seconds": budget.seconds}


def _check_resumable(state: dict, cfg: Config, data: Data) -> None:
    if state.get("vocab_hash") != data.vocab.hash():
        raise ConfigError("the checkpoint was trained on a different vocabulary (corpus or data.* settings changed); "
                          "start a new run instead of --resume")
    if state.get("loss_name") != cfg.loss.name:
        raise ConfigError(f"the checkpoint was trained with loss.name={state.get('loss_name')}, not "
                          f"{cfg.loss.name}; start a new run instead of --resume")
