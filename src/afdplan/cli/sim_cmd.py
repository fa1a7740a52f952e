"""``afdplan simulate`` and ``afdplan sweep``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from afdplan.choices import DEFAULT_COEFFS, Backend, Objective, Order, Warmup
from afdplan.cli.common import (
    CoeffsOpt,
    CommOpt,
    DecodeColOpt,
    DropInvalidOpt,
    GpusAttOpt,
    GpusFfnOpt,
    JobsOpt,
    JsonOpt,
    KvOpt,
    LayersOpt,
    LinearOnlyOpt,
    MicrobatchesOpt,
    ModeOpt,
    NoiseOpt,
    ObjectiveOpt,
    OutputOpt,
    OutTable,
    PipelineOpt,
    PriceAttOpt,
    PriceFfnOpt,
    PromptColOpt,
    RequestsOpt,
    SeedOpt,
    StepsOpt,
    TablesOpt,
    TraceOpt,
    WAttOpt,
    WFfnOpt,
    WorkloadOpt,
    app,
    check_jobs,
    fmt_rate,
    fmt_time,
    load_step_times,
    load_workload,
    out,
    parse_int_list,
    prepare_output_file,
    print_json,
    progress_bar,
    resolve_pipeline,
    resolve_weights,
    show,
    single_int,
)
from afdplan.errors import InputError, require

DEFAULT_REQUESTS = 200_000
OrderOpt = Annotated[
    Order, typer.Option("--order", help="iid: resample; replay: a trace in arrival order.")
]
OvercommitOpt = Annotated[
    bool,
    typer.Option(
        "--overcommit",
        help="Allow B above what the KV cache holds (mean + 3σ), as plan refuses it.",
    ),
]
ROWS_SUFFIXES = (".csv", ".parquet", ".json")


def sim_config(
    ratio: int,
    batch: int,
    requests: int | None,
    steps: int | None,
    pipeline,
    order: str,
    warmup: str | None,
    warmup_steps: int | None,
    kv_capacity: str | None,
    noise: float,
    seed: int,
    linear,
    exact: bool = True,
):
    from afdplan.sim import SimConfig

    if requests is None and steps is None:
        requests = DEFAULT_REQUESTS
    require(requests is None or steps is None, "give --requests or --steps, not both")
    kv = None
    if kv_capacity is not None:
        if kv_capacity == "auto":
            kv = linear.kv_capacity_tokens
            require(
                kv is not None, "--kv-capacity auto: the coefficient set has no kv_capacity_tokens"
            )
        else:
            try:
                kv = int(kv_capacity)
            except ValueError as exc:
                raise InputError(
                    f"--kv-capacity must be an integer or 'auto', got {kv_capacity!r}"
                ) from exc
    return SimConfig(
        ratio=ratio,
        batch=batch,
        steps=steps,
        requests=requests,
        mode=pipeline.kind,
        microbatches=pipeline.microbatches,
        layers=pipeline.layers,
        order=order,  # type: ignore[arg-type]
        warmup=warmup,  # type: ignore[arg-type]
        warmup_steps=warmup_steps,
        kv_capacity_tokens=kv,
        noise=noise,
        seed=seed,
        exact=exact,
    )


def check_memory(linear, stats, batches: list[int], kv_capacity: str | None, overcommit: bool):
    """Refuse B the KV cache cannot hold, as ``plan`` does, unless the run caps KV itself
    (``--kv-capacity``: requests wait) or the user overcommits on purpose."""
    from afdplan.plan import resolve_batch

    if kv_capacity is None and not overcommit:
        for b in batches:
            try:
                resolve_batch(linear, stats, b)
            except InputError as exc:
                raise InputError(
                    f"{exc}; simulate the cap with --kv-capacity auto, or pass --overcommit"
                ) from None


SIM_ROWS: tuple[tuple[str, str, str], ...] = (
    ("throughput_per_instance", "throughput per instance", "rate"),
    ("throughput_per_gpu", "throughput per GPU", "rate"),
    ("mean_step_time_s", "mean step time", "time"),
    ("step_time_p50_s", "step time p50", "time"),
    ("step_time_p90_s", "step time p90", "time"),
    ("step_time_p99_s", "step time p99", "time"),
    ("tpot_p50_s", "TPOT p50", "time"),
    ("tpot_p90_s", "TPOT p90", "time"),
    ("tpot_p99_s", "TPOT p99", "time"),
    ("idle_attention", "idle Attention", "share"),
    ("idle_ffn", "idle FFN", "share"),
    ("share_attention_bound", "steps bound by A", "share"),
    ("share_comm_bound", "steps bound by C", "share"),
    ("share_ffn_bound", "steps bound by F", "share"),
    ("mean_load_per_worker", "mean KV load per worker", "count"),
    ("requests_completed", "requests completed", "count"),
)


def _fmt_metric(value: float, kind: str, unit: str) -> str:
    if kind == "time":
        return f"{fmt_time(value, unit)} {'ms' if unit == 's' else 'u'}"
    if kind == "share":
        return f"{value:.2%}"
    if kind == "rate":
        return f"{fmt_rate(value)} tok/{'s' if unit == 's' else 'u'}"
    return f"{value:,.0f}"


@app.command()
def simulate(
    trace: TraceOpt = None,
    workload: WorkloadOpt = None,
    coeffs: CoeffsOpt = DEFAULT_COEFFS,
    tables: TablesOpt = None,
    linear_only: LinearOnlyOpt = False,
    batch: Annotated[
        str | None, typer.Option("--batch", "-B", help="Sequences per Attention worker [as plan].")
    ] = None,
    ratio: Annotated[
        str | None, typer.Option("--ratio", "-r", help="Attention workers per FFN [plan's pick].")
    ] = None,
    requests: RequestsOpt = None,
    steps: StepsOpt = None,
    seed: SeedOpt = 0,
    seeds: Annotated[int, typer.Option("--seeds", help="Number of seeds (CI over seeds).")] = 1,
    pipeline: PipelineOpt = None,
    microbatches: MicrobatchesOpt = 1,
    layers: LayersOpt = None,
    mode: ModeOpt = None,
    gpus_attention: GpusAttOpt = None,
    gpus_ffn: GpusFfnOpt = None,
    order: OrderOpt = Order.iid,
    warmup: Annotated[
        Warmup | None,
        typer.Option("--warmup", help="Start state [stationary where defined, else cold]."),
    ] = None,
    warmup_steps: Annotated[
        int | None, typer.Option("--warmup-steps", help="Steps discarded after a cold start.")
    ] = None,
    kv_capacity: KvOpt = None,
    overcommit: OvercommitOpt = False,
    closed_form: Annotated[
        bool,
        typer.Option(
            "--closed-form",
            help="Ping-pong: evaluate each step by the closed form instead of the exact "
            "recurrence (faster; the recurrence reports how far apart they are).",
        ),
    ] = False,
    noise: NoiseOpt = 0.0,
    comm: CommOpt = None,
    prompt_col: PromptColOpt = None,
    decode_col: DecodeColOpt = None,
    drop_invalid: DropInvalidOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Simulate one rA–1F bundle and report throughput, step times, idle time and TPOT."""
    from afdplan.plan import make_plan
    from afdplan.sim import simulate_seeds

    b = single_int(batch, "--batch")
    r = single_int(ratio, "--ratio")
    require(seeds >= 1, f"--seeds must be >= 1, got {seeds}")
    wl = load_workload(trace, workload, prompt_col, decode_col, drop_invalid)
    gpus = (gpus_attention, gpus_ffn)
    linear, times = load_step_times(coeffs, comm, tables, gpus, linear_only)
    steps_run = resolve_pipeline(pipeline, mode, microbatches, layers, linear)
    stats = wl.stats()
    if b is not None:
        check_memory(linear, stats, [b], kv_capacity, overcommit)
    if r is None or b is None:
        planned = make_plan(
            wl,
            linear,
            b,
            pipeline=steps_run,
            stats=stats,
            curves=None if times is linear else times,
            objective=Objective.gpu,
        )
        b = planned.deployment.batch
        r = r if r is not None else planned.recommended.point.r
    config = sim_config(
        r,
        b,
        requests,
        steps,
        steps_run,
        order.value,
        None if warmup is None else warmup.value,
        warmup_steps,
        kv_capacity,
        noise,
        seed,
        linear,
        exact=not closed_form,
    )
    summary = simulate_seeds(wl, times, config, list(range(seed, seed + seeds)))
    if as_json:
        print_json({"workload": wl.describe(), "step_times": times.name, **summary.to_dict()})
        return
    _render_simulation(wl, times, summary, seeds)


