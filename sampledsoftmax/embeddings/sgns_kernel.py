"""A compiled CPU step for skip-gram negative sampling with SGD (word2vec's SGNS), the per-pair loop in numba.

The torch step (`fused.py`) is one batched SGD step; its speed is capped by per-op overhead (~650k pairs/s/core).
Here the loop over pairs is compiled, as in word2vec.c and gensim: for every (center, context) pair, with
h = w_in[center] and the context (label 1) followed by K negatives (label 0), each against the CURRENT weights:

    z = h · w_out[o] + b[o]        g = η_i (label − σ(z))
    neu1e += g w_out[o]            w_out[o] += g h            b[o] += g        (the output row at once)
    ...after the K + 1 outputs:    w_in[center] += neu1e

η_i decays linearly over the batch's pairs, η_i = lr_start + (lr_end − lr_start) i / N, so a run decays smoothly as
word2vec's per-word alpha does. Collisions follow `NegativeSamplingLoss`: "skip" drops a negative equal to the
context, "keep" counts it, "resample" redraws it up to 64 times (then skips it, as the loss's mask does). `h` is
read once per pair (a copy), so a table tied between input and output behaves as in word2vec's own order. As in
word2vec, z and σ are float32 (exact `expf`, no EXP_TABLE, no clipping at |z| = 6); the rest of the rule is float32
with fused multiply-adds, η_i (label − σ) in float64. The loss, when asked for, is Σ max(∓z, 0) + log Π (1 + e^−|z|):
one log per pair, so it costs almost nothing.

Negatives are drawn inside the kernel from :class:`NoiseTable`, the loss's sampler's own float64 CDF, with the
sampler's inverse-CDF rule (``searchsorted(cdf, u, right=True)``, u in [0, 1) with 53 random bits), found in O(1)
through a guide table, so the distribution is exactly the sampler's. The random bits are splitmix64 of a per-pair
counter keyed by ``(seed, step)``: pair i's draws depend on (seed, step, i) only, never on the thread count or on
torch's generator, and a resumed run (same step) draws the same negatives.

Threads: `threads > 1` splits the batch into `threads` contiguous chunks run at once by plain threads (the kernels
release the GIL) on shared tables without locks (Hogwild, as word2vec and gensim): a row touched by two chunks at
once can lose an update, so results vary run to run. `threads == 1` or `deterministic=True` runs the pairs in order:
bit-identical run to run. (Not numba's `prange`: its OpenMP barrier spins, and collapses when other processes hold
the cores; see `_in_chunks`.)

API:
    available() -> (bool, str)                  numba importable? else the reason (the trainer prints it, falls back)
    NoiseTable.from_sampler(sampler)            from UnigramSampler (its cdf), UniformSampler, LogUniformSampler
    NoiseTable.from_cdf(cdf)                    from a (V,) normalised cumulative distribution
    noise.draw_negatives(contexts, K, collisions="skip", seed=0, step=0) -> (N, K) int64, -1 where skipped:
                                                exactly the negatives sgns_update draws
    sgns_update(w_in, w_out, bias, centers, contexts, *, lr_start, lr_end=None, noise=None, negatives=None,
                num_negatives=5, collisions="skip", seed=0, step=0, threads=1, deterministic=False,
                compute_loss=True) -> float
        The per-pair update, in place on float32 numpy arrays (or CPU torch tensors: `.numpy()` shares memory).
        Returns the batch's summed loss Σ_i [softplus(−z_i0) + Σ_k softplus(z_ik)] (float, each z taken just
        before its own update, as gensim's compute_loss) or nan when compute_loss=False.
        `negatives` (N, K) int64 instead of `noise`: use those (−1 = none); collisions then only skip or keep.
    kernel_sgns_step(model, loss_fn, centers, contexts, lr, scale, noise, *, lr_end=None, seed=0, step=0,
                     threads=1, deterministic=False, compute_loss=True) -> Tensor
        `fused_sgns_step`'s contract (returns the batch's mean loss, a 0-dim fp32 tensor) on the compiled loop.
    kernel_supports(model, loss_fn) -> (bool, str)   this loss/model on this kernel? else why not

HogBatch (Ji et al. 2016) is not implemented: it needs the pairs of one window next to each other, and our pair
stream shuffles them (see the note in scripts/bench_sgns_kernel.py).

Trainer, once: ``ok, why = kernel_supports(model, loss_fn)`` (after `can_fuse`); if not ok print `why` and keep
the torch step; else ``noise = NoiseTable.from_sampler(loss_fn.sampler)``. Per step, with lr and lr_next the
schedule's rates at this step and the next: ``loss = kernel_sgns_step(model, loss_fn, c, x, lr, scale, noise,
lr_end=lr_next, seed=cfg.train.seed, step=step, threads=...)``.

Compilation: the first call in a fresh cache compiles for ~4 s; the machine code is cached next to this file
(`cache=True`, or under NUMBA_CACHE_DIR), so later processes load it in ~0.5 s (numba's import included: ~1 s).
numba is imported on the first use, not when this module is imported.

Speed (scripts/bench_sgns_kernel.py, V = 30k, K = 5, 2 shared CPUs, measured under contention): one thread does
~2.2-2.8M pairs per CPU-second at d = 100 (gensim ~0.9M, the fused torch step ~0.4M), ~1M at d = 300.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np

from ..errors import InputError

__all__ = ["available", "NoiseTable", "sgns_update", "kernel_sgns_step", "kernel_supports"]

COLLISIONS = {"skip": 0, "keep": 1, "resample": 2}
_SKIP, _KEEP, _RESAMPLE = 0, 1, 2
RESAMPLE_ROUNDS = 64  # NegativeSamplingLoss.sample's bound
_LOOKAHEAD = 1  # pairs between a prefetch of rows and their use
MAX_GUIDE_BITS = 22  # guide table of at most 2**22 int64 entries (32 MB); beyond, a short binary search per bucket

_MASK64 = (1 << 64) - 1
_GOLDEN_INT = 0x9E3779B97F4A7C15
_GOLDEN = np.uint64(_GOLDEN_INT)  # splitmix64's increment
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TWO_M53 = 1.0 / 9007199254740992.0  # 2**-53
_KEY_TAG = 0x5347_4E53_4B45_524E  # "SGNSKERN": keeps these streams apart from other uses of (seed, step)


# ---- lazy numba: the kernels are plain functions here, compiled on the first call of _kernels() -------------------

_JIT: dict[str, dict] = {}  # name -> numba.njit options, in definition order (helpers before their callers)
_lock = threading.Lock()
_numba = None


def _jit(**options):
    def mark(fn):
        _JIT[fn.__name__] = options
        return fn
    return mark


def available() -> tuple[bool, str]:
    """Whether the compiled kernels can run here: (True, "numba X.Y") or (False, why not, in one line)."""
    try:
        import numba
    except ImportError as err:  # not installed, or installed against an incompatible numpy
        name = getattr(err, "name", None)
        why = "numba is not installed" if name == "numba" or "No module named" in str(err) else f"numba: {err}"
        return False, f"{why} (pip install numba); using the torch step"
    except Exception as err:  # noqa: BLE001 - a broken install (llvmlite, ...) must not break training
        return False, f"numba failed to import ({type(err).__name__}: {err}); using the torch step"
    return True, f"numba {numba.__version__}"


def _kernels():
    """Import numba and compile-wrap the kernels (once; thread-safe). Raises InputError if numba is unavailable."""
    global _numba
    if _numba is not None:
        return _numba
    with _lock:
        if _numba is None:
            ok, why = available()
            if not ok:
                raise InputError(why)
            import numba
            g = globals()
            g["_prefetch"] = _make_prefetch()
            for name, options in _JIT.items():
                g[name] = numba.njit(cache=True, nogil=True, **options)(g[name])
            _numba = numba
    return _numba


def _make_prefetch():
    """`_prefetch(w, row, col)`: LLVM's prefetch (for writing, keep in all cache levels) of &w[row, col]."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def _prefetch(typingctx, arr, row, col):
        def codegen(context, builder, signature, args):
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]], wraparound=False)
            i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                                "llvm.prefetch.p0i8")  # LLVM >= 15 remangles it for opaque pointers
            builder.call(fn, [builder.bitcast(ptr, i8p), i32(1), i32(3), i32(1)])
            return context.get_dummy_value()

        return types.void(arr, row, col), codegen

    return _prefetch


