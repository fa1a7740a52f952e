"""Time the open-system simulator.

Run:  python benchmarks/bench_open.py [--repeats 3] [--requests 1000000]

1,000,000 Poisson arrivals (Azure conversation requests) through 8 bundles of r = 16,
B = 128, ping-pong m = 2 over 61 layers (DeepSeek-V3 on H200), least-KV routing, on one
core, at 30% and 90% of the fleet's saturation rate. Baseline, timed in the same run: the
closed-system simulator on the same number of requests (i.i.d. fast path, one bundle).
The plain reference implementation runs on 20,000 arrivals for its speed ratio. Target:
1M arrivals within 10 s. numba's compile (cached on disk) happens before the timing.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from rich.console import Console
from timing_table import print_timings

from afdplan.bundle import Pipeline
from afdplan.calibrate.resolve import resolve_coeffs
from afdplan.capacity import saturation_rate
from afdplan.data import resolve_input
from afdplan.sim import SimConfig, simulate
from afdplan.sim.open import Arrivals, Fleet, simulate_open
from afdplan.workload import read_trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.requests
    trace = read_trace(resolve_input("azure-conv-2023", "trace"))
    times = resolve_coeffs("deepseek-v3-h200")
    pipe = Pipeline("pingpong", 2, 61)
    fleet = Fleet(times, 16, 128, 8, pipe, times.kv_capacity_tokens, "least-kv")
    sat = saturation_rate(fleet, trace)
    simulate_open(trace, fleet, Arrivals("poisson", sat), 1000)  # compile / load the cache
    small = min(n, 20_000)
    cases = {
        f"closed system, {n:,} requests (baseline)": lambda: simulate(
            trace,
            times,
            SimConfig(
                ratio=16,
                batch=128,
                requests=n,
                mode="pingpong",
                microbatches=2,
                layers=61,
                exact=False,
            ),
        ),
        f"open, {n:,} arrivals, 30% of saturation": lambda: simulate_open(
            trace, fleet, Arrivals("poisson", 0.3 * sat), n
        ),
        f"open, {n:,} arrivals, 90% of saturation": lambda: simulate_open(
            trace, fleet, Arrivals("poisson", 0.9 * sat), n
        ),
        f"open, {small:,} arrivals, 90%, compiled": lambda: simulate_open(
            trace, fleet, Arrivals("poisson", 0.9 * sat), small
        ),
        f"open, {small:,} arrivals, 90%, plain reference": lambda: simulate_open(
            trace, fleet, Arrivals("poisson", 0.9 * sat), small, reference=True
        ),
    }
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - start)
    print_timings(f"Open system, median of {args.repeats} runs", timings, next(iter(timings)))
    Console().print(f"fleet saturation rate (theory): {sat:.1f} req/s")


if __name__ == "__main__":
    main()
