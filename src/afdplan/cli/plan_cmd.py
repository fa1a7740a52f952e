"""``afdplan plan`` and ``afdplan presets``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from afdplan.choices import DEFAULT_COEFFS, Objective
from afdplan.cli.common import (
    STAGE_LETTER,
    CoeffsOpt,
    CommOpt,
    DecodeColOpt,
    DropInvalidOpt,
    ExchangeOverlapOpt,
    ExpertTpOpt,
    FfnDtypeOpt,
    GpusAttOpt,
    GpusFfnOpt,
    JsonOpt,
    KvDtypeOpt,
    LayersOpt,
    LinearOnlyOpt,
    LinkOpt,
    MicrobatchesOpt,
    ModeOpt,
    MtpOpt,
    ObjectiveOpt,
    OutTable,
    PipelineOpt,
    PriceAttOpt,
    PriceFfnOpt,
    PromptColOpt,
    RoutingOpt,
    TablesOpt,
    TraceOpt,
    WAttOpt,
    WeightDtypeOpt,
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
    resolve_pipeline,
    resolve_weights,
    show,
    single_int,
)

if TYPE_CHECKING:
    from afdplan.plan import PlanResult

BatchOpt = Annotated[
    str | None,
    typer.Option("--batch", "-B", help="Sequences per Attention worker [largest that fits]."),
]


@app.command()
def plan(
    trace: TraceOpt = None,
    workload: WorkloadOpt = None,
    coeffs: CoeffsOpt = DEFAULT_COEFFS,
    tables: TablesOpt = None,
    batch: BatchOpt = None,
    ratio: Annotated[
        str | None,
        typer.Option(
            "--ratio", "-r", help="r values to evaluate, e.g. 1-40 or 4,8,16 [until past the best]."
        ),
    ] = None,
    pipeline: PipelineOpt = None,
    microbatches: MicrobatchesOpt = 1,
    layers: LayersOpt = None,
    mode: ModeOpt = None,
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
    linear_only: LinearOnlyOpt = False,
    prompt_col: PromptColOpt = None,
    decode_col: DecodeColOpt = None,
    drop_invalid: DropInvalidOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Recommend the A/F ratio r for a workload, step-time model and batch B."""
    from afdplan.calibrate.resolve import set_curves
    from afdplan.plan import make_plan

    b = single_int(batch, "--batch")
    r_values = None if ratio is None else parse_int_list(ratio, "--ratio")
    prices = (price_attention, price_ffn)
    wl = load_workload(trace, workload, prompt_col, decode_col, drop_invalid)
    gpus = (gpus_attention, gpus_ffn)
    dtypes = (weight_dtype, ffn_dtype, kv_dtype)
    linear, times = load_step_times(
        coeffs, comm, tables, gpus, linear_only, dtypes, link, routing, expert_tp,
        exchange_overlap, mtp,
    )
    goal, w_a, w_f = resolve_weights(objective, w_attention, w_ffn, prices, linear)
    steps = resolve_pipeline(pipeline, mode, microbatches, layers, linear)
    # Measured curves by default (the linear fit stays for the closed-form breakpoints
    # and its recommendation is reported beside them).
    curves = None if times is linear else times
    result = make_plan(
        wl,
        linear,
        b,
        pipeline=steps,
        r_values=r_values,
        w_attention=w_a,
        w_ffn=w_f,
        curves=curves,
        other_curves=set_curves(linear) if linear_only and tables is None else None,
        objective=goal,
        prices=prices,
    )
    if as_json:
        print_json(result.to_dict())
    else:
        render_plan(result)


def _bp(value: float | None) -> str:
    """A breakpoint: 'none' where its regime cannot bind (≤ 0 or undefined)."""
    return "none" if value is None or value <= 0 else f"{value:.2f}"


