"""A plain, object-based implementation of the open-system model (the tests' oracle).

Written independently of the compiled loop in ``afdplan.sim.open.loop``: requests are
objects, queues are deques, the next event comes from a heap, and a step's time comes
from ``Pipeline.step_time`` and the step-time object itself. Slow (Python per slot per
step); use it for small runs only.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from afdplan.choices import ROUTERS
from afdplan.sim.open.fleet import Fleet, OpenResult
from afdplan.timing import transfer_each_way


@dataclass
class _Request:
    index: int
    prompt: int
    decode: int
    left: int = 0
    context: int = 0
    microbatch: int = 0


class _Worker:
    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.queue: deque[_Request] = deque()
        self.active: list[_Request] = []
        self.reserved = 0
        self.queued_kv = 0

    @property
    def load(self) -> int:
        return self.reserved + self.queued_kv

    @property
    def kv(self) -> int:
        return sum(r.context for r in self.active)


def run_reference(times, prompt, decode, cand, fleet: Fleet) -> OpenResult:
    """The open system event by event, in objects (the tests' oracle of ``loop``). (Long
    because it is the whole event loop in one readable place, as the model states it in
    ``afdplan.sim.open.loop``'s docstring; its steps are in ``_step_time`` and ``_route``.)"""

    n, r, m = times.size, fleet.ratio, fleet.pipeline.microbatches
    state = fleet.times.state_tokens  # a hybrid model's recurrent state, reserved per request
    workers = [_Worker(fleet.batch) for _ in range(fleet.workers)]
    start, finish = np.full(n, np.nan), np.full(n, np.nan)
    worker_of = np.full(n, -1, np.int64)
    busy = np.zeros(fleet.bundles)
    running: dict[int, float] = {}  # bundle → end of its current step
    heap: list[tuple[float, int, int]] = []  # (time, kind 0 arrival / 1 step end, id)
    for i, t in enumerate(times):
        heapq.heappush(heap, (float(t), 0, i))
    log: list[tuple[float, int, int, int]] = []
    in_system = done = steps = 0

    def snapshot(t: float) -> None:
        queued = sum(len(w.queue) for w in workers)
        log.append((t, in_system, queued, sum(w.kv for w in workers)))

    def admit_and_step(k: int, t: float) -> None:
        for w in workers[k * r : (k + 1) * r]:
            while w.queue and len(w.active) < w.batch:
                req = w.queue[0]
                need = req.prompt + req.decode + state
                if fleet.kv_capacity_tokens and w.reserved + need > fleet.kv_capacity_tokens:
                    break
                w.queue.popleft()
                w.queued_kv -= need
                w.reserved += need
                req.left, req.context = req.decode, req.prompt
                sizes = [sum(a.microbatch == j for a in w.active) for j in range(m)]
                req.microbatch = sizes.index(min(sizes))  # the fewest; the first among ties
                w.active.append(req)
                start[req.index] = t
        tau = _step_time(fleet, workers[k * r : (k + 1) * r], m)
        if tau is None:
            running.pop(k, None)
            return
        running[k] = t + tau
        busy[k] += tau
        heapq.heappush(heap, (t + tau, 1, k))

    while heap:
        t, kind, ident = heapq.heappop(heap)
        if kind == 0:
            i = ident
            req = _Request(i, int(prompt[i]), int(decode[i]))
            w_index = _route(fleet.router, i, workers, cand)
            worker_of[i] = w_index
            w = workers[w_index]
            w.queue.append(req)
            w.queued_kv += req.prompt + req.decode + state
            in_system += 1
            k = w_index // r
            if k not in running:
                admit_and_step(k, t)
            snapshot(t)
            continue
        k = ident
        steps += 1
        for w in workers[k * r : (k + 1) * r]:
            still = []
            for req in w.active:
                req.left -= 1
                req.context += 1
                if req.left == 0:
                    finish[req.index] = t
                    w.reserved -= req.prompt + req.decode + state
                    in_system -= 1
                    done += 1
                else:
                    still.append(req)
            w.active = still
        admit_and_step(k, t)
        snapshot(t)
    events = {
        "time": np.array([e[0] for e in log]),
        "in_system": np.array([e[1] for e in log], dtype=np.int64),
        "queued": np.array([e[2] for e in log], dtype=np.int64),
        "kv_tokens": np.array([e[3] for e in log], dtype=np.int64),
    }
    return OpenResult(times, start, finish, prompt, decode, worker_of, events, steps, busy, fleet)


def _route(router: str, i: int, workers: list[_Worker], cand: np.ndarray) -> int:
    if router == ROUTERS[0]:
        return i % len(workers)
    if router == ROUTERS[1]:
        return min(range(len(workers)), key=lambda v: (workers[v].load, v))
    a, b = int(cand[i, 0]), int(cand[i, 1])
    return b if workers[b].load < workers[a].load else a


def _step_time(fleet, bundle: list[_Worker], m: int) -> float | None:
    """The bundle's next step from its current loads, micro-batch by micro-batch, or None
    when it holds nothing (a micro-batch empty on every worker is not run)."""
    times, p = fleet.times, fleet.pipeline
    parts = [[[a for a in w.active if a.microbatch == j] for j in range(m)] for w in bundle]
    running = [j for j in range(m) if any(part[j] for part in parts)]
    if not running:
        return None
    L, m_eff = p.layers, len(running)
    att = [
        [float(times.attention_time(len(mb), sum(a.context for a in mb))) if mb else 0.0
         for mb in part]
        for part in parts
    ]  # fmt: skip
    a_round = max(max(row) for row in att)
    a_busy = max(sum(row) for row in att) / m_eff
    per_mb = [sum(len(part[j]) for part in parts) for j in range(m)]
    tokens = max(per_mb)
    if times.comm_scope == "aggregate":
        transfer = float(times.comm(tokens))
    else:
        widest = max(len(mb) for part in parts for mb in part)
        transfer = float(times.comm_time(widest, len(bundle)))
    ffn = fleet.ffn_time(tokens)
    x, f = transfer_each_way(transfer) / L, ffn / L
    running_p = replace(p, microbatches=m_eff)
    compose = running_p.colocated_step_time if fleet.colocated else running_p.step_time
    return float(compose(a_round / L, a_busy / L, x, f, x))
