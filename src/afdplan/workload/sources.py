"""Workload sources and the per-slot stationary load θ, v (DESIGN.md §2).

Per-step context convention (used by the theory and the simulator alike): a request
with prompt length P and decode length D ≥ 1 occupies its slot for exactly D decode
steps; in its k-th step (k = 1..D) the slot holds **P + k − 1** KV tokens — the prompt
and the k − 1 tokens generated before that step. Over its life a request therefore
contributes

    C1 = Σ_k (P + k − 1)   = D·P + D(D−1)/2
    C2 = Σ_k (P + k − 1)²  = D·P² + P·D(D−1) + D(D−1)(2D−1)/6

token-steps, and by renewal–reward the long-run per-slot load has mean θ = E[C1]/E[D]
and variance v = E[C2]/E[D] − θ² (DESIGN.md §2). For geometric D with stop probability
p this gives θ = μ_P + (1 − p)/p: the paper's μ_P + μ_D with its μ_D = (1 − p)/p.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import astuple, dataclass, field

import numpy as np

from afdplan.errors import InputError, require
from afdplan.workload.laws import LengthLaw


@dataclass(frozen=True)
class RequestMoments:
    """Per-request expectations a renewal–reward load needs (tokens, token-steps)."""

    prompt: float  # E[P]
    decode: float  # E[D]
    decode2: float  # E[D²]
    c1: float  # E[C1], C1 = Σ_k (P + k − 1)
    c2: float  # E[C2], C2 = Σ_k (P + k − 1)²
    footprint2: float  # E[(P + D)²]: a request's final KV footprint, squared (tokens²)

    def scaled(self, w: float) -> RequestMoments:
        return RequestMoments(*(w * x for x in astuple(self)))

    def __add__(self, other: RequestMoments) -> RequestMoments:
        return RequestMoments(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @property
    def footprint_cv2(self) -> float:
        """Var(P + D)/E[P + D]²: how unevenly requests weigh on a token-balancing router."""
        mean = self.prompt + self.decode
        return max(self.footprint2 / mean**2 - 1.0, 0.0)

    @property
    def residual_decode(self) -> float:
        """E[D²]/E[D]: mean decode length of the request a slot serves at a random step."""
        return self.decode2 / self.decode


@dataclass(frozen=True)
class LoadStats:
    """What the rule needs from a workload.

    ``theta`` is the mean KV tokens one slot holds per step, ``v`` its variance
    (tokens²); ``mu_prefill``/``mu_decode`` are E[P], E[D] (tokens). For a trace,
    ``n_requests`` is its size and ``theta_se`` the delta-method standard error of the
    ratio estimator θ̂ = ΣC1/ΣD.
    """

    mu_prefill: float
    mu_decode: float
    theta: float
    v: float
    n_requests: int | None = None
    theta_se: float | None = None

    @property
    def load_v1(self) -> float:
        """Paper v1's per-slot load μ_P + μ_D (tokens)."""
        return self.mu_prefill + self.mu_decode

    @classmethod
    def from_moments(cls, m: RequestMoments, **extra: float | int | None) -> LoadStats:
        theta = m.c1 / m.decode
        # Clamp the rounding residue of E[C2]/E[D] − θ² at exactly zero variance.
        v = max(m.c2 / m.decode - theta * theta, 0.0)
        return cls(m.prompt, m.decode, theta, v, **extra)  # type: ignore[arg-type]


