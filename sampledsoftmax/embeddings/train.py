"""The skip-gram task: config -> data -> model + loss, wired onto the one training loop (``training.loop``).

`loss.name` (full, sampled, nce, negative, inbatch) is the only thing that changes between losses: the loss comes from
the registry, and every loss is evaluated by the same exact full-softmax metric on the same held-out pairs.

Learning rate: `optim.alpha` is the per-pair rate, as in word2vec, decayed linearly to `optim.min_alpha` over the
run. For SGD the batch loss is summed over its pairs (each pair moves the weights by alpha, as in word2vec); for
Adagrad/Adam (scale-invariant) it is the mean. `train/objective` always logs the per-pair mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ..data.corpus import load_corpus, token_fingerprint
from ..data.synthetic import PlantedCorpus
from ..errors import ConfigError, DataError
from ..training import loop
from ..training.builders import build_loss_fn, build_optimizers, unique_params
from ..training.grouped import GROUPED_LOSSES, attach_group, group_sample
from ..training.memory import check_fits
from ..training.run import amp_context, start_run
from .config import Config
from .evaluate import analogy, bias_diagnostics, exact_metrics, resolve_eval_path, word_similarity
from .fused import can_fuse, fused_sgns_step
from .sgns_kernel import NoiseTable, kernel_sgns_step, kernel_supports
from .model import SkipGram
from .pairs import SkipGramPairs, heldout_pairs, keep_probability


@dataclass
class Data:
    vocab: Any  # Vocab
    pairs: Any  # SkipGramPairs: the training stream
    eval_centers: torch.Tensor  # (P,) held-out pairs
    eval_contexts: torch.Tensor  # (P,)
    planted: Any = None  # PlantedCorpus when the corpus is synthetic
    bayes_ce: Optional[tuple[float, float]] = None  # (mean, standard error) on the held-out pairs
    fingerprint: str = ""  # of the training and held-out token ids (a resume on a changed corpus is refused)


def build_data(cfg: Config) -> Data:
    d = cfg.data
    planted = None
    if d.corpus == "synthetic":
        planted = PlantedCorpus(d.synthetic)
        ids, heldout_ids, vocab = planted.generate()
    else:
        cache = Path(d.cache_dir) if d.cache_dir else Path(cfg.runs_root) / ".cache"
        enc = load_corpus(
            d.corpus, lowercase=d.lowercase, token_pattern=d.token_pattern, min_count=d.min_count,
            max_final_vocab=d.max_final_vocab, heldout_fraction=d.heldout_fraction, seed=cfg.train.seed,
            cache_dir=cache,
        )
        ids, heldout_ids, vocab = enc.ids, enc.heldout_ids, enc.vocab
    pairs = SkipGramPairs(
        ids, vocab.counts, window=d.window, sample=d.sample, dynamic_window=d.dynamic_window,
        batch_size=cfg.optim.batch_size, seed=cfg.train.seed, mix_chunks=d.mix_chunks,
    )
    like_training = cfg.eval.heldout == "training" or (
        cfg.eval.heldout == "auto" and (d.corpus != "synthetic" or d.sample > 0))
    centers, contexts = heldout_pairs(
        heldout_ids, d.window, d.max_heldout_pairs, seed=cfg.train.seed,
        keep=keep_probability(vocab.counts, d.sample) if like_training and d.sample > 0 else None,
        dynamic_window=like_training and d.dynamic_window,
    )
    if len(centers) == 0:
        raise DataError(
            "no held-out pairs to evaluate on: the held-out part of the corpus is empty; "
            "raise data.heldout_fraction (or the synthetic corpus's heldout_sentences)"
        )
    bayes = planted.bayes_ce(centers, contexts) if planted is not None else None
    return Data(vocab, pairs, torch.as_tensor(centers), torch.as_tensor(contexts), planted, bayes,
                token_fingerprint(ids, heldout_ids))


def run_eval(cfg: Config, data: Data, model: SkipGram, loss_fn, device: torch.device, step: int) -> dict[str, float]:
    """Exact held-out metrics (the same for every loss), word-similarity/analogy sets, sampled-vs-exact bias."""
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


class SkipGramTask:
    """Skip-gram on the loop: batches of (center, context) pairs, the fused SGNS step where it applies (word2vec's
    setup: negative sampling + SGD; see embeddings/fused.py) or the autograd step, exact held-out evaluation."""

    unit = "pairs"

    def __init__(self, cfg: Config, data: Data, ddp, device: torch.device):
        check_fits(cfg, len(data.vocab), device)  # before the [V, d] tables and optimizer state are allocated
        self.cfg, self.data, self.ddp, self.device = cfg, data, ddp, device
        self.generator = torch.Generator(device=device).manual_seed(cfg.train.seed)  # same on every rank
        opt_name = cfg.optim.name
        self.model = SkipGram(len(data.vocab), cfg.model.dim, sparse=opt_name != "adam").to(device)
        self.loss_fn = build_loss_fn(cfg, data.vocab, self.generator).to(device)
        self.opts = build_optimizers(opt_name, self.model, self.loss_fn, cfg.optim.alpha)
        self.params = unique_params(self.model, self.loss_fn)
        per_epoch = max(1, math.ceil(data.pairs.estimated_pairs_per_epoch() / cfg.optim.batch_size) // ddp.world)
        self.total = cfg.train.max_steps or cfg.train.epochs * per_epoch
        # SGD: per-pair rate alpha, as word2vec: the batch mean times the pairs actually in it (the last batch of an
        # epoch is short), summed over torchrun's ranks; otherwise the global batch's mean
        self.sgd = opt_name == "sgd"
        self.scale = 1.0 / ddp.world
        # word2vec's setup skips autograd and the optimizer; never under torchrun (gradient exchange)
        self.fused = cfg.train.fused and not ddp.enabled and can_fuse(cfg, self.model, self.loss_fn)
        self.amp = amp_context(cfg)
        # torchrun: each rank takes its rows of the global batch's candidate sample (training/grouped.py)
        self.grouped = ddp.enabled and cfg.loss.name in GROUPED_LOSSES
        self.noise, self.note = None, ""  # the compiled per-pair step (word2vec's loop) where it applies
        if self.fused and cfg.train.kernel and device.type == "cpu":
            ok, why = kernel_supports(self.model, self.loss_fn)
            if ok:
                self.noise = NoiseTable.from_sampler(self.loss_fn.sampler)
                self.threads = 1 if cfg.train.deterministic else (cfg.train.threads or None)  # None: every CPU
            else:
                self.note = f"; compiled SGNS step off: {why}"

    def batches(self, epoch: int, start_batch: int):
        stream = self.data.pairs.epoch_batches(epoch, start_batch=start_batch)
        return attach_group(stream, self.ddp.world, lambda b: b[1]) if self.grouped else stream

    def step(self, batch, lr: float, ctl, index: int) -> tuple[torch.Tensor, int]:
        group = None
        if self.grouped:
            batch, *group = batch  # (pairs, the group's targets, this batch's offset in them)
        centers, contexts = batch
        scale = len(centers) if self.sgd else self.scale  # (mean loss) x n: the sum, each pair at rate lr
        if self.noise is not None and self.fused:  # word2vec's per-pair loop, compiled (embeddings/sgns_kernel.py)
            loss = kernel_sgns_step(self.model, self.loss_fn, centers, contexts, lr, scale, self.noise,
                                    seed=self.cfg.train.seed, step=index, threads=self.threads)
            return loss, len(centers)
        c = torch.as_tensor(centers, device=self.device)
        x = torch.as_tensor(contexts, device=self.device)
        if self.fused:  # the same SGD step, gradients by hand (see embeddings/fused.py)
            loss = fused_sgns_step(self.model, self.loss_fn, c, x, lr, scale)
        else:
            sample = group_sample(self.loss_fn, *group, len(x)) if group and self.loss_fn.is_sampled else None
            with self.amp:
                loss = self.loss_fn(self.model(c), x, sample=sample)
            loop.autograd_step(self, loss, scale, ctl)
        return loss, len(centers)

    def evaluate(self, step: int) -> dict[str, float]:
        return run_eval(self.cfg, self.data, self.model, self.loss_fn, self.device, step)

    def state(self) -> dict:
        return {"vocab_hash": self.data.vocab.hash(), "data_fingerprint": self.data.fingerprint}

    def check_resumable(self, state: dict) -> None:
        _check_resumable(state, self.cfg, self.data)

    def on_new_run(self, run_dir: Path) -> None:
        self.data.vocab.save(run_dir / "vocab.tsv")

    def finish(self, log, step: int) -> None:
        k = min(self.cfg.eval.projector_words, len(self.data.vocab))
        log.projector(self.model.vectors[:k].detach().float().cpu(), self.data.vocab.words[:k], step)


def train(cfg: Config, *, resume: bool = False, quiet: bool = False, stop_at_step: Optional[int] = None) -> dict:
    """Train a skip-gram model as configured. Returns the final metrics and the run directory.

    `stop_at_step` checkpoints and stops before that step, as Ctrl-C does (used to test interruption + resume).
    """
    for kind in ("wordsim", "simlex", "analogy"):  # a missing evaluation file fails now, not after the first steps
        if getattr(cfg.eval, kind):
            resolve_eval_path(getattr(cfg.eval, kind), kind)
    with start_run(cfg, resume, build_data) as (ddp, device, run_dir, data):
        task = SkipGramTask(cfg, data, ddp, device)
        what = f"run {run_dir}: V={len(data.vocab)} loss={cfg.loss.name}{task.note}"
        return loop.run(task, ddp, run_dir, resume=resume, quiet=quiet, stop_at_step=stop_at_step, what=what)


def _check_resumable(state: dict, cfg: Config, data: Data) -> None:
    if state.get("vocab_hash") != data.vocab.hash():
        raise ConfigError("the checkpoint was trained on a different vocabulary (corpus or data.* settings changed); "
                          "start a new run instead of --resume")
    if state.get("data_fingerprint", data.fingerprint) != data.fingerprint:
        raise ConfigError(f"the corpus changed since this run started ({cfg.data.corpus}: same vocabulary, other "
                          "text); restore it, or start a new run instead of --resume")
    if state.get("loss_name") != cfg.loss.name:
        raise ConfigError(f"the checkpoint was trained with loss.name={state.get('loss_name')}, not "
                          f"{cfg.loss.name}; start a new run instead of --resume")
