"""Compiled loops for the two layouts that are sequential by nature.

Arrival-order replay (each request to the slot that frees first) and the KV-capped
admission loop cannot be vectorised over requests: each decision depends on the one
before. They are written here once as plain loops over arrays and compiled with numba;
``afdplan.sim.schedule`` keeps the original Python loops as the oracle that the tests
compare against (the outputs are identical, bit for bit).

numba costs about a second per process to import and load its cache, more than the
Python loop needs for a small run, so :func:`use_compiled` picks the compiled kernel only
when the run places enough requests to gain; without numba the Python loops run.
"""

from __future__ import annotations

import numpy as np

# Below this many request placements the Python loop finishes before numba has loaded.
COMPILED_MIN_REQUESTS = 300_000

_KERNELS: dict[str, object] = {}


def use_compiled(placements: float) -> bool:
    """Whether a run of about ``placements`` request placements should use the kernels:
    always once they are loaded (the cost is paid), else only for a large run."""
    if _KERNELS.get("replay") is not None:
        return True
    return placements >= COMPILED_MIN_REQUESTS and _load() is not None


def preload() -> None:
    """Load the kernels now: a study that runs many replays pays numba's start-up once."""
    _load()


def _load():
    if "replay" not in _KERNELS:
        try:
            import numba
        except ImportError:  # pragma: no cover - numba is a dependency; the loops still work
            _KERNELS["replay"] = _KERNELS["kv"] = None
            return None
        _KERNELS["replay"] = numba.njit(cache=True, nogil=True)(_replay)
        _KERNELS["kv"] = numba.njit(cache=True, nogil=True)(_kv_limited)
    return _KERNELS["replay"]


