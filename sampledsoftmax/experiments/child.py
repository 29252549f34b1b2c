"""The one child-process runner of the experiments: run a function in a fresh process and bring back its result.

A cell of a sweep or a benchmark runs in its own process so that its peak memory is its own (not the largest of
every cell before it) and so that a crash or an out-of-memory kill of one cell is a failed row, not the end of the
experiment. Children fork from a forkserver that has imported torch once (milliseconds per cell instead of the
~1.5 s torch import), or start by spawn where forkserver does not exist; either way each starts with no tensors.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable, NamedTuple, Optional

from ..errors import SampledSoftmaxError


class ChildResult(NamedTuple):
    """`kind`: "ok" (`value` is the function's result), "user_error" (`value`: the SampledSoftmaxError's message),
    "error" (a bug: `value` is a one-line summary; the traceback went to stderr) or "died" (`value`: why, e.g.
    "killed by signal 9 (out of memory?)")."""

    kind: str
    value: Any


_PRELOAD = ["sampledsoftmax.experiments.bench", "sampledsoftmax.embeddings.train", "torch._dynamo"]


def process_context():
    """A multiprocessing context: forkserver preloaded with torch and the trainers, or spawn."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        # torch.optim imports torch._dynamo on first use (~2 s here): pay that once in the server too.
        ctx.set_forkserver_preload(_PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


def run_in_child(fn: Callable[..., Any], *args: Any, forward_signals: bool = False) -> ChildResult:
    """``fn(*args)`` in a fresh child process (fn and args must pickle). With `forward_signals`, `fn` runs under
    the stop signals' handlers (``training.signals``: a trainer then checkpoints and stops, and its result says
    so), SIGTERM and SIGUSR1 sent to this process are passed on to the child (a scheduler may signal only the
    process it started), and so is SIGINT, as SIGTERM (Ctrl-C at a terminal reaches the child by itself; a second
    SIGINT would stop it at once); each signal then goes on to this process's own handler. The child also gets
    SIGTERM if its parent dies, so a killed sweep leaves no trainer running without it."""
    ctx = process_context()
    recv, send = ctx.Pipe(duplex=False)
    alive_r, alive_w = ctx.Pipe(duplex=False) if forward_signals else (None, None)
    proc = ctx.Process(target=_worker, args=(send, fn, args, alive_r), daemon=True)
    previous: dict = {}
    try:
        proc.start()
        if forward_signals:
            previous = _forward_to(proc)
        send.close()  # the child holds the only write end: recv() raises EOFError if it dies before answering
        try:
            answer: Optional[ChildResult] = ChildResult(*recv.recv())
        except EOFError:
            answer = None
        finally:
            recv.close()
            proc.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for end in (alive_r, alive_w):
            if end is not None:
                end.close()
    if answer is not None:
        return answer
    code = proc.exitcode
    why = (f"killed by signal {-code}" + (" (out of memory?)" if code == -9 else "")
           if code is not None and code < 0 else f"exited with code {code}")
    return ChildResult("died", why)


_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


def _forward_to(proc) -> dict:
    """Install handlers that pass the stop signals on to `proc`; returns the previous handlers (none installed
    outside the main thread)."""
    try:
        previous = {s: signal.getsignal(s) for s in _FORWARDED}

        def forward(signum, frame):
            try:
                os.kill(proc.pid, signal.SIGTERM if signum == signal.SIGINT else signum)
            except (ProcessLookupError, TypeError):
                pass
            own = previous.get(signum)
            if callable(own) and own is not signal.default_int_handler:
                own(signum, frame)  # this process's stop request (a second Ctrl-C still interrupts at once)

        for s in _FORWARDED:
            signal.signal(s, forward)
        return previous
    except ValueError:  # not in the main thread
        return {}


def _stop_when_gone(alive) -> None:
    """A daemon thread that sends this process SIGTERM once `alive` (a pipe whose only write end the parent holds)
    reaches end of file: the parent is gone (the kernel closes a process's files when it dies, however it dies; the
    forkserver in between outlives it), so a killed sweep leaves no cell training on without it."""
    import threading

    def watch() -> None:
        try:
            alive.recv()
        except (EOFError, OSError):
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer checkpoints and stops

    threading.Thread(target=watch, name="stop-when-parent-gone", daemon=True).start()


def _worker(conn, fn: Callable[..., Any], args: tuple, alive=None) -> None:
    try:
        if alive is not None:
            from ..training.signals import stop_on_signals

            _stop_when_gone(alive)
            with stop_on_signals():
                message: tuple[str, Any] = ("ok", fn(*args))
        else:
            message = ("ok", fn(*args))
    except SampledSoftmaxError as e:
        message = ("user_error", str(e))
    except BaseException as e:  # noqa: BLE001 - a bug or an interrupt: keep the traceback, never hang the parent
        import traceback

        traceback.print_exc()
        message = ("error", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200])
    try:
        conn.send(message)
    except OSError:  # the parent is gone (killed): nobody to answer
        pass
    conn.close()
