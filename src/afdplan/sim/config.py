"""Configuration of one bundle simulation (DESIGN.md §5), validated on construction."""

from __future__ import annotations

from dataclasses import dataclass

from afdplan.bundle import Pipeline
from afdplan.choices import ORDERS, WARMUPS, Order, Warmup
from afdplan.errors import check_nonnegative, require


@dataclass(frozen=True)
class SimConfig:
    """One rA–1F bundle run.

    ``steps`` fixes the horizon in decode steps; ``requests`` instead sets it to
    ⌈N·E[D]/(r·B)⌉, the steps in which the bundle serves about N requests. ``order``:
    ``iid`` resamples requests, ``replay`` feeds the trace in arrival order to whichever
    slot frees first. ``warmup``: ``stationary`` starts every slot in its renewal
    equilibrium (no window to discard); ``cold`` starts every slot with a fresh request
    and discards ``warmup_steps`` (default: see ``afdplan.sim.engine``); ``None`` picks
    stationary where it is defined (i.i.d., no KV cap) and cold otherwise.
    ``kv_capacity_tokens`` caps the KV tokens an Attention worker may reserve; ``noise``
    is the σ of a mean-one log-normal factor on every stage time.
    """

    ratio: int
    batch: int
    steps: int | None = None
    requests: int | None = None
    mode: str = "overlap"  # the pipeline: overlap | serial | pingpong | aic-*
    microbatches: int = 1
    layers: int = 1
    exact: bool = True  # ping-pong: the exact recurrence (else its closed form per step)
    order: Order = "iid"
    warmup: Warmup | None = None
    warmup_steps: int | None = None
    kv_capacity_tokens: int | None = None
    noise: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        require(
            _is_int(self.ratio) and self.ratio >= 1,
            f"ratio r must be an integer >= 1, got {self.ratio}",
        )
        require(
            _is_int(self.batch) and self.batch >= 1,
            f"batch B must be an integer >= 1, got {self.batch}",
        )
        require(
            (self.steps is None) != (self.requests is None),
            "give exactly one of steps or requests",
        )
        if self.steps is not None:
            require(
                _is_int(self.steps) and self.steps >= 1, f"steps must be >= 1, got {self.steps}"
            )
        if self.requests is not None:
            require(
                _is_int(self.requests) and self.requests >= 1,
                f"requests must be >= 1, got {self.requests}",
            )
        self.pipeline.split(self.batch)  # validates the pipeline; refuses m > B
        require(
            self.order in ORDERS, f"order must be one of {', '.join(ORDERS)}, got {self.order!r}"
        )
        require(
            self.warmup is None or self.warmup in WARMUPS,
            f"warmup must be one of {', '.join(WARMUPS)}, got {self.warmup!r}",
        )
        if self.warmup_steps is not None:
            require(self.warmup_steps >= 0, f"warmup steps must be >= 0, got {self.warmup_steps}")
        if self.kv_capacity_tokens is not None:
            require(
                self.kv_capacity_tokens >= 1,
                f"KV capacity must be >= 1 token, got {self.kv_capacity_tokens}",
            )
        check_nonnegative("noise", self.noise)
        require(
            _is_int(self.seed) and self.seed >= 0, f"seed must be an integer >= 0, got {self.seed}"
        )

    @property
    def pipeline(self) -> Pipeline:
        return Pipeline(self.mode, self.microbatches, self.layers)

    @property
    def slots(self) -> int:
        return self.ratio * self.batch


def _is_int(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or hasattr(value, "__index__")