# ---- random bits and the noise draw -------------------------------------------------------------------------------


def _mix64_int(z: int) -> int:
    """splitmix64's finaliser on a Python int (the kernels' `_mix64`), for the per-batch key."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def batch_key(seed: int, step: int) -> int:
    """The 64-bit key of a batch's random streams: a function of (seed, step) only."""
    if int(seed) < 0 or int(step) < 0:
        raise InputError(f"seed and step must be >= 0, got seed={seed}, step={step}")
    return _mix64_int(_mix64_int(int(seed) ^ _KEY_TAG) + int(step) * _GOLDEN_INT)


@_jit(inline="always")
def _mix64(z):
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@_jit(inline="always")
def _lookup(cdf, guide, shift, bits):
    """The class of 53 random bits: the first i with cdf[i] > u, u = bits * 2**-53 (searchsorted right=True).

    guide[j] is that answer for u = j / m (m = 2**(53 - shift) buckets), so the answer for u in bucket j lies in
    [guide[j], guide[j + 1]] (clamped to V - 1, where cdf is 1 > u): a binary search over usually 1-2 entries.
    """
    u = np.float64(bits) * _TWO_M53
    j = np.int64(bits >> shift)
    lo = guide[j]
    hi = min(guide[j + 1], cdf.shape[0] - 1)
    while lo < hi:
        mid = (lo + hi) >> 1
        if cdf[mid] > u:
            hi = mid
        else:
            lo = mid + 1
    return lo


