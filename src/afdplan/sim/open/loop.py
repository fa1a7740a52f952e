"""The open-system event loop, written once as a plain loop over arrays and
compiled with numba; ``afdplan.sim.open.reference`` is an independent, object-based
implementation of the same model that the tests compare against.

Time advances from event to event: the next arrival or the end of some bundle's step.
Between events nothing changes, so the loop costs O(r·B) per bundle step and O(1) (or
O(workers) for least-KV routing) per arrival, independent of how long the gaps are.

Model (times in seconds, tokens):
* a request arrives at ``arrival[i]`` and is routed at once to one attention worker
  (``route`` 0: round-robin, 1: least KV tokens reserved + queued, 2: the less loaded of
  two pre-drawn candidates ``cand[i]``); it waits in that worker's FIFO queue;
* at a step boundary of its bundle (or at once, if the bundle is idle) the head of each
  worker's queue is admitted while a slot is free and, with a KV capacity, its final
  context P + D fits the worker's reservations (strict FIFO: the head blocks the queue);
* an admitted request joins its worker's micro-batch with the fewest sequences (the
  lowest index among ties) and stays in it, as in the closed-system simulator;
* a step of a bundle takes the pipeline's ``compose`` (DESIGN §8 closed form; passed in
  compiled, so the loop knows no pipeline by name) of the per-layer times at
  its current loads, micro-batch by micro-batch: micro-batch j of every worker goes
  together; its attention on worker i is t_A(b_ij, T_ij), the round trip waits for the
  slowest (worker, micro-batch), the FFN sees the largest Σ_i b_ij, the transfer carries
  the largest b_ij (or Σ_i b_ij, aggregate). Empty work costs nothing: a worker without
  sequences in micro-batch j spends no attention on it, and a micro-batch empty on every
  worker is not run (m_eff micro-batches run, so one sequence runs as the serial step);
* a request in its k-th step holds P + k − 1 KV tokens, and ends after its D-th step.
"""

from __future__ import annotations

import numba
import numpy as np

from afdplan.bundle.pipeline import Pipeline, colocated_compose

_COMPILED: dict[object, object] = {}
# compose(m, L, a_round, a_busy, x, f, y) -> τ, as one first-class function type: the loop
# is compiled (and cached on disk) once for every pipeline kind, which it receives as a
# C function pointer
COMPOSE_SIGNATURE = numba.types.float64(
    numba.types.int64, numba.types.int64, *[numba.types.float64] * 5
)


def compiled_compose(pipeline: Pipeline, colocated: bool = False):
    """The pipeline kind's one closed form of a step (``Pipeline.compose``, or for a
    colocated group ``colocated_compose``), compiled once per kind (a cached C callback)
    for the loop, which takes it as an argument."""
    key = "colocated" if colocated else type(pipeline)
    if key not in _COMPILED:
        compose = colocated_compose if colocated else type(pipeline).compose
        _COMPILED[key] = numba.cfunc(COMPOSE_SIGNATURE, cache=True)(compose)
    return _COMPILED[key]


