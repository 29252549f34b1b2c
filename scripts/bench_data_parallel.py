"""Throughput of 1 process against N processes under torchrun, same global batch, on the quickstart corpus.

    .venv/bin/python scripts/bench_data_parallel.py [--nproc 2] [--out runs/bench_data_parallel]

For each case, one process trains at batch B and N processes at B/N each (the same pairs per step), through the CLI
as a user runs it; the table gives the median `perf/pairs_per_sec` and `perf/step_ms` of each run's log intervals
(rank 0 logs the job's total pairs/s) and the final exact `eval/full_ce`, which should agree between the two.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]

# (label, overrides, global batch, steps)
CASES = [
    ("negative", ["loss.name=negative"], 1024, 1000),
    ("sampled, S=64", ["loss.name=sampled"], 1024, 1000),
    ("full", ["loss.name=full"], 1024, 300),
    ("sampled, batch 8192", ["loss.name=sampled", "optim.alpha=0.0025"], 8192, 300),
]


def run(out: Path, name: str, nproc: int, batch: int, steps: int, overrides: list[str]) -> dict:
    sets = [f"runs_root={out}", f"name={name}", f"optim.batch_size={batch // nproc}", f"train.max_steps={steps}",
            f"eval.every={10 * steps}", "train.log_every=50", *overrides]
    cmd = ["-m", "sampledsoftmax", "train", str(ROOT / "configs/quickstart.yaml"), "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", *cmd]
    else:
        cmd = [sys.executable, *cmd]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: {name} failed:\n{proc.stderr[-2000:]}")
    acc = EventAccumulator(str(out / name), size_guidance={"scalars": 0})
    acc.Reload()
    med = {t: statistics.median(e.value for e in acc.Scalars(t)) for t in ("perf/pairs_per_sec", "perf/step_ms")}
    return {**med, "ce": acc.Scalars("eval/full_ce")[-1].value}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--out", default="runs/bench_data_parallel")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    rows = [f"| loss (global batch) | 1 process: pairs/s (step ms) | {args.nproc} processes: pairs/s (step ms) "
            f"| exact CE, 1 / {args.nproc} |", "| --- | --- | --- | --- |"]
    for k, (label, overrides, batch, steps) in enumerate(CASES):
        one = run(out, f"c{k}-1p", 1, batch, steps, overrides)
        many = run(out, f"c{k}-{args.nproc}p", args.nproc, batch, steps, overrides)
        cell = [f"{r['perf/pairs_per_sec'] / 1e3:,.0f}k ({r['perf/step_ms']:.1f})" for r in (one, many)]
        rows.append(f"| {label} ({batch}, {steps} steps) | {cell[0]} | {cell[1]} | {one['ce']:.4f} / {many['ce']:.4f} |")
        print(rows[-1], flush=True)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
