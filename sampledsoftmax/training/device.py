"""Which device a run uses, and how much memory it has used."""

from __future__ import annotations

import resource

import torch

from ..errors import ConfigError


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """"auto" -> cuda if available, else cpu; "cuda" without a CUDA device is an error naming `key`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}=cuda but no CUDA device is available; use {key}=cpu or auto")
    return torch.device(name)


def peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
