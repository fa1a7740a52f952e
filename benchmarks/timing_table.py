"""The table every benchmark prints: median, min and max over repeats, and the ratio to a
baseline timed in the same run (a sibling module: run the scripts from any folder)."""

from __future__ import annotations

import statistics

from rich.console import Console
from rich.table import Table


def print_timings(title: str, timings: dict[str, list[float]], baseline: str) -> None:
    """One row per case of ``timings`` (seconds per repeat), ratios against ``baseline``."""
    base = statistics.median(timings[baseline])
    table = Table(title=title, title_justify="left")
    for col in ("case", "median s", "min s", "max s", "× baseline"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for name, ts in timings.items():
        med = statistics.median(ts)
        table.add_row(name, f"{med:.2f}", f"{min(ts):.2f}", f"{max(ts):.2f}", f"{med / base:.2f}")
    Console().print(table)
