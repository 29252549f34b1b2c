"""Vocabulary-parallel output layers: each rank of a process group holds a contiguous shard of the [V, d] table.

Tensor parallelism over the classes, with Megatron's semantics: every rank of the group sees the same `hidden`
(..., d) and `target` (...); rank r holds rows [start, end) = `shard_range(V, r, world)` of the output table and
bias. Then

* the returned loss is the same number on every rank and equals the single-process loss on the full table;
* `hidden` receives the full gradient on every rank (not a 1/world share, and not world times it);
* each rank's `weight`/`bias` shard receives exactly the rows of the single-process gradient that it owns.

Exact softmax (`VocabParallelFullSoftmaxLoss`), as Megatron's vocab-parallel cross entropy but streamed over blocks
of the shard, so no (N, V / world) tensor exists:

    lse_i = M_i + log Σ_r exp(lse_ri − M_i),   M_i = max_r lse_ri       lse_ri: log-sum-exp over shard r's classes
    loss_i = lse_i − (1 − ε) z_{i,t_i} − (ε / V) Σ_j z_ij               z_{i,t_i} from the shard that owns t_i

Per block of rows, an all-reduce MAX and an all-reduce SUM of its log-sum-exps (the blocks are cut alike on every
rank), plus one all-reduce SUM of the (2, N) target logits and label-smoothing sums. With G = scale · (softmax − y)
restricted to the shard's columns, ∂W_r = Gᵀ H and ∂b_r = Σ_i G on the local rows, and ∂H = Σ_r G_r W_r (one
all-reduce SUM of (N, d)). For reduction "mean"/"sum" the gradients are formed in forward while each block of logits
is still in memory, as the single-process loss does: three N×(V/world)×d products per rank in all (four when a block
of rows cannot span the shard, or for reduction="none", whose backward recomputes the logits).

Sampled losses (sampled softmax, NCE, negative sampling) sample globally and fetch only the rows they use:

* The sample: every rank draws it itself from a generator seeded identically on every rank, so there is no
  per-step communication for sampling and stateful samplers (learned unigram) evolve identically everywhere. The
  loss owns that generator; its seed is agreed over the group when the loss is built (group rank 0's `seed=`, by
  default derived from rank 0's `torch.initial_seed()`). A `generator=` of your own must be seeded the same on every
  rank. With `validate=True` (the default) one small all-reduce per step checks that the ranks agree on the target,
  the sample ids and (to rounding) the hidden states, and raises an InputError on every rank if they do not.
* The rows: the U distinct true and sampled ids are looked up; each rank writes the rows it owns into a zero
  (U, d + 1) buffer (bias as the last column) and one all-reduce SUM gives every rank the U rows. Its backward is
  the identity: every rank computes the same loss from the same rows, so each rank's incoming gradient is already
  the full gradient, and the rows a rank owns take their share of it. `hidden` is used directly, so its gradient is
  complete on every rank and not double counted.
* Then the single-process code (`functional.sampled_logits`, the losses' `_from_logits`) runs on that small table
  with the ids remapped to it, so accidental-hit removal, the log-Q correction and the NCE / negative-sampling
  formulas stay in one place. `sparse=True` gives sparse COO gradients on the shard, as the single-process losses.

Usage, from your own model (no trainer); run with ``torchrun --nproc_per_node=2 train.py``:

    # train.py
    import torch, torch.distributed as dist
    from sampledsoftmax.parallel import VocabParallelSampledSoftmaxLoss

    dist.init_process_group("gloo")                  # "nccl" on GPUs (then .cuda() the model, the loss, the batches)
    torch.manual_seed(0)                             # the replicated model starts identical on every rank
    V, d = 1_000_000, 128
    model = torch.nn.Sequential(torch.nn.Linear(64, d), torch.nn.Tanh())  # your model: features -> hidden (..., d)
    loss_fn = VocabParallelSampledSoftmaxLoss(V, d, num_sampled=4096, sparse=True)  # holds V / world rows
    opt = torch.optim.Adam(model.parameters())
    opt_out = torch.optim.SGD(loss_fn.parameters(), lr=0.1)  # sparse row gradients: SGD, Adagrad or SparseAdam
    g = torch.Generator().manual_seed(1)             # the same batches on every rank of the group
    for step in range(100):
        x, y = torch.randn(256, 64, generator=g), torch.randint(V, (256,), generator=g)
        loss = loss_fn(model(x), y)                  # the same value on every rank
        opt.zero_grad(); opt_out.zero_grad()
        loss.backward()                              # model grads complete on every rank; each shard its own rows
        opt.step(); opt_out.step()
    nll = loss_fn.exact_nll(model(x), y)             # exact full-softmax NLL per example, all ranks together

`process_group=None` is the default group; pass a subgroup (`dist.new_group(ranks)`) to shard over some ranks only,
e.g. tensor parallelism inside data parallelism (then average `hidden`'s model gradients over the data-parallel
group as usual). With a group of size 1 every loss equals its single-process counterpart.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .errors import InputError, did_you_mean
from .functional import (
    _WORKSPACE,
    _acc_dtype,
    _tile_gradients,
    _tile_sweep,
    _backprop_block,
    _block_logits,
    _blocks,
    _lse_and_rank_counts,
    _matmul_dtype,
    _rows_budget,
    autocast_off,
    chunked_topk,
    gather_rows,
    once_differentiable,
)
from .losses import (
    FullSoftmaxLoss,
    NCELoss,
    NegativeSamplingLoss,
    SampledLossBase,
    SampledSoftmaxLoss,
    fp32_under_autocast,
)
from .samplers import CandidateSample

__all__ = [
    "shard_range",
    "VocabParallel",
    "VocabParallelFullSoftmaxLoss",
    "VocabParallelSampledSoftmaxLoss",
    "VocabParallelNCELoss",
    "VocabParallelNegativeSamplingLoss",
    "VOCAB_PARALLEL_LOSSES",
    "build_vocab_parallel_loss",
]

_UNSET = object()
_SEED_MOD = 2**62


def shard_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows [start, end) of a `num_classes`-row table that `rank` of `world_size` holds.

    Contiguous, in rank order, sizes differ by at most one (the first V mod world ranks hold one more row).

    Example:
        >>> [shard_range(11, r, 3) for r in range(3)]
        [(0, 4), (4, 8), (8, 11)]
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"rank must be in [0, {world_size}) for world_size={world_size}, got rank={rank}")
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _group_rank_world(group) -> tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        raise InputError(
            "torch.distributed is not initialised: call torch.distributed.init_process_group(...) on every rank "
            "before building a vocab-parallel loss"
        )
    rank = dist.get_rank(group)
    if rank < 0:
        raise InputError("this process is not a member of the process_group given to the vocab-parallel loss")
    return rank, dist.get_world_size(group)


def _comm_device(group) -> torch.device:
    """Where the small bookkeeping tensors of a collective live: the current GPU for NCCL, else the CPU."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------------------------
