"""What changes during a run besides the learning rate: the learning-curve evaluation points and the switch from a
sampled loss to the exact softmax for the last part of the run (``loss.finish_with_full``).

Learning curves (``eval.curve_points: n``): evaluations at n log-spaced points of the run's progress, 1 % ... 100 %
(progress is the budget's: steps or training seconds, whichever is further along; see ``run.Budget``), in addition
to ``eval.every``. The last point is the run's final evaluation. Evaluation time is not training time.

Finish with the exact softmax (``loss.finish_with_full: f``): once the progress reaches 1 - f, the task's loss is
replaced by a :class:`~sampledsoftmax.losses.FullSoftmaxLoss` on the very same output table and bias (the
parameters are shared, not copied), and the optimizers are rebuilt around it. Optimizer state carries over where
the optimizer does: SGD has none; Adagrad keeps its per-parameter sums (it takes dense and sparse gradients);
``sparse_adam`` keeps SparseAdam for the sparse input table and moves the output table's moments and step count to
a dense Adam (SparseAdam cannot take the exact softmax's dense gradient). A checkpoint records the switch, so a
resumed run switches before loading the optimizer states.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..losses import FullSoftmaxLoss
from .builders import build_optimizers, unique_params


class CurvePoints:
    """The log-spaced progress fractions still to evaluate at (the last, 1.0, is the final evaluation)."""

    def __init__(self, n: int, done: int = 0):
        self.points = [0.01 ** (1 - i / (n - 1)) for i in range(n - 1)] if n > 1 else []
        self.done = done  # points already evaluated (checkpointed as "curve_done")

    def due(self, progress: float) -> bool:
        """Whether a point has been reached since the last call that returned True (several at once count once)."""
        hit = False
        while self.done < len(self.points) and progress >= self.points[self.done]:
            self.done, hit = self.done + 1, True
        return hit


def check_finish_with_full(cfg, loss_fn) -> float:
    """`loss.finish_with_full` as a fraction, after checking it can apply to this loss."""
    f = float(getattr(cfg.loss, "finish_with_full", 0.0) or 0.0)
    if not 0.0 <= f < 1.0:
        raise ConfigError(f"loss.finish_with_full={f!r} is out of range: must be in [0, 1) (0.1: the last 10 % of "
                          f"the run with the exact softmax)")
    if f and not (loss_fn.is_sampled and getattr(loss_fn, "weight", None) is not None):
        raise ConfigError(f"loss.finish_with_full={f!r} needs a sampled loss with an output table (sampled, nce, "
                          f"negative, inbatch), not loss.name={cfg.loss.name}; set loss.finish_with_full=0")
    return f


def switch_to_full(task) -> None:
    """Replace the task's loss by the exact softmax on the same output layer and rebuild its optimizers, carrying
    their state over (module docstring). Sets `task.loss_fn`, `task.opts`, `task.params`, and turns a fused step
    off (`task.fused`)."""
    cfg, old = task.cfg, task.loss_fn
    full = FullSoftmaxLoss(old.num_classes, old.dim, weight=old.weight, bias=old.bias,
                           label_smoothing=cfg.loss.label_smoothing, memory_budget_mb=cfg.loss.memory_budget_mb,
                           ignore_index=old.ignore_index, reduction=old.reduction,
                           validate=old.validate)
    full.train(old.training)
    lr = task.opts[0].param_groups[0]["lr"]
    opts = build_optimizers(cfg.optim.name, task.model, full, lr)
    states = {id(p): s for o in task.opts for p, s in o.state.items()}
    for o in opts:
        for p in (q for g in o.param_groups for q in g["params"]):
            s = states.get(id(p))
            if s:
                s = dict(s)
                if isinstance(o, torch.optim.Adam) and not torch.is_tensor(s.get("step")):
                    s["step"] = torch.tensor(float(s["step"]))  # SparseAdam counts in an int, Adam in a tensor
                o.state[p] = s
    task.loss_fn, task.opts = full, opts
    task.params = unique_params(task.model, full)
    if hasattr(task, "fused"):
        task.fused = False
