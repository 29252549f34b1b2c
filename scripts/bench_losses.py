#!/usr/bin/env python
"""Benchmark every loss against its matmul bound: the same as `sampledsoftmax bench`, with the same options.

    python scripts/bench_losses.py --sizes 10k,100k,1M --out bench_out/losses.md --json bench_out/losses.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without installing

from sampledsoftmax.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