# Collectives with the gradients tensor parallelism needs
# ---------------------------------------------------------------------------------------------------------------


class _AllReduceSum(torch.autograd.Function):
    """Forward: the sum over the group. Backward: the identity.

    Right when every rank goes on to compute the same thing from the sum: each rank's incoming gradient is then
    already the full gradient, and summing it again would multiply it by the group size.
    """

    @staticmethod
    def forward(ctx, x, group):
        y = x.clone()
        dist.all_reduce(y, group=group)
        return y

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _CopyToGroup(torch.autograd.Function):
    """Forward: the identity. Backward: the sum over the group (each rank's part flowed through its shard only)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        g = grad.contiguous().clone()
        dist.all_reduce(g, group=ctx.group)
        return g, None


class _GatherColumns(torch.autograd.Function):
    """(M, V_r) on each rank -> (M, V) on every rank, shards in rank order. Backward keeps this rank's columns."""

    @staticmethod
    def forward(ctx, x, group, sizes, rank):
        ctx.start, ctx.size = sum(sizes[:rank]), sizes[rank]
        width = max(sizes)
        padded = x.new_zeros(x.shape[0], width)
        padded[:, : x.shape[1]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded, group=group)
        return torch.cat([p[:, :s] for p, s in zip(parts, sizes)], 1)  # (M, V)

    @staticmethod
    def backward(ctx, grad):
        return grad[:, ctx.start : ctx.start + ctx.size], None, None, None


def _combine_lse(lse_local: Tensor, group) -> Tensor:
    """log Σ_r exp(lse_r) over the group, stably: (N,) -> (N,)."""
    m = lse_local.clone()
    dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
    s = (lse_local - m).exp_()
    dist.all_reduce(s, group=group)
    return m + s.log_()


# ---------------------------------------------------------------------------------------------------------------
# Exact softmax over a sharded table
# ---------------------------------------------------------------------------------------------------------------


def _logits_block(buf: Tensor, h: Tensor, w: Tensor, b: Optional[Tensor], cdt) -> Tensor:
    """(r, d) x (c, d) -> (r, c) logits, written into the reused buffer (no fresh pages per block)."""
    view = buf[: h.shape[0] * w.shape[0]].view(h.shape[0], w.shape[0])
    z = _block_logits(h, w, b, cdt, out=view)
    if z.data_ptr() != view.data_ptr():
        view.copy_(z)
    return view


