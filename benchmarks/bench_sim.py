"""Simulator throughput: the step-indexed fast path against plain per-slot stepping, and
the sequential layouts (arrival-order replay, KV cap) as compiled kernels vs Python loops.

Run:  python benchmarks/bench_sim.py [--requests 1000000] [--repeats 5]

Workload: requests resampled from the Azure conversation trace (shipped with afdplan),
r = 8, B = 256, the paper's coefficients (overlap; and the ping-pong pipeline with m = 2
micro-batches over L = 61 layers, by its exact recurrence and by its closed form); and
DeepSeek-V3/H200's shipped set, with and without the busiest-expert-rank draw per step. Every case
is timed in this process, after the trace is loaded, as the median of several runs; the
ratio column compares against the per-slot stepping baseline measured in the same run.
The baseline steps every slot every step (O(r·B) per step) over the *same* requests and
feeds the same timing code, so its loads must equal the fast path's exactly — the script
checks that before it prints anything. The replay and KV-capped layouts run twice: with
the numba kernels (what ``simulate`` uses for large runs) and with the Python loops they
replaced (kept as the tests' oracle); the script checks that both give the same loads.
"floor" is the least any layout must do: one draw per request, one scatter-add and one
cumulative sum.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # one core, as the target says

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from afdplan.data import builtin_path  # noqa: E402
from afdplan.sim import SimConfig, schedule, simulate  # noqa: E402
from afdplan.sim.engine import measure, measured_steps  # noqa: E402
from afdplan.sim.reference import plan_refill, step_slots  # noqa: E402
from afdplan.sim.schedule import iid_plan  # noqa: E402
from afdplan.timing import load_coeffs  # noqa: E402
from afdplan.workload import Workload, read_trace  # noqa: E402


def load_workload() -> tuple[Workload, str]:
    return read_trace(builtin_path("azure-conv-2023")), "the Azure conversation trace"


def timed(fn, repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def baseline(workload: Workload, config: SimConfig, times):
    """Per-slot stepping over the same requests the fast path draws, then the same timing."""
    steps = measured_steps(workload, config)
    plan = iid_plan(workload, config.slots, steps, np.random.default_rng(config.seed), True)
    p0, d0, age0, refill = plan_refill(plan, config.slots)
    loads = step_slots(config.ratio, config.batch, steps, p0, d0, age0, refill)
    occ = plan.occupancy(config.ratio, config.batch, steps)
    occ = type(occ)(loads, None, config.batch, occ.start, occ.end, occ.decode)
    return measure(occ, times, config, "stationary", 0), loads


def floor(workload: Workload, ratio: int, batch: int, steps: int) -> np.ndarray:
    """The least work of any layout: one draw per request, one scatter-add of ±(P − s) into
    the (r, S) worker rows, one cumulative sum (positions are arbitrary here)."""
    rng = np.random.default_rng(0)
    n = int(ratio * batch * steps / workload.moments().decode)
    prompt, decode = workload.sample(rng, n)
    row = (np.arange(n) % ratio) * (steps + 1)
    start = np.arange(n) % steps
    index = np.concatenate([row + start, row + np.minimum(start + decode, steps)])
    weights = np.concatenate([prompt - start, start - prompt]).astype(np.float64)
    delta = np.bincount(index, weights=weights, minlength=ratio * (steps + 1))
    return np.cumsum(delta.reshape(ratio, steps + 1), axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-repeats", type=int, default=3)
    args = parser.parse_args()

    workload, label = load_workload()
    times = load_coeffs("paper-v1-dsv3-910c")
    n = args.requests
    iid = SimConfig(ratio=8, batch=256, requests=n, seed=0)
    steps = measured_steps(workload, iid)

    # Correctness first: the baseline's loads equal the fast path's, bit for bit.
    plan = iid_plan(workload, iid.slots, steps, np.random.default_rng(0), True)
    fast_loads = plan.occupancy(8, 256, steps).loads
    base_times, (base_result, base_loads) = timed(
        lambda: baseline(workload, iid, times), args.baseline_repeats
    )
    assert np.array_equal(fast_loads, base_loads), "fast path and baseline disagree"

    kv_cap = int(1.05 * 256 * workload.stats().theta)
    replay = SimConfig(ratio=8, batch=256, requests=n, order="replay", warmup_steps=0)
    capped = SimConfig(ratio=8, batch=256, requests=n, warmup_steps=0, kv_capacity_tokens=kv_cap)
    both = SimConfig(
        ratio=8, batch=256, requests=n, order="replay", warmup_steps=0, kv_capacity_tokens=kv_cap
    )
    # The same runs on DeepSeek-V3/H200's shipped set, whose FFN waits for its busiest
    # expert rank (drawn per step and micro-batch), against the set without that draw.
    dsv3 = load_coeffs("deepseek-v3-h200")
    even = replace(dsv3, experts=None)
    pingpong = SimConfig(ratio=8, batch=256, requests=n, mode="pingpong", microbatches=2, layers=61)
    cases = {
        "fast path, i.i.d. resampling": (iid, True),
        "fast path, DeepSeek-V3/H200 set, expert barrier drawn": (iid, True, dsv3),
        "fast path, DeepSeek-V3/H200 set, no expert barrier": (iid, True, even),
        "ping-pong m = 2 exact, expert barrier drawn": (pingpong, True, dsv3),
        "ping-pong m = 2 exact, no expert barrier": (pingpong, True, even),
        "arrival-order replay, kernel": (replay, True),
        "arrival-order replay, Python loop (before)": (replay, False),
        f"KV cap {kv_cap:,} tokens/worker, kernel": (capped, True),
        "KV cap, Python loop (before)": (capped, False),
        "replay + KV cap, kernel": (both, True),
        "replay + KV cap, Python loop (before)": (both, False),
        "ping-pong m = 2, L = 61: exact recurrence": (
            SimConfig(ratio=8, batch=256, requests=n, mode="pingpong", microbatches=2, layers=61),
            True,
        ),
        "ping-pong m = 2, L = 61: closed form per step": (
            SimConfig(
                ratio=8,
                batch=256,
                requests=n,
                mode="pingpong",
                microbatches=2,
                layers=61,
                exact=False,
            ),
            True,
        ),
    }
    timings = {"baseline: numpy per-slot stepping": base_times}
    results = {"baseline: numpy per-slot stepping": base_result}
    original = schedule.kernels.use_compiled
    for name, (cfg, compiled, *own) in cases.items():
        # Force one implementation: the kernel (after warming its compile cache) or the loop.
        schedule.kernels.use_compiled = lambda _n, c=compiled: c and original(1e12)
        step_times = own[0] if own else times
        simulate(workload, step_times, cfg)  # warm caches, imports and the numba cache
        timings[name], results[name] = timed(
            lambda cfg=cfg, t=step_times: simulate(workload, t, cfg), args.repeats
        )
    schedule.kernels.use_compiled = original
    for kernel, loop in (
        ("arrival-order replay, kernel", "arrival-order replay, Python loop (before)"),
        (f"KV cap {kv_cap:,} tokens/worker, kernel", "KV cap, Python loop (before)"),
        ("replay + KV cap, kernel", "replay + KV cap, Python loop (before)"),
    ):
        assert results[kernel] == results[loop], f"{kernel} and {loop} disagree"
    timings["floor: draw, scatter-add, cumsum"] = timed(
        lambda: floor(workload, 8, 256, steps), args.repeats
    )[0]

    base = statistics.median(base_times)
    fast = statistics.median(timings["fast path, i.i.d. resampling"])
    table = Table(
        title=f"{n:,} requests from {label}, r = 8, B = 256, {steps:,} steps (one core)",
        title_justify="left",
    )
    for col in (
        "case",
        "median s",
        "min s",
        "max s",
        "runs",
        "speed-up vs baseline",
        "× fast path",
        "Mreq/s",
    ):
        table.add_column(col, justify="left" if col == "case" else "right")
    for name, ts in timings.items():
        med = statistics.median(ts)
        table.add_row(
            name,
            f"{med:.3f}",
            f"{min(ts):.3f}",
            f"{max(ts):.3f}",
            str(len(ts)),
            f"{base / med:.1f}×",
            f"{med / fast:.2f}",
            f"{n / med / 1e6:.2f}",
        )
    Console(width=160).print(table)
    fast_result = results["fast path, i.i.d. resampling"]
    print(
        f"fast path throughput/instance {fast_result.throughput_per_instance:.5f} vs baseline "
        f"{base_result.throughput_per_instance:.5f} (same requests: identical); kernels and "
        "loops: identical results"
    )
    kv = results[f"KV cap {kv_cap:,} tokens/worker, kernel"].kv
    print(
        f"KV cap: slot utilisation {kv.slot_utilisation:.3f}, "
        f"{kv.waited_requests:,} requests waited"
    )


if __name__ == "__main__":
    main()
