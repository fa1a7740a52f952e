"""Studies on this machine: ``validate --quick`` and ``sweep`` with the default number of
processes against ``--jobs 1`` and ``--jobs -1``.

Run:  python benchmarks/bench_study.py [--repeats 3] [--full]

Every command runs as a fresh process, as a user types it, interleaved over the repeats so
a busy machine slows every row alike; the table shows the median wall time and the ratio to
``--jobs 1`` of the same command. ``--full`` adds the default validation study and the
deployment study (minutes).
The default must never be slower than ``--jobs 1``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

SWEEP_SMALL = "sweep --workload geometric:prefill=500,decode_mean=200 -B 64 -r 1-8 --seeds 2"
SWEEP_LARGE = "sweep --trace azure-conv-2023 -B 64,256 -r 1-16 --seeds 3 --requests 200000"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="also the full validation grids")
    args = parser.parse_args()
    exe = shutil.which("afdplan")
    cli = [exe] if exe else [sys.executable, "-c", "from afdplan.cli import main; main()"]
    commands = {
        "validate --quick": "validate --quick",
        "validate --grid deployment --quick": "validate --grid deployment --quick",
        "sweep, small (16 runs, 20k requests each)": SWEEP_SMALL + " --requests 20000",
        "sweep, large (96 runs, 200k requests each)": SWEEP_LARGE,
    }
    if args.full:
        commands["validate (default grid)"] = "validate"
        commands["validate --grid deployment"] = "validate --grid deployment"
    variants = {"default": [], "--jobs 1": ["--jobs", "1"], "--jobs -1": ["--jobs", "-1"]}
    timings: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for name, command in commands.items():
            for variant, extra in variants.items():
                start = time.perf_counter()
                subprocess.run(
                    [*cli, *command.split(), *extra], check=True, stdout=subprocess.DEVNULL
                )
                timings.setdefault((name, variant), []).append(time.perf_counter() - start)
    table = Table(title=f"Studies, median of {args.repeats} fresh processes", title_justify="left")
    for col in ("command", "processes", "median s", "min s", "max s", "× --jobs 1"):
        table.add_column(col, justify="left" if col in ("command", "processes") else "right")
    for name in commands:
        one = statistics.median(timings[(name, "--jobs 1")])
        for variant in variants:
            ts = timings[(name, variant)]
            med = statistics.median(ts)
            table.add_row(
                name, variant, f"{med:.2f}", f"{min(ts):.2f}", f"{max(ts):.2f}", f"{med / one:.2f}"
            )
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
