"""Hugging Face causal LMs trained with any of this package's output losses, and evaluated exactly.

    from sampledsoftmax.hf import patch, token_counts
    model = AutoModelForCausalLM.from_config(config)          # or from_pretrained(...)
    patch(model, "sampled", sampler="unigram", counts=token_counts(train_ids, model.config.vocab_size),
          num_sampled=8192)
    out = model(input_ids, attention_mask=mask, labels=labels)  # out.loss: sampled softmax; out.logits: None
    model.eval(); model(input_ids, labels=labels).loss          # the exact full-softmax loss, chunked

What `patch` changes, on this instance only (never a class, never `torch.nn.functional`):
- Its `forward`, when called with `labels` (and optionally `shift_labels`), runs the model's own forward without them, with a
  forward pre-hook on `get_output_embeddings()` that takes the head's input (the hidden states after everything the
  model does before its head, `logits_to_keep` applied) and hands the head one position per row instead, so the
  model's own head and logit code run on a B×V slice, never on N×V. The loss is then computed from the hidden states
  and the head's weight (and bias) by the chosen loss: labels shifted exactly as HF's `ForCausalLMLoss` does
  (`shift_labels` used as given, never shifted again), `-100` positions dropped before the projection and the
  sampling, `num_items_in_batch` honoured (the sum divided by it, moved to the loss's device, never recounted).
  Called without labels (generation), the forward is the model's own, untouched.
- In `model.eval()` the loss is always the exact softmax (chunked, no N×V tensor), whatever loss trains, so an
  evaluation perplexity is the true one. Logits: None unless `return_logits=True` (per patch or per call); then the
  model's own head computes them over every position (N×V, as without the patch).
- Logit transforms that configs declare are applied in every loss: final-logit soft-capping
  (`final_logit_softcapping`, Gemma 2/3) and logit scaling (`logit_scale`, Cohere; `logits_scaling`, Granite). At
  patch time a probe (6 tokens, eval mode, no gradient) compares the model's own logits with what the loss will use;
  a head this package cannot express (another transform, a non-linear head) is refused with one error, never
  silently trained on a different model.

Samplers for subword vocabularies (whose ids are not sorted by frequency): "unigram" with `counts` from
`token_counts` (the best proposal when counts are known), "uniform", "learned_unigram". "log_uniform" assumes ids
sorted by decreasing frequency (true of this package's own BPE, not of most HF tokenizers). Default: "unigram" when
`counts` is given, else "uniform".

`FinishWithExact(fraction)` is a `transformers.TrainerCallback` that switches a patched model to the exact loss for
the last `fraction` of the training steps (sampled, then exact); `use_exact(model, True)` does it by hand.

Not supported: `copy.deepcopy` of a patched model (`unpatch` first), a head adapted by PEFT (LoRA on the decoder is
fine), Trainer's `label_smoothing_factor` (it needs logits; pass `label_smoothing=` to `patch` for the exact loss),
FSDP / DeepSpeed ZeRO-3 sharding of the head (the loss reads the head's weight outside the head's own forward; DDP
and single-device training are fine).
"""

from __future__ import annotations

import functools
from typing import Any, Iterable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

try:
    import transformers
except ImportError:  # pragma: no cover - exercised by users without the extra
    raise ImportError("sampledsoftmax.hf needs transformers: pip install 'sampledsoftmax[hf]'") from None

from .errors import InputError, did_you_mean
from .functional import soft_cap
from .losses import FullSoftmaxLoss, build_loss

__all__ = ["HF_LOSSES", "patch", "unpatch", "is_patched", "use_exact", "token_counts", "FinishWithExact"]

HF_LOSSES = ("full", "sampled", "nce", "negative", "inbatch")
IGNORE_INDEX = -100  # HF's label padding
_STATE = "_sampledsoftmax_patch"


def _text_config(model: nn.Module):
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        return config.get_text_config()
    return config


def _logit_transform(model: nn.Module) -> tuple[Optional[float], float]:
    """(softcap, scale) that the model's config declares for its final logits: y = cap·tanh(scale·z / cap)."""
    cfg = _text_config(model)
    softcap = getattr(cfg, "final_logit_softcapping", None)
    scale = 1.0
    if getattr(cfg, "logit_scale", None) is not None:  # Cohere: logits * logit_scale
        scale *= float(cfg.logit_scale)
    if getattr(cfg, "logits_scaling", None) is not None:  # Granite: logits / logits_scaling
        scale /= float(cfg.logits_scaling)
    return (None if softcap is None else float(softcap)), scale


