"""``afdplan capacity``: from a request rate to a fleet of bundles (open-system runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from afdplan.choices import DEFAULT_COEFFS, Architecture, Percentile, PrefillLayout, Router
from afdplan.cli.common import (
    BackendOpt,
    CoeffsOpt,
    DecodeColOpt,
    DropInvalidOpt,
    JobsOpt,
    JsonOpt,
    KvOpt,
    LayersOpt,
    MicrobatchesOpt,
    OutTable,
    PipelineOpt,
    PriceAttOpt,
    PriceFfnOpt,
    PromptColOpt,
    SaveDirOpt,
    SchedulerOpt,
    SeedOpt,
    TraceOpt,
    WorkloadOpt,
    app,
    check_jobs,
    load_workload,
    out,
    parse_kv_capacity,
    prepare_output_dir,
    print_json,
    progress_bar,
    resolve_pipeline,
    show,
    single_int,
)
from afdplan.errors import InputError, check_positive, require

DEFAULT_OPEN_REQUESTS = 50_000

ArrivalsOpt = Annotated[
    str | None,
    typer.Option(
        "--arrivals",
        help="trace | poisson | gamma:cv=X [trace when the trace has timestamps, else poisson].",
    ),
]
RouterOpt = Annotated[Router, typer.Option("--router", help="How a request picks its worker.")]
DeploymentOpt = Annotated[
    Path | None,
    typer.Option(
        "--deployment",
        help="The JSON of `afdplan deploy --json`: its recommended bundle or group.",
    ),
]
ArchitectureOpt = Annotated[
    Architecture | None,
    typer.Option(
        "--architecture",
        help="With --deployment, what to size: what deploy recommends, its chosen AFD bundle "
        "or its best colocated group [recommended].",
    ),
]


def parse_rates(text: str | None, workload, what: str = "--rate") -> list[float | None]:
    """'5', '10x' (times the trace's recorded rate) or a comma list of them."""
    if text is None:
        return [None]
    rates: list[float | None] = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        scale = item.lower().endswith("x")
        try:
            value = float(item[:-1] if scale else item)
        except ValueError as exc:
            raise InputError(f"{what}: {item!r} is not a number or a multiple like 10x") from exc
        require(value > 0 and value < float("inf"), f"{what} must be > 0, got {item!r}")
        if scale:
            arrival = getattr(workload, "arrival", None)
            problem = getattr(workload, "arrival_problem", None)
            require(problem is None, f"{what} {item}: {problem}")
            require(
                arrival is not None,
                f"{what} {item}: a multiple needs a trace with arrival timestamps",
            )
            require(
                arrival[-1] > arrival[0],
                f"{what} {item}: every arrival of the trace is at one instant; it has no rate "
                "to multiply (give requests/s)",
            )
            value *= (arrival.size - 1) / (arrival[-1] - arrival[0])
        rates.append(value)
    require(bool(rates), f"{what}: empty list")
    return rates


def build_fleet(
    wl,
    deployment: Path | None,
    coeffs: str | None,
    ratio: str | None,
    batch: str | None,
    pipeline,
    microbatches: int,
    layers: int | None,
    kv_capacity: str | None,
    router: Router,
    bundles: int = 1,
    architecture: Architecture | None = None,
):
    """(Fleet, description of its step times, the public $/GPU-hour of its attention and
    FFN hardware where known: a deployment names its hardware, a coefficient set does not)."""
    from afdplan.sim.open import Fleet

    require(
        architecture is None or deployment is not None,
        "--architecture picks one of a deployment's answers; give --deployment",
    )
    colocated = False
    if deployment is not None:
        given = {
            "-r": ratio is not None, "-B": batch is not None, "--pipeline": pipeline is not None,
            "-m": microbatches != 1, "--layers": layers is not None, "--coeffs": coeffs is not None,
        }  # fmt: skip
        named = [k for k, v in given.items() if v]
        require(
            not named,
            f"{', '.join(named)}: --deployment fixes the step times, r, B and the pipeline",
        )
        from afdplan.deploy.saved import load_answer

        answer = load_answer(deployment, architecture or Architecture.recommended)
        times, pipe, r, b = answer.times, answer.pipeline, answer.ratio, answer.batch
        label, prices, colocated = answer.label, answer.prices, answer.colocated
    else:
        from afdplan.calibrate.resolve import resolve_coeffs

        times = resolve_coeffs(coeffs or DEFAULT_COEFFS)
        pipe = resolve_pipeline(pipeline, None, microbatches, layers, times)
        r, b = single_int(ratio, "--ratio"), single_int(batch, "--batch")
        if r is None or b is None:
            from afdplan.plan import make_plan

            planned = make_plan(wl, times, b, pipeline=pipe, objective="gpu")
            b = planned.deployment.batch
            r = r if r is not None else planned.recommended.point.r
        label, prices = times.name, (None, None)
    cap = parse_kv_capacity(
        kv_capacity if kv_capacity is not None else ("auto" if times.kv_capacity_tokens else None),
        times,
    )
    fleet = Fleet(times, r, b, bundles, pipe, cap, router.value, colocated)
    return fleet, label, prices


def _prefill_pool(
    hw_name, gpus, instances, tokens, model_name, deployment, coeffs, ttft_ms, layout=None
):
    """The prefill pool to simulate (instances 1 until sized), or None without --prefill-hw;
    options that need it are refused without it."""
    from afdplan.sim.open import PrefillPool

    if hw_name is None:
        named = [o for o, v in (("--prefill-gpus", gpus), ("--prefill-instances", instances),
                                ("--prefill-model", model_name), ("--prefill-layout", layout))
                 if v is not None]  # fmt: skip
        require(not named, f"{', '.join(named)}: only with --prefill-hw (a prefill pool)")
        return None
    require(
        instances is None or instances >= 1, f"--prefill-instances must be >= 1, got {instances}"
    )
    require(tokens >= 1, f"--prefill-tokens must be >= 1, got {tokens}")
    require(
        ttft_ms is not None or instances is not None,
        "--prefill-hw sizes the pool for a TTFT SLO: give --ttft-ms (or --prefill-instances)",
    )
    from afdplan.calibrate.prefill import prefill_times
    from afdplan.calibrate.specs import load_hardware, load_model

    hw = load_hardware(hw_name)
    model = load_model(model_name or _served_model(deployment, coeffs))
    times = prefill_times(model, hw, gpus, tokens, None if layout is None else layout.value)
    return PrefillPool(instances or 1, times, hw.name, hw.price_per_hour)


def _served_model(deployment: Path | None, coeffs: str | None) -> str:
    """The model a deployment file or a coefficient set was made for."""
    if deployment is not None:
        from afdplan.deploy.saved import read_answer_file

        return str(read_answer_file(deployment)["model"])
    from afdplan.presets import measured_sets

    name = coeffs or DEFAULT_COEFFS
    if name.startswith("roofline:"):
        return name.removeprefix("roofline:").split("@")[0]
    model = measured_sets().get(name, {}).get("model")
    require(model is not None, f"--prefill-hw: say which model the pool serves (--prefill-model); "
                               f"{name} names none")  # fmt: skip
    return str(model)


def resolve_arrivals(text: str | None, rate: float | None, wl):
    from afdplan.sim.open import Arrivals

    if text is None:
        text = "trace" if getattr(wl, "arrival", None) is not None else "poisson"
    return Arrivals.parse(text, rate)


@app.command()
def capacity(
    trace: TraceOpt = None,
    workload: WorkloadOpt = None,
    prompt_col: PromptColOpt = None,
    decode_col: DecodeColOpt = None,
    drop_invalid: DropInvalidOpt = False,
    rate: Annotated[
        str | None,
        typer.Option("--rate", help="Requests/s, or a multiple of the trace's rate (10x); a list."),
    ] = None,
    arrivals: ArrivalsOpt = None,
    tpot_ms: Annotated[
        float | None, typer.Option("--tpot-ms", help="SLO on a request's TPOT, milliseconds.")
    ] = None,
    tpot_percentile: Annotated[
        Percentile, typer.Option("--tpot-percentile", help="Percentile of TPOT the SLO bounds.")
    ] = Percentile.p99,
    wait_ms: Annotated[
        float | None,
        typer.Option("--wait-ms", help="SLO on the wait before the first decode step, ms."),
    ] = None,
    wait_percentile: Annotated[
        Percentile, typer.Option("--wait-percentile", help="Percentile of the wait it bounds.")
    ] = Percentile.p99,
    ttft_ms: Annotated[
        float | None,
        typer.Option("--ttft-ms", help="SLO on TTFT (prefill + wait), ms; needs --prefill-*."),
    ] = None,
    ttft_percentile: Annotated[
        Percentile, typer.Option("--ttft-percentile", help="Percentile of TTFT it bounds.")
    ] = Percentile.p99,
    prefill_alpha: Annotated[
        float | None,
        typer.Option("--prefill-alpha", help="Prefill time per prompt token, seconds (TTFT)."),
    ] = None,
    prefill_beta: Annotated[
        float, typer.Option("--prefill-beta", help="Fixed prefill time, seconds (TTFT).")
    ] = 0.0,
    prefill_hw: Annotated[
        str | None,
        typer.Option(
            "--prefill-hw",
            help="Simulate a prefill pool on this hardware in front of the decode fleet (P/D "
            "disaggregation; measured prefill where the tables hold the model, else roofline); "
            "its instances are sized for --ttft-ms.",
        ),
    ] = None,
    prefill_gpus: Annotated[
        int | None,
        typer.Option("--prefill-gpus", help="GPUs per prefill instance [fewest holding the "
                     "weights, a power of two]."),
    ] = None,
    prefill_instances: Annotated[
        int | None,
        typer.Option("--prefill-instances", help="Prefill instances, fixed [sized for TTFT]."),
    ] = None,
    prefill_tokens: Annotated[
        int, typer.Option("--prefill-tokens", help="Prompt tokens one prefill forward takes.")
    ] = 8192,
    prefill_layout: Annotated[
        PrefillLayout | None,
        typer.Option(
            "--prefill-layout",
            help="Prefill instances as data-parallel attention ranks + experts over all (dp) "
            "or one tensor-parallel batch (tp) [dp for MoE models, tp for dense].",
        ),
    ] = None,
    prefill_model: Annotated[
        str | None,
        typer.Option("--prefill-model", help="Model the prefill pool serves [the deployment's or "
                     "the coefficient set's]."),
    ] = None,
    deployment: DeploymentOpt = None,
    architecture: ArchitectureOpt = None,
    coeffs: CoeffsOpt = None,  # [the default set]; refused with --deployment
    batch: Annotated[
        str | None, typer.Option("--batch", "-B", help="Sequences per Attention worker [plan's].")
    ] = None,
    ratio: Annotated[
        str | None, typer.Option("--ratio", "-r", help="Attention workers per bundle [plan's].")
    ] = None,
    pipeline: PipelineOpt = None,
    microbatches: MicrobatchesOpt = 1,
    layers: LayersOpt = None,
    kv_capacity: KvOpt = None,
    router: RouterOpt = Router.least_kv,
    requests: Annotated[
        int, typer.Option("--requests", help="Arrivals simulated per fleet size.")
    ] = DEFAULT_OPEN_REQUESTS,
    max_bundles: Annotated[
        int, typer.Option("--max-bundles", help="Largest fleet to try before giving up.")
    ] = 4096,
    curve: Annotated[
        bool, typer.Option("--curve/--no-curve", help="Goodput of one bundle against its rate.")
    ] = True,
    price_attention: PriceAttOpt = None,
    price_ffn: PriceFfnOpt = None,
    seed: SeedOpt = 0,
    jobs: JobsOpt = None,
    backend: BackendOpt = None,
    scheduler: SchedulerOpt = None,
    save_dir: SaveDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The fewest bundles that meet TPOT, wait and TTFT SLOs at a request rate, by
    open-system simulation, beside the closed-form saturation rate and queueing wait."""
    from afdplan.capacity import Slos, goodput_curve, size_fleets
    from afdplan.sim.sweep import connect_backend

    require(requests >= 2, f"--requests must be >= 2, got {requests}")
    check_jobs(jobs)
    require(seed >= 0, f"--seed must be >= 0, got {seed}")
    folder = prepare_output_dir(save_dir)
    slos = Slos(
        None if tpot_ms is None else tpot_ms / 1e3,
        int(tpot_percentile.value[1:]),
        None if wait_ms is None else wait_ms / 1e3,
        int(wait_percentile.value[1:]),
        None if ttft_ms is None else ttft_ms / 1e3,
        int(ttft_percentile.value[1:]),
        None if prefill_alpha is None else (prefill_alpha, prefill_beta),
        prefill_hw is not None,
    )
    pool = _prefill_pool(
        prefill_hw, prefill_gpus, prefill_instances, prefill_tokens, prefill_model,
        deployment, coeffs, ttft_ms, prefill_layout,
    )  # fmt: skip
    wl = load_workload(trace, workload, prompt_col, decode_col, drop_invalid)
    rates = parse_rates(rate, wl)
    fleet, label, hw_prices = build_fleet(
        wl, deployment, coeffs, ratio, batch, pipeline, microbatches, layers, kv_capacity, router,
        1, architecture,
    )  # fmt: skip
    for option, given in (("--price-attention", price_attention), ("--price-ffn", price_ffn)):
        if given is not None:
            check_positive(option, given)
    p_a = price_attention if price_attention is not None else hw_prices[0]
    p_f = price_ffn if price_ffn is not None else hw_prices[1]
    price = None
    if p_a is not None and p_f is not None:
        price = fleet.bundle.cost_per_hour(p_a, p_f)
    backend_name = None if backend is None else backend.value
    connect_backend(backend_name, scheduler)
    arrivals_by_rate = [resolve_arrivals(arrivals, value, wl) for value in rates]
    with progress_bar("sizing fleets") as bar:
        task = bar.add_task("rates", total=len(rates))
        sizings = size_fleets(
            wl, fleet, arrivals_by_rate, slos, requests, seed, max_bundles, price, jobs,
            backend_name, progress=lambda done, _total: bar.update(task, completed=done),
            prefill=pool, size_prefill_pool=pool is not None and prefill_instances is None,
        )  # fmt: skip
    rows = []
    if curve:
        from afdplan.sim.open import Arrivals

        # The curve sweeps the rate itself; a trace's timestamps give way to Poisson.
        shape = Arrivals.parse(arrivals or "poisson", 1.0)
        shape = shape if shape.kind != "trace" else Arrivals("poisson", 1.0)
        rows = goodput_curve(wl, fleet, shape, slos, max(requests // 4, 2000), seed)
    files = _write(folder, sizings, rows) if folder is not None else []
    if as_json:
        print_json(
            {
                "workload": wl.describe(),
                "step_times": label,
                "bundle": {
                    "r": fleet.ratio,
                    "batch": fleet.batch,
                    "pipeline": fleet.pipeline.describe(),
                    "gpus": fleet.gpus,
                    "kv_capacity_tokens": fleet.kv_capacity_tokens,
                    "router": fleet.router,
                    "architecture": "colocated" if fleet.colocated else "afd",
                },
                "slos": {
                    "tpot_ms": tpot_ms,
                    "tpot_percentile": slos.tpot_percentile,
                    "wait_ms": wait_ms,
                    "wait_percentile": slos.wait_percentile,
                    "ttft_ms": ttft_ms,
                    "ttft_percentile": slos.ttft_percentile,
                    "prefill_alpha_s_per_token": prefill_alpha,
                    "prefill_beta_s": prefill_beta if prefill_alpha is not None else None,
                    "prefill_pool": pool is not None,
                },
                **(sizings[0].to_dict() if len(sizings) == 1 else {}),
                "rates": [s.to_dict() for s in sizings],
                "curve": rows,
                "files": [str(f) for f in files],
            }
        )
        return
    _render(wl, label, fleet, slos, sizings, rows, files)


def _write(folder: Path, sizings, rows) -> list[Path]:
    import pandas as pd

    from afdplan.report.figures import plot_queue

    paths = []
    table = pd.DataFrame(
        [
            {"rate": s.rate, "bundles": p.bundles, "meets_slos": p.meets, **p.summary}
            for s in sizings
            for p in s.probes
        ]
    )
    table.to_csv(folder / "fleets.csv", index=False)
    paths.append(folder / "fleets.csv")
    if rows:
        pd.DataFrame(rows).to_csv(folder / "goodput_curve.csv", index=False)
        paths.append(folder / "goodput_curve.csv")
    for s in sizings:
        png = folder / f"queue_{s.rate:.4g}rps.png"
        plot_queue(s.result, f"{s.bundles} bundle(s) at {s.rate:.4g} req/s", png)
        paths.append(png)
    return paths


def _unit(fleet) -> str:
    """What one decode unit of the fleet is called."""
    return "colocated group" if fleet.colocated else "bundle"


def _render(wl, label, fleet, slos, sizings, rows, files) -> None:
    p = fleet.pipeline
    out.print(
        f"Workload {wl.describe()}; {_unit(fleet)}: r = {fleet.ratio}, B = {fleet.batch}, "
        f"{p.describe()}, {fleet.gpus:g} GPUs, KV cap "
        f"{'none' if fleet.kv_capacity_tokens is None else f'{fleet.kv_capacity_tokens:,}'}"
        f" tokens/worker, router {fleet.router}; step times: {label}",
        markup=False,
    )
    limits = (
        ("TPOT", slos.tpot_s, slos.tpot_percentile),
        ("wait", slos.wait_s, slos.wait_percentile),
        ("TTFT", slos.ttft_s, slos.ttft_percentile),
    )
    slo_text = " and ".join(
        f"{name} p{pct} <= {1e3 * limit:g} ms" for name, limit, pct in limits if limit is not None
    )
    table = OutTable(f"Fleet size for {slo_text} (simulated; theory beside)")
    tp, wp = f"p{slos.tpot_percentile}", f"p{slos.wait_percentile}"
    for name in ("req/s", "bundles", "GPUs", "$/h", "done req/s", "keeps up", "goodput",
                 "SLO met", f"TPOT {tp} ms",
                 "TPOT theory ms", f"wait {wp} ms", "wait mean ms", "wait theory ms",
                 "λ_max theory"):  # fmt: skip
        table.add_column(name, justify="right")
    ttft = (
        f"ttft_p{slos.ttft_percentile}_s"
        if slos.prefill is not None or slos.prefill_pool
        else None
    )
    if ttft is not None:
        table.add_column(f"TTFT p{slos.ttft_percentile} ms", justify="right")
    for s in sizings:
        for probe in s.probes:
            sm, pr = probe.summary, probe.prediction
            chosen = probe is s.chosen
            per_bundle = None if s.cost_per_hour is None else s.cost_per_hour / s.bundles
            cost = "" if per_bundle is None else f"{probe.bundles * per_bundle:,.0f}"
            extra = [] if ttft is None else [f"{1e3 * sm[ttft]:.0f}"]
            table.add_row(
                f"{s.rate:.4g}", probe.bundles, f"{probe.bundles * fleet.gpus:g}",
                cost, f"{sm['throughput_requests']:.4g}", "yes" if probe.stable else "NO",
                f"{sm['goodput']:.4g}", f"{sm['slo_attainment']:.1%}",
                f"{1e3 * sm[f'tpot_{tp}_s']:.1f}", f"{1e3 * pr.step_time_s:.1f}",
                f"{1e3 * sm[f'wait_{wp}_s']:.0f}", f"{1e3 * sm['wait_mean_s']:.0f}",
                "sat." if pr.wait_mean_s == float("inf") else f"{1e3 * pr.wait_mean_s:.0f}",
                f"{pr.saturation_rate:.4g}", *extra,
                style="bold" if chosen else None,
            )  # fmt: skip
    show(table)
    behind = [(s, p) for s in sizings for p in s.probes if not p.stable]
    if behind:
        s, p = behind[-1]
        out.print(
            f"keeps up NO: a fleet that falls behind its offered rate is never the answer, "
            f"whatever the SLOs (e.g. {p.bundles} bundle(s) at {s.rate:.4g} req/s: "
            f"{p.summary['unstable_because']})",
            markup=False,
        )
    for s in sizings:
        short = s.chosen.summary["window_residences"]
        if short < 10:
            out.print(
                f"note: at {s.rate:.4g} req/s the measured window is {short:.1f} mean "
                "residences long; rates read low while the fleet fills (raise --requests)",
                markup=False,
            )
        pool = s.prefill
        prefill = (
            ""
            if pool is None
            else f"{pool.instances} prefill instance(s) x {pool.times.gpus} {pool.hardware} "
            f"({pool.gpus} GPUs, busy {s.chosen.summary['prefill_utilisation']:.0%}) + "
        )
        cost = s.total_cost_per_hour
        if pool is not None and s is sizings[0]:
            out.print(f"prefill step times: {pool.times.name}", markup=False)
        out.print(
            f"{s.rate:.4g} req/s: {prefill}{s.bundles} decode {_unit(fleet)}(s), "
            f"{s.total_gpus:g} GPUs"
            + ("" if cost is None else f", ${cost:,.0f}/hour")
            + f"; goodput {s.chosen.summary['goodput']:.4g} req/s",
            markup=False,
        )
    if rows:
        curve = OutTable(f"One bundle: goodput against the offered rate ({rows[0]['arrivals']})")
        for name in ("× saturation", "req/s", "goodput", "keeps up", "met", "TPOT mean ms",
                     "theory", "wait mean ms", "theory", "knee"):  # fmt: skip
            curve.add_column(name, justify="right")
        for row in rows:
            wait_theory = row["predicted_wait_mean_s"]
            curve.add_row(
                f"{row['share_of_saturation']:.2f}", f"{row['rate']:.4g}", f"{row['goodput']:.4g}",
                "yes" if row["stable"] else "NO", f"{row['slo_attainment']:.1%}",
                f"{1e3 * row['tpot_mean_s']:.1f}",
                f"{1e3 * row['predicted_tpot_mean_s']:.1f}", f"{1e3 * row['wait_mean_s']:.0f}",
                "sat." if wait_theory == float("inf") else f"{1e3 * wait_theory:.0f}",
                "<- knee" if row["knee"] else "",
            )  # fmt: skip
        show(curve)
    for path in files:
        out.print(f"wrote {path}", markup=False)
