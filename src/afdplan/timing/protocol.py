"""What the simulator needs from any step-time source (linear model or measured tables)."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class StepTimes(Protocol):
    """Vectorised stage times of one rA–1F bundle, in ``time_unit``."""

    @property
    def comm_scope(self) -> str: ...

    @property
    def time_unit(self) -> str: ...

    @property
    def name(self) -> str: ...

    def attention_time(self, batch: np.ndarray | float, kv_tokens: np.ndarray | float): ...

    def ffn_time(self, tokens: np.ndarray | float, imbalance=None): ...

    def comm_time(self, batch: np.ndarray | float, ratio: np.ndarray | float): ...

    def with_comm_scope(self, scope: str) -> StepTimes: ...


def routed_experts(times: StepTimes):
    """(the routed experts, the FFN group size g_F) of a step-time source; experts None
    for a dense FFN or a set that does not describe its experts."""
    linear = getattr(times, "fallback", times)
    return getattr(linear, "experts", None), float(getattr(linear, "gpus_ffn", 1.0))


def state_tokens(times: StepTimes) -> int:
    """KV tokens a sequence's recurrent state reserves (hybrid models; 0 otherwise)."""
    return int(getattr(getattr(times, "fallback", times), "state_tokens", 0))


def gpus_per_instance(times: StepTimes) -> tuple[float, float]:
    """(GPUs per Attention instance, per FFN instance) recorded with the coefficients."""
    linear = getattr(times, "fallback", times)
    return float(getattr(linear, "gpus_attention", 1.0)), float(getattr(linear, "gpus_ffn", 1.0))
