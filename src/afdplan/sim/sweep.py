"""Sweeps over r × B (× workloads × seeds), and any list of simulations (the validation
study's), run in parallel processes with joblib.

Each task is one ``simulate`` call; joblib's default ``loky`` backend spreads them over
local cores. A cluster only needs another joblib backend (``connect_backend``): Dask
(the ``afdplan[dask]`` extra: a ``distributed.Client`` to a scheduler address) or Ray
(``afdplan[ray]``: ``ray.init`` to a cluster address, then Ray's joblib backend).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import joblib
import numpy as np

from afdplan.bundle import weighted_rate
from afdplan.errors import InputError, require
from afdplan.sim import kernels
from afdplan.sim.config import SimConfig
from afdplan.sim.engine import simulate, simulate_with_cycles
from afdplan.sim.results import Estimate, SimResult, estimate_over
from afdplan.timing import StepTimes
from afdplan.workload import Workload

T = TypeVar("T")


@dataclass(frozen=True)
class SweepPoint:
    """All seeds of one (workload, B, r)."""

    workload: str
    batch: int
    ratio: int
    runs: tuple[SimResult, ...]

    def estimate(self, metric: str) -> Estimate:
        return estimate_over(self.runs, metric)

    def weighted_throughput(self, w_attention: float, w_ffn: float) -> Estimate:
        """tokens / ((r·w_A + w_F)·time) of each seed's measured window."""
        return Estimate.of(
            [
                weighted_rate(
                    run.tokens_generated,
                    run.mean_step_time_s * run.steps,
                    self.ratio,
                    w_attention,
                    w_ffn,
                )
                for run in self.runs
            ]
        )


# Below this much work (requests to simulate, all tasks together) a process pool costs more
# than it saves: on a 2-core machine starting workers, importing numpy and the simulator
# in each and shipping the workloads takes seconds, while the fast path simulates about
# three million requests a second on one core (benchmarks/bench_study.py measures both).
PARALLEL_MIN_REQUESTS = 8_000_000


def auto_jobs(work_requests: float, tasks: int) -> int:
    """Processes for ``tasks`` tasks simulating ``work_requests`` requests in all: one
    unless the work is large enough to repay the pool, else one per core (at most one per
    task)."""
    cores = os.cpu_count() or 1
    if cores < 2 or tasks < 2 or work_requests < PARALLEL_MIN_REQUESTS:
        return 1
    return min(cores, tasks)


def task_requests(workload: Workload, config: SimConfig) -> float:
    """About how many requests one simulation places (for :func:`auto_jobs`)."""
    if config.requests is not None:
        return float(config.requests)
    return config.steps * config.slots / workload.moments().decode


def connect_backend(backend: str | None, address: str | None) -> None:
    """Make ``backend`` usable by joblib: connect Dask or Ray to ``address`` if asked."""
    if backend == "dask":
        try:
            from distributed import Client
        except ImportError as exc:
            raise InputError("--backend dask needs: pip install 'afdplan[dask]'") from exc
        Client(address)  # None starts a local cluster
    elif backend == "ray":
        try:
            import ray
            from ray.util.joblib import register_ray
        except ImportError as exc:
            raise InputError("--backend ray needs: pip install 'afdplan[ray]'") from exc
        ray.init(address=address)
        register_ray()
    else:
        require(address is None, "--scheduler needs --backend dask or ray")


@dataclass(frozen=True)
class SimTask:
    """One simulation to farm out: a workload, its step times and a configuration.

    ``cycle_bins`` > 0 also asks for a histogram of the measured steps' cycle times (made in
    the worker, so the per-step array never crosses the process boundary).
    """

    workload: Workload
    times: StepTimes
    config: SimConfig
    cycle_bins: int = 0


@dataclass(frozen=True)
class TaskOutput:
    result: SimResult
    # (counts, bin edges in the step-time unit) when the task asked for one
    histogram: tuple[list[int], list[float]] | None = None


