"""Which request each slot serves at every step, and the KV load that follows.

With immediate refill a slot's request sequence does not depend on how long the steps
take, so the bundle is laid out in *step index*: a request with prompt P starting at
step s holds P + (t − s) KV tokens at step t ∈ [s, s + D) (the P + k − 1 convention of
``afdplan.workload``). A worker's load is then

    T_i(t) = B·t + Σ_{active j} (P_j − s_j),

and the sum only changes when a request starts or ends: one scatter-add of ±(P − s) per
request and a cumulative sum over steps give every T_i(t) with no pass over the slots
per step (DESIGN.md §5). Three ways to fill the slots:

* ``iid_plan`` — i.i.d. requests, vectorised; starts in the renewal equilibrium
  (each slot's current request size-biased, its age uniform) or cold.
* ``replay_plan`` — a trace in arrival order, each request going to the slot that
  frees first (ties: lowest slot), cold start.
* ``kv_limited_occupancy`` — a KV-cache cap per Attention worker: a request reserves its
  final context P + D (+ a hybrid model's state tokens) on admission and waits (FIFO,
  head of line) while no worker with a free slot has room; slots can therefore sit
  empty. A step loop, O(r) per step plus O(r) per admitted request.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from afdplan.errors import require
from afdplan.sim import kernels
from afdplan.workload import Workload
from afdplan.workload.sources import EmpiricalWorkload, as_empirical


@dataclass(frozen=True)
class KvStats:
    """What the KV-cache cap did (counts over the whole run, steps in decode steps)."""

    capacity_tokens: int
    blocked_steps: int  # steps at which the queue head did not fit although a slot was free
    waited_requests: int  # requests that were blocked at least one step
    mean_wait_steps: float  # over the requests that waited
    rejected_requests: int  # P + D above the capacity: can never be admitted
    slot_utilisation: float  # mean occupied slots / B


@dataclass(frozen=True)
class Occupancy:
    """Per-worker state of the bundle over steps 0..S−1 and the requests it served.

    ``loads[i, t]`` is worker i's KV tokens at step t; ``active[i, t]`` its number of
    sequences (``None`` means always B). Each request has ``start`` (its first step, < 0
    for a request already running at step 0), ``end`` = start + D and ``decode`` = D.
    """

    loads: np.ndarray
    active: np.ndarray | None
    batch: int
    start: np.ndarray
    end: np.ndarray
    decode: np.ndarray
    kv: KvStats | None = None
    # (r, m, S) KV tokens of each worker's m micro-batches (their slots split in order)
    microbatch_loads: np.ndarray | None = None
    # (r, m, S) sequences of each micro-batch where batches are partly empty (KV cap)
    microbatch_active: np.ndarray | None = None

    @property
    def steps(self) -> int:
        return int(self.loads.shape[1])

    @property
    def ratio(self) -> int:
        return int(self.loads.shape[0])

    def active_counts(self) -> np.ndarray:
        """(r, S) sequences per worker per step."""
        if self.active is None:
            return np.full(self.loads.shape, self.batch, dtype=np.int64)
        return self.active


# ----------------------------------------------------------------- slot plans


def loads_from_requests(
    prompt: np.ndarray,
    decode: np.ndarray,
    start: np.ndarray,
    worker: np.ndarray,
    ratio: int,
    batch: int | np.ndarray,
    steps: int,
) -> np.ndarray:
    """(r, S) per-worker KV loads of full slots, by scatter-add and cumulative sum.

    Requests must tile every slot over [0, S) without gaps (immediate refill), which is
    what lets the active count be B at every step. ``batch`` may give each row its own
    number of slots (micro-batches of unequal size).
    """
    offset = prompt.astype(np.float64) - start  # context at step t is offset + t
    begin = np.maximum(start, 0)
    stop = np.minimum(start + decode, steps)
    row = worker.astype(np.int64) * (steps + 1)
    index = np.concatenate([row + begin, row + stop])
    weights = np.concatenate([offset, -offset])
    delta = np.bincount(index, weights=weights, minlength=ratio * (steps + 1))
    running = np.cumsum(delta.reshape(ratio, steps + 1)[:, :steps], axis=1)
    return running + np.reshape(batch, (-1, 1)) * np.arange(steps, dtype=np.float64)


def _rows_needed(steps: int, mean_decode: float, var_decode: float) -> int:
    """Requests per slot that cover ``steps`` steps for most slots (renewal CLT, mean + 1σ);
    the slots left short draw again."""
    mean_count = steps / mean_decode
    sd = math.sqrt(max(var_decode, 0.0) * steps / mean_decode**3)
    return math.ceil(mean_count + sd) + 2


@dataclass(frozen=True)
class RequestPlan:
    """Requests laid out on slots: request j runs on ``slot[j]`` from ``start[j]``."""

    prompt: np.ndarray
    decode: np.ndarray
    start: np.ndarray
    slot: np.ndarray

    def occupancy(self, ratio: int, batch: int, steps: int, microbatches: int = 1) -> Occupancy:
        """Per-worker loads; with ``microbatches`` m > 1 also each micro-batch's, a worker's
        slots being split in order into m groups of balanced sizes."""
        worker = self.slot // batch
        end = self.start + self.decode
        if microbatches == 1:
            loads = loads_from_requests(
                self.prompt, self.decode, self.start, worker, ratio, batch, steps
            )
            return Occupancy(loads, None, batch, self.start, end, self.decode)
        m = microbatches
        group = worker * m + (self.slot % batch) * m // batch
        sizes = np.bincount(np.arange(batch) * m // batch, minlength=m)
        mb = loads_from_requests(
            self.prompt, self.decode, self.start, group, ratio * m, np.tile(sizes, ratio), steps
        ).reshape(ratio, m, steps)
        return Occupancy(mb.sum(axis=1), None, batch, self.start, end, self.decode, None, mb)


def iid_plan(
    workload: Workload,
    slots: int,
    steps: int,
    rng: np.random.Generator,
    stationary: bool,
) -> RequestPlan:
    """I.i.d. requests tiling every slot over [0, steps), vectorised over slots."""
    m = workload.moments()
    if stationary:
        prompt0, decode0 = workload.sample_stationary(rng, slots)
        # The age of the running request is uniform on 0..D−1 in equilibrium.
        start0 = -np.floor(rng.random(slots) * decode0).astype(np.int64)
    else:
        prompt0, decode0 = workload.sample(rng, slots)
        start0 = np.zeros(slots, dtype=np.int64)
    prompts, decodes, starts, slot_ids = [prompt0], [decode0], [start0], [np.arange(slots)]
    ends = start0 + decode0
    var_d = m.decode2 - m.decode**2
    short = np.flatnonzero(ends < steps)
    while short.size:
        # Rows for the neediest slot; what passes the horizon is cut, and slots still short
        # get another round (a one-σ margin: a wider one drew and discarded up to 3× the
        # requests of a heavy-tailed law).
        rows = _rows_needed(int(steps - ends[short].min()), m.decode, var_d)
        p, d = workload.sample(rng, rows * short.size)
        p = p.reshape(rows, short.size)
        d = d.reshape(rows, short.size)
        end = ends[short] + np.cumsum(d, axis=0)
        start = end - d
        keep = start < steps
        prompts.append(p[keep])
        decodes.append(d[keep])
        starts.append(start[keep])
        slot_ids.append(np.broadcast_to(short, d.shape)[keep])
        ends[short] = end[-1]
        short = short[ends[short] < steps]
    start = np.concatenate(starts)
    keep = start < steps
    return RequestPlan(
        np.concatenate(prompts)[keep],
        np.concatenate(decodes)[keep],
        start[keep],
        np.concatenate(slot_ids)[keep],
    )


def replay_plan(
    trace: EmpiricalWorkload,
    slots: int,
    steps: int,
    first: int = 0,
    compiled: bool | None = None,
) -> RequestPlan:
    """The trace in its order (cyclically, from request ``first``) to the first free slot.

    ``compiled``: run the numba kernel (True), the Python loop (False), or pick by size
    (None); both give the same plan.
    """
    if compiled is None:
        compiled = kernels.use_compiled(slots * steps / trace.moments().decode)
    if compiled:
        p, d, s, slot = kernels.replay(trace.prompt, trace.decode, slots, steps, first)
        return RequestPlan(p, d, s, slot)
    return replay_plan_loop(trace, slots, steps, first)


def replay_plan_loop(trace: EmpiricalWorkload, slots: int, steps: int, first: int = 0):
    """:func:`replay_plan` as a plain Python heap loop (the oracle of the kernel)."""
    prompts = trace.prompt.tolist()
    decodes = trace.decode.tolist()
    n = len(prompts)
    heap = [(0, slot) for slot in range(slots)]  # sorted, hence a valid heap
    out_p: list[int] = []
    out_d: list[int] = []
    out_s: list[int] = []
    out_slot: list[int] = []
    k = first
    while heap[0][0] < steps:
        t, slot = heap[0]
        d = decodes[k % n]
        out_p.append(prompts[k % n])
        out_d.append(d)
        out_s.append(t)
        out_slot.append(slot)
        k += 1
        heapq.heapreplace(heap, (t + d, slot))
    return RequestPlan(
        np.array(out_p, dtype=np.int64),
        np.array(out_d, dtype=np.int64),
        np.array(out_s, dtype=np.int64),
        np.array(out_slot, dtype=np.int64),
    )


# ------------------------------------------------------------------ KV-limited


STREAM_CHUNK = 65_536  # i.i.d. requests drawn at a time for the KV-capped loop


class _RequestStream:
    """Requests in order: a trace cyclically from ``first``, or i.i.d. draws in chunks."""

    def __init__(self, workload: Workload, rng: np.random.Generator, replay: bool, first: int):
        self.workload, self.rng, self.replay = workload, rng, replay
        self.k = first
        self.buffer_p: list[int] = []
        self.buffer_d: list[int] = []
        self.pos = 0
        if replay:
            trace = as_empirical(workload)
            self.buffer_p, self.buffer_d = trace.prompt.tolist(), trace.decode.tolist()
            self.pos = first % len(self.buffer_p)

    def next(self) -> tuple[int, int]:
        if self.pos >= len(self.buffer_p):
            if self.replay:
                self.pos = 0
            else:
                p, d = self.workload.sample(self.rng, STREAM_CHUNK)
                self.buffer_p, self.buffer_d, self.pos = p.tolist(), d.tolist(), 0
        item = self.buffer_p[self.pos], self.buffer_d[self.pos]
        self.pos += 1
        return item


def kv_limited_occupancy(
    workload: Workload,
    ratio: int,
    batch: int,
    steps: int,
    capacity: int,
    rng: np.random.Generator,
    replay: bool,
    first: int = 0,
    compiled: bool | None = None,
    microbatches: int = 1,
    state: int = 0,
) -> Occupancy:
    """Cold start, FIFO admission with a per-worker KV reservation cap (see module doc).

    With ``microbatches`` m > 1 an admitted request joins its worker's micro-batch with the
    fewest sequences (the lowest index among ties) and stays in it until it finishes, as it
    would stay in its slot; the occupancy then carries each micro-batch's load and count.
    ``compiled`` as for :func:`replay_plan`; both give the same occupancy.
    """
    smallest = workload.smallest_request() + state
    require(
        capacity >= smallest,
        f"KV capacity {capacity} tokens is below the smallest request (P + D"
        + (f" + {state} state tokens" if state else "")
        + f" = {smallest})",
    )
    if compiled is None:
        compiled = kernels.use_compiled(ratio * batch * steps / workload.moments().decode)
    args = (workload, ratio, batch, steps, capacity, rng, replay, first, microbatches, state)
    if compiled:
        return _kv_limited_compiled(*args)
    return kv_limited_occupancy_loop(*args)


def _kv_limited_compiled(
    workload, ratio, batch, steps, capacity, rng, replay, first, microbatches, state
) -> Occupancy:
    if replay:
        trace = as_empirical(workload)
        done = kernels.kv_limited(
            trace.prompt, trace.decode, True, first, ratio, batch, steps, capacity,
            microbatches, state,
        )  # fmt: skip
    else:
        # The i.i.d. stream in the loop's chunks, so the draws are the loop's draws.
        chunks_p, chunks_d = [], []
        expected = ratio * batch * (1 + steps / workload.moments().decode) * 1.2
        done = None
        while done is None:
            while len(chunks_p) * STREAM_CHUNK < expected:
                p, d = workload.sample(rng, STREAM_CHUNK)
                chunks_p.append(p.astype(np.int64))
                chunks_d.append(d.astype(np.int64))
            done = kernels.kv_limited(
                np.concatenate(chunks_p),
                np.concatenate(chunks_d),
                False,
                0,
                ratio,
                batch,
                steps,
                capacity,
                microbatches,
                state,
            )
            expected *= 2
    loads, active, start, decode, stats = done
    blocked, waited, total_wait, rejected = (int(x) for x in stats[:4])
    return _kv_occupancy(
        loads,
        active,
        microbatches,
        batch,
        start,
        decode,
        capacity,
        blocked,
        waited,
        total_wait,
        rejected,
    )


def _kv_occupancy(
    loads, active, m, batch, start, decode, capacity, blocked, waited, total_wait, rejected
) -> Occupancy:
    """The occupancy from per-(worker, micro-batch) rows: (r·m, S) loads and counts."""
    steps = loads.shape[1]
    mb_loads = loads.reshape(-1, m, steps)
    mb_active = active.reshape(-1, m, steps)
    worker_active = mb_active.sum(axis=1)
    kv = KvStats(
        capacity_tokens=capacity,
        blocked_steps=blocked,
        waited_requests=waited,
        mean_wait_steps=total_wait / waited if waited else 0.0,
        rejected_requests=rejected,
        slot_utilisation=float(worker_active.mean() / batch),
    )
    if m == 1:
        return Occupancy(loads, active, batch, start, start + decode, decode, kv)
    return Occupancy(
        mb_loads.sum(axis=1),
        worker_active,
        batch,
        start,
        start + decode,
        decode,
        kv,
        mb_loads,
        mb_active,
    )


def kv_limited_occupancy_loop(
    workload: Workload,
    ratio: int,
    batch: int,
    steps: int,
    capacity: int,
    rng: np.random.Generator,
    replay: bool,
    first: int = 0,
    microbatches: int = 1,
    state: int = 0,
) -> Occupancy:
    """:func:`kv_limited_occupancy` as a plain Python loop (the oracle of the kernel).
    (Long on purpose: it mirrors the compiled kernel statement by statement, so a test can
    hold one to the other; helpers would hide the correspondence.)"""
    m = microbatches
    stream = _RequestStream(workload, rng, replay, first)
    offset_sum = [0.0] * (ratio * m)  # Σ (P − s) over the active requests of each micro-batch
    group_count = [0] * (ratio * m)
    count = [0] * ratio
    reserved = [0] * ratio
    calendar: dict[int, list[tuple[int, int, int, int]]] = {}
    loads = np.empty((ratio * m, steps))
    active = np.empty((ratio * m, steps), dtype=np.int64)
    out_s: list[int] = []
    out_d: list[int] = []
    head = stream.next()
    head_blocked = 0
    blocked_steps = waited = rejected = total_wait = 0
    for t in range(steps):
        for w, g, off, res in calendar.pop(t, ()):
            offset_sum[g] -= off
            group_count[g] -= 1
            count[w] -= 1
            reserved[w] -= res
        while True:
            p, d = head
            need = p + d + state
            if need > capacity:
                rejected += 1
                head = stream.next()
                continue
            best, room = -1, -1
            any_free = False
            for w in range(ratio):
                if count[w] < batch:
                    any_free = True
                    free = capacity - reserved[w]
                    if free >= need and free > room:
                        best, room = w, free
            if best < 0:
                if any_free:
                    blocked_steps += 1
                    head_blocked += 1
                break
            g = min(range(best * m, best * m + m), key=lambda k: (group_count[k], k))
            offset_sum[g] += p - t
            group_count[g] += 1
            count[best] += 1
            reserved[best] += need
            calendar.setdefault(t + d, []).append((best, g, p - t, need))
            out_s.append(t)
            out_d.append(d)
            if head_blocked:
                waited += 1
                total_wait += head_blocked
                head_blocked = 0
            head = stream.next()
        for k in range(ratio * m):
            loads[k, t] = offset_sum[k] + group_count[k] * t
            active[k, t] = group_count[k]
    start = np.array(out_s, dtype=np.int64)
    decode = np.array(out_d, dtype=np.int64)
    return _kv_occupancy(
        loads,
        active,
        m,
        batch,
        start,
        decode,
        capacity,
        blocked_steps,
        waited,
        total_wait,
        rejected,
    )
