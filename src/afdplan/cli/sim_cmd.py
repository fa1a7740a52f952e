"""``afdplan simulate`` and ``afdplan sweep``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from afdplan.choices import DEFAULT_COEFFS, Objective, Order, Router, Warmup
from afdplan.cli.common import (
    BackendOpt,
    CoeffsOpt,
    CommOpt,
    DecodeColOpt,
    DropInvalidOpt,
    ExchangeOverlapOpt,
    ExpertTpOpt,
    FfnDtypeOpt,
    GpusAttOpt,
    GpusFfnOpt,
    JobsOpt,
    JsonOpt,
    KvDtypeOpt,
    KvOpt,
    LayersOpt,
    LinearOnlyOpt,
    LinkOpt,
    MicrobatchesOpt,
    ModeOpt,
    MtpOpt,
    NoiseOpt,
    ObjectiveOpt,
    OutputOpt,
    OutTable,
    PipelineOpt,
    PriceAttOpt,
    PriceFfnOpt,
    PromptColOpt,
    RequestsOpt,
    RoutingOpt,
    SchedulerOpt,
    SeedOpt,
    StepsOpt,
    TablesOpt,
    TraceOpt,
    WAttOpt,
    WeightDtypeOpt,
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
    parse_kv_capacity,
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
    kv = parse_kv_capacity(kv_capacity, linear)
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
    expert_tp: ExpertTpOpt = 1,
    exchange_overlap: ExchangeOverlapOpt = False,
    mtp: MtpOpt = None,
    weight_dtype: WeightDtypeOpt = None,
    ffn_dtype: FfnDtypeOpt = None,
    kv_dtype: KvDtypeOpt = None,
    link: LinkOpt = None,
    routing: RoutingOpt = None,
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
    arrivals: Annotated[
        str | None,
        typer.Option(
            "--arrivals",
            help="Open system: trace | poisson | gamma:cv=X arrivals over time (with --rate).",
        ),
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option("--rate", help="Open system: requests/s, or a multiple of the trace's (10x)."),
    ] = None,
    bundles: Annotated[
        int | None, typer.Option("--bundles", help="Open system: bundles [1].")
    ] = None,
    router: Annotated[
        Router | None,
        typer.Option("--router", help="Open system: how a request picks its worker [least-kv]."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Simulate one rA–1F bundle and report throughput, step times, idle time and TPOT;
    with --arrivals, an open system of --bundles bundles fed over time."""
    from afdplan.plan import make_plan
    from afdplan.sim import simulate_seeds

    if arrivals is not None or rate is not None:
        closed_only = {
            "--steps": steps is not None, "--tables": tables is not None,
            "--order": order != Order.iid, "--warmup": warmup is not None,
            "--warmup-steps": warmup_steps is not None, "--closed-form": closed_form,
            "--noise": noise != 0.0, "--overcommit": overcommit, "--comm": comm is not None,
            "--gpus-attention": gpus_attention is not None, "--gpus-ffn": gpus_ffn is not None,
            "--mode": mode is not None, "--linear-only": linear_only,
            # the open system runs the coefficient set as it is (no roofline options)
            "--weight-dtype": weight_dtype is not None, "--ffn-dtype": ffn_dtype is not None,
            "--kv-dtype": kv_dtype is not None, "--link": link is not None,
            "--routing": routing is not None,
        }  # fmt: skip
        given = [k for k, v in closed_only.items() if v]
        require(
            not given,
            f"{', '.join(given)}: not applied to the open system; drop it or --arrivals",
        )
        _simulate_open(
            trace, workload, prompt_col, decode_col, drop_invalid, coeffs, ratio, batch,
            pipeline, microbatches, layers, kv_capacity, router or Router.least_kv,
            1 if bundles is None else bundles, arrivals, rate, requests, seed, seeds, as_json,
        )  # fmt: skip
        return
    open_only = {"--bundles": bundles is not None, "--router": router is not None}
    given = [k for k, v in open_only.items() if v]
    require(not given, f"{', '.join(given)}: open-system option(s); give --arrivals and --rate")

    b = single_int(batch, "--batch")
    r = single_int(ratio, "--ratio")
    require(seeds >= 1, f"--seeds must be >= 1, got {seeds}")
    wl = load_workload(trace, workload, prompt_col, decode_col, drop_invalid)
    gpus = (gpus_attention, gpus_ffn)
    dtypes = (weight_dtype, ffn_dtype, kv_dtype)
    linear, times = load_step_times(
        coeffs, comm, tables, gpus, linear_only, dtypes, link, routing, expert_tp,
        exchange_overlap, mtp,
    )
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


