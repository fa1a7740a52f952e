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


LIST_AT_MOST = 30  # longer lists name the closest few and how many there are


def unknown_name(kind: str, name: str, known: Iterable[str]) -> InputError:
    """The error for an unknown preset/model/hardware name: the known names when they are
    few, else the five closest to what was typed ("did you mean") and how many there are."""
    import difflib

    names = sorted(set(known))
    if len(names) <= LIST_AT_MOST:
        return InputError(f"unknown {kind} {name!r}; known: {', '.join(names)}")
    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=5, cutoff=0.3)
    if not close:  # match on the part after an organisation prefix (org/name)
        tail = name.lower().rsplit("/", 1)[-1]
        tails = {n.rsplit("/", 1)[-1]: n for n in by_lower}
        close = [tails[t] for t in difflib.get_close_matches(tail, list(tails), 5, 0.3)]
    hint = (
        f"did you mean {', '.join(by_lower[c] for c in close)}?"
        if close
        else f"known include {', '.join(names[:5])}"
    )
    return InputError(f"unknown {kind} {name!r}; {hint} ({len(names)} known)")
