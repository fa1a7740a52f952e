"""What one AFD bundle is: r Attention instances of g_A GPUs, one FFN group of g_F GPUs,
B sequences per Attention worker, and the pipeline a step runs (DESIGN.md §1, §8); and
the one KV-limit rule every command sizes B by (DESIGN.md §2)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from afdplan.bundle.objective import objective_weights
from afdplan.bundle.pipeline import Pipeline
from afdplan.errors import check_nonnegative, check_positive, require

# z of the KV limit B·θ + z·√(B·v) ≤ capacity: a worker's load T ≈ N(B·θ, B·v) exceeds its
# KV cache at ~Q(3) = 0.13% of steps.
KV_SIGMAS = 3.0


def kv_load(batch, theta: float, v: float, sigmas: float = KV_SIGMAS):
    """B·θ + z·√(B·v): the KV tokens one worker must hold to keep its load fluctuation
    inside the cache at all but a Q(z) share of steps (vectorised over ``batch``)."""
    return batch * theta + sigmas * np.sqrt(batch * v)


def max_feasible_batch(
    kv_capacity_tokens: float, theta: float, v: float, sigmas: float = KV_SIGMAS
) -> int:
    """Largest B with B·θ + z·√(B·v) ≤ capacity (z = ``sigmas``), ≥ 0."""
    cap = check_positive("KV capacity (tokens)", kv_capacity_tokens)
    theta = check_positive("theta", theta)
    z_sd = check_nonnegative("headroom sigmas", sigmas) * math.sqrt(check_nonnegative("v", v))
    # θ·s² + z√v·s − C = 0 in s = √B.
    s = (-z_sd + math.sqrt(z_sd * z_sd + 4 * theta * cap)) / (2 * theta)
    b = math.floor(s * s)
    # s·s may round either side of an exact root: step to the largest B that fits, by
    # the very rule (kv_load) the callers check against.
    while b > 0 and kv_load(b, theta, v, sigmas) > cap:
        b -= 1
    while kv_load(b + 1, theta, v, sigmas) <= cap:
        b += 1
    return b


def bundle_gpus(ratio, gpus_attention, gpus_ffn):
    """r·g_A + g_F GPUs (vectorised)."""
    return ratio * gpus_attention + gpus_ffn


def bundle_cost(ratio, gpus_attention, gpus_ffn, price_attention, price_ffn):
    """$ per hour: r·g_A·p_A + g_F·p_F (prices per GPU-hour of each side; vectorised)."""
    return ratio * gpus_attention * price_attention + gpus_ffn * price_ffn


@dataclass(frozen=True)
class Bundle:
    """One rA–1F bundle: ``ratio`` r, ``batch`` B per Attention worker, GPUs per Attention
    instance g_A and in the FFN group g_F, and its ``pipeline``. ``colocated``: ordinary
    decode instead — r data-parallel attention instances whose own GPUs run the FFN
    (expert parallel over all r·g_A), so the group holds r·g_A GPUs, not r·g_A + g_F."""

    ratio: int
    batch: int
    gpus_attention: float = 1.0
    gpus_ffn: float = 1.0
    pipeline: Pipeline = field(default_factory=Pipeline)
    colocated: bool = False

    def __post_init__(self) -> None:
        for label, value in (("ratio r", self.ratio), ("batch B", self.batch)):
            require(int(value) == value and value >= 1, f"{label} must be >= 1, got {value}")
        check_positive("GPUs per Attention instance", self.gpus_attention)
        check_positive("GPUs per FFN instance", self.gpus_ffn)

    @property
    def gpus(self) -> float:
        return bundle_gpus(self.ratio, self.gpus_attention, self._separate_ffn_gpus)

    @property
    def _separate_ffn_gpus(self) -> float:
        return 0.0 if self.colocated else self.gpus_ffn

    def cost_per_hour(self, price_attention: float, price_ffn: float) -> float:
        return bundle_cost(
            self.ratio, self.gpus_attention, self._separate_ffn_gpus, price_attention, price_ffn
        )

    def weights(
        self, objective: str, price_attention: float | None = None, price_ffn: float | None = None
    ) -> tuple[float, float]:
        """(w_A, w_F) of ``objective`` for this bundle's instances."""
        return objective_weights(
            objective, self.gpus_attention, self.gpus_ffn, price_attention, price_ffn
        )

    def split(self) -> np.ndarray:
        """Sequences per micro-batch of one worker (``Pipeline.split``)."""
        return self.pipeline.split(self.batch)
