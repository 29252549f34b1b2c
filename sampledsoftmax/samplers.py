"""Candidate samplers: which classes a sampled loss looks at, and how likely each one was to be picked.

A sampler returns a :class:`CandidateSample`: the sampled class ids and the **log expected count** of every true and
sampled class in this sample. A sampled loss subtracts those from the logits (the "logQ correction") so that the
sampled objective estimates the full softmax. The semantics follow TensorFlow's candidate samplers
(``tf.random.*_candidate_sampler``); the code is our own.

The ``unique`` option says how duplicates among the ``S`` draws are handled:

- ``unique=False`` (the default): ``S`` i.i.d. draws with replacement; the expected count of class ``c`` is exactly
  ``S * q(c)``. It is the default because that correction is exact, the output shapes are static, and nothing needs
  the host: on a GPU there is no synchronisation in the sampler.
- ``unique="multiplicity"``: the same ``S`` draws with replacement, deduplicated: ``ids`` are the ``U`` distinct ids
  and ``counts`` their multiplicities. A loss that adds ``log(counts)`` to the sampled logits (softmax) or weights the
  columns by ``counts`` (logistic losses) computes exactly the with-replacement estimator while touching only ``U``
  rows. This is the exact way to deduplicate, and it pays off for Zipfian (unigram, log-uniform) samplers, where
  duplicates are frequent. ``U`` depends on the draw, so it costs one host sync on a GPU.
- ``unique=True`` (alias ``"tf"``): TensorFlow's sampling without replacement: draw with replacement until ``S``
  distinct ids are found. The expected count used is TF's ``1 - (1 - q)**num_tries``, an approximation (see
  :func:`expected_count_unique`). Use it to reproduce TensorFlow.

All randomness comes from the ``torch.Generator`` passed in (``None``: torch's default generator). Probability tables
are buffers, so ``sampler.to(device)`` moves them; they keep their float64/float32 dtypes under ``.half()`` or
``.to(dtype)``, because a float16 cumulative table would be useless. The ``probs`` table is float32 by default (the
CDF is always float64); ``probs_dtype=torch.float64`` keeps it in float64 for float64 losses.

Log expected counts are computed in float64 and returned in the ``dtype`` asked of ``forward`` (float32 by default);
the losses ask for their own compute dtype, so a float64 loss gets float64 ``log_q``.

Every sampler works for more than ``2**24`` classes (where ``torch.multinomial`` does not) and on the GPU: table
samplers draw by inverse CDF with ``torch.searchsorted``.

Target ids below 0 are padding / ignored labels: they get ``log_q_true = 0.0``, are never drawn from and never update
learned state. Target ids must be below ``num_classes``; the losses check that, the sampler does not (it would cost a
host sync on a GPU).
"""

from __future__ import annotations

import inspect
import math
import operator
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .errors import InputError, did_you_mean

__all__ = [
    "CandidateSample",
    "CandidateSampler",
    "UniformSampler",
    "LogUniformSampler",
    "UnigramSampler",
    "LearnedUnigramSampler",
    "AllClassesSampler",
    "InBatchSampler",
    "SAMPLERS",
    "build_sampler",
    "expected_count_unique",
]

Device = Union[torch.device, str, None]
UniqueMode = Union[bool, str]


@dataclass
class CandidateSample:
    """The output of a sampler.

    Attributes:
        ids: int64 sampled class ids: ``(S,)`` one set shared by the batch, or ``(N, S)`` one set per example.
        log_q_true: float ``(N, T)``: log expected count of each true class in this sample (0.0 for padding).
        log_q_sampled: float, same shape as ``ids``: log expected count of each sampled id.
        counts: float, same shape as ``ids``; only for ``unique="multiplicity"``: how often each id was drawn.

    The float fields are float32 unless another ``dtype`` was asked of the sampler (a float64 loss asks float64).
    """

    ids: Tensor
    log_q_true: Tensor
    log_q_sampled: Tensor
    counts: Optional[Tensor] = None

    def to(self, device: Device) -> "CandidateSample":
        """Return a copy with every tensor on ``device``."""
        return replace(
            self,
            ids=self.ids.to(device),
            log_q_true=self.log_q_true.to(device),
            log_q_sampled=self.log_q_sampled.to(device),
            counts=None if self.counts is None else self.counts.to(device),
        )


