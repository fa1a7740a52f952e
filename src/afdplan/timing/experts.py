"""The MoE side of a step (DESIGN.md §10): routing, the ranks a token reaches, and the
barrier over expert ranks.

An expert-parallel FFN group of g ranks holds E/g of the E experts each; every token goes
to its top-k experts. A micro-batch of T tokens puts N_j token-expert pairs on rank j,
Σ_j N_j = T·k, and the group waits for the most loaded rank: the same barrier the paper
puts over attention workers (§4), one level down.

**Balanced routing** (every expert equally popular; each token's k experts a uniform
draw without replacement). A token's count on one rank is hypergeometric:

    mean k/g,   v = k·(1/g)·(1 − 1/g)·(E − k)/(E − 1)

so over T independent tokens N_j has mean μ = T·k/g and variance σ² = T·v, and the g
loads are exchangeable with a fixed sum: N_j ≈ μ + s·(Z_j − Z̄) with Z_j i.i.d. standard
normal and s = σ/√(1 − 1/g) (the fixed sum takes the share 1/g of each Z's variance).
Hence

    E[max_j N_j] ≈ μ + σ·E[max of g standard normals] / √(1 − 1/g)

(for g = 2: μ + σ·√(2/π), exactly the mean of μ + σ|Z|). Against token-by-token Monte
Carlo it is within 1% once a rank averages 32 pairs, and up to 2% low at 16 (the loads'
right skew; ``tests/test_experts.py``). A rank never holds more than T·min(k, E/g) pairs.
The slowest rank runs as an evenly loaded group would at the *effective* batch T·φ with
φ = E[max_j N_j]/μ, so the FFN time of the micro-batch is t_F(T·φ): measured tables hold
perfectly even rows (aiconfigurator-core's ``balanced_logits``), so reading them at T·φ
prices the barrier.

**Power-law routing** (``power-law:ALPHA``): expert popularity drawn as aiconfigurator-
core's collectors draw it (``collector/helper.py``, ``sample_power_law`` and
``_generate_power_law_distribution``: E loads from a power law of exponent α on
[1, 0.8·T] (on [0.01, 2] when T·k ≤ E), scaled to T·k pairs, each expert capped at T,
contiguous blocks of E/g experts per rank, the busiest rank timed). φ is the busiest
rank's share against the mean, averaged over ``POWER_LAW_DRAWS`` seeded draws: a
deterministic spread. Where the tables hold power-law rows they already time the busiest
rank (``skew_in_fit``), and φ = 1.

**Distinct ranks** a token reaches (the copies dispatch and combine move):
d = g·(1 − C(E − E/g, k)/C(E, k)).

**Split experts** (``expert_tp`` t > 1: every expert's columns over t GPUs, the group of
g = t·e GPUs expert parallel over e slices of t; t = g is vLLM's MoE without
``--enable-expert-parallel``): the t GPUs of a slice share its load exactly, so the
barrier is over the e slices, and everything above holds with g replaced by e (one slice
holding every expert: no spread at all).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from afdplan.errors import InputError, require
from afdplan.normal import expected_max_normal

ROUTINGS = ("balanced", "power-law:ALPHA")
POWER_LAW_DRAWS = 64  # draws averaged into the power-law spread (seeded: deterministic)
_POWER_LAW_SEED = 20_260_121
# The power-law spread is tabulated on T = 2^(i/4) tokens and interpolated in log T.
_GRID = 2.0 ** (np.arange(0, 4 * 22 + 1) / 4.0)


@dataclass(frozen=True)
class Routing:
    """How tokens pick experts: ``balanced`` or ``power-law`` with exponent ``alpha``."""

    kind: str = "balanced"
    alpha: float | None = None

    def __post_init__(self) -> None:
        require(
            self.kind in ("balanced", "power-law"),
            f"unknown routing {self.kind!r}; known: {', '.join(ROUTINGS)}",
        )
        if self.kind == "power-law":
            a = self.alpha
            require(
                a is not None and math.isfinite(a) and a > 0,
                f"--routing power-law:ALPHA needs a finite ALPHA > 0, got {a!r}",
            )
        else:
            require(self.alpha is None, "balanced routing takes no exponent")

    @classmethod
    def parse(cls, text: str | Routing | None) -> Routing:
        """``balanced`` or ``power-law:ALPHA`` (e.g. ``power-law:1.2``), else one line."""
        if text is None:
            return cls()
        if isinstance(text, Routing):
            return text
        name, _, value = str(text).strip().lower().partition(":")
        if name == "balanced" and not value:
            return cls()
        if name == "power-law":
            try:
                alpha = float(value)
            except ValueError:
                raise InputError(
                    f"--routing {text!r}: ALPHA must be a number (e.g. power-law:1.2)"
                ) from None
            return cls("power-law", alpha)
        raise InputError(f"unknown routing {text!r}; known: {', '.join(ROUTINGS)}")

    def __str__(self) -> str:
        return self.kind if self.alpha is None else f"{self.kind}:{self.alpha:g}"

    @property
    def table_distribution(self) -> str:
        """The ``distribution`` value of aiconfigurator-core's MoE rows for this routing."""
        return "balanced" if self.alpha is None else f"power_law_{self.alpha:g}"


