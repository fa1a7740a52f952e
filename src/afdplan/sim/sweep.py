"""Sweeps over r × B (× workloads × seeds), run in parallel processes with joblib.

Each task is one ``simulate`` call; joblib's default ``loky`` backend spreads them over
local cores. A cluster only needs another joblib backend (``connect_backend``): Dask
(the ``afdplan[dask]`` extra: a ``distributed.Client`` to a scheduler address) or Ray
(``afdplan[ray]``: ``ray.init`` to a cluster address, then Ray's joblib backend).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import joblib

from afdplan.bundle import weighted_rate
from afdplan.errors import InputError, require
from afdplan.sim.config import SimConfig
from afdplan.sim.engine import simulate
from afdplan.sim.results import Estimate, SimResult, estimate_over
from afdplan.timing import StepTimes
from afdplan.workload import Workload


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


def _task(workload: Workload, times: StepTimes, config: SimConfig) -> SimResult:
    return simulate(workload, times, config)


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
    """Simulate every combination; ``progress(done, total)`` after each finished run.

    ``n_jobs``: processes (-1: every core; None: :func:`auto_jobs`, or every core on a
    cluster backend).
    """
    batches, ratios, seeds = list(batches), list(ratios), list(seeds)
    require(bool(workloads) and bool(batches) and bool(ratios) and bool(seeds), "empty sweep")
    keys = [(name, b, r, s) for name in workloads for b in batches for r in ratios for s in seeds]
    configs = [replace(base, batch=b, ratio=r, seed=s) for _, b, r, s in keys]
    if n_jobs is None:
        work = sum(
            task_requests(workloads[name], cfg)
            for (name, *_), cfg in zip(keys, configs, strict=True)
        )
        n_jobs = -1 if backend in ("dask", "ray") else auto_jobs(work, len(keys))
    jobs = (
        joblib.delayed(_task)(workloads[name], times, cfg)
        for (name, *_), cfg in zip(keys, configs, strict=True)
    )
    results: list[SimResult] = []
    settings = {"n_jobs": n_jobs} if backend is None else {"n_jobs": n_jobs, "backend": backend}
    with joblib.parallel_config(**settings):
        for i, result in enumerate(joblib.Parallel(return_as="generator")(jobs)):
            results.append(result)
            if progress is not None:
                progress(i + 1, len(keys))
    grouped: dict[tuple[str, int, int], list[SimResult]] = {}
    for (name, b, r, _), result in zip(keys, results, strict=True):
        grouped.setdefault((name, b, r), []).append(result)
    return [SweepPoint(name, b, r, tuple(runs)) for (name, b, r), runs in grouped.items()]
