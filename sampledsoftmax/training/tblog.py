"""TensorBoard and console logging for a training run.

Tags (what compares across losses and what does not; docs/ARCHITECTURE.md):
- `train/objective`: the surrogate being optimised (sampled softmax, NCE, ...). Not comparable across losses.
- `train/lr`, `perf/pairs_per_sec`, `perf/step_ms`, `sys/peak_mem_mb`.
- `eval/full_ce`, `eval/ppl`, `eval/top1`, `eval/top10`: exact full softmax on held-out pairs, the same for every loss.
- `eval/bayes_ce`, `eval/excess_ce` on the planted corpus; `eval/wordsim`, `eval/simlex`, `eval/analogy`.
- `bias/exact_minus_objective`, `bias/grad_cosine`: how far a sampled objective is from the exact one.

Hyperparameters go into the same run (not a sub-run), so the HParams dashboard lists each run once with its metrics.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from .tbcompat import use_tensorboard_stub

use_tensorboard_stub()  # before torch.utils.tensorboard: never import TensorFlow (see tbcompat)
from torch.utils.tensorboard import SummaryWriter  # noqa: E402
from torch.utils.tensorboard.summary import hparams as hparams_summary  # noqa: E402

HPARAM_METRICS = ("eval/full_ce", "eval/ppl", "eval/top1", "eval/top10", "eval/excess_ce", "perf/pairs_per_sec")

CUSTOM_SCALARS = {
    "exact evaluation (comparable across losses)": {
        "held-out cross entropy": ["Multiline", ["eval/full_ce", "eval/bayes_ce"]],
        "excess over Bayes optimum": ["Multiline", ["eval/excess_ce"]],
        "top-k accuracy": ["Multiline", ["eval/top1", "eval/top10"]],
        "word similarity and analogy": ["Multiline", ["eval/wordsim", "eval/simlex", "eval/analogy"]],
    },
    "training": {
        "objective (surrogate; not comparable across losses)": ["Multiline", ["train/objective"]],
        "sampled vs exact": ["Multiline", ["bias/exact_minus_objective", "bias/grad_cosine"]],
        "speed": ["Multiline", ["perf/pairs_per_sec", "perf/step_ms"]],
    },
}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


class RunLogger:
    """One TensorBoard run in `run_dir`, plus progress on the console (a tqdm bar on a terminal, lines otherwise)."""

    def __init__(self, run_dir: Path, *, total_steps: int, start_step: int = 0, quiet: bool = False):
        # purge_step drops events a crashed run wrote after its last checkpoint, so curves do not fold back
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=start_step if start_step else None)
        self.quiet = quiet
        self.total_steps = total_steps
        self._bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
        self._t0 = time.time()

    def hparams(self, config: dict[str, Any]) -> None:
        """Write the resolved config as hyperparameters into this run, with the metric tags the dashboard shows."""
        flat = _flat(config)
        exp, ssi, sei = hparams_summary(flat, {m: float("nan") for m in HPARAM_METRICS})
        for summary in (exp, ssi, sei):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_custom_scalars(CUSTOM_SCALARS)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def progress(self, step: int, values: dict[str, float]) -> None:
        """Console progress at a log step."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in values.items()}, refresh=True)
            return
        parts = " ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in values.items())
        print(f"step {step}/{self.total_steps} {parts}", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def projector(self, vectors, words: list[str], step: int) -> None:
        self.writer.add_embedding(vectors, metadata=words, global_step=step, tag="input_vectors")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self.writer.close()


class NullLogger:
    """The logger of a data-parallel rank other than 0: writes nothing (rank 0 owns the run's files and console)."""

    def hparams(self, config: dict[str, Any]) -> None:
        pass

    def scalars(self, values: dict[str, float], step: int) -> None:
        pass

    def progress(self, step: int, values: dict[str, float]) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def projector(self, vectors, words: list[str], step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