class _Patch:
    """What `patch` keeps on the instance (in its __dict__, not as a submodule: no new keys in its state_dict)."""

    def __init__(self, model, head, loss, options, return_logits, reduction, label_smoothing):
        self.model, self.head = model, head
        self.loss_name, self.options = loss, dict(options)
        self.return_logits, self.reduction = bool(return_logits), reduction
        self.softcap, self.scale = _logit_transform(model)
        if self.scale != 1.0 and head.bias is not None:
            raise InputError(f"{type(model).__name__}: a scaled logit with a head bias is not supported")
        self.exact_only = False
        self.had_forward = "forward" in model.__dict__
        self.forward = model.forward  # the model's own (bound) forward
        self.label_smoothing = float(label_smoothing)
        self._build()
        self.active = False
        self.slice_head = True
        self.captured: list[Tensor] = []
        self.hook = head.register_forward_pre_hook(self._head_pre_hook)

    def _build(self) -> None:
        v, d = self.head.weight.shape
        inner = "none" if self.reduction == "none" else "sum"
        common = dict(weight=self.head.weight, bias=self.head.bias, reduction=inner, ignore_index=IGNORE_INDEX,
                      logit_softcap=self.softcap)
        budget = self.options.get("memory_budget_mb")
        self.exact = FullSoftmaxLoss(v, d, memory_budget_mb=budget, label_smoothing=self.label_smoothing, **common)
        self._sampler_device = None
        if self.loss_name == "full":
            self.train_loss = self.exact
            return
        opts = dict(self.options)
        if self.loss_name in ("sampled", "nce", "negative") and opts.get("sampler") is None:
            opts["sampler"] = "unigram" if opts.get("counts") is not None else "uniform"
        self.train_loss = build_loss(self.loss_name, v, d, **common, **opts)

    # -- the hook and the forward --------------------------------------------------------------------------------

    def _head_pre_hook(self, module, args):
        if not self.active:
            return None
        (h, *rest) = args
        self.captured.append(h)
        if self.slice_head:  # the model's own head and logit code run on one position per row
            return (h[..., -1:, :] if h.dim() >= 3 else h[-1:], *rest)
        return None

    def run(self, args, kwargs, want_logits: bool):
        self.active, self.slice_head, self.captured = True, not want_logits, []
        try:
            out = self.forward(*args, **kwargs)
        finally:
            self.active = False
        captured, self.captured = self.captured, []
        if len(captured) != 1:
            raise InputError(
                f"{type(self.model).__name__}: its forward called the output embeddings {len(captured)} times "
                f"(expected once); sampledsoftmax.hf supports causal LMs with one output head"
            )
        return out, captured[0]

    def _bound(self) -> None:
        """Re-bind the losses if the head's tensors were replaced (resize_token_embeddings, re-tying)."""
        if self.exact.weight is not self.head.weight or self.exact.bias is not self.head.bias:
            self._build()

    def loss(self, h: Tensor, labels: Optional[Tensor], shift_labels: Optional[Tensor], num_items_in_batch,
             exact: bool) -> Tensor:
        self._bound()
        if shift_labels is None:  # exactly ForCausalLMLoss: pad with -100, then shift
            shift_labels = F.pad(labels.to(h.device), (0, 1), value=IGNORE_INDEX)[..., 1:]
        t = shift_labels.to(h.device).reshape(-1)
        d = h.shape[-1]
        hf = h.reshape(-1, d)
        if hf.shape[0] != t.numel():
            raise InputError(
                f"labels give {t.numel()} targets but the head saw {hf.shape[0]} positions; with logits_to_keep, "
                f"pass labels (or shift_labels) for the kept positions only"
            )
        keep = (t != IGNORE_INDEX).nonzero().squeeze(1)  # (M,) the -100 positions go before any product
        hv, tv = hf.index_select(0, keep), t.index_select(0, keep)  # (M, d), (M,)
        if self.scale != 1.0:
            hv = hv * self.scale  # (s·h)·w = s·(h·w): the scale rides on the hidden states
        fn = self.exact if exact else self.train_loss
        fn.train(self.model.training)  # stateful samplers learn in training mode only
        if getattr(fn, "sampler", None) is not None and self._sampler_device != h.device:
            fn.sampler.to(h.device)  # its tables follow the model (they are not the model's buffers)
            self._sampler_device = h.device
        if self.reduction == "none":
            per = fn(hv, tv)  # (M,)
            full = torch.zeros(t.shape[0], dtype=per.dtype, device=per.device).index_put((keep,), per)
            return full.view(shift_labels.shape)
        total = fn(hv, tv)  # () sum over the M targets
        if num_items_in_batch is not None:  # HF's contract: the sum divided by the caller's count
            if torch.is_tensor(num_items_in_batch):
                num_items_in_batch = num_items_in_batch.to(total.device)
            return total / num_items_in_batch
        if self.reduction == "sum":
            return total
        return total / max(int(keep.numel()), 1)

    def verify(self) -> None:
        """Compare the model's own logits with what the losses use, on a 6-token probe (eval mode, no gradient)."""
        model, w = self.model, self.head.weight
        if w.device.type == "meta":
            raise InputError(f"{type(model).__name__}: its head is on the meta device; load the weights first "
                             f"(or patch(..., verify=False))")
        v = w.shape[0]
        ids = torch.randint(v, (1, 6), generator=torch.Generator().manual_seed(0)).to(w.device)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out, h = self.run((), dict(input_ids=ids, use_cache=False, return_dict=True), want_logits=True)
                ref = out.logits.float()
                z = (h.float() * self.scale) @ w.float().t()
                if self.head.bias is not None:
                    z = z + self.head.bias.float()
                ours = soft_cap(z, self.softcap)
        finally:
            model.train(was_training)
        if ours.shape != ref.shape:
            raise InputError(f"{type(model).__name__}: its logits have shape {tuple(ref.shape)} but its head gives "
                             f"{tuple(ours.shape)}; not a causal LM head sampledsoftmax can express")
        err = float((ours - ref).abs().max())
        tol = (1e-4 if w.dtype in (torch.float32, torch.float64) else 3e-2) * max(1.0, float(ref.abs().max()))
        if not err <= tol:
            raise InputError(
                f"{type(model).__name__}: its logits differ from cap/scale(hidden @ head.weight.T + bias) by {err:.3g}: "
                f"its forward transforms the logits in a way sampledsoftmax does not know (it applies "
                f"final_logit_softcapping, logit_scale and logits_scaling); patch(..., verify=False) skips this check"
            )


