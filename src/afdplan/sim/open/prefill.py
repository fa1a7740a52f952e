"""The prefill pool in front of the decode fleet (P/D disaggregation).

Requests arrive, queue FIFO for ``instances`` identical prefill instances, are prefilled
in batches, and their KV cache travels to the decode fleet, where they arrive at
``done + transfer(P)``. An idle instance takes the waiting requests in arrival order,
whole prompts, while their tokens fit ``max_batch_tokens`` (always at least one prompt;
a longer one runs alone in chunks); the batch ends together after
``PrefillTimes.forward``. The earliest-free instance serves the head of the queue.

``serve`` is compiled; ``serve_reference`` is a plain event-heap implementation of the
same model that the tests hold it to.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numba
import numpy as np

from afdplan.errors import require
from afdplan.timing import PrefillTimes


@dataclass(frozen=True)
class PrefillPool:
    """``instances`` prefill instances, each with ``times``; ``hardware`` names their GPU
    and ``price_per_gpu_hour`` its price (None: unknown)."""

    instances: int
    times: PrefillTimes
    hardware: str = ""
    price_per_gpu_hour: float | None = None

    def __post_init__(self) -> None:
        require(self.instances >= 1, f"prefill instances must be >= 1, got {self.instances}")

    @property
    def gpus(self) -> int:
        return self.instances * self.times.gpus

    @property
    def cost_per_hour(self) -> float | None:
        return None if self.price_per_gpu_hour is None else self.gpus * self.price_per_gpu_hour


@dataclass(frozen=True)
class PrefillRun:
    """Per request (arrival order), seconds: when its batch began and ended, and when its
    KV cache reached the decode fleet."""

    begin: np.ndarray
    done: np.ndarray
    ready: np.ndarray
    busy: float  # instance-seconds spent computing

    def utilisation(self, instances: int, horizon: float) -> float:
        return self.busy / max(instances * horizon, 1e-12)


@numba.njit(cache=True)
def _serve(arrival, prompt, instances, per_token, per_pair, weights, fixed, max_tokens,
           begin, done):  # fmt: skip  # pragma: no cover - compiled
    free = np.zeros(instances)
    busy = 0.0
    n = arrival.size
    i = 0
    while i < n:
        k = 0
        for j in range(1, instances):
            if free[j] < free[k]:
                k = j
        t = max(free[k], arrival[i])
        tokens = prompt[i]
        pairs = prompt[i] * (prompt[i] + 1.0) / 2.0
        j = i + 1
        while j < n and arrival[j] <= t and tokens + prompt[j] <= max_tokens:
            tokens += prompt[j]
            pairs += prompt[j] * (prompt[j] + 1.0) / 2.0
            j += 1
        chunks = max(np.ceil(tokens / max_tokens), 1.0)
        dur = max(per_token * tokens + per_pair * pairs, chunks * weights) + chunks * fixed
        for q in range(i, j):
            begin[q] = t
            done[q] = t + dur
        free[k] = t + dur
        busy += dur
        i = j
    return busy


def _check(arrival: np.ndarray, prompt: np.ndarray) -> None:
    require(arrival.size == prompt.size and arrival.size > 0, "prefill: no requests")
    require(bool(np.all(np.diff(arrival) >= 0)), "prefill: arrivals must be in time order")


def serve(arrival: np.ndarray, prompt: np.ndarray, pool: PrefillPool) -> PrefillRun:
    """Run the pool on requests in arrival order (seconds, prompt tokens)."""
    arrival = np.ascontiguousarray(arrival, dtype=np.float64)
    prompt = np.ascontiguousarray(prompt, dtype=np.float64)
    _check(arrival, prompt)
    p = pool.times
    begin, done = np.empty_like(arrival), np.empty_like(arrival)
    busy = _serve(arrival, prompt, pool.instances, p.per_token, p.per_pair, p.weights,
                  p.fixed, float(p.max_batch_tokens), begin, done)  # fmt: skip
    return PrefillRun(begin, done, done + p.transfer(prompt), float(busy))


def serve_reference(arrival: np.ndarray, prompt: np.ndarray, pool: PrefillPool) -> PrefillRun:
    """The same model, event by event with a heap of free instances (slow; for tests)."""
    arrival, prompt = np.asarray(arrival, float), np.asarray(prompt, float)
    _check(arrival, prompt)
    p = pool.times
    heap = [(0.0, k) for k in range(pool.instances)]
    begin, done = np.empty(arrival.size), np.empty(arrival.size)
    queue = list(range(arrival.size))
    head, busy = 0, 0.0
    while head < len(queue):
        free_at, k = heapq.heappop(heap)
        t = max(free_at, arrival[queue[head]])
        batch = [queue[head]]
        head += 1
        while (
            head < len(queue)
            and arrival[queue[head]] <= t
            and sum(prompt[q] for q in batch) + prompt[queue[head]] <= p.max_batch_tokens
        ):
            batch.append(queue[head])
            head += 1
        tokens = float(sum(prompt[q] for q in batch))
        pairs = float(sum(prompt[q] * (prompt[q] + 1) / 2 for q in batch))
        dur = float(p.forward(tokens, pairs))
        for q in batch:
            begin[q], done[q] = t, t + dur
        busy += dur
        heapq.heappush(heap, (t + dur, k))
    return PrefillRun(begin, done, done + p.transfer(prompt), busy)
