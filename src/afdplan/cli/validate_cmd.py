"""``afdplan validate`` and ``afdplan report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from afdplan.choices import Objective, PipelineKind, StudyGrid
from afdplan.cli.common import (
    BackendOpt,
    JobsOpt,
    JsonOpt,
    MicrobatchesOpt,
    OutputOpt,
    OutTable,
    PipelineOpt,
    SaveDirOpt,
    SchedulerOpt,
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
    grid: Annotated[
        StudyGrid,
        typer.Option(
            "--grid",
            help="paper: the paper's rule over workloads, B and step-time sources; "
            "deployment: DeepSeek-V3/H200 under serial and ping-pong m = 2, 3 with EP8 and "
            "EP16 FFN groups, per GPU (EP16 needs the measured extra).",
        ),
    ] = StudyGrid.paper,
    pipeline: PipelineOpt = None,
    microbatches: MicrobatchesOpt = 1,
    objective: Annotated[
        Objective | None,
        typer.Option(
            "--objective",
            help="Maximise tokens/s per instance or per GPU [paper: instance; deployment: gpu].",
        ),
    ] = None,
    jobs: JobsOpt = None,
    backend: BackendOpt = None,
    scheduler: SchedulerOpt = None,
    output: OutputOpt = None,
    save_dir: SaveDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Theory vs simulation across workloads, B and step-time sources (easy and honest).

    -o writes the raw results (JSON, the input of `afdplan report`); --save-dir writes the
    Markdown + HTML report with figures.
    """
    from afdplan.data import resolve_input
    from afdplan.sim.sweep import connect_backend
    from afdplan.study import build_study, case_pipeline, run_validation

    output = prepare_output_file(output, "--output", (".json",))
    save_dir = prepare_output_dir(save_dir)
    check_jobs(jobs)
    require(
        objective is not Objective.cost,
        "--objective: the study compares tokens/s per instance or per GPU, not per dollar",
    )
    given = pipeline is not None or microbatches != 1
    study = build_study(
        grid is StudyGrid.deployment,
        quick,
        None if trace is None else [resolve_input(t, "trace") for t in trace],
        ((pipeline or PipelineKind.overlap).value, microbatches) if given else None,
        None if objective is None else objective.value,
    )
    for case in study.cases:  # refuse a pipeline the cases cannot run before any work
        for steps_run in study.pipelines:
            case_pipeline(case, steps_run)
    backend_name = None if backend is None else backend.value
    connect_backend(backend_name, scheduler)
    total = len(study.cases) * len(study.workloads) * len(study.grid.batches) * len(study.pipelines)
    with progress_bar("validate") as bar:
        task = bar.add_task("validate", total=None)
        results = run_validation(
            study.cases,
            study.workloads,
            study.grid,
            n_jobs=jobs,
            skipped=study.skipped,
            seed=seed,
            pipelines=study.pipelines,
            objective=study.objective,
            backend=backend_name,
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
    _render_validation(results, total, study.skipped, output, save_dir)


def show_rows(rows: list[list[str]], title: str, left: tuple[str, ...]) -> None:
    """A header row and its body rows as one table (``left``: left-aligned columns)."""
    table = OutTable(title=title)
    for col in rows[0]:
        table.add_column(col, justify="left" if col in left else "right")
    for row in rows[1:]:
        table.add_row(*row)
    show(table)


def _render_validation(results: dict, total: int, skipped, output, save_dir) -> None:
    from afdplan.report.validation import deployment_rows, summary_table, varies

    title = (
        f"Validation: {total} configurations, {results['meta']['simulations']:,} "
        f"simulations, {results['meta']['runtime_s']:.0f} s"
    )
    show_rows(summary_table(results["summary"], short=True), title, ("cases", "rule"))
    if varies(results["deployments"]):
        show_rows(
            deployment_rows(results["deployments"]),
            "How r* moves with the pipeline and the FFN group",
            left=("case", "workload", "pipeline", "binding"),
        )
    for item in skipped:
        out.print(f"skipped {item['case']}: {item['reason']}", highlight=False, markup=False)
    unscored: dict[str, list[str]] = {}
    for item in results["infeasible"]:
        unscored.setdefault(item["case"], []).append(f"{item['workload']} B={item['batch']}")
    for case, where in unscored.items():
        out.print(
            f"not scored, B above the KV capacity ({case}): {', '.join(dict.fromkeys(where))}",
            highlight=False,
            markup=False,
        )
    misses = [r for r in results["results"] if r.get("diagnosis")]
    out.print(
        "rules: v1 = μ_P + μ_D mean field; theta = θ mean field; barrier = θ + barrier "
        "(recommended); curves = θ + barrier on measured curves (honest cases).\n"
        f"{len(misses)} configuration(s) where the recommendation misses; "
        + (f"the report in {save_dir} explains each." if save_dir is not None
           else "pass --save-dir to write the report that explains each."),
        highlight=False,
        markup=False,
    )  # fmt: skip
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
