"""sampledsoftmax: exact (chunked) and candidate-sampling softmax losses for PyTorch.

The core (this package's `functional`, `losses`, `samplers`, `errors`) depends on torch alone; the trainer, sweep
and CLI live in submodules that are imported only when used.
"""

from .errors import ConfigError, DataError, InputError, SampledSoftmaxError
from .losses import (
    LOSSES,
    AdaptiveSoftmaxLoss,
    FullSoftmaxLoss,
    InBatchSoftmaxLoss,
    NCELoss,
    NegativeSamplingLoss,
    OneVsAllLoss,
    OutputLayerLoss,
    SampledSoftmaxLoss,
    build_loss,
)
from .parallel import (
    VocabParallelFullSoftmaxLoss,
    VocabParallelNCELoss,
    VocabParallelNegativeSamplingLoss,
    VocabParallelSampledSoftmaxLoss,
    build_vocab_parallel_loss,
    shard_range,
)
from .samplers import (
    SAMPLERS,
    AllClassesSampler,
    CandidateSample,
    CandidateSampler,
    InBatchSampler,
    LearnedUnigramSampler,
    LogUniformSampler,
    UniformSampler,
    UnigramSampler,
    build_sampler,
)

__version__ = "0.1.0"

__all__ = [
    "FullSoftmaxLoss",
    "SampledSoftmaxLoss",
    "NCELoss",
    "NegativeSamplingLoss",
    "InBatchSoftmaxLoss",
    "OneVsAllLoss",
    "AdaptiveSoftmaxLoss",
    "OutputLayerLoss",
    "LOSSES",
    "build_loss",
    "VocabParallelFullSoftmaxLoss",
    "VocabParallelSampledSoftmaxLoss",
    "VocabParallelNCELoss",
    "VocabParallelNegativeSamplingLoss",
    "build_vocab_parallel_loss",
    "shard_range",
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
    "SampledSoftmaxError",
    "InputError",
    "ConfigError",
    "DataError",
]