def context_sums(prompt: np.ndarray, decode: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-request C1 and C2 (token-steps, token²-steps) under the P + k − 1 convention."""
    p = np.asarray(prompt, dtype=np.float64)
    d = np.asarray(decode, dtype=np.float64)
    c1 = d * p + d * (d - 1) / 2
    c2 = d * p * p + p * d * (d - 1) + d * (d - 1) * (2 * d - 1) / 6
    return c1, c2


class Workload(ABC):
    """A source of requests (P, D): the only thing the theory and simulator see."""

    @abstractmethod
    def moments(self) -> RequestMoments: ...

    @abstractmethod
    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` i.i.d. requests: (prompt lengths, decode lengths), int64."""

    @abstractmethod
    def sample_stationary(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` requests drawn with probability ∝ D: what a slot serves at a random step."""

    @abstractmethod
    def describe(self) -> str: ...

    @abstractmethod
    def smallest_request(self) -> int:
        """The least P + D any request can have (tokens): its final KV footprint."""

    def stats(self) -> LoadStats:
        return LoadStats.from_moments(self.moments())


@dataclass(frozen=True)
class IndependentWorkload(Workload):
    """P and D drawn independently from two length laws."""

    prompt: LengthLaw
    decode: LengthLaw

    def __post_init__(self) -> None:
        require(self.decode.min_value >= 1, "decode lengths must be >= 1 token")

    def moments(self) -> RequestMoments:
        p1, p2, _ = self.prompt.raw_moments()
        d1, d2, d3 = self.decode.raw_moments()
        c1 = p1 * d1 + (d2 - d1) / 2
        c2 = p2 * d1 + p1 * (d2 - d1) + (2 * d3 - 3 * d2 + d1) / 6
        return RequestMoments(p1, d1, d2, c1, c2, p2 + 2 * p1 * d1 + d2)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.prompt.sample(rng, n), self.decode.sample(rng, n)

    def sample_stationary(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.prompt.sample(rng, n), self.decode.sample_size_biased(rng, n)

    def describe(self) -> str:
        return f"P~{self.prompt.describe()}, D~{self.decode.describe()}"

    def smallest_request(self) -> int:
        return self.prompt.min_value + self.decode.min_value


@dataclass(frozen=True)
class MixtureWorkload(Workload):
    """Each request comes from component i with probability ``weights[i]``."""

    components: tuple[Workload, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        require(len(self.components) > 0, "a mixture needs at least one component")
        require(
            len(self.components) == len(self.weights),
            "a mixture needs one weight per component",
        )
        require(
            all(math.isfinite(w) and w > 0 for w in self.weights),
            "mixture weights must be finite and > 0",
        )
        total = sum(self.weights)
        object.__setattr__(self, "weights", tuple(w / total for w in self.weights))

    def moments(self) -> RequestMoments:
        parts = [c.moments().scaled(w) for c, w in zip(self.components, self.weights, strict=True)]
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total

    def _draw(self, rng: np.random.Generator, n: int, weights: np.ndarray, stationary: bool):
        which = rng.choice(len(self.components), size=n, p=weights)
        prompt = np.empty(n, dtype=np.int64)
        decode = np.empty(n, dtype=np.int64)
        for i, comp in enumerate(self.components):
            idx = np.flatnonzero(which == i)
            draw = comp.sample_stationary if stationary else comp.sample
            prompt[idx], decode[idx] = draw(rng, idx.size)
        return prompt, decode

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self._draw(rng, n, np.asarray(self.weights), stationary=False)

    def sample_stationary(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        # A random step falls in component i with probability ∝ w_i·E_i[D].
        w = np.array(
            [w * c.moments().decode for c, w in zip(self.components, self.weights, strict=True)]
        )
        return self._draw(rng, n, w / w.sum(), stationary=True)

    def smallest_request(self) -> int:
        return min(c.smallest_request() for c in self.components)

    def describe(self) -> str:
        return " + ".join(
            f"{w:.3g}×[{c.describe()}]" for c, w in zip(self.components, self.weights, strict=True)
        )


@dataclass(frozen=True)
class EmpiricalWorkload(Workload):
    """Requests from a trace, (P, D) kept jointly; ``arrival`` (seconds) keeps its order."""

    prompt: np.ndarray
    decode: np.ndarray
    source: str = "trace"
    arrival: np.ndarray | None = None
    dropped_rows: int = 0
    arrival_sorted: bool = True  # the file listed requests in arrival order
    # why a timestamp column is present but unusable (say, which row is not finite); the
    # lengths are still good, so only what needs arrival times refuses the trace
    arrival_problem: str | None = None
    _biased_cdf: np.ndarray = field(init=False, repr=False, compare=False)
    # moments and stats, computed once: a study asks for them at every (case, B, r)
    _cache: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prompt = np.asarray(self.prompt, dtype=np.int64)
        decode = np.asarray(self.decode, dtype=np.int64)
        require(prompt.size > 0, f"{self.source}: no requests")
        require(prompt.shape == decode.shape, f"{self.source}: prompt/decode length mismatch")
        require(bool((decode >= 1).all()), f"{self.source}: decode lengths must be >= 1")
        require(bool((prompt >= 0).all()), f"{self.source}: prompt lengths must be >= 0")
        if self.arrival is not None:
            arrival = np.asarray(self.arrival, dtype=np.float64)
            require(arrival.shape == prompt.shape, f"{self.source}: arrival/length mismatch")
            require(bool(np.isfinite(arrival).all()), f"{self.source}: arrival times not finite")
        object.__setattr__(self, "prompt", prompt)
        object.__setattr__(self, "decode", decode)
        cdf = np.cumsum(decode, dtype=np.float64)
        object.__setattr__(self, "_biased_cdf", cdf / cdf[-1])
        object.__setattr__(self, "_cache", {})

    @property
    def size(self) -> int:
        return int(self.prompt.size)

    def moments(self) -> RequestMoments:
        if "moments" not in self._cache:
            self._cache["moments"] = self._moments()
        return self._cache["moments"]

    def _moments(self) -> RequestMoments:
        c1, c2 = context_sums(self.prompt, self.decode)
        d = self.decode.astype(np.float64)
        return RequestMoments(
            float(self.prompt.mean()),
            float(d.mean()),
            float((d * d).mean()),
            float(c1.mean()),
            float(c2.mean()),
            float(np.mean((self.prompt + d) ** 2)),
        )

    def stats(self) -> LoadStats:
        if "stats" not in self._cache:
            self._cache["stats"] = self._stats()
        return self._cache["stats"]

    def _stats(self) -> LoadStats:
        m = self.moments()
        theta = m.c1 / m.decode
        c1, _ = context_sums(self.prompt, self.decode)
        n = self.size
        # Delta method for the ratio estimator ΣC1/ΣD.
        resid = c1 - theta * self.decode
        se = float(np.sqrt(resid.var(ddof=1) / n) / m.decode) if n > 1 else math.nan
        return LoadStats.from_moments(m, n_requests=n, theta_se=se)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        idx = rng.integers(0, self.size, size=n)
        return self.prompt[idx], self.decode[idx]

    def sample_stationary(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.searchsorted(self._biased_cdf, rng.random(n), side="right")
        idx = np.minimum(idx, self.size - 1)
        return self.prompt[idx], self.decode[idx]

    def describe(self) -> str:
        return f"{self.source} ({self.size} requests)"

    def smallest_request(self) -> int:
        return int((self.prompt + self.decode).min())


def as_empirical(workload: Workload) -> EmpiricalWorkload:
    """The trace behind ``workload``; raises if it is parametric (replay needs an order)."""
    if not isinstance(workload, EmpiricalWorkload):
        raise InputError("arrival-order replay needs a trace workload (--trace)")
    return workload
