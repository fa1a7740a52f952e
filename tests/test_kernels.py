"""The compiled replay and KV-cap kernels against the Python loops they replace:
identical plans and occupancies, bit for bit, on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afdplan.data import builtin_path
from afdplan.sim import SimConfig, schedule, simulate
from afdplan.sim.sweep import PARALLEL_MIN_REQUESTS, auto_jobs
from afdplan.workload import parse_workload, read_trace
from afdplan.workload.sources import EmpiricalWorkload

pytest.importorskip("numba", reason="the kernels need numba (a dependency)")

traces = st.lists(st.tuples(st.integers(0, 500), st.integers(1, 60)), min_size=1, max_size=40).map(
    lambda rows: EmpiricalWorkload(
        np.array([p for p, _ in rows]), np.array([d for _, d in rows]), "random"
    )
)


def _same_occupancy(a, b) -> bool:
    return (
        np.array_equal(a.loads, b.loads)
        and np.array_equal(a.active, b.active)
        and np.array_equal(a.start, b.start)
        and np.array_equal(a.decode, b.decode)
        and a.kv == b.kv
        and _same_array(a.microbatch_loads, b.microbatch_loads)
        and _same_array(a.microbatch_active, b.microbatch_active)
    )


def _same_array(a, b) -> bool:
    return (a is None and b is None) or (a is not None and np.array_equal(a, b))


@settings(max_examples=60, deadline=None)
@given(traces, st.integers(1, 24), st.integers(1, 300), st.integers(0, 100))
def test_replay_kernel_equals_the_heap_loop(trace, slots, steps, first):
    loop = schedule.replay_plan(trace, slots, steps, first, compiled=False)
    kernel = schedule.replay_plan(trace, slots, steps, first, compiled=True)
    for key in ("prompt", "decode", "start", "slot"):
        assert np.array_equal(getattr(loop, key), getattr(kernel, key)), key


@settings(max_examples=60, deadline=None)
@given(
    traces,
    st.integers(1, 4),
    st.integers(1, 8),
    st.integers(1, 200),
    st.integers(0, 4000),
    st.booleans(),
    st.integers(0, 50),
    st.integers(1, 3),
    st.sampled_from([0, 0, 7, 300]),
)
def test_kv_kernel_equals_the_admission_loop(
    trace, ratio, batch, steps, extra, replay, first, m, state
):
    """``state``: tokens a hybrid model's recurrent state adds to every reservation."""
    capacity = trace.smallest_request() + state + extra
    args = (trace, ratio, batch, steps, capacity)
    loop = schedule.kv_limited_occupancy(
        *args, np.random.default_rng(3), replay, first, compiled=False, microbatches=m,
        state=state,
    )  # fmt: skip
    kernel = schedule.kv_limited_occupancy(
        *args, np.random.default_rng(3), replay, first, compiled=True, microbatches=m,
        state=state,
    )  # fmt: skip
    assert _same_occupancy(loop, kernel)
    if m > 1:  # the micro-batches partition each worker's requests
        assert np.allclose(kernel.microbatch_loads.sum(axis=1), kernel.loads)
        assert np.array_equal(kernel.microbatch_active.sum(axis=1), kernel.active)
    single = schedule.kv_limited_occupancy(
        *args, np.random.default_rng(3), replay, first, compiled=True, state=state
    )
    # Splitting into micro-batches changes nothing about admission.
    assert np.array_equal(single.start, kernel.start) and single.kv == kernel.kv


def test_kv_kernel_draws_more_when_rejections_eat_the_stream():
    # 95% of requests can never fit: the first guess of the i.i.d. stream runs out.
    wl = parse_workload("mix:0.05*fixed:prefill=10,decode=5 + 0.95*fixed:prefill=100000,decode=5")
    args = (wl, 2, 4, 3000, 1000, np.random.default_rng(1), False)
    loop = schedule.kv_limited_occupancy(*args, compiled=False)
    kernel = schedule.kv_limited_occupancy(
        wl, 2, 4, 3000, 1000, np.random.default_rng(1), False, compiled=True
    )
    assert loop.kv.rejected_requests > schedule.STREAM_CHUNK
    assert _same_occupancy(loop, kernel)


def test_simulate_gives_the_same_result_either_way(monkeypatch):
    trace = read_trace(builtin_path("azure-code-2023"))
    config = SimConfig(ratio=4, batch=32, requests=3000, order="replay", kv_capacity_tokens=120_000)
    results = []
    for compiled in (False, True):
        monkeypatch.setattr(schedule.kernels, "use_compiled", lambda _n, c=compiled: c)
        results.append(simulate(trace, _times(), config))
    assert results[0] == results[1]


def _times():
    from afdplan.timing import load_coeffs

    return load_coeffs("paper-v1-dsv3-910c")


def test_auto_jobs_keeps_small_work_in_process(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert auto_jobs(PARALLEL_MIN_REQUESTS / 2, 100) == 1
    assert auto_jobs(PARALLEL_MIN_REQUESTS * 2, 100) == 8
    assert auto_jobs(PARALLEL_MIN_REQUESTS * 2, 3) == 3
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert auto_jobs(PARALLEL_MIN_REQUESTS * 10, 100) == 1


def test_run_tasks_returns_each_tasks_own_result_in_order():
    from afdplan.sim import simulate_with_cycles
    from afdplan.sim.sweep import SimTask, run_tasks
    from afdplan.timing import load_coeffs

    wl = parse_workload("geometric:prefill=200,decode_mean=100")
    times = load_coeffs("deepseek-v3-h200")
    configs = [SimConfig(ratio=r, batch=16, steps=300, seed=s) for r in (2, 5) for s in (0, 1)]
    tasks = [
        SimTask(wl, times, cfg, cycle_bins=10 if i == 1 else 0) for i, cfg in enumerate(configs)
    ]
    outs = run_tasks(tasks, n_jobs=2)  # through a process pool: order must survive
    for cfg, out in zip(configs, outs, strict=True):
        assert out.result == simulate(wl, times, cfg)
    assert [out.histogram is None for out in outs] == [True, False, True, True]
    _, cycles = simulate_with_cycles(wl, times, configs[1])
    counts, edges = outs[1].histogram
    assert sum(counts) == cycles.size and len(edges) == 11
    assert edges[0] <= cycles.min() and edges[-1] >= cycles.max()