def _shard_ce_pass(h, w, b, t_local, eps, num_classes, rows_of, budget_bytes, group, row_scale=None,
                   need=(False, False, False), lse_known=None):
    """One sweep over this shard's classes, block of rows by block of rows.

    Without `lse_known`: each block's log-sum-exp over the shard, combined over the group into the global one (one
    all-reduce MAX and one SUM per block of rows: the blocks are cut from `rows_of`, the largest shard size, so every
    rank runs the same number of them). With `row_scale`: the gradients of Σ_i row_scale_i · loss_i through this
    shard, G = scale_i · (softmax_ij − (1 − ε)[j = t_i] − ε / V) on its columns j: dH = G W_r (this shard's part, to
    be summed over the group), dW_r = Gᵀ H, db_r = Σ_i G. When a block of rows spans the whole shard it runs the
    single-process loss's cache-sized tiles (`functional._tile_sweep`, `_tile_gradients`): its logits are still in
    the buffer when the global log-sum-exp arrives, so forward and gradients cost three N×V_r×d products; otherwise
    a second sweep over blocks of columns recomputes them.

    Returns (lse (N,) global, lse_local (N,) or None, (dH, dW, db) or None).
    """
    n, v = h.shape[0], w.shape[0]
    cdt = _matmul_dtype(h, w)
    acc = _acc_dtype(cdt)
    rows, cols = _blocks(n, rows_of, budget_bytes)  # rank-independent: the same blocks of rows on every rank
    rows, cols = max(rows, 1), min(cols, v)
    # reused by every block, and across calls on the CPU (functional._WORKSPACE: no fresh pages per call)
    buf = _WORKSPACE.take((min(rows, n) * cols,), acc, h.device)
    want_grad = row_scale is not None and any(need)
    dh = torch.zeros(n, h.shape[1], dtype=acc, device=h.device) if want_grad and need[0] else None
    dw = torch.zeros(v, w.shape[1], dtype=acc, device=w.device) if want_grad and need[1] else None
    db = torch.zeros(v, dtype=acc, device=w.device) if want_grad and need[2] and b is not None else None
    lse = torch.empty(n, dtype=acc, device=h.device) if lse_known is None else lse_known
    lse_local = torch.empty(n, dtype=acc, device=h.device) if lse_known is None else None
    for r0 in range(0, n, rows):
        hb, tb = h[r0 : r0 + rows], t_local[r0 : r0 + rows]  # (r, d), (r,)
        if cols == v:  # the block of rows spans the whole shard: the single-process tiles (three products)
            known = None if lse_known is None else lse_known[r0 : r0 + rows]
            tiles, held, lse_r, _ = _tile_sweep(hb, w, b, cdt, buf, known)
            if lse_known is None:
                lse_local[r0 : r0 + rows] = lse_r
                lse[r0 : r0 + rows] = _combine_lse(lse_r, group)
            if want_grad:
                sb = row_scale[r0 : r0 + rows].to(acc)[:, None]  # (r, 1)
                dh_r = _tile_gradients(tiles, held, lse[r0 : r0 + rows], hb, w, tb, eps, num_classes, sb, need, cdt,
                                       dw, db)
                if dh is not None:
                    dh[r0 : r0 + rows] = dh_r
            continue
        # the shard is too wide for one block of rows: an online log-sum-exp over blocks of columns, and a second
        # sweep that recomputes them for the gradients
        if lse_known is None:
            m = torch.full((hb.shape[0],), -math.inf, dtype=acc, device=h.device)
            s = torch.zeros(hb.shape[0], dtype=acc, device=h.device)
            for c0 in range(0, v, cols):
                z = _logits_block(buf, hb, w[c0 : c0 + cols], None if b is None else b[c0 : c0 + cols], cdt)
                m_new = torch.maximum(m, z.amax(1))
                s = s * (m - m_new).exp() + z.sub_(m_new[:, None]).exp_().sum(1)
                m = m_new
            lse_local[r0 : r0 + rows] = m + s.log()
            lse[r0 : r0 + rows] = _combine_lse(lse_local[r0 : r0 + rows], group)
        if not want_grad:
            continue
        lb, sb = lse[r0 : r0 + rows, None], row_scale[r0 : r0 + rows].to(acc)[:, None]  # (r, 1), (r, 1)
        ar = torch.arange(hb.shape[0], device=h.device)
        for c0 in range(0, v, cols):
            wc = w[c0 : c0 + cols]
            z = _logits_block(buf, hb, wc, None if b is None else b[c0 : c0 + cols], cdt).sub_(lb).exp_()
            if eps:
                z.sub_(eps / num_classes)
            inside = (tb >= c0) & (tb < c0 + z.shape[1])
            z[ar[inside], tb[inside] - c0] -= 1.0 - eps
            z.mul_(sb)  # (r, c) dloss/dz
            _backprop_block(z, hb, wc, c0, None if dh is None else dh[r0 : r0 + rows], dw, db, cdt)
    _WORKSPACE.give(buf)
    return lse, lse_local, ((dh, dw, db) if want_grad else None)


