"""Run the open system: requests arrive over time, wait, and are served by N bundles.
The closed simulator (``afdplan.sim.engine``) refills a slot the instant it frees, so a
bundle is always full; here batches are partly empty at low load and requests queue at
high load, which is what a fleet is sized for.

The event loop is ``afdplan.sim.open.loop`` (compiled); ``afdplan.sim.open.reference`` is
an independent implementation the tests hold it to.
"""

from __future__ import annotations

import numpy as np

from afdplan.errors import check_positive, require
from afdplan.sim.open.arrivals import Arrivals
from afdplan.sim.open.fleet import Fleet, OpenResult
from afdplan.sim.open.prefill import PrefillPool, PrefillRun, serve
from afdplan.workload import Workload


def _candidates(rng: np.random.Generator, n: int, workers: int) -> np.ndarray:
    """Two distinct random workers per request (power-of-two choices)."""
    first = rng.integers(0, workers, n)
    if workers == 1:
        return np.column_stack([first, first])
    second = (first + rng.integers(1, workers, n)) % workers
    return np.column_stack([first, second]).astype(np.int64)


def _through_prefill(times, prompt, decode, prefill: PrefillPool | None):
    """The requests as they reach the decode fleet (sorted by when their KV cache does), and
    the ``OpenResult`` fields that remember the prefill pool's run."""
    if prefill is None:
        return times, prompt, decode, {}
    run = serve(times, prompt, prefill)
    order = np.argsort(run.ready, kind="stable")
    run = PrefillRun(run.begin[order], run.done[order], run.ready[order], run.busy)
    extra = {"origin": times[order], "prefill": run, "prefill_instances": prefill.instances}
    return run.ready, prompt[order], decode[order], extra


def simulate_open(
    workload: Workload,
    fleet: Fleet,
    arrivals: Arrivals,
    requests: int,
    seed: int = 0,
    reference: bool = False,
    prefill: PrefillPool | None = None,
) -> OpenResult:
    """Run the fleet on ``requests`` arrivals; ``reference`` uses the plain implementation
    (slow; for tests). With ``prefill``, requests pass the prefill pool first and reach
    the decode fleet when their KV cache does (``afdplan.sim.open.prefill``)."""
    require(seed >= 0, f"--seed must be >= 0, got {seed}")
    rng = np.random.default_rng(seed)
    times, prompt, decode = arrivals.draw(workload, requests, rng)
    times, prompt, decode, extra = _through_prefill(times, prompt, decode, prefill)
    cand = _candidates(rng, times.size, fleet.workers)
    cap = fleet.kv_capacity_tokens
    if cap is not None:
        state = fleet.times.state_tokens
        worst = int((prompt + decode).max()) + state
        require(
            worst <= cap,
            f"a request needs {worst:,} KV tokens (P + D"
            + (f" + {state:,} of recurrent state" if state else "")
            + f") but a worker holds {cap:,}; it could never be admitted",
        )
    check_positive("step time", float(fleet.times.attention_time(1, 1)))
    if reference:
        from dataclasses import replace

        from afdplan.sim.open.reference import run_reference

        return replace(run_reference(times, prompt, decode, cand, fleet), **extra)
    return _run_compiled(times, prompt, decode, cand, fleet, extra)


def _run_compiled(times, prompt, decode, cand, fleet: Fleet, extra: dict) -> OpenResult:
    """The compiled event loop, its event arrays grown until they hold the run."""
    from afdplan.sim.open.loop import compiled_compose, loop

    n, cap = times.size, fleet.kv_capacity_tokens
    start, finish = np.full(n, np.nan), np.full(n, np.nan)
    worker = np.full(n, -1, np.int64)
    capacity = 2 * n + 64 + int(n * float(np.mean(decode)) / max(fleet.batch, 1))
    p = fleet.pipeline
    while True:
        ev = {
            "time": np.empty(capacity),
            "in_system": np.empty(capacity, np.int64),
            "queued": np.empty(capacity, np.int64),
            "kv_tokens": np.empty(capacity, np.int64),
        }
        events, steps, busy = loop(
            times, prompt, decode, fleet.router_code, cand, fleet.bundles,
            fleet.ratio, fleet.batch, cap or 0, fleet.times.state_tokens, fleet.coefficients(),
            *fleet.imbalance_grid, fleet.times.comm_scope == "aggregate",
            compiled_compose(p, fleet.colocated), p.microbatches, p.layers,
            start, finish, worker, ev["time"], ev["in_system"], ev["queued"], ev["kv_tokens"],
        )  # fmt: skip
        if events <= capacity:
            break
        capacity = events
    events_out = {k: v[:events] for k, v in ev.items()}
    return OpenResult(
        times, start, finish, prompt, decode, worker, events_out, int(steps), busy, fleet,
        **extra,
    )
