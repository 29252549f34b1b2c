#!/usr/bin/env python
"""How large a vocabulary fits with vocab-parallel sharding: 2 gloo processes on this machine, d=128, float32.

For each configuration a fresh pair of processes builds the loss (each holding V/2 rows), runs forward + backward of
N=1024 hidden states a few times and reports the median step time and each rank's peak RSS. "max" picks the largest
V whose modelled per-rank footprint fits --mem-gb-per-rank:

    full softmax:     V/2 · (d + 1) · 4 B  table and bias  + the same again for their dense gradients
                      + one block of logits (memory_budget_mb, 512 MB) + the interpreter (~0.4 GB)
    sampled softmax:  V/2 · (d + 1) · 4 B  (sparse=True: the gradients touch only the S + N rows used)
                      + the interpreter; log-uniform sampler (no table), S = --num-sampled shared candidates

    python scripts/bench_vocab_parallel.py                                   # the default table (~3 min)
    python scripts/bench_vocab_parallel.py --configs full:max --max-full-n 1024   # full softmax at max V, N=1024
    python scripts/bench_vocab_parallel.py --configs full:2M,sampled:20M --repeats 5

A full-softmax step at "max" costs 3–4·N·(V/2)·d multiply-adds per rank: about 2–5 minutes at N=1024 on one shared
core here. Its peak memory does not depend on N (the logits block is set by the memory budget, the gradient by V/2),
so by default the "max" full-softmax row checks the fit with N=--max-full-n (64) and says so in its N column; the
second command above times it at N=1024. "max" rows run --max-repeats steps (default 1). A configuration whose
modelled footprint does not fit the memory available at that moment is skipped, not run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a checkout without installing

WORLD = 2
BASE_BYTES = 0.4e9  # python + torch + gloo, measured RSS of an idle worker with some headroom
BLOCK_BYTES = 512 * 2**20  # the full softmax's logits block (functional.DEFAULT_MEMORY_BUDGET_MB)


def _parse_v(text: str) -> int:
    mult = {"k": 10**3, "M": 10**6, "G": 10**9}
    return int(float(text[:-1]) * mult[text[-1]]) if text[-1] in mult else int(text)


def _max_v(kind: str, dim: int, budget_bytes: float) -> int:
    per_row = (dim + 1) * 4 * (2 if kind == "full" else 1)
    fixed = BASE_BYTES + (BLOCK_BYTES if kind == "full" else 0)
    v_rank = int((budget_bytes - fixed) // per_row)
    return max(v_rank, 1) * WORLD // 10**5 * 10**5  # rounded down to 100k


def _mem_available() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    return float("inf")


# ------------------------------------------------------------------ one worker process


def _worker(rank: int, store: str, cfg: dict) -> None:
    import resource
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from sampledsoftmax.parallel import VocabParallelFullSoftmaxLoss, VocabParallelSampledSoftmaxLoss

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=900))
    v, d, n = cfg["v"], cfg["dim"], cfg["n"]
    t0 = time.perf_counter()
    if cfg["kind"] == "full":
        loss_fn = VocabParallelFullSoftmaxLoss(v, d, seed=0)
    else:
        loss_fn = VocabParallelSampledSoftmaxLoss(v, d, num_sampled=cfg["num_sampled"], sparse=True, seed=0)
    g = torch.Generator().manual_seed(0)  # the same batch on both ranks
    h = torch.randn(n, d, generator=g).requires_grad_()
    t = torch.randint(v, (n,), generator=g)
    build_s = time.perf_counter() - t0
    times = []
    for _ in range(cfg["repeats"]):
        dist.barrier()
        t0 = time.perf_counter()
        loss = loss_fn(h, t)
        loss.backward()
        dist.barrier()
        times.append(time.perf_counter() - t0)
        h.grad = loss_fn.weight.grad = loss_fn.bias.grad = None  # as optimizer.zero_grad(set_to_none=True)
    rss = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0], dtype=torch.float64)
    all_rss = [torch.zeros(1, dtype=torch.float64) for _ in range(WORLD)]
    dist.all_gather(all_rss, rss)
    if rank == 0:
        out = dict(cfg, v_rank=loss_fn.weight.shape[0], build_s=build_s, step_s=statistics.median(times),
                   times=times, rss=[float(x) for x in all_rss], loss=float(loss))
        print("RESULT " + json.dumps(out), flush=True)
    dist.barrier()  # every rank is done before any tears down its connections (gloo aborts a peer otherwise)
    dist.destroy_process_group()


# ------------------------------------------------------------------ the driver


def _run(cfg: dict, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        procs = [
            subprocess.Popen([sys.executable, __file__, "--worker", str(r), os.path.join(tmp, "store"), json.dumps(cfg)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for r in range(WORLD)
        ]
        try:
            logs = [p.communicate(timeout=timeout)[0] for p in procs]
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise SystemExit(f"error: {cfg['kind']} V={cfg['v']} did not finish within {timeout:.0f} s")
    for line in logs[0].splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"error: {cfg['kind']} V={cfg['v']} failed:\n" + "\n".join(log[-3000:] for log in logs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="full:1M,sampled:1M,full:max,sampled:max",
                    help="comma-separated kind:V_total, kind in full|sampled, V like 500k, 2M or 'max'")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--n", type=int, default=1024, help="hidden states per step")
    ap.add_argument("--num-sampled", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per configuration (median reported)")
    ap.add_argument("--max-repeats", type=int, default=1, help="timed steps for the 'max' configurations")
    ap.add_argument("--max-full-n", type=int, default=64, help="N of the full-softmax 'max' row (memory check)")
    ap.add_argument("--mem-gb-per-rank", type=float, default=7.0, help="RSS budget of each of the 2 processes")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per configuration")
    args = ap.parse_args(argv)

    budget = args.mem_gb_per_rank * 1e9
    free = _mem_available()
    if WORLD * budget + 1e9 > free:
        raise SystemExit(f"error: {WORLD} x {args.mem_gb_per_rank} GB does not fit the {free / 1e9:.1f} GB available "
                         f"now; lower --mem-gb-per-rank")
    print(f"# vocab-parallel, {WORLD} gloo processes x 1 thread, d={args.dim}, N={args.n}, float32; sampled: "
          f"log-uniform, S={args.num_sampled}, sparse=True; budget {args.mem_gb_per_rank} GB/rank", flush=True)
    print("| loss | V total | V per rank | N | steps | step s (median) | peak RSS rank 0 / 1 (GB) | modelled (GB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for spec in args.configs.split(","):
        kind, _, v_text = spec.strip().partition(":")
        if kind not in ("full", "sampled"):
            raise SystemExit(f"error: unknown loss {kind!r} in --configs (full or sampled)")
        is_max = v_text == "max"
        v = _max_v(kind, args.dim, budget) if is_max else _parse_v(v_text)
        n = args.max_full_n if is_max and kind == "full" else args.n
        cfg = dict(kind=kind, v=v, dim=args.dim, n=n, num_sampled=args.num_sampled,
                   repeats=args.max_repeats if is_max else args.repeats)
        per_row = (args.dim + 1) * 4 * (2 if kind == "full" else 1)
        model = (BASE_BYTES + (BLOCK_BYTES if kind == "full" else 0) + -(-v // WORLD) * per_row) / 1e9
        if WORLD * model * 1e9 + 1e9 > _mem_available():
            print(f"| {kind} | {v:,} | skipped: {WORLD} x {model:.1f} GB does not fit the memory available now |")
            continue
        res = _run(cfg, args.timeout)
        rss = " / ".join(f"{x / 1e9:.2f}" for x in res["rss"])
        print(f"| {kind}{' (max)' if is_max else ''} | {v:,} | {res['v_rank']:,} | {n} | {cfg['repeats']} | "
              f"{res['step_s']:.3f} | {rss} | {model:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        _worker(int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]))
    else:
        raise SystemExit(main())