def _state(model: nn.Module) -> Optional[_Patch]:
    for m in model.modules():
        st = m.__dict__.get(_STATE)
        if st is not None:
            return st
    return None


def is_patched(model: nn.Module) -> bool:
    return _state(model) is not None


def _patched_forward(self, *args, labels=None, shift_labels=None, num_items_in_batch=None, return_logits=None,
                     **kwargs):
    st: _Patch = self.__dict__[_STATE]
    if labels is None:  # generation, feature extraction: the model's own forward (HF computes no loss either)
        if shift_labels is not None:
            kwargs["shift_labels"] = shift_labels
        if num_items_in_batch is not None:
            kwargs["num_items_in_batch"] = num_items_in_batch
        return st.forward(*args, **kwargs)
    want_logits = st.return_logits if return_logits is None else bool(return_logits)
    return_dict = kwargs.pop("return_dict", None)
    out, h = st.run(args, dict(kwargs, return_dict=True), want_logits)
    loss = st.loss(h, labels, shift_labels, num_items_in_batch, exact=st.exact_only or not self.training)
    fields = {k: v for k, v in out.items() if k not in ("loss", "logits")}
    out = type(out)(loss=loss, logits=out.logits if want_logits else None, **fields)
    if return_dict is False:
        return out.to_tuple()
    return out


