"""How close the closed-form mean wait is to the open-system simulator, per router.

Run:  python benchmarks/wait_models.py [--requests 60000] [--workloads ln,ln-heavy,azure]
      [--json]

DeepSeek-V3 on H200 (the shipped coefficient set), ping-pong m = 2 over 61 layers, four
fleet shapes (r × B × bundles: 4×16×2, 8×64×1, 2×128×2, 4×32×4), Poisson arrivals at
30–95% of each fleet's closed-form saturation rate, every router. For each case it prints
the simulated mean wait (arrival to first decode step), ``capacity.predict``'s wait and the
old per-worker Allen–Cunneen wait with c_a² = 1 (what every router got before), then the
summary table the README quotes: per router and load band, the share of cases within
10%, the median and the worst relative error.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from rich.console import Console
from rich.table import Table

from afdplan.bundle import Pipeline
from afdplan.calibrate.resolve import resolve_coeffs
from afdplan.capacity import _moments, effective_batch, predict, saturation_rate
from afdplan.choices import ROUTERS
from afdplan.data import resolve_input
from afdplan.sim.open import Arrivals, Fleet, simulate_open
from afdplan.theory.queueing import allen_cunneen_wait
from afdplan.workload import parse_workload, read_trace

WORKLOADS = {
    "ln": lambda: parse_workload(
        "lognormal:prefill_median=1024,prefill_sigma=0.8,prefill_max=16384,"
        "decode_median=64,decode_sigma=0.8,decode_max=512"
    ),
    "ln-heavy": lambda: parse_workload(
        "lognormal:prefill_median=2048,prefill_sigma=1.2,prefill_max=32768,"
        "decode_median=256,decode_sigma=1.0,decode_max=4096"
    ),
    "azure": lambda: read_trace(resolve_input("azure-conv-2023", "trace")),
}
SHAPES = ((4, 16, 2), (8, 64, 1), (2, 128, 2), (4, 32, 4))
LOADS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def per_worker_wait(fleet: Fleet, workload, rate: float) -> float:
    """The former closed form for every router: Allen–Cunneen per worker, c_a² = 1."""
    p = predict(replace(fleet, router="round-robin"), workload, rate)
    mean_d, var_d, _ = _moments(workload)
    b = max(1, int(effective_batch(fleet, workload)))
    queue = allen_cunneen_wait(
        b, rate / fleet.workers, mean_d * p.step_time_s, 1.0, var_d / mean_d**2
    )
    return queue + p.step_time_s / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60_000)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the cases as JSON")
    args = parser.parse_args()
    times = resolve_coeffs("deepseek-v3-h200")
    console = Console(width=200)
    cases = Table(title="mean wait (ms): simulated vs closed form")
    for col in ("workload", "r×B×N", "router", "load", "sim", "closed form", "error",
                "model", "old", "old error"):  # fmt: skip
        cases.add_column(col, justify="right")
    errors: dict[tuple[str, str], list[tuple[float, float]]] = {}
    records = []
    for name in args.workloads.split(","):
        workload = WORKLOADS[name]()
        for r, b, n in SHAPES:
            for router in ROUTERS:
                fleet = Fleet(times, r, b, n, Pipeline("pingpong", 2, 61), router=router)
                sat = saturation_rate(fleet, workload)
                for load in LOADS:
                    rate = load * sat
                    arr = Arrivals("poisson", rate)
                    run = simulate_open(workload, fleet, arr, args.requests, seed=args.seed)
                    sim = run.summary()["wait_mean_s"]
                    pred = predict(fleet, workload, rate, 1.0)
                    old = per_worker_wait(fleet, workload, rate)
                    new_err, old_err = pred.wait_mean_s / sim - 1, old / sim - 1
                    band = "30–90%" if load <= 0.9 else "95%"
                    records.append(
                        {"workload": name, "ratio": r, "batch": b, "bundles": n,
                         "router": router, "load": load, "simulated_s": sim,
                         "predicted_s": pred.wait_mean_s, "model": pred.wait_model,
                         "per_worker_s": old}
                    )  # fmt: skip
                    errors.setdefault((router, band), []).append((new_err, old_err))
                    cases.add_row(
                        name, f"{r}×{b}×{n}", router, f"{load:.2f}", f"{1e3 * sim:.1f}",
                        f"{1e3 * pred.wait_mean_s:.1f}", f"{new_err:+.0%}", pred.wait_model,
                        f"{1e3 * old:.1f}", f"{old_err:+.0%}",
                    )  # fmt: skip
    if args.json:
        print(json.dumps(records, indent=1))
        return
    console.print(cases)
    summary = Table(title="closed-form mean wait vs simulation")
    for col in ("router", "load", "cases", "within 10%", "median |error|", "worst |error|",
                "old: within 10%", "old: worst |error|"):  # fmt: skip
        summary.add_column(col, justify="right")
    for (router, band), rows in errors.items():
        e = np.abs(np.array(rows))
        summary.add_row(
            router, band, str(len(rows)), f"{np.mean(e[:, 0] <= 0.1):.0%}",
            f"{np.median(e[:, 0]):.1%}", f"{e[:, 0].max():.0%}",
            f"{np.mean(e[:, 1] <= 0.1):.0%}", f"{e[:, 1].max():.0%}",
        )  # fmt: skip
    console.print(summary)


if __name__ == "__main__":
    main()
