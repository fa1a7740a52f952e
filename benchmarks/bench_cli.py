"""Start-up time of the command line against a bare ``import numpy``.

Run:  python benchmarks/bench_cli.py [--repeats 7]

Each command runs as a fresh process, as a user types it; the table shows the median
wall time over the repeats and the ratio to ``python -c "import numpy"`` timed in the same
run, interleaved so that a busy machine slows every row alike. Targets: ``--help`` within
2× and ``plan`` (the default scenario) within 4× the bare numpy import.
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


def afdplan_command() -> list[str]:
    exe = shutil.which("afdplan")
    return [exe] if exe else [sys.executable, "-c", "from afdplan.cli import main; main()"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    cli = afdplan_command()
    cases = {
        'python -c "import numpy"': ([sys.executable, "-c", "import numpy"], None),
        "afdplan --help": ([*cli, "--help"], 2.0),
        "afdplan plan": ([*cli, "plan"], 4.0),
        "afdplan plan --json": ([*cli, "plan", "--json"], None),
    }
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, (argv, _target) in cases.items():
            start = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
            timings[name].append(time.perf_counter() - start)
    base = statistics.median(timings['python -c "import numpy"'])
    table = Table(title=f"Start-up, median of {args.repeats} fresh processes", title_justify="left")
    for col in ("command", "median s", "min s", "max s", "× import numpy", "target"):
        table.add_column(col, justify="left" if col == "command" else "right")
    for name, (_argv, target) in cases.items():
        ts = timings[name]
        med = statistics.median(ts)
        table.add_row(
            name,
            f"{med:.3f}",
            f"{min(ts):.3f}",
            f"{max(ts):.3f}",
            f"{med / base:.2f}",
            ""
            if target is None
            else f"≤ {target:g}× ({'met' if med / base <= target else 'MISSED'})",
        )
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
