"""A deliberately plain per-slot stepping simulator: the oracle the fast path is tested
against and the baseline the benchmark times.

Every step it sums every slot's context per worker, advances every slot by one token and
refills the slots whose request ended — O(r·B) work per step, which is exactly what the
fast path avoids (DESIGN.md §5).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from afdplan.sim.schedule import RequestPlan

# Given the slots that just freed (ascending), return their next (prompts, decodes).
Refill = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def step_slots(
    ratio: int,
    batch: int,
    steps: int,
    first_prompt: np.ndarray,
    first_decode: np.ndarray,
    first_age: np.ndarray,
    refill: Refill,
    on_step: Callable[[int, np.ndarray], None] | None = None,
) -> np.ndarray:
    """(r, S) per-worker KV loads by stepping every slot; ``on_step(t, loads_t)`` if given."""
    ctx = (first_prompt + first_age).astype(np.int64)
    remaining = (first_decode - first_age).astype(np.int64)
    loads = np.empty((ratio, steps))
    for t in range(steps):
        loads[:, t] = ctx.reshape(ratio, batch).sum(axis=1)
        if on_step is not None:
            on_step(t, loads[:, t])
        if t == steps - 1:
            break  # nothing is refilled after the horizon
        ctx += 1
        remaining -= 1
        done = np.flatnonzero(remaining == 0)
        if done.size:
            ctx[done], remaining[done] = refill(done)
    return loads


def plan_refill(plan: RequestPlan, slots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, Refill]:
    """First requests, their ages, and a refill that follows ``plan`` slot by slot."""
    order = np.lexsort((plan.start, plan.slot))
    by_slot = np.split(order, np.cumsum(np.bincount(plan.slot, minlength=slots))[:-1])
    first = np.array([idx[0] for idx in by_slot])
    cursor = np.ones(slots, dtype=np.int64)

    def refill(done: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        picks = np.array([by_slot[s][cursor[s]] for s in done])
        cursor[done] += 1
        return plan.prompt[picks], plan.decode[picks]

    return plan.prompt[first], plan.decode[first], -plan.start[first], refill


def queue_refill(prompt: np.ndarray, decode: np.ndarray, first: int = 0) -> Refill:
    """Hand out requests in ``prompt``/``decode`` order, cyclically, from ``first``."""
    n = prompt.size
    position = [first]

    def refill(done: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = (position[0] + np.arange(done.size)) % n
        position[0] += done.size
        return prompt[idx], decode[idx]

    return refill
