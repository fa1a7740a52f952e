"""The one exception type for bad user input.

Every check on user-supplied data (traces, specs, coefficient files, CLI values) raises
:class:`InputError` with a one-line message; the CLI turns it into ``error: ...`` and exit
code 2. Anything else escaping is a bug, not an input problem.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


class InputError(ValueError):
    """Bad input: the message is one line, names the problem, and is shown to the user."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`InputError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise InputError(message)


def check_finite(name: str, value: float) -> float:
    """Return ``value`` as float, or raise if it is NaN or infinite."""
    value = float(value)
    require(math.isfinite(value), f"{name} must be a finite number, got {value}")
    return value


def check_positive(name: str, value: float) -> float:
    """Return ``value`` as float, or raise unless it is finite and > 0."""
    value = check_finite(name, value)
    require(value > 0, f"{name} must be > 0, got {value:g}")
    return value


def check_nonnegative(name: str, value: float) -> float:
    """Return ``value`` as float, or raise unless it is finite and >= 0."""
    value = check_finite(name, value)
    require(value >= 0, f"{name} must be >= 0, got {value:g}")
    return value


def unknown_name(kind: str, name: str, known: Iterable[str]) -> InputError:
    """The error for an unknown preset/model/hardware name, listing the known ones."""
    return InputError(f"unknown {kind} {name!r}; known: {', '.join(sorted(known))}")