class _VocabParallelCE(torch.autograd.Function):
    """Softmax cross entropy over a table sharded by rows across `group`; the same result on every rank.

    row_weight given: returns Σ_i w_i · loss_i and computes the gradients in forward (three products per shard);
    backward scales them in place and hands them over without keeping a copy (so a (V_r, d) gradient exists once),
    which is why backward through it twice is refused. row_weight None: returns the per-row losses (N,); backward
    recomputes the logits with the upstream per-row gradient. Backward is once_differentiable (a second derivative
    raises a clear error).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, t_local, row_weight, label_smoothing, num_classes, rows_of, budget_bytes,
                group, need):
        eps = label_smoothing
        acc = _acc_dtype(_matmul_dtype(hidden, weight))
        # target logit from the shard that owns it (0 elsewhere) and, for label smoothing, Σ_j z_ij over the shard
        # (= h_i · Σ_j w_j + Σ_j b_j: no pass over the logits); both summed over the group in one all-reduce
        stats = torch.zeros(2, hidden.shape[0], dtype=acc, device=hidden.device)  # (2, N)
        idx = t_local.clamp_min(0)
        z_t = (hidden.to(acc) * weight.index_select(0, idx).to(acc)).sum(1)  # (N,)
        if bias is not None:
            z_t = z_t + bias.index_select(0, idx).to(acc)
        stats[0] = torch.where(t_local >= 0, z_t, 0.0)
        if eps:
            stats[1] = hidden.to(acc) @ weight.sum(0, dtype=acc)
            if bias is not None:
                stats[1] += bias.sum(dtype=acc)
        dist.all_reduce(stats, group=group)
        lse, _, grads = _shard_ce_pass(hidden, weight, bias, t_local, eps, num_classes, rows_of, budget_bytes, group,
                                       row_scale=row_weight, need=need)
        loss = lse - (1 - eps) * stats[0] - (eps / num_classes) * stats[1]  # (N,)
        ctx.group, ctx.need = group, need
        if row_weight is not None:
            if grads is not None and grads[0] is not None:  # every rank needs hidden's gradient, or none does
                dist.all_reduce(grads[0], group=group)
            ctx.reduced, ctx.grads, ctx.used = True, grads, False
            ctx.save_for_backward(hidden, weight, bias if bias is not None else torch.empty(0))  # once_differentiable
            return (loss * row_weight.to(loss.dtype)).sum()
        ctx.reduced = False
        ctx.args = (eps, num_classes, rows_of, budget_bytes, bias is not None)
        ctx.save_for_backward(hidden, weight, bias if bias is not None else torch.empty(0), t_local, lse)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        with autocast_off(grad_out.device.type):
            return _VocabParallelCE._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        if ctx.reduced:
            if ctx.used:
                raise RuntimeError(
                    "the vocab-parallel full softmax (reduction 'mean'/'sum') hands its precomputed gradients to the "
                    "first backward and keeps no copy; backward through it twice (retain_graph=True) is not "
                    "supported: use reduction='none' and reduce yourself"
                )
            # released, not kept: holding them while autograd stores (or copies) the (V_r, d) gradient doubled
            # the peak memory of a large shard
            grads, ctx.grads, ctx.used = ctx.grads, None, True
            if grads is None:
                return (None,) * 11
            dh, dw, db = (None if g is None else g.mul_(grad_out) for g in grads)
        else:
            hidden, weight, bias, t_local, lse = ctx.saved_tensors
            eps, num_classes, rows_of, budget_bytes, has_bias = ctx.args
            _, _, (dh, dw, db) = _shard_ce_pass(
                hidden, weight, bias if has_bias else None, t_local, eps, num_classes, rows_of, budget_bytes,
                ctx.group, row_scale=grad_out, need=ctx.need, lse_known=lse,
            )
            if dh is not None:
                dist.all_reduce(dh, group=ctx.group)
        return dh, dw, db, None, None, None, None, None, None, None, None


# ---------------------------------------------------------------------------------------------------------------
# The modules
# ---------------------------------------------------------------------------------------------------------------


class VocabParallel:
    """Mixin that shards a loss's output layer by rows across a process group (see the module docstring).

    Combined with a loss class of `losses.py` (`VocabParallelX(VocabParallel, X)`), it takes that class's arguments
    with `num_classes` the global V, plus:

    Args:
        process_group: the group to shard over; None is the default group. Must be initialised.
        weight: this rank's shard (rows, d) to borrow (e.g. a vocab-parallel tied embedding); None initialises
            one U(−1/√d, 1/√d) from a private generator seeded with (seed, rank), leaving torch's global RNG
            untouched so that replicated modules built afterwards stay identical across ranks.
        bias: True (zeros), False/None, or this rank's (rows,) shard.
        seed: seeds the sampling generator (and the default init). Group rank 0's value is used on every rank;
            None derives it from rank 0's `torch.initial_seed()`.

    Attributes: `rank`, `world_size`, `shard_start`, `shard_end` (this rank holds classes [shard_start, shard_end)),
    `seed`, `process_group`.

    Build one from a full table with `from_full(weight, bias, **kwargs)`: every rank passes the same (V, d) table
    and keeps a copy of its rows, so the sharded loss starts exactly where a single-process one would.
    """

    _default_bias = True
    supports_softcap = False  # the sharded exact pass, evaluation and top-k have no soft-capping

    def __init__(self, num_classes: int, dim: int, *, process_group=None, weight: Optional[Tensor] = None,
                 bias=_UNSET, seed: Optional[int] = None, **kwargs):
        rank, world = _group_rank_world(process_group)
        if bias is _UNSET:
            bias = self._default_bias
        start = end = 0
        err = None
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < world:
            err = f"num_classes must be an int >= the group size {world}, got {num_classes!r}"
        elif isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            err = f"dim must be a positive int, got {dim!r}"
        elif seed is not None and (not isinstance(seed, int) or not 0 <= seed < 2**63):
            err = f"seed must be an int in [0, 2**63), got {seed!r}"
        else:
            start, end = shard_range(num_classes, rank, world)
            where = f"(rows [{start}, {end}) of num_classes={num_classes} on rank {rank} of {world})"
            if weight is not None and tuple(weight.shape) != (end - start, dim):
                err = f"weight shard has shape {tuple(weight.shape)}, expected ({end - start}, {dim}) {where}"
            elif torch.is_tensor(bias) and tuple(bias.shape) != (end - start,):
                err = f"bias shard has shape {tuple(bias.shape)}, expected ({end - start},) {where}"
        if rank == 0 and err is None:
            seed = (torch.initial_seed() + 0x5EED) % _SEED_MOD if seed is None else seed
        seed = self._agree(process_group, rank, err, num_classes, dim, seed if rank == 0 else None)
        rows = end - start
        if weight is None:
            init = torch.Generator().manual_seed((seed * 1_000_003 + rank + 1) % _SEED_MOD)
            weight = nn.Parameter(torch.empty(rows, dim).uniform_(-1 / math.sqrt(dim), 1 / math.sqrt(dim), generator=init))
        if bias is True:
            bias = nn.Parameter(torch.zeros(rows))
        elif bias is False:
            bias = None
        # The base class checks and registers a (V, d) table: hand it shape-only placeholders, then the shards.
        meta_bias = False if bias is None else torch.empty(num_classes, device="meta")
        super().__init__(num_classes, dim, weight=torch.empty(num_classes, dim, device="meta"), bias=meta_bias, **kwargs)
        for name, value in (("weight", weight), ("bias", bias)):
            self._buffers.pop(name, None)
            self._parameters.pop(name, None)
            self._set_tensor(name, value)
        self.process_group, self.rank, self.world_size = process_group, rank, world
        self.shard_start, self.shard_end, self.seed = start, end, seed

    @staticmethod
    def _agree(group, rank, err, num_classes, dim, seed) -> int:
        """One all-reduce: any rank's argument error, agreement on V and d, and group rank 0's seed."""
        v = num_classes if isinstance(num_classes, int) else 0
        d = dim if isinstance(dim, int) else 0
        x = torch.tensor([int(err is not None), v, -v, d, -d, -1 if seed is None else seed], dtype=torch.long,
                         device=_comm_device(group))
        dist.all_reduce(x, op=dist.ReduceOp.MAX, group=group)
        failed, v_max, v_min, d_max, d_min, agreed = x.tolist()
        if err is not None:
            raise InputError(err)
        if failed:
            raise InputError(f"another rank of the process group rejected its vocab-parallel loss arguments (rank {rank} "
                             f"was fine); see that rank's error")
        if v_max != -v_min or d_max != -d_min:
            raise InputError(f"the ranks disagree on num_classes (from {-v_min} to {v_max}) or dim (from {-d_min} to "
                             f"{d_max}); build the loss with the same arguments on every rank")
        return agreed

    @classmethod
    def from_full(cls, weight: Tensor, bias: Optional[Tensor] = None, *, process_group=None, **kwargs):
        """Shard a full table: every rank passes the same (V, d) `weight` and (V,) `bias` (or None for no bias) and
        keeps a copy of its rows as new Parameters. Other keyword arguments go to the constructor.

        Example:
            full = FullSoftmaxLoss(V, d)
            par = VocabParallelFullSoftmaxLoss.from_full(full.weight, full.bias)   # same init, sharded
        """
        if not torch.is_tensor(weight) or weight.dim() != 2:
            raise InputError(f"weight must be a (num_classes, dim) tensor, got {getattr(weight, 'shape', type(weight))}")
        rank, world = _group_rank_world(process_group)
        v, d = weight.shape
        start, end = shard_range(v, rank, world)
        w = nn.Parameter(weight.detach()[start:end].clone())
        b = False if bias is None else nn.Parameter(bias.detach()[start:end].clone())
        return cls(v, d, weight=w, bias=b, process_group=process_group, **kwargs)

    def extra_repr(self) -> str:
        return super().extra_repr() + (
            f", rank={self.rank}, world_size={self.world_size}, shard=[{self.shard_start}, {self.shard_end})"
        )

    # -- helpers ----------------------------------------------------------------------------------------------------

    def _local_target(self, t: Tensor) -> Tensor:
        """(N,) global ids (ignored: < 0) -> ids within this shard, −1 where another shard owns the class."""
        owned = (t >= self.shard_start) & (t < self.shard_end)
        return torch.where(owned, t - self.shard_start, -1)

    def _parallel_ce(self, h: Tensor, t: Tensor, label_smoothing: float, row_weight: Optional[Tensor] = None) -> Tensor:
        """Exact softmax cross entropy over all V classes: per row (N,), or Σ_i row_weight_i · loss_i.
        h (N, d), t (N,) global ids with ignored rows < 0."""
        need = (
            torch.is_grad_enabled() and h.requires_grad,
            torch.is_grad_enabled() and self.weight.requires_grad,
            torch.is_grad_enabled() and self.bias is not None and self.bias.requires_grad,
        )
        return _VocabParallelCE.apply(
            h, self.weight, self.bias, self._local_target(t), row_weight, float(label_smoothing), self.num_classes,
            self._largest_shard(), _rows_budget(self.memory_budget_mb), self.process_group, need,
        )

    def _largest_shard(self) -> int:
        return -(-self.num_classes // self.world_size)

    def _check_replicated(self, h: Tensor, t: Tensor, ids: Optional[Tensor] = None) -> None:
        """One small all-reduce: every rank must hold the same target and sample ids, and hidden states that agree
        to rounding (a per-rank dropout mask or batch is the usual culprit). Raises on every rank alike."""
        flat_t = t.reshape(-1)
        pos = torch.arange(1, flat_t.numel() + 1, device=t.device)
        t_sum = ((flat_t + 2) * pos).sum().remainder(2**50)  # int64 wraps deterministically; exact in float64
        if ids is None:
            ids_n, ids_sum = 0, torch.zeros((), dtype=torch.long, device=t.device)
        else:
            flat_i = ids.reshape(-1)
            ids_n = flat_i.numel()
            ids_sum = ((flat_i + 2) * torch.arange(1, ids_n + 1, device=t.device)).sum().remainder(2**50)
        hd = h.detach()
        h_sum, h_abs = hd.sum(dtype=torch.float64), hd.abs().sum(dtype=torch.float64)
        dev = _comm_device(self.process_group) if h.device.type == "cpu" else h.device
        vals = torch.stack([
            torch.tensor(float(flat_t.numel()), dtype=torch.float64, device=h.device), t_sum.to(torch.float64),
            torch.tensor(float(ids_n), dtype=torch.float64, device=h.device), ids_sum.to(torch.float64), h_sum,
        ]).to(dev)  # (5,)
        x = torch.cat([vals, -vals, h_abs.to(dev).view(1)])  # max and −min of each, in one all-reduce MAX
        dist.all_reduce(x, op=dist.ReduceOp.MAX, group=self.process_group)
        hi, lo, h_abs_max = x[:5].tolist(), (-x[5:10]).tolist(), float(x[10])
        if hi[0] != lo[0] or hi[1] != lo[1]:
            what = "target"
        elif hi[2] != lo[2] or hi[3] != lo[3]:
            what = "sample ids (seed every rank's generator= alike, or pass the same sample=)"
        elif math.isfinite(hi[4]) and math.isfinite(lo[4]) and hi[4] - lo[4] > 1e-9 * h_abs_max + 1e-30:
            what = "hidden states (is a dropout mask or the batch different per rank?)"
        else:
            return
        raise InputError(
            f"the ranks of the vocab-parallel process group disagree on the {what}: every rank must pass the same "
            f"hidden and target (validate=False skips this check)"
        )

    # -- the interface, over the whole sharded table ---------------------------------------------------------------

    def local_logits(self, hidden: Tensor) -> Tensor:
        """This shard's logits (differentiable). Shape: (..., d) -> (..., shard_end − shard_start)."""
        z = hidden @ self.weight.t()
        return z + self.bias if self.bias is not None else z

    @fp32_under_autocast
    def logits(self, hidden: Tensor) -> Tensor:
        """Full logits (..., V) on every rank, gathered from the shards (differentiable). Small batches only."""
        if hidden.shape[-1] != self.dim:
            raise InputError(f"hidden has last dimension {hidden.shape[-1]} but the loss was built with dim={self.dim}")
        z = self.local_logits(_CopyToGroup.apply(hidden, self.process_group))
        sizes = [b - a for a, b in (shard_range(self.num_classes, r, self.world_size) for r in range(self.world_size))]
        full = _GatherColumns.apply(z.reshape(-1, z.shape[-1]), self.process_group, sizes, self.rank)
        return full.reshape(*hidden.shape[:-1], self.num_classes)

    @fp32_under_autocast
    @torch.no_grad()
    def exact_nll(self, hidden: Tensor, target: Tensor) -> Tensor:
        """Exact full-softmax NLL per example over all V classes (all ranks together), chunked over each shard.

        Shape:
            hidden (..., d), target (...) or (..., T) -> fp32 (fp64 for fp64 inputs) of target's shape, the same on
            every rank
        """
        h, t, _ = self._flatten(hidden, target, allow_multi=True)
        if self.validate:
            self._check_replicated(h, t)
        n, n_true = t.shape
        hh = h.unsqueeze(1).expand(n, n_true, self.dim).reshape(-1, self.dim) if n_true > 1 else h
        tt = t.reshape(-1)
        nll = self._parallel_ce(hh, tt, 0.0)
        return (nll * (tt >= 0)).reshape(target.shape)

    @fp32_under_autocast
    @torch.no_grad()
    def exact_nll_and_rank(self, hidden: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`exact_nll` and the target's rank over all V classes (all ranks together): greater = #{c : z_c > z_t} and
        ties = #{c ≠ t : z_c = z_t} (see `OutputLayerLoss.exact_nll_and_rank`), in one pass over each shard. The
        owner of each target computes its logit (one all-reduce of N values), each rank counts its own classes and
        its shard's log-sum-exp, and the counts and log-sum-exps are combined (one all-reduce of 2N counts, one MAX
        and one SUM of N values). Ignored entries give 0, 0, 0.

        Shape:
            hidden (..., d), target (...) -> nll fp32 (fp64 for fp64 inputs), greater and ties int64, all of
            target's shape, the same on every rank
        """
        h, t, _ = self._flatten(hidden, target, allow_multi=False)
        if self.validate:
            self._check_replicated(h, t)
        tt = t.reshape(-1)
        own = self._local_target(tt.clamp_min(0))  # (N,) the target's row in this shard, −1 elsewhere
        with autocast_off(h.device.type):
            acc = _acc_dtype(_matmul_dtype(h, self.weight))
            held = own >= 0
            zt = torch.zeros(h.shape[0], dtype=acc, device=h.device)  # (N,) the target logits, from their owners
            zt[held] = (h[held].to(acc) * self.weight[own[held]].to(acc)).sum(1)
            if self.bias is not None:
                zt[held] += self.bias[own[held]].to(acc)
            dist.all_reduce(zt, group=self.process_group)  # one owner per row: the others add exact zeros
            lse_local, greater, ties = _lse_and_rank_counts(h, self.weight, self.bias, zt, own, self.memory_budget_mb)
            counts = torch.stack([greater, ties])  # (2, N)
            dist.all_reduce(counts, group=self.process_group)
            nll = _combine_lse(lse_local, self.process_group) - zt
        valid = tt >= 0
        return tuple((x * valid).reshape(target.shape) for x in (nll, counts[0], counts[1]))

    @fp32_under_autocast
    @torch.no_grad()
    def predict_topk(self, hidden: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The k most probable classes under the full softmax (global ids) and their probabilities.

        Shape:
            hidden (..., d) -> ids (..., k) int64, probs (..., k) fp32 (fp64 for fp64 inputs), the same on every rank
        """
        if not 1 <= k <= self.num_classes:
            raise InputError(f"k must be in [1, {self.num_classes}], got {k}")
        if hidden.shape[-1] != self.dim:
            raise InputError(f"hidden has last dimension {hidden.shape[-1]} but the loss was built with dim={self.dim}")
        batch = hidden.shape[:-1]
        h = hidden.reshape(-1, self.dim)
        k_local = min(k, self.shard_end - self.shard_start)
        ids, p_local = chunked_topk(h, self.weight, self.bias, k_local, memory_budget_mb=self.memory_budget_mb)
        no_target = torch.full((h.shape[0],), -1, dtype=torch.long, device=h.device)
        lse, lse_local, _ = _shard_ce_pass(h, self.weight, self.bias, no_target, 0.0, self.num_classes,
                                           self._largest_shard(), _rows_budget(self.memory_budget_mb),
                                           self.process_group)  # (n,) global and this shard's log-sum-exp
        logp = torch.full((h.shape[0], k), -math.inf, dtype=lse.dtype, device=h.device)  # (n, k) padded
        logp[:, :k_local] = p_local.log().to(lse.dtype) + (lse_local - lse)[:, None]
        gid = torch.full((h.shape[0], k), -1, dtype=torch.long, device=h.device)
        gid[:, :k_local] = ids + self.shard_start
        all_logp = [torch.empty_like(logp) for _ in range(self.world_size)]
        all_ids = [torch.empty_like(gid) for _ in range(self.world_size)]
        dist.all_gather(all_logp, logp, group=self.process_group)
        dist.all_gather(all_ids, gid, group=self.process_group)
        best, pos = torch.cat(all_logp, 1).topk(k, dim=1)  # (n, k) over world·k candidates
        top_ids = torch.cat(all_ids, 1).gather(1, pos)
        return top_ids.reshape(*batch, k), best.exp().reshape(*batch, k)