def patch(model: nn.Module, loss: str = "full", *, return_logits: bool = False, reduction: str = "mean",
          label_smoothing: float = 0.0, verify: bool = True, **loss_options: Any) -> nn.Module:
    """Train `model`'s output layer with `loss` ("full", "sampled", "nce", "negative", "inbatch"); evaluate exactly.

    Args:
        model: a causal LM with `get_output_embeddings()` returning an `nn.Linear` head (tied or not, bias or not);
            a PEFT model is fine (patch it or its base model).
        loss: the training loss; `loss_options` go to its constructor (`num_sampled`, `sampler`, `counts`,
            `remove_accidental_hits`, `memory_budget_mb`, ...; see `sampledsoftmax.build_loss`).
        return_logits: also return the logits (N×V, computed by the model's own head) on calls with labels;
            per call: `model(..., return_logits=True)`.
        reduction: "mean" (HF's), "sum", or "none" (per-token losses of the shifted labels' shape, 0 where
            ignored); `num_items_in_batch` (Trainer's gradient accumulation) divides the sum for "mean"/"sum".
        label_smoothing: for the exact loss (training with "full", and every evaluation).
        verify: compare the model's logits with the losses' on a 6-token probe; refuse on a mismatch.

    Returns the model (patched in place). Patching a patched model replaces its patch.
    """
    if loss not in HF_LOSSES:
        hint = " (the adaptive softmax and one-vs-all replace the head, which this patch keeps)" \
            if loss in ("adaptive", "ova") else did_you_mean(str(loss), HF_LOSSES)
        raise InputError(f"loss {loss!r} is not available for HF models; choose one of {list(HF_LOSSES)}{hint}")
    if reduction not in ("mean", "sum", "none"):
        raise InputError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if loss_options.get("sparse"):
        raise InputError("sparse=True is not available for HF models: their head (often tied) takes dense gradients")
    if not callable(getattr(model, "get_output_embeddings", None)):
        raise InputError(f"{type(model).__name__} has no get_output_embeddings(): not a Hugging Face model")
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        raise InputError(f"{type(model).__name__} is an encoder-decoder model; sampledsoftmax.hf patches causal LMs "
                         f"(their labels are shifted inside the model; an encoder-decoder's are not)")
    loss_type = getattr(model, "loss_type", None)
    if isinstance(loss_type, str):
        from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss

        if LOSS_MAPPING.get(loss_type, ForCausalLMLoss) is not ForCausalLMLoss:
            raise InputError(f"{type(model).__name__}'s loss is {loss_type!r}, not a causal LM's; sampledsoftmax.hf "
                             f"patches causal LMs (ForCausalLM)")
    head = model.get_output_embeddings()
    if head is None:
        raise InputError(f"{type(model).__name__}.get_output_embeddings() is None: not a model with an LM head")
    if type(head) is not nn.Linear:
        raise InputError(
            f"{type(model).__name__}'s output layer is a {type(head).__module__}.{type(head).__name__}, not a plain "
            f"torch.nn.Linear: sampledsoftmax computes the loss from the head's weight and bias, which this head does "
            f"not express (a PEFT adapter on the head, a quantized or non-linear head)"
        )
    if is_patched(model):
        unpatch(model)
    st = _Patch(model, head, loss, loss_options, return_logits, reduction, label_smoothing)
    model.__dict__[_STATE] = st

    @functools.wraps(st.forward)  # inspect.signature(model.forward) stays the model's (Trainer reads its columns)
    def forward(*args, **kwargs):
        return _patched_forward(model, *args, **kwargs)

    model.forward = forward
    try:
        if verify:
            st.verify()
    except BaseException:
        unpatch(model)
        raise
    return model


def unpatch(model: nn.Module) -> nn.Module:
    """Undo `patch`: the model's own forward and head, no hook left. A model that is not patched is returned as is."""
    for m in model.modules():
        st = m.__dict__.pop(_STATE, None)
        if st is None:
            continue
        st.hook.remove()
        if st.had_forward:
            m.forward = st.forward
        else:
            m.__dict__.pop("forward", None)
    return model


def use_exact(model: nn.Module, exact: bool = True) -> None:
    """Train a patched model with the exact softmax from now on (True) or with its patched loss again (False)."""
    st = _state(model)
    if st is None:
        raise InputError("use_exact: the model is not patched; call sampledsoftmax.hf.patch(model, ...) first")
    st.exact_only = bool(exact)


def token_counts(data: Union[Iterable, Any], vocab_size: int, column: str = "input_ids") -> Tensor:
    """How often each token id occurs in a tokenized dataset: the `counts` of the "unigram" sampler.

    `data`: an iterable of token id sequences (lists, numpy arrays, tensors), of dicts holding them under `column`
    (a `datasets.Dataset`, a list of tokenizer outputs), or one tensor/array of ids. Returns int64 (vocab_size,).
    """
    counts = np.zeros(vocab_size, dtype=np.int64)

    def add(ids) -> None:
        a = np.asarray(ids.cpu() if torch.is_tensor(ids) else ids, dtype=np.int64).reshape(-1)
        a = a[a >= 0]  # -100 label padding
        if a.size and int(a.max()) >= vocab_size:
            raise InputError(f"token_counts: token id {int(a.max())} >= vocab_size={vocab_size}")
        counts[:] += np.bincount(a, minlength=vocab_size)

    if torch.is_tensor(data) or isinstance(data, np.ndarray):
        add(data)
    else:
        for row in data:
            add(row[column] if isinstance(row, dict) or hasattr(row, "keys") else row)
    return torch.from_numpy(counts)


class FinishWithExact(transformers.TrainerCallback):
    """Sampled, then exact: switch a patched model to the exact softmax for the last `fraction` of the steps.

        trainer = Trainer(model=patch(model, "sampled", ...), ..., callbacks=[FinishWithExact(0.1)])
    """

    def __init__(self, fraction: float = 0.1):
        if not 0.0 <= fraction <= 1.0:
            raise InputError(f"FinishWithExact: fraction must be in [0, 1], got {fraction}")
        self.fraction = float(fraction)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if model is not None and state.max_steps:
            use_exact(model, state.global_step >= (1.0 - self.fraction) * state.max_steps)
