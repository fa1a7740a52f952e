"""``afdplan simulate`` and ``afdplan sweep``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from afdplan.cli.common import (
    TABLE_STYLE,
    CoeffsOpt,
    CommOpt,
    DecodeColOpt,
    DropInvalidOpt,
    JsonOpt,
    KvOpt,
    ModeOpt,
    NoiseOpt,
    OrderOpt,
    PromptColOpt,
    RequestsOpt,
    StepsOpt,
    TablesOpt,
    TraceOpt,
    WarmupOpt,
    WarmupStepsOpt,
    WAttOpt,
    WFfnOpt,
    WorkloadOpt,
    app,
    fmt_rate,
    fmt_time,
    load_step_times,
    load_workload,
    out,
    parse_int_list,
    print_json,
    progress_bar,
)
from afdplan.errors import InputError
from afdplan.plan import DEFAULT_WORKLOAD, make_plan
from afdplan.sim import SimConfig, simulate_seeds
from afdplan.sim.sweep import connect_backend, run_sweep
from afdplan.timing import DEFAULT_COEFFS, LinearStepTimes
from afdplan.validate import compare_sweep
from afdplan.workload import Workload, parse_workload, read_trace

DEFAULT_REQUESTS = 200_000


def sim_config(
    ratio: int,
    batch: int,
    requests: int | None,
    steps: int | None,
    mode: str,
    order: str,
    warmup: str | None,
    warmup_steps: int | None,
    kv_capacity: str | None,
    noise: float,
    seed: int,
    linear: LinearStepTimes,
) -> SimConfig:
    if requests is None and steps is None:
        requests = DEFAULT_REQUESTS
    kv = None
    if kv_capacity is not None:
        if kv_capacity == "auto":
            kv = linear.kv_capacity_tokens
            if kv is None:
                raise InputError(
                    "--kv-capacity auto: the coefficient set has no kv_capacity_tokens"
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
        mode=mode,
        order=order,
        warmup=warmup,
        warmup_steps=warmup_steps,
        kv_capacity_tokens=kv,
        noise=noise,
        seed=seed,
    )  # type: ignore[arg-type]


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
    batch: Annotated[
        int | None, typer.Option("--batch", "-B", help="Sequences per Attention worker [as plan].")
    ] = None,
    ratio: Annotated[
        int | None, typer.Option("--ratio", "-r", help="Attention workers per FFN [plan's pick].")
    ] = None,
    requests: RequestsOpt = None,
    steps: StepsOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="First random seed.")] = 0,
    seeds: Annotated[int, typer.Option("--seeds", help="Number of seeds (CI over seeds).")] = 1,
    mode: ModeOpt = "overlap",
    order: OrderOpt = "iid",
    warmup: WarmupOpt = None,
    warmup_steps: WarmupStepsOpt = None,
    kv_capacity: KvOpt = None,
    noise: NoiseOpt = 0.0,
    comm: CommOpt = None,
    prompt_col: PromptColOpt = None,
    decode_col: DecodeColOpt = None,
    drop_invalid: DropInvalidOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Simulate one rA–1F bundle and report throughput, step times, idle time and TPOT."""
    wl = load_workload(trace, workload, prompt_col, decode_col, drop_invalid)
    linear, times = load_step_times(coeffs, comm, tables)
    if seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {seeds}")
    if ratio is None or batch is None:
        planned = make_plan(wl, linear, batch, mode=mode)
        batch = planned.deployment.batch
        ratio = ratio if ratio is not None else planned.recommended.point.r
    config = sim_config(
        ratio,
        batch,
        requests,
        steps,
        mode,
        order,
        warmup,
        warmup_steps,
        kv_capacity,
        noise,
        seed,
        linear,
    )
    summary = simulate_seeds(wl, times, config, list(range(seed, seed + seeds)))
    if as_json:
        print_json({"workload": wl.describe(), "step_times": times.name, **summary.to_dict()})
        return
    first = summary.runs[0]
    unit = times.time_unit
    out.print(f"[bold]Workload[/bold]  {wl.describe()}", highlight=False)
    out.print(
        f"[bold]Bundle[/bold]  r = {first.ratio}, B = {first.batch}, {first.mode}, "
        f"order {first.order}, warm-up {first.warmup} ({first.warmup_steps} steps discarded), "
        f"{first.steps:,} steps measured, step times: {times.name}",
        highlight=False,
    )
    table = Table(box=TABLE_STYLE["box"], pad_edge=False)
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
    out.print(table)
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
        list[Path] | None, typer.Option("--trace", help="Trace file; repeat for several.")
    ] = None,
    workload: Annotated[
        list[str] | None, typer.Option("--workload", help="Workload spec; repeat for several.")
    ] = None,
    coeffs: CoeffsOpt = DEFAULT_COEFFS,
    tables: TablesOpt = None,
    batches: Annotated[
        str, typer.Option("--batches", help="B values, e.g. 64,128,256.")
    ] = "64,128,256",
    ratios: Annotated[str, typer.Option("--ratios", help="r values, e.g. 1-16.")] = "1-16",
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per point.")] = 3,
    requests: RequestsOpt = None,
    steps: StepsOpt = None,
    mode: ModeOpt = "overlap",
    order: OrderOpt = "iid",
    kv_capacity: KvOpt = None,
    noise: NoiseOpt = 0.0,
    comm: CommOpt = None,
    w_attention: WAttOpt = 1.0,
    w_ffn: WFfnOpt = 1.0,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", help="Parallel processes (-1: all cores).")
    ] = -1,
    backend: Annotated[
        str | None, typer.Option("--backend", help="joblib backend: loky (default), dask, ray, …")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="Dask scheduler or Ray cluster address (with --backend)."),
    ] = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="Also write the rows as CSV.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Sweep r × B (× workloads × seeds): simulated optimum r vs the theory's, per B."""
    workloads: dict[str, Workload] = {}
    for path in trace or []:
        workloads[path.name] = read_trace(path)
    for spec in workload or []:
        workloads[spec] = parse_workload(spec)
    if not workloads:
        workloads[DEFAULT_WORKLOAD] = parse_workload(DEFAULT_WORKLOAD)
    linear, times = load_step_times(coeffs, comm, tables)
    b_list = parse_int_list(batches, "--batches")
    r_list = parse_int_list(ratios, "--ratios")
    if seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {seeds}")
    base = sim_config(
        r_list[0],
        b_list[0],
        requests,
        steps,
        mode,
        order,
        None,
        None,
        kv_capacity,
        noise,
        0,
        linear,
    )
    connect_backend(backend, scheduler)
    total = len(workloads) * len(b_list) * len(r_list) * seeds
    with progress_bar("sweep") as bar:
        task = bar.add_task("sweep", total=total)
        points = run_sweep(
            workloads,
            times,
            b_list,
            r_list,
            range(seeds),
            base,
            n_jobs=jobs,
            backend=backend,
            progress=lambda done, _: bar.update(task, completed=done),
        )
    report = compare_sweep(points, workloads, linear, mode, w_attention, w_ffn)
    if csv is not None:
        pd.DataFrame(report["rows"]).to_csv(csv, index=False)
    if as_json:
        print_json(report)
        return
    render_sweep(report)


def render_sweep(report: dict) -> None:
    table = Table(title="Simulated optimum vs theory per B", **TABLE_STYLE, pad_edge=False)
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
    out.print(table)
    out.print(
        "r sim: simulated best r; r thy: barrier-aware recommendation; "
        "error = |r thy − r sim|/r sim; regret: throughput lost at r thy.",
        highlight=False,
    )