class VocabParallelFullSoftmaxLoss(VocabParallel, FullSoftmaxLoss):
    """Exact softmax cross entropy with the [V, d] table sharded by rows across a process group.

    Same arguments and values as `FullSoftmaxLoss` (label_smoothing, reduction, ignore_index, memory_budget_mb,
    validate), plus `process_group`, `seed` and shard-sized `weight=`/`bias=` (see `VocabParallel`). Each rank
    streams over its own V/world classes in blocks of at most `memory_budget_mb` of logits; the ranks exchange
    (N,)-sized vectors and the (N, d) gradient of `hidden`. With reduction "mean"/"sum" the gradients are computed
    in forward (as `FullSoftmaxLoss`) and handed to the first backward without a copy: backward through the same
    forward twice (retain_graph=True) raises; use reduction="none" for that.

    Shape:
        hidden (..., d), target (...) -> () or (...) with reduction="none"; the same on every rank

    Example (on every rank of an initialised group):
        loss_fn = VocabParallelFullSoftmaxLoss(1_000_000, 128)          # each rank holds 1_000_000 / world rows
        loss_fn(hidden, target).backward()
    """

    def _loss(self, h, t, row_weight, sample):
        if self.validate:
            self._check_replicated(h, t)
        return self._parallel_ce(h, t[:, 0], self.label_smoothing, row_weight)  # () or (N,) per row