def _loop(
    arrival, prompt, decode, route, cand, bundles, r, batch, kv_cap, state, coef, phi_tokens,
    phi, aggregate, compose, m, layers, start, finish, worker_of, ev_time, ev_system, ev_queue,
    ev_kv,
):  # fmt: skip  # pragma: no cover - compiled
    """The event loop (the model is this module's docstring). Long because it is compiled:
    numba gains most when the loop's state stays in one function's locals, and every
    branch is held to the plain reference implementation by the tests."""
    n = arrival.shape[0]
    workers = bundles * r
    slots = workers * batch
    rem = np.zeros(slots, np.int64)
    ctx = np.zeros(slots, np.int64)
    # Worker w's active sequences sit compactly in [w·B, w·B + count[w]): a step visits
    # only those, so a big, lightly loaded bundle costs what its load costs.
    owner = np.full(slots, -1, np.int64)
    group = np.zeros(slots, np.int64)  # micro-batch of the slot's request
    count = np.zeros(workers, np.int64)
    g_count = np.zeros(workers * m, np.int64)  # sequences of worker w's micro-batch j
    g_kv = np.zeros(workers * m, np.int64)  # … and their KV tokens
    g_tokens = np.zeros(m)
    kv = np.zeros(workers, np.int64)  # KV tokens held now
    reserved = np.zeros(workers, np.int64)  # Σ P + D (+ state) of admitted requests
    queued_kv = np.zeros(workers, np.int64)
    head = np.full(workers, -1, np.int64)
    tail = np.full(workers, -1, np.int64)
    nxt = np.full(n, -1, np.int64)
    step_end = np.full(bundles, np.inf)
    busy = np.zeros(bundles)
    a_alpha, a_beta, a_gamma, f_alpha, f_beta, c_alpha, c_beta = (
        coef[0], coef[1], coef[2], coef[3], coef[4], coef[5], coef[6],
    )  # fmt: skip
    events = 0
    in_system = 0
    queued = 0
    kv_total = 0
    done = 0
    a = 0
    t = 0.0
    steps = 0
    cap_events = ev_time.shape[0]
    while done < n:
        kb = 0
        te = np.inf
        for k in range(bundles):
            if step_end[k] < te:
                te = step_end[k]
                kb = k
        if a < n and arrival[a] <= te:
            t = arrival[a]
            if route == 0:
                w = a % workers
            elif route == 1:
                w = 0
                best = reserved[0] + queued_kv[0]
                for v in range(1, workers):
                    load = reserved[v] + queued_kv[v]
                    if load < best:
                        best = load
                        w = v
            else:
                w0 = cand[a, 0]
                w1 = cand[a, 1]
                w = w0
                if reserved[w1] + queued_kv[w1] < reserved[w0] + queued_kv[w0]:
                    w = w1
            worker_of[a] = w
            if tail[w] < 0:
                head[w] = a
            else:
                nxt[tail[w]] = a
            tail[w] = a
            queued += 1
            queued_kv[w] += prompt[a] + decode[a] + state
            in_system += 1
            kb = w // r
            a += 1
            # an idle bundle starts a step at once; a busy one admits at its next boundary
            boundary = step_end[kb] == np.inf
        else:
            boundary = True
            t = te
            steps += 1
            for w in range(kb * r, (kb + 1) * r):
                base = w * batch
                j = 0
                while j < count[w]:
                    s = base + j
                    rem[s] -= 1
                    ctx[s] += 1
                    kv[w] += 1
                    g_kv[w * m + group[s]] += 1
                    kv_total += 1
                    if rem[s] > 0:
                        j += 1
                        continue
                    i = owner[s]
                    finish[i] = t
                    kv[w] -= ctx[s]
                    g_kv[w * m + group[s]] -= ctx[s]
                    g_count[w * m + group[s]] -= 1
                    kv_total -= ctx[s]
                    reserved[w] -= prompt[i] + decode[i] + state
                    in_system -= 1
                    done += 1
                    last = base + count[w] - 1  # the last active one fills the hole
                    rem[s], ctx[s], owner[s] = rem[last], ctx[last], owner[last]
                    group[s] = group[last]
                    owner[last] = -1
                    count[w] -= 1
        if boundary:
            # admissions at this boundary of bundle kb, then its next step
            for w in range(kb * r, (kb + 1) * r):
                while head[w] >= 0 and count[w] < batch:
                    i = head[w]
                    need = prompt[i] + decode[i] + state
                    if kv_cap > 0 and reserved[w] + need > kv_cap:
                        break
                    head[w] = nxt[i]
                    if head[w] < 0:
                        tail[w] = -1
                    queued -= 1
                    queued_kv[w] -= need
                    s = w * batch + count[w]
                    g = 0
                    for j in range(1, m):
                        if g_count[w * m + j] < g_count[w * m + g]:
                            g = j
                    group[s] = g
                    g_count[w * m + g] += 1
                    g_kv[w * m + g] += prompt[i]
                    owner[s] = i
                    rem[s] = decode[i]
                    ctx[s] = prompt[i]
                    kv[w] += prompt[i]
                    kv_total += prompt[i]
                    reserved[w] += need
                    count[w] += 1
                    start[i] = t
            a_round = 0.0
            a_busy = 0.0
            b_max = 0.0
            for j in range(m):
                g_tokens[j] = 0.0
            for w in range(kb * r, (kb + 1) * r):
                if count[w] > 0:
                    a_sum = 0.0
                    for j in range(m):
                        b = g_count[w * m + j]
                        if b > 0:
                            at = a_alpha * g_kv[w * m + j] + a_gamma * b + a_beta
                            a_sum += at
                            if at > a_round:
                                a_round = at
                            if b > b_max:
                                b_max = b
                            g_tokens[j] += b
                    if a_sum > a_busy:
                        a_busy = a_sum
            m_eff = 0
            tokens = 0.0
            for j in range(m):
                if g_tokens[j] > 0:
                    m_eff += 1
                    if g_tokens[j] > tokens:
                        tokens = g_tokens[j]
            if m_eff > 0:
                c_tokens = tokens if aggregate else b_max
                x = (c_alpha * c_tokens + c_beta) / layers
                # the busiest expert rank: an even group at tokens·φ (expected φ)
                f = (f_alpha * tokens * np.interp(tokens, phi_tokens, phi) + f_beta) / layers
                tau = compose(m_eff, layers, a_round / layers, a_busy / m_eff / layers, x, f, x)
                step_end[kb] = t + tau
                busy[kb] += tau
            else:
                step_end[kb] = np.inf
        if events < cap_events:
            ev_time[events] = t
            ev_system[events] = in_system
            ev_queue[events] = queued
            ev_kv[events] = kv_total
        events += 1
    return events, steps, busy


# Compiled on first use and cached on disk (numba's cache), like afdplan.sim.kernels.
loop = numba.njit(cache=True, nogil=True)(_loop)
