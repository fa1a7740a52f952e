"""Multi-token prediction (MTP): k draft tokens a step, verified by the model.

A decode step of a sequence with MTP depth k runs k draft layers (DeepSeek's MTP module:
one transformer block per depth) and verifies k + 1 tokens through the model, and accepts
on average 1 + a of them (``accepted`` a, 0 ≤ a ≤ k: aiconfigurator-core's
``nextn_accepted``). As aiconfigurator-core prices it (``sdk/models/helpers.py``
``mtp_scale_factor``, line 981: a step evaluates L + k layers; ``speculative.py``: the
progress 1 + a applied above the step), one step costs:

* every per-layer time × (L + k)/L;
* the per-sequence and per-token work × (k + 1): attention's per-sequence term γ_A (the
  k + 1 query tokens' projections and scores), the FFN and the A↔F transfers on k + 1
  tokens a sequence; the KV read once a step (α_A·T and β_A unchanged: a decode kernel
  with k + 1 query tokens reads each sequence's cache once, where aiconfigurator-core
  widens the attention batch by k + 1 instead).

It advances each sequence by τ = 1 + a tokens. A step of time t then serves τ tokens a
sequence, so in token units, where workloads, KV caches, the theory and both simulators
count, MTP is the step times scaled by (L + k)/(L·τ) with the per-token work read at
k + 1 tokens a sequence: ``Mtp.apply`` returns exactly that, and every consumer of step
times (plan, the search, the simulators, capacity) runs unchanged, its step time a time
per token. The busiest expert rank is read at the verified batch (``Experts.verify``).
Exact in expectation; a request whose length is not a multiple of τ finishes a fraction of
a step early or late.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from afdplan.errors import InputError, require
from afdplan.timing.linear import AttentionLinear, Linear, LinearStepTimes


@dataclass(frozen=True)
class Mtp:
    """``depth`` k draft tokens a step, ``accepted`` a of them on average (0 ≤ a ≤ k)."""

    depth: int
    accepted: float

    def __post_init__(self) -> None:
        require(
            type(self.depth) is int and self.depth >= 1,
            f"--mtp: the draft depth must be an integer >= 1, got {self.depth!r}",
        )
        a = self.accepted
        require(
            isinstance(a, int | float) and math.isfinite(a) and 0.0 <= a <= self.depth,
            f"--mtp: the mean accepted draft tokens must be within [0, {self.depth}], got {a!r}",
        )

    @classmethod
    def parse(cls, text: str) -> Mtp:
        """``K:ACCEPTED`` (e.g. ``1:0.8``: one draft token, accepted 80% of the time)."""
        depth, _, accepted = str(text).strip().partition(":")
        try:
            k, a = int(depth), float(accepted)
        except ValueError:
            raise InputError(
                f"--mtp {text!r}: give DEPTH:ACCEPTED, the draft tokens a step and the mean "
                "accepted of them (e.g. 1:0.8)"
            ) from None
        return cls(k, a)

    @property
    def tokens_per_step(self) -> float:
        """τ = 1 + a: tokens a sequence advances a step."""
        return 1.0 + self.accepted

    def describe(self) -> str:
        return f"MTP {self.depth} draft token(s), {self.accepted:g} accepted a step"

    def apply(self, times: LinearStepTimes) -> LinearStepTimes:
        """``times`` per token of progress (module docstring): every coefficient × (L + k)
        /(L·τ), the per-sequence and per-token ones also × (k + 1)."""
        require(
            times.layers is not None,
            f"--mtp needs the model's layer count: {times.name} has no meta.layers",
        )
        require(times.time_unit == "s", f"--mtp: {times.name} is not in seconds")
        assert times.layers is not None
        scale = (times.layers + self.depth) / (times.layers * self.tokens_per_step)
        wide = scale * (self.depth + 1)  # work per verified token

        def per_token(line: Linear | None) -> Linear | None:
            return None if line is None else Linear(line.alpha * wide, line.beta * scale)

        a = times.attention
        reduce = times.reduce
        return replace(
            times,
            attention=AttentionLinear(a.alpha * scale, a.beta * scale, a.gamma * wide),
            ffn=per_token(times.ffn),
            comm=per_token(times.comm),
            exchange=per_token(times.exchange),
            reduce=None if reduce is None else Linear(reduce.alpha * wide, reduce.beta * scale),
            experts=None
            if times.experts is None
            else replace(times.experts, verify=times.experts.verify * (self.depth + 1)),
            name=f"{times.name} with {self.describe()}",
        )
