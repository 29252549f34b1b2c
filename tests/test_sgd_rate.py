"""Skip-gram with SGD steps every pair at rate alpha, whatever the batch size: `optim.alpha` is word2vec's per-pair
rate, so a batch of n pairs (the short last batch of an epoch included) moves the weights by the same amount whether
the configured `optim.batch_size` is n or larger. Checked on all three step paths: autograd, the fused torch SGNS
step, and the compiled per-pair kernel."""

import numpy as np
import pytest
import torch

from sampledsoftmax.embeddings.config import load_config
from sampledsoftmax.embeddings.train import SkipGramTask, build_data
from sampledsoftmax.training.distributed import init_from_env

TINY = ["data.synthetic.vocab_size=300", "data.synthetic.num_tokens=20000", "data.synthetic.num_topics=5",
        "data.synthetic.heldout_sentences=50", "model.dim=16", "train.device=cpu", "loss.name=negative",
        "optim.name=sgd", "optim.alpha=0.05", "model.output_init=0.1", "train.deterministic=true"]

PATHS = {
    "autograd": ["train.fused=false"],
    "fused": ["train.fused=true", "train.kernel=false"],
    "kernel": ["train.fused=true", "train.kernel=true"],
}


def _task(tmp_path, path: str, batch_size: int) -> SkipGramTask:
    cfg = load_config(None, [f"runs_root={tmp_path}", *TINY, *PATHS[path], f"optim.batch_size={batch_size}"])
    torch.manual_seed(cfg.train.seed)  # the trainer's seeding: identical initial weights
    ddp, device = init_from_env("cpu")
    task = SkipGramTask(cfg, build_data(cfg), ddp, device)
    which = {"autograd": not task.fused, "fused": task.fused and task.noise is None,
             "kernel": task.fused and task.noise is not None}
    assert which[path], f"the {path} path is not the one this configuration takes"
    return task


def _tables(task) -> list[torch.Tensor]:
    return [task.model.embed.weight.detach().clone(), task.loss_fn.weight.detach().clone()]


def _step(task, centers: np.ndarray, contexts: np.ndarray, lr: float) -> list[torch.Tensor]:
    before = _tables(task)
    task.step((torch.as_tensor(centers), torch.as_tensor(contexts)), lr, _NoExchange(), 0)
    return [after - b for after, b in zip(_tables(task), before)]


class _NoExchange:
    """The single-process RunControl's exchange: nothing to sum."""

    def exchange(self, params) -> None:
        pass


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("n", [2, 37])
def test_a_short_batch_steps_each_pair_at_the_configured_rate(tmp_path, path, n):
    rng = np.random.default_rng(n)
    centers = rng.integers(0, 300, n).astype(np.int64)
    contexts = rng.integers(0, 300, n).astype(np.int64)
    lr = 0.05
    short = _step(_task(tmp_path, path, batch_size=n), centers, contexts, lr)  # a full batch of n pairs
    tail = _step(_task(tmp_path, path, batch_size=1024), centers, contexts, lr)  # the same n pairs, B = 1024
    for a, b in zip(short, tail):
        assert a.abs().max() > 0  # the step moved something
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)  # before the fix: b = a * 1024 / n


def test_the_per_pair_rate_matches_the_summed_gradient(tmp_path):
    """The autograd path against the contract written out: w <- w - alpha * d(sum of the n pairs' losses)/dw."""
    task = _task(tmp_path, "autograd", batch_size=1024)
    rng = np.random.default_rng(3)
    c = torch.as_tensor(rng.integers(0, 300, 5).astype(np.int64))
    x = torch.as_tensor(rng.integers(0, 300, 5).astype(np.int64))
    w_in = task.model.embed.weight.detach().clone().requires_grad_()
    w_out = task.loss_fn.weight.detach().clone().requires_grad_()
    gen_state = task.generator.get_state()
    # the loss's own negatives: draw them from a copy of the generator state the step will use
    ref = torch.Generator().manual_seed(0)
    ref.set_state(gen_state)
    saved = task.loss_fn.generator
    task.loss_fn.generator = ref
    negs = task.loss_fn.sample(x.reshape(-1, 1)).ids  # (5, K)
    task.loss_fn.generator = saved
    h = w_in[c]  # (5, d)
    pos = torch.nn.functional.logsigmoid((h * w_out[x]).sum(-1))  # (5,)
    neg = torch.nn.functional.logsigmoid(-(h.unsqueeze(1) * w_out[negs.clamp_min(0)]).sum(-1))  # (5, K)
    keep = (negs >= 0) & (negs != x.unsqueeze(1)) if task.loss_fn.remove_accidental_hits else negs >= 0
    total = -(pos.sum() + (neg * keep).sum())  # the sum over pairs, not the mean
    total.backward()
    d_in, d_out = _step(task, c.numpy(), x.numpy(), 0.05)
    torch.testing.assert_close(d_in, -0.05 * w_in.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(d_out, -0.05 * w_out.grad, rtol=1e-4, atol=1e-7)
