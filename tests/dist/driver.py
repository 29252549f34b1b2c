"""Run under torchrun by tests/test_distributed.py: a data-parallel job that the test cannot express on the CLI.

    python -m torch.distributed.run --nproc_per_node=2 tests/dist/driver.py MODE OUT_DIR [override ...]

MODE "grads": all_reduce_grads on hand-made dense/sparse/missing gradients; rank 0 saves what it got and what
every rank contributed (OUT_DIR/grads.pt). MODE "interrupt": train with stop_at_step=STOP (env), then resume to the
end, as Ctrl-C + --resume would.
"""

import os
import sys

import torch

from sampledsoftmax.distributed import init_from_env


def grads(out_dir: str) -> None:
    ddp, _ = init_from_env("cpu")
    r = ddp.rank
    g = torch.Generator().manual_seed(100 + r)
    dense = torch.nn.Parameter(torch.zeros(3, 4))
    dense.grad = torch.randn(3, 4, generator=g)
    sparse = torch.nn.Parameter(torch.zeros(10, 2))
    rows = torch.tensor([1, 7, 7] if r == 0 else [7, 2, 9, 9, 0])  # different counts, duplicates, shared rows
    vals = torch.randn(len(rows), 2, generator=g)
    sparse.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), vals, (10, 2))  # uncoalesced
    only_on_1 = torch.nn.Parameter(torch.zeros(5))  # no gradient on rank 0
    if r == 1:
        only_on_1.grad = torch.randn(5, generator=g)
    sent = [dense.grad.clone(), sparse.grad.to_dense(), None if only_on_1.grad is None else only_on_1.grad.clone()]
    ddp.all_reduce_grads([dense, sparse, only_on_1])
    got = [dense.grad, sparse.grad.to_dense(), only_on_1.grad]
    box = [None] * ddp.world
    torch.distributed.all_gather_object(box, {"sent": sent, "got": got, "sparse_out": sparse.grad.is_sparse})
    if ddp.is_main:
        torch.save(box, os.path.join(out_dir, "grads.pt"))


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
        grads(out)
    elif mode == "interrupt":
        interrupt(out, sys.argv[3:])
    else:
        raise SystemExit(f"unknown mode {mode}")
    from sampledsoftmax.distributed import shutdown

    shutdown()
