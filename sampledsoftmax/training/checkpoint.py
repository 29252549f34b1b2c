"""Checkpoints: written atomically, holding only tensors and primitives, loadable with `weights_only=True`.

A checkpoint is written to a temporary file in the run directory, flushed to disk and renamed over the old one, so a
crash or Ctrl-C in the middle of a save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` atomically (temporary file + fsync + rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with `torch.load(weights_only=True)` (no arbitrary code runs on load)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no checkpoint at {path}; train first, or check the run directory")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise DataError(f"cannot read checkpoint {path}: {exc}; it may be from another program or damaged") from None
