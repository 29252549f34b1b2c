"""Training-step time and peak memory of a Hugging Face causal LM with each way of computing its loss, side by side.

One *cell* is one (row, V): a Llama-style decoder built from a config (random weights, nothing downloaded; d=256,
2 layers, untied head by default) trained for `warmup` + `repeats` steps of `batch` sequences of `seq` tokens
(forward, backward, SGD step; labels = the inputs, HF-shifted). Rows:

- ``hf``: the model's own forward and `ForCausalLMLoss` (the N×V logits materialised, upcast to fp32).
- ``exact``: ``sampledsoftmax.hf.patch(model, "full")`` (chunked exact softmax, no N×V tensor).
- ``sampled``: ``patch(model, "sampled", num_sampled=S, sampler="uniform")``.
- ``cce``: Apple's Cut Cross-Entropy, ``linear_cross_entropy(h, lm_head.weight, labels, shift=1, impl=...)`` on the
  decoder's hidden states (``torch_compile`` on a CPU, its Triton ``cce`` kernel on CUDA; compiled in the warm-up).
- ``liger``: Liger-Kernel's fused linear cross entropy (CUDA only, where installed).

Each cell runs in a fresh child process. Memory: on a CPU the peak RSS of the process above its RSS once the model
exists (before the first step), on CUDA the `max_memory_allocated` delta; so "peak extra MB" is what the step
itself needs (activations, logits, gradients). This module measures; it asserts nothing about speed.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch

from ..errors import ConfigError
from .bench import _Memory, machine_info
from .child import run_in_child

ROWS = ("hf", "exact", "sampled", "cce", "liger")
_COLUMNS = ("V", "loss path", "step ms (median)", "peak extra MB", "time vs HF", "time vs CCE", "memory vs CCE")


@dataclass
class HFBenchConfig:
    sizes: tuple[int, ...] = (32_000, 128_000, 256_000)
    rows: tuple[str, ...] = ("hf", "exact", "sampled", "cce")
    dim: int = 256
    layers: int = 2
    heads: int = 4
    seq: int = 512
    batch: int = 4
    num_sampled: int = 8192
    warmup: int = 1
    repeats: int = 3
    device: str = "cpu"
    seed: int = 0


def _model(cfg: HFBenchConfig, vocab: int, device: str):
    import transformers

    torch.manual_seed(cfg.seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=cfg.dim, intermediate_size=4 * cfg.dim, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads, max_position_embeddings=cfg.seq,
        tie_word_embeddings=False)
    return transformers.LlamaForCausalLM(config).to(device)


def _loss_fn(row: str, model, cfg: HFBenchConfig, device: str):
    """A function of (ids) -> scalar training loss, for one row."""
    if row == "hf":
        return lambda ids: model(input_ids=ids, labels=ids).loss
    if row in ("exact", "sampled"):
        from ..hf import patch

        if row == "exact":
            patch(model, "full")
        else:
            patch(model, "sampled", num_sampled=cfg.num_sampled, sampler="uniform")
        return lambda ids: model(input_ids=ids, labels=ids).loss
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    if row == "cce":
        try:
            from cut_cross_entropy import linear_cross_entropy
        except ImportError:
            raise ConfigError("row cce needs Apple's Cut Cross-Entropy: pip install cut-cross-entropy") from None
        impl = "cce" if device == "cuda" else "torch_compile"
        return lambda ids: linear_cross_entropy(decoder(input_ids=ids).last_hidden_state, head.weight, ids,
                                                shift=1, impl=impl)
    if row == "liger":
        if device != "cuda":
            raise ConfigError("row liger runs on CUDA only (Liger-Kernel is Triton)")
        try:
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
        except ImportError:
            raise ConfigError("row liger needs Liger-Kernel: pip install liger-kernel") from None
        lce = LigerFusedLinearCrossEntropyLoss()

        def liger(ids):
            h = decoder(input_ids=ids).last_hidden_state[:, :-1].reshape(-1, cfg.dim)
            return lce(head.weight, h, ids[:, 1:].reshape(-1))

        return liger
    raise ConfigError(f"unknown row {row!r}; choose from {list(ROWS)}")


def run_cell(cfg: HFBenchConfig, row: str, vocab: int) -> dict[str, Any]:
    device = cfg.device
    model = _model(cfg, vocab, device)
    model.train()
    loss_fn = _loss_fn(row, model, cfg, device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    ids = torch.randint(vocab, (cfg.batch, cfg.seq), generator=gen).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    mem = _Memory(torch.device(device))
    mem.start()
    times, last = [], float("nan")
    for i in range(cfg.warmup + cfg.repeats):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(ids)
        loss.backward()
        opt.step()
        sync()
        if i >= cfg.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
        last = float(loss.detach())
    return dict(row=row, V=vocab, median_ms=statistics.median(times), min_ms=min(times), times_ms=times,
                peak_extra_mb=mem.peak_extra_mb(), last_loss=last, device=device, error=None)


def run(cfg: HFBenchConfig, progress=sys.stderr) -> list[dict[str, Any]]:
    out = []
    for vocab in cfg.sizes:
        for row in cfg.rows:
            t0 = time.time()
            kind, value = run_in_child(run_cell, cfg, row, vocab)
            if kind == "ok":
                result = value
            else:
                why = value if kind == "user_error" else (f"{value} (traceback above)" if kind == "error"
                                                           else f"cell process {value}")
                result = dict(row=row, V=vocab, median_ms=None, peak_extra_mb=None, error=str(why))
            out.append(result)
            if progress is not None:
                done = "failed: " + result["error"] if result.get("error") else \
                    f"{result['median_ms']:.0f} ms, {result['peak_extra_mb']:.0f} MB"
                print(f"  V={vocab} {row}: {done} ({time.time() - t0:.0f} s)", file=progress, flush=True)
    return out


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def format_markdown(cfg: HFBenchConfig, rows: list[dict[str, Any]]) -> str:
    m = machine_info(cfg.device)
    gpu = f" ({m['gpu']})" if m.get("gpu") else ""
    head = (f"machine: {m['cpu_count']} CPUs ({m['cpu_model']}), torch {m['torch']}, {m['threads']} threads, "
            f"device {cfg.device}{gpu}; Llama-style d={cfg.dim}, {cfg.layers} layers, batch {cfg.batch} x "
            f"{cfg.seq} tokens, fp32, SGD; sampled S={cfg.num_sampled} (uniform); warmup={cfg.warmup} "
            f"repeats={cfg.repeats}")
    lines = [head, "", "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    by = {(r["V"], r["row"]): r for r in rows}
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['V']} | {r['row']} | failed: {r['error']} | | | | |")
            continue
        hf, cce = by.get((r["V"], "hf"), {}), by.get((r["V"], "cce"), {})
        lines.append(
            f"| {r['V']} | {r['row']} | {r['median_ms']:.0f} | {r['peak_extra_mb']:.0f} | "
            f"{_ratio(r['median_ms'], hf.get('median_ms'))} | {_ratio(r['median_ms'], cce.get('median_ms'))} | "
            f"{_ratio(r['peak_extra_mb'], cce.get('peak_extra_mb'))} |")
    return "\n".join(lines)


def resolve(rows: Optional[tuple[str, ...]], device: str) -> tuple[tuple[str, ...], str]:
    """(rows, device) of a command line: device "auto" -> cuda if available; rows None -> the default rows (liger
    added on CUDA). Unknown rows, a missing CUDA device or a missing transformers are ConfigErrors."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device here; use --device cpu")
    rows = rows or HFBenchConfig.rows + (("liger",) if device == "cuda" else ())
    for r in rows:
        if r not in ROWS:
            raise ConfigError(f"--rows: unknown row {r!r}; choose from {','.join(ROWS)}")
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ConfigError("the HF bench needs transformers: pip install 'sampledsoftmax[hf]'") from None
    return rows, device


def write_json(path: str, cfg: HFBenchConfig, rows: list[dict[str, Any]]) -> None:
    with open(path, "w") as f:
        json.dump(dict(config=asdict(cfg), machine=machine_info(cfg.device), rows=rows), f, indent=1)