@dataclass(frozen=True)
class Experts:
    """The routed experts of an MoE FFN: ``experts`` E, ``top_k`` k, the ``routing``, and
    whether the FFN fit already times the busiest rank under it (``skew_in_fit``: rows
    measured at a skewed routing's most loaded rank), and ``expert_tp``: the GPUs each
    expert is split over. The ``ranks`` the methods take is the FFN instance's GPU count;
    the barrier is over its ranks / ``expert_tp`` expert-parallel slices (module doc)."""

    experts: int
    top_k: int
    routing: Routing = Routing()
    skew_in_fit: bool = False
    expert_tp: int = 1
    # tokens the FFN runs per token of the batch it is asked about: k + 1 under MTP (the
    # verified drafts; ``afdplan.timing.mtp``), whose busiest rank is read at the batch run
    verify: int = 1

    def __post_init__(self) -> None:
        for name, value in (
            ("experts", self.experts),
            ("top_k", self.top_k),
            ("expert_tp", self.expert_tp),
            ("verify", self.verify),
        ):
            require(
                isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 1,
                f"experts.{name} must be an integer >= 1, got {value!r}",
            )
        require(
            self.top_k <= self.experts,
            f"experts.top_k = {self.top_k} exceeds the {self.experts} experts",
        )
        object.__setattr__(self, "routing", Routing.parse(self.routing))
        require(
            not self.skew_in_fit or self.routing.kind == "power-law",
            "experts.skew_in_fit applies to a power-law routing's measured rows",
        )

    def _ranks(self, ranks: float) -> int:
        """The expert-parallel slices of a group of ``ranks`` GPUs."""
        t = self.expert_tp
        g = int(ranks) // t
        require(
            g * t == ranks and 1 <= g <= self.experts and self.experts % g == 0,
            f"a group of {ranks:g} GPUs with every expert split over {t} is not "
            f"expert parallel over a divisor of the {self.experts} experts"
            if t > 1
            else f"an expert-parallel group of {ranks:g} GPUs must divide the "
            f"{self.experts} experts",
        )
        return g

    def distinct_ranks(self, ranks: float) -> float:
        """d = g·(1 − C(E − E/g, k)/C(E, k)): ranks (slices, with split experts) one
        token's k experts reach."""
        g, e, k = self._ranks(ranks), self.experts, self.top_k
        miss = math.comb(e - e // g, k) / math.comb(e, k)
        return g * (1.0 - miss)

    def rank_variance(self, ranks: float) -> float:
        """Var of one token's expert count on one rank: k·(1/g)(1 − 1/g)(E − k)/(E − 1)."""
        return self._variance(self._ranks(ranks))

    def _variance(self, g: int) -> float:
        e, k = self.experts, self.top_k
        if e == 1:
            return 0.0
        return k * (1 / g) * (1 - 1 / g) * (e - k) / (e - 1)

    def _cap(self, g: int) -> float:
        """The largest φ: one rank holding T·min(k, E/g) of the T·k/g pairs it averages."""
        return g * min(self.top_k, self.experts // g) / self.top_k

    def imbalance(self, tokens, ranks: float) -> np.ndarray:
        """φ(T) = E[busiest rank's pairs]/(T·k/g) ≥ 1 for micro-batches of ``tokens`` T
        on ``ranks`` g (module doc); 1 for one rank, no tokens, or a fit that already
        times the busiest rank."""
        t = np.asarray(tokens, dtype=np.float64) * self.verify
        g = self._ranks(ranks)
        if g == 1 or self.skew_in_fit:
            return np.ones_like(t)
        if self.routing.kind == "power-law":
            grid = _power_law_grid(self.experts, self.top_k, g, float(self.routing.alpha))
            return np.interp(np.log2(np.maximum(t, 1.0)), np.log2(_GRID), grid)
        mean = t * self.top_k / g
        sigma = np.sqrt(t * self._variance(g))
        spread = expected_max_normal(g) / math.sqrt(1 - 1 / g)
        with np.errstate(divide="ignore", invalid="ignore"):
            phi = np.where(t > 0, 1.0 + sigma * spread / np.where(t > 0, mean, 1.0), 1.0)
        return np.minimum(phi, self._cap(g))

    def imbalance_quantile(self, tokens, ranks: float, q: float) -> np.ndarray:
        """φ's q-quantile: the busiest rank's load exceeded at a 1 − q share of
        micro-batches (balanced routing: the largest of g loads at Φ⁻¹(q^{1/g}) standard
        deviations, the fixed sum's stretch as in :meth:`imbalance`); the deterministic
        spread otherwise."""
        t = np.asarray(tokens, dtype=np.float64) * self.verify
        g = self._ranks(ranks)
        if g == 1 or self.skew_in_fit or self.routing.kind == "power-law":
            return self.imbalance(tokens, ranks)
        from afdplan.normal import ppf

        spread = ppf(q ** (1.0 / g)) / math.sqrt(1 - 1 / g)
        mean = t * self.top_k / g
        sigma = np.sqrt(t * self._variance(g))
        with np.errstate(divide="ignore", invalid="ignore"):
            phi = np.where(t > 0, 1.0 + sigma * spread / np.where(t > 0, mean, 1.0), 1.0)
        return np.clip(phi, 1.0, self._cap(g))

    def draw_imbalance(self, rng: np.random.Generator, tokens, ranks: float) -> np.ndarray:
        """One φ per micro-batch in ``tokens``: the busiest of g rank loads drawn from the
        law of :meth:`imbalance_quantile` (one uniform each, through the tabulated inverse
        of Φ(z)^g: the same mean and quantiles the theory uses), or the deterministic
        spread (power-law, or a fit that already times the busiest rank)."""
        t = np.asarray(tokens, dtype=np.float64) * self.verify
        g = self._ranks(ranks)
        if g == 1 or self.skew_in_fit or self.routing.kind == "power-law":
            return self.imbalance(tokens, ranks)
        u_grid, z_grid = _max_normal_inverse(g)
        excess = np.interp(rng.random(t.shape), u_grid, z_grid) / math.sqrt(1 - 1 / g)
        mean = t * self.top_k / g
        sigma = np.sqrt(t * self._variance(g))
        with np.errstate(divide="ignore", invalid="ignore"):
            phi = np.where(t > 0, 1.0 + sigma * excess / np.where(t > 0, mean, 1.0), 1.0)
        return np.clip(phi, 1.0, self._cap(g))


@functools.lru_cache(maxsize=64)
def _max_normal_inverse(g: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, z) with u = Φ(z)^g on a fine z grid: the inverse CDF of the largest of g
    standard normals, for :func:`np.interp`."""
    from afdplan.normal import log_cdf_array

    z = np.linspace(-6.0, 8.0, 4097)
    return np.exp(g * log_cdf_array(z)), z


@functools.lru_cache(maxsize=64)
def _power_law_grid(experts: int, top_k: int, ranks: int, alpha: float) -> np.ndarray:
    """φ on ``_GRID``: the mean over seeded draws of the busiest rank's share."""
    rng = np.random.default_rng(_POWER_LAW_SEED)
    u = rng.random((POWER_LAW_DRAWS, experts))
    out = np.empty(_GRID.size)
    for i, t in enumerate(_GRID):
        pairs = t * top_k
        lo, hi = (1.0, 0.8 * t) if pairs > experts else (0.01, 2.0)
        hi = max(hi, lo * (1 + 1e-9))
        loads = _bounded_power_law(u, alpha, lo, hi)
        loads = _capped_shares(loads / loads.sum(axis=1, keepdims=True), t / pairs) * pairs
        busiest = loads.reshape(POWER_LAW_DRAWS, ranks, -1).sum(axis=2).max(axis=1)
        out[i] = float(busiest.mean()) / (pairs / ranks)
    return out


def _bounded_power_law(u: np.ndarray, alpha: float, lo: float, hi: float) -> np.ndarray:
    """Inverse-CDF draws of a power law p(x) ∝ x^(−α) on [lo, hi] (log-uniform at α = 1)."""
    if abs(alpha - 1.0) < 1e-9:
        return lo * (hi / lo) ** u
    a, b = lo ** (1 - alpha), hi ** (1 - alpha)
    return ((b - a) * u + a) ** (1 / (1 - alpha))


def _capped_shares(shares: np.ndarray, cap: float) -> np.ndarray:
    """Shares (rows summing to 1) with none above ``cap`` (an expert serves each token at
    most once: at most T of the T·k pairs), the excess spread over the rest pro rata."""
    if cap >= 1.0:
        return shares
    out = shares.copy()
    for _ in range(out.shape[1]):
        over = out > cap
        excess = np.where(over, out - cap, 0.0).sum(axis=1, keepdims=True)
        if not (excess > 1e-15).any():
            break
        out = np.minimum(out, cap)
        room = np.where(out < cap, out, 0.0)
        total = room.sum(axis=1, keepdims=True)
        out = out + np.where(total > 0, excess * room / np.where(total > 0, total, 1.0), 0.0)
    return out
