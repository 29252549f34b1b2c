"""sampledsoftmax: exact (chunked) and candidate-sampling softmax losses for PyTorch.

The core (this package's `functional`, `losses`, `samplers`, `parallel`, `errors`) depends on torch alone and is what
``from sampledsoftmax import SampledSoftmaxLoss`` gives. The names below load on first use (PEP 562), so that
``python -m sampledsoftmax --help`` and the CLI's usage errors import no torch. The layers above the core (data,
training, the embedding and LM tasks, experiments, the CLI) are described in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the core module that defines it
_EXPORTS = {
    "ConfigError": "errors",
    "DataError": "errors",
    "InputError": "errors",
    "SampledSoftmaxError": "errors",
    "LOSSES": "losses",
    "AdaptiveSoftmaxLoss": "losses",
    "FullSoftmaxLoss": "losses",
    "InBatchSoftmaxLoss": "losses",
    "NCELoss": "losses",
    "NegativeSamplingLoss": "losses",
    "OneVsAllLoss": "losses",
    "OutputLayerLoss": "losses",
    "SampledSoftmaxLoss": "losses",
    "build_loss": "losses",
    "VocabParallelFullSoftmaxLoss": "parallel",
    "VocabParallelNCELoss": "parallel",
    "VocabParallelNegativeSamplingLoss": "parallel",
    "VocabParallelSampledSoftmaxLoss": "parallel",
    "build_vocab_parallel_loss": "parallel",
    "shard_range": "parallel",
    "SAMPLERS": "samplers",
    "AllClassesSampler": "samplers",
    "CandidateSample": "samplers",
    "CandidateSampler": "samplers",
    "InBatchSampler": "samplers",
    "LearnedUnigramSampler": "samplers",
    "LogUniformSampler": "samplers",
    "UniformSampler": "samplers",
    "UnigramSampler": "samplers",
    "build_sampler": "samplers",
}

__version__ = "0.1.0"

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sampledsoftmax' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # next time without this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
