"""Integer length laws for prompt lengths P and decode lengths D (DESIGN.md §2).

Each law gives its first three raw moments exactly (the renewal-reward load θ and its
variance v need E[D], E[D²], E[D³] and E[P], E[P²]), draws i.i.d. samples, and draws
*size-biased* samples (P(x) ∝ x·pmf(x)) — the law of the decode length of the request a
slot is serving at a random step, which is how the simulator starts in the stationary
state.

Laws with unbounded support are either handled in closed form (geometric) or given an
explicit cap, with the tail mass placed on the cap, the way a serving system's
``max_tokens`` clips generation. The cap is part of the law, so the theory and the
simulator see the same distribution.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from afdplan import normal
from afdplan.errors import InputError, check_positive, require

# Largest support a tabulated law may have; beyond this, ask the user for a cap.
MAX_TABULATED_SUPPORT = 4_000_000
# Longest prompt or decode length accepted (tokens): 100 times today's longest contexts,
# and far below where the third moments the variance needs lose precision in float64.
MAX_LENGTH_TOKENS = 100_000_000


class LengthLaw(ABC):
    """An integer-valued length distribution (tokens)."""

    @abstractmethod
    def raw_moments(self) -> tuple[float, float, float]:
        """(E[X], E[X²], E[X³]) in tokens, tokens², tokens³."""

    @abstractmethod
    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` i.i.d. draws as int64."""

    @abstractmethod
    def sample_size_biased(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` i.i.d. draws from the size-biased law x·pmf(x)/E[X], as int64."""

    @abstractmethod
    def describe(self) -> str:
        """A short human-readable name with parameters."""

    @property
    @abstractmethod
    def min_value(self) -> int:
        """Smallest value with positive probability."""

    def mean(self) -> float:
        return self.raw_moments()[0]


@dataclass(frozen=True)
class DiscreteLaw(LengthLaw):
    """A law on a finite support: ``values`` (sorted, distinct ints) with ``probs``."""

    values: np.ndarray
    probs: np.ndarray
    label: str
    _cdf: np.ndarray = field(init=False, repr=False, compare=False)
    _biased_cdf: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.int64)
        probs = np.asarray(self.probs, dtype=np.float64)
        keep = probs > 0
        values, probs = values[keep], probs[keep] / probs[keep].sum()
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "probs", probs)
        object.__setattr__(self, "_cdf", _normalised_cdf(probs))
        # A law concentrated on 0 has no size-biased version; it is 0 either way.
        weights = probs * values if values.any() else probs
        object.__setattr__(self, "_biased_cdf", _normalised_cdf(weights))

    def raw_moments(self) -> tuple[float, float, float]:
        x = self.values.astype(np.float64)
        return (
            float(np.dot(self.probs, x)),
            float(np.dot(self.probs, x * x)),
            float(np.dot(self.probs, x * x * x)),
        )

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.values[np.searchsorted(self._cdf, rng.random(n), side="right")]

    def sample_size_biased(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.values[np.searchsorted(self._biased_cdf, rng.random(n), side="right")]

    def describe(self) -> str:
        return self.label

    @property
    def min_value(self) -> int:
        return int(self.values[0])


def _normalised_cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    cdf[-1] = 1.0  # searchsorted(side="right") on u < 1 never runs off the end
    return cdf


@dataclass(frozen=True)
class Geometric(LengthLaw):
    """P(X = start + k) = (1 − p)^k · p for k = 0, 1, 2, … (closed form, no cap).

    With ``start = 1`` this is a decode length where every step ends the request with
    probability p: E[D] = 1/p. The paper's μ_D = (1 − p)/p is E[D] − 1, the mean number of
    tokens a running request has already produced at a random step.
    """

    p: float
    start: int = 1

    def __post_init__(self) -> None:
        require(
            math.isfinite(self.p) and 0 < self.p <= 1,
            f"geometric p must be in (0, 1], got {self.p:g}",
        )
        require(
            self.p >= 1 / MAX_LENGTH_TOKENS,
            f"geometric p must be >= 1e-8 (mean at most {MAX_LENGTH_TOKENS:,} tokens), "
            f"got {self.p:g}",
        )
        require(self.start >= 0, f"geometric start must be >= 0, got {self.start}")

    @classmethod
    def from_mean(cls, mean: float, start: int = 1) -> Geometric:
        """The geometric law on {start, …} with E[X] = ``mean``."""
        check_positive("geometric mean", mean)
        require(mean >= start + 0.0, f"geometric mean must be >= {start}, got {mean:g}")
        require(
            mean <= MAX_LENGTH_TOKENS,
            f"geometric mean must be at most {MAX_LENGTH_TOKENS:,} tokens, got {mean:g}",
        )
        return cls(p=1.0 / (mean - start + 1.0), start=start)

    def raw_moments(self) -> tuple[float, float, float]:
        # Moments of Y = X − start ~ Geom0(p), then binomial expansion.
        p, q, s = self.p, 1.0 - self.p, float(self.start)
        y1 = q / p
        y2 = q * (1 + q) / p**2
        y3 = q * (1 + 4 * q + q * q) / p**3
        return (
            s + y1,
            s * s + 2 * s * y1 + y2,
            s**3 + 3 * s * s * y1 + 3 * s * y2 + y3,
        )

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        # numpy's geometric counts trials (support 1, 2, …).
        return rng.geometric(self.p, size=n).astype(np.int64) + (self.start - 1)

    def sample_size_biased(self, rng: np.random.Generator, n: int) -> np.ndarray:
        # x·q^(x−s) = s·q^y + y·q^y with y = x − s: a mixture of Geom0 (weight s/p) and
        # size-biased Geom0 = 1 + Geom0 + Geom0 (weight q/p²).
        p, q, s = self.p, 1.0 - self.p, self.start
        g1 = rng.geometric(p, size=n) - 1
        g2 = rng.geometric(p, size=n) - 1
        plain_weight = s * p / (s * p + q) if (s * p + q) > 0 else 1.0
        plain = rng.random(n) < plain_weight
        y = np.where(plain, g1, 1 + g1 + g2)
        return (y + s).astype(np.int64)

    def describe(self) -> str:
        return f"geometric(mean={self.mean():g})"

    @property
    def min_value(self) -> int:
        return self.start


def fixed(value: float) -> DiscreteLaw:
    """Every request has exactly ``value`` tokens."""
    value = _check_int("fixed length", value, minimum=0)
    return DiscreteLaw(np.array([value]), np.array([1.0]), f"fixed({value})")


def uniform(lo: float, hi: float) -> DiscreteLaw:
    """Uniform on the integers lo..hi inclusive."""
    lo = _check_int("uniform lo", lo, minimum=0)
    hi = _check_int("uniform hi", hi, minimum=0)
    require(hi >= lo, f"uniform needs lo <= hi, got lo={lo}, hi={hi}")
    require(hi - lo < MAX_TABULATED_SUPPORT, "uniform range is too wide to tabulate")
    values = np.arange(lo, hi + 1)
    return DiscreteLaw(values, np.full(values.size, 1.0), f"uniform({lo}..{hi})")


def lognormal(
    median: float, sigma: float, maximum: float | None = None, minimum: float = 1
) -> DiscreteLaw:
    """X = clip(ceil(median·exp(σ·Z)), minimum, maximum), Z ~ N(0, 1).

    ``maximum`` defaults to the 1 − 1e-9 quantile; the clipped tail mass sits on it.
    """
    check_positive("lognormal median", median)
    check_positive("lognormal sigma", sigma)
    minimum = _check_int("lognormal min", minimum, minimum=1)
    require(
        median <= MAX_LENGTH_TOKENS,
        f"lognormal median must be at most {MAX_LENGTH_TOKENS:,} tokens, got {median:g}",
    )
    if maximum is None:
        log_max = math.log(median) + sigma * normal.Z_1E9
        require(
            log_max < math.log(MAX_TABULATED_SUPPORT),
            "lognormal tail too heavy to tabulate without a cap: give max=<tokens>",
        )
        maximum = math.ceil(math.exp(log_max))
    maximum = _check_int("lognormal max", maximum, minimum=minimum)
    require(maximum - minimum < MAX_TABULATED_SUPPORT, "lognormal max is too large to tabulate")
    values = np.arange(minimum, maximum + 1)
    # P(ceil(X) <= d) = Φ((ln d − ln median)/σ); clipping folds the tails onto the ends.
    cdf = normal.cdf_array((np.log(values.astype(np.float64)) - math.log(median)) / sigma)
    cdf[-1] = 1.0
    probs = np.diff(cdf, prepend=0.0)
    label = f"lognormal(median={median:g}, sigma={sigma:g}, max={maximum})"
    return DiscreteLaw(values, probs, label)


def _check_int(name: str, value: float, minimum: int, maximum: int = MAX_LENGTH_TOKENS) -> int:
    if isinstance(value, float):
        require(
            not math.isfinite(value) or value <= maximum,
            f"{name} must be at most {maximum:,} tokens, got {value:g}",
        )
        require(
            math.isfinite(value) and value.is_integer(), f"{name} must be an integer, got {value}"
        )
    try:
        as_int = int(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be an integer, got {value!r}") from exc
    require(as_int >= minimum, f"{name} must be >= {minimum}, got {as_int}")
    require(as_int <= maximum, f"{name} must be at most {maximum:,} tokens, got {as_int}")
    return as_int