def expected_count_unique(prob: Tensor, num_tries: Union[int, Tensor], num_samples: Optional[int] = None) -> Tensor:
    """TensorFlow's expected count of a class under sampling without replacement: ``1 - (1 - q)**num_tries``.

    ``num_tries`` is the number of draws with replacement it took to find the ``S`` distinct ids. The formula is the
    exact probability that class ``c`` shows up in a *fixed* number of draws; it is an approximation here because
    ``num_tries`` is itself random (a stopping time), and it is off most when ``S`` is close to the number of classes.
    Computed in float64 as ``-expm1(num_tries * log1p(-q))`` so that it stays accurate for tiny ``q``.

    When the draws held no duplicate (``num_tries == num_samples``) TensorFlow reports ``num_samples * q``
    instead (its ExpectedCountHelper shortcut); pass ``num_samples`` to reproduce that.

    Shape:
        prob: any shape (float); output: float64, same shape.
    """
    q = prob.to(torch.float64)
    if num_samples is not None and int(num_tries) == int(num_samples):
        return q * num_samples
    return -torch.expm1(num_tries * torch.log1p(-q))


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool):
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise InputError(f"{name} must be a positive integer, got {value!r}") from None
    if value < 1:
        raise InputError(f"{name} must be a positive integer, got {value}")
    return value


def _check_unique(unique) -> UniqueMode:
    if unique is False or unique is True:
        return unique
    if unique == "tf":
        return True
    if unique == "multiplicity":
        return "multiplicity"
    choices = ["False", "True", "tf", "multiplicity"]
    raise InputError(
        f"unique must be one of False, True (alias \"tf\") or \"multiplicity\", got {unique!r}"
        + did_you_mean(str(unique), choices)
    )