@_jit(inline="always")
def _negative(cdf, guide, shift, state, target, collisions):
    """The next negative of a pair's stream: (class, new state); with "resample", redrawn while it equals target."""
    state += _GOLDEN
    o = _lookup(cdf, guide, shift, _mix64(state) >> _S11)
    if collisions == _RESAMPLE:
        rounds = 0
        while o == target and rounds < RESAMPLE_ROUNDS:
            state += _GOLDEN
            o = _lookup(cdf, guide, shift, _mix64(state) >> _S11)
            rounds += 1
    return o, state


@_jit()
def _lookup_many(cdf, guide, shift, bits, out):
    for i in range(bits.shape[0]):
        out[i] = _lookup(cdf, guide, shift, bits[i])


@_jit()
def _draw_range(cdf, guide, shift, key, contexts, num_neg, collisions, out, lo, hi):
    for i in range(lo, hi):
        _pair_negatives(_NO_NEGS, num_neg, collisions, cdf, guide, shift, key, contexts[i], i, out, i)


# ---- the per-pair update ------------------------------------------------------------------------------------------


@_jit(fastmath={"reassoc", "contract"})  # not inline="always": numba's IR inlining would drop these flags
def _dot(h, w, row):
    """h · w[row] in float32; reassociation lets LLVM vectorise the sum (a fixed order for a given build: the
    result does not vary run to run). The only reassociating code; `_pair_range` only fuses multiply-adds."""
    s = np.float32(0.0)
    for j in range(h.shape[0]):
        s += h[j] * w[row, j]
    return s


@_jit()
def _prefetch_row(w, row):
    """Ask for every cache line of w[row] (16 float32 each) without waiting for it."""
    for j in range(0, w.shape[1], 16):
        _prefetch(w, row, j)


@_jit()
def _pair_negatives(negs, num_neg, collisions, cdf, guide, shift, key, t, i, out, slot):
    """Pair i's negatives (context t) into out[slot] (K,): given or drawn, -1 where one is dropped.
    (Row views such as out[slot] would cost a reference count each: everything here indexes in 2-D.)"""
    if negs.shape[0] > 0:
        for k in range(num_neg):
            o = negs[i, k]
            out[slot, k] = -1 if (o < 0 or (o == t and collisions != _KEEP)) else o
    else:
        state = _mix64(key + np.uint64(i) * _GOLDEN)
        for k in range(num_neg):
            o, state = _negative(cdf, guide, shift, state, t, collisions)
            out[slot, k] = -1 if (o == t and collisions != _KEEP) else o