def _render_simulation(wl, times, summary, seeds: int) -> None:
    first = summary.runs[0]
    unit = times.time_unit
    out.print(f"Workload  {wl.describe()}", highlight=False, markup=False)
    out.print(
        f"Bundle  r = {first.ratio}, B = {first.batch}, pipeline {first.mode}"
        f"{f' m = {first.microbatches}' if first.microbatches > 1 else ''}, "
        f"order {first.order}, warm-up {first.warmup} ({first.warmup_steps} steps discarded), "
        f"{first.steps:,} steps measured, step times: {times.name}",
        highlight=False,
        markup=False,
    )
    table = OutTable()
    table.add_column("metric")
    table.add_column("value", justify="right")
    if seeds > 1:
        table.add_column("± 95% CI", justify="right")
    for key, label, kind in SIM_ROWS:
        est = summary.estimate(key)
        cells = [label, _fmt_metric(est.mean, kind, unit)]
        if seeds > 1:
            cells.append(_fmt_metric(est.half_width, kind, unit))
        table.add_row(*cells)
    show(table)
    if first.kv is not None:
        kv = first.kv
        out.print(
            f"KV cap {kv.capacity_tokens:,} tokens/worker: slots used {kv.slot_utilisation:.1%}, "
            f"{kv.waited_requests:,} requests waited (mean {kv.mean_wait_steps:.1f} steps), "
            f"{kv.rejected_requests:,} rejected (P + D above the cap)",
            highlight=False,
        )


