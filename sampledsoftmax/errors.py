"""The project's error types: one base class for user mistakes, so the CLI can print one line and exit 2.

Programming errors (bugs) are not wrapped: they keep their tracebacks.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class SampledSoftmaxError(Exception):
    """A mistake in what the user passed in (arguments, config, data). The CLI prints it as `error: ...`."""


class InputError(SampledSoftmaxError, ValueError):
    """A bad argument or tensor passed to a loss or sampler (wrong shape, class id out of range, ...)."""


class ConfigError(SampledSoftmaxError, ValueError):
    """A bad configuration key, type or value."""


class DataError(SampledSoftmaxError, ValueError):
    """A missing, empty or unreadable corpus or evaluation file."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""