def render_plan(result: PlanResult) -> None:
    from rich.markup import escape

    t, d, s = result.times, result.deployment, result.stats
    unit = t.time_unit
    out.print(f"[bold]Workload[/bold]  {escape(result.workload)}")
    se = f" ± {1.96 * s.theta_se:.1f} (95%)" if s.theta_se else ""
    dropped = f"   {result.dropped_rows:,} invalid rows dropped" if result.dropped_rows else ""
    out.print(
        f"  θ = {s.theta:,.1f} tokens/slot{se}   √v = {s.v**0.5:,.1f}   "
        f"μ_P + μ_D = {s.load_v1:,.1f} (v1)   μ_P = {s.mu_prefill:,.1f}   "
        f"μ_D = {s.mu_decode:,.1f}{dropped}",
        highlight=False,
    )
    cap = (
        f"   KV capacity {t.kv_capacity_tokens:,} tokens → B ≤ {result.max_feasible_batch}"
        if (t.kv_capacity_tokens)
        else ""
    )
    out.print(
        f"[bold]Deployment[/bold]  coeffs {escape(t.name)}   B = {d.batch}   "
        f"pipeline {d.pipeline.describe()}   comm {t.comm_scope}   GPUs A:F = "
        f"{t.gpus_attention:g}:{t.gpus_ffn:g}   objective {result.objective} (weights "
        f"{d.w_attention:g}:{d.w_ffn:g}){cap}"
    )
    if unit != "s":
        out.print(f"  times are in the set's own unit u = {unit!r}", highlight=False, markup=False)
    if result.curves:
        out.print(
            f"  rows use the measured curves of {result.curves}", highlight=False, markup=False
        )
    time_head = "ms" if unit == "s" else "u"
    rate_head = "tok/s" if unit == "s" else "tok/u"
    table = OutTable(
        title="Barrier-aware prediction per A/F ratio r (★ = recommended)",
    )
    heads = (
        "r",
        f"E[τ] {time_head}",
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
    show(table)
    out.print(
        "E[τ]: expected step time with the barrier; τ̄: all workers at mean load.", highlight=False
    )
    bp = result.rule.breakpoints
    if bp.r_comm is not None:
        points = f"r_A = {_bp(bp.r_attention)}, r_C = {_bp(bp.r_comm)}, r_peak = {_bp(bp.r_peak)}"
    else:
        points = (
            f"r_A = {_bp(bp.r_attention)}, r_peak = {_bp(bp.r_peak)}, aggregate comm: "
            f"r_AC = {_bp(bp.r_attention_comm)}, r_peak,C = {_bp(bp.r_peak_comm)}, "
            f"r_CF = {_bp(bp.r_comm_ffn)}"
        )
    out.print(
        f"r* (θ, mean field) = {result.rule.r_star:.2f}  ({result.rule.regime}-bound; {points})",
        highlight=False,
    )
    out.print(
        "  r_A: attention meets the FFN line; r_C: communication meets it; r_peak: best r "
        "while the FFN binds; r_AC, r_peak,C, r_CF: the same against aggregate "
        "communication; none: that regime never binds.",
        highlight=False,
    )
    out.print(
        f"r* (v1, μ_P + μ_D)  = {result.rule_v1.r_star:.2f}  ({result.rule_v1.regime}-bound)",
        highlight=False,
    )
    rec = result.recommended
    per_gpu = result.recommended_per_gpu
    if per_gpu.point.r != best and result.objective != Objective.gpu:
        out.print(
            f"Per GPU ({t.gpus_attention:g} per A, {t.gpus_ffn:g} per FFN instance) r = "
            f"{per_gpu.point.r} is best: pass --objective gpu to optimise for GPUs.",
            highlight=False,
        )
    _render_certainty(result)
    for note in result.notes:
        out.print(f"Note: {note}.", highlight=False, markup=False)
    per = "s" if unit == "s" else "u"
    out.print(
        f"[bold green]Recommendation: r = {best}[/bold green] Attention instances per FFN "
        f"instance at B = {d.batch}: {fmt_rate(rec.throughput_per_instance)} tokens/{per} per "
        f"instance, {fmt_rate(result.throughput_per_gpu(rec))} per GPU; idle A "
        f"{rec.point.idle_attention:.1%}, idle F {rec.point.idle_ffn:.1%}."
    )
    if result.objective == Objective.cost and unit == "s":
        # weights are dollars per hour per instance: tokens/s per ($/h) × 3600 s/h
        out.print(
            f"  {rec.throughput_per_weight * 3600:,.0f} tokens per dollar at the given prices.",
            highlight=False,
        )


def _render_certainty(result: PlanResult) -> None:
    c = result.certainty
    lo, hi = c.band
    parts = [f"r within 1% of the best predicted objective: {lo}" + (f"–{hi}" if hi > lo else "")]
    if c.theta_interval is not None and c.r_at_theta_interval is not None:
        (t_lo, t_hi), (r_lo, r_hi) = c.theta_interval, c.r_at_theta_interval
        same = r_lo == r_hi == result.recommended.point.r
        parts.append(
            f"at θ's 95% interval [{t_lo:,.0f}, {t_hi:,.0f}]: r = {r_lo} and {r_hi}"
            + (" (unchanged)" if same else "")
        )
    else:
        parts.append("θ is exact for a law (no estimate to be unsure of)")
    if c.r_curves is not None:
        parts.append(
            f"on the measured curves ({c.curves}): r = {c.r_curves}; on the linear fit: "
            f"r = {c.r_linear}"
        )
    out.print("How sure: " + "; ".join(parts) + ".", highlight=False, markup=False)


@app.command()
def presets(
    as_json: JsonOpt = False,
    hardware_toml: Annotated[
        str | None,
        typer.Option(
            "--hardware",
            help="Print this hardware (preset, aiconfigurator-core system or file) as a TOML "
            "file to edit and pass back to --hardware / roofline:MODEL@FILE.",
        ),
    ] = None,
) -> None:
    """List the built-in coefficient sets, models, hardware and shipped data files."""
    from afdplan.calibrate.specs import hardware_names, load_hardware, load_model, model_names
    from afdplan.data import BUILTIN_DATA, KIND_OPTIONS, builtin_path
    from afdplan.deploy.profiles import profiles
    from afdplan.presets import runtime_table
    from afdplan.timing import builtin_coeff_names, load_coeffs

    if hardware_toml is not None:
        print(hardware_to_toml(load_hardware(hardware_toml)), end="")
        return

    sets = [load_coeffs(name) for name in builtin_coeff_names()]
    models = [load_model(name) for name in model_names()]
    hardware = [load_hardware(name) for name in hardware_names()]
    releases = [p for runtime in runtime_table() for p in profiles(runtime).values()]
    if as_json:
        from afdplan.timing import coeffs_to_dict

        print_json(
            {
                "coefficient_sets": {t.name: coeffs_to_dict(t) for t in sets},
                "models": {m.name: _model_row(m) for m in models},
                "hardware": {h.name: _hardware_row(h) for h in hardware},
                "runtimes": [
                    {**p.to_dict(), "architectures": list(p.architectures)} for p in releases
                ],
                "data": {
                    name: {
                        "kind": entry.kind,
                        "option": KIND_OPTIONS[entry.kind],
                        "path": str(builtin_path(name)),
                        "description": entry.description,
                        "source": entry.source,
                    }
                    for name, entry in BUILTIN_DATA.items()
                },
            }
        )
        return
    table = OutTable(title="Coefficient sets (--coeffs NAME)")
    for col in ("name", "time unit", "GPUs A:F", "curves", "provenance"):
        table.add_column(col, overflow="fold")
    for t in sets:
        table.add_row(
            t.name,
            t.time_unit,
            f"{t.gpus_attention:g}:{t.gpus_ffn:g}",
            t.curves or "",
            t.provenance,
        )
    show(table)
    mtable = OutTable(title="Models (--model NAME, or a config.json path)")
    for col in ("name", "layers", "hidden", "attention", "FFN", "source"):
        mtable.add_column(col, overflow="fold")
    for m in models:
        row = _model_row(m)
        mtable.add_row(m.name, str(m.layers), str(m.hidden), row["attention"], row["ffn"], m.source)
    show(mtable)
    hw = OutTable(title="Hardware (--hardware NAME)")
    for col in (
        "name",
        "BF16 TFLOP/s",
        "HBM TB/s",
        "HBM GB",
        "link GB/s",
        "$/GPU-h",
        "W",
        "source",
    ):
        hw.add_column(col, overflow="fold")
    for h in hardware:
        hw.add_row(
            h.name,
            f"{h.flops_bf16 / 1e12:.0f}",
            f"{h.hbm_bandwidth / 1e12:.2f}",
            f"{h.hbm_bytes / 1e9:.0f}",
            f"{h.link_bandwidth / 1e9:.0f}",
            "" if h.price_per_hour is None else f"{h.price_per_hour:.2f}",
            "" if h.board_power_w is None else f"{h.board_power_w:.0f}",
            h.source,
        )
    show(hw)
    rt = OutTable(title="Runtime releases (deploy --runtime NAME --runtime-version VERSION)")
    for col in ("runtime", "version", "commit", "engine", "serves"):
        rt.add_column(col, overflow="fold")
    for p in releases:
        rt.add_row(p.runtime, p.version, p.commit[:12] or "unpinned", p.engine,
                   ", ".join(p.architectures) or "any MoE model it loads")  # fmt: skip
    show(rt)
    data = OutTable(title="Shipped data (give the name where a file is asked for)")
    for col in ("name", "option", "what", "source"):
        data.add_column(col, overflow="fold")
    for name, entry in BUILTIN_DATA.items():
        data.add_row(name, KIND_OPTIONS[entry.kind], entry.description, entry.source)
    show(data)


def hardware_to_toml(hw) -> str:
    """A hardware spec as a TOML file of the preset keys (one ``[NAME]`` table)."""
    from dataclasses import asdict

    lines = [
        f"# {hw.name}: edit the figures, rename the table, pass the file to --hardware.",
        "# Drop aiconfigurator_systems unless this is that GPU: measured sets anchor on it.",
        f"[{hw.name}]",
    ]
    for key, value in asdict(hw).items():
        if key == "name" or value is None or value in ((), []):
            continue
        if isinstance(value, str):
            lines.append(f"{key} = {json.dumps(value)}")
        elif isinstance(value, list | tuple):
            lines.append(f"{key} = [{', '.join(json.dumps(v) for v in value)}]")
        else:
            lines.append(f"{key} = {value!r}")
    return "\n".join(lines) + "\n"


def _model_row(m) -> dict:
    return {
        "layers": m.layers,
        "hidden": m.hidden,
        "attention": f"MLA {m.heads} heads" if m.is_mla else f"GQA {m.heads}/{m.kv_heads}",
        "ffn": f"MoE {m.experts}x top-{m.top_k}" if m.is_moe else f"dense {m.intermediate}",
        "source": m.source,
    }


def _hardware_row(h) -> dict:
    return {
        "flops_bf16": h.flops_bf16,
        "hbm_bandwidth": h.hbm_bandwidth,
        "hbm_bytes": h.hbm_bytes,
        "link_bandwidth": h.link_bandwidth,
        "price_per_hour": h.price_per_hour,
        "price_source": h.price_source,
        "board_power_w": h.board_power_w,
        "source": h.source,
    }
