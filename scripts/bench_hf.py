#!/usr/bin/env python
"""Training-step time and peak memory of a Llama-style HF model: HF's own loss, sampledsoftmax.hf's exact and sampled
patches, Apple's Cut Cross-Entropy (and Liger-Kernel on CUDA), side by side, each cell in its own process.

    python scripts/bench_hf.py                              # V = 32k, 128k, 256k; d=256, 2 layers, 4 x 512 tokens
    python scripts/bench_hf.py --sizes 32k --repeats 5 --json bench_out/hf.json

The same as `sampledsoftmax bench-hf`, with the same options.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without installing

from sampledsoftmax.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["bench-hf", *sys.argv[1:]]))