# From this many trace replays in one call, load the compiled kernels up front: numba's
# start-up (about 1 s a process) is then paid once instead of each replay running the
# slower Python loop.
PRELOAD_MIN_REPLAYS = 8


def _run_task(task: SimTask, preload: bool) -> TaskOutput:
    if preload and task.config.order == "replay":
        kernels.preload()
    if task.cycle_bins <= 0:
        return TaskOutput(simulate(task.workload, task.times, task.config))
    result, cycles = simulate_with_cycles(task.workload, task.times, task.config)
    counts, edges = np.histogram(cycles, bins=task.cycle_bins)
    return TaskOutput(result, (counts.tolist(), edges.tolist()))


# Calls per batch where the backend cannot stream results back (progress between batches).
LIST_CHUNK = 64


def parallel_map(
    func: Callable[..., T],
    calls: Sequence[tuple],
    n_jobs: int,
    backend: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[T]:
    """``[func(*args) for args in calls]`` through joblib, in order; ``progress(done,
    total)`` after each result. The one place afdplan hands work to a process pool or a
    cluster backend (connected first with :func:`connect_backend`)."""
    settings = {"n_jobs": n_jobs} if backend is None else {"n_jobs": n_jobs, "backend": backend}
    out: list[T] = []

    def done(count: int) -> None:
        if progress is not None:
            progress(count, len(calls))

    with joblib.parallel_config(**settings):
        try:
            stream = joblib.Parallel(return_as="generator")(
                joblib.delayed(func)(*args) for args in calls
            )
        except ValueError as exc:  # Ray's joblib backend returns lists only
            if "return_as" not in str(exc):
                raise
            stream = None
        if stream is not None:
            for item in stream:
                out.append(item)
                done(len(out))
            return out
        for start in range(0, len(calls), LIST_CHUNK):
            chunk = calls[start : start + LIST_CHUNK]
            out.extend(joblib.Parallel(return_as="list")(joblib.delayed(func)(*a) for a in chunk))
            done(len(out))
    return out


def run_tasks(
    tasks: Sequence[SimTask],
    n_jobs: int | None = None,
    backend: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[TaskOutput]:
    """Run every task, in order (``n_jobs``: processes; -1 every core; None:
    :func:`auto_jobs`, or every core on a cluster backend)."""
    if n_jobs is None:
        work = sum(task_requests(t.workload, t.config) for t in tasks)
        n_jobs = -1 if backend in ("dask", "ray") else auto_jobs(work, len(tasks))
    preload = sum(t.config.order == "replay" for t in tasks) >= PRELOAD_MIN_REPLAYS
    return parallel_map(_run_task, [(t, preload) for t in tasks], n_jobs, backend, progress)


def run_sweep(
    workloads: dict[str, Workload],
    times: StepTimes,
    batches: Iterable[int],
    ratios: Iterable[int],
    seeds: Iterable[int],
    base: SimConfig,
    n_jobs: int | None = None,
    backend: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[SweepPoint]:
    """Simulate every combination; ``progress(done, total)`` after each finished run
    (``n_jobs`` and ``backend`` as for :func:`run_tasks`)."""
    batches, ratios, seeds = list(batches), list(ratios), list(seeds)
    require(bool(workloads) and bool(batches) and bool(ratios) and bool(seeds), "empty sweep")
    keys = [(name, b, r, s) for name in workloads for b in batches for r in ratios for s in seeds]
    tasks = [
        SimTask(workloads[name], times, replace(base, batch=b, ratio=r, seed=s))
        for name, b, r, s in keys
    ]
    results = [out.result for out in run_tasks(tasks, n_jobs, backend, progress)]
    grouped: dict[tuple[str, int, int], list[SimResult]] = {}
    for (name, b, r, _), result in zip(keys, results, strict=True):
        grouped.setdefault((name, b, r), []).append(result)
    return [SweepPoint(name, b, r, tuple(runs)) for (name, b, r), runs in grouped.items()]
