"""Stop signals: Ctrl-C, and the preemption signals of schedulers, stop a run cleanly instead of killing it.

SIGINT (Ctrl-C), SIGTERM (SLURM, Kubernetes and torchrun's agent send it before they kill a job) and SIGUSR1 (SLURM's
``--signal=USR1@<seconds>`` warning) set the process's stop request; the training loop checks it between steps, writes
its checkpoint and stops, and the command exits with :func:`exit_status`. Torch-free, so that the CLI installs the
handlers before it imports anything heavy or builds any data.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager

# The stop signals and the exit status of a run they stop (after its checkpoint; documented in the README):
# Ctrl-C as a shell reports it (128 + SIGINT); a scheduler's preemption (SIGTERM from SLURM, Kubernetes, torchrun's
# agent; SIGUSR1 from SLURM's --signal) as sysexits' EX_TEMPFAIL, "try again later": run it again with --resume.
EXIT_PREEMPTED = 75
STOP_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: EXIT_PREEMPTED, signal.SIGUSR1: EXIT_PREEMPTED}

_STOP = {"stop": False, "signal": None, "sigint": False}  # the process's one stop request
_depth = 0  # nesting of stop_on_signals(): the outermost one installs and restores the handlers


def _on_signal(signum, frame):
    if signum == signal.SIGINT:
        if _STOP["sigint"]:
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once
        _STOP["sigint"] = True
    _STOP["stop"] = True  # a repeated SIGTERM (a scheduler signals every process of a job) changes nothing
    _STOP["signal"] = _STOP["signal"] or signum


def stop_signal_name(signum) -> str:
    return signal.Signals(signum).name if signum else "stop"


def exit_status(signum) -> int:
    """The exit status of a run stopped by `signum` after its checkpoint (130 for Ctrl-C or a programmatic stop)."""
    return STOP_SIGNALS.get(signum, 130)


@contextmanager
def stop_on_signals():
    """SIGINT (Ctrl-C), SIGTERM and SIGUSR1 set the process's stop request (the returned dict: ``stop``, and the
    first ``signal``) instead of ending the process: the loop checks it between steps, checkpoints and stops. A
    second Ctrl-C (after a first one) interrupts at once. Nested uses share one request; the outermost installs the handlers (the CLI
    does so before building any data, so a signal during start-up stops the run at step 0 with a checkpoint) and
    restores the previous ones at its end. Outside the main thread signals are left alone."""
    global _depth
    if _depth:
        _depth += 1
        try:
            yield _STOP
        finally:
            _depth -= 1
        return
    _STOP.update(stop=False, signal=None, sigint=False)
    try:
        previous = {s: signal.signal(s, _on_signal) for s in STOP_SIGNALS}
    except ValueError:  # not in the main thread: leave signals alone
        yield _STOP
        return
    _depth = 1
    try:
        yield _STOP
    finally:
        _depth = 0
        for s, h in previous.items():
            signal.signal(s, h)