def replay(
    prompt: np.ndarray, decode: np.ndarray, slots: int, steps: int, first: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(prompt, decode, start, slot) of every request placed, as ``replay_plan``."""
    kernel = _load()
    mean = float(decode.mean())
    capacity = int(slots + slots * steps / max(mean, 1.0) * 1.5) + 1024
    while True:
        out = np.empty((4, capacity), dtype=np.int64)
        n = kernel(prompt, decode, slots, steps, first, out)
        if n >= 0:
            return out[0, :n], out[1, :n], out[2, :n], out[3, :n]
        capacity *= 2


def _replay(prompt, decode, slots, steps, first, out):  # pragma: no cover - compiled
    # A binary heap of (free-at step, slot), ordered lexicographically: pops are unique, so
    # the order of placements equals heapq's in the Python oracle.
    heap_t = np.zeros(slots, dtype=np.int64)
    heap_s = np.arange(slots, dtype=np.int64)
    n = prompt.size
    k = first
    placed = 0
    cap = out.shape[1]
    while heap_t[0] < steps:
        t = heap_t[0]
        slot = heap_s[0]
        if placed >= cap:
            return -1
        d = decode[k % n]
        out[0, placed] = prompt[k % n]
        out[1, placed] = d
        out[2, placed] = t
        out[3, placed] = slot
        placed += 1
        k += 1
        # Replace the root by (t + d, slot) and sift it down.
        nt = t + d
        i = 0
        while True:
            child = 2 * i + 1
            if child >= slots:
                break
            right = child + 1
            if right < slots and (
                heap_t[right] < heap_t[child]
                or (heap_t[right] == heap_t[child] and heap_s[right] < heap_s[child])
            ):
                child = right
            if heap_t[child] < nt or (heap_t[child] == nt and heap_s[child] < slot):
                heap_t[i] = heap_t[child]
                heap_s[i] = heap_s[child]
                i = child
            else:
                break
        heap_t[i] = nt
        heap_s[i] = slot
    return placed


def kv_limited(
    prompts: np.ndarray,
    decodes: np.ndarray,
    cyclic: bool,
    first: int,
    ratio: int,
    batch: int,
    steps: int,
    capacity: int,
    microbatches: int = 1,
    state: int = 0,
):
    """The KV-capped admission loop of ``kv_limited_occupancy`` over a request stream
    (``state``: tokens every request reserves beyond P + D).

    ``cyclic``: the stream is the trace from ``first``, repeated; else the arrays are the
    i.i.d. draws in order, and a return of ``None`` asks for a longer stream. Loads and
    sequence counts come per (worker, micro-batch): arrays of shape (r·m, S).
    """
    kernel = _load() and _KERNELS["kv"]
    max_out = int(steps * ratio * batch / max(float(decodes.mean()), 1.0) * 1.5) + ratio * batch
    max_out += 1024
    groups = ratio * microbatches
    while True:
        loads = np.empty((groups, steps))
        active = np.empty((groups, steps), dtype=np.int64)
        out = np.empty((2, max_out), dtype=np.int64)
        stats = np.zeros(6, dtype=np.int64)
        args = (prompts, decodes, cyclic, first, ratio, batch, steps, capacity, state,
                microbatches)  # fmt: skip
        status = kernel(*args, loads, active, out, stats)
        if status == -2:
            return None  # the i.i.d. stream ran out
        if status >= 0:
            n = int(stats[5])
            return loads, active, out[0, :n].copy(), out[1, :n].copy(), stats
        max_out *= 2


def _kv_limited(
    prompts, decodes, cyclic, first, ratio, batch, steps, capacity, state, m, loads, active, out,
    stats,
):  # fmt: skip  # pragma: no cover - compiled
    """The KV-capped admission loop (``schedule.kv_limited_occupancy``). Long because it
    is compiled: its state stays in one function's locals, and
    ``schedule.kv_limited_occupancy_loop`` is the plain oracle the tests hold it to."""
    n_stream = prompts.size
    pos = first % n_stream if cyclic else 0
    # Per (worker, micro-batch) group w·m + g: Σ (P − s) and sequences; per worker: count
    # and reserved tokens. An admitted request joins its worker's micro-batch with the
    # fewest sequences (the lowest index among ties) and stays there, as a slot would.
    offset_sum = np.zeros(ratio * m)
    group_count = np.zeros(ratio * m, dtype=np.int64)
    count = np.zeros(ratio, dtype=np.int64)
    reserved = np.zeros(ratio, dtype=np.int64)
    cap_out = out.shape[1]
    # Departures by step: a linked list per step over the admitted requests.
    head_at = np.full(steps, -1, dtype=np.int64)
    next_of = np.empty(cap_out, dtype=np.int64)
    dep_w = np.empty(cap_out, dtype=np.int64)
    dep_g = np.empty(cap_out, dtype=np.int64)
    dep_off = np.empty(cap_out)
    dep_need = np.empty(cap_out, dtype=np.int64)
    admitted = 0
    blocked_steps = waited = rejected = total_wait = head_blocked = 0
    if not cyclic and pos >= n_stream:
        return -2
    p = prompts[pos]
    d = decodes[pos]
    pos += 1
    for t in range(steps):
        j = head_at[t]
        while j >= 0:
            w = dep_w[j]
            offset_sum[dep_g[j]] -= dep_off[j]
            group_count[dep_g[j]] -= 1
            count[w] -= 1
            reserved[w] -= dep_need[j]
            j = next_of[j]
        while True:
            need = p + d + state
            if need > capacity:
                rejected += 1
                if pos >= n_stream:
                    if not cyclic:
                        return -2
                    pos = 0
                p = prompts[pos]
                d = decodes[pos]
                pos += 1
                continue
            best = -1
            room = -1
            any_free = False
            for w in range(ratio):
                if count[w] < batch:
                    any_free = True
                    free = capacity - reserved[w]
                    if free >= need and free > room:
                        best = w
                        room = free
            if best < 0:
                if any_free:
                    blocked_steps += 1
                    head_blocked += 1
                break
            if admitted >= cap_out:
                return -1
            off = float(p - t)
            g = best * m
            for k in range(best * m + 1, best * m + m):
                if group_count[k] < group_count[g]:
                    g = k
            offset_sum[g] += off
            group_count[g] += 1
            count[best] += 1
            reserved[best] += need
            end = t + d
            if end < steps:
                dep_w[admitted] = best
                dep_g[admitted] = g
                dep_off[admitted] = off
                dep_need[admitted] = need
                next_of[admitted] = head_at[end]
                head_at[end] = admitted
            out[0, admitted] = t
            out[1, admitted] = d
            admitted += 1
            if head_blocked:
                waited += 1
                total_wait += head_blocked
                head_blocked = 0
            if pos >= n_stream:
                if not cyclic:
                    return -2
                pos = 0
            p = prompts[pos]
            d = decodes[pos]
            pos += 1
        for k in range(ratio * m):
            loads[k, t] = offset_sum[k] + group_count[k] * t
            active[k, t] = group_count[k]
    stats[0] = blocked_steps
    stats[1] = waited
    stats[2] = total_wait
    stats[3] = rejected
    stats[4] = pos
    stats[5] = admitted
    return 0
