"""Where one training step of a loss spends its time: the phases and the operators, next to its matmul bound.

`sampledsoftmax bench` says how far a step is from the three matrix products it must do; this says what the rest
is. Same cell as the bench (N=1024, d=128, S=1024, Zipf-like targets, log-uniform sampler, sparse gradients, SGD),
in this process:

    .venv/bin/python scripts/bench_step_parts.py sampled 100k
    .venv/bin/python scripts/bench_step_parts.py full 10k --steps 10 --top 15

prints the median milliseconds of each phase over the timed steps (zero_grad, drawing the sample, forward, backward,
optimizer step), the bench's matmul bound measured right after, and torch.profiler's operators by self time per
step (profiled steps apart from the timed ones: the profiler slows a step down). For a sampled loss it also prints
the step's floor: the bound plus what no implementation of that step avoids, each timed alone (drawing the sample,
reading the N + S rows, writing the rows the optimizer updates, one pass over the (N, S) block). Measure on a quiet
machine.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from sampledsoftmax.cli import _count  # noqa: E402
from sampledsoftmax.experiments.bench import (  # noqa: E402
    BenchConfig, _bound_products, _loss_kwargs, _make_optimizer, _make_targets, _timed,
)
from sampledsoftmax.losses import build_loss  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("loss", help="a registered loss name")
    p.add_argument("V", type=_count, help="class count; k and M suffixes accepted")
    p.add_argument("--steps", type=int, default=40, help="timed steps (default: %(default)s)")
    p.add_argument("--top", type=int, default=25, help="operators listed (default: %(default)s)")
    args = p.parse_args(argv)

    cfg = BenchConfig(losses=(args.loss,), sizes=(args.V,), isolate=False)
    gen = torch.Generator().manual_seed(0)
    kwargs = _loss_kwargs(args.loss, cfg)
    loss_fn = build_loss(args.loss, num_classes=args.V, dim=cfg.dim, **kwargs)
    sampled = bool(getattr(loss_fn, "is_sampled", False))
    params = [q for q in loss_fn.parameters() if q.requires_grad]
    opt, opt_name = _make_optimizer(cfg.optimizer, params, sampled and bool(kwargs.get("sparse")), cfg.lr)
    hidden = torch.randn(cfg.n, cfg.dim, generator=gen).requires_grad_()  # (N, d)
    target = _make_targets(cfg.targets, cfg.n, args.V, gen)  # (N,)
    times: dict[str, list[float]] = {}

    def step(record: bool) -> None:
        t0 = time.perf_counter()
        marks = [t0]
        opt.zero_grad(set_to_none=True)
        hidden.grad = None
        marks.append(time.perf_counter())
        sample = loss_fn.sample(target.view(-1, 1)) if sampled and args.loss != "inbatch" else None
        marks.append(time.perf_counter())
        loss = loss_fn(hidden, target, sample=sample) if sample is not None else loss_fn(hidden, target)
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        opt.step()
        marks.append(time.perf_counter())
        if record:
            for name, a, b in zip(("zero_grad", "sample", "forward", "backward", "optimizer"), marks, marks[1:]):
                times.setdefault(name, []).append((b - a) * 1e3)

    for _ in range(3):
        step(False)
    for _ in range(args.steps):
        step(True)
    total = sum(statistics.median(v) for v in times.values())
    print(f"{args.loss} V={args.V} N={cfg.n} d={cfg.dim} S={cfg.num_sampled} {opt_name}, "
          f"{torch.get_num_threads()} threads, median of {args.steps} steps")
    for name, v in times.items():
        print(f"  {name:10s} {statistics.median(v):8.3f} ms")
    print(f"  {'step':10s} {total:8.3f} ms")

    weight = loss_fn.weight.detach()
    table = weight if not sampled else weight.index_select(0, torch.randint(0, args.V, (cfg.num_sampled,), generator=gen))
    bound = statistics.median(_timed(_bound_products(hidden.detach(), table, gen), 2, 5, lambda: None))
    print(f"  {'bound':10s} {bound:8.3f} ms   (ratio {total / bound:.2f})")
    if sampled:
        _floor(loss_fn, target, bound, times["sample"], args.V, cfg, gen)

    with torch.profiler.profile() as prof:
        for _ in range(5):
            step(False)
    print("\noperators by self time (ms per step, profiled steps):")
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[: args.top]
    for e in rows:
        print(f"  {e.self_cpu_time_total / 5 / 1e3:8.3f}  {e.count // 5:4d}x  {e.key}")
    return 0


def _floor(loss_fn, target, bound: float, sample_ms: list[float], v: int, cfg, gen) -> None:
    """What a sampled step must do besides the three products, each timed alone with fresh ids per call as in a
    step (the rows are scattered over the table, not in cache): draw the sample (the phase above), read the N + S
    rows, write the U distinct rows the optimizer updates, one elementwise pass over the (N, S) block."""
    weight = loss_fn.weight.detach().clone()  # (V, d) updated in place below: not the loss's own table
    reps = 7
    ids = [torch.cat([target, torch.randint(0, v, (cfg.num_sampled,), generator=gen)]) for _ in range(reps + 2)]
    uniq = [torch.unique(i) for i in ids]
    vals = [torch.randn(u.shape[0], cfg.dim, generator=gen) for u in uniq]
    block = torch.randn(cfg.n, cfg.num_sampled, generator=gen)
    it = itertools.count()  # a fresh set of ids on every call

    def gather():
        return weight.index_select(0, ids[next(it) % len(ids)])

    def update():
        k = next(it) % len(ids)
        weight.index_add_(0, uniq[k], vals[k], alpha=-cfg.lr)

    def one_pass():
        torch.ops.aten._softmax.out(block, 1, False, out=block)

    parts = {"sample": statistics.median(sample_ms)}
    for name, fn in (("gather", gather), ("update", update), ("pass", one_pass)):
        parts[name] = statistics.median(_timed(fn, 2, reps, lambda: None))
    floor = bound + sum(parts.values())
    print("  floor      " + f"{floor:8.3f} ms   (ratio {floor / bound:.2f}: the bound + "
          + ", ".join(f"{k} {x:.3f}" for k, x in parts.items()) + ")")


if __name__ == "__main__":
    sys.exit(main())
