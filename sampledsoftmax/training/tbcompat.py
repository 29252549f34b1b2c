"""TensorBoard without TensorFlow: the project writes and reads event files with tensorboard's own stub.

``tensorboard.compat.tf`` imports TensorFlow when it is installed, unless a module ``tensorboard.compat.notf``
exists. Importing TensorFlow costs seconds and log lines, and beside triton (which every CUDA build of torch brings)
it aborts the process: TensorFlow's LLVM and triton's register the same command-line options ("LLVM ERROR:
inconsistency in registered CommandLine options", exit 134). Call :func:`use_tensorboard_stub` before the first use
of ``torch.utils.tensorboard`` or tensorboard's event reader; it changes nothing when TensorFlow was already
imported by the host program (tensorboard then keeps using it).
"""

from __future__ import annotations

import sys
import types

_NOTF = "tensorboard.compat.notf"


def use_tensorboard_stub() -> None:
    """Make tensorboard take its TensorFlow stub instead of importing TensorFlow (idempotent)."""
    if _NOTF not in sys.modules and "tensorflow" not in sys.modules:
        sys.modules[_NOTF] = types.ModuleType(_NOTF, "marker: tensorboard uses its TensorFlow stub (sampledsoftmax)")