class _SampledVocabParallel(VocabParallel):
    """Sampling and row gathering for the candidate-sampling losses over a sharded table."""

    def sample(self, target: Tensor, dtype: Optional[torch.dtype] = None) -> CandidateSample:
        """Draw candidates from the loss's generator: the same on every rank (seeded with the agreed `seed`)."""
        if self.generator is None:  # created on first use, on the device the targets live on
            self.generator = torch.Generator(device=target.device).manual_seed(self.seed)
        return super().sample(target, dtype)

    def _candidates(self, h: Tensor, t: Tensor, sample: CandidateSample):
        """The rows of the batch's true and sampled ids gathered from every rank (their gradients flow back to
        each owner's shard through `_AllReduceSum`, sparse there if `sparse`): a dense table of U rows."""
        if self.validate:
            self._check_replicated(h, t, sample.ids)
        table_w, table_b, t_c, sample_c = self._gather_candidates(t, sample)
        return table_w, table_b, t_c, sample_c, False

    def _gather_candidates(self, t: Tensor, sample: CandidateSample):
        """The rows of the U distinct true and sampled ids, from their owners, and the ids renumbered into them.

        -> weight rows (U, d), bias rows (U,) or None, target (N, T) and a CandidateSample with ids in [0, U)
        (negative ids stay −1: padding and "no candidate" keep their meaning, equal ids stay equal).
        """
        ids = sample.ids
        flat = torch.cat([t.reshape(-1), ids.reshape(-1)])  # (N*T + |ids|,)
        uniq, inverse = torch.unique(flat, return_inverse=True)  # (U,) sorted, the same on every rank
        compact = torch.where(flat >= 0, inverse, -1)
        t_c, ids_c = compact[: t.numel()].view(t.shape), compact[t.numel():].view(ids.shape)
        pos = ((uniq >= self.shard_start) & (uniq < self.shard_end)).nonzero().squeeze(1)  # (U_own,)
        w_own, b_own = gather_rows(uniq[pos] - self.shard_start, self.weight, self.bias, sparse=self.sparse)
        rows = w_own if b_own is None else torch.cat([w_own, b_own.to(w_own.dtype).unsqueeze(1)], 1)  # (U_own, d[+1])
        table = rows.new_zeros(uniq.shape[0], rows.shape[1]).index_copy(0, pos, rows)  # (U, d[+1]) zeros elsewhere
        table = _AllReduceSum.apply(table, self.process_group)  # every rank: all U rows; backward: identity
        table_b = table[:, self.dim] if self.bias is not None else None
        sample_c = CandidateSample(ids_c, sample.log_q_true, sample.log_q_sampled, sample.counts)
        return table[:, : self.dim], table_b, t_c, sample_c