@app.command()
def sweep(
    trace: Annotated[
        list[str] | None,
        typer.Option("--trace", help="Trace file or shipped trace name; repeat for several."),
    ] = None,
    workload: Annotated[
        list[str] | None, typer.Option("--workload", help="Workload spec; repeat for several.")
    ] = None,
    coeffs: CoeffsOpt = DEFAULT_COEFFS,
    tables: TablesOpt = None,
    linear_only: LinearOnlyOpt = False,
    batch: Annotated[
        str, typer.Option("--batch", "-B", help="B values, e.g. 64,128,256 or 16-64.")
    ] = "64,128,256",
    ratio: Annotated[str, typer.Option("--ratio", "-r", help="r values, e.g. 1-16.")] = "1-16",
    seed: SeedOpt = 0,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per point.")] = 3,
    requests: RequestsOpt = None,
    steps: StepsOpt = None,
    pipeline: PipelineOpt = None,
    microbatches: MicrobatchesOpt = 1,
    layers: LayersOpt = None,
    mode: ModeOpt = None,
    order: OrderOpt = Order.iid,
    kv_capacity: KvOpt = None,
    overcommit: OvercommitOpt = False,
    noise: NoiseOpt = 0.0,
    comm: CommOpt = None,
    objective: ObjectiveOpt = Objective.gpu,
    gpus_attention: GpusAttOpt = None,
    gpus_ffn: GpusFfnOpt = None,
    price_attention: PriceAttOpt = None,
    price_ffn: PriceFfnOpt = None,
    w_attention: WAttOpt = None,
    w_ffn: WFfnOpt = None,
    jobs: JobsOpt = None,
    backend: Annotated[
        Backend | None, typer.Option("--backend", help="joblib backend [loky].")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="Dask scheduler or Ray cluster address (with --backend)."),
    ] = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sweep r × B (× workloads × seeds): simulated optimum r vs the theory's, per B."""
    from afdplan.choices import DEFAULT_WORKLOAD
    from afdplan.sim.sweep import connect_backend, run_sweep
    from afdplan.validate import compare_sweep

    output = prepare_output_file(output, "--output", ROWS_SUFFIXES)
    b_list = parse_int_list(batch, "--batch")
    r_list = parse_int_list(ratio, "--ratio")
    require(seeds >= 1, f"--seeds must be >= 1, got {seeds}")
    check_jobs(jobs)
    workloads = {}
    for name in trace or []:
        workloads[name] = load_workload(name, None)
    for spec in workload or []:
        workloads[spec] = load_workload(None, spec)
    if not workloads:
        workloads[DEFAULT_WORKLOAD] = load_workload(None, None)
    prices = (price_attention, price_ffn)
    gpus = (gpus_attention, gpus_ffn)
    linear, times = load_step_times(coeffs, comm, tables, gpus, linear_only)
    goal, w_a, w_f = resolve_weights(objective, w_attention, w_ffn, prices, linear)
    steps_run = resolve_pipeline(pipeline, mode, microbatches, layers, linear)
    for wl in workloads.values():
        check_memory(linear, wl.stats(), b_list, kv_capacity, overcommit)
    base = sim_config(
        r_list[0],
        min(b_list),
        requests,
        steps,
        steps_run,
        order.value,
        None,
        None,
        kv_capacity,
        noise,
        seed,
        linear,
    )
    backend_name = None if backend is None else backend.value
    connect_backend(backend_name, scheduler)
    total = len(workloads) * len(b_list) * len(r_list) * seeds
    with progress_bar("sweep") as bar:
        task = bar.add_task("sweep", total=total)
        points = run_sweep(
            workloads,
            times,
            b_list,
            r_list,
            range(seed, seed + seeds),
            base,
            n_jobs=jobs,
            backend=backend_name,
            progress=lambda done, _: bar.update(task, completed=done),
        )
    report = compare_sweep(
        points,
        workloads,
        linear,
        steps_run,
        w_a,
        w_f,
        curves=None if times is linear else times,
        objective=goal or "custom",
    )
    if output is not None:
        _write_rows(report["rows"], output)
    if as_json:
        print_json(report)
        return
    render_sweep(report)


