"""Will a run's model fit in memory? Estimated before the model is built, so that a model too large for the machine is
one ``error:`` line saying what fits, not an allocator traceback (or the out-of-memory killer) after minutes of data
building.

:func:`check_fits` (call it once V is known, before the model is built) adds up every [V, d]-sized tensor of the
run, in float32: the input embedding, the loss's output table (unless tied to the embedding) and bias, the gradient
of each where it is dense, and the optimizer state (SGD none, Adagrad one accumulator, Adam/SparseAdam two moments,
all dense): ``4·V·d·(1 + dense gradient + optimizer slots)`` per table. Activations, the exact softmax's chunks
(``loss.memory_budget_mb``) and the corpus come on top, so the estimate is a lower bound: a run it refuses cannot
fit; a run it passes may still be tight. It compares with the memory available on the training device
(:func:`available_bytes`): on CUDA the device's free memory (``torch.cuda.mem_get_info``), on the CPU the host's
(``data/hostmem.py``: MemAvailable, a container's cgroup limit, shared by a torchrun job's local processes).

The planted corpus checks its own generator arrays against the host memory when it is constructed, before it
allocates anything (``data/synthetic.py:planted_corpus_bytes``): they scale with ``data.synthetic.vocab_size`` and
``num_tokens``, not with the model.
"""

from __future__ import annotations

from typing import Any

from ..data.hostmem import describe_bytes as _gb
from ..data.hostmem import host_available_bytes
from ..errors import ConfigError

__all__ = ["available_bytes", "table_bytes", "check_fits"]

_F32 = 4
_OPTIMIZER_SLOTS = {"sgd": 0, "adagrad": 1, "adam": 2, "sparse_adam": 2}  # dense [V, d] state tensors per table
_SAMPLED = ("sampled", "nce", "negative", "inbatch")  # losses whose output table can take sparse gradients


def available_bytes(device: Any = "cpu") -> tuple[int, str]:
    """(bytes available to this process on `device`, a description for messages). See the module docstring."""
    import torch  # only when checking: the CLI's parser imports no torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"{device} has {_gb(free)} free"
    return host_available_bytes()


def table_bytes(cfg: Any, num_classes: int) -> dict[str, int]:
    """Bytes of the [V, d]-sized tensors of a run (module docstring), by part: the tables' weights, their dense
    gradients and the optimizer state. `cfg` is a skip-gram or LM config (the LM has `model.arch`)."""
    v, d = int(num_classes), int(cfg.model.dim)
    lc, opt = cfg.loss, cfg.optim.name
    lm = hasattr(cfg.model, "arch")
    sparse_out = lc.name in _SAMPLED and lc.sparse
    tables: list[tuple[int, bool]] = []  # (elements, dense gradient)
    # the input embedding: the LM's is dense; the skip-gram's is sparse unless optim.name=adam (embeddings/train.py)
    tables.append((v * d, lm or opt == "adam"))
    if lc.name == "adaptive":  # torch's head + tail clusters at the default cutoffs V/20, V/4: ~0.15 V·d, dense
        tables.append((int(0.15 * v * d), True))
    elif not (lm and cfg.model.tie_weights):
        tables.append((v * d, not sparse_out))
    if lc.name not in ("negative", "adaptive"):
        tables.append((v, not sparse_out))  # the output bias
    weights = sum(n for n, _ in tables) * _F32
    grads = sum(n for n, dense in tables if dense) * _F32
    state = weights * _OPTIMIZER_SLOTS.get(opt, 2)
    return {"weights": weights, "gradients": grads, "optimizer": state}


def _table_fix(cfg: Any) -> str:
    data = cfg.data
    vocab_key = "data.synthetic.vocab_size" if data.corpus == "synthetic" else "data.max_final_vocab"
    fix = f"lower model.dim or {vocab_key}"
    if cfg.optim.name != "sgd":
        fix += f" or use optim.name=sgd (no optimizer state; now {cfg.optim.name})"
    return fix


def check_fits(cfg: Any, num_classes: int, device: Any) -> None:
    """Raise ConfigError when the run's tables, dense gradients and optimizer state (:func:`table_bytes`) exceed the
    memory available on `device`. Call it once V is known, before the model is built."""
    parts = table_bytes(cfg, num_classes)
    need = sum(parts.values())
    have, where = available_bytes(device)
    if need <= have:
        return
    detail = ", ".join(f"{k} {_gb(n)}" for k, n in parts.items() if n)
    per_dim = need / int(cfg.model.dim)  # every part is linear in d (the bias, V floats, is within the rounding)
    fits = int(have // per_dim)
    what_fits = f"at most model.dim={fits} fits at this V" if fits >= 1 else "not even model.dim=1 fits at this V"
    raise ConfigError(f"model.dim={cfg.model.dim} x V={num_classes} needs ~{_gb(need)} for the tables and optimizer "
                      f"state ({detail}; optim.name={cfg.optim.name}), {where} ({what_fits}); {_table_fix(cfg)}")
