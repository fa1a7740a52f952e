"""``afdplan validate`` and ``afdplan report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from afdplan.choices import PipelineKind
from afdplan.cli.common import (
    JobsOpt,
    JsonOpt,
    MicrobatchesOpt,
    OutputOpt,
    OutTable,
    PipelineOpt,
    SaveDirOpt,
    SeedOpt,
    app,
    check_jobs,
    out,
    prepare_output_dir,
    prepare_output_file,
    print_json,
    progress_bar,
    show,
    to_json,
)
from afdplan.errors import InputError, require


@app.command()
def validate(
    quick: Annotated[
        bool, typer.Option("--quick", help="A small grid (seconds; used by tests).")
    ] = False,
    trace: Annotated[
        list[str] | None,
        typer.Option(
            "--trace",
            help="Trace file or shipped name; repeat for several [the shipped Azure traces].",
        ),
    ] = None,
    seed: SeedOpt = 0,
    pipeline: PipelineOpt = None,
    microbatches: MicrobatchesOpt = 1,
    jobs: JobsOpt = None,
    output: OutputOpt = None,
    save_dir: SaveDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Theory vs simulation across workloads, B and step-time sources (easy and honest).

    -o writes the raw results (JSON, the input of `afdplan report`); --save-dir writes the
    Markdown + HTML report with figures.
    """
    from afdplan.data import builtin_names, resolve_input
    from afdplan.study import (
        DEFAULT_GRID,
        QUICK_GRID,
        builtin_cases,
        builtin_workloads,
        case_pipeline,
        run_validation,
    )

    output = prepare_output_file(output, "--output", (".json",))
    save_dir = prepare_output_dir(save_dir)
    check_jobs(jobs)
    if trace is None:
        traces = [] if quick else [resolve_input(n, "trace") for n in builtin_names("trace")]
    else:
        traces = [resolve_input(t, "trace") for t in trace]
    cases, skipped = builtin_cases(quick)
    for case in cases:  # refuse a pipeline the cases cannot run before any work
        case_pipeline(case, ((pipeline or PipelineKind.overlap).value, microbatches))
    workloads = builtin_workloads(quick, traces)
    grid = QUICK_GRID if quick else DEFAULT_GRID
    total = len(cases) * len(workloads) * len(grid.batches)
    with progress_bar("validate") as bar:
        task = bar.add_task("validate", total=None)
        results = run_validation(
            cases,
            workloads,
            grid,
            n_jobs=jobs,
            skipped=skipped,
            seed=seed,
            pipeline=((pipeline or PipelineKind.overlap).value, microbatches),
            progress=lambda done, all_: bar.update(task, completed=done, total=all_),
        )
    if output is not None:
        output.write_text(to_json(results, indent=1) + "\n")
    if save_dir is not None:
        from afdplan.report.validation import write_report

        write_report(results, save_dir)
    if as_json:
        print_json(results)
        return
    _render_validation(results, total, skipped, output, save_dir)


def _render_validation(results: dict, total: int, skipped, output, save_dir) -> None:
    from afdplan.report.validation import summary_table

    table = OutTable(
        title=f"Validation: {total} configurations, {results['meta']['simulations']:,} "
        f"simulations, {results['meta']['runtime_s']:.0f} s",
    )
    rows = summary_table(results["summary"], short=True)
    for col in rows[0]:
        table.add_column(col, justify="left" if col in ("cases", "rule") else "right")
    for row in rows[1:]:
        table.add_row(*row)
    show(table)
    for item in skipped:
        out.print(f"skipped {item['case']}: {item['reason']}", highlight=False, markup=False)
    misses = [r for r in results["results"] if r.get("diagnosis")]
    out.print(
        "rules: v1 = μ_P + μ_D mean field; theta = θ mean field; barrier = θ + barrier "
        "(recommended); curves = θ + barrier on measured curves (honest cases).\n"
        f"{len(misses)} configuration(s) where the recommendation misses; see the report.",
        highlight=False,
    )
    for path in (output, save_dir):
        if path is not None:
            out.print(f"wrote {path}", highlight=False, markup=False)


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="JSON written by afdplan validate -o.")],
    save_dir: Annotated[
        Path | None,
        typer.Option("--save-dir", help="Output folder [RESULTS_report next to RESULTS]."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Markdown + self-contained HTML report with figures from validation results."""
    import json

    from afdplan.report.validation import check_results, write_report

    require(not results.is_dir(), f"{results}: is a folder; give the JSON file")
    require(results.is_file(), f"{results}: no such file")
    try:
        data = json.loads(results.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{results}: not valid JSON: {str(exc).splitlines()[0]}") from exc
    data = check_results(data, str(results))
    target = prepare_output_dir(save_dir or results.with_name(results.stem + "_report"))
    md, page = write_report(data, target)
    if as_json:
        print_json({"files": [str(md), str(page)]})
    else:
        out.print(f"wrote {md} and {page}", highlight=False, markup=False)
