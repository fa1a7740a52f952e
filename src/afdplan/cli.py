"""The ``afdplan`` command line: the only module that prints.

Every bad input ends as one ``error: ...`` line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from afdplan.calibrate.aiconfig import choose_ffn_gpus, measured_tables
from afdplan.calibrate.build import Calibration, combine, fit_table
from afdplan.calibrate.readers import read_generic, read_vidur_mlp, read_vidur_send_recv
from afdplan.calibrate.roofline import derive, min_ffn_gpus
from afdplan.calibrate.specs import hardware_names, load_hardware, load_model, model_names
from afdplan.errors import InputError
from afdplan.plan import DEFAULT_WORKLOAD, PlanResult, make_plan
from afdplan.report.figures import plot_calibration
from afdplan.report.validation import check_results, summary_table, write_report
from afdplan.sim import SimConfig, simulate_seeds
from afdplan.sim.sweep import (
    SweepOptimum,
    SweepPoint,
    connect_backend,
    run_sweep,
    simulated_optimum,
)
from afdplan.theory import MODES
from afdplan.timing import (
    COMM_SCOPES,
    DEFAULT_COEFFS,
    LinearStepTimes,
    StepTimes,
    builtin_coeff_names,
    coeffs_to_dict,
    load_coeffs,
    read_step_table,
    write_coeffs_file,
    write_step_table,
)
from afdplan.timing.tables import validate_table
from afdplan.validate import (
    DEFAULT_GRID,
    QUICK_GRID,
    builtin_cases,
    builtin_workloads,
    run_validation,
)
from afdplan.workload import Workload, parse_workload, read_trace

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Size Attention–FFN disaggregated (AFD) LLM decoding: A/F ratio, batch, throughput.",
)
out = Console()
err = Console(stderr=True)

# ------------------------------------------------------------------ shared options

TraceOpt = Annotated[
    Path | None, typer.Option("--trace", help="Request trace: CSV, JSONL or Parquet.")
]
WorkloadOpt = Annotated[
    str | None,
    typer.Option(
        "--workload",
        help="Workload spec, e.g. geometric:prefill=512,decode_mean=256 (see docs).",
    ),
]
PromptColOpt = Annotated[
    str | None, typer.Option("--prompt-col", help="Trace column with prompt lengths.")
]
DecodeColOpt = Annotated[
    str | None, typer.Option("--decode-col", help="Trace column with decode lengths.")
]
DropInvalidOpt = Annotated[
    bool,
    typer.Option("--drop-invalid", help="Drop trace rows with D < 1 or P < 0 (counted)."),
]
CoeffsOpt = Annotated[
    str,
    typer.Option(
        "--coeffs", help=f"Coefficients file (JSON/TOML) or built-in set name [{DEFAULT_COEFFS}]."
    ),
]
ModeOpt = Annotated[str, typer.Option("--mode", help=f"Pipelining: {' | '.join(MODES)}.")]
CommOpt = Annotated[
    str | None,
    typer.Option(
        "--comm", help=f"Communication scope: {' | '.join(COMM_SCOPES)} (default: file's)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
WAttOpt = Annotated[
    float, typer.Option("--w-attention", help="Weight (GPUs or cost) of one Attention instance.")
]
WFfnOpt = Annotated[
    float, typer.Option("--w-ffn", help="Weight (GPUs or cost) of the FFN instance.")
]


def load_workload(
    trace: Path | None,
    workload: str | None,
    prompt_col: str | None = None,
    decode_col: str | None = None,
    drop_invalid: bool = False,
) -> Workload:
    """The workload from ``--trace`` or ``--workload`` (not both), else the default."""
    if trace is not None and workload is not None:
        raise InputError("give either --trace or --workload, not both")
    if trace is not None:
        return read_trace(trace, prompt_col, decode_col, drop_invalid)
    return parse_workload(workload or DEFAULT_WORKLOAD)


def load_times(coeffs: str, comm: str | None) -> LinearStepTimes:
    """A coefficient set: built-in name, file, or ``roofline:MODEL@HARDWARE``."""
    if coeffs.startswith("roofline:"):
        model, at, hardware = coeffs.removeprefix("roofline:").partition("@")
        if not at:
            raise InputError(f"--coeffs {coeffs!r}: use roofline:MODEL@HARDWARE")
        times = derive(load_model(model), load_hardware(hardware)).times
    else:
        times = load_coeffs(coeffs)
    if comm is not None:
        comm = comm.replace("-", "_")
        if comm not in COMM_SCOPES:
            raise InputError(f"--comm must be one of {', '.join(COMM_SCOPES)}, got {comm!r}")
        times = times.with_comm_scope(comm)
    return times


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: object) -> object:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()  # type: ignore[union-attr]
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


TABLE_STYLE = {"title_justify": "left", "box": box.SIMPLE_HEAD}
STAGE_LETTER = {"attention": "A", "communication": "C", "ffn": "F", "serial": "A+C+F"}


def fmt_time(value: float, unit: str) -> str:
    """A time in ms when the unit is seconds, else in the set's own unit."""
    return f"{value * 1e3:.3f}" if unit == "s" else f"{value:.4g}"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.4g}"