@_jit(fastmath={"contract"})  # fused multiply-adds, as BLAS's saxpy; no other liberty
def _pair_range(w_in, w_out, bias, centers, contexts, negs, num_neg, collisions, cdf, guide, shift, key,
                lr0, dlr, want_loss, lo, hi, h, neu1e, ring):
    """Pairs lo..hi-1 in order (word2vec's rule, see the module docstring). Returns their summed loss.

    The rows of pair i + LOOKAHEAD are prefetched while pair i is computed (its negatives drawn ahead into
    `ring`, (4, K)): at V = 30k, d = 100 the tables (24 MB) live in L3 or DRAM, and waiting for rows took ~40% of
    a pair's time (670 vs 340 ns/pair with V = 500); with the prefetch ~520 ns (all measured under contention).
    """
    has_bias = bias.shape[0] > 0
    d = w_in.shape[1]
    total = 0.0
    for i in range(lo, min(lo + _LOOKAHEAD, hi)):
        _pair_negatives(negs, num_neg, collisions, cdf, guide, shift, key, contexts[i], i, ring, i & 3)
    for i in range(lo, hi):
        a = i + _LOOKAHEAD
        if a < hi:
            _pair_negatives(negs, num_neg, collisions, cdf, guide, shift, key, contexts[a], a, ring, a & 3)
            _prefetch_row(w_in, centers[a])
            _prefetch_row(w_out, contexts[a])
            for k in range(num_neg):
                if ring[a & 3, k] >= 0:
                    _prefetch_row(w_out, ring[a & 3, k])
        c = centers[i]
        t = contexts[i]
        slot = i & 3
        eta = lr0 + dlr * i
        for j in range(d):
            h[j] = w_in[c, j]
            neu1e[j] = 0.0
        prod = 1.0  # Π (1 + e) over the pair's outputs: one log per pair instead of a log1p per logit
        for k in range(num_neg + 1):
            label = 1.0 if k == 0 else 0.0
            o = t if k == 0 else ring[slot, k - 1]
            if o < 0:
                continue
            z = _dot(h, w_out, o)  # float32, as word2vec
            if has_bias:
                z += bias[o]
            e = math.exp(-abs(z))  # float32: σ and softplus from one exp, stable for any z
            sig = np.float32(1.0) / (np.float32(1.0) + e) if z >= 0 else e / (np.float32(1.0) + e)
            if want_loss:  # −log σ(z) = max(−z, 0) + log1p(e) (context), −log σ(−z) = max(z, 0) + log1p(e)
                total += np.float64(max(-z, np.float32(0.0)) if label > 0 else max(z, np.float32(0.0)))
                prod *= 1.0 + np.float64(e)
                if prod > 1e300:  # K > ~1000 outputs of e ~ 1
                    total += math.log(prod)
                    prod = 1.0
            g = np.float32(eta * (label - np.float64(sig)))
            for j in range(d):  # neu1e takes the row before its update; then the row moves at once
                wj = w_out[o, j]
                neu1e[j] += g * wj
                w_out[o, j] = wj + g * h[j]
            if has_bias:
                bias[o] += g
        for j in range(d):
            w_in[c, j] += neu1e[j]
        if want_loss:
            total += math.log(prod)
    return total


@_jit()
def _update_chunk(w_in, w_out, bias, centers, contexts, negs, num_neg, collisions, cdf, guide, shift, key,
                  lr0, dlr, want_loss, lo, hi):
    """Pairs lo..hi-1 with their own scratch rows: one chunk, run by one thread (nogil)."""
    d = w_in.shape[1]
    h = np.empty(d, np.float32)
    neu1e = np.empty(d, np.float32)
    ring = np.empty((4, num_neg), np.int64)
    return _pair_range(w_in, w_out, bias, centers, contexts, negs, num_neg, collisions, cdf, guide, shift, key,
                       lr0, dlr, want_loss, lo, hi, h, neu1e, ring)