def _write_rows(rows: list[dict], path: Path) -> None:
    import pandas as pd

    from afdplan.cli.common import to_json

    if path.suffix.lower() == ".json":
        path.write_text(to_json(rows) + "\n")
    elif path.suffix.lower() == ".parquet":
        pd.DataFrame(rows).to_parquet(path, index=False)
    else:
        pd.DataFrame(rows).to_csv(path, index=False)


def render_sweep(report: dict) -> None:
    table = OutTable(title="Simulated optimum vs theory per B")
    for col in ("workload", "B", "r sim", "r thy", "r*(θ)", "r*(v1)", "regime", "error", "regret"):
        table.add_column(
            col,
            justify="left" if col in ("workload", "regime") else "right",
            no_wrap=col != "workload",
        )
    for o in report["optima"]:
        table.add_row(
            o["workload"],
            str(o["batch"]),
            str(o["r_sim_opt"]),
            str(o["r_theory"]),
            f"{o['r_star']:.2f}",
            f"{o['r_star_v1']:.2f}",
            o["regime"],
            f"{o['rel_error']:.1%}",
            "n/a" if o["regret"] is None else f"{o['regret']:.2%}",
        )
    show(table)
    out.print(
        "r sim: simulated best r; r thy: barrier-aware recommendation; "
        "error = |r thy − r sim|/r sim; regret: throughput lost at r thy "
        "(n/a: r thy was not swept).",
        highlight=False,
    )
