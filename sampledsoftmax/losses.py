"""Loss modules over V classes: one interface for the exact softmax and the candidate-sampling losses.

Every loss owns its output layer (`weight` [V, d], optional `bias` [V]) or borrows one passed as `weight=` (tied
embeddings). The model returns hidden states; the loss holds the output layer:

    loss_fn = SampledSoftmaxLoss(V, d, sampler=LogUniformSampler(V), num_sampled=1024)
    loss = loss_fn(hidden, target)          # hidden (..., d), target (...) or (..., T) -> scalar (reduction="mean")
    nll = loss_fn.exact_nll(hidden, target) # exact full-softmax NLL per example, chunked; same for every loss

`reduction` and `ignore_index` behave as in `F.cross_entropy` ("mean" averages over non-ignored examples), except
that a batch whose examples are all ignored (or an empty batch) gives 0 with zero gradients instead of NaN. `forward`
never changes its objective in `.eval()`: exact evaluation is the explicit `exact_nll`. Stateful samplers (learned
unigram, in-batch streaming frequencies) only update their statistics in training mode.

Precision: every loss computes its logits, losses and gradients in fp32 from low-precision inputs (fp64 when the
hidden states or the table are fp64), as `F.cross_entropy` does. Under `torch.autocast` the same holds: `forward`,
`logits`, `exact_nll` and `predict_topk` run with autocast off, so a bf16/fp16 hidden state from an autocast model is
upcast rather than multiplied in bf16, and the result is fp32.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from .errors import InputError, did_you_mean
from .functional import (
    LogisticTail,
    SampledLogits,
    SoftmaxTail,
    _acc_dtype,
    autocast_off,
    chunked_nll_and_rank,
    chunked_one_vs_all,
    chunked_softmax_cross_entropy,
    chunked_topk,
    sampled_logits,
    sampled_loss,
    soft_cap,
    softcapped_cross_entropy,
)
from .samplers import CandidateSample, CandidateSampler, InBatchSampler, LogUniformSampler, build_sampler

__all__ = [
    "OutputLayerLoss",
    "FullSoftmaxLoss",
    "OneVsAllLoss",
    "SampledLossBase",
    "SampledSoftmaxLoss",
    "NCELoss",
    "NegativeSamplingLoss",
    "InBatchSoftmaxLoss",
    "AdaptiveSoftmaxLoss",
    "LOSSES",
    "build_loss",
]

_REDUCTIONS = ("mean", "sum", "none")


def fp32_under_autocast(method):
    """Run a loss method whose first argument is `hidden` with autocast off on hidden's device (see the module
    docstring): one rule for every loss and every entry point, instead of a cast per operation."""

    @functools.wraps(method)
    def wrapper(self, hidden, *args, **kwargs):
        with autocast_off(hidden.device.type if torch.is_tensor(hidden) else "cpu"):
            return method(self, hidden, *args, **kwargs)

    return wrapper


class OutputLayerLoss(nn.Module):
    """Base class: an output layer over `num_classes` classes plus a loss on its logits.

    Subclasses implement `_loss(h, t, row_weight, sample)`: h (N, d), t (N, T) int64 with padding -1, and either
    row_weight (N,) -> scalar Σ row_weight_i · loss_i, or row_weight None -> per-row losses (N,).

    Args:
        num_classes: V.  dim: d.
        weight: an existing [V, d] tensor/Parameter to borrow (tied embeddings); None creates one.
        bias: True creates a zero-initialised [V] bias, False/None has none, a tensor is borrowed.
        reduction: "mean" | "sum" | "none".  ignore_index: target value to skip (may be any int, e.g. a pad id).
        memory_budget_mb: fp32 block size for the chunked exact computations (exact_nll, predict_topk, full).
        validate: check target ranges (one host sync per call); turn off in a tuned GPU loop.
        logit_softcap: c > 0 makes the logits c · tanh(z / c) of the raw z = h·w + b (Gemma 2's final-logit
            soft-capping), in the training loss and in `exact_nll`; supported by the exact softmax and the sampled
            losses (where the capped logits get the log-Q correction), refused by the others.
    """

    is_sampled = False
    multi_label = False  # accepts (..., T) targets
    supports_softcap = False
    logit_softcap: Optional[float] = None

    def __init__(
        self,
        num_classes: int,
        dim: int,
        *,
        weight: Optional[Tensor] = None,
        bias: Union[bool, Tensor, None] = True,
        reduction: str = "mean",
        ignore_index: int = -100,
        memory_budget_mb: Optional[float] = None,
        validate: bool = True,
        logit_softcap: Optional[float] = None,
    ):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise InputError(f"num_classes must be a positive int, got {num_classes!r}")
        if not isinstance(dim, int) or dim < 1:
            raise InputError(f"dim must be a positive int, got {dim!r}")
        if reduction not in _REDUCTIONS:
            raise InputError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}{did_you_mean(str(reduction), _REDUCTIONS)}")
        self.num_classes, self.dim = num_classes, dim
        self.reduction, self.ignore_index = reduction, int(ignore_index)
        self.memory_budget_mb, self.validate = memory_budget_mb, validate
        if logit_softcap is not None and not (isinstance(logit_softcap, (int, float)) and logit_softcap > 0):
            raise InputError(f"logit_softcap must be a positive number or None, got {logit_softcap!r}")
        if logit_softcap is not None and not self.supports_softcap:
            raise InputError(f"{type(self).__name__} does not support logit_softcap; FullSoftmaxLoss and the "
                             f"(single-process) sampled losses do")
        self.logit_softcap = None if logit_softcap is None else float(logit_softcap)
        if weight is None:
            weight = nn.Parameter(torch.empty(num_classes, dim).uniform_(-1 / math.sqrt(dim), 1 / math.sqrt(dim)))
        elif tuple(weight.shape) != (num_classes, dim):
            raise InputError(f"weight has shape {tuple(weight.shape)}, expected (num_classes, dim) = ({num_classes}, {dim})")
        self._set_tensor("weight", weight)
        if bias is True:
            bias = nn.Parameter(torch.zeros(num_classes))
        elif bias is False:
            bias = None
        elif bias is not None and tuple(bias.shape) != (num_classes,):
            raise InputError(f"bias has shape {tuple(bias.shape)}, expected (num_classes,) = ({num_classes},)")
        self._set_tensor("bias", bias)

    def _set_tensor(self, name: str, value: Optional[Tensor]) -> None:
        if value is None or isinstance(value, nn.Parameter):
            self.register_parameter(name, value)
        else:  # a plain tensor (e.g. a frozen table) is kept as a buffer
            self.register_buffer(name, value)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, dim={self.dim}, bias={self.bias is not None}, "
            f"reduction={self.reduction!r}, ignore_index={self.ignore_index}"
        )

    # -- input handling -------------------------------------------------------------------------------------------

    def _flatten(self, hidden: Tensor, target: Tensor, allow_multi: bool) -> tuple[Tensor, Tensor, tuple]:
        """-> h (N, d), t (N, T) int64 with ignored entries replaced by -1, batch shape of the examples."""
        if not torch.is_tensor(hidden) or not hidden.is_floating_point():
            raise InputError(f"hidden must be a floating-point tensor of shape (..., {self.dim})")
        if hidden.shape[-1] != self.dim:
            raise InputError(
                f"hidden has last dimension {hidden.shape[-1]} but the loss was built with dim={self.dim}"
            )
        if not torch.is_tensor(target) or target.is_floating_point() or target.dtype == torch.bool:
            raise InputError(f"target must be an integer tensor of class ids, got {getattr(target, 'dtype', type(target))}")
        batch = tuple(hidden.shape[:-1])
        if tuple(target.shape) == batch:
            t = target.reshape(-1, 1)
        elif allow_multi and target.dim() == len(batch) + 1 and tuple(target.shape[:-1]) == batch:
            t = target.reshape(-1, target.shape[-1])
        else:
            want = f"{batch}" + (f" or {batch + ('T',)}" if allow_multi else "")
            raise InputError(f"target has shape {tuple(target.shape)}, expected {want} to match hidden {tuple(hidden.shape)}")
        t = t.long()
        ignored = t == self.ignore_index
        if self.validate and t.numel():
            bad = ~ignored & ((t < 0) | (t >= self.num_classes))
            if bool(bad.any()):
                val = int(t[bad][0])
                raise InputError(
                    f"target contains class id {val}; class ids must be in [0, {self.num_classes - 1}] "
                    f"(num_classes={self.num_classes}) or equal ignore_index={self.ignore_index}"
                )
        t = t.masked_fill(ignored, -1)
        return hidden.reshape(-1, self.dim), t, batch

    def _compute_dtype(self, h: Tensor) -> torch.dtype:
        """The dtype losses are computed in: fp32, or fp64 when the hidden states or the table are fp64."""
        w = self.weight
        dt = h.dtype if w is None else torch.promote_types(h.dtype, w.dtype)
        return _acc_dtype(dt)

    def _row_weight(self, t: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Optional[Tensor]]:
        """valid (N,) bool and, for "mean"/"sum", the weight of each row's loss in `dtype` (1 / #valid for "mean";
        in the loss's own dtype: fp32 weights put a 1e-8 relative error on an fp64 loss)."""
        valid = (t >= 0).any(1)  # (N,)
        if self.reduction == "none":
            return valid, None
        w = valid.to(dtype)
        if self.reduction == "mean":
            w = w / w.sum().clamp_min(1.0)
        return valid, w

    # -- the interface ----------------------------------------------------------------------------------------------

    @fp32_under_autocast
    def forward(self, hidden: Tensor, target: Tensor, sample: Optional[CandidateSample] = None) -> Tensor:
        """Loss of `hidden` against `target`.

        Shape:
            hidden (..., d); target (...) int64, or (..., T) for losses with several true labels;
            output () for "mean"/"sum", (...) for "none"; fp32 (fp64 for fp64 inputs), also under autocast.
        """
        h, t, batch = self._flatten(hidden, target, self.multi_label)
        valid, w = self._row_weight(t, self._compute_dtype(h))
        if w is not None:
            return self._loss(h, t, w, sample)
        per_row = self._loss(h, t, None, sample)  # (N,)
        return (per_row * valid).reshape(batch)

    def _loss(self, h: Tensor, t: Tensor, row_weight: Optional[Tensor], sample) -> Tensor:
        raise NotImplementedError

    def _no_softcap(self, what: str) -> None:
        if self.logit_softcap is not None:
            raise InputError(f"{what} does not support logit_softcap; use exact_nll")

    @fp32_under_autocast
    def logits(self, hidden: Tensor) -> Tensor:
        """Full logits `hidden @ weight.T + bias` (soft-capped with logit_softcap; differentiable).
        Shape: (..., d) -> (..., V). Small batches only."""
        z = hidden @ self.weight.t()
        z = z + self.bias if self.bias is not None else z
        return soft_cap(z, self.logit_softcap)

    @fp32_under_autocast
    @torch.no_grad()
    def exact_nll(self, hidden: Tensor, target: Tensor) -> Tensor:
        """Exact full-softmax negative log-likelihood per example, chunked over V (no (N, V) tensor).

        The same computation for every loss class, so evaluation numbers are comparable across losses. Ignored
        entries give 0. A (..., T) target gives the NLL of each label.

        Shape:
            hidden (..., d), target (...) or (..., T) -> fp32 (fp64 for fp64 inputs) of target's shape
        """
        h, t, batch = self._flatten(hidden, target, allow_multi=True)
        out_shape = target.shape
        n, n_true = t.shape
        hh = h.unsqueeze(1).expand(n, n_true, self.dim).reshape(-1, self.dim) if n_true > 1 else h
        tt = t.reshape(-1)
        if self.logit_softcap is not None:
            nll = softcapped_cross_entropy(hh, self.weight, self.bias, tt.clamp_min(0), self.logit_softcap,
                                           memory_budget_mb=self.memory_budget_mb)
        else:
            nll = chunked_softmax_cross_entropy(
                hh, self.weight, self.bias, tt.clamp_min(0), memory_budget_mb=self.memory_budget_mb
            )
        return (nll * (tt >= 0)).reshape(out_shape)

    @fp32_under_autocast
    @torch.no_grad()
    def exact_nll_and_rank(self, hidden: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`exact_nll` and the rank of each target among all V logits, in one chunked pass over V: what an evaluation
        needs of CE and top-k accuracy at the cost of the NLL alone.

        greater = #{c : z_c > z_t} and ties = #{c ≠ t : z_c = z_t} (`functional.chunked_nll_and_rank`); the top-k
        hit with ties broken uniformly at random is `functional.expected_topk_hit(greater, ties, k)` (not
        greater < k, which counts every tie as a win: a zero table would score 1). Ignored entries give 0, 0, 0.

        Shape:
            hidden (..., d), target (...) -> nll fp32 (fp64 for fp64 inputs), greater and ties int64, all of
            target's shape
        """
        self._no_softcap("exact_nll_and_rank")
        h, t, _ = self._flatten(hidden, target, allow_multi=False)
        tt = t.reshape(-1)
        nll, greater, ties = chunked_nll_and_rank(h, self.weight, self.bias, tt.clamp_min(0),
                                                  memory_budget_mb=self.memory_budget_mb)
        valid = tt >= 0
        return tuple((x * valid).reshape(target.shape) for x in (nll, greater, ties))

    @fp32_under_autocast
    @torch.no_grad()
    def predict_topk(self, hidden: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The k most probable classes under the full softmax and their probabilities, chunked over V.

        Shape:
            hidden (..., d) -> ids (..., k) int64, probs (..., k) fp32 (fp64 for fp64 inputs)
        """
        self._no_softcap("predict_topk")
        if not 1 <= k <= self.num_classes:
            raise InputError(f"k must be in [1, {self.num_classes}], got {k}")
        if hidden.shape[-1] != self.dim:
            raise InputError(f"hidden has last dimension {hidden.shape[-1]} but the loss was built with dim={self.dim}")
        batch = hidden.shape[:-1]
        ids, probs = chunked_topk(hidden.reshape(-1, self.dim), self.weight, self.bias, k, memory_budget_mb=self.memory_budget_mb)
        return ids.reshape(*batch, k), probs.reshape(*batch, k)


class FullSoftmaxLoss(OutputLayerLoss):
    """Exact softmax cross entropy over all V classes, chunked so that the (N, V) logits never exist.

    loss_i = −(1 − ε) log p(t_i | h_i) − (ε / V) Σ_j log p(j | h_i),   p = softmax(h W ᵀ + b)

    Equals `F.cross_entropy(hidden @ W.T + b, target, label_smoothing=ε)`; forward and backward stream over blocks
    of the classes with at most `memory_budget_mb` of fp32 logits alive (three N×V×d products for mean/sum).

    Shape:
        hidden (..., d), target (...) -> () or (...) with reduction="none"

    Example:
        >>> loss_fn = FullSoftmaxLoss(1000, 16)
        >>> loss_fn(torch.randn(8, 16), torch.randint(1000, (8,))).shape
        torch.Size([])
    """

    supports_softcap = True

    def __init__(self, num_classes: int, dim: int, *, label_smoothing: float = 0.0, **kwargs):
        super().__init__(num_classes, dim, **kwargs)
        if not 0.0 <= label_smoothing <= 1.0:
            raise InputError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def _loss(self, h, t, row_weight, sample):
        if self.logit_softcap is not None:
            return softcapped_cross_entropy(h, self.weight, self.bias, t[:, 0].clamp_min(0), self.logit_softcap,
                                            row_weight=row_weight, label_smoothing=self.label_smoothing,
                                            memory_budget_mb=self.memory_budget_mb)
        return chunked_softmax_cross_entropy(
            h, self.weight, self.bias, t[:, 0].clamp_min(0), row_weight=row_weight,
            label_smoothing=self.label_smoothing, memory_budget_mb=self.memory_budget_mb,
        )


class OneVsAllLoss(OutputLayerLoss):
    """Exact multi-label logistic loss: an independent sigmoid per class over all V classes, chunked over V.

    loss_i = Σ_{j=1..V} [ log(1 + exp(z_ij)) − y_ij z_ij ],   y_ij = 1 if j ∈ labels(i),   z = h Wᵀ + b

    = `F.binary_cross_entropy_with_logits(z, y, reduction="none").sum(-1)`: the "many labels → V logistic
    regressions" model. Targets (..., T) list each example's labels, padded with ignore_index; labels in a row must
    be distinct. A row whose labels are all ignore_index is ignored.

    Shape:
        hidden (..., d), target (...) or (..., T) -> () or (...) with reduction="none"
    """

    multi_label = True

    def _loss(self, h, t, row_weight, sample):
        if self.validate and t.shape[1] > 1:
            srt = t.sort(1).values
            if bool(((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)).any()):
                raise InputError("target has a repeated label within one example; OneVsAllLoss needs distinct labels per row")
        return chunked_one_vs_all(h, self.weight, self.bias, t, row_weight=row_weight, memory_budget_mb=self.memory_budget_mb)


def _as_sampler(sampler, num_classes: int, counts=None) -> CandidateSampler:
    if sampler is None:
        return LogUniformSampler(num_classes)
    if isinstance(sampler, str):
        return build_sampler(sampler, num_classes, counts=counts)
    if not isinstance(sampler, CandidateSampler):
        raise InputError(f"sampler must be a CandidateSampler or a sampler name, got {type(sampler).__name__}")
    if sampler.num_classes != num_classes:
        raise InputError(f"sampler covers num_classes={sampler.num_classes} but the loss has num_classes={num_classes}")
    return sampler


class SampledLossBase(OutputLayerLoss):
    """Shared plumbing of the candidate-sampling losses: the sampler, the generator and the corrected logits.

    Args (besides OutputLayerLoss's):
        sampler: a CandidateSampler or a registry name ("log_uniform", "uniform", "unigram", ...); default
            log-uniform (ids must be sorted by decreasing frequency), as in TensorFlow.
        num_sampled: S, the number of candidates drawn per step.
        sparse: gradients of the output table as sparse COO tensors touching only the rows used this step, so a
            sparse-aware optimizer (SGD, Adagrad, SparseAdam) updates O(S·d) instead of O(V·d).
        generator: the torch.Generator all sampling draws from (None: torch's default generator).
    """

    is_sampled = True
    multi_label = True
    supports_softcap = True
    subtract_log_q = True
    remove_accidental_hits = True

    def __init__(
        self,
        num_classes: int,
        dim: int,
        *,
        sampler: Union[CandidateSampler, str, None] = None,
        num_sampled: Optional[int] = 1024,
        sparse: bool = False,
        generator: Optional[torch.Generator] = None,
        counts=None,
        **kwargs,
    ):
        super().__init__(num_classes, dim, **kwargs)
        self.sampler = _as_sampler(sampler, num_classes, counts)
        if num_sampled is not None and (not isinstance(num_sampled, int) or num_sampled < 1):
            raise InputError(f"num_sampled must be a positive int, got {num_sampled!r}")
        if num_sampled is not None and getattr(self.sampler, "unique", False) is True and num_sampled > num_classes:
            raise InputError(
                f"num_sampled={num_sampled} exceeds num_classes={num_classes}; sampling without replacement "
                f"(unique) needs num_sampled in [1, {num_classes}]"
            )
        self.num_sampled, self.sparse, self.generator = num_sampled, bool(sparse), generator

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_sampled={self.num_sampled}, sparse={self.sparse}"

    def _log_q_dtype(self, dtype: Optional[torch.dtype]) -> torch.dtype:
        return dtype if dtype is not None else _acc_dtype(self.weight.dtype)

    def sample(self, target: Tensor, dtype: Optional[torch.dtype] = None) -> CandidateSample:
        """Draw candidates for (N, T) targets (padding < 0) from the loss's sampler and generator.

        `dtype`: of the log expected counts (computed in fp64); default the table's (fp32, or fp64 for an fp64 table).
        """
        return self.sampler(target, self.num_sampled, self.generator, dtype=self._log_q_dtype(dtype))

    def _check_sample(self, sample: CandidateSample, t: Tensor) -> None:
        n = t.shape[0]
        if tuple(sample.log_q_true.shape) not in {tuple(t.shape), (n,)} and not (t.shape[1] == 1 and sample.log_q_true.numel() == n):
            raise InputError(f"sample.log_q_true has shape {tuple(sample.log_q_true.shape)}, expected {tuple(t.shape)}")
        if sample.ids.dim() not in (1, 2) or (sample.ids.dim() == 2 and sample.ids.shape[0] != n):
            raise InputError(f"sample.ids has shape {tuple(sample.ids.shape)}, expected (S,) or ({n}, S)")
        if tuple(sample.log_q_sampled.shape) != tuple(sample.ids.shape):
            raise InputError(f"sample.log_q_sampled has shape {tuple(sample.log_q_sampled.shape)}, expected {tuple(sample.ids.shape)}")
        if self.validate and sample.ids.numel() and bool((sample.ids >= self.num_classes).any()):
            raise InputError(f"sample.ids contains ids >= num_classes={self.num_classes}")

    def _resolve_sample(self, t: Tensor, sample: Optional[CandidateSample],
                        dtype: Optional[torch.dtype] = None) -> CandidateSample:
        """The sample to use: a fresh draw (log expected counts in `dtype`), or the caller's, checked, with a 1-d
        log_q_true made (N, 1)."""
        if sample is None:
            return self.sample(t, dtype)
        self._check_sample(sample, t)
        if sample.log_q_true.dim() == 1:
            sample = CandidateSample(sample.ids, sample.log_q_true.view(-1, 1), sample.log_q_sampled, sample.counts)
        return sample

    @property
    def tail(self):
        """The loss's last line on the corrected logits: a `functional.SoftmaxTail` or `functional.LogisticTail`."""
        raise NotImplementedError

    @fp32_under_autocast
    def corrected_logits(self, h: Tensor, t: Tensor, sample: Optional[CandidateSample]) -> SampledLogits:
        return self._sampled(h, t, sample, None)

    def _sampled(self, h: Tensor, t: Tensor, sample: Optional[CandidateSample], tail):
        """The corrected logits (tail None), or the loss per row (N,) computed by `tail` from them."""
        sample = self._resolve_sample(t, sample, self._compute_dtype(h))
        weight, bias, t, sample, sparse = self._candidates(h, t, sample)
        fn = sampled_logits if tail is None else functools.partial(sampled_loss, tail=tail)
        return fn(
            h, weight, bias, t, sample,
            subtract_log_q=self.subtract_log_q, remove_accidental_hits=self.remove_accidental_hits, sparse=sparse,
            softcap=self.logit_softcap,
        )

    def _candidates(self, h: Tensor, t: Tensor, sample: CandidateSample):
        """The table the true and sampled rows are gathered from, the targets and the sample in its row ids, and
        whether its gradients are sparse: this loss's own table here (a sharded loss gathers them from all ranks)."""
        return self.weight, self.bias, t, sample, self.sparse

    @fp32_under_autocast
    def _per_row(self, h: Tensor, t: Tensor, sample: Optional[CandidateSample]) -> Tensor:
        return self._sampled(h, t, sample, self.tail)  # (N,)

    def _loss(self, h, t, row_weight, sample):
        per_row = self._per_row(h, t, sample)  # (N,)
        return per_row if row_weight is None else (per_row * row_weight).sum()

    def _from_logits(self, s: SampledLogits) -> Tensor:
        """The loss per row from `corrected_logits` (what `forward` computes, fused where it can)."""
        return self.tail.generic(s)


class SampledSoftmaxLoss(SampledLossBase):
    """Sampled softmax (Jean et al. 2015; TensorFlow's `sampled_softmax_loss`): one candidate set per batch.

    With corrected logits o'_c = o_c − log E[count(c)] over the T true and S sampled classes (accidental hits
    removed), and soft labels y = 1/T on the true columns:

        loss_i = − Σ_c y_ic log softmax(o'_i)_c

    With `AllClassesSampler` (every class, log expected count 0) and accidental hits removed this is exactly the
    full softmax. Given the same candidates and expected counts, per-example losses equal
    `tf.nn.sampled_softmax_loss(..., sampled_values=...)`. Label smoothing spreads ε over the non-removed columns
    (over the draws: a deduplicated sample's column counts as often as it was drawn, so `unique="multiplicity"`
    leaves the estimator unchanged).

    Shape:
        hidden (..., d), target (...) or (..., T) -> () or (...) with reduction="none"

    Example:
        >>> loss_fn = SampledSoftmaxLoss(10_000, 32, num_sampled=64)
        >>> loss_fn(torch.randn(8, 32), torch.randint(10_000, (8,))).shape
        torch.Size([])
    """

    def __init__(self, num_classes: int, dim: int, *, subtract_log_q: bool = True, remove_accidental_hits: bool = True,
                 label_smoothing: float = 0.0, **kwargs):
        super().__init__(num_classes, dim, **kwargs)
        if not 0.0 <= label_smoothing <= 1.0:
            raise InputError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        self.subtract_log_q, self.remove_accidental_hits = bool(subtract_log_q), bool(remove_accidental_hits)
        self.label_smoothing = float(label_smoothing)

    @property
    def tail(self) -> SoftmaxTail:
        return SoftmaxTail(self.label_smoothing)


class NCELoss(SampledLossBase):
    """Noise-contrastive estimation (Gutmann & Hyvärinen 2010; TensorFlow's `nce_loss`).

    Logistic regression of "true vs noise" on the corrected logits o'_c = o_c − log(k·q_c) (k = S draws):

        loss_i = Σ_{t} BCE(o'_it, 1/T) + Σ_{s} BCE(o'_is, 0),   BCE(x, y) = −y log σ(x) − (1 − y) log σ(−x)

    Accidental hits are kept by default (TF's nce_loss); `remove_accidental_hits=True` gives "sampled logistic".

    Shape:
        hidden (..., d), target (...) or (..., T) -> () or (...) with reduction="none"
    """

    def __init__(self, num_classes: int, dim: int, *, remove_accidental_hits: bool = False, **kwargs):
        super().__init__(num_classes, dim, **kwargs)
        self.remove_accidental_hits = bool(remove_accidental_hits)

    @property
    def tail(self) -> LogisticTail:
        return LogisticTail(per_true=False)  # TF's labels: 1/T on each true column


_COLLISIONS = ("skip", "resample", "keep")


class NegativeSamplingLoss(SampledLossBase):
    """Skip-gram negative sampling (Mikolov et al. 2013; word2vec/gensim/fastText), no log-Q correction.

        loss_i = − Σ_t log σ(o_it) − Σ_{s} log σ(−o_is)

    Args (besides SampledLossBase's):
        num_sampled: negatives per example (word2vec's `negative`, default 5).
        shared: one negative set for the whole batch instead of one per example (per-example is word2vec's way).
        collisions: a negative equal to a true class is "skip"ped (word2vec/gensim: dropped from the sum),
            "resample"d (fastText: drawn again, so a row's negatives follow q conditioned on not being its
            target; per-example negatives only), or "keep"t (TensorFlow: counted as a negative).
        bias: no bias by default, as word2vec.

    Shape:
        hidden (..., d), target (...) or (..., T) -> () or (...) with reduction="none"
    """

    subtract_log_q = False

    def __init__(self, num_classes: int, dim: int, *, num_sampled: int = 5, shared: bool = False,
                 collisions: str = "skip", bias: Union[bool, Tensor, None] = False, **kwargs):
        super().__init__(num_classes, dim, num_sampled=num_sampled, bias=bias, **kwargs)
        if collisions not in _COLLISIONS:
            raise InputError(f"collisions must be one of {_COLLISIONS}, got {collisions!r}{did_you_mean(str(collisions), _COLLISIONS)}")
        if shared and collisions == "resample":
            # A shared negative serves every row, so "drawn again when it equals a target" can only mean "equals
            # any row's target": frequent classes (in nearly every batch) would almost never be negatives, a
            # distribution that depends on the batch and matches neither fastText's rule nor log_q.
            raise InputError(
                "collisions='resample' redraws a negative equal to its row's target, which needs per-example "
                "negatives (shared=False); use collisions='skip' with shared negatives (a shared negative is "
                "dropped only from the rows whose target it equals)"
            )
        self.shared, self.collisions = bool(shared), collisions
        self.remove_accidental_hits = collisions != "keep"

    def sample(self, target: Tensor, dtype: Optional[torch.dtype] = None) -> CandidateSample:
        dtype = self._log_q_dtype(dtype)
        s = self.sampler(target, self.num_sampled, self.generator, per_example=not self.shared, dtype=dtype)
        if self.collisions != "resample":
            return s
        ids = s.ids.clone()  # (N, S): per-example (shared negatives cannot be resampled, see __init__)
        for _ in range(64):  # each round redraws only the colliding entries; P(collision) is small
            hit = ((ids.unsqueeze(-1) == target.unsqueeze(1)) & (target.unsqueeze(1) >= 0)).any(-1)  # (N, S)
            n_hit = int(hit.sum())
            if n_hit == 0:
                break
            ids[hit] = self.sampler.draw(n_hit, self.generator, ids.device)
        # whatever still collides after the rounds (a class with q≈1) is skipped by the accidental-hit mask
        log_q = self.sampler._log_prob64(ids) + math.log(self.num_sampled)  # (N, S)
        return CandidateSample(ids, s.log_q_true, log_q.to(dtype), s.counts)

    @property
    def tail(self) -> LogisticTail:
        return LogisticTail(per_true=True)  # each positive its own term (not 1/T)


class InBatchSoftmaxLoss(SampledSoftmaxLoss):
    """Softmax over the batch's own targets as candidates (in-batch negatives), with sampling-bias correction.

    The candidates of row i are the targets of all rows; o'_c = o_c − log E[count of c in a batch] (Yi et al.
    2019), estimated from `counts` (unigram^alpha) when given, else by a streaming frequency estimate updated in
    training mode (see `InBatchSampler`). Every candidate column whose id equals one of row i's true classes —
    its own positive and any duplicate of it elsewhere in the batch — is removed, so a positive never appears as
    its own negative.

    Shape:
        hidden (..., d), target (...) -> () or (...) with reduction="none"
    """

    def __init__(self, num_classes: int, dim: int, *, counts=None, alpha: float = 1.0, ema: float = 0.01,
                 subtract_log_q: bool = True, **kwargs):
        if kwargs.pop("num_sampled", None) is not None:
            raise InputError("InBatchSoftmaxLoss takes no num_sampled: its candidates are the batch's own targets")
        sampler = kwargs.pop("sampler", None)
        if sampler is None or sampler == "inbatch":
            sampler = InBatchSampler(num_classes, counts=counts, alpha=alpha, ema=ema)
        elif not isinstance(sampler, InBatchSampler):
            raise InputError(
                f"InBatchSoftmaxLoss draws its candidates from the batch; got sampler={sampler!r}. "
                f"Use loss 'sampled' for a sampler, or pass counts= for the in-batch correction"
            )
        super().__init__(num_classes, dim, sampler=sampler, num_sampled=None, subtract_log_q=subtract_log_q,
                         remove_accidental_hits=True, **kwargs)


class AdaptiveSoftmaxLoss(OutputLayerLoss):
    """PyTorch's `nn.AdaptiveLogSoftmaxWithLoss` (Grave et al. 2017) behind this package's interface.

    A frequent-class head plus tail clusters of shrinking dimension (ids must be sorted by decreasing frequency).
    Adds what the torch module lacks (pytorch/pytorch#12675): `reduction` and `ignore_index` as `F.cross_entropy`,
    (..., d) hidden states, and `exact_nll` / `logits` / `predict_topk`. The adaptive model is a different output
    layer (it has no [V, d] table, so it cannot borrow `weight=`), but its probabilities are exactly normalised, so
    `exact_nll` is its exact NLL and compares with every other loss's.

    Args (besides OutputLayerLoss's reduction, ignore_index, memory_budget_mb, validate):
        cutoffs: increasing class-id boundaries of the clusters, in (0, V); default [V/20, V/4] (when distinct).
        div_value: dimension shrink factor per cluster (torch's default 4).

    Shape:
        hidden (..., d), target (...) -> () or (...) with reduction="none"
    """

    def __init__(self, num_classes: int, dim: int, *, cutoffs=None, div_value: float = 4.0, head_bias: bool = False,
                 weight: Optional[Tensor] = None, bias=None, reduction: str = "mean", ignore_index: int = -100,
                 memory_budget_mb: Optional[float] = None, validate: bool = True):
        if weight is not None:
            raise InputError("AdaptiveSoftmaxLoss has no [V, d] output table to tie: it cannot take weight=")
        nn.Module.__init__(self)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise InputError(f"num_classes must be an int >= 2 for the adaptive softmax, got {num_classes!r}")
        if not isinstance(dim, int) or dim < 1:
            raise InputError(f"dim must be a positive int, got {dim!r}")
        if reduction not in _REDUCTIONS:
            raise InputError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        if cutoffs is None:  # at most as many tail clusters as keep a projection of >= 1 dimension
            cutoffs = sorted({c for c in (num_classes // 20, num_classes // 4) if 0 < c < num_classes})
            cutoffs = [c for i, c in enumerate(cutoffs) if dim // div_value ** (i + 1) >= 1] or cutoffs[-1:]
        cutoffs = list(cutoffs)
        if not cutoffs or cutoffs != sorted(set(cutoffs)) or cutoffs[0] <= 0 or cutoffs[-1] >= num_classes:
            raise InputError(f"cutoffs must be increasing ids in (0, {num_classes}), got {cutoffs}")
        self.num_classes, self.dim = num_classes, dim
        self.reduction, self.ignore_index = reduction, int(ignore_index)
        self.memory_budget_mb, self.validate = memory_budget_mb, validate
        self.weight = self.bias = None
        self.asm = nn.AdaptiveLogSoftmaxWithLoss(dim, num_classes, cutoffs, div_value=div_value, head_bias=head_bias)

    def _h(self, hidden: Tensor) -> Tensor:
        return hidden.to(self.asm.head.weight.dtype)

    def _loss(self, h, t, row_weight, sample):
        out = self.asm(self._h(h), t[:, 0].clamp_min(0))  # log-prob of each target, computed per cluster
        per_row = -out.output  # (N,)
        return per_row if row_weight is None else (per_row * row_weight.to(per_row.dtype)).sum()

    def _row_blocks(self, n: int) -> int:
        budget = (self.memory_budget_mb or 512) * 2**20
        return max(1, int(budget // (4 * self.num_classes)))

    @fp32_under_autocast
    def logits(self, hidden: Tensor) -> Tensor:
        """Log-probabilities (..., V): valid logits of the normalised adaptive model. Small batches only."""
        return self.asm.log_prob(self._h(hidden).reshape(-1, self.dim)).reshape(*hidden.shape[:-1], self.num_classes)

    @fp32_under_autocast
    @torch.no_grad()
    def exact_nll(self, hidden: Tensor, target: Tensor) -> Tensor:
        h, t, _ = self._flatten(hidden, target, allow_multi=True)
        n, n_true = t.shape
        hh = h.unsqueeze(1).expand(n, n_true, self.dim).reshape(-1, self.dim) if n_true > 1 else h
        tt = t.reshape(-1)
        nll = -self.asm(self._h(hh), tt.clamp_min(0)).output
        return (nll * (tt >= 0)).reshape(target.shape)

    @fp32_under_autocast
    @torch.no_grad()
    def predict_topk(self, hidden: Tensor, k: int) -> tuple[Tensor, Tensor]:
        self._no_softcap("predict_topk")
        if not 1 <= k <= self.num_classes:
            raise InputError(f"k must be in [1, {self.num_classes}], got {k}")
        if hidden.shape[-1] != self.dim:
            raise InputError(f"hidden has last dimension {hidden.shape[-1]} but the loss was built with dim={self.dim}")
        h = self._h(hidden.reshape(-1, self.dim))
        rows = self._row_blocks(h.shape[0])
        starts = range(0, max(h.shape[0], 1), rows)  # one (empty) block for an empty batch
        vals, ids = zip(*(self.asm.log_prob(h[i : i + rows]).topk(k, dim=1) for i in starts))
        ids_t, probs = torch.cat(ids), torch.cat(vals).exp()
        return ids_t.reshape(*hidden.shape[:-1], k), probs.reshape(*hidden.shape[:-1], k)

    @fp32_under_autocast
    @torch.no_grad()
    def exact_nll_and_rank(self, hidden: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The base class's one-pass NLL and target rank (greater, ties), from the adaptive model's log-probs."""
        h, t, _ = self._flatten(hidden, target, allow_multi=False)
        h, tt = self._h(h), t.reshape(-1)
        nll = torch.zeros(tt.shape[0], dtype=_acc_dtype(h.dtype), device=h.device)
        greater = torch.zeros(tt.shape[0], dtype=torch.long, device=h.device)
        ties = torch.zeros(tt.shape[0], dtype=torch.long, device=h.device)
        rows = self._row_blocks(h.shape[0])
        for i in range(0, h.shape[0], rows):
            lp = self.asm.log_prob(h[i : i + rows]).to(nll.dtype)  # (r, V)
            ti = tt[i : i + rows].clamp_min(0)
            lt = lp.gather(1, ti[:, None])  # (r, 1)
            lp.scatter_(1, ti[:, None], -math.inf)  # the target's own column neither outranks nor ties it
            nll[i : i + rows] = -lt[:, 0]
            greater[i : i + rows], ties[i : i + rows] = (lp > lt).sum(1), (lp == lt).sum(1)
        valid = tt >= 0
        return tuple((x * valid).reshape(target.shape) for x in (nll, greater, ties))


LOSSES: dict[str, type[OutputLayerLoss]] = {
    "full": FullSoftmaxLoss,
    "sampled": SampledSoftmaxLoss,
    "nce": NCELoss,
    "negative": NegativeSamplingLoss,
    "inbatch": InBatchSoftmaxLoss,
    "ova": OneVsAllLoss,
    "adaptive": AdaptiveSoftmaxLoss,
}


def build_loss(name: str, num_classes: int, dim: int, **kwargs) -> OutputLayerLoss:
    """Build a loss by its short registry name (`LOSSES`): "full", "sampled", "nce", "negative", "inbatch", "ova",
    "adaptive".

    Keyword arguments go to the loss's constructor (e.g. sampler="unigram", counts=..., num_sampled=1024).

    Example:
        >>> build_loss("sampled", 50_000, 64, sampler="log_uniform", num_sampled=256).num_sampled
        256
    """
    if name not in LOSSES:
        raise InputError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}{did_you_mean(str(name), LOSSES)}")
    cls = LOSSES[name]
    if not cls.is_sampled:
        for k in ("sampler", "num_sampled", "sparse", "generator", "counts"):
            if k in kwargs and kwargs[k] is not None and not (k == "sparse" and kwargs[k] is False):
                raise InputError(f"loss {name!r} is exact and takes no {k!r} argument")
            kwargs.pop(k, None)
    return cls(num_classes, dim, **kwargs)
