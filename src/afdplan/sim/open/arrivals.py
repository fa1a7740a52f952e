"""Arrival processes of the open system: one small class per process, chosen by name.

``Arrivals(kind, rate, cv)`` builds the class registered for ``kind`` (the way
``Pipeline`` does); each draws its own request times (seconds), knows its own squared
coefficient of variation of the gaps (ca², which the queueing closed forms take) and
describes itself. A new process is one class here and one entry in ``_PROCESSES``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from afdplan.errors import InputError, require
from afdplan.workload import EmpiricalWorkload, Workload


@dataclass(frozen=True)
class Arrivals:
    """``kind`` (trace | poisson | gamma), ``rate`` requests/s (for a trace: rescales its
    timestamps; None keeps them) and ``cv``, the gamma process's coefficient of variation
    of the gaps (1 for the others)."""

    kind: str = "poisson"
    rate: float | None = None
    cv: float = 1.0
    takes_cv: ClassVar[bool] = False  # only a process with a shape parameter
    label: ClassVar[str] = ""  # the process, as outputs name it

    def __new__(cls, kind: str = "poisson", rate: float | None = None, cv: float = 1.0):
        if cls is Arrivals:
            require(kind in _PROCESSES, _unknown(kind))
            cls = _PROCESSES[kind]
        return object.__new__(cls)

    def __post_init__(self) -> None:
        require(_PROCESSES.get(self.kind) is type(self), _unknown(self.kind))
        if self.rate is not None:
            require(
                math.isfinite(self.rate) and self.rate > 0, f"--rate must be > 0, got {self.rate}"
            )
        require(math.isfinite(self.cv) and self.cv > 0, f"gamma cv must be > 0, got {self.cv}")
        require(self.takes_cv or self.cv == 1.0, f"{self.kind} arrivals take no cv, got {self.cv}")
        # beyond cv = 100 the gamma shape 1/cv² underflows: gaps are 0 or enormous
        require(self.cv <= 100, f"gamma cv must be <= 100, got {self.cv:g}")

    @classmethod
    def parse(cls, text: str, rate: float | None) -> Arrivals:
        """``trace``, ``poisson`` or ``gamma:cv=X``."""
        kind, _, params = text.partition(":")
        require(kind in _PROCESSES, _unknown(text))
        return _PROCESSES[kind].parse_params(text, params, rate)

    @classmethod
    def parse_params(cls, text: str, params: str, rate: float | None) -> Arrivals:
        require(not params, f"--arrivals {text!r}: only gamma takes a parameter, as gamma:cv=X")
        return cls(next(k for k, v in _PROCESSES.items() if v is cls), rate)

    @property
    def process(self) -> str:
        """The arrival process without its rate."""
        return self.label

    def describe(self) -> str:
        return self.process + ("" if self.rate is None else f" at {self.rate:g} req/s")

    def ca2(self, times: np.ndarray | None = None) -> float:
        """Squared coefficient of variation of the gaps between arrivals (``times``: the
        drawn arrival seconds, for a process that only has them)."""
        return self.cv**2

    def draw(
        self, workload: Workload, n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(arrival seconds, prompt, decode) of ``n`` requests."""
        require(n >= 1, f"--requests must be >= 1, got {n}")
        gaps = self._gaps(rng, float(self.rate), n)  # type: ignore[arg-type]
        prompt, decode = workload.sample(rng, n)
        return np.cumsum(gaps), np.asarray(prompt, np.int64), np.asarray(decode, np.int64)

    def _gaps(self, rng: np.random.Generator, rate: float, n: int) -> np.ndarray:
        """``n`` gaps between arrivals (seconds) at ``rate`` requests/s."""
        raise NotImplementedError  # pragma: no cover - abstract


class _Drawn(Arrivals):
    """A process drawn from a law at a given rate."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.rate is not None, f"{self.kind} arrivals need --rate")


class Poisson(_Drawn):
    """Exponential gaps: ca² = 1."""

    label = "Poisson"

    def _gaps(self, rng, rate, n):
        return rng.exponential(1.0 / rate, n)


class Gamma(_Drawn):
    """Gamma renewal gaps with coefficient of variation cv (bursty for cv > 1)."""

    takes_cv = True

    @classmethod
    def parse_params(cls, text, params, rate):
        if not params:
            raise InputError("--arrivals gamma needs its coefficient of variation: gamma:cv=X")
        key, eq, value = params.partition("=")
        require(
            key == "cv" and eq == "=",
            f"--arrivals {text!r}: only gamma takes a parameter, as gamma:cv=X",
        )
        try:
            cv = float(value)
        except ValueError as exc:
            raise InputError(f"--arrivals {text!r}: cv must be a number") from exc
        return cls("gamma", rate, cv)

    @property
    def process(self) -> str:
        return f"gamma cv={self.cv:g}"

    def _gaps(self, rng, rate, n):
        shape = 1.0 / self.cv**2
        return rng.gamma(shape, 1.0 / (rate * shape), n)


class TraceTimes(Arrivals):
    """A trace's own timestamps, in order, optionally rescaled to ``rate``; its ca² is
    measured on the times it gives."""

    label = "trace timestamps"

    def ca2(self, times=None):
        gaps = np.diff(times) if times is not None else np.array([1.0])
        return float(gaps.var() / gaps.mean() ** 2) if gaps.size > 1 and gaps.mean() > 0 else 1.0

    def draw(self, workload, n, rng):
        """The trace's requests in order, repeated back to back (its own mean gap apart)
        when ``n`` exceeds its size."""
        require(n >= 1, f"--requests must be >= 1, got {n}")
        problem = getattr(workload, "arrival_problem", None)
        require(problem is None, f"--arrivals trace: {problem}")
        require(
            isinstance(workload, EmpiricalWorkload) and workload.arrival is not None,
            "--arrivals trace needs a trace with an arrival-time column (arrived_at, "
            "timestamp, ...) and no missing values",
        )
        assert isinstance(workload, EmpiricalWorkload) and workload.arrival is not None
        require(
            workload.arrival_sorted,
            f"{workload.source}: arrival timestamps are not in order; sort the trace by "
            "arrival time for --arrivals trace",
        )
        reps = -(-n // workload.size)
        base = workload.arrival.astype(np.float64) - workload.arrival[0]
        period = base[-1] + (base[-1] / max(workload.size - 1, 1) if workload.size > 1 else 1.0)
        times = (base[None, :] + period * np.arange(reps)[:, None]).ravel()[:n]
        prompt = np.tile(workload.prompt, reps)[:n].copy()
        decode = np.tile(workload.decode, reps)[:n].copy()
        if self.rate is not None:
            require(period > 0, f"{workload.source}: all arrivals at one instant; cannot rescale")
            recorded = workload.size / period
            times = times * (recorded / self.rate)
        return times, prompt, decode


_PROCESSES: dict[str, type[Arrivals]] = {"trace": TraceTimes, "poisson": Poisson, "gamma": Gamma}
ARRIVALS = tuple(_PROCESSES)


def _unknown(text: str) -> str:
    return f"arrivals must be one of trace, poisson, gamma:cv=X; got {text!r}"