class VocabParallelSampledSoftmaxLoss(_SampledVocabParallel, SampledSoftmaxLoss):
    """Sampled softmax over a row-sharded table: `SampledSoftmaxLoss`'s arguments and values, plus
    `process_group`, `seed` and shard-sized `weight=`/`bias=` (see `VocabParallel` and the module docstring).

    Shape:
        hidden (..., d), target (...) or (..., T) -> () or (...) with reduction="none"; the same on every rank
    """


class VocabParallelNCELoss(_SampledVocabParallel, NCELoss):
    """NCE over a row-sharded table: `NCELoss`'s arguments and values, plus `process_group`, `seed` and
    shard-sized `weight=`/`bias=` (see `VocabParallel`).

    Shape:
        hidden (..., d), target (...) or (..., T) -> () or (...) with reduction="none"; the same on every rank
    """


class VocabParallelNegativeSamplingLoss(_SampledVocabParallel, NegativeSamplingLoss):
    """Negative sampling over a row-sharded table: `NegativeSamplingLoss`'s arguments and values (no bias by
    default), plus `process_group`, `seed` and shard-sized `weight=`/`bias=` (see `VocabParallel`).

    Shape:
        hidden (..., d), target (...) or (..., T) -> () or (...) with reduction="none"; the same on every rank
    """

    _default_bias = False