# ---- the noise distribution ---------------------------------------------------------------------------------------


class NoiseTable:
    """The negatives' distribution as the kernels draw it: a float64 CDF and its guide table.

    Attributes:
        cdf: float64 (V,), non-decreasing, cdf[-1] == 1.0: P(class <= i).
        guide: int64 (m + 1,), m = 2**bits: guide[j] = searchsorted(cdf, j / m, right=True).
    """

    def __init__(self, cdf: np.ndarray):
        cdf = np.array(cdf, dtype=np.float64, copy=True).reshape(-1)  # (V,)
        if cdf.size == 0 or not np.all(np.isfinite(cdf)) or not abs(cdf[-1] - 1.0) <= 1e-9:
            raise InputError("cdf must be a non-empty, finite (V,) array ending at 1.0 (a normalised distribution)")
        # a sampler's cumsum / total can round a little above 1 before its last entry, which it sets to exactly 1
        # (trailing zero-weight classes): clipping those to 1 changes no draw (u < 1), and makes the table monotone
        np.minimum(cdf, 1.0, out=cdf)
        cdf[-1] = 1.0
        if cdf[0] < 0 or np.any(np.diff(cdf) < 0):
            raise InputError("cdf must be non-decreasing and start at >= 0")
        bits = min(max(int(math.ceil(math.log2(cdf.size))), 1), MAX_GUIDE_BITS)
        m = 1 << bits
        self.cdf = cdf
        self.guide = np.searchsorted(cdf, np.arange(m + 1, dtype=np.float64) / m, side="right").astype(np.int64)
        self.shift = np.uint64(53 - bits)

    @property
    def num_classes(self) -> int:
        return int(self.cdf.size)

    @property
    def probs(self) -> np.ndarray:
        """float64 (V,): the probability of each class."""
        return np.diff(self.cdf, prepend=0.0)

    @classmethod
    def from_cdf(cls, cdf) -> "NoiseTable":
        return cls(np.asarray(cdf, dtype=np.float64))

    @classmethod
    def from_sampler(cls, sampler) -> "NoiseTable":
        """The distribution a `CandidateSampler` draws from (the loss's `loss_fn.sampler`).

        UnigramSampler: its own `cdf` buffer, the very table its inverse-CDF draw searches. UniformSampler and
        LogUniformSampler: their closed-form CDFs (the same distribution; torch maps u to ids by another formula).
        A learned or in-batch sampler changes with the targets it sees, which the kernel does not feed it: refused.
        """
        from ..samplers import LogUniformSampler, UniformSampler, UnigramSampler

        if getattr(sampler, "unique", False) is not False:
            raise InputError(f"the kernel draws with replacement; the sampler has unique={sampler.unique!r}")
        v = int(sampler.num_classes)
        if type(sampler) is UnigramSampler:
            return cls(sampler.cdf.detach().to("cpu", dtype=sampler.cdf.dtype).numpy())
        if type(sampler) is UniformSampler:
            return cls(np.arange(1, v + 1, dtype=np.float64) / v)
        if type(sampler) is LogUniformSampler:  # P(k <= i) = log(i + 2) / log(V + 1)
            return cls(np.log1p(np.arange(1, v + 1, dtype=np.float64)) / math.log1p(v))
        raise InputError(f"the SGNS kernel draws from unigram, uniform or log_uniform samplers, not "
                         f"{type(sampler).__name__}")

    def lookup(self, u) -> np.ndarray:
        """The class of each uniform u in [0, 1) with 53-bit resolution (the kernel's rule): int64, u's shape."""
        _kernels()
        u = np.asarray(u, dtype=np.float64)
        if u.size and not (u.min() >= 0.0 and u.max() < 1.0):
            raise InputError("u must lie in [0, 1)")
        bits = np.floor(u.reshape(-1) * 9007199254740992.0).astype(np.uint64)  # exact for 53-bit u
        out = np.empty(bits.shape, np.int64)
        _lookup_many(self.cdf, self.guide, self.shift, bits, out)
        return out.reshape(u.shape)

    def draw_negatives(self, contexts, num_negatives: int, collisions: str = "skip", seed: int = 0, step: int = 0,
                       threads: int = 1) -> np.ndarray:
        """The (N, K) int64 negatives `sgns_update(..., noise=self, seed=seed, step=step)` draws for these contexts
        (resample rounds applied); -1 where a negative equals its context and is skipped ("skip", or "resample"
        after 64 rounds). The same for any `threads`."""
        _kernels()
        code = _collisions_code(collisions)
        contexts = _index_vector(contexts, "contexts", self.num_classes)
        k = _positive_int(num_negatives, "num_negatives")
        out = np.empty((contexts.shape[0], k), np.int64)  # (N, K)
        key = np.uint64(batch_key(seed, step))
        _in_chunks(_draw_range, (self.cdf, self.guide, self.shift, key, contexts, k, code, out),
                   _num_chunks(threads, contexts.shape[0]), contexts.shape[0])
        return out


