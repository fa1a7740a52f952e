"""``afdplan validate`` and ``afdplan report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from afdplan.cli.common import TABLE_STYLE, app, out, progress_bar, to_json
from afdplan.errors import InputError
from afdplan.report.validation import check_results, summary_table, write_report
from afdplan.validate import (
    DEFAULT_GRID,
    QUICK_GRID,
    builtin_cases,
    builtin_workloads,
    run_validation,
)


@app.command()
def validate(
    quick: Annotated[
        bool, typer.Option("--quick", help="A small grid (seconds; used by tests).")
    ] = False,
    trace: Annotated[
        list[Path] | None,
        typer.Option("--trace", help="Trace(s) to add [default: DATA_DIR/traces/*.csv]."),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Shared data: traces and Vidur profiles.")
    ] = Path("../shared/data"),
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Parallel processes (-1: all).")] = -1,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write all raw results to this JSON file.")
    ] = None,
    report_dir: Annotated[
        Path | None, typer.Option("--report", help="Also write the report into this folder.")
    ] = None,
) -> None:
    """Theory vs simulation across workloads, B and step-time sources (easy and honest)."""
    data = data_dir if data_dir.is_dir() else None
    traces = list(trace or [])
    if trace is None and not quick and data is not None:
        traces = sorted((data / "traces").glob("*.csv"))
    cases, skipped = builtin_cases(quick, data)
    workloads = builtin_workloads(quick, traces)
    grid = QUICK_GRID if quick else DEFAULT_GRID
    if quick and jobs == -1:
        jobs = 1  # starting worker processes would cost more than the quick grid
    total = len(cases) * len(workloads) * len(grid.batches)
    with progress_bar("validate") as bar:
        task = bar.add_task("validate", total=None)
        results = run_validation(
            cases,
            workloads,
            grid,
            n_jobs=jobs,
            skipped=skipped,
            progress=lambda done, all_: bar.update(task, completed=done, total=all_),
        )
    if json_out is not None:
        json_out.write_text(to_json(results, indent=1) + "\n")
    if report_dir is not None:
        write_report(results, report_dir)
    table = Table(
        title=f"Validation: {total} configurations, {results['meta']['simulations']:,} "
        f"simulations, {results['meta']['runtime_s']:.0f} s",
        **TABLE_STYLE,
    )
    rows = summary_table(results["summary"], short=True)
    for col in rows[0]:
        table.add_column(col, justify="left" if col in ("cases", "rule") else "right")
    for row in rows[1:]:
        table.add_row(*row)
    out.print(table)
    for item in skipped:
        out.print(f"skipped {item['case']}: {item['reason']}", highlight=False, markup=False)
    misses = [r for r in results["results"] if r.get("diagnosis")]
    out.print(
        "rules: v1 = μ_P + μ_D mean field; theta = θ mean field; barrier = θ + barrier "
        "(recommended); curves = θ + barrier on measured curves (honest cases).\n"
        f"{len(misses)} configuration(s) where the recommendation misses; see the report.",
        highlight=False,
    )


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="JSON written by afdplan validate --json.")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output folder [RESULTS_report next to it].")
    ] = None,
) -> None:
    """Markdown + self-contained HTML report with figures from validation results."""
    if not results.is_file():
        raise InputError(f"{results}: no such file")
    try:
        data = json.loads(results.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{results}: not valid JSON: {str(exc).splitlines()[0]}") from exc
    data = check_results(data, str(results))
    target = out_dir or results.with_name(results.stem + "_report")
    md, page = write_report(data, target)
    out.print(f"wrote {md} and {page}", highlight=False)
