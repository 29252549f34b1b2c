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
- **Sampling**: every rank seeds its candidate sampler identically and draws the sample of the whole global batch
  (the other ranks' targets are in the same stream), keeping its own rows (``grouped``): one shared sample per
  global step, per-example negatives that differ across ranks, a learned sampler that sees every target.
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

from ..errors import ConfigError
from .device import resolve_device

T = TypeVar("T")

# dense gradients up to this many elements travel in the per-step all-gather; larger ones are all-reduced
DENSE_GATHER_MAX = 1 << 22


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

    def all_reduce_grads(self, params: Sequence[torch.nn.Parameter], maxima: Sequence[float] = ()) -> tuple[float, ...]:
        """Sum every parameter's gradient over the ranks, in place (``p.grad`` is replaced for sparse ones), and
        return each of `maxima` maximised over the ranks, to the microsecond (the trainer's stop flags and training
        clock ride along for free: a flag set on any rank is set on all, and every rank decays the learning rate by
        the same clock).

        Two collectives per call, both all-gathers (on gloo an all-gather costs about half an all-reduce of the
        same size; CPU latency, not bandwidth, bounds a skip-gram step): first each rank's flags, gradient kinds
        and sparse row counts; then one flat buffer per rank holding the dense gradients and, for each sparse one,
        its row indices (bit-cast into the buffer's float type) and rows, padded to the largest count. Dense parts
        are summed, sparse rows concatenated and coalesced. Dense gradients of more than ``DENSE_GATHER_MAX``
        elements are all-reduced instead, so no rank holds world copies of a large model's gradient.

        A parameter whose gradient is None on this rank but not on another gets zeros (dense) or no rows
        (sparse), so every rank takes part in the same collectives."""
        if not self.enabled:
            return tuple(float(v) for v in maxima)
        params = list(params)
        device = params[0].device if params else torch.device("cpu")
        nf, npar = len(maxima), len(params)
        kinds_l, counts_l = [0] * npar, [0] * npar  # this rank's: 0 no gradient, 1 dense, 2 sparse; sparse rows
        for i, p in enumerate(params):
            g = p.grad
            if g is not None and g.is_sparse:
                g = p.grad = g.coalesce()
                if g.sparse_dim() != 1:
                    raise ValueError(f"row-sparse gradients expected (sparse_dim 1), got {g.sparse_dim()}")
                kinds_l[i], counts_l[i] = 2, g.indices().shape[1]
            elif g is not None:
                kinds_l[i] = 1
        head = torch.tensor([round(float(v) * 1e6) for v in maxima] + kinds_l + counts_l, dtype=torch.int64,
                            device=device)  # built on the host: one copy to the device
        heads = torch.stack(self._gather(head)).cpu()  # (world, nf + 2P): sizes the second gather (one sync)
        agreed = tuple(v / 1e6 for v in heads[:, :nf].amax(0).tolist())
        kinds = heads[:, nf:nf + npar].amax(0).tolist()
        counts = heads[:, nf + npar:].tolist()  # [rank][param]
        if not any(kinds):
            return agreed
        used = [p for p, k in zip(params, kinds) if k]
        dtype = torch.float32 if all(p.dtype == torch.float32 for p in used) else torch.float64
        per_idx = 2 if dtype == torch.float32 else 1  # int64 index = two float32 or one float64, bit for bit
        dense = [p for p, k in zip(params, kinds) if k == 1]
        for p in dense:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        n_dense = sum(p.numel() for p in dense)
        gather_dense = n_dense <= DENSE_GATHER_MAX
        parts: list[torch.Tensor] = [p.grad.reshape(-1).to(dtype) for p in dense] if gather_dense else []
        layout = []  # (param index, max rows, row width)
        for i, (p, k) in enumerate(zip(params, kinds)):
            if k != 2:
                continue
            m = max(c[i] for c in counts)
            width = p[0].numel() if p.dim() else 1
            block = torch.zeros(m, per_idx + width, dtype=dtype, device=device)
            g = p.grad
            if g is not None and g.is_sparse and g.indices().shape[1]:
                n = g.indices().shape[1]
                block[:n, :per_idx] = g.indices()[0].contiguous().view(dtype).view(n, per_idx)
                block[:n, per_idx:] = g.values().reshape(n, width)
            parts.append(block.reshape(-1))
            layout.append((i, m, width))
        mine = torch.cat(parts) if parts else torch.zeros(0, dtype=dtype, device=device)
        bufs = self._gather(mine)
        off = 0
        if gather_dense and dense:
            total = torch.stack([b[:n_dense] for b in bufs]).sum(0)
            for p in dense:
                p.grad.copy_(total[off:off + p.numel()].view_as(p.grad))
                off += p.numel()
        elif dense:
            flat = torch.cat([p.grad.reshape(-1) for p in dense])
            dist.all_reduce(flat, group=self.group)
            o = 0
            for p in dense:
                p.grad.copy_(flat[o:o + p.numel()].view_as(p.grad))
                o += p.numel()
        for i, m, width in layout:
            p = params[i]
            rows, vals = [], []
            for r, b in enumerate(bufs):
                block = b[off:off + m * (per_idx + width)].view(m, per_idx + width)[: counts[r][i]]
                rows.append(block[:, :per_idx].contiguous().view(torch.int64).reshape(-1))
                vals.append(block[:, per_idx:].to(p.dtype))
            off += m * (per_idx + width)
            idx, val = torch.cat(rows), torch.cat(vals).reshape(-1, *p.shape[1:])
            p.grad = torch.sparse_coo_tensor(idx.unsqueeze(0), val, p.shape, check_invariants=False).coalesce()
        return agreed

    def _gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t, group=self.group)
        return out

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


def groups_of(batches: Iterable[T], world: int) -> Iterator[list[T]]:
    """Consecutive groups of `world` items of `batches`; a last incomplete group is dropped."""
    group: list[T] = []
    for b in batches:
        group.append(b)
        if len(group) == world:
            yield group
            group = []


def shard_batches(batches: Iterable[T], rank: int, world: int) -> Iterator[T]:
    """Every `world`-th item of `batches`, starting at `rank`; a last incomplete group of `world` items is dropped,
    so every rank yields the same number of items."""
    if world == 1:
        yield from batches
        return
    for group in groups_of(batches, world):
        yield group[rank]


def init_from_env(device_name: str) -> tuple[Dist, torch.device]:
    """Join the job torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and
    return this process's ``Dist`` and device. Without those variables (a plain run) returns a world of one and
    the configured device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), resolve_device(device_name)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
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


def shutdown(synchronize: bool = False, timeout_s: float = 120.0) -> None:
    """Leave the job. `synchronize` (a command that returned on every rank: done, or stopped by an agreed signal):
    meet the other ranks first, so no rank tears down its connections while a peer is still writing a checkpoint or
    has its last messages in flight (gloo then aborts that peer with "terminate called without an active
    exception"). The meeting gives up after `timeout_s` (gloo's monitored barrier) rather than hang. Never after an
    error: the other ranks may not get there."""
    if dist.is_available() and dist.is_initialized():
        if synchronize:
            try:
                if dist.get_backend() == "gloo":
                    dist.monitored_barrier(timeout=timedelta(seconds=timeout_s))
                else:
                    dist.barrier()
            except RuntimeError:  # a rank that never came: leave anyway
                pass
        dist.destroy_process_group()
