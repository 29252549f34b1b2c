"""Run under torchrun by tests/test_distributed.py: a data-parallel job that the test cannot express on the CLI.

    python -m torch.distributed.run --nproc_per_node=2 tests/dist/driver.py MODE OUT_DIR [override ...]

MODE "grads": all_reduce_grads on hand-made dense/sparse/missing gradients; rank 0 saves what it got and what
every rank contributed (OUT_DIR/grads.pt). MODE "interrupt": train with stop_at_step=STOP (env), then resume to the
end, as Ctrl-C + --resume would.
"""

import os
import sys

import torch

from sampledsoftmax.training.distributed import init_from_env


def grads(out_dir: str, variant: str) -> None:
    """variant "f32": float32, dense gradients in the all-gather; "f64": float64 indices-in-doubles, and the dense
    gradients all-reduced (DENSE_GATHER_MAX = 0)."""
    import sampledsoftmax.training.distributed as sd

    ddp, _ = init_from_env("cpu")
    r = ddp.rank
    dt = torch.float32 if variant == "f32" else torch.float64
    if variant == "f64":
        sd.DENSE_GATHER_MAX = 0
    g = torch.Generator().manual_seed(100 + r)
    dense = torch.nn.Parameter(torch.zeros(3, 4, dtype=dt))
    dense.grad = torch.randn(3, 4, generator=g, dtype=dt)
    sparse = torch.nn.Parameter(torch.zeros(10, 2, dtype=dt))
    rows = torch.tensor([1, 7, 7] if r == 0 else [7, 2, 9, 9, 0])  # different counts, duplicates, shared rows
    vals = torch.randn(len(rows), 2, generator=g, dtype=dt)
    sparse.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), vals, (10, 2))  # uncoalesced
    only_on_1 = torch.nn.Parameter(torch.zeros(5, dtype=dt))  # no gradient on rank 0
    if r == 1:
        only_on_1.grad = torch.randn(5, generator=g, dtype=dt)
    sent = [dense.grad.clone(), sparse.grad.to_dense(), None if only_on_1.grad is None else only_on_1.grad.clone()]
    maxima = ddp.all_reduce_grads([dense, sparse, only_on_1], (float(r == 1), 1.5 + r, 0.25))
    got = [dense.grad, sparse.grad.to_dense(), only_on_1.grad]
    assert maxima == (1.0, 2.5, 0.25), maxima  # each value's maximum over the ranks
    box = [None] * ddp.world
    torch.distributed.all_gather_object(box, {"sent": sent, "got": got, "sparse_out": sparse.grad.is_sparse})
    if ddp.is_main:
        torch.save(box, os.path.join(out_dir, f"grads-{variant}.pt"))


def interrupt(out_dir: str, overrides: list[str]) -> None:
    from sampledsoftmax.embeddings.config import load_config
    from sampledsoftmax.embeddings.train import train

    cfg = load_config(None, [f"runs_root={out_dir}", *overrides])
    first = train(cfg, quiet=True, stop_at_step=int(os.environ["STOP_AT"]))
    assert first["stopped"], first
    train(cfg, resume=True, quiet=True)


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    if mode == "grads":
        grads(out, "f32")
        grads(out, "f64")
    elif mode == "interrupt":
        interrupt(out, sys.argv[3:])
    else:
        raise SystemExit(f"unknown mode {mode}")
    from sampledsoftmax.training.distributed import shutdown

    shutdown(synchronize=True)