def _simulate_open(
    trace, workload, prompt_col, decode_col, drop_invalid, coeffs, ratio, batch, pipeline,
    microbatches, layers, kv_capacity, router, bundles, arrivals, rate, requests, seed, seeds,
    as_json,
) -> None:  # fmt: skip
    from afdplan.capacity import predict
    from afdplan.cli.capacity_cmd import build_fleet, parse_rates, resolve_arrivals
    from afdplan.sim.open import simulate_open

    require(seeds >= 1, f"--seeds must be >= 1, got {seeds}")
    wl = load_workload(trace, workload, prompt_col, decode_col, drop_invalid)
    values = parse_rates(rate, wl)
    require(len(values) == 1, "--rate takes one value here (lists: capacity)")
    arr = resolve_arrivals(arrivals, values[0], wl)
    fleet, label, _ = build_fleet(
        wl, None, coeffs, ratio, batch, pipeline, microbatches, layers, kv_capacity, router,
        bundles,
    )  # fmt: skip
    n = DEFAULT_REQUESTS if requests is None else requests
    require(n >= 1, f"--requests must be >= 1, got {n}")
    runs = [simulate_open(wl, fleet, arr, n, s) for s in range(seed, seed + seeds)]
    summaries = [run.summary() for run in runs]
    offered = summaries[0]["offered_rate"]
    theory = predict(fleet, wl, offered, arr.ca2(runs[0].arrival))
    from afdplan.sim.results import Estimate

    numeric = [k for k, v in summaries[0].items() if isinstance(v, int | float)]
    numeric = [k for k in numeric if not isinstance(summaries[0][k], bool)]
    est = {k: Estimate.of([sm[k] for sm in summaries]) for k in numeric}
    stable = all(sm["stable"] for sm in summaries)
    because = next((sm["unstable_because"] for sm in summaries if not sm["stable"]), "")
    if as_json:
        print_json(
            {
                "workload": wl.describe(),
                "arrivals": arr.describe(),
                "step_times": label,
                "bundles": fleet.bundles,
                "r": fleet.ratio,
                "batch": fleet.batch,
                "router": fleet.router,
                "seeds": list(range(seed, seed + seeds)),
                "simulated": {
                    k: {"mean": e.mean, "half_width": e.half_width} for k, e in est.items()
                },
                "stable": stable,
                "unstable_because": because,
                "predicted": {
                    "saturation_rate": theory.saturation_rate,
                    "occupancy": theory.occupancy,
                    "tpot_mean_s": theory.step_time_s,
                    "wait_mean_s": theory.wait_mean_s,
                },
            }
        )
        return
    out.print(
        f"Open system: {fleet.bundles} bundle(s) of r = {fleet.ratio}, B = {fleet.batch}, "
        f"{fleet.pipeline.describe()}; {arr.describe()}, {n:,} requests; router "
        f"{fleet.router}; step times: {label}",
        markup=False,
    )
    table = OutTable()
    for name in ("metric", "simulated", "± 95% CI", "theory"):
        table.add_column(name, justify="left" if name == "metric" else "right")
    inf, saturation = float("inf"), theory.saturation_rate
    rows = [
        ("offered rate (req/s)", "offered_rate", 1.0, f"{offered:.4g}"),
        ("throughput (req/s)", "throughput_requests", 1.0, f"{min(offered, saturation):.4g}"),
        ("throughput (tokens/s)", "throughput_tokens", 1.0, ""),
        ("saturation rate (req/s)", None, 1.0, f"{theory.saturation_rate:.4g}"),
        ("TPOT mean (ms)", "tpot_mean_s", 1e3, f"{1e3 * theory.step_time_s:.2f}"),
        ("TPOT p50 / p99 (ms)", "tpot_p99_s", 1e3, ""),
        ("wait mean (ms)", "wait_mean_s", 1e3,
         "saturated" if theory.wait_mean_s == inf else f"{1e3 * theory.wait_mean_s:.1f}"),
        ("wait p50 (ms)", "wait_p50_s", 1e3, ""),
        ("wait p99 (ms)", "wait_p99_s", 1e3, ""),
        ("busy slots ρ", None, 1.0, f"{theory.occupancy:.3f}"),
        ("bundle utilisation", "utilisation", 1.0, ""),
        ("mean in system", "mean_in_system", 1.0, ""),
        ("mean waiting", "mean_queued", 1.0, ""),
        ("KV tokens per worker", "mean_kv_tokens_per_worker", 1.0, ""),
    ]  # fmt: skip
    for name, key, scale, theory_cell in rows:
        if key is None:
            table.add_row(name, "", "", theory_cell)
            continue
        e = est[key]
        ci = "" if e.half_width != e.half_width else f"{scale * e.half_width:.3g}"
        value = f"{scale * e.mean:.4g}"
        if key == "tpot_p99_s":
            value = f"{1e3 * est['tpot_p50_s'].mean:.2f} / {1e3 * e.mean:.2f}"
        table.add_row(name, value, ci, theory_cell)
    show(table)
    if not stable:
        out.print(f"The fleet does not keep up: {because}.", markup=False)


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
    expert_tp: ExpertTpOpt = 1,
    exchange_overlap: ExchangeOverlapOpt = False,
    mtp: MtpOpt = None,
    weight_dtype: WeightDtypeOpt = None,
    ffn_dtype: FfnDtypeOpt = None,
    kv_dtype: KvDtypeOpt = None,
    link: LinkOpt = None,
    routing: RoutingOpt = None,
    price_attention: PriceAttOpt = None,
    price_ffn: PriceFfnOpt = None,
    w_attention: WAttOpt = None,
    w_ffn: WFfnOpt = None,
    jobs: JobsOpt = None,
    backend: BackendOpt = None,
    scheduler: SchedulerOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sweep r × B (× workloads × seeds): simulated optimum r vs the theory's, per B."""
    from afdplan.choices import DEFAULT_WORKLOAD
    from afdplan.sim.sweep import connect_backend, run_sweep
    from afdplan.study import compare_sweep

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
    dtypes = (weight_dtype, ffn_dtype, kv_dtype)
    linear, times = load_step_times(
        coeffs, comm, tables, gpus, linear_only, dtypes, link, routing, expert_tp,
        exchange_overlap, mtp,
    )
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
