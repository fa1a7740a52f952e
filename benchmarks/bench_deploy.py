"""Time ``afdplan deploy``'s search and its verification.

Run:  python benchmarks/bench_deploy.py [--repeats 3] [--top 5] [--seeds 3]

DeepSeek-V3 on H200 (and on an H20 + H200 pair), Azure conversation trace, p99 step time
≤ 50 ms. The table shows the median wall time over the repeats and the ratio to the
baseline timed in the same run: ``make_plan`` for the default scenario (one B, one
pipeline, every r). Targets: the full search (AFD and colocated, and the four more the
verdict's margin runs) within 10 s, the
verification of the top 5 (3 seeds each) within 60 s. The cached normal-order statistics,
the aiconfigurator-core tables and the per-size fits of the anchor are cleared before every
case, so each costs what it costs in a fresh process.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from timing_table import print_timings

from afdplan.calibrate import aiconfig, measured_sets
from afdplan.calibrate.resolve import resolve_coeffs, set_curves
from afdplan.calibrate.specs import load_hardware, load_model
from afdplan.choices import DEFAULT_COEFFS
from afdplan.data import resolve_input
from afdplan.deploy import Slo, Space, Target, search
from afdplan.deploy.anchor import resolve_anchor
from afdplan.deploy.slo_search import spread_quantile
from afdplan.deploy.verify import verify
from afdplan.normal import expected_max_normal
from afdplan.plan import make_plan
from afdplan.workload import read_trace


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    trace = read_trace(resolve_input("azure-conv-2023", "trace"))
    stats = trace.stats()
    model, h200, h20 = load_model("deepseek-v3"), load_hardware("h200"), load_hardware("h20")
    linear = resolve_coeffs(DEFAULT_COEFFS)
    curves = set_curves(linear)

    def target(attention_hw, colocated=True, across=False) -> Target:
        anchor = resolve_anchor(None, model, attention_hw, h200)  # as the CLI does
        space = Space(colocated=colocated, across_nodes=across)
        return Target(model, attention_hw, h200, stats, Slo(50, 99), space=space, anchor=anchor)

    results = {}
    cases = {
        "baseline: plan, default scenario": lambda: make_plan(
            trace, linear, curves=curves, objective="gpu", pipeline="overlap"
        ),
        "search, H200, AFD + colocated": lambda: results.setdefault(
            "h200", search(target(h200), "vllm-afd")
        ),
        "search, H200, AFD only": lambda: search(target(h200, colocated=False), "vllm-afd"),
        # what `afdplan deploy` runs: the search, then the verdict under the other routings
        # and half/double the expert exchange (four more searches)
        "search + verdict margin, H200": lambda: search(target(h200), "vllm-afd").with_margin(),
        "search, H200, FFN groups across nodes": lambda: search(
            target(h200, across=True), "vllm-afd"
        ),
        "search, H20 + H200, AFD + colocated": lambda: search(target(h20), "vllm-afd"),
        f"verify top {args.top} x {args.seeds} seeds (H200)": lambda: verify(
            results["h200"], trace, args.top, args.seeds
        ),
    }
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            # Cold caches: each case costs what it costs in a fresh process.
            expected_max_normal.cache_clear()
            spread_quantile.cache_clear()
            measured_sets._calibrated.cache_clear()
            aiconfig._read.cache_clear()
            timings[name].append(timed(fn)[0])
    print_timings(
        f"deploy, median of {args.repeats} runs", timings, "baseline: plan, default scenario"
    )
    res = results["h200"]
    Console().print(
        f"H200: {len(res.configs)} configuration rows, {len(res.frontier)} frontier points; "
        f"chosen r = {res.chosen['r']}, B = {res.chosen['batch']}, m = {res.chosen['microbatches']}"
    )


if __name__ == "__main__":
    main()
