"""Functional core: chunked exact losses over V classes and the shared corrected-sampled-logits helper.

Everything here depends on torch alone. The module classes in `losses.py` are thin wrappers around these functions.

Exact losses (`chunked_softmax_cross_entropy`, `chunked_one_vs_all`) never build the (N, V) logits. They walk over
blocks of rows (and, when V itself is too wide for the memory budget, blocks of columns), upcast each block of logits
to fp32, and accumulate the gradients of the hidden states, the weight and the bias block by block:

* When the caller asks for a reduced loss (mean/sum) and gradients are needed, the gradients are computed during
  the forward pass and only scaled in backward (as Liger's fused linear cross entropy does). That costs three
  N×V×d products in total, the minimum: logits, dH = G @ W and dW = Gᵀ @ H.
* For reduction="none" the per-row upstream gradient is unknown in forward, so backward recomputes the logits
  block by block (four products).

Sampled losses all go through `sampled_logits`, which computes the true and sampled logits, subtracts the log
expected counts (log-Q correction) and removes accidental hits. Each loss is then its last line on top of it, a
`SoftmaxTail` or `LogisticTail` (`sampled_loss`); with shared candidates on the CPU the product, the removal and that
last line run fused in one reused (N, S) buffer (`_FusedSampledLoss`), the same values and gradients.

Elementwise work runs in torch's own row-wise kernels, in place, tile by tile while a tile is in cache (the softmax
of a tile is computed over its own logits: `_softmax_in_place_ok`). On the CPU the large blocks (the exact block of
logits, the sampled (N, S) block) are kept between calls in `_WORKSPACE` instead of being page-faulted in again on
every step; `release_workspace()` frees them.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor

__all__ = [
    "chunked_softmax_cross_entropy",
    "chunked_one_vs_all",
    "chunked_topk",
    "chunked_nll_and_rank",
    "expected_topk_hit",
    "gather_rows",
    "sampled_logits",
    "candidate_softmax_cross_entropy",
    "sampled_loss",
    "SoftmaxTail",
    "LogisticTail",
    "SampledLogits",
    "Removed",
    "mask_value",
    "autocast_off",
    "DEFAULT_MEMORY_BUDGET_MB",
    "release_workspace",
]

DEFAULT_MEMORY_BUDGET_MB = 512


def mask_value(dtype: torch.dtype) -> float:
    """A large negative logit that removes a column: exp() underflows to exactly 0, yet it is finite in `dtype`.

    Half of the dtype's most negative value, so that adding a bias or subtracting a log-count cannot overflow to
    -inf (TF uses -FLT_MAX, which overflows in fp16/bf16 and gives NaN under label smoothing: 0 * -inf).
    """
    return torch.finfo(dtype).min / 2


def autocast_off(device_type: str):
    """A context in which autocast is off for `device_type` (a no-op when it is off already).

    The losses compute their logits, log-sum-exps and gradients at (at least) fp32 from whatever dtype their inputs
    have, as F.cross_entropy does: under autocast a matrix product would otherwise come out in bf16/fp16 for some
    blocks (the sampled logits) and not others (the true logits, the exact losses' preallocated blocks).
    """
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


_TWICE = (
    "trying to differentiate twice a function that was marked with @once_differentiable: this loss's backward is "
    "not differentiable (for second derivatives use F.cross_entropy on loss.logits(), or a loss made of plain torch "
    "ops such as NCELoss or NegativeSamplingLoss)"
)


class _NotTwice(torch.autograd.Function):
    """The identity on a gradient; its own backward raises. Its inputs are the forward's inputs as well, so that
    differentiating the gradient with respect to any of them runs into the error instead of around it."""

    @staticmethod
    def forward(ctx, grad, *inputs):
        return grad.view_as(grad)

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(_TWICE)


def once_differentiable(backward):
    """`torch.autograd.function.once_differentiable`, strict: under create_graph=True the gradients come out tied
    to an error node whose edges lead to the forward's (saved) inputs, so any second derivative raises.

    torch's decorator ties them to fresh leaves, and only when an incoming gradient requires grad: a loss's
    incoming gradient (1 or 1/N) never does, so its gradients came out as constants and a Hessian-vector product
    through the loss silently lost the loss's curvature. Functions using this must save their differentiable
    inputs (or a tensor computed from them) with save_for_backward.
    """

    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        with torch.no_grad():
            outputs = backward(ctx, *grads)
        if not torch.is_grad_enabled():  # create_graph=False: the usual backward
            return outputs
        inputs = [x for x in ctx.saved_tensors if x.requires_grad]
        if not inputs:
            return outputs
        tied = tuple(g if g is None else _NotTwice.apply(g, *inputs) for g in outputs)
        return tied if isinstance(outputs, tuple) else tied[0]

    return wrapper


def _blocks(n_rows: int, n_cols: int, budget_bytes: int) -> tuple[int, int]:
    """Rows and columns per block so that one fp32 (rows, cols) block fits the budget.

    Prefer whole rows of V (one pass, no online log-sum-exp, three products in all). The Gᵀ @ H update reads and
    writes the whole [V, d] gradient once per row block, so a block needs enough rows (>= 32: about 8 flop per
    byte) to stay compute-bound; when V is too wide for that, use column blocks of 32 rows and a second sweep.
    Always at least one row per block (an empty batch then runs no block at all).
    """
    elems = max(1, budget_bytes // 4)
    rows = min(n_rows, elems // n_cols)
    if rows >= min(n_rows, 32):
        return max(rows, 1), n_cols
    rows = min(n_rows, 32)
    return rows, max(1, min(n_cols, elems // rows))


def _matmul_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    return torch.promote_types(hidden.dtype, weight.dtype)


def _acc_dtype(cdt: torch.dtype) -> torch.dtype:
    """Logits, losses and gradient accumulators: fp32, or fp64 when the inputs are fp64."""
    return torch.promote_types(cdt, torch.float32)


def _block_logits(h: Tensor, w: Tensor, b: Optional[Tensor], cdt: torch.dtype, out: Optional[Tensor] = None) -> Tensor:
    """fp32 logits of a block: (r, d) x (c, d) -> (r, c).

    `out` (a reused (>= r, c) buffer) avoids allocating, and first touching, a fresh block of up to the memory
    budget for every block of rows: on the CPU those page faults cost about as much as the matrix product.
    """
    acc = _acc_dtype(cdt)
    if out is not None and cdt == acc:
        z = out[: h.shape[0]]
        if b is not None:
            return torch.addmm(b.to(acc), h.to(cdt), w.to(cdt).t(), out=z)  # (r, c) bias fused into the product
        return torch.mm(h.to(cdt), w.to(cdt).t(), out=z)  # (r, c)
    else:
        z = (h.to(cdt) @ w.to(cdt).t()).to(acc)  # (r, c)
    if b is not None:
        z += b.to(z.dtype)
    return z


def _add_mm(out: Tensor, a: Tensor, b: Tensor, cdt: torch.dtype) -> None:
    """out += a @ b, in place, with the product in the matmul dtype and the accumulation in (at least) fp32."""
    if cdt == out.dtype:
        out.addmm_(a.to(cdt), b.to(cdt))
    else:
        out += (a.to(cdt) @ b.to(cdt)).to(out.dtype)


def _backprop_block(g: Tensor, h: Tensor, w: Tensor, c0: int, dh: Optional[Tensor], dw, db, cdt) -> None:
    """Given g = dloss/dz of a (r, c) block of logits z = h @ w.T + b (columns c0..c0+c), accumulate
    dh (r, d) += g @ w, dw[c0:c0+c] += gᵀ @ h and db[c0:c0+c] += Σ_rows g (each only if wanted)."""
    c1 = c0 + g.shape[1]
    if dh is not None:
        _add_mm(dh, g, w, cdt)
    if dw is not None:
        _add_mm(dw[c0:c1], g.t(), h, cdt)
    if db is not None:
        db[c0:c1] += g.sum(0)


def _rows_budget(budget_mb: Optional[float]) -> int:
    return int((DEFAULT_MEMORY_BUDGET_MB if budget_mb is None else budget_mb) * 2**20)


_SECOND_BUFFER_BYTES = 64 * 2**20


class _Workspace(threading.local):
    """Reusable flat buffers, per (dtype, device) and thread: the largest one given back, and a second one of at most
    `_SECOND_BUFFER_BYTES`. Blocks that a step needs and frees again.

    On a CPU a fresh block of a few MB costs its first touch (page faults, cache misses) on every step, about as
    much as the elementwise work on it. A buffer is taken with `take` and given back with `give` once nothing
    references it any more (after the backward's products); one that is never given back (an evaluation, a graph
    that is dropped) is simply garbage collected, and the next `take` allocates anew.
    """

    def __init__(self):
        self.free: dict = {}

    def take(self, shape: tuple, dtype: torch.dtype, device) -> Tensor:
        n = math.prod(shape)
        kept = self.free.get((dtype, str(device)), [])
        fits = [i for i, b in enumerate(kept) if b.numel() >= n]
        buf = kept.pop(min(fits, key=lambda i: kept[i].numel())) if fits else torch.empty(n, dtype=dtype, device=device)
        return buf[:n].view(shape)

    def give(self, t: Tensor) -> None:
        if t.device.type != "cpu":  # the CUDA caching allocator already reuses blocks; holding one here would not
            return
        base = t._base if t._base is not None else t
        kept = self.free.setdefault((t.dtype, str(t.device)), [])
        if any(b.data_ptr() == base.data_ptr() for b in kept):
            return
        kept.append(base)
        kept.sort(key=lambda b: -b.numel())
        # the largest, and a second one only if small (a sampled block): never two exact blocks of up to the budget
        del kept[1 if len(kept) > 1 and kept[1].numel() * kept[1].element_size() > _SECOND_BUFFER_BYTES else 2 :]


_WORKSPACE = _Workspace()


def release_workspace() -> None:
    """Free the blocks the CPU losses keep between calls (this thread's; at most two per dtype): the exact softmax
    keeps its block of logits, at most `memory_budget_mb`, and the sampled losses their (N, S) blocks, so that the
    next step does not pay for touching fresh memory again."""
    _WORKSPACE.free.clear()


# ---------------------------------------------------------------------------------------------------------------
# Exact softmax cross entropy, chunked
# ---------------------------------------------------------------------------------------------------------------


_TILE_BYTES = 2 * 2**20  # one tile of logits stays in cache between its exp and its gradient products


def _tile_width(rows: int, cols: Optional[int] = None) -> int:
    """Columns of a cache-sized tile (about `_TILE_BYTES` of fp32) for blocks of `rows` rows; at most `cols`."""
    width = max(256, _TILE_BYTES // (4 * max(rows, 1)))
    return width if cols is None else min(cols, width)


def _softmax_rows_(z: Tensor) -> Tensor:
    """z (r, w) becomes softmax(z) row by row, in place (one fused CPU kernel; see `_softmax_in_place_ok`); returns
    the rows' log-sum-exp, max z − log max p: exact to rounding, since max p >= 1/w."""
    m = z.amax(1)  # (r,)
    torch.ops.aten._softmax.out(z, 1, False, out=z)
    return m - z.amax(1).log()


def _softmax_in_place_ok(z: Tensor) -> bool:
    """Whether torch's softmax may write over its input here: the CPU kernel finishes each row's max and sum before
    it writes the row (tests/test_fused_sampled.py checks it); elsewhere the loss uses exp(z − max) instead."""
    return z.device.type == "cpu"


def _softmax_ce_rows(h, weight, bias, t, eps, scale, want_grad, need, cdt, flat, dw, db, lse_known):
    """Loss, log-sum-exp and gradients for one block of rows over all V classes, in cache-sized column tiles.

    Sweep 1 (`_tile_sweep`) computes each tile's logits into `flat` and, while the tile is in cache, turns it into the
    tile's own softmax in place (one fused row-wise kernel; on CUDA exp(z − max)) and keeps the tile's log-sum-exp.
    Sweep 2 (`_tile_gradients`) rescales each tile to scale * p (the softmax over all V) and runs its gradient
    products while it is in cache. The one-hot part of p − y is not subtracted tile by tile: its products are rows of
    W and h, added once after the sweep, and the target logits are one gathered dot product per row. The (r, V) block
    is read from memory about twice, the products total three r×V×d, the minimum, and a tile costs a handful of
    operations. Returns (loss_r, lse_r, dh_r); dw and db accumulate in place.
    """
    v = weight.shape[0]
    tiles, held, lse, z_sum = _tile_sweep(h, weight, bias, cdt, flat, lse_known, eps and lse_known is None)
    if lse_known is None:
        z_t = _target_logits(h, weight, bias, t, cdt, flat.dtype)  # (r,)
        loss_r = lse - (1 - eps) * z_t - (eps / v * z_sum if eps else 0.0)
    else:
        loss_r = None
    if not want_grad:
        return loss_r, lse, None
    dh_r = _tile_gradients(tiles, held, lse, h, weight, t, eps, v, scale, need, cdt, dw, db)
    return loss_r, lse, dh_r


def _tile_sweep(h, weight, bias, cdt, flat, lse_known=None, want_sum=False):
    """Sweep 1 over the columns of `weight` in cache-sized tiles of `flat` (a buffer of r × V).

    Returns (tiles, held, lse, z_sum): tiles [(c0, c1, view)], each view holding exp(z − held[i]) (with `lse_known`:
    the softmax p itself, held None); lse (r,) the log-sum-exp over these columns; z_sum (r,) Σ_j z_ij if want_sum.
    """
    r, v = h.shape[0], weight.shape[0]
    acc = flat.dtype
    width = _tile_width(r)
    tiles, held, parts = [], [], []
    z_sum = torch.zeros(r, dtype=acc, device=h.device) if want_sum else None
    for c0 in range(0, v, width):
        c1 = min(v, c0 + width)
        view = flat[c0 * r : c1 * r].view(r, c1 - c0)
        z = _block_logits(h, weight[c0:c1], None if bias is None else bias[c0:c1], cdt, out=view)  # (r, w)
        if z.data_ptr() != view.data_ptr():
            view.copy_(z)
            z = view
        tiles.append((c0, c1, z))
        if lse_known is not None:
            z.sub_(lse_known[:, None]).exp_()  # already normalised: p
            continue
        if z_sum is not None:
            z_sum += z.sum(1)
        if not _softmax_in_place_ok(z):  # exp(z − m) in the buffer: two elementwise kernels
            m = z.amax(1)  # (r,) this tile's max
            held.append(m)
            parts.append(m + z.sub_(m[:, None]).exp_().sum(1).log())
        else:  # the tile's softmax in the buffer: one fused row-wise kernel, in place
            parts.append(_softmax_rows_(z))
            held.append(parts[-1])
    if lse_known is not None:
        return tiles, None, lse_known, None
    if not tiles:  # no columns
        return tiles, None, torch.full((r,), -math.inf, dtype=acc, device=h.device), z_sum
    return tiles, torch.stack(held), torch.logsumexp(torch.stack(parts), 0), z_sum


def _tile_gradients(tiles, held, lse, h, weight, t, eps, num_classes, scale, need, cdt, dw, db):
    """Sweep 2: each tile of `_tile_sweep` becomes scale · (p − ε/V) over its columns (p the softmax with log-sum-exp
    `lse`) and runs its products; then the one-hot part, −scale (1 − ε) at column t_i (t_i < 0: not in these
    columns), as rows of W and h. Returns dh (r, d) (None if not needed); dw and db accumulate in place."""
    acc = _acc_dtype(cdt)
    dh = torch.zeros(h.shape[0], h.shape[1], dtype=acc, device=h.device) if need[0] else None
    f_all = None if held is None else (held - lse).exp_().mul_(scale[:, 0])  # (tiles, r) buffer -> scale * p
    for i, (c0, c1, p) in enumerate(tiles):
        p.mul_((scale[:, 0] if f_all is None else f_all[i])[:, None])
        if eps:
            p -= (eps / num_classes) * scale
        _backprop_block(p, h, weight[c0:c1], c0, dh, dw, db, cdt)
    tt = t.clamp_min(0)  # rows whose target is not in these columns add 0 (no host sync to find them)
    y_scale = torch.where(t >= 0, -(1 - eps) * scale[:, 0], 0.0).to(acc)  # (r,)
    if dh is not None:
        dh += weight.index_select(0, tt).to(acc) * y_scale[:, None]
    if dw is not None:
        dw.index_add_(0, tt, (h.to(acc) * y_scale[:, None]).to(dw.dtype))
    if db is not None:
        db.index_add_(0, tt, y_scale.to(db.dtype))
    return dh


def _target_logits(h, weight, bias, t, cdt, acc) -> Tensor:
    """z_{i, t_i} = h_i · w_{t_i} + b_{t_i} for a block of rows: (r,)."""
    z_t = (h.to(cdt) * weight.index_select(0, t).to(cdt)).sum(1).to(acc)
    return z_t if bias is None else z_t + bias.index_select(0, t).to(acc)


def _softmax_ce_pass(
    hidden: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    target: Tensor,
    label_smoothing: float,
    budget_bytes: int,
    row_scale: Optional[Tensor],
    need: tuple[bool, bool, bool],
    lse_known: Optional[Tensor] = None,
):
    """One sweep over the classes.

    Returns (loss_rows (N,) fp32, lse (N,) fp32, grads) where grads = (dH, dW, dB) of sum_i row_scale_i * loss_i
    when row_scale is given (None entries where not needed), else None.
    If `lse_known` is given (backward of reduction="none"), the loss is not recomputed.
    """
    n, _ = hidden.shape
    v = weight.shape[0]
    eps = float(label_smoothing)
    cdt = _matmul_dtype(hidden, weight)
    want_grad = row_scale is not None and any(need)
    rows, cols = _blocks(n, v, budget_bytes)
    acc = _acc_dtype(cdt)
    loss = torch.zeros(n, dtype=acc, device=hidden.device)
    lse_all = torch.empty(n, dtype=acc, device=hidden.device)
    dh = torch.zeros(n, hidden.shape[1], dtype=acc, device=hidden.device) if want_grad and need[0] else None
    dw = torch.zeros(v, weight.shape[1], dtype=acc, device=weight.device) if want_grad and need[1] else None
    db = torch.zeros(v, dtype=acc, device=weight.device) if want_grad and need[2] and bias is not None else None

    # reused across blocks, and across calls on the CPU (_WORKSPACE): a fresh block of up to the memory budget would
    # cost its first touch, one page fault per 4 KiB, on every call (about a sixth of a step at V = 100k)
    flat = _WORKSPACE.take((rows * v,), acc, hidden.device) if cols == v else None
    for r0 in range(0, n, rows):
        h = hidden[r0 : r0 + rows]  # (r, d)
        t = target[r0 : r0 + rows]  # (r,)
        ar = torch.arange(h.shape[0], device=h.device)
        scale = None if row_scale is None else row_scale[r0 : r0 + rows].to(acc)[:, None]  # (r, 1)
        if cols == v:
            loss_r, lse_r, dh_r = _softmax_ce_rows(
                h, weight, bias, t, eps, scale, want_grad, need, cdt, flat, dw, db,
                None if lse_known is None else lse_known[r0 : r0 + rows],
            )
            if lse_known is None:
                loss[r0 : r0 + rows], lse_all[r0 : r0 + rows] = loss_r, lse_r
            if dh is not None:
                dh[r0 : r0 + rows] = dh_r
            continue

        # V too wide for one block: online log-sum-exp over column blocks, then a second sweep for gradients.
        if lse_known is None:
            m = torch.full((h.shape[0],), -math.inf, dtype=acc, device=h.device)
            s = torch.zeros(h.shape[0], dtype=acc, device=h.device)
            z_t = torch.zeros(h.shape[0], dtype=acc, device=h.device)
            z_sum = torch.zeros(h.shape[0], dtype=acc, device=h.device)
            for c0 in range(0, v, cols):
                z = _block_logits(h, weight[c0 : c0 + cols], None if bias is None else bias[c0 : c0 + cols], cdt)
                m_new = torch.maximum(m, z.amax(1))
                s = s * (m - m_new).exp() + (z - m_new[:, None]).exp().sum(1)
                m = m_new
                inside = (t >= c0) & (t < c0 + z.shape[1])
                z_t += torch.where(inside, z[ar, (t - c0).clamp(0, z.shape[1] - 1)], 0.0)
                if eps:
                    z_sum += z.sum(1)
            lse = m + s.log()
            loss[r0 : r0 + rows] = lse - (1 - eps) * z_t - (eps / v * z_sum if eps else 0.0)
            lse_all[r0 : r0 + rows] = lse
        else:
            lse = lse_known[r0 : r0 + rows]
        if not want_grad:
            continue
        for c0 in range(0, v, cols):
            wc = weight[c0 : c0 + cols]
            z = _block_logits(h, wc, None if bias is None else bias[c0 : c0 + cols], cdt)
            z.sub_(lse[:, None]).exp_()  # p (r, c)
            inside = (t >= c0) & (t < c0 + z.shape[1])
            z[ar[inside], t[inside] - c0] -= 1 - eps
            if eps:
                z -= eps / v
            z *= scale
            _backprop_block(z, h, wc, c0, None if dh is None else dh[r0 : r0 + rows], dw, db, cdt)
    if flat is not None:
        _WORKSPACE.give(flat)  # nothing references it any more: every tile was used in this call
    grads = (dh, dw, db) if want_grad else None
    return loss, lse_all, grads


def _take_grads(ctx, recompute):
    """The gradients a reduced exact loss formed in forward, handed over to the first backward and released.

    Released, not kept for retain_graph: while ctx held the [V, d] weight gradient, autograd had to copy it into
    `.grad` instead of taking the buffer itself, doubling the peak memory for as long as the loss lived. A second
    backward through a retained graph gets `recompute()` (the same operations, so the same values) instead.
    """
    if ctx.used:
        return recompute()
    grads, ctx.grads, ctx.used = ctx.grads, None, True
    return grads


def _scale_(grads, grad_out: Tensor):
    """(dH, dW, dB) of a unit upstream gradient, scaled in place by the 0-dim upstream gradient."""
    if grads is None:
        return None, None, None
    return tuple(None if g is None else g.mul_(grad_out.to(g.dtype)) for g in grads)


class _ChunkedSoftmaxCE(torch.autograd.Function):
    """Exact softmax cross entropy, chunked (see `chunked_softmax_cross_entropy`).

    row_weight given: returns Σ_i w_i · loss_i and computes the gradients in forward (three products in total); the
    first backward takes them over (`_take_grads`), a second one through a retained graph recomputes them.
    row_weight None: returns per-row losses; backward recomputes the logits with the upstream per-row gradient.
    Backward is not itself differentiable (`once_differentiable`: a second derivative raises a clear error).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, row_weight, label_smoothing, budget_bytes, need):
        ctx.label_smoothing, ctx.budget_bytes, ctx.need = label_smoothing, budget_bytes, need
        ctx.has_bias = bias is not None
        loss, lse, grads = _softmax_ce_pass(
            hidden, weight, bias, target, label_smoothing, budget_bytes, row_weight, need
        )
        b = bias if bias is not None else torch.empty(0)
        ctx.reduced = row_weight is not None
        if ctx.reduced:
            ctx.grads, ctx.used = grads, False
            ctx.save_for_backward(hidden, weight, b, target, row_weight)  # references, read only to recompute
            return (loss * row_weight.to(loss.dtype)).sum()
        ctx.save_for_backward(hidden, weight, b, target, lse)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        with autocast_off(grad_out.device.type):
            if ctx.reduced:

                def recompute():
                    hidden, weight, bias, target, row_weight = ctx.saved_tensors
                    return _softmax_ce_pass(hidden, weight, bias if ctx.has_bias else None, target,
                                            ctx.label_smoothing, ctx.budget_bytes, row_weight, ctx.need)[2]

                dh, dw, db = _scale_(_take_grads(ctx, recompute), grad_out)
            else:
                hidden, weight, bias, target, lse = ctx.saved_tensors
                bias = bias if ctx.has_bias else None
                _, _, (dh, dw, db) = _softmax_ce_pass(
                    hidden, weight, bias, target, ctx.label_smoothing, ctx.budget_bytes, grad_out, ctx.need, lse
                )
        return dh, dw, db, None, None, None, None, None


def chunked_softmax_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    target: Tensor,
    *,
    row_weight: Optional[Tensor] = None,
    label_smoothing: float = 0.0,
    memory_budget_mb: Optional[float] = None,
) -> Tensor:
    """Exact softmax cross entropy of `hidden @ weight.T + bias` without building the (N, V) logits.

    loss_i = logsumexp_j(z_ij) - (1 - ε) z_{i,t_i} - (ε / V) Σ_j z_ij,   z = hidden @ weightᵀ + bias

    which is `F.cross_entropy(z, t, label_smoothing=ε, reduction="none")`. Peak extra memory is one fp32 block of
    logits (at most `memory_budget_mb`) plus the fp32 gradient buffers.

    Args:
        hidden: (N, d) float.  weight: (V, d).  bias: (V,) or None.
        target: (N,) int64 class ids in [0, V) (ignored rows must already be replaced by a valid id and given
            row_weight 0).
        row_weight: (N,) float. If given, the result is the scalar Σ_i row_weight_i · loss_i (mean, sum and
            ignore_index are all expressed this way) and gradients are computed in the forward pass. If None, the
            result is the per-row loss (N,).
        memory_budget_mb: bytes for one fp32 block of logits; default `DEFAULT_MEMORY_BUDGET_MB`.

    Shape:
        hidden (N, d), target (N,) -> () with row_weight, else (N,)

    Example:
        >>> h, w, t = torch.randn(4, 8), torch.randn(100, 8), torch.tensor([1, 5, 7, 99])
        >>> ref = torch.nn.functional.cross_entropy(h @ w.T, t, reduction="none")
        >>> torch.allclose(chunked_softmax_cross_entropy(h, w, None, t), ref, atol=1e-5)
        True
    """
    need = (
        torch.is_grad_enabled() and hidden.requires_grad,
        torch.is_grad_enabled() and weight.requires_grad,
        torch.is_grad_enabled() and bias is not None and bias.requires_grad,
    )
    with autocast_off(hidden.device.type):
        return _ChunkedSoftmaxCE.apply(
            hidden, weight, bias, target, row_weight, float(label_smoothing), _rows_budget(memory_budget_mb), need
        )


def soft_cap(x: Tensor, cap: Optional[float]) -> Tensor:
    """Soft-capped logits cap · tanh(x / cap) (Gemma 2's final-logit soft-capping); x itself for cap None."""
    return x if cap is None else torch.tanh(x / cap) * cap


def _softcapped_rows(h: Tensor, weight: Tensor, bias: Optional[Tensor], t: Tensor, cap: float, eps: float) -> Tensor:
    """Per-row softmax cross entropy of the capped logits cap · tanh(z / cap), z = h Wᵀ + b, for one block of rows."""
    cdt = _matmul_dtype(h, weight)
    z = _block_logits(h, weight, bias, cdt)  # (r, V) fp32
    return F.cross_entropy(soft_cap(z, cap), t, reduction="none", label_smoothing=eps)


def softcapped_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    target: Tensor,
    cap: float,
    *,
    row_weight: Optional[Tensor] = None,
    label_smoothing: float = 0.0,
    memory_budget_mb: Optional[float] = None,
) -> Tensor:
    """Exact softmax cross entropy of soft-capped logits y = cap · tanh(z / cap), z = hidden @ weightᵀ + bias
    (Gemma 2's `final_logit_softcapping`), without building the (N, V) logits.

    Blocks of rows whose (r, V) logits fit `memory_budget_mb` go through autograd under activation checkpointing:
    backward recomputes each block's logits (four N×V×d products in all where `chunked_softmax_cross_entropy` needs
    three), so the peak is one block whatever N. Same arguments and result as `chunked_softmax_cross_entropy`.

    Shape:
        hidden (N, d), target (N,) -> () with row_weight, else (N,)
    """
    n, v = hidden.shape[0], weight.shape[0]
    rows = max(1, _rows_budget(memory_budget_mb) // (3 * 4 * max(v, 1)))  # z, y and the softmax of one block
    grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad))
    parts = []
    with autocast_off(hidden.device.type):
        for r0 in range(0, n, rows):
            args = (hidden[r0:r0 + rows], weight, bias, target[r0:r0 + rows], float(cap), float(label_smoothing))
            if grad:
                parts.append(torch.utils.checkpoint.checkpoint(_softcapped_rows, *args, use_reentrant=False))
            else:
                parts.append(_softcapped_rows(*args))
        loss = torch.cat(parts) if parts else hidden.new_zeros(0, dtype=_acc_dtype(_matmul_dtype(hidden, weight)))
    return loss if row_weight is None else (loss * row_weight.to(loss.dtype)).sum()


# ---------------------------------------------------------------------------------------------------------------
# Exact one-vs-all (independent sigmoid per class), chunked
# ---------------------------------------------------------------------------------------------------------------


def _ova_pass(hidden, weight, bias, target, budget_bytes, row_scale, need, compute_loss=True):
    """loss_i = Σ_j softplus(z_ij) - Σ_{t ∈ labels_i} z_it; dloss/dz = σ(z) - y. One sweep.

    Column tiles of about `_TILE_BYTES` per block of rows, in one reused buffer: each tile's logits, its softplus sum,
    σ in place and its two gradient products run while the tile is in cache (the tile's own max is not needed: no
    normalisation). The labels' part (−z_t in the loss, −y in the gradient) is one gathered dot product per label
    and an index_add after the sweep, not an indexed write per tile.
    """
    n = hidden.shape[0]
    v = weight.shape[0]
    cdt = _matmul_dtype(hidden, weight)
    want_grad = row_scale is not None and any(need)
    rows, cols = _blocks(n, v, budget_bytes)
    acc = _acc_dtype(cdt)
    loss = torch.zeros(n, dtype=acc, device=hidden.device)
    dh = torch.zeros(n, hidden.shape[1], dtype=acc, device=hidden.device) if want_grad and need[0] else None
    dw = torch.zeros(v, weight.shape[1], dtype=acc, device=weight.device) if want_grad and need[1] else None
    db = torch.zeros(v, dtype=acc, device=weight.device) if want_grad and need[2] and bias is not None else None
    width = _tile_width(min(rows, n), cols)
    flat = _WORKSPACE.take((min(rows, max(n, 1)) * width,), acc, hidden.device)
    for r0 in range(0, n, rows):
        h = hidden[r0 : r0 + rows]  # (r, d)
        t = target[r0 : r0 + rows]  # (r, T), padding < 0
        r = h.shape[0]
        scale = None if row_scale is None else row_scale[r0 : r0 + rows].to(acc)[:, None]  # (r, 1)
        dh_r = None if dh is None else dh[r0 : r0 + rows]
        for c0 in range(0, v, width):
            c1 = min(v, c0 + width)
            z = _block_logits(h, weight[c0:c1], None if bias is None else bias[c0:c1], cdt,
                              out=flat[: r * (c1 - c0)].view(r, c1 - c0))  # (r, w)
            if compute_loss:
                loss[r0 : r0 + rows] += F.softplus(z).sum(1)
            if not want_grad:
                continue
            z.sigmoid_().mul_(scale)
            _backprop_block(z, h, weight[c0:c1], c0, dh_r, dw, db, cdt)
        # the labels: − z_t in the loss, − scale at (i, t) in dloss/dz
        valid = t >= 0  # (r, T)
        tv = t.clamp_min(0)  # (r, T)
        w_t = weight.index_select(0, tv.reshape(-1)).view(*t.shape, -1)  # (r, T, d)
        if compute_loss:
            z_t = (h.to(cdt).unsqueeze(1) * w_t.to(cdt)).sum(-1).to(acc)  # (r, T)
            if bias is not None:
                z_t = z_t + bias.index_select(0, tv.reshape(-1)).view(t.shape).to(acc)
            loss[r0 : r0 + rows] -= (z_t * valid).sum(1)
        if want_grad:
            y = valid.to(acc) * scale  # (r, T) the scaled one-hot entries
            if dh_r is not None:
                dh_r -= (y.unsqueeze(2) * w_t.to(acc)).sum(1)
            ids, y_k = tv[valid], y[valid]  # (K,) the valid labels' classes and scaled one-hot entries
            if dw is not None:
                row_of = valid.nonzero()[:, 0]  # (K,) each valid label's row
                dw.index_add_(0, ids, (h.to(acc).index_select(0, row_of) * y_k.unsqueeze(1)).to(dw.dtype), alpha=-1)
            if db is not None:
                db.index_add_(0, ids, y_k.to(db.dtype), alpha=-1)
    _WORKSPACE.give(flat)
    return loss, ((dh, dw, db) if want_grad else None)


class _ChunkedOneVsAll(torch.autograd.Function):
    """Exact one-vs-all loss, chunked; the same gradient handling as `_ChunkedSoftmaxCE`."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, row_weight, budget_bytes, need):
        ctx.budget_bytes, ctx.need, ctx.has_bias = budget_bytes, need, bias is not None
        loss, grads = _ova_pass(hidden, weight, bias, target, budget_bytes, row_weight, need)
        b = bias if bias is not None else torch.empty(0)
        ctx.reduced = row_weight is not None
        if ctx.reduced:
            ctx.grads, ctx.used = grads, False
            ctx.save_for_backward(hidden, weight, b, target, row_weight)  # references, read only to recompute
            return (loss * row_weight.to(loss.dtype)).sum()
        ctx.save_for_backward(hidden, weight, b, target)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        with autocast_off(grad_out.device.type):
            if ctx.reduced:

                def recompute():
                    hidden, weight, bias, target, row_weight = ctx.saved_tensors
                    return _ova_pass(hidden, weight, bias if ctx.has_bias else None, target, ctx.budget_bytes,
                                     row_weight, ctx.need, compute_loss=False)[1]

                dh, dw, db = _scale_(_take_grads(ctx, recompute), grad_out)
            else:
                hidden, weight, bias, target = ctx.saved_tensors
                bias = bias if ctx.has_bias else None
                _, (dh, dw, db) = _ova_pass(
                    hidden, weight, bias, target, ctx.budget_bytes, grad_out, ctx.need, compute_loss=False
                )
        return dh, dw, db, None, None, None, None


def chunked_one_vs_all(
    hidden: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    target: Tensor,
    *,
    row_weight: Optional[Tensor] = None,
    memory_budget_mb: Optional[float] = None,
) -> Tensor:
    """Exact multi-label logistic loss over all V classes, chunked over V.

    loss_i = Σ_j [ softplus(z_ij) - y_ij z_ij ],  y_ij = 1 if j is one of row i's labels,  z = hidden @ weightᵀ + bias

    i.e. `F.binary_cross_entropy_with_logits(z, y, reduction="none").sum(1)`: V independent logistic regressions.

    Shape:
        hidden (N, d), target (N, T) int64 with padding entries < 0 (labels in a row distinct) -> () with
        row_weight, else (N,)
    """
    need = (
        torch.is_grad_enabled() and hidden.requires_grad,
        torch.is_grad_enabled() and weight.requires_grad,
        torch.is_grad_enabled() and bias is not None and bias.requires_grad,
    )
    with autocast_off(hidden.device.type):
        return _ChunkedOneVsAll.apply(hidden, weight, bias, target, row_weight, _rows_budget(memory_budget_mb), need)


# ---------------------------------------------------------------------------------------------------------------
# Inference helpers
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def chunked_topk(
    hidden: Tensor, weight: Tensor, bias: Optional[Tensor], k: int, *, memory_budget_mb: Optional[float] = None
) -> tuple[Tensor, Tensor]:
    """Top-k classes of softmax(hidden @ weightᵀ + bias) and their probabilities, without the (N, V) logits.

    Shape:
        hidden (N, d) -> ids (N, k) int64, probs (N, k) fp32 (fp64 for fp64 inputs)
    """
    with autocast_off(hidden.device.type):
        return _chunked_topk(hidden, weight, bias, k, memory_budget_mb)


class _OnlineLSE:
    """The log-sum-exp of rows of logits seen one column tile at a time: each tile's own log-sum-exp, combined at
    the end. `add` may overwrite the tile (on the CPU it becomes the tile's softmax in place: one fused kernel)."""

    def __init__(self, rows: int, dtype: torch.dtype, device):
        self.parts: list[Tensor] = []
        self.rows, self.dtype, self.device = rows, dtype, device

    def add(self, z: Tensor) -> None:
        if _softmax_in_place_ok(z) and z.shape[1]:
            self.parts.append(_softmax_rows_(z))
        else:
            self.parts.append(torch.logsumexp(z, 1))

    def value(self) -> Tensor:
        if not self.parts:
            return torch.full((self.rows,), -math.inf, dtype=self.dtype, device=self.device)
        return torch.logsumexp(torch.stack(self.parts), 0)


def _logit_blocks(hidden: Tensor, weight: Tensor, bias: Optional[Tensor], memory_budget_mb: Optional[float],
                  tiles: bool = True):
    """The (N, V) logits without the (N, V) tensor: yields (r0, h, columns) per block of rows, `columns` yielding
    (c0, z) with z the fp32 (fp64 for fp64 inputs) logits of rows r0.. and columns c0.. of the block.

    The column blocks are cache-sized tiles (about `_TILE_BYTES`, within the memory budget), or with tiles=False as
    wide as the budget allows (torch's top-k costs ~10 ns an element on rows of a few hundred, less on long rows).
    They share one reused buffer: a consumer may change z in place but must be done with it before the next one.
    """
    n, v = hidden.shape[0], weight.shape[0]
    cdt = _matmul_dtype(hidden, weight)
    rows, cols = _blocks(n, v, _rows_budget(memory_budget_mb))
    width = _tile_width(min(rows, n), cols) if tiles else cols
    flat = _WORKSPACE.take((max(1, min(rows, n)) * width,), _acc_dtype(cdt), hidden.device)

    def columns(h):
        for c0 in range(0, v, width):
            c1 = min(v, c0 + width)
            view = flat[: h.shape[0] * (c1 - c0)].view(h.shape[0], c1 - c0)
            yield c0, _block_logits(h, weight[c0:c1], None if bias is None else bias[c0:c1], cdt, out=view)

    for r0 in range(0, n, rows):
        h = hidden[r0 : r0 + rows]
        yield r0, h, columns(h)
    _WORKSPACE.give(flat)


def _chunked_topk(hidden, weight, bias, k, memory_budget_mb):
    n = hidden.shape[0]
    acc = _acc_dtype(_matmul_dtype(hidden, weight))
    ids_out = torch.empty(n, k, dtype=torch.long, device=hidden.device)
    probs_out = torch.empty(n, k, dtype=acc, device=hidden.device)
    for r0, h, columns in _logit_blocks(hidden, weight, bias, memory_budget_mb, tiles=False):
        cand_v, cand_i = [], []  # each tile's top k, merged once after the sweep
        lse = _OnlineLSE(h.shape[0], acc, h.device)
        for c0, z in columns:
            top_v, top_i = z.topk(min(k, z.shape[1]), dim=1)
            cand_v.append(top_v)
            cand_i.append(top_i.add_(c0))
            lse.add(z)  # last: it may overwrite z
        cand = torch.cat(cand_v, 1)
        best_v, pos = cand.topk(min(k, cand.shape[1]), dim=1)
        ids_out[r0 : r0 + h.shape[0]] = torch.cat(cand_i, 1).gather(1, pos)
        probs_out[r0 : r0 + h.shape[0]] = (best_v - lse.value()[:, None]).exp()
    return ids_out, probs_out


def chunked_nll_and_rank(
    hidden: Tensor, weight: Tensor, bias: Optional[Tensor], target: Tensor, *,
    memory_budget_mb: Optional[float] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Exact NLL of `target` under softmax(z), z = hidden @ weightᵀ + bias, and the target's rank among the V
    logits, in ONE pass over V:

        nll_i = logsumexp_c z_ic − z_it,   greater_i = #{c : z_ic > z_it},   ties_i = #{c ≠ t_i : z_ic = z_it}

    The target's place in the sorted logits is greater_i (0: the arg max) when its ties are broken in its favour, and
    greater_i + ties_i against it; `expected_topk_hit(greater, ties, k)` is the top-k accuracy with ties broken
    uniformly at random (a zero table, every logit tied, scores k/V, not 1). One product per block of rows (and
    columns), an online log-sum-exp and two comparison counts: the evaluation cost of `exact_nll` alone, instead of
    that plus a top-k pass. No gradients. The target logit is a row dot product, apart from the blocks' matrix
    products: logits equal in exact arithmetic may differ in the last bit between the two (a tie is certain only
    where both are exact, e.g. a zero table or integer-valued entries).

    Shape:
        hidden (N, d), target (N,) int64 in [0, V) -> nll (N,) fp32 (fp64 for fp64 inputs), greater (N,) int64,
        ties (N,) int64
    """
    with torch.no_grad(), autocast_off(hidden.device.type):
        acc = _acc_dtype(_matmul_dtype(hidden, weight))
        zt = (hidden.to(acc) * weight[target].to(acc)).sum(1)  # (N,) the target logits, row by row
        if bias is not None:
            zt += bias[target].to(acc)
        lse, greater, ties = _lse_and_rank_counts(hidden, weight, bias, zt, target, memory_budget_mb)
        return lse - zt, greater, ties


def _lse_and_rank_counts(hidden, weight, bias, zt, own, memory_budget_mb):
    """One pass over the columns of `weight`: per row i the log-sum-exp of the logits z_i·, #{c ≠ own_i : z_ic >
    zt_i} and #{c ≠ own_i : z_ic = zt_i}. own (N,) is the target's column in `weight`, −1 where it has none (a
    shard of the table that does not hold the target). -> lse (N,) acc dtype, greater (N,) int64, ties (N,) int64."""
    n = hidden.shape[0]
    lse_out = torch.empty(n, dtype=zt.dtype, device=hidden.device)
    greater = torch.zeros(n, dtype=torch.long, device=hidden.device)
    ties = torch.zeros(n, dtype=torch.long, device=hidden.device)
    for r0, h, columns in _logit_blocks(hidden, weight, bias, memory_budget_mb):
        r1, t, zr = r0 + h.shape[0], own[r0 : r0 + h.shape[0]], zt[r0 : r0 + h.shape[0], None]  # (r,), (r, 1)
        lse = _OnlineLSE(h.shape[0], zt.dtype, h.device)
        for c0, z in columns:
            inside = (t >= c0) & (t < c0 + z.shape[1])  # the target's own column neither outranks nor ties it
            own_rows, own_cols = inside.nonzero().squeeze(1), t[inside] - c0
            own_z = z[own_rows, own_cols]  # (K,) kept for the log-sum-exp
            z[own_rows, own_cols] = -math.inf
            greater[r0:r1] += (z > zr).sum(1)
            ties[r0:r1] += (z == zr).sum(1)
            z[own_rows, own_cols] = own_z
            lse.add(z)  # last: it may overwrite z
        lse_out[r0:r1] = lse.value()
    return lse_out, greater, ties


def expected_topk_hit(greater: Tensor, ties: Tensor, k: int) -> Tensor:
    """P(the target is among the k best classes) when ties are broken uniformly at random, from the counts of
    `chunked_nll_and_rank`: the target takes each place greater, ..., greater + ties (0-based) with probability
    1 / (ties + 1), so

        P = clamp((k − greater) / (ties + 1), 0, 1)

    1 or 0 where nothing ties with the target (a hit iff greater < k); k / V where all V logits tie. Its mean over
    examples is the top-k accuracy in expectation over the tie-breaking: chance, k / V, for a model that knows nothing.

    Shape:
        greater (N,), ties (N,) int -> (N,) float64
    """
    return ((k - greater).double() / (ties + 1).double()).clamp_(0.0, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# Row gathering with sparse gradients
# ---------------------------------------------------------------------------------------------------------------


class _GatherRows(torch.autograd.Function):
    """weight[ids], bias[ids] whose gradients are coalesced sparse COO tensors touching only the gathered rows."""

    @staticmethod
    def forward(ctx, ids, weight, bias):
        ctx.save_for_backward(ids)
        ctx.v = weight.shape[0]
        ctx.has_bias = bias is not None
        w = weight.index_select(0, ids)
        b = bias.index_select(0, ids) if bias is not None else None
        return w, b

    @staticmethod
    def backward(ctx, grad_w, grad_b):
        (ids,) = ctx.saved_tensors
        # Sum duplicate rows here (a sort of M ids) so the optimizer receives a coalesced gradient and does not
        # have to coalesce it itself.
        uniq, inverse = torch.unique(ids, return_inverse=True)  # (U,), (M,)
        idx = uniq.unsqueeze(0)
        dw = db = None
        if ctx.needs_input_grad[1] and grad_w is not None:
            vals = grad_w.new_zeros(uniq.shape[0], grad_w.shape[1]).index_add_(0, inverse, grad_w)  # (U, d)
            dw = torch.sparse_coo_tensor(idx, vals, (ctx.v, grad_w.shape[1]), is_coalesced=True, check_invariants=False)
        if ctx.has_bias and ctx.needs_input_grad[2] and grad_b is not None:
            vals = grad_b.new_zeros(uniq.shape[0]).index_add_(0, inverse, grad_b)  # (U,)
            db = torch.sparse_coo_tensor(idx, vals, (ctx.v,), is_coalesced=True, check_invariants=False)
        return None, dw, db


def gather_rows(ids: Tensor, weight: Tensor, bias: Optional[Tensor], *, sparse: bool) -> tuple[Tensor, Optional[Tensor]]:
    """Rows `weight[ids]` (and `bias[ids]`). With sparse=True their gradients are coalesced sparse COO tensors
    over only those rows (like `nn.Embedding(sparse=True)`); otherwise dense [V, d] gradients.

    Shape:
        ids (M,) -> (M, d), (M,) or None
    """
    if sparse:
        return _GatherRows.apply(ids, weight, bias)
    return weight.index_select(0, ids), (bias.index_select(0, ids) if bias is not None else None)


# ---------------------------------------------------------------------------------------------------------------
# The shared corrected-sampled-logits helper
# ---------------------------------------------------------------------------------------------------------------


class Removed(NamedTuple):
    """Which entries of the (N, S) sampled block are removed (accidental hits, candidates with id < 0).

    Either a dense (N, S) bool mask, or the coordinates of the few removed entries plus an optional (S,) mask of
    whole columns: on the CPU a dense mask costs a full pass over (N, S) to build and another to apply, while the
    hits are typically a handful per row at most.
    """

    dense: Optional[Tensor] = None  # (N, S) bool
    rows: Optional[Tensor] = None  # (K,) int64
    cols: Optional[Tensor] = None  # (K,) int64
    columns: Optional[Tensor] = None  # (S,) bool: removed for every row

    def fill_(self, x: Tensor, value: float) -> Tensor:
        """Set the removed entries of x (N, S) to value, in place; returns x."""
        if self.dense is not None:
            return x.masked_fill_(self.dense, value)
        if self.columns is not None:
            x.masked_fill_(self.columns, value)
        if self.rows is not None:
            x.index_put_((self.rows, self.cols), x.new_full((), value))
        return x

    def to_dense(self, n: int, s: int, device) -> Tensor:
        if self.dense is not None:
            return self.dense.expand(n, s)
        return self.fill_(torch.zeros(n, s, dtype=torch.bool, device=device), True)


class SampledLogits(NamedTuple):
    """Output of `sampled_logits`: the corrected logits of the true and of the sampled classes, kept as two blocks
    (concatenating them would cost a copy of the (N, S) block in forward and backward).

    true:         (N, T) corrected logits of the true classes (fp32; fp64 for fp64 inputs).
    sampled:      (N, S) corrected logits of the candidates.
                  Removed entries (here and in `true`) hold `mask_value`: finite, and exp() of it is exactly 0.
    true_removed: (N, T) bool: padded labels.
    removed:      `Removed`: accidental hits and invalid candidates (id < 0) in the sampled block.
    counts:       (S,) or (N, S) multiplicities of the sampled ids (unique="multiplicity" samples), else None.
    """

    true: Tensor
    sampled: Tensor
    true_removed: Tensor
    removed: Removed
    counts: Optional[Tensor]

    @property
    def labels(self) -> Tensor:
        """(N, T) soft labels: 1 / (number of valid labels of the row) on each valid true column (TF's 1/num_true)."""
        keep = (~self.true_removed).to(self.true.dtype)
        return keep / keep.sum(1, keepdim=True).clamp_min(1)

    @property
    def sampled_removed(self) -> Tensor:
        """(N, S) bool mask of the removed sampled entries."""
        return self.removed.to_dense(self.sampled.shape[0], self.sampled.shape[1], self.sampled.device)

    def masked(self) -> Tensor:
        """(N, T + S) logits as TensorFlow lays them out, removed columns at `mask_value` (finite in the dtype)."""
        return torch.cat([self.true, self.sampled], 1)


def sampled_logits(
    hidden: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    target: Tensor,
    sample,
    *,
    subtract_log_q: bool = True,
    remove_accidental_hits: bool = True,
    sparse: bool = False,
    softcap: Optional[float] = None,
) -> SampledLogits:
    """Corrected logits of the true and the sampled classes (TensorFlow's `_compute_sampled_logits` semantics).

    For row i with true classes t_i1..t_iT and sampled classes s_1..s_S (shared, or s_i1..s_iS per row):

        true_ij    = h_i · w_{t_ij} + b_{t_ij} − log E[count(t_ij)]
        sampled_ij = h_i · w_{s_j}  + b_{s_j}  − log E[count(s_j)]      (− log E[...] only if subtract_log_q)

    sampled_ij is removed when s_j equals any true class of row i (remove_accidental_hits; every copy of it, where
    TF's compute_accidental_hits removes only the last copy of a duplicated id) or when s_j < 0 (no candidate).
    True columns whose label is padding (< 0) are removed. Removed entries are set to `mask_value` (finite in the
    dtype, so label smoothing and fp16/bf16 stay finite; exp() of it is exactly 0 and no gradient flows through it)
    and are also reported in `SampledLogits.removed`. On the CPU the few hits are written by index, not by a pass
    over the whole (N, S) block.

    Args:
        hidden: (N, d).  weight: (V, d).  bias: (V,) or None.
        target: (N, T) int64, padding entries < 0.
        sample: a `CandidateSample` (ids (S,) or (N, S); log_q_true (N, T); log_q_sampled like ids; counts or None).
        sparse: gradients of weight and bias as sparse COO tensors over the rows used.
        softcap: c > 0 replaces h_i · w + b by c · tanh((h_i · w + b) / c) before the correction (soft-capped logits).
    """
    with autocast_off(hidden.device.type):
        return _sampled_logits(hidden, weight, bias, target, sample, subtract_log_q, remove_accidental_hits, sparse,
                               softcap)


def sampled_loss(
    hidden: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    target: Tensor,
    sample,
    tail,
    *,
    subtract_log_q: bool = True,
    remove_accidental_hits: bool = True,
    sparse: bool = False,
    softcap: Optional[float] = None,
) -> Tensor:
    """Per-row loss `tail.generic(sampled_logits(...))` (a `SoftmaxTail` or `LogisticTail`), the same values and
    gradients; for shared candidates on the CPU the product and the tail run fused in one (N, S) buffer
    (`_FusedSampledLoss`).

    Shape:
        -> (N,)
    """
    with autocast_off(hidden.device.type):
        return _sampled_logits(hidden, weight, bias, target, sample, subtract_log_q, remove_accidental_hits, sparse,
                               softcap, tail)


def _raw_sampled(h: Tensor, w_samp: Tensor, ids: Tensor, n: int, d: int, cdt, acc) -> Tensor:
    """h_i · w_s of the sampled ids: (N, S), shared ids (S,) by one product, per-example ids (N, S) by a batched one."""
    if ids.dim() == 2:
        return torch.bmm(w_samp.view(n, ids.shape[1], d).to(cdt), h.unsqueeze(2)).squeeze(2).to(acc)  # (N, S)
    return (h @ w_samp.to(cdt).t()).to(acc)  # (N, S)


def _sampled_logits(hidden, weight, bias, target, sample, subtract_log_q, remove_accidental_hits, sparse,
                    softcap=None, tail=None):
    """`sampled_logits`; with a `tail` (a loss's last line), that loss per row instead: fused with the product on
    the CPU (`_FusedSampledLoss`), else `tail.generic` of the logits."""
    n, n_true = target.shape
    ids = sample.ids
    per_example = ids.dim() == 2
    true_removed = target < 0  # (N, T)
    all_ids = torch.cat([target.clamp_min(0).reshape(-1), ids.clamp_min(0).reshape(-1)])  # (N*T + |ids|,)
    w_all, b_all = gather_rows(all_ids, weight, bias, sparse=sparse)  # (M, d), (M,)
    cdt = _matmul_dtype(hidden, weight)
    acc = _acc_dtype(cdt)
    h = hidden.to(cdt)
    n_t = n * n_true
    d = w_all.shape[1]  # (explicit: a view with -1 is ambiguous for an empty batch)
    # split, not two slices: its backward writes both gradients into one (M, d) block, where each slice's backward
    # fills a zero (M, d) block of its own and autograd adds the two
    w_true, w_samp = w_all.split([n_t, w_all.shape[0] - n_t])  # (N*T, d), (S, d) or (N*S, d)
    w_true = w_true.view(n, n_true, d)  # (N, T, d)
    if b_all is not None:
        b_true, b_samp = b_all.split([n_t, b_all.shape[0] - n_t])  # (N*T,), (S,) or (N*S,)
    true = (w_true * h.unsqueeze(1)).sum(-1).to(acc)  # (N, T)
    fused = not per_example and softcap is None and cdt == acc and not ids.is_cuda  # shared candidates, CPU
    if softcap is not None:  # cap the raw logits (bias inside), then correct: no fused product here
        samp = _raw_sampled(h, w_samp, ids, n, d, cdt, acc)  # (N, S)
        if b_all is not None:
            true = true + b_true.to(acc).view(n, n_true)
            samp = samp + b_samp.to(acc).view(ids.shape)
        true, samp = soft_cap(true, softcap), soft_cap(samp, softcap)
        if subtract_log_q:
            true = true - sample.log_q_true.to(acc)
            samp = samp - sample.log_q_sampled.to(acc)
    else:
        # per-column offsets of the sampled block: bias minus log expected count
        offset = torch.zeros((), dtype=acc, device=hidden.device)
        if b_all is not None:
            true = true + b_true.to(acc).view(n, n_true)
            offset = b_samp.to(acc).view(ids.shape)
        if subtract_log_q:
            true = true - sample.log_q_true.to(acc)
            offset = offset - sample.log_q_sampled.to(acc)
        if fused:
            pass  # the product is _SampledBlock's or _FusedSampledLoss's, below
        elif not per_example and cdt == acc:
            samp = torch.addmm(offset.expand(ids.shape), h, w_samp.to(cdt).t())  # (N, S) bias and correction fused in
        else:
            samp = _raw_sampled(h, w_samp, ids, n, d, cdt, acc) + offset  # (N, S)

    counts = getattr(sample, "counts", None)
    if fused:
        # shared candidates on the CPU: the product, the offsets and the removal in one node (see _SampledBlock)
        invalid = ids < 0  # (S,)
        rows, cols = _shared_hits(ids, target) if remove_accidental_hits else (None, None)
        removed = Removed(rows=rows, cols=cols, columns=invalid if bool(invalid.any()) else None)
        true = true.masked_fill(true_removed, mask_value(acc))
        if tail is not None and tail.fused and ids.numel():
            need_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (h, w_samp, offset, true))
            return _FusedSampledLoss.apply(h, w_samp.to(cdt), offset.expand(ids.shape), true, true_removed, removed,
                                           None if counts is None else counts.to(acc), tail, need_grad)  # (N,)
        samp = _SampledBlock.apply(h, w_samp.to(cdt), offset.expand(ids.shape), removed)  # (N, S)
        s = SampledLogits(true, samp, true_removed, removed, counts)
        return s if tail is None else tail.generic(s)
    if per_example:
        dense = ids < 0  # (N, S)
        if remove_accidental_hits:
            dense = dense | (ids.unsqueeze(-1) == target.unsqueeze(1)).any(-1)  # (N, S) padding (-1) never matches
        removed = Removed(dense=dense)
    elif ids.is_cuda:  # a broadcast compare: no host sync
        dense = (ids < 0).expand(n, -1)
        if remove_accidental_hits:
            dense = dense | ((ids.view(1, -1, 1) == target.unsqueeze(1)).any(-1) & (ids >= 0))
        removed = Removed(dense=dense)
    else:
        invalid = ids < 0  # (S,)
        rows, cols = _shared_hits(ids, target) if remove_accidental_hits else (None, None)
        removed = Removed(rows=rows, cols=cols, columns=invalid if bool(invalid.any()) else None)
    neg = mask_value(acc)
    samp = removed.fill_(samp, neg)  # in place on a fresh tensor: exp() of it is exactly 0, and so is its gradient
    true = true.masked_fill(true_removed, neg)
    s = SampledLogits(true, samp, true_removed, removed, counts)
    return s if tail is None else tail.generic(s)


class _SampledBlock(torch.autograd.Function):
    """samp = h @ w_sampᵀ + offset with the removed entries set to `mask_value`, as one autograd node.

    The same values as `addmm` followed by `Removed.fill_`, without what autograd does around them on a CPU: the
    fill's backward clones the whole (N, S) upstream gradient to zero a handful of entries, and each fresh (N, S)
    buffer costs its page faults. Here backward runs the two products on the upstream gradient as it comes and then
    takes the removed entries' contributions back out, O(K·d) for K hits, so no gradient flows through a removed
    entry, exactly as with the fill. (A whole removed column, an invalid id, is rare: that gradient is masked.)
    """

    @staticmethod
    def forward(ctx, h, w_samp, offset, removed):
        samp = torch.addmm(offset, h, w_samp.t())  # (N, S) offsets fused into the product
        removed.fill_(samp, mask_value(samp.dtype))
        ctx.removed = removed
        ctx.save_for_backward(h, w_samp)
        return samp

    @staticmethod
    def backward(ctx, g):  # g (N, S); plain differentiable ops: with create_graph=True they are differentiated again
        h, w_samp = ctx.saved_tensors
        removed = ctx.removed
        if removed.dense is not None or removed.columns is not None:
            g = removed.fill_(g.clone(), 0.0)  # every removed entry zeroed: nothing left to take out below
            removed = Removed()
        dh = g @ w_samp if ctx.needs_input_grad[0] else None  # (N, d)
        dw = g.t() @ h if ctx.needs_input_grad[1] else None  # (S, d)
        d_off = g.sum(0) if ctx.needs_input_grad[2] else None  # (S,)
        g_hit = None if removed.rows is None else g[removed.rows, removed.cols]  # (K,) what the products took
        # from removed entries: exactly 0 from the losses here (exp and sigmoid of the mask value are 0), so this
        # costs a check; a user's own function of the logits may send something there
        if g_hit is not None and bool(g_hit.any()):
            if dh is not None:
                dh = dh.index_add(0, removed.rows, w_samp.index_select(0, removed.cols) * g_hit[:, None], alpha=-1)
            if dw is not None:
                dw = dw.index_add(0, removed.cols, h.index_select(0, removed.rows) * g_hit[:, None], alpha=-1)
            if d_off is not None:
                d_off = d_off.index_add(0, removed.cols, g_hit, alpha=-1)
        return dh, dw, d_off, None


class SoftmaxTail:
    """Sampled softmax's last line: cross entropy over [true | sampled] with soft labels 1/T on the true columns."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = float(label_smoothing)
        self.fused = not self.label_smoothing  # label smoothing needs the dense removal mask: the generic path

    def labels(self, true_removed: Tensor, dtype) -> Tensor:
        keep = (~true_removed).to(dtype)
        return keep / keep.sum(1, keepdim=True).clamp_min(1)

    def generic(self, s: SampledLogits) -> Tensor:
        return candidate_softmax_cross_entropy(s, self.label_smoothing)

    @staticmethod
    def inplace(true: Tensor, z: Tensor, y: Tensor, counts: Optional[Tensor], need_grad: bool):
        """Loss (N,) and dloss/dtrue (N, T); z (N, S) is overwritten by dloss/dz (when need_grad)."""
        if counts is not None:
            z += counts.log()  # a class drawn k times counts k times
        lse_s = _softmax_rows_(z).unsqueeze(1)  # (N, 1); z is now the softmax over the sampled columns
        lse = torch.logaddexp(lse_s, torch.logsumexp(true, 1, keepdim=True))  # (N, 1)
        loss = lse.squeeze(1) - (y * true).sum(1)
        if not need_grad:
            return loss, None
        z.mul_((lse_s - lse).exp_())  # (N, S) softmax over all candidates
        return loss, (true - lse).exp_() - y


class LogisticTail:
    """NCE's and negative sampling's last line: Σ BCE(z, y) over the true columns (labels `y`) and the sampled ones
    (label 0, each weighted by its draw multiplicity). `per_true`: each positive its own label 1, else 1/T."""

    fused = True

    def __init__(self, per_true: bool):
        self.per_true = per_true

    def labels(self, true_removed: Tensor, dtype) -> Tensor:
        keep = (~true_removed).to(dtype)
        return keep if self.per_true else keep / keep.sum(1, keepdim=True).clamp_min(1)

    def generic(self, s: SampledLogits) -> Tensor:
        y = self.labels(s.true_removed, s.true.dtype)
        per_t = F.binary_cross_entropy_with_logits(s.true, y, reduction="none")  # (N, T)
        per_s = F.softplus(s.sampled)  # BCE(z, 0) = log(1 + e^z)  (N, S); removed: softplus(mask) = 0, no gradient
        if s.counts is not None:
            per_s = per_s * s.counts.to(per_s.dtype)
        return per_t.sum(1) + per_s.sum(1)

    @staticmethod
    def inplace(true: Tensor, z: Tensor, y: Tensor, counts: Optional[Tensor], need_grad: bool):
        """Loss (N,) and dloss/dtrue (N, T); z (N, S) is overwritten by σ(z) (times the multiplicities), dloss/dz.

        Σ_j softplus(z_j) = Σ_j max(z_j, 0) − Σ_j log max(σ_j, 1 − σ_j), the log taken once per 64 factors of a
        product (each in [1/2, 1]: no underflow): one exp pass (σ, which the gradient needs anyway) instead of
        softplus's exp and log1p, half the time. A term below the dtype's resolution next to 1 (|z| > 16.6 in
        float32) adds nothing, where softplus would add its e^−|z| < 6e-8.
        """
        loss = F.binary_cross_entropy_with_logits(true, y, reduction="none").sum(1)
        if counts is not None:  # weighted: softplus itself
            per_s = F.softplus(z)  # (N, S)
            loss += per_s @ counts
            del per_s
            torch.sigmoid(z, out=z)
        else:  # every pass writes into z or one reused buffer: a fresh (N, S) temporary costs its page faults
            m = _WORKSPACE.take(z.shape, z.dtype, z.device)  # (N, S)
            loss += torch.clamp(z, min=0, out=m).sum(1)
            torch.sigmoid(z, out=z)  # (N, S) in place
            torch.maximum(z, torch.mul(z, -1, out=m).add_(1), out=m)  # max(σ, 1 − σ) in [1/2, 1]
            n, s = m.shape
            whole = s - s % 64
            log_m = m[:, :whole].reshape(n, whole // 64, 64).prod(2).log_().sum(1)  # (N,)
            if whole < s:
                log_m += m[:, whole:].prod(1).log_()
            loss -= log_m
            _WORKSPACE.give(m)
        if not need_grad:
            return loss, None
        if counts is not None:
            z.mul_(counts)
        return loss, torch.sigmoid(true) - y


class _FusedSampledLoss(torch.autograd.Function):
    """A sampled loss per row from h, the gathered candidate rows and the true logits, in one (N, S) buffer.

    Forward: z = h @ w_sampᵀ + offset (offsets fused into the product), removed entries at `mask_value`, then the
    tail in place: the loss per row, and z overwritten by dloss/dz (softmax p, or σ(z)). The first backward scales
    that buffer by the upstream gradient in place and runs the two products on it, so the step allocates one (N, S)
    block instead of four (product, fill's gradient copy, softmax, scaled gradient) and makes no pass that only
    copies. The gradient at removed entries is exactly 0 (exp and σ of the mask value are 0). A second backward
    through a retained graph recomputes the block; a backward with create_graph=True differentiates the tail's plain
    formula (`tail.generic`) instead, so second derivatives are what they are without fusion.
    """

    @staticmethod
    def forward(ctx, h, w_samp, offset, true, true_removed, removed, counts, tail, need_grad):
        ctx.rest = (true_removed, removed, counts, tail)
        g_samp, loss, g_true = _FusedSampledLoss._block(h, w_samp, offset, true, *ctx.rest, need_grad)
        ctx.grads = (g_true, g_samp) if need_grad else None
        ctx.save_for_backward(h, w_samp, offset, true)  # references, read only to recompute
        return loss

    @staticmethod
    def _block(h, w_samp, offset, true, true_removed, removed, counts, tail, need_grad):
        z = _WORKSPACE.take((h.shape[0], w_samp.shape[0]), true.dtype, h.device)  # (N, S) reused step to step
        torch.addmm(offset, h, w_samp.t(), out=z)
        removed.fill_(z, mask_value(z.dtype))
        loss, g_true = tail.inplace(true, z, tail.labels(true_removed, true.dtype), counts, need_grad)
        if not need_grad:
            _WORKSPACE.give(z)
        return z, loss, g_true

    @staticmethod
    def backward(ctx, grad_loss):
        h, w_samp, offset, true = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the plain formula, differentiable again
            ctx.grads = None
            true_removed, removed, counts, tail = ctx.rest
            # aliases: the local derivative only (true depends on h upstream), still connected to the inputs' graph
            h, w_samp, offset, true = inputs = tuple(x.view_as(x) for x in (h, w_samp, offset, true))
            z = removed.fill_(torch.addmm(offset, h, w_samp.t()), mask_value(true.dtype))
            loss = tail.generic(SampledLogits(true, z, true_removed, removed, counts))
            wanted = [x for x, need in zip(inputs, ctx.needs_input_grad) if need]
            got = iter(torch.autograd.grad(loss, wanted, grad_loss, create_graph=True))
            return (*(next(got) if need else None for need in ctx.needs_input_grad[:4]), None, None, None, None, None)
        with torch.no_grad():
            if ctx.grads is None:  # a second backward through a retained graph
                g_samp, _, g_true = _FusedSampledLoss._block(h, w_samp, offset, true, *ctx.rest, True)
            else:
                (g_true, g_samp), ctx.grads = ctx.grads, None
            c = grad_loss.unsqueeze(1)  # (N, 1)
            g_samp.mul_(c)  # (N, S)
            dh = g_samp @ w_samp if ctx.needs_input_grad[0] else None  # (N, d)
            dw = g_samp.t() @ h if ctx.needs_input_grad[1] else None  # (S, d)
            d_off = g_samp.sum(0) if ctx.needs_input_grad[2] else None  # (S,)
            _WORKSPACE.give(g_samp)  # nothing references the block any more
            return dh, dw, d_off, g_true.mul_(c), None, None, None, None, None


def _shared_hits(ids: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Coordinates (rows, cols) where shared sampled id ids[col] equals one of row's true classes.

    ids (S,), target (N, T) with padding < 0. A broadcast compare would cost N·S·T (as much as the softmax itself on
    a CPU); the hits are found by binary search in the sorted ids instead: O((N·T + S) log S).
    """
    sorted_ids, order = ids.sort()  # (S,)
    flat = target.reshape(-1)  # (N*T,)
    lo = torch.searchsorted(sorted_ids, flat)  # (N*T,)
    hi = torch.searchsorted(sorted_ids, flat, right=True)
    cnt = torch.where(flat >= 0, hi - lo, 0)  # copies of each true class among the sampled ids
    total = int(cnt.sum())  # host read: the number of hits
    start = torch.repeat_interleave(lo, cnt, output_size=total)  # (K,)
    first = torch.repeat_interleave(torch.cumsum(cnt, 0) - cnt, cnt, output_size=total)  # (K,)
    cols = order[start + torch.arange(total, device=ids.device) - first]  # (K,)
    rows = torch.repeat_interleave(torch.arange(flat.numel(), device=ids.device) // target.shape[1], cnt, output_size=total)
    return rows, cols


def _candidate_softmax(true, samp, y_true, log_counts, keep_t, keep_s, eps, need_grad):
    """Per-row loss and, if need_grad, its gradients (p − y) with respect to the sampled and the true columns."""
    z = samp if log_counts is None else samp + log_counts  # a class drawn k times counts k times
    if z.shape[1]:
        # one fused row-wise pass gives softmax(z); log-sum-exp follows from its largest entry (>= 1/S, so
        # exact to rounding): lse = max_j z_ij − log max_j p_ij (the same j: softmax is monotone). amax is a
        # cheap vectorised read; torch.logsumexp would take four more passes over (N, S), and max-with-indices
        # costs as much as the softmax itself on a CPU.
        p = torch.softmax(z, 1)  # (N, S)
        lse_s = z.amax(1, keepdim=True) - p.amax(1, keepdim=True).log()  # (N, 1)
    else:  # no candidate (an empty in-batch sample): the true columns alone
        p = torch.empty_like(z)  # (N, 0)
        lse_s = z.new_full((z.shape[0], 1), -math.inf)
    lse = torch.logaddexp(lse_s, torch.logsumexp(true, 1, keepdim=True))  # (N, 1)
    y_t, smooth = y_true, 0.0
    if eps:  # the target spreads eps over the K_i non-removed draws (keep_s: each column's multiplicity)
        k = keep_t.sum(1, keepdim=True) + keep_s.sum(1, keepdim=True)  # (N, 1)
        y_t = (1 - eps) * y_true + eps * keep_t / k
        smooth = eps / k.squeeze(1) * (samp * keep_s).sum(1)  # (N,) each draw's logit once, as without dedup
    # loss_i = lse_i − Σ_c y_ic z_ic (y is 0 on removed columns, whose finite mask value then adds 0)
    loss = lse.squeeze(1) - (y_t * true).sum(1) - smooth
    if not need_grad:
        return loss, None, None
    p.mul_((lse_s - lse).exp_())  # (N, S) softmax over all candidates, true columns included
    if eps:
        p.sub_(eps * keep_s / k)
    return loss, p, (true - lse).exp_() - y_t


class _CandidateSoftmaxCE(torch.autograd.Function):
    """Per-row softmax cross entropy over the candidate columns [true | sampled] (removed ones hold `mask_value`).

    Row-wise fused kernels (softmax, amax) keep each row in cache, and the gradient with respect to the logits
    (p − y) is formed in forward; the first backward scales it in place by the upstream gradient and hands the
    buffer over (no second (N, S) allocation and pass); a second backward through a retained graph recomputes it
    from the saved logits. That gradient is a constant to autograd, so backward is marked once_differentiable:
    double backward raises a clear error instead of silently dropping the softmax's curvature.
    """

    @staticmethod
    def forward(ctx, true, samp, y_true, log_counts, keep_t, keep_s, label_smoothing, need_grad):
        loss, p, g_true = _candidate_softmax(true, samp, y_true, log_counts, keep_t, keep_s, label_smoothing,
                                             need_grad)
        if need_grad:
            ctx.grads = (g_true, p)
            ctx.args = (y_true, log_counts, keep_t, keep_s, label_smoothing)
            ctx.save_for_backward(true, samp)  # references to the inputs, read only to recompute
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        g = grad_loss.unsqueeze(1)  # (N, 1)
        if ctx.grads is None:  # a second backward through a retained graph
            true, samp = ctx.saved_tensors
            _, g_samp, g_true = _candidate_softmax(true, samp, *ctx.args, True)
        else:
            (g_true, g_samp), ctx.grads = ctx.grads, None
        return g_true.mul_(g), g_samp.mul_(g), None, None, None, None, None, None


def candidate_softmax_cross_entropy(s: SampledLogits, label_smoothing: float = 0.0) -> Tensor:
    """Per-row softmax cross entropy over the candidates of `s` with TF's soft labels (1/T on the true columns):

        loss_i = log Σ_{c not removed} mult_c · exp(z_ic) − Σ_c y_ic z_ic,

    mult_c the draw multiplicity (1 unless the sample was deduplicated). With label smoothing ε the target is
    (1 − ε) y + ε / K_i on each of the K_i non-removed draws: a deduplicated column drawn mult_c times gets
    mult_c · ε / K_i, so deduplication leaves the estimator unchanged. Equals
    `-(y * s.masked().log_softmax(1)).sum(1)` (without deduplication) without building the (N, T + S) matrix.

    Shape:
        -> (N,)
    """
    with autocast_off(s.sampled.device.type):
        counts = None if s.counts is None else s.counts.to(s.sampled.dtype)
        log_counts = None if counts is None else counts.log()
        need_grad = torch.is_grad_enabled() and (s.true.requires_grad or s.sampled.requires_grad)
        keep_t = keep_s = None
        if label_smoothing:
            keep_t, keep_s = (~s.true_removed).to(s.true.dtype), (~s.sampled_removed).to(s.true.dtype)
            if counts is not None:
                keep_s = keep_s * counts  # (N, S) draws per column
        return _CandidateSoftmaxCE.apply(
            s.true, s.sampled, s.labels, log_counts, keep_t, keep_s, float(label_smoothing), need_grad
        )