# ---- the public step ----------------------------------------------------------------------------------------------


def _collisions_code(collisions: str) -> int:
    if collisions not in COLLISIONS:
        raise InputError(f"collisions must be one of {tuple(COLLISIONS)}, got {collisions!r}")
    return COLLISIONS[collisions]


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _as_array(x, name: str, dtype, ndim: int, writable: bool) -> np.ndarray:
    """A numpy view of x (a CPU torch tensor shares memory); tables must be updatable in place."""
    if hasattr(x, "detach") and hasattr(x, "numpy"):
        if x.device.type != "cpu":
            raise InputError(f"{name} is on {x.device}: the SGNS kernel runs on CPU tensors")
        x = x.detach().numpy()
    if writable:
        if not isinstance(x, np.ndarray) or x.dtype != dtype or x.ndim != ndim or not x.flags.c_contiguous \
                or not x.flags.writeable:
            raise InputError(f"{name} must be a writable C-contiguous {np.dtype(dtype).name} array of {ndim} "
                             f"dimensions, updated in place (got {getattr(x, 'dtype', type(x))} "
                             f"{getattr(x, 'shape', '')})")
        return x
    x = np.ascontiguousarray(x, dtype=dtype)
    if x.ndim != ndim:
        raise InputError(f"{name} must have {ndim} dimension(s), got shape {x.shape}")
    return x


def _index_vector(x, name: str, bound: int) -> np.ndarray:
    x = _as_array(x, name, np.int64, 1, writable=False)  # (N,)
    if x.size and (int(x.min()) < 0 or int(x.max()) >= bound):
        raise InputError(f"{name} must lie in [0, {bound}), got [{int(x.min())}, {int(x.max())}]")
    return x