def _check_finite(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a finite number, got {value!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value}")
    return value


def _as_float64_vector(values, name: str) -> Tensor:
    """A 1-D float64 CPU copy of a tensor or sequence of non-negative finite numbers with a positive sum."""
    try:
        t = torch.as_tensor(values).detach().to(device="cpu", dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"{name} must be a 1-D tensor or list of numbers: {err}") from None
    if t.dim() != 1 or t.numel() == 0:
        raise InputError(f"{name} must be a non-empty 1-D tensor or list, got shape {tuple(t.shape)}")
    if bool((t < 0).any()):
        raise InputError(f"{name} must be non-negative (found {t.min().item():g})")
    total = float(t.sum())  # nan or inf iff some entry is (or the sum overflows): one pass instead of isfinite
    if not math.isfinite(total):
        raise InputError(f"{name} must be finite (found inf or nan, or a sum that overflows float64)")
    if total <= 0:
        raise InputError(f"{name} are all zero: at least one class needs a positive count")
    return t


def _check_float_dtype(dtype, name: str) -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise InputError(f"{name} must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def _table_from_weights(weights: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """(probs in `dtype`, normalised cdf float64) from non-negative float64 weights with a positive sum.

    The cdf is divided by the total, so its last entry is exactly 1.0 and ``u < 1`` never runs off the end; a class
    with zero weight has ``cdf[c] == cdf[c - 1]`` and can never be drawn.
    """
    total = weights.sum()
    probs = torch.empty(weights.shape, dtype=dtype, device=weights.device)  # (V,)
    torch.div(weights, total, out=probs)  # straight into the table's dtype: no (V,) float64 temporary
    cdf = torch.cumsum(weights, 0).div_(total)  # (V,) float64
    cdf[-1] = 1.0  # exactly, whatever the rounding of the sum
    return probs, cdf


class CandidateSampler(torch.nn.Module):
    """Base class: a distribution ``q`` over ``num_classes`` classes and the logic that turns draws into a sample.

    Subclasses implement ``_log_prob64(ids)`` (float64 log q of one draw) and ``_draw(num_draws, generator, device)``.

    Args:
        num_classes: V, the number of classes.
        unique: ``False`` (default, with replacement), ``True``/``"tf"`` (TF's without-replacement sampling) or
            ``"multiplicity"`` (with replacement, deduplicated, with counts). See the module docstring.

    Shape:
        target: ``(N, T)`` or ``(N,)`` int64 (negative = padding); ``ids``: ``(S,)``, ``(U,)`` for
        ``"multiplicity"``, or ``(N, S)`` with ``per_example=True``; ``log_q_true``: ``(N, T)``.
    """

    def __init__(self, num_classes: int, *, unique: UniqueMode = False):
        super().__init__()
        self.num_classes = _check_positive_int(num_classes, "num_classes")
        self.unique = _check_unique(unique)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, unique={self.unique!r}"

    # ---- to implement --------------------------------------------------------------------------------------------

    def _log_prob64(self, ids: Tensor) -> Tensor:
        raise NotImplementedError

    def _draw(self, num_draws: int, generator: Optional[torch.Generator], device: torch.device) -> Tensor:
        raise NotImplementedError

    def _observe(self, target: Tensor, valid: Tensor) -> None:
        """Update learned state from the batch's targets (training mode only). Default: nothing to learn."""

    def _num_positive_classes(self) -> int:
        """How many classes have q > 0 (bounds num_samples for unique=True)."""
        return self.num_classes

    # ---- public API ----------------------------------------------------------------------------------------------

    def log_prob(self, ids: Tensor) -> Tensor:
        """log q(id) of one draw, float32, same shape as ``ids`` (computed in float64)."""
        return self._log_prob64(ids).to(torch.float32)

    def draw(self, num_draws: int, generator: Optional[torch.Generator] = None, device: Device = None) -> Tensor:
        """``num_draws`` i.i.d. draws from q: int64 ``(num_draws,)``.

        ``device`` defaults to the device of the sampler's tables, or of ``generator`` for samplers without tables.
        """
        num_draws = _check_positive_int(num_draws, "num_draws")
        device = self._resolve_device(device, generator)
        return self._draw(num_draws, generator, device)

    def draw_unique(
        self, num_unique: int, generator: Optional[torch.Generator] = None, device: Device = None
    ) -> tuple[Tensor, int]:
        """TF-style sampling without replacement: draw with replacement until ``num_unique`` distinct ids are seen.

        Returns ``(ids, num_tries)``: the distinct ids in the order first drawn, int64 ``(num_unique,)``, and the
        total number of draws it took (the draw that found the last new id included). Draws come in batches of at
        least ``2 * num_unique``; first occurrences are found with ``torch.unique`` + ``scatter_reduce``, so the loop
        only repeats while fewer than ``num_unique`` distinct ids have turned up. One host sync per batch.
        """
        num_unique = _check_positive_int(num_unique, "num_samples")
        available = self._num_positive_classes()
        if num_unique > available:
            raise InputError(
                f"num_samples={num_unique} with unique=True must be in [1, {available}] (the number of classes that "
                f"can be drawn); use unique=False (or \"multiplicity\") to sample with replacement"
            )
        device = self._resolve_device(device, generator)
        seen_ids = torch.empty(0, dtype=torch.long, device=device)  # (K,) distinct, ordered by first draw
        seen_pos = torch.empty(0, dtype=torch.long, device=device)  # (K,) position of that first draw
        num_drawn = 0
        batch = 2 * num_unique
        max_batch = max(2 * num_unique, 1 << 22)  # bounds memory when the tail of q is very thin
        while True:
            new = self._draw(batch, generator, device)  # (B,)
            cand = torch.cat([seen_ids, new])  # (K + B,)
            pos = torch.cat([seen_pos, torch.arange(num_drawn, num_drawn + batch, device=device)])  # (K + B,)
            num_drawn += batch
            uniq, inverse = torch.unique(cand, return_inverse=True)  # (K',) sorted by id
            first = torch.full_like(uniq, num_drawn).scatter_reduce_(0, inverse, pos, "amin")  # (K',)
            seen_pos, order = torch.sort(first)  # (K',) by first draw
            seen_ids = uniq[order]  # (K',)
            if seen_ids.numel() >= num_unique:  # host sync: the number of distinct ids
                num_tries = int(seen_pos[num_unique - 1]) + 1
                return seen_ids[:num_unique], num_tries
            batch = min(2 * batch, max_batch)

    def forward(
        self,
        target: Tensor,
        num_samples: Optional[int],
        generator: Optional[torch.Generator] = None,
        *,
        per_example: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> CandidateSample:
        """Sample candidates for a batch whose true classes are ``target``.

        Args:
            target: int64 ``(N, T)`` or ``(N,)`` true class ids; negative entries are padding.
            num_samples: S, the number of draws (the number of distinct ids for ``unique=True``).
            generator: the source of randomness, on ``target.device`` (``None``: torch's default generator).
            per_example: draw ``(N, S)`` ids, an independent set per example (with replacement only).
            dtype: of ``log_q_*`` and ``counts`` (float32 or float64); they are computed in float64.

        Returns:
            A :class:`CandidateSample` on ``target.device``.
        """
        dtype = _check_float_dtype(dtype, "dtype")
        target, valid = self._check_target(target)
        num_samples = _check_positive_int(num_samples, "num_samples")
        device = target.device
        self._resolve_device(device, generator)
        if per_example and self.unique is not False:
            raise InputError(
                f"per_example=True draws with replacement; it needs unique=False, got unique={self.unique!r}"
            )
        if self.training:
            self._observe(target, valid)
        log_s = math.log(num_samples)
        safe_target = target.clamp_min(0)  # (N, T) padding -> class 0, masked below

        if per_example or self.unique is False:
            shape = (target.shape[0], num_samples) if per_example else (num_samples,)
            ids = self._draw(math.prod(shape), generator, device).view(shape)  # (N, S) or (S,)
            log_q_sampled = log_s + self._log_prob64(ids)  # (N, S) or (S,)  exact: m * q
            log_q_true = log_s + self._log_prob64(safe_target)  # (N, T)
            counts = None
        elif self.unique == "multiplicity":
            draws = self._draw(num_samples, generator, device)  # (S,)
            ids, counts = torch.unique(draws, return_counts=True)  # (U,), (U,)  host sync: U
            counts = counts.to(dtype)
            log_q_sampled = log_s + self._log_prob64(ids)  # (U,)  exact expected count of the S draws
            log_q_true = log_s + self._log_prob64(safe_target)  # (N, T)
        else:
            ids, num_tries = self.draw_unique(num_samples, generator, device)  # (S,)
            q_ids, q_true = torch.exp(self._log_prob64(ids)), torch.exp(self._log_prob64(safe_target))
            log_q_sampled = torch.log(expected_count_unique(q_ids, num_tries, num_samples))  # (S,)
            log_q_true = torch.log(expected_count_unique(q_true, num_tries, num_samples))  # (N, T)
            counts = None

        log_q_true = torch.where(valid, log_q_true, 0.0)  # (N, T) padding -> 0, finite
        return CandidateSample(ids, log_q_true.to(dtype), log_q_sampled.to(dtype), counts)

    # ---- helpers -------------------------------------------------------------------------------------------------

    def _table_device(self) -> Optional[torch.device]:
        for buf in self.buffers():
            return buf.device
        return None

    def _resolve_device(self, device: Device, generator: Optional[torch.Generator]) -> torch.device:
        table = self._table_device()
        if device is None:
            device = table if table is not None else (generator.device if generator is not None else "cpu")
        device = torch.device(device)
        if table is not None and not _same_device(table, device):
            raise InputError(
                f"{type(self).__name__} tables are on {table} but the output is wanted on {device}; "
                f"call sampler.to({str(device)!r}) first"
            )
        if generator is not None and not _same_device(generator.device, device):
            raise InputError(
                f"the generator is on {generator.device} but sampling happens on {device}; "
                f"create it with torch.Generator(device={str(device)!r})"
            )
        return device

    def _check_target(self, target: Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(target, Tensor):
            raise InputError(f"target must be a tensor of class ids, got {type(target).__name__}")
        if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
            raise InputError(f"target must hold integer class ids, got dtype {target.dtype}")
        if target.dim() == 1:
            target = target.unsqueeze(1)  # (N, 1)
        if target.dim() != 2:
            raise InputError(f"target must have shape (N,) or (N, T), got {tuple(target.shape)}")
        target = target.to(torch.long)
        return target, target >= 0  # (N, T), (N, T)

    def _apply(self, fn, recurse=True):
        # Keep table dtypes under .half()/.to(dtype): a float16 CDF would be useless. Devices still move.
        def keep_dtype(t: Tensor) -> Tensor:
            out = fn(t)
            return out if out.dtype == t.dtype else t.to(device=out.device)

        return super()._apply(keep_dtype, recurse)


class UniformSampler(CandidateSampler):
    """Every class equally likely: ``q(c) = 1 / V``. Draws with ``torch.randint``.

    Shape:
        See :class:`CandidateSampler`.

    Example:
        >>> sampler = UniformSampler(1000)
        >>> sample = sampler(torch.tensor([[3], [7]]), 16, torch.Generator().manual_seed(0))
        >>> sample.ids.shape, sample.log_q_true.shape
        (torch.Size([16]), torch.Size([2, 1]))
    """

    def _log_prob64(self, ids: Tensor) -> Tensor:
        return torch.full(ids.shape, -math.log(self.num_classes), dtype=torch.float64, device=ids.device)

    def _draw(self, num_draws, generator, device):
        return torch.randint(self.num_classes, (num_draws,), generator=generator, device=device)  # (S,)


class LogUniformSampler(CandidateSampler):
    """Zipfian over ids sorted by decreasing frequency (TF's log-uniform sampler)::

        q(k) = (log(k + 2) - log(k + 1)) / log(V + 1),    k = 0 .. V-1

    Closed form, no table, so V can be 10**8: ``u ~ U[0, 1)`` in float64, ``k = floor(exp(u * log(V + 1))) - 1``.
    Only meaningful when class ids are frequency ranks (the vocabulary sorts them so).

    Shape:
        See :class:`CandidateSampler`.

    Example:
        >>> sampler = LogUniformSampler(10**8, unique="multiplicity")
        >>> sample = sampler(torch.tensor([0, 5, -100]), 64, torch.Generator().manual_seed(0))
        >>> sample.ids.shape == sample.counts.shape, int(sample.counts.sum()), sample.log_q_true[2].item()
        (True, 64, 0.0)
    """

    def _log_prob64(self, ids: Tensor) -> Tensor:
        k = ids.to(torch.float64)
        return torch.log(torch.log1p(1.0 / (k + 1.0))) - math.log(math.log1p(self.num_classes))

    def _draw(self, num_draws, generator, device):
        u = torch.rand(num_draws, generator=generator, device=device, dtype=torch.float64)  # (S,)
        k = torch.floor(torch.exp(u * math.log1p(self.num_classes))) - 1.0  # (S,)
        return k.to(torch.long).clamp_(0, self.num_classes - 1)  # (S,)


class _TableSampler(CandidateSampler):
    """A sampler with a probability table: buffers ``probs`` (``probs_dtype``: float32 by default, or float64) and
    ``cdf`` (float64, normalised)."""

    probs: Tensor
    cdf: Tensor

    def __init__(self, num_classes: int, *, unique: UniqueMode = False, probs_dtype: torch.dtype = torch.float32):
        super().__init__(num_classes, unique=unique)
        self.probs_dtype = _check_float_dtype(probs_dtype, "probs_dtype")

    def _set_table(self, weights: Tensor) -> None:
        probs, cdf = _table_from_weights(weights, self.probs_dtype)
        if "probs" in self._buffers:
            self.probs.copy_(probs)
            self.cdf.copy_(cdf)
        else:
            self.register_buffer("probs", probs)  # (V,)
            self.register_buffer("cdf", cdf)  # (V,)
        self._positive = None

    def _num_positive_classes(self) -> int:
        if getattr(self, "_positive", None) is None:
            self._positive = int((self.probs > 0).sum())  # once per table: a host sync on a GPU
        return self._positive

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._positive = None

    def _log_prob64(self, ids: Tensor) -> Tensor:
        return torch.log(self.probs[ids].to(torch.float64))

    def _draw(self, num_draws, generator, device):
        u = torch.rand(num_draws, generator=generator, device=device, dtype=torch.float64)  # (S,)
        return torch.searchsorted(self.cdf, u, right=True).clamp_(max=self.num_classes - 1)  # (S,)


class UnigramSampler(_TableSampler):
    """A fixed distribution: ``q(c) = w_c / sum(w)``; usually ``w = counts**alpha`` (:meth:`from_counts`).

    Classes with zero weight are never drawn (a true class with ``q = 0`` gets ``log_q_true = -inf``). Draws by
    inverse CDF (a float64 cumulative buffer and ``torch.searchsorted``), so it works for V > 2**24 and on the GPU.

    Args:
        probs_or_weights: non-negative ``(V,)`` tensor or list; normalised here.
        unique: see :class:`CandidateSampler`.
        probs_dtype: dtype of the ``probs`` table (float32, or float64 for exact float64 log expected counts).

    Shape:
        See :class:`CandidateSampler`.

    Example:
        >>> sampler = UnigramSampler.from_counts([100, 30, 0, 5], alpha=0.75)
        >>> ids = sampler.draw(1000, torch.Generator().manual_seed(0))
        >>> bool((ids != 2).all())
        True
    """

    def __init__(self, probs_or_weights: Union[Tensor, Sequence[float]], *, unique: UniqueMode = False,
                 probs_dtype: torch.dtype = torch.float32):
        weights = _as_float64_vector(probs_or_weights, "probs_or_weights")
        super().__init__(weights.numel(), unique=unique, probs_dtype=probs_dtype)
        self._set_table(weights)

    @classmethod
    def from_counts(
        cls, counts: Union[Tensor, Sequence[float]], alpha: float = 0.75, *, unique: UniqueMode = False,
        probs_dtype: torch.dtype = torch.float32,
    ) -> "UnigramSampler":
        """``q(c) ∝ counts_c**alpha`` (word2vec's ``ns_exponent=0.75``); zero counts stay zero for any alpha."""
        alpha = _check_finite(alpha, "alpha")
        weights = _as_float64_vector(counts, "counts")
        if isinstance(counts, Tensor) and counts.dtype == torch.float64 and counts.device.type == "cpu":
            weights = weights.clone()  # _as_float64_vector did not copy: never modify the caller's tensor
        zero = weights == 0
        weights.pow_(alpha).masked_fill_(zero, 0.0)  # in place: V can be 10**8; 0**0 would be 1
        if not math.isfinite(float(weights.sum())):
            raise InputError(f"counts**alpha overflows float64 for alpha={alpha}; use an alpha in [0, 1]")
        return cls(weights, unique=unique, probs_dtype=probs_dtype)


class LearnedUnigramSampler(_TableSampler):
    """A unigram distribution learned from the true classes seen (TF's learned_unigram_candidate_sampler idea)::

        q(c) = n_c**alpha / sum(n**alpha),    n_c = init_count + (times c was a valid target in training mode)

    Each training-mode ``forward`` adds the batch's valid targets to ``counts`` (``index_add``, O(N·T)). The sampling
    table is rebuilt from the counts only every ``refresh_every`` calls (O(V), amortised); draws and ``log_q`` always
    use the current table, so the correction matches the distribution actually sampled. Nothing is learned in eval
    mode. ``counts``, the table and ``num_calls`` are persistent buffers: ``load_state_dict`` restores the exact state.

    Args:
        num_classes: V.
        alpha: exponent on the counts (finite).
        init_count: the count every class starts with (> 0, so that every class can be drawn).
        refresh_every: rebuild the table after this many training calls.
        unique: see :class:`CandidateSampler`.
        probs_dtype: dtype of the ``probs`` table (float32, or float64); ``counts`` are float64 either way.

    Shape:
        See :class:`CandidateSampler`.

    Example:
        >>> sampler = LearnedUnigramSampler(100, refresh_every=1)
        >>> _ = sampler(torch.tensor([[7, 7, -100]]), 8)
        >>> sampler.counts[7].item(), sampler.counts[0].item()
        (3.0, 1.0)
    """

    counts: Tensor
    num_calls: Tensor

    def __init__(
        self,
        num_classes: int,
        *,
        alpha: float = 1.0,
        init_count: float = 1.0,
        refresh_every: int = 100,
        unique: UniqueMode = False,
        probs_dtype: torch.dtype = torch.float32,
    ):
        super().__init__(num_classes, unique=unique, probs_dtype=probs_dtype)
        self.alpha = _check_finite(alpha, "alpha")
        init_count = _check_finite(init_count, "init_count")
        if init_count <= 0:
            raise InputError(f"init_count must be > 0 so that every class can be drawn, got {init_count}")
        self.refresh_every = _check_positive_int(refresh_every, "refresh_every")
        self.register_buffer("counts", torch.full((self.num_classes,), init_count, dtype=torch.float64))  # (V,)
        self.register_buffer("num_calls", torch.zeros((), dtype=torch.long))
        self._calls: Optional[int] = 0  # host mirror of num_calls, so the refresh test needs no sync
        self._set_table(self.counts.pow(self.alpha))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", alpha={self.alpha}, refresh_every={self.refresh_every}"

    def _num_positive_classes(self) -> int:
        return self.num_classes  # every count is >= init_count > 0

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._calls = None  # re-read from the loaded buffer on the next call

    @torch.no_grad()
    def _observe(self, target: Tensor, valid: Tensor) -> None:
        flat = target.reshape(-1)  # (N*T,)
        self.counts.index_add_(0, flat.clamp_min(0), valid.reshape(-1).to(torch.float64))  # padding adds 0
        if self._calls is None:
            self._calls = int(self.num_calls)  # once after load_state_dict
        self._calls += 1
        self.num_calls.fill_(self._calls)
        if self._calls % self.refresh_every == 0:
            self._set_table(self.counts.pow(self.alpha))  # O(V), every refresh_every calls


class AllClassesSampler(CandidateSampler):
    """Not a sampler: every class, once. ``ids = arange(V)``, expected count 1, so ``log_q = 0`` (no correction).

    With accidental hits removed, a sampled softmax over these candidates equals the full softmax: the oracle the
    sampled losses are tested against. O(V) per call by design. ``log_prob`` is ``-log V`` and ``draw`` is uniform,
    so that ``exp(log_q) = S * q`` holds with ``S = V`` as for the other samplers.

    Shape:
        ids ``(V,)``; log_q_sampled ``(V,)`` zeros; log_q_true ``(N, T)`` zeros.

    Example:
        >>> sample = AllClassesSampler(5)(torch.tensor([1, 4]))
        >>> sample.ids.tolist(), sample.log_q_sampled.tolist()
        ([0, 1, 2, 3, 4], [0.0, 0.0, 0.0, 0.0, 0.0])
    """

    def __init__(self, num_classes: int):
        super().__init__(num_classes, unique=False)

    def _log_prob64(self, ids: Tensor) -> Tensor:
        return torch.full(ids.shape, -math.log(self.num_classes), dtype=torch.float64, device=ids.device)

    def _draw(self, num_draws, generator, device):
        return torch.randint(self.num_classes, (num_draws,), generator=generator, device=device)  # (S,)

    def forward(self, target, num_samples=None, generator=None, *, per_example=False,
                dtype: torch.dtype = torch.float32) -> CandidateSample:
        dtype = _check_float_dtype(dtype, "dtype")
        if num_samples is not None and num_samples != self.num_classes:
            raise InputError(
                f"AllClassesSampler takes every class: num_samples must be None or num_classes={self.num_classes}, "
                f"got {num_samples!r}"
            )
        if per_example:
            raise InputError("AllClassesSampler shares one set of candidates (all classes); per_example must be False")
        target, _ = self._check_target(target)
        device = target.device
        ids = torch.arange(self.num_classes, device=device)  # (V,)
        zeros_sampled = torch.zeros(self.num_classes, dtype=dtype, device=device)  # (V,)
        return CandidateSample(ids, torch.zeros(target.shape, dtype=dtype, device=device), zeros_sampled)


class InBatchSampler(CandidateSampler):
    """In-batch negatives: the batch's own targets are the candidates, ``ids = target.reshape(-1)`` (``S = N·T``).

    Padding entries (< 0) stay in ``ids`` as they are; the loss removes those columns. ``log_q`` is the log expected
    count of each class in a batch:

    - with ``counts``: ``log(N·T · p_c)``, ``p ∝ counts**alpha`` (a fixed table, as :class:`UnigramSampler`).
    - without: a streaming estimate in the manner of Yi et al. 2019 ("Sampling-bias-corrected neural modeling for
      large corpus item recommendations", RecSys). Buffers ``last_step[V]`` and ``gap[V]``; each training-mode call
      increments ``step`` and, for the valid ids of the batch, sets::

          gap_c = (1 - ema) * gap_c + ema * (step - last_step_c)     (first sighting: gap_c = step)
          last_step_c = step

      ``gap_c`` estimates the mean number of batches between two batches containing ``c``, so ``1 / gap_c`` is the
      probability that a batch contains ``c``, which is the expected count per batch when that is small (a class
      seen in every batch has ``gap = 1``). So ``log_q = -log(gap)`` at the training batch size, scaled by
      ``N·T / batch_slots`` for a batch of another size; ``batch_slots`` is the ``N·T`` of the last training batch.
      A class never seen has ``gap = step + 1`` (it has missed every batch so far). The update needs no host sync.

    ``num_samples`` is ignored (may be None). ``draw`` samples from ``p`` when ``counts`` are given; the streaming
    estimate is not a normalised distribution, so it cannot be drawn from.

    Args:
        num_classes: V.
        counts: optional ``(V,)`` class frequencies.
        alpha: exponent on the counts.
        ema: the smoothing rate of the gap estimate, in (0, 1].
        probs_dtype: dtype of the ``probs`` table made from ``counts`` (float32, or float64).

    Shape:
        ids ``(N*T,)``; log_q_sampled ``(N*T,)``; log_q_true ``(N, T)``.

    Example:
        >>> sampler = InBatchSampler(100)
        >>> sample = sampler(torch.tensor([3, 8, 3, -100]))
        >>> sample.ids.tolist(), sample.log_q_true[3].item()
        ([3, 8, 3, -100], 0.0)
    """

    def __init__(self, num_classes: int, *, counts=None, alpha: float = 1.0, ema: float = 0.01,
                 probs_dtype: torch.dtype = torch.float32):
        super().__init__(num_classes, unique=False)
        self.alpha = _check_finite(alpha, "alpha")
        self.ema = _check_finite(ema, "ema")
        if not 0.0 < self.ema <= 1.0:
            raise InputError(f"ema must be in (0, 1], got {self.ema}")
        self.has_counts = counts is not None
        if self.has_counts:
            table = UnigramSampler.from_counts(counts, alpha=self.alpha, probs_dtype=probs_dtype)
            if table.num_classes != self.num_classes:
                raise InputError(f"counts has {table.num_classes} entries but num_classes={self.num_classes}")
            self.register_buffer("probs", table.probs)  # (V,)
            self.register_buffer("cdf", table.cdf)  # (V,)
        else:
            self.register_buffer("step", torch.zeros((), dtype=torch.long))
            self.register_buffer("batch_slots", torch.ones((), dtype=torch.long))
            self.register_buffer("last_step", torch.zeros(self.num_classes, dtype=torch.long))  # (V,)
            self.register_buffer("gap", torch.zeros(self.num_classes, dtype=torch.float64))  # (V,)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, counts={self.has_counts}, alpha={self.alpha}, ema={self.ema}"

    def _log_prob64(self, ids: Tensor) -> Tensor:
        if self.has_counts:
            return torch.log(self.probs[ids].to(torch.float64))
        gap = self.gap[ids]  # (...)
        gap = torch.where(gap > 0, gap, (self.step + 1).to(torch.float64))  # never seen: missed every batch
        return -torch.log(gap * self.batch_slots.to(torch.float64))

    def _draw(self, num_draws, generator, device):
        if not self.has_counts:
            raise InputError(
                "InBatchSampler without counts has no distribution to draw from; its candidates are the batch's "
                "targets (pass counts=... to draw from the unigram distribution)"
            )
        u = torch.rand(num_draws, generator=generator, device=device, dtype=torch.float64)  # (S,)
        return torch.searchsorted(self.cdf, u, right=True).clamp_(max=self.num_classes - 1)  # (S,)

    @torch.no_grad()
    def _observe(self, target: Tensor, valid: Tensor) -> None:
        if self.has_counts or target.numel() == 0:
            return
        flat = target.reshape(-1)  # (M,)  M = N*T
        valid = valid.reshape(-1)  # (M,)
        # Padding entries write the same value as some valid entry (duplicate writes of equal values are harmless),
        # so no boolean indexing and no host sync. If nothing is valid, every write puts back the old value.
        first_valid = valid.to(torch.uint8).argmax().view(1)  # (1,)  gather, not [], keeps it on the device
        any_valid = valid.gather(0, first_valid)  # (1,)
        idx = torch.where(valid, flat, flat.gather(0, first_valid)).clamp_min(0)  # (M,)
        self.step += 1
        self.batch_slots.fill_(flat.numel())
        old_gap, old_last = self.gap[idx], self.last_step[idx]  # (M,), (M,)
        since = (self.step - old_last).to(torch.float64)  # (M,)
        new_gap = torch.where(old_last > 0, (1.0 - self.ema) * old_gap + self.ema * since, since)  # (M,)
        self.gap.index_put_((idx,), torch.where(any_valid, new_gap, old_gap))
        self.last_step.index_put_((idx,), torch.where(any_valid, self.step, old_last))

    def forward(self, target, num_samples=None, generator=None, *, per_example=False,
                dtype: torch.dtype = torch.float32) -> CandidateSample:
        dtype = _check_float_dtype(dtype, "dtype")
        if per_example:
            raise InputError("InBatchSampler shares the batch's targets as candidates; per_example must be False")
        target, valid = self._check_target(target)
        self._resolve_device(target.device, None)
        if self.training:
            self._observe(target, valid)
        ids = target.reshape(-1)  # (S,)  S = N*T, padding kept
        log_s = math.log(max(ids.numel(), 1))
        log_q_sampled = torch.where(ids >= 0, log_s + self._log_prob64(ids.clamp_min(0)), 0.0)  # (S,)
        log_q_true = log_q_sampled.view(target.shape)  # (N, T)
        return CandidateSample(ids, log_q_true.to(dtype), log_q_sampled.to(dtype))


SAMPLERS = {
    "uniform": UniformSampler,
    "log_uniform": LogUniformSampler,
    "unigram": UnigramSampler,
    "learned_unigram": LearnedUnigramSampler,
    "all": AllClassesSampler,
    "inbatch": InBatchSampler,
}


def build_sampler(name: str, num_classes: int, *, counts=None, **kwargs) -> CandidateSampler:
    """Build a sampler by its short name in :data:`SAMPLERS`.

    ``counts`` (class frequencies, e.g. from the vocabulary) is required by ``"unigram"``, used by ``"inbatch"`` if
    given, and ignored by the others, so a caller can always pass it. Other keyword arguments (``alpha``, ``unique``,
    ``refresh_every``, ...) go to the sampler; an unknown one is an InputError.

    Example:
        >>> build_sampler("unigram", 3, counts=[5, 1, 1], alpha=0.75, unique="multiplicity").num_classes
        3
    """
    if name not in SAMPLERS:
        raise InputError(f"unknown sampler {name!r}{did_you_mean(str(name), SAMPLERS)}; choose from {sorted(SAMPLERS)}")
    cls = SAMPLERS[name]
    factory = cls.from_counts if cls is UnigramSampler else cls
    params = inspect.signature(factory).parameters
    allowed = [p for p in params if p not in ("self", "counts", "num_classes", "probs_or_weights")]
    for key in kwargs:
        if key not in allowed:
            raise InputError(
                f"sampler {name!r} takes no argument {key!r}{did_you_mean(key, allowed)}; it takes {allowed}"
            )
    if cls is UnigramSampler:
        if counts is None:
            raise InputError("unigram needs class counts, e.g. from the vocabulary (pass counts=...)")
        sampler = UnigramSampler.from_counts(counts, **kwargs)
        if sampler.num_classes != num_classes:
            raise InputError(f"counts has {sampler.num_classes} entries but num_classes={num_classes}")
        return sampler
    if cls is InBatchSampler:
        return InBatchSampler(num_classes, counts=counts, **kwargs)
    return cls(num_classes, **kwargs)
