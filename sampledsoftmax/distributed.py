"""Data-parallel training on PyTorch's own engine: ``torch.distributed`` under ``torchrun``.

Launch either trainer with torchrun and it runs data-parallel; without torchrun nothing changes::

    torchrun --nproc_per_node=2 -m sampledsoftmax train configs/quickstart.yaml
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \\
        -m sampledsoftmax train CONFIG            # the same on every machine, with its own --node_rank

What happens (``Dist`` below):

- The backend is chosen from the device: NCCL when the trainer runs on CUDA (each process on ``cuda:LOCAL_RANK``),
  gloo on the CPU.
- **Data**: every rank reads the same deterministic batch stream and keeps every ``world``-th batch
  (:func:`shard_batches`), so the ranks never overlap and one step of ``world`` ranks at batch size ``B`` sees
  exactly the pairs that one process at batch size ``world * B`` sees in one step. An epoch's last incomplete group
  of batches is dropped so every rank takes the same number of steps.
- **Gradients** (:meth:`Dist.all_reduce_grads`): summed over ranks after ``backward``. Dense gradients go in one
  flat all-reduce. Sparse row gradients (the embedding tables and the sampled output rows, COO) are exchanged by
  row: every rank all-gathers the others' (row index, row gradient) pairs, padded to the largest count, and
  coalesces. That works on gloo and on NCCL (which has no sparse all-reduce), and moves only the rows touched.
  ``DistributedDataParallel`` is not used because its reducer only accepts sparse gradients from
  ``nn.Embedding(sparse=True)`` and NCCL cannot reduce them; the reduction is the same sum DDP would compute.
- **Sampling**: every rank seeds its candidate sampler identically, so a shared-negative loss draws one sample per
  global step, as a single process does with the whole batch.
- **Side effects**: only rank 0 evaluates, writes TensorBoard and checkpoints. Metrics such as the training
  objective and throughput are reduced over ranks. Stop decisions (Ctrl-C on any rank, the wall-clock budget) are
  agreed by an all-reduce each step, so no rank is left waiting in a collective.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Iterable, Iterator, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist

from .errors import ConfigError

T = TypeVar("T")


class Dist:
    """This process's place in the data-parallel job (``world == 1`` means: not distributed, every call a no-op)."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0, group=None):
        self.rank, self.world, self.local_rank, self.group = rank, world, local_rank, group

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---------------------------------------------------------------------------------------------- gradients

    def all_reduce_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum every parameter's gradient over the ranks, in place (``p.grad`` is replaced for sparse ones).

        A parameter whose gradient is None on this rank but not on another gets zeros (dense) or no rows (sparse),
        so every rank takes part in the same collectives in the same order."""
        if not self.enabled or not params:
            return
        kinds = torch.tensor([0 if p.grad is None else (2 if p.grad.is_sparse else 1) for p in params],
                             dtype=torch.int32, device=params[0].device)
        dist.all_reduce(kinds, op=dist.ReduceOp.MAX, group=self.group)
        dense: list[torch.Tensor] = []
        for p, kind in zip(params, kinds.tolist()):
            if kind == 1:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dense.append(p.grad)
            elif kind == 2:
                p.grad = self._all_reduce_sparse(p)
        if dense:
            flat = torch.cat([g.reshape(-1) for g in dense])
            dist.all_reduce(flat, group=self.group)
            offset = 0
            for g in dense:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

    def _all_reduce_sparse(self, p: torch.nn.Parameter) -> torch.Tensor:
        g = p.grad
        if g is None:
            g = torch.sparse_coo_tensor(torch.zeros((1, 0), dtype=torch.long, device=p.device),
                                        torch.zeros((0, *p.shape[1:]), dtype=p.dtype, device=p.device), p.shape)
        g = g.coalesce()
        if g.sparse_dim() != 1:
            raise ValueError(f"row-sparse gradients expected (sparse_dim 1), got sparse_dim {g.sparse_dim()}")
        idx, val = g.indices()[0], g.values()
        n = torch.tensor([idx.numel()], device=idx.device)
        counts = [torch.zeros_like(n) for _ in range(self.world)]
        dist.all_gather(counts, n, group=self.group)
        counts_l = [int(c) for c in counts]
        m = max(counts_l)
        if m == 0:
            return g
        pad_idx = torch.zeros(m, dtype=idx.dtype, device=idx.device)
        pad_val = torch.zeros((m, *val.shape[1:]), dtype=val.dtype, device=val.device)
        pad_idx[: idx.numel()] = idx
        pad_val[: idx.numel()] = val
        all_idx = [torch.empty_like(pad_idx) for _ in range(self.world)]
        all_val = [torch.empty_like(pad_val) for _ in range(self.world)]
        dist.all_gather(all_idx, pad_idx, group=self.group)
        dist.all_gather(all_val, pad_val, group=self.group)
        rows = torch.cat([a[:c] for a, c in zip(all_idx, counts_l)])
        vals = torch.cat([a[:c] for a, c in zip(all_val, counts_l)])
        return torch.sparse_coo_tensor(rows.unsqueeze(0), vals, g.shape).coalesce()

    # ---------------------------------------------------------------------------------------------- small values

    def any(self, *flags: bool, device: Optional[torch.device] = None) -> tuple[bool, ...]:
        """Each flag OR-ed over the ranks (one small all-reduce)."""
        if not self.enabled:
            return tuple(bool(f) for f in flags)
        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return tuple(bool(v) for v in t.tolist())

    def sum(self, values: Sequence[float], device: Optional[torch.device] = None) -> list[float]:
        """Each value summed over the ranks (float64)."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        dist.all_reduce(t, group=self.group)
        return [float(v) for v in t.tolist()]

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(group=self.group)


def shard_batches(batches: Iterable[T], rank: int, world: int) -> Iterator[T]:
    """Every `world`-th item of `batches`, starting at `rank`; a last incomplete group of `world` items is dropped,
    so every rank yields the same number of items."""
    if world == 1:
        yield from batches
        return
    group: list[T] = []
    for b in batches:
        group.append(b)
        if len(group) == world:
            yield group[rank]
            group = []


def init_from_env(device_name: str) -> tuple[Dist, torch.device]:
    """Join the job torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and
    return this process's ``Dist`` and device. Without those variables (a plain run) returns a world of one and
    the configured device."""
    from .embeddings.train import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), resolve_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s); lower --nproc_per_node or set train.device=cpu")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get("SAMPLEDSOFTMAX_DIST_TIMEOUT", "1800")))
        dist.init_process_group(backend, timeout=timeout)
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank), device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