# ------------------------------------------------------------------------ commands


@app.command()
def plan(
    trace: TraceOpt = None,
    workload: WorkloadOpt = None,
    coeffs: CoeffsOpt = DEFAULT_COEFFS,
    tables: Annotated[
        Path | None,
        typer.Option(
            "--tables",
            help="Measured step-time table: the barrier-aware rows use the measured curves "
            "(closed-form r* still from --coeffs).",
        ),
    ] = None,
    batch: Annotated[
        int | None,
        typer.Option("--batch", "-B", help="Sequences per Attention worker [largest that fits]."),
    ] = None,
    r_max: Annotated[int | None, typer.Option("--r-max", help="Largest r to evaluate.")] = None,
    mode: ModeOpt = "overlap",
    comm: CommOpt = None,
    w_attention: WAttOpt = 1.0,
    w_ffn: WFfnOpt = 1.0,
    prompt_col: PromptColOpt = None,
    decode_col: DecodeColOpt = None,
    drop_invalid: DropInvalidOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Recommend the A/F ratio r for a workload, step-time model and batch B."""
    wl = load_workload(trace, workload, prompt_col, decode_col, drop_invalid)
    linear = load_times(coeffs, comm)
    result = make_plan(
        wl,
        linear,
        batch,
        mode=mode,
        r_max=r_max,
        w_attention=w_attention,
        w_ffn=w_ffn,
        curves=None if tables is None else read_step_table(tables, linear),
    )
    if as_json:
        print_json(result.to_dict())
    else:
        render_plan(result)


def render_plan(result: PlanResult) -> None:
    t, d, s = result.times, result.deployment, result.stats
    unit = t.time_unit
    out.print(f"[bold]Workload[/bold]  {result.workload}")
    se = f" ± {1.96 * s.theta_se:.1f} (95%)" if s.theta_se else ""
    out.print(
        f"  θ = {s.theta:,.1f} tokens/slot{se}   √v = {s.v**0.5:,.1f}   "
        f"μ_P + μ_D = {s.load_v1:,.1f} (v1)   μ_P = {s.mu_prefill:,.1f}   μ_D = {s.mu_decode:,.1f}"
    )
    cap = (
        f"   KV capacity {t.kv_capacity_tokens:,} tokens → B ≤ {result.max_feasible_batch}"
        if (t.kv_capacity_tokens)
        else ""
    )
    out.print(
        f"[bold]Deployment[/bold]  coeffs {t.name}   B = {d.batch}   mode {d.mode}   "
        f"comm {t.comm_scope}   weights A:F = {d.w_attention:g}:{d.w_ffn:g}{cap}"
    )
    if unit != "s":
        out.print(f"  times are in the set's own unit u = {unit!r}", highlight=False)
    if result.curves:
        out.print(f"  rows use the measured curves of {result.curves}", highlight=False)
    time_head = "ms" if unit == "s" else "u"
    rate_head = "tok/s" if unit == "s" else "tok/u"
    table = Table(
        title="Barrier-aware prediction per A/F ratio r (★ = recommended)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    heads = (
        "r",
        escape(f"E[τ] {time_head}"),
        f"τ̄ {time_head}",
        f"{rate_head}/inst",
        f"{rate_head}/GPU",
        "idle A",
        "idle F",
        "bound",
    )
    for col in heads:
        table.add_column(col, justify="left" if col == "bound" else "right", no_wrap=True)
    best = result.recommended.point.r
    for row in result.rows:
        p = row.point
        table.add_row(
            f"{p.r}{'★' if p.r == best else ''}",
            fmt_time(p.cycle_time, unit),
            fmt_time(p.cycle_time_mean_field, unit),
            fmt_rate(row.throughput_per_instance),
            fmt_rate(result.throughput_per_gpu(row)),
            f"{p.idle_attention:.1%}",
            f"{p.idle_ffn:.1%}",
            STAGE_LETTER[p.binding],
            style="bold green" if p.r == best else None,
        )
    out.print(table)
    out.print(
        "E[τ]: expected step time with the barrier; τ̄: all workers at mean load.", highlight=False
    )
    bp = result.rule.breakpoints
    out.print(
        f"r* (θ, mean field) = {result.rule.r_star:.2f}  ({result.rule.regime}-bound; "
        f"r_A = {bp.r_attention:.2f}, r_C = {bp.r_comm:.2f}, r_peak = {bp.r_peak:.2f})",
        highlight=False,
    )
    out.print(
        f"r* (v1, μ_P + μ_D)  = {result.rule_v1.r_star:.2f}  ({result.rule_v1.regime}-bound)",
        highlight=False,
    )
    rec = result.recommended
    per_gpu = result.recommended_per_gpu
    if per_gpu.point.r != best and (t.gpus_attention, t.gpus_ffn) != (d.w_attention, d.w_ffn):
        out.print(
            f"Per GPU ({t.gpus_attention:g} per A, {t.gpus_ffn:g} per FFN instance) r = "
            f"{per_gpu.point.r} is best: pass --w-attention {t.gpus_attention:g} --w-ffn "
            f"{t.gpus_ffn:g} to optimise for GPUs.",
            highlight=False,
        )
    per = "s" if unit == "s" else unit
    out.print(
        f"[bold green]Recommendation: r = {best}[/bold green] Attention instances per FFN "
        f"instance at B = {d.batch}: {fmt_rate(rec.throughput_per_instance)} tokens/{per} per "
        f"instance, {fmt_rate(result.throughput_per_gpu(rec))} per GPU; idle A "
        f"{rec.point.idle_attention:.1%}, idle F {rec.point.idle_ffn:.1%}."
    )


def parse_int_list(text: str, what: str) -> list[int]:
    """'1-4,8,16' → [1, 2, 3, 4, 8, 16]: integers >= 1, sorted, without repeats."""
    values: set[int] = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        lo, dash, hi = item.partition("-")
        try:
            first, last = (int(lo), int(hi)) if dash else (int(item), int(item))
        except ValueError as exc:
            raise InputError(f"{what}: {item!r} is not an integer or a range a-b") from exc
        if first < 1 or last < first:
            raise InputError(f"{what}: {item!r} must be integers >= 1 with a <= b")
        values.update(range(first, last + 1))
    if not values:
        raise InputError(f"{what}: empty list")
    return sorted(values)


def load_step_times(coeffs: str, comm: str | None, tables: Path | None) -> StepTimes:
    """Linear coefficients, overlaid by measured tables where given."""
    times = load_times(coeffs, comm)
    return times if tables is None else read_step_table(tables, times)


TablesOpt = Annotated[
    Path | None,
    typer.Option(
        "--tables",
        help="Measured step-time table (CSV: op,tokens,kv_tokens,batch,seconds) for the "
        "simulator; stages it lacks use --coeffs.",
    ),
]
RequestsOpt = Annotated[
    int | None,
    typer.Option("--requests", help="Serve about N requests in the measured window [200000]."),
]
StepsOpt = Annotated[
    int | None,
    typer.Option("--steps", help="Measured window in decode steps (instead of --requests)."),
]
OrderOpt = Annotated[
    str, typer.Option("--order", help="iid (resample) | replay (trace in arrival order).")
]
WarmupOpt = Annotated[
    str | None,
    typer.Option("--warmup", help="stationary | cold [stationary where defined, else cold]."),
]
WarmupStepsOpt = Annotated[
    int | None, typer.Option("--warmup-steps", help="Steps discarded after a cold start.")
]
KvOpt = Annotated[
    str | None,
    typer.Option(
        "--kv-capacity",
        help="KV tokens per Attention worker ('auto': the coefficient set's); waits if full.",
    ),
]
NoiseOpt = Annotated[
    float, typer.Option("--noise", help="σ of a mean-one log-normal factor on stage times.")
]
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
    times: StepTimes,
) -> SimConfig:
    if requests is None and steps is None:
        requests = DEFAULT_REQUESTS
    kv = None
    if kv_capacity is not None:
        if kv_capacity == "auto":
            kv = getattr(getattr(times, "fallback", times), "kv_capacity_tokens", None)
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
    linear = load_times(coeffs, comm)
    times = linear if tables is None else read_step_table(tables, linear)
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
        times,
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
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
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
    linear = load_times(coeffs, comm)
    times = linear if tables is None else read_step_table(tables, linear)
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
        times,
    )
    connect_backend(backend, scheduler)
    total = len(workloads) * len(b_list) * len(r_list) * seeds
    with Progress(
        TextColumn("sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json and not err.is_terminal,
    ) as bar:
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
    report = sweep_report(points, workloads, linear, mode, w_attention, w_ffn)
    if csv is not None:
        pd.DataFrame(report["rows"]).to_csv(csv, index=False)
    if as_json:
        print_json(report)
        return
    render_sweep(report, times.time_unit)


def sweep_report(
    points: list[SweepPoint],
    workloads: dict[str, Workload],
    linear: LinearStepTimes,
    mode: str,
    w_attention: float,
    w_ffn: float,
) -> dict:
    """Rows per (workload, B, r) and, per (workload, B), the simulated vs theory optimum."""
    rows, optima = [], []
    groups: dict[tuple[str, int], list[SweepPoint]] = {}
    for p in points:
        groups.setdefault((p.workload, p.batch), []).append(p)
        tp = p.estimate("throughput_per_instance")
        rows.append(
            {
                "workload": p.workload,
                "batch": p.batch,
                "r": p.ratio,
                "seeds": len(p.runs),
                "throughput_per_instance": tp.mean,
                "throughput_ci95": tp.half_width,
                "throughput_per_weight": p.weighted_throughput(w_attention, w_ffn).mean,
                "mean_step_time_s": p.estimate("mean_step_time_s").mean,
                "idle_attention": p.estimate("idle_attention").mean,
                "idle_ffn": p.estimate("idle_ffn").mean,
                "tpot_p99_s": p.estimate("tpot_p99_s").mean,
            }
        )
    for (name, b), group in groups.items():
        r_sim, objective = simulated_optimum(group, w_attention, w_ffn)
        planned = make_plan(
            workloads[name],
            replace(linear, kv_capacity_tokens=None),
            b,
            mode=mode,
            r_max=max(max(objective), 2 * r_sim),
            w_attention=w_attention,
            w_ffn=w_ffn,
        )
        opt = SweepOptimum(
            name,
            b,
            r_sim,
            planned.recommended.point.r,
            objective[r_sim],
            objective.get(planned.recommended.point.r),
        )
        optima.append(
            {
                "workload": name,
                "batch": b,
                "r_sim_opt": opt.r_sim_opt,
                "r_theory": opt.r_theory,
                "r_star": planned.rule.r_star,
                "r_star_v1": planned.rule_v1.r_star,
                "regime": planned.rule.regime,
                "rel_error": opt.rel_error,
                "regret": opt.regret,
            }
        )
    return {
        "rows": rows,
        "optima": optima,
        "r_sim_opt": {f"{o['workload']}@B={o['batch']}": o["r_sim_opt"] for o in optima},
        "r_theory": {f"{o['workload']}@B={o['batch']}": o["r_theory"] for o in optima},
    }


def render_sweep(report: dict, unit: str) -> None:
    table = Table(
        title="Simulated optimum vs theory per B",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for col in (
        "workload",
        "B",
        "r_sim",
        "r_theory",
        "r* (θ)",
        "r* (v1)",
        "regime",
        "error",
        "regret",
    ):
        table.add_column(col, justify="left" if col in ("workload", "regime") else "right")
    for o in report["optima"]:
        table.add_row(
            o["workload"][:40],
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


SYSTEM_HARDWARE = {
    "h100_sxm": "h100-sxm",
    "h200_sxm": "h200",
    "b200_sxm": "b200",
    "a100_sxm": "a100-80g",
}


def _parse_range(text: str | None, what: str) -> tuple[float, float] | None:
    if text is None:
        return None
    lo, colon, hi = text.partition(":")
    try:
        bounds = (float(lo), float(hi))
    except ValueError as exc:
        raise InputError(f"{what} must be LO:HI tokens, got {text!r}") from exc
    if not colon or not 0 <= bounds[0] < bounds[1]:
        raise InputError(f"{what} must be LO:HI with 0 <= LO < HI, got {text!r}")
    return bounds


@app.command()
def calibrate(
    model: Annotated[
        str | None, typer.Option("--model", help="Model preset or HF config.json path.")
    ] = None,
    hardware: Annotated[
        str | None, typer.Option("--hardware", help="Hardware preset (roofline for any stage).")
    ] = None,
    gpus_attention: Annotated[
        int, typer.Option("--gpus-attention", help="GPUs per A instance.")
    ] = 1,
    gpus_ffn: Annotated[
        int | None, typer.Option("--gpus-ffn", help="GPUs per FFN instance [fewest that fit].")
    ] = None,
    mem_efficiency: Annotated[float | None, typer.Option("--mem-efficiency")] = None,
    compute_efficiency: Annotated[float | None, typer.Option("--compute-efficiency")] = None,
    link_efficiency: Annotated[float | None, typer.Option("--link-efficiency")] = None,
    vidur_mlp: Annotated[
        Path | None, typer.Option("--vidur-mlp", help="Vidur mlp.csv (FFN, attention GEMMs).")
    ] = None,
    send_recv: Annotated[
        Path | None, typer.Option("--send-recv", help="Vidur send_recv.csv (A↔F transfers).")
    ] = None,
    inter_node: Annotated[
        bool, typer.Option("--inter-node", help="Use send_recv's inter-node rows.")
    ] = False,
    table: Annotated[
        Path | None,
        typer.Option("--table", help="Generic table: op,tokens,kv_tokens,batch,seconds."),
    ] = None,
    system: Annotated[
        str | None,
        typer.Option(
            "--system", help="aiconfigurator-core system, e.g. h100_sxm (needs [measured])."
        ),
    ] = None,
    framework: Annotated[
        str, typer.Option("--framework", help="aiconfigurator framework.")
    ] = "vllm",
    ffn_range: Annotated[
        str | None,
        typer.Option("--ffn-range", help="Fit the FFN only on LO:HI tokens (r·B range)."),
    ] = None,
    attention_range: Annotated[
        str | None,
        typer.Option("--attention-range", help="Fit the attention kernel only on LO:HI KV tokens."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the coefficients (.toml/.json).")
    ] = None,
    table_out: Annotated[
        Path | None, typer.Option("--table-out", help="Write the measured rows for --tables.")
    ] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="PNG of measured vs fitted.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Name of the coefficient set.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Step-time coefficients from measurements and/or model + hardware specs."""
    ffn_window = _parse_range(ffn_range, "--ffn-range")
    attention_window = _parse_range(attention_range, "--attention-range")
    spec = load_model(model) if model is not None else None
    if system is not None and hardware is None:
        hardware = SYSTEM_HARDWARE.get(system)
    hw = None
    if hardware is not None:
        hw = load_hardware(
            hardware,
            mem_efficiency=mem_efficiency,
            compute_efficiency=compute_efficiency,
            link_efficiency=link_efficiency,
        )
    if gpus_ffn is None and spec is not None and hw is not None and (system or vidur_mlp):
        gpus_ffn = choose_ffn_gpus(spec, min_ffn_gpus(spec, hw))
    base = (
        derive(spec, hw, gpus_attention, gpus_ffn) if spec is not None and hw is not None else None
    )
    notes: list[str] = list(base.notes) if base else []
    frames = []
    if spec is None and (vidur_mlp or send_recv or system):
        raise InputError("--vidur-mlp, --send-recv and --system need --model (layers, shapes)")
    labels: dict[str, str] = {}

    def add(frame: pd.DataFrame, label: str) -> None:
        frames.append(frame)
        for op in frame["op"].unique():
            labels[op] = f"{labels[op]} and {label}" if op in labels else label

    if vidur_mlp is not None:
        add(
            read_vidur_mlp(vidur_mlp, spec.layers, gpus_attention, gpus_ffn or 1),
            f"Vidur {vidur_mlp.parent.parent.name}/{vidur_mlp.parent.name}/{vidur_mlp.name}",
        )
        notes.append(
            f"measured: {vidur_mlp} (FFN at TP {gpus_ffn or 1}, "
            f"attention GEMMs at TP {gpus_attention})"
        )
    if send_recv is not None:
        per_token = spec.hidden * spec.act_bytes
        link = "inter" if inter_node else "intra"
        add(
            read_vidur_send_recv(send_recv, per_token, 2 * spec.layers, not inter_node),
            f"Vidur {send_recv.parent.name}/{send_recv.name} ({link}-node)",
        )
        notes.append(f"measured: {send_recv} ({link}-node), 2 x {spec.layers} transfers")
    if table is not None:
        add(read_generic(table), str(table.name))
        notes.append(f"measured: {table}")
    if system is not None:
        measured = measured_tables(spec, system, framework, gpus_attention, gpus_ffn or 1)
        add(measured.rows, f"aiconfigurator-core {system} {framework}")
        notes.extend(f"measured: {n}" for n in measured.notes)
    if not frames and base is None:
        raise InputError("nothing to calibrate: give --model and --hardware, and/or measurements")
    rows = validate_table(pd.concat(frames, ignore_index=True), "measurements") if frames else None
    fits = fit_table(rows, ffn_window, attention_window) if rows is not None else {}
    if name is None:
        name = f"{spec.name if spec else 'measured'}@{system or hardware or 'custom'}"
    result = combine(fits, base.times if base else None, labels, name, tuple(notes))
    if output is not None:
        write_coeffs_file(result.times, output)
    if table_out is not None and rows is not None:
        write_step_table(rows, table_out)
    if plot is not None and fits:
        plot_calibration(rows, fits, plot)
    if as_json:
        print_json(
            {
                "coefficients": coeffs_to_dict(result.times),
                "sources": result.sources,
                "fits": {k: asdict(v) for k, v in fits.items()},
                "notes": list(result.notes),
            }
        )
        return
    render_calibration(result)


def render_calibration(result: Calibration) -> None:
    t = result.times
    table = Table(title=f"Coefficients: {t.name}", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("stage", "alpha", "gamma", "beta", "source"):
        table.add_column(col, justify="left" if col in ("stage", "source") else "right")
    table.add_row(
        "attention",
        f"{t.attention.alpha:.4g} s/KV tok",
        f"{t.attention.gamma:.4g} s/seq",
        f"{t.attention.beta:.4g} s",
        result.sources["attention"],
    )
    table.add_row(
        "ffn", f"{t.ffn.alpha:.4g} s/tok", "", f"{t.ffn.beta:.4g} s", result.sources["ffn"]
    )
    table.add_row(
        "comm", f"{t.comm.alpha:.4g} s/tok", "", f"{t.comm.beta:.4g} s", result.sources["comm"]
    )
    out.print(table)
    gpus = f"GPUs per instance A:F = {t.gpus_attention:g}:{t.gpus_ffn:g}"
    kv = (
        f", KV capacity {t.kv_capacity_tokens:,} tokens per A instance"
        if t.kv_capacity_tokens
        else ""
    )
    out.print(gpus + kv, highlight=False)
    for fit in result.fits.values():
        out.print(f"fit {fit.describe()}", highlight=False, markup=False)
    for note in result.notes:
        out.print(f"- {note}", highlight=False, markup=False)


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
    with Progress(
        TextColumn("validate"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
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
        json_out.write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
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


@app.command()
def presets() -> None:
    """List the built-in coefficient sets, models and hardware."""
    table = Table(
        title="Coefficient sets (--coeffs NAME)", title_justify="left", box=box.SIMPLE_HEAD
    )
    for col in ("name", "time unit", "GPUs A:F", "provenance"):
        table.add_column(col)
    for name in builtin_coeff_names():
        t = load_coeffs(name)
        table.add_row(name, t.time_unit, f"{t.gpus_attention:g}:{t.gpus_ffn:g}", t.provenance)
    out.print(table)
    models = Table(
        title="Models (--model NAME, or a config.json path)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for col in ("name", "layers", "hidden", "attention", "FFN", "source"):
        models.add_column(col)
    for name in model_names():
        m = load_model(name)
        attn = f"MLA {m.heads} heads" if m.is_mla else f"GQA {m.heads}/{m.kv_heads}"
        ffn = f"MoE {m.experts}x top-{m.top_k}" if m.is_moe else f"dense {m.intermediate}"
        models.add_row(name, str(m.layers), str(m.hidden), attn, ffn, m.source)
    out.print(models)
    hw = Table(title="Hardware (--hardware NAME)", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("name", "BF16 TFLOP/s", "HBM TB/s", "HBM GB", "link GB/s", "source"):
        hw.add_column(col)
    for name in hardware_names():
        h = load_hardware(name)
        hw.add_row(
            name,
            f"{h.flops_bf16 / 1e12:.0f}",
            f"{h.hbm_bandwidth / 1e12:.2f}",
            f"{h.hbm_bytes / 1e9:.0f}",
            f"{h.link_bandwidth / 1e9:.0f}",
            h.source,
        )
    out.print(hw)


def main() -> None:
    """Console entry point: run the app, turning bad input into one line and exit 2."""
    try:
        app()
    except InputError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("AFDPLAN_DEBUG"):
            raise
        err.print(
            f"error: internal error ({type(exc).__name__}: {exc}); rerun with AFDPLAN_DEBUG=1 "
            "and report it",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