VOCAB_PARALLEL_LOSSES: dict[str, type] = {
    "full": VocabParallelFullSoftmaxLoss,
    "sampled": VocabParallelSampledSoftmaxLoss,
    "nce": VocabParallelNCELoss,
    "negative": VocabParallelNegativeSamplingLoss,
}


def build_vocab_parallel_loss(name: str, num_classes: int, dim: int, *, process_group=None, **kwargs):
    """Build a vocab-parallel loss by the same short name as `build_loss` ("full", "sampled", "nce", "negative").

    Keyword arguments go to the loss's constructor; call it on every rank of `process_group` with the same ones.
    """
    if name not in VOCAB_PARALLEL_LOSSES:
        raise InputError(
            f"no vocab-parallel loss {name!r}; choose one of {sorted(VOCAB_PARALLEL_LOSSES)}"
            f"{did_you_mean(str(name), VOCAB_PARALLEL_LOSSES)}"
        )
    cls = VOCAB_PARALLEL_LOSSES[name]
    if not issubclass(cls, SampledLossBase):
        for k in ("sampler", "num_sampled", "sparse", "generator", "counts"):
            if k in kwargs and kwargs[k] is not None and not (k == "sparse" and kwargs[k] is False):
                raise InputError(f"loss {name!r} is exact and takes no {k!r} argument")
            kwargs.pop(k, None)
    return cls(num_classes, dim, process_group=process_group, **kwargs)