def _num_chunks(threads: Optional[int], n: int) -> int:
    if threads is None:
        t = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    else:
        t = _positive_int(threads, "threads")
    return max(1, min(t, n // 64))  # below 64 pairs per chunk, a thread costs more than it gives


_pool: Optional[ThreadPoolExecutor] = None
_pool_size = 0


def _forget_pool() -> None:  # a forked child has the executor object but none of its threads
    global _pool, _pool_size
    _pool, _pool_size = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _in_chunks(kernel, args: tuple, nchunks: int, n: int) -> Optional[float]:
    """kernel(*args, lo, hi) over `nchunks` contiguous chunks of range(n): the calling thread runs the first, pool
    threads the others, at once (the kernels release the GIL). Returns the sum of the chunks' results, in order.

    Plain threads that block while they wait, not numba's OpenMP `prange`: on a machine where other processes hold
    the cores, OpenMP's spinning barrier made a 2-thread 1024-pair step up to 50x slower than 1 thread (measured);
    these threads cost ~20 us per batch and degrade to the 1-thread speed instead."""
    global _pool, _pool_size
    if nchunks == 1:
        return kernel(*args, 0, n)
    with _lock:
        if _pool is None or _pool_size < nchunks - 1:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(nchunks - 1, thread_name_prefix="sgns"), nchunks - 1
        pool = _pool
    futures = [pool.submit(kernel, *args, c * n // nchunks, (c + 1) * n // nchunks) for c in range(1, nchunks)]
    results = [kernel(*args, 0, n // nchunks)] + [f.result() for f in futures]
    return None if results[0] is None else sum(results)


_NO_NEGS = np.zeros((0, 0), np.int64)
_NO_BIAS = np.zeros(0, np.float32)
_NO_CDF, _NO_GUIDE = np.ones(1), np.zeros(2, np.int64)


def sgns_update(w_in, w_out, bias, centers, contexts, *, lr_start: float, lr_end: Optional[float] = None,
                noise: Optional[NoiseTable] = None, negatives=None, num_negatives: int = 5, collisions: str = "skip",
                seed: int = 0, step: int = 0, threads: Optional[int] = 1, deterministic: bool = False,
                compute_loss: bool = True) -> float:
    """word2vec's per-pair SGNS update of one batch, in place (see the module docstring for the rule).

    Args:
        w_in: float32 (V_in, d) input table (rows = centers); w_out: float32 (V, d) output table; bias: float32 (V,)
            output bias or None. numpy arrays or CPU torch tensors, C-contiguous: they are updated in place.
        centers, contexts: int (N,) pair ids (copied to int64 if needed; bounds are checked).
        lr_start, lr_end: the per-pair rate of pair 0 and the one pair N would have (linear in between); lr_end
            None: constant.
        noise: where to draw the negatives from, or `negatives`: int (N, K) precomputed ids (-1: none).
        num_negatives: K when drawing. collisions: "skip", "keep" or "resample" (a given negative equal to its
            context is skipped unless "keep").
        seed, step: the key of the draws (pair i's negatives depend on seed, step and i only).
        threads: chunks run at once (Hogwild); None: the CPUs this process may use. deterministic: in order.
        compute_loss: also return the summed loss (nearly free: one log per pair); else nan.

    Returns:
        The batch's summed SGNS loss (float), each logit taken just before its own update.

    Shape:
        w_in (V_in, d), w_out (V, d), bias (V,), centers (N,), contexts (N,), negatives (N, K) -> float
    """
    _kernels()
    w_in = _as_array(w_in, "w_in", np.float32, 2, writable=True)
    w_out = _as_array(w_out, "w_out", np.float32, 2, writable=True)
    v = w_out.shape[0]
    if w_in.shape[1] != w_out.shape[1]:
        raise InputError(f"w_in {w_in.shape} and w_out {w_out.shape} must have the same dimension")
    b = _NO_BIAS if bias is None else _as_array(bias, "bias", np.float32, 1, writable=True)
    if bias is not None and b.shape[0] != v:
        raise InputError(f"bias has {b.shape[0]} entries, w_out has {v} rows")
    centers = _index_vector(centers, "centers", w_in.shape[0])
    contexts = _index_vector(contexts, "contexts", v)
    n = centers.shape[0]
    if contexts.shape[0] != n:
        raise InputError(f"centers ({n},) and contexts ({contexts.shape[0]},) must have the same length")
    code = _collisions_code(collisions)
    if (noise is None) == (negatives is None):
        raise InputError("pass exactly one of noise (draw the negatives) or negatives (use these)")
    if negatives is not None:
        negs = _as_array(negatives, "negatives", np.int64, 2, writable=False)  # (N, K)
        if negs.shape[0] != n:
            raise InputError(f"negatives has {negs.shape[0]} rows for {n} pairs")
        if negs.size and (int(negs.min()) < -1 or int(negs.max()) >= v):
            raise InputError(f"negatives must lie in [-1, {v})")
        k, cdf, guide, shift = negs.shape[1], _NO_CDF, _NO_GUIDE, np.uint64(53)
        if n == 0 or k == 0:
            negs = np.full((max(n, 1), k), -1, np.int64)  # keep "given" (shape[0] > 0) even when empty
    else:
        if noise.num_classes != v:
            raise InputError(f"the noise table covers {noise.num_classes} classes, w_out has {v} rows")
        negs, k, cdf, guide, shift = _NO_NEGS, _positive_int(num_negatives, "num_negatives"), noise.cdf, \
            noise.guide, noise.shift
    if n == 0:
        return 0.0 if compute_loss else math.nan
    lr0 = float(lr_start)
    dlr = 0.0 if lr_end is None else (float(lr_end) - lr0) / n
    key = np.uint64(batch_key(seed, step))
    args = (w_in, w_out, b, centers, contexts, negs, k, code, cdf, guide, shift, key, lr0, dlr, bool(compute_loss))
    total = _in_chunks(_update_chunk, args, 1 if deterministic else _num_chunks(threads, n), n)
    return float(total) if compute_loss else math.nan


# ---- the trainer's view -------------------------------------------------------------------------------------------


def kernel_supports(model, loss_fn) -> tuple[bool, str]:
    """Whether `kernel_sgns_step` can run this model and loss: (True, "") or (False, one line saying why not).

    Needs numba; `NegativeSamplingLoss` with per-example negatives from a unigram, uniform or log-uniform sampler
    (with replacement); fp32 C-contiguous CPU tables. The rest of `can_fuse`'s conditions (SGD, no bf16, mean
    reduction, no label smoothing) are the caller's: check `can_fuse(cfg, model, loss_fn)` first.
    """
    import torch

    from ..losses import NegativeSamplingLoss
    from ..samplers import LogUniformSampler, UniformSampler, UnigramSampler

    ok, why = available()
    if not ok:
        return False, why
    if not isinstance(loss_fn, NegativeSamplingLoss) or loss_fn.shared:
        return False, "the SGNS kernel needs NegativeSamplingLoss with per-example negatives (shared=False)"
    if type(loss_fn.sampler) not in (UnigramSampler, UniformSampler, LogUniformSampler) \
            or getattr(loss_fn.sampler, "unique", False) is not False:
        return False, (f"the SGNS kernel draws with replacement from unigram, uniform or log_uniform samplers, not "
                       f"{type(loss_fn.sampler).__name__}(unique={getattr(loss_fn.sampler, 'unique', None)!r})")
    embed = getattr(model, "embed", None)
    if not isinstance(embed, torch.nn.Embedding) or embed.max_norm is not None:
        return False, "the SGNS kernel needs model.embed, an nn.Embedding without max_norm"
    tables = [embed.weight, loss_fn.weight] + ([] if loss_fn.bias is None else [loss_fn.bias])
    for t in tables:
        if t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous():
            return False, f"the SGNS kernel needs fp32 contiguous CPU tables (got {t.dtype} on {t.device})"
    return True, ""


def kernel_sgns_step(model, loss_fn, centers, contexts, lr: float, scale: float, noise: NoiseTable, *,
                     lr_end: Optional[float] = None, seed: int = 0, step: int = 0, threads: Optional[int] = 1,
                     deterministic: bool = False, compute_loss: bool = True):
    """`fused_sgns_step`'s SGD step of `loss_fn(model(centers), contexts) * scale` at rate `lr`, as word2vec's
    per-pair loop: each pair's rate is η = lr · scale / N (decaying to lr_end · scale / N across the batch), and
    each pair sees the updates of the pairs before it. Negatives come from `noise` keyed by (seed, step), not from
    `loss_fn.generator` (which is left untouched). Returns the batch's mean loss, a 0-dim fp32 tensor (nan when
    compute_loss=False).

    Shape:
        centers (N,), contexts (N,) int64 -> ()
    """
    import torch

    n = len(centers)
    per_pair = float(scale) / max(n, 1)
    total = sgns_update(
        model.embed.weight, loss_fn.weight, loss_fn.bias, centers, contexts,
        lr_start=lr * per_pair, lr_end=None if lr_end is None else lr_end * per_pair, noise=noise,
        num_negatives=loss_fn.num_sampled, collisions=loss_fn.collisions, seed=seed, step=step, threads=threads,
        deterministic=deterministic, compute_loss=compute_loss)
    return torch.tensor(total / max(n, 1), dtype=torch.float32)
